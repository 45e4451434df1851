r"""Sweeps NASRLOracle settings on NAS-Bench-201 (tuning seeds, not the reported ones).

Each setting is a JSON object of overrides of the library defaults:
{"reinforce": {...ReinforceConfig fields}, "controller": {...ControllerConfig
fields}, "oracle": {...NASRLOracle arguments}} (or {"preset": "paper"}).
Every setting runs on the same seeds; the table gives the mean test accuracy
at each budget, its standard error, and the oracle's overhead per trial.

  python experiments/nasbench201_sweep.py --seeds 24 --first_seed 100 \
      --setting 'base={}' --setting 'lr01={"reinforce": {"learning_rate": 0.01}}'

The reported benchmark is experiments/nasbench201.py (seeds 0..99); tuning
here uses seeds from 100 up so that the reported figures are not fitted.
"""

import argparse
import json
import multiprocessing
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from nas_tf.benchmarks import nasbench201 as nb  # noqa: E402

DEFAULT_TABLE = "../shared/data/nasbench201/nb201_cifar10.csv"
_TABLE = None


oracle_options = nb.oracle_options


def oracle_seed(seed: int) -> int:
    return 10007 * (seed + 1)


def _init(table_path):
    global _TABLE
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    _TABLE = nb.load_table(table_path)


def _run(job):
    name, setting, seed, budget = job
    oracle = nb.make_oracle("nasrl", oracle_seed(seed), 5 * budget, **oracle_options(setting))
    result = nb.run_oracle(oracle, _TABLE, budget)
    return name, seed, result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--table", default=DEFAULT_TABLE)
    p.add_argument("--seeds", type=int, default=24)
    p.add_argument("--first_seed", type=int, default=100)
    p.add_argument("--budgets", default="50,100,200")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--setting", action="append", default=[], help="NAME=JSON, repeatable.")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    budgets = sorted(int(b) for b in args.budgets.split(","))
    settings = {}
    for item in args.setting or ["default={}"]:
        name, _, text = item.partition("=")
        settings[name] = json.loads(text or "{}")
        oracle_options(settings[name])  # Fail early on a bad setting.
    table = nb.load_table(args.table)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = [(n, s, seed, budgets[-1]) for n, s in settings.items() for seed in seeds]
    start = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    results = {}
    print("| setting | " + " | ".join(f"{b}" for b in budgets) + " | ms/trial | updates |")
    print("|---" * (len(budgets) + 3) + "|", flush=True)
    summary = {}
    with ctx.Pool(args.workers, initializer=_init, initargs=(args.table,), maxtasksperchild=40) as pool:
        for name, seed, result in pool.imap_unordered(_run, jobs):
            results.setdefault(name, []).append((seed, result))
            if len(results[name]) == len(seeds):
                summary[name] = _row(name, settings[name], results[name], table, budgets)
    wall = time.perf_counter() - start
    print(f"wall {wall:.0f} s, {len(jobs)} searches")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


def _row(name, setting, runs, table, budgets):
    """Prints one setting's row; returns its summary."""
    runs = sorted(runs, key=lambda x: x[0])
    accs = np.array([nb.best_test_at(table, r.codes, budgets) for _, r in runs])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, se = np.nanmean(accs, 0), np.nanstd(accs, 0) / np.sqrt(len(runs))
    trials = sum(r.proposals for _, r in runs)
    ms = 1000 * sum(r.overhead_s for _, r in runs) / max(trials, 1)
    updates = np.mean([r.updates or 0 for _, r in runs])
    cells = [f"{m:.2f}±{e:.2f}" for m, e in zip(mean, se)]
    print(f"| {name} | " + " | ".join(cells) + f" | {ms:.1f} | {updates:.0f} |", flush=True)
    return dict(setting=setting, mean=mean.tolist(), se=se.tolist(),
                per_seed=accs.tolist(), ms_per_trial=ms, updates=float(updates))

if __name__ == "__main__":
    main()
