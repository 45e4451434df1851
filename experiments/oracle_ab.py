r"""Benchmark: NASRLOracle's CPU per trial against an earlier commit's, trial by trial.

On a shared machine the CPU time of one program run drifts by tens of
percent from one minute to the next, so two runs of `oracle_state.py` on two
commits compare the machine's load as much as the code. This program loads
the package at `--baseline` (a git commit of this repository, extracted
under another package name) beside the working tree's, drives one oracle of
each over the same instant synthetic rewards on the NAS-Bench-201 space
(library defaults, same seed), alternating trial by trial, and prints the
mean CPU ms per trial of each over windows and their ratio. Both pay the
same load at the same moment, so the ratio is what to read.

The figures are the oracle's whole `create_trial` + `update_trial` +
`end_trial` (Keras Tuner's bookkeeping included; `oracle_state.py` splits
it). Run from the repository root:

  python experiments/oracle_ab.py --baseline 11cd789 --trials 1000 --marks 300,1000
"""

import argparse
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BASELINE_PACKAGE = "nas_tf_baseline"


def extract_baseline(commit: str, directory: str) -> None:
    """Writes `commit`'s `nas_tf/` under `directory` as package `nas_tf_baseline`."""
    archive = os.path.join(directory, "baseline.tar")
    with open(archive, "wb") as f:
        subprocess.run(["git", "archive", commit, "nas_tf"], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4+: refuse odd members.
            tar.extractall(directory, filter="data")
        else:
            tar.extractall(directory)  # Our own commit's sources.
    os.rename(os.path.join(directory, "nas_tf"), os.path.join(directory, BASELINE_PACKAGE))
    for root, _, files in os.walk(os.path.join(directory, BASELINE_PACKAGE)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                with open(path) as f:
                    text = f.read()
                with open(path, "w") as f:
                    f.write(re.sub(r"\bnas_tf\b", BASELINE_PACKAGE, text))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", required=True, help="A git commit of this repository.")
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--marks", default="300,1000")
    p.add_argument("--window", type=int, default=100, help="Trials per window, ending at each mark.")
    args = p.parse_args()
    marks = [int(m) for m in args.marks.split(",") if int(m) <= args.trials]

    work = tempfile.mkdtemp(prefix="oracle_ab_")
    extract_baseline(args.baseline, work)
    sys.path.insert(0, work)

    import keras_tuner as kt
    import numpy as np

    def make(package):
        module = __import__(package, fromlist=["NASRLOracle"])
        nb = __import__(package + ".benchmarks.nasbench201", fromlist=["hyperparameters"])
        oracle = module.NASRLOracle(objective=kt.Objective("r", "max"), max_trials=args.trials,
                                    hyperparameters=nb.hyperparameters(), seed=1)
        project = tempfile.mkdtemp(prefix="oracle_ab_",
                                   dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        oracle._set_project_dir(project, "p")
        oracle.verbose = 0
        return oracle, nb

    oracles = {"baseline": make(BASELINE_PACKAGE), "this tree": make("nas_tf")}
    cpu = {name: [] for name in oracles}
    print(f"CPU ms per trial over the last {args.window} trials, the two oracles alternating "
          f"trial by trial (baseline: {args.baseline})")
    print(f"{'trials':>7} {'baseline':>9} {'this tree':>10} {'ratio':>6} {'updates':>9}")
    for n in range(1, args.trials + 1):
        for name, (oracle, nb) in oracles.items():
            start = time.process_time()
            trial = oracle.create_trial("t")
            if trial.status != "RUNNING":
                raise SystemExit(f"{name}: stopped after {n - 1} trials (space exhausted)")
            code = nb.values_to_code(trial.hyperparameters.values)
            oracle.update_trial(trial.trial_id, {"r": float(np.sin(code * 12.9898) * 0.5 + 0.5)})
            trial.status = "COMPLETED"
            oracle.end_trial(trial)
            cpu[name].append(time.process_time() - start)
        if n in marks:
            base, mine = (1000 * np.mean(cpu[k][-args.window:]) for k in oracles)
            updates = "/".join(str(o.learner.num_updates) for o, _ in oracles.values())
            print(f"{n:7d} {base:9.2f} {mine:10.2f} {mine / base:6.2f} {updates:>9}", flush=True)


if __name__ == "__main__":
    main()
