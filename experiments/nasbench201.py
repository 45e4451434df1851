"""NAS-Bench-201 benchmark of NASRLOracle against baseline searches.

Every method searches the 15,625 NAS-Bench-201 cells with the cells'
validation accuracy as reward and reports the test accuracy of its best cell
by validation accuracy, after 50, 100 and 200 distinct cells (one run of the
largest budget gives the smaller budgets from its prefix).

Methods:
  nasrl        nas_tf.NASRLOracle with default arguments (the library's
               defaults; --nasrl_setting overrides them), driven through the
               Keras Tuner Oracle API.
  nasrl_paper  nas_tf.NASRLOracle(preset="paper"): Zoph & Le's method.
  Ablations of nasrl (its setting, each with one change; driven as
  nas_tf.algorithms objects without Keras Tuner, seeded as nasrl so that
  each run pairs with nasrl's run of the same seed):
  nasrl_frozen        the controller frozen at its initial policy (never
                      updated), every other rule unchanged.
  nasrl_alone         the controller alone: mutate_best=0.
  nasrl_alone_frozen  the controller alone, frozen: its initial policy's
                      draws (about uniform), repeats re-drawn.
  mutate_uniform      the mutation rule over uniform draws, no controller
                      (nas_tf.algorithms.UniformMutationSearch).
  random       random search without repeats (numpy).
  evolution    regularized evolution, population 10, sample 3 (numpy).
  kt_random    keras_tuner RandomSearchOracle (Oracle API).
  kt_bayes     keras_tuner BayesianOptimizationOracle (Oracle API; slow, so
               it runs on the first --bayes_seeds seeds only).

After the table, "what learning adds" is each learned method minus its
frozen twin, paired by seed (mean and standard error over seeds).

Usage:
  python experiments/nasbench201.py \
      --table ../shared/data/nasbench201/nb201_cifar10.csv \
      --seeds 100 --budgets 50,100,200 --workers 2
"""

import argparse
import dataclasses
import json
import multiprocessing
import os
import sys
import time
import warnings
from typing import Dict, List, Optional

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nas_tf.benchmarks import nasbench201 as nb  # noqa: E402

DEFAULT_TABLE = "../shared/data/nasbench201/nb201_cifar10.csv"
ABLATIONS = {  # Method -> (changes to nasrl's settings, frozen).
    "nasrl_frozen": ({}, True),
    "nasrl_alone": ({"mutate_best": 0.0}, False),
    "nasrl_alone_frozen": ({"mutate_best": 0.0}, True),
    "mutate_uniform": ({}, True),
}
ALL_METHODS = ("nasrl", "nasrl_paper") + tuple(ABLATIONS) + (
    "random", "evolution", "kt_random", "kt_bayes")
DEFAULT_METHODS = ",".join(ALL_METHODS)
# (learned, frozen twin): "what learning adds" is their difference, paired by seed.
LEARNING_PAIRS = (("nasrl", "nasrl_frozen"), ("nasrl_alone", "nasrl_alone_frozen"))

@dataclasses.dataclass(frozen=True)
class Task:
    """One search: a method on one seed with the largest budget."""

    method: str
    seed: int
    budget: int
    nasrl_options: Dict
    direct: bool = False  # nasrl as a ControllerSearch without Keras Tuner (same proposals).


def oracle_seed(seed: int) -> int:
    """A Keras Tuner seed for run `seed`: nonzero and far from its neighbours.

    Keras Tuner seeds each random value with the previous seed + 1, so seeds
    1, 2, 3 would give overlapping streams.
    """
    return 10007 * (seed + 1)


nasrl_options = nb.oracle_options


def run_algorithm_task(task: Task, table: nb.Table) -> nb.SearchResult:
    """Runs nasrl or one of its ablations as a `nas_tf.algorithms` object."""
    from nas_tf import algorithms

    options = nasrl_options(task.nasrl_options)
    changes, frozen = ABLATIONS.get(task.method, ({}, False))
    options.update(changes)
    space, fixed = nb.search_space()
    if task.method == "mutate_uniform":
        algorithm = algorithms.UniformMutationSearch(space, oracle_seed(task.seed), **options)
    else:
        algorithm = algorithms.ControllerSearch(space, oracle_seed(task.seed), frozen=frozen,
                                                **options)
    return nb.run_algorithm(algorithm, table, task.budget, fixed)


def run_task(task: Task, table: nb.Table) -> nb.SearchResult:
    """Runs one search."""
    if task.method == "random":
        return nb.random_search(table, task.budget, task.seed)
    if task.method == "evolution":
        return nb.regularized_evolution(table, task.budget, task.seed)
    if task.method in ABLATIONS or (task.method == "nasrl" and task.direct):
        return run_algorithm_task(task, table)
    options = {}
    oracle_method = task.method
    if task.method in ("nasrl", "nasrl_paper"):
        oracle_method = "nasrl"
        setting = task.nasrl_options if task.method == "nasrl" else {"preset": "paper"}
        options = nasrl_options(setting)
    oracle = nb.make_oracle(oracle_method, oracle_seed(task.seed), 5 * task.budget, **options)
    return nb.run_oracle(oracle, table, task.budget)


_TABLE: Optional[nb.Table] = None


def _init_worker(table_path: str):
    """Loads the table once per worker and keeps TensorFlow to one thread."""
    global _TABLE
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # The Bayesian oracle's GP fits warn about length scales on this discrete space.
    warnings.filterwarnings("ignore", module="sklearn")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TensorFlow already started in this process (workers=1).
    _TABLE = nb.load_table(table_path)


def _work(task: Task):
    result = run_task(task, _TABLE)
    return task, result


def run_all(tasks: List[Task], table_path: str, workers: int, progress=True):
    """Runs the tasks on `workers` processes; returns (task, result) pairs."""
    # Slow methods first, so that the pool stays busy to the end.
    order = {"kt_bayes": 0, "nasrl": 1, "nasrl_paper": 1, "kt_random": 2}
    order.update({m: 1 for m in ABLATIONS})
    tasks = sorted(tasks, key=lambda t: (order.get(t.method, 3), t.seed))
    results = []
    if workers <= 1:
        _init_worker(table_path)
        iterator = map(_work, tasks)
    else:
        ctx = multiprocessing.get_context("spawn")
        # Each NASRLOracle leaves ~40 MB behind in TensorFlow (traced graphs):
        # recycle the workers now and then.
        pool = ctx.Pool(
            workers, initializer=_init_worker, initargs=(table_path,), maxtasksperchild=40
        )
        iterator = pool.imap_unordered(_work, tasks)
    try:
        for k, pair in enumerate(iterator, start=1):
            results.append(pair)
            if progress and (k % 50 == 0 or k == len(tasks)):
                print(f"  {k}/{len(tasks)} searches done", file=sys.stderr, flush=True)
    finally:
        if workers > 1:
            pool.close()
            pool.join()
    return results


def summarize(table: nb.Table, results, budgets: List[int]) -> Dict[str, Dict]:
    """Per method: seeds, mean/std test accuracy per budget, overhead per trial."""
    by_method: Dict[str, List] = {}
    short: Dict[str, int] = {}
    for task, result in results:
        by_method.setdefault(task.method, []).append(result)
        short[task.method] = short.get(task.method, 0) + (len(result.codes) < task.budget)
    summary = {}
    for method in ALL_METHODS:
        runs = by_method.get(method)
        if not runs:
            continue
        accs = np.array([nb.best_test_at(table, r.codes, budgets) for r in runs])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # All-NaN budgets.
            mean, std = np.nanmean(accs, axis=0), np.nanstd(accs, axis=0)
        proposals = sum(r.proposals for r in runs)
        summary[method] = {
            "seeds": len(runs),
            "mean": mean.tolist(),
            "std": std.tolist(),
            "short_runs": short[method],
            "overhead_ms_per_trial": 1000 * sum(r.overhead_s for r in runs) / max(proposals, 1),
            "proposals_per_cell": proposals / max(sum(len(r.codes) for r in runs), 1),
            "cpu_s": sum(r.wall_s for r in runs),
        }
        updates = [r.updates for r in runs if r.updates is not None]
        if updates:
            summary[method]["updates_per_run"] = float(np.mean(updates))
    return summary


def learning_adds(table: nb.Table, results, budgets: List[int]) -> Dict[str, Dict]:
    """Per pair of `LEARNING_PAIRS` run: learned minus frozen, paired by seed.

    Returns:
      {"nasrl - nasrl_frozen": {"seeds": n, "mean": [per budget],
      "se": [standard error over seeds]}, ...}.
    """
    by_key = {(task.method, task.seed): result for task, result in results}
    out = {}
    for learned, frozen in LEARNING_PAIRS:
        seeds = sorted(s for m, s in by_key if m == learned and (frozen, s) in by_key)
        if not seeds:
            continue
        diff = np.array([
            np.subtract(nb.best_test_at(table, by_key[learned, s].codes, budgets),
                        nb.best_test_at(table, by_key[frozen, s].codes, budgets))
            for s in seeds])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            n = np.sum(~np.isnan(diff), axis=0)
            se = np.nanstd(diff, axis=0, ddof=1) / np.sqrt(np.maximum(n, 1))
            out[f"{learned} - {frozen}"] = dict(
                seeds=len(seeds), mean=np.nanmean(diff, axis=0).tolist(), se=se.tolist())
    return out


def format_learning_adds(adds: Dict[str, Dict], budgets: List[int]) -> str:
    """A Markdown table of `learning_adds`."""
    head = ["what learning adds (paired by seed)", "seeds"] + [f"budget {b}" for b in budgets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, a in adds.items():
        cells = [name, str(a["seeds"])]
        cells += [f"{m:+.2f} ± {e:.2f}" for m, e in zip(a["mean"], a["se"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_per_seed(path: str, results) -> None:
    """One JSON line per search: method, seed, and the distinct cells in evaluation order."""
    with open(path, "w", encoding="utf-8") as f:
        for task, result in sorted(results, key=lambda pair: (pair[0].method, pair[0].seed)):
            f.write(json.dumps(dict(method=task.method, seed=task.seed,
                                    codes=[int(c) for c in result.codes])) + "\n")


def format_table(summary: Dict[str, Dict], budgets: List[int]) -> str:
    """A Markdown table of the summary."""
    head = ["method", "seeds"] + [f"budget {b}" for b in budgets]
    head += ["runs short", "overhead ms/trial", "search s (sum)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, s in summary.items():
        cells = [method, str(s["seeds"])]
        cells += [
            "—" if np.isnan(m) else f"{m:.2f} ± {d:.2f}" for m, d in zip(s["mean"], s["std"])
        ]
        cells += [str(s["short_runs"]), f"{s['overhead_ms_per_trial']:.2f}", f"{s['cpu_s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv=None):
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--table", default=DEFAULT_TABLE, help="NAS-Bench-201 CSV.")
    p.add_argument("--seeds", type=int, default=100, help="Seeds per method.")
    p.add_argument("--first_seed", type=int, default=0, help="First seed index.")
    p.add_argument("--budgets", default="50,100,200", help="Comma-separated budgets.")
    p.add_argument("--methods", default=DEFAULT_METHODS, help="Comma-separated methods.")
    p.add_argument("--bayes_seeds", type=int, default=2, help="Seeds for kt_bayes (slow).")
    p.add_argument("--bayes_budget", type=int, default=50, help="Largest kt_bayes budget.")
    p.add_argument("--workers", type=int, default=2, help="Worker processes (<= cores).")
    p.add_argument("--json", default="", help="Also write the summary to this file.")
    p.add_argument("--per_seed", default="",
                   help="Also write each search's cells (JSON lines: method, seed, codes).")
    p.add_argument("--direct", action="store_true",
                   help="Run nasrl as a nas_tf.algorithms.ControllerSearch without Keras Tuner "
                   "(the same proposals, a quarter of the time; for tuning sweeps).")
    p.add_argument(
        "--nasrl_setting", default="{}",
        help='JSON overrides of the library defaults for nasrl, e.g. '
        '\'{"reinforce": {"learning_rate": 0.01}, "oracle": {"max_resamples": 2}}\'.',
    )
    return p.parse_args(argv)


def main(argv=None):
    """Runs the benchmark and prints the table."""
    args = parse_args(argv)
    budgets = sorted(int(b) for b in args.budgets.split(","))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        sys.exit(f"Unknown method(s) {unknown}; choose from {ALL_METHODS}.")
    try:
        table = nb.load_table(args.table)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    options = json.loads(args.nasrl_setting)
    nasrl_options(options)  # A bad setting fails here, not in every worker.
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    bayes_budget = min(args.bayes_budget, budgets[-1])
    tasks = [
        Task(m, s, bayes_budget if m == "kt_bayes" else budgets[-1], options, args.direct)
        for m in methods
        for s in (seeds[: args.bayes_seeds] if m == "kt_bayes" else seeds)
    ]
    print(f"{len(tasks)} searches, {args.workers} workers; nasrl: {options}", flush=True)
    start = time.perf_counter()
    results = run_all(tasks, args.table, args.workers)
    wall = time.perf_counter() - start
    summary = summarize(table, results, budgets)
    print()
    print(format_table(summary, budgets))
    adds = learning_adds(table, results, budgets)
    if adds:
        print()
        print(format_learning_adds(adds, budgets))
    for method, s in summary.items():
        if "updates_per_run" in s:
            print(f"{method}: {s['updates_per_run']:.0f} REINFORCE updates per run (mean)")
    print(f"\ntotal wall time: {wall:.1f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(dict(summary=summary, learning_adds=adds, wall_s=wall, args=vars(args)),
                      f, indent=1)
    if args.per_seed:
        write_per_seed(args.per_seed, results)


if __name__ == "__main__":
    main()
