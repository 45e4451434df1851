r"""Weight sharing on the NAS-Bench-201 cell over the embedded digits: does it rank, search, pay?

  python experiments/weight_sharing.py --mode=traces    # one trace per step over 1,000 cells
  python experiments/weight_sharing.py --mode=ranking   # supernet vs stand-alone: Kendall tau
  python experiments/weight_sharing.py --mode=search    # 10 seeds x 3 methods -> results.json
  python experiments/weight_sharing.py --mode=speed     # cells evaluated per second, ratio
  python experiments/weight_sharing.py --space=cifar10_v1 --seeds=3 --epochs=12
      # the paper's v1 space on digits: weight sharing vs multi-trial at equal wall
      # time, each best network retrained (experiments/weight_sharing_conv.py)

The network is `nas_tf.supernets.nb201` scaled to the 8x8 digits (8
channels, one cell per stage). A cell trained "stand-alone" is the same
network with one fixed code and fresh weights (its unused weights never
move), trained through the same trace. The table (`--table`) gives each
chosen cell's CIFAR-10 `test_top1`; no search sees it, except the
multi-trial `nasrl_table`, whose reward is the table's validation accuracy.

Methods of --mode=search:
  nasrl_shared   the controller with weight sharing (`nas_tf.supernets.search`,
                 the `shared` preset; --preset picks another)
  random_shared  random search with weight sharing (Li & Talwalkar 2019)
  nasrl_table    the multi-trial default controller on the table (200 cells)

Results and their command: docs/weight_sharing.md; chosen cells:
docs/weight_sharing_results.json.
"""

import argparse
import json
import os
import resource
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nas_tf import cli  # noqa: E402

cli.quiet_tensorflow()

import numpy as np  # noqa: E402

from nas_tf.algorithms import base as algorithms_base  # noqa: E402
from nas_tf import space as space_lib  # noqa: E402
from nas_tf.algorithms import controller_search  # noqa: E402
from nas_tf.benchmarks import nasbench201 as table_lib  # noqa: E402
from nas_tf.data import embedded  # noqa: E402
from nas_tf.supernets import image_batches  # noqa: E402
from nas_tf.supernets import nb201  # noqa: E402
from nas_tf.supernets import search as search_lib  # noqa: E402
from nas_tf.supernets import trainer as trainer_lib  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TABLE = os.path.join(HERE, "..", "..", "shared", "data", "nasbench201", "nb201_cifar10.csv")
RESULTS = os.path.join(HERE, "..", "docs", "weight_sharing_results.json")
METHODS = ("nasrl_shared", "random_shared", "nasrl_table")
MODES = ("traces", "ranking", "speed", "search")
BATCH = 64
EVAL_BATCH = 180  # The digits' validation split is one batch; the test split two.


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--space", default="nb201_cell", choices=("nb201_cell", "cifar10_v1"),
                   help="nb201_cell: the modes below; cifar10_v1: the v1 comparison.")
    p.add_argument("--retrain_epochs", type=int, default=10, help="cifar10_v1: final training.")
    p.add_argument("--mode", default="all", choices=MODES + ("all",))
    p.add_argument("--table", default=TABLE, help="NAS-Bench-201 CIFAR-10 table (csv).")
    p.add_argument("--architectures", type=int, default=1000, help="traces: cells run.")
    p.add_argument("--cells", type=int, default=48, help="ranking: cells trained stand-alone.")
    p.add_argument("--standalone_seeds", type=int, default=2)
    p.add_argument("--standalone_epochs", type=int, default=5)
    p.add_argument("--epochs", type=int, default=120, help="Epochs of each supernet.")
    p.add_argument("--controller_samples", type=int, default=100, help="Per epoch.")
    p.add_argument("--preset", default="enas", help="nasrl_shared's controller preset.")
    p.add_argument("--seeds", type=int, default=10, help="search: seeds per method.")
    p.add_argument("--first_seed", type=int, default=1)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--table_budget", type=int, default=200)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--reduction", default="pool", choices=("residual", "pool"),
                   help="The network's reduction blocks (nas_tf.supernets.nb201).")
    p.add_argument("--results", default=RESULTS, help="search: the chosen cells (JSON).")
    p.add_argument("--work_dir", default="/tmp/nas_tf_weight_sharing")
    return p.parse_args(argv)


# -- statistics ----------------------------------------------------------------------


def kendall_tau(a, b) -> float:
    """Kendall's tau-b (ties in either list counted as neither concordant nor discordant)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    upper = np.triu_indices(len(a), 1)
    da, db = da[upper], db[upper]
    denominator = np.sqrt(np.sum(da != 0) * np.sum(db != 0))
    return float(np.sum(da * db) / denominator) if denominator else float("nan")


def tau_interval(a, b, reps=2000, seed=0):
    """A 95% bootstrap interval of `kendall_tau` (cells resampled with replacement)."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(a, float), np.asarray(b, float)
    taus = []
    for _ in range(reps):
        i = rng.integers(0, len(a), len(a))
        taus.append(kendall_tau(a[i], b[i]))
    taus = np.asarray(taus)
    taus = taus[np.isfinite(taus)]
    return float(np.percentile(taus, 2.5)), float(np.percentile(taus, 97.5))


def top_overlap(a, b, k=10) -> int:
    top = lambda v: set(np.argsort(-np.asarray(v, float), kind="stable")[:k])  # noqa: E731
    return len(top(a) & top(b))


# -- networks ------------------------------------------------------------------------


def supernet(data, args, seed=0):
    return nb201.NB201Supernet(data.input_shape, data.num_classes, channels=args.channels,
                               reduction=args.reduction, seed=seed)


def cell_arch(space, code: int):
    ops = [nb201.OPS[i] for i in table_lib.decode(code)]
    return space.validate(space_lib.Architecture(dict(zip(nb201.EDGE_NAMES, ops))))


def table_code(arch) -> int:
    return table_lib.parse_cellstr(nb201.cellstr(nb201.cell_ops(arch)))


def stratified_cells(table, n: int):
    """`n` cells evenly spaced over the table's test_top1 ranking (worst to best)."""
    codes = np.flatnonzero(~np.isnan(table.test))
    order = codes[np.argsort(table.test[codes], kind="stable")]
    return [int(order[round(i * (len(order) - 1) / (n - 1))]) for i in range(n)]


class StandAlone:
    """Trains cells on their own, each with fresh weights, through one trace."""

    def __init__(self, data, args):
        self.data, self.args = data, args
        self.net = supernet(data, args)
        steps = args.standalone_epochs * (data.num_train // BATCH)
        self.weights = trainer_lib.SharedWeights(
            self.net, trainer_lib.SharedTraining(total_steps=steps))
        self.steps = steps

    def test_accuracy(self, code: int, seed: int) -> float:
        net, data = self.net, self.data
        self.weights.reset(supernet(data, self.args, seed=1000 + seed))
        batches = image_batches.ImageBatches(data, BATCH, seed=seed, valid_batch_size=EVAL_BATCH)
        arch_code = net.encode(cell_arch(net.space, code))
        for step in range(self.steps):
            x, y = batches.train(step)
            self.weights.train_step(x, y, arch_code)
        return self.weights.evaluate([batches.test(i) for i in range(batches.num_test)], arch_code)


def train_supernet(data, args, method, seed, preset=None, work=None):
    """One weight-sharing search; returns (SharedSearch, result, seconds)."""
    net = supernet(data, args, seed=seed)
    if method == "controller":
        algorithm = controller_search.ControllerSearch(net.space, seed, preset=preset)
    else:
        algorithm = algorithms_base.RandomSearch(net.space, seed)
    batches = image_batches.ImageBatches(data, BATCH, seed=seed, valid_batch_size=BATCH)
    config = search_lib.SharedSearchConfig(method=method, epochs=args.epochs,
                                           controller_samples=args.controller_samples)
    work = work or os.path.join(args.work_dir, f"{method}_{preset}_{seed}")
    shutil.rmtree(work, ignore_errors=True)
    start = time.perf_counter()
    search = search_lib.SharedSearch(net, batches, algorithm, config, work)
    result = search.run()
    return search, result, time.perf_counter() - start


# -- modes ---------------------------------------------------------------------------


def traces(data, args) -> dict:
    """Traces of each step function over `--architectures` random cells, and peak memory."""
    net = supernet(data, args)
    weights = trainer_lib.SharedWeights(net)
    batches = image_batches.ImageBatches(data, BATCH, seed=0)
    rng = np.random.default_rng(0)
    distinct = set()
    start = time.perf_counter()
    for i in range(args.architectures):
        arch = algorithms_base.random_architecture(net.space, rng)
        distinct.add(arch.to_json())
        code = net.encode(arch)
        x, y = batches.train(i)
        weights.train_step(x, y, code)
        weights.evaluate([batches.valid(i)], code)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"traces over {args.architectures} cells ({len(distinct)} distinct): train step "
          f"{weights.traces['train']}, eval step {weights.traces['eval']}; {seconds:.1f} s; "
          f"peak resident memory {peak:.0f} MiB", flush=True)
    return {"architectures": args.architectures, "distinct": len(distinct),
            "traces": dict(weights.traces), "seconds": seconds, "peak_rss_mib": peak}


def ranking(data, table, args) -> dict:
    """Kendall tau between stand-alone and supernet accuracy over stratified cells."""
    cells = stratified_cells(table, args.cells)
    alone = StandAlone(data, args)
    start = time.perf_counter()
    standalone = np.zeros((len(cells), args.standalone_seeds))
    # Stand-alone results are kept (per network setting) so a rerun of the supernet side
    # does not train the cells again.
    cache_path = os.path.join(args.work_dir, f"standalone_c{args.channels}_{args.reduction}_"
                                             f"e{args.standalone_epochs}.json")
    cache = json.load(open(cache_path)) if os.path.exists(cache_path) else {}
    for i, code in enumerate(cells):
        for s in range(args.standalone_seeds):
            key = f"{code}/{s}"
            if key not in cache:
                cache[key] = alone.test_accuracy(code, s)
                with open(cache_path, "w") as f:
                    json.dump(cache, f)
            standalone[i, s] = cache[key]
        print(f"  stand-alone {i + 1}/{len(cells)} {table_lib.cellstr(code)}: "
              f"{standalone[i].round(3).tolist()} (table {table.test[code]:.2f})", flush=True)
    standalone_seconds = time.perf_counter() - start
    search, _, supernet_seconds = train_supernet(data, args, "random", seed=1)
    valid = [search.batches.valid(i) for i in range(search.batches.num_valid)]
    shared = np.array([search.weights.evaluate(valid, search.supernet.encode(
        cell_arch(search.supernet.space, code))) for code in cells])
    mean = standalone.mean(axis=1)
    # BN uses each evaluation batch's statistics: the same ranking from batches of 30.
    small = image_batches.ImageBatches(data, BATCH, seed=1, valid_batch_size=30)
    small_valid = [small.valid(i) for i in range(small.num_valid)]
    shared_small = np.array([search.weights.evaluate(small_valid, search.supernet.encode(
        cell_arch(search.supernet.space, code))) for code in cells])
    out = {
        "cells": [table_lib.cellstr(c) for c in cells],
        "standalone_test": standalone.tolist(),
        "supernet_valid": shared.tolist(),
        "tau_supernet_standalone": kendall_tau(shared, mean),
        "tau_interval": tau_interval(shared, mean),
        "top10_overlap": top_overlap(shared, mean),
        "tau_supernet_standalone_batch30": kendall_tau(shared_small, mean),
        "tau_standalone_table": kendall_tau(mean, table.test[cells]),
        "tau_standalone_table_interval": tau_interval(mean, table.test[cells]),
        "tau_supernet_table": kendall_tau(shared, table.test[cells]),
        "tau_seed_to_seed": (kendall_tau(standalone[:, 0], standalone[:, 1])
                             if args.standalone_seeds > 1 else None),
        "standalone_seconds": standalone_seconds,
        "supernet_seconds": supernet_seconds,
    }
    print(f"Kendall tau, supernet vs stand-alone ({len(cells)} cells): "
          f"{out['tau_supernet_standalone']:.3f} (95% CI {out['tau_interval'][0]:.3f} to "
          f"{out['tau_interval'][1]:.3f}); top-10 overlap {out['top10_overlap']}/10; with BN "
          f"batches of 30: {out['tau_supernet_standalone_batch30']:.3f}; "
          f"stand-alone seed vs seed {out['tau_seed_to_seed']}; digits stand-alone vs table "
          f"test_top1 {out['tau_standalone_table']:.3f}; supernet vs table "
          f"{out['tau_supernet_table']:.3f}", flush=True)
    return out


def speed(data, args) -> dict:
    """Cells evaluated per second: on the supernet (search and ranking) vs trained alone."""
    alone = StandAlone(data, args)
    alone.test_accuracy(0, 0)  # Traces.
    start = time.perf_counter()
    for code in (1, 2, 3):
        alone.test_accuracy(code, 0)
    per_standalone = (time.perf_counter() - start) / 3
    search, result, seconds = train_supernet(data, args, "random", seed=1)
    ranked = len(result["candidates"])
    valid = [search.batches.valid(i) for i in range(search.batches.num_valid)]
    rng = np.random.default_rng(5)
    cells = [algorithms_base.random_architecture(search.supernet.space, rng) for _ in range(200)]
    start = time.perf_counter()
    for arch in cells:
        search.weights.evaluate(valid, search.supernet.encode(arch))
    per_eval = (time.perf_counter() - start) / len(cells)
    out = {"standalone_seconds_per_cell": per_standalone,
           "trained_supernet_seconds_per_cell": per_eval,
           "trained_supernet_ratio": per_standalone / per_eval,
           "supernet_search_seconds": seconds, "supernet_cells_ranked": ranked,
           "supernet_cells_per_second": ranked / seconds,
           "standalone_cells_per_second": 1.0 / per_standalone,
           "ratio": (ranked / seconds) * per_standalone}
    print(f"stand-alone: {per_standalone:.1f} s per cell ({args.standalone_epochs} epochs); "
          f"supernet: {ranked} cells ranked in {seconds:.1f} s including its training; "
          f"ratio {out['ratio']:.1f}x; a trained supernet evaluates a cell on the validation "
          f"split in {1000 * per_eval:.1f} ms ({out['trained_supernet_ratio']:.0f}x a stand-alone "
          f"cell's training)", flush=True)
    return out


def search(data, table, args) -> dict:
    """10 seeds of each method; the chosen cells, their test_top1, parameter-free count."""
    methods = [m for m in args.methods.split(",") if m]
    chosen, summary = {}, {}
    for method in methods:
        cells, seconds = [], []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            start = time.perf_counter()
            if method == "nasrl_table":
                space, _ = table_lib.search_space()
                algorithm = controller_search.ControllerSearch(space, seed)
                run = table_lib.run_algorithm(algorithm, table, args.table_budget)
                codes = run.codes[:args.table_budget]
                code = max(codes, key=lambda c: table.valid[c])
            else:
                kind = "controller" if method == "nasrl_shared" else "random"
                _, result, _ = train_supernet(data, args, kind, seed, preset=args.preset)
                code = table_code(result["architecture"])
            seconds.append(time.perf_counter() - start)
            cells.append(table_lib.cellstr(code))
            print(f"  {method} seed {seed}: {cells[-1]} test_top1 {table.test[code]:.2f} "
                  f"({seconds[-1]:.0f} s)", flush=True)
        tests = np.array([table.test[table_lib.parse_cellstr(c)] for c in cells])
        free = sum(nb201.is_parameter_free([e.split("~")[0] for e in c.replace("+", "").split("|")
                                            if e]) for c in cells)
        chosen[method] = cells
        summary[method] = {"test_top1_mean": float(tests.mean()), "test_top1_std": float(tests.std()),
                           "test_top1_min": float(tests.min()), "test_top1_max": float(tests.max()),
                           "parameter_free": int(free), "seconds_mean": float(np.mean(seconds))}
        print(f"{method}: test_top1 {tests.mean():.2f} +- {tests.std():.2f} "
              f"(min {tests.min():.2f}, max {tests.max():.2f}); parameter-free {free}/{len(cells)};"
              f" {np.mean(seconds):.0f} s per search", flush=True)
    if args.results:
        merged = {}
        if os.path.exists(args.results):
            with open(args.results) as f:
                merged = json.load(f)
        merged.update(chosen)
        with open(args.results, "w") as f:
            json.dump(merged, f, indent=1)
            f.write("\n")
    return {"chosen": chosen, "summary": summary}


def main(argv=None):
    args = parse_args(argv)
    if args.space == "cifar10_v1":
        import weight_sharing_conv  # experiments/, beside this file.

        os.makedirs(args.work_dir, exist_ok=True)
        weight_sharing_conv.conv_mode(args)
        return
    data = embedded.load_digits()
    table = table_lib.load_table(args.table)
    os.makedirs(args.work_dir, exist_ok=True)
    out = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(sys.argv)}
    modes = MODES if args.mode == "all" else (args.mode,)
    for mode in modes:
        if mode == "traces":
            out[mode] = traces(data, args)
        elif mode == "ranking":
            out[mode] = ranking(data, table, args)
        elif mode == "speed":
            out[mode] = speed(data, args)
        else:
            out[mode] = search(data, table, args)
    path = os.path.join(args.work_dir, f"summary_{args.mode}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1, default=str)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
