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

  python experiments/oracle_state.py --trials 10000
"""

import argparse
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

    directory = tempfile.mkdtemp(prefix="oracle_state_", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    oracle = nas_tf.NASRLOracle(objective=kt.Objective("r", "max"), max_trials=args.trials,
                                hyperparameters=nb.hyperparameters(), seed=1)
    oracle._set_project_dir(directory, "p")
    oracle.verbose = 0
    print(f"{'trials':>8} {'bytes/trial':>12} {'in window':>10} {'ms/trial':>9} {'cpu ms':>7}  "
          f"(window: the last {args.window} trials)")
    rows = []
    try:
        window_start = (0, 0.0, 0.0)
        spent = cpu = 0.0
        for n in range(1, args.trials + 1):
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
            if any(n == m - args.window for m in marks):
                window_start = (written[0], spent, cpu)
            if n in marks:
                window_bytes = (written[0] - window_start[0]) / args.window
                ms_per = 1000 * (spent - window_start[1]) / args.window
                cpu_per = 1000 * (cpu - window_start[2]) / args.window
                rows.append((n, written[0] / n, ms_per, cpu_per))
                print(f"{n:8d} {written[0] / n:12.0f} {window_bytes:10.0f} {ms_per:9.2f} "
                      f"{cpu_per:7.2f}", flush=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if len(rows) > 1:
        print(f"last/first: bytes per trial x{rows[-1][1] / rows[0][1]:.2f}, "
              f"time per trial x{rows[-1][2] / rows[0][2]:.2f} (cpu x{rows[-1][3] / rows[0][3]:.2f})")


if __name__ == "__main__":
    main()
