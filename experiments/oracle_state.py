r"""Benchmark: the oracle's saved state stays O(1) per trial over a long search.

Drives `NASRLOracle` (library defaults) through the Keras Tuner Oracle API on
the NAS-Bench-201 space with instant synthetic rewards (no table needed) and
reports at 100, 1,000 and 10,000 trials: the bytes written to the project
directory per trial since the start (journal lines, snapshots, controller
checkpoints, trial files: amortized, as a snapshot is rewritten only once
the journal is as large), the same over the last window of trials, and the
oracle's time per trial in that window (sampling, updates, saving; the first
window starts after tracing), as wall time and as this process's CPU time
(which other jobs on a shared machine inflate far less). Keras Tuner's own `save` rewrites the whole
state every trial (O(n) bytes per trial); the journal keeps it flat.

The CPU time is split into what the issue's overhead target counts, the
oracle's own work (sampling: `populate_space`; learning: `score_trial` and `_learn` with
its REINFORCE updates and their logs; saving: the journaled state, controller
checkpoints and `trial.json` files), and the rest, Keras Tuner's bookkeeping
around them (hyperparameter copies, metrics, trial directories), which any
Keras Tuner oracle pays. Keras Tuner's own RandomSearchOracle runs the same
trials in the same process afterwards (`--kt_random`, on by default), as the
reference for this machine's load.

  python experiments/oracle_state.py --trials 10000
"""

import argparse
import collections
import functools
import os
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=10000)
    p.add_argument("--marks", default="100,1000,10000")
    p.add_argument("--window", type=int, default=50,
                   help="Trials per measured window (ending at each mark; the first 50 include no tracing).")
    p.add_argument("--kt_random", type=int, choices=(0, 1), default=1,
                   help="Also run Keras Tuner's RandomSearchOracle over the same trials.")
    args = p.parse_args()
    marks = [int(m) for m in args.marks.split(",") if int(m) <= args.trials]

    import keras_tuner as kt
    import numpy as np

    import nas_tf
    from nas_tf import durable
    from nas_tf.benchmarks import nasbench201 as nb

    written = [0]
    atomic_write, append_line = durable.atomic_write, durable.append_line

    def counting_atomic_write(path, write):
        def counted(f):
            write(f)
            written[0] += f.tell()
        atomic_write(path, counted)

    def counting_append_line(path, line):
        append_line(path, line)
        written[0] += len(line.encode("utf-8")) + 1

    durable.atomic_write, durable.append_line = counting_atomic_write, counting_append_line

    def reward(values):
        code = nb.values_to_code(values)
        return float(np.sin(code * 12.9898) * 0.5 + 0.5)  # Deterministic, instant.

    nasrl = nas_tf.NASRLOracle(objective=kt.Objective("r", "max"), max_trials=args.trials,
                               hyperparameters=nb.hyperparameters(), seed=1)
    parts = _time_parts(nasrl, {
        "sample": ("populate_space",),
        "learn": ("score_trial", "_learn"),
        "save": ("save", "_save_trial"),
    })
    # Keras Tuner's own scoring, which `NASRLOracle.score_trial` calls first
    # (metrics bookkeeping that every Keras Tuner oracle pays), counts as Keras
    # Tuner's, not as learning: a hidden part ("_" names are not shown).
    kt_score = kt.Oracle.score_trial
    kt.Oracle.score_trial = _timed_method(parts, "_kt", kt_score)
    print("NASRLOracle (library defaults)")
    try:
        rows = drive(nasrl, reward, written, args.trials, marks, args.window, parts)
    finally:
        kt.Oracle.score_trial = kt_score
    if len(rows) > 1:
        print(f"last/first: bytes per trial x{rows[-1][1] / rows[0][1]:.2f}, "
              f"time per trial x{rows[-1][2] / rows[0][2]:.2f} (cpu x{rows[-1][3] / rows[0][3]:.2f})")
    if args.kt_random:
        print("\nKeras Tuner's RandomSearchOracle, the same trials in the same process")
        ktr = kt.oracles.RandomSearchOracle(objective=kt.Objective("r", "max"),
                                            max_trials=args.trials,
                                            hyperparameters=nb.hyperparameters(), seed=1)
        base = drive(ktr, reward, written, args.trials, marks, args.window, None)
        print("\nNASRLOracle / RandomSearchOracle, CPU per trial: " + ", ".join(
            f"x{a[3] / b[3]:.2f} at {a[0]}" for a, b in zip(rows, base)))


class _Totals(collections.defaultdict):
    """CPU seconds by part, and the stack of timed calls in progress."""

    def __init__(self, *args):
        super().__init__(*args)
        self.stack = []  # [part, CPU time of nested timed calls]


def _time_parts(oracle, parts):
    """Wraps `oracle`'s methods to add up their exclusive CPU time by part.

    A method called inside another wrapped one counts for its own part only
    (`save` inside `score_trial` is saving, not learning). Returns the
    running totals (seconds), which `drive` reads per window.
    """
    totals = _Totals(float, {part: 0.0 for part in parts})
    for part, names in parts.items():
        for name in names:
            setattr(oracle, name, _timed_method(totals, part, getattr(oracle, name)))
    return totals


def _timed_method(totals, part, method):
    """`method`, adding its exclusive CPU time to `totals[part]` (see `_time_parts`)."""
    stack = totals.stack

    @functools.wraps(method)
    def timed(*a, **k):
        start = time.process_time()
        stack.append([part, 0.0])
        try:
            return method(*a, **k)
        finally:
            _, nested = stack.pop()
            spent = time.process_time() - start
            totals[part] += spent - nested
            if stack:
                stack[-1][1] += spent
    return timed


def drive(oracle, reward, written, trials, marks, window, parts):
    """Runs `trials` trials through the Keras Tuner Oracle API; prints a row per mark."""
    directory = tempfile.mkdtemp(prefix="oracle_state_",
                                 dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    oracle._set_project_dir(directory, "p")
    oracle.verbose = 0
    names = [name for name in parts or () if not name.startswith("_")]  # "_": hidden parts.
    print(f"{'trials':>8} {'bytes/trial':>12} {'in window':>10} {'ms/trial':>9} {'cpu ms':>7}"
          + "".join(f" {n:>7}" for n in names + ["kt"] if parts is not None)
          + f"  (window: the last {window} trials; cpu ms split into the oracle's parts"
          + (" and Keras Tuner's bookkeeping)" if parts is not None else ")"))
    rows = []
    try:
        window_start = (0, 0.0, 0.0, {})
        spent = cpu = 0.0
        start_bytes = written[0]
        for n in range(1, trials + 1):
            start, start_cpu = time.perf_counter(), time.process_time()
            trial = oracle.create_trial("t")
            if trial.status != "RUNNING":
                print(f"stopped after {n - 1} trials (space exhausted)")
                break
            oracle.update_trial(trial.trial_id, {"r": reward(trial.hyperparameters.values)})
            trial.status = "COMPLETED"
            oracle.end_trial(trial)
            spent += time.perf_counter() - start
            cpu += time.process_time() - start_cpu
            if n in marks:
                total_bytes = written[0] - start_bytes
                window_bytes = (written[0] - window_start[0]) / window
                ms_per = 1000 * (spent - window_start[1]) / window
                cpu_per = 1000 * (cpu - window_start[2]) / window
                split = ""
                if parts is not None:
                    ms = {k: 1000 * (parts[k] - window_start[3].get(k, 0.0)) / window
                          for k in names}  # fmt: skip
                    split = "".join(f" {ms[k]:7.2f}" for k in names)
                    split += f" {cpu_per - sum(ms.values()):7.2f}"
                rows.append((n, total_bytes / n, ms_per, cpu_per))
                # Keras Tuner's own oracle writes through its own files: not counted.
                size = (f"{total_bytes / n:12.0f} {window_bytes:10.0f}" if parts is not None
                        else f"{'-':>12} {'-':>10}")  # fmt: skip
                print(f"{n:8d} {size} {ms_per:9.2f} {cpu_per:7.2f}{split}", flush=True)
            if any(n == m - window for m in marks):  # After a mark: marks may be a window apart.
                window_start = (written[0], spent, cpu, dict(parts or {}))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return rows


if __name__ == "__main__":
    main()
