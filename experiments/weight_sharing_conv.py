r"""Weight sharing on the paper's CIFAR-10 space v1 (quick, digits): does it beat scratch at equal time?

  python experiments/weight_sharing_conv.py                      # 3 seeds, 12 supernet epochs
  python experiments/weight_sharing_conv.py --seeds 1 --epochs 1 --retrain_epochs 1

What it measures, per seed, on the embedded digits with the quick v1 space
of `experiments/cifar_shared_quick.flags` (depth 4, filter sizes 1,3,5,
filters 8,16):

  nasrl_shared   the controller (ENAS preset) with weight sharing
                 (`nas_tf.supernets`), timed: W wall seconds;
  random_shared  random search with the same supernet and schedule;
  nasrl_scratch  the paper's multi-trial search (default controller, each
                 child trained from scratch for 2 epochs, no curriculum)
                 given the same wall time W as nasrl_shared.

Why equal wall time: weight sharing's claim is that it finds networks as good
as the multi-trial search in a fraction of its compute, so the fair question
is what the multi-trial search finds when it gets only that fraction.
The time is enforced from outside the search: `max_trials` is large and the
`after_child` hook notes, after every finished child, the number of children
finished so far and raises a private exception once the elapsed time (from
the call of `nas_tf.search.run`, data loading included, as for W) exceeds W.
Only children that finished within W count (a child straddling W is
dropped; its search seconds are when the last counted child finished); if
none did, the first one counts and the row says "over budget".
The best counted COMPLETED child of `history.jsonl` by reward is written as
`best_architecture.json`.

Each method's best network is then trained again by `nas_tf.final_training`
with the same settings (one grid point, so no grid; --retrain_epochs epochs
on the full training set; the same seed) and its test accuracy reported.
"""

import argparse
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nas_tf import cli  # noqa: E402

cli.quiet_tensorflow()

import numpy as np  # noqa: E402

from nas_tf import final_training  # noqa: E402
from nas_tf import retrain  # noqa: E402
from nas_tf import search  # noqa: E402
from nas_tf import settings as settings_lib  # noqa: E402

METHODS = ("nasrl_shared", "random_shared", "nasrl_scratch")
SPACE = dict(space="cifar10_v1", dataset="digits",
             space_overrides={"depth": 4, "filter_sizes": (1, 3, 5), "num_filters": (8, 16)})
SHARED = {"batch_size": 64, "training.learning_rate": 0.1, "training.min_learning_rate": 0.0005,
          "controller_samples": 60, "derive_samples": 30, "checkpoint_steps": 10}
RETRAIN_POINT = final_training.GridPoint(0.1, 1e-4, 1e-3, 0.5)


class _OutOfTime(Exception):
    """Raised by the scratch search's after_child hook once W has passed (not a RuntimeError,
    which `ChildSearch.on_trial_end` would inspect)."""


def _shared_search(out, seed, method, epochs, verbose):
    config = settings_lib.search_config(
        out, seed=seed, preset="enas", overwrite=True, verbose=verbose,
        child={"weight_decay": 0.00025},  # --child_weight_decay of cifar_shared.flags
        weight_sharing=dict(SHARED, method=method, epochs=epochs), **SPACE)
    start = time.time()
    search.run(config)
    return {"search_seconds": time.time() - start, "children": None}


def _scratch_search(out, seed, budget, max_trials, verbose):
    config = settings_lib.search_config(
        out, seed=seed, preset="default", overwrite=True, verbose=verbose,
        max_trials=max_trials, child={"epochs": 2}, isolate_children=False, **SPACE)
    counted, last = set(), [0.0]  # Trial ids finished within the budget; when the last did.
    start = time.time()

    def after_child():
        if time.time() - start > budget:
            raise _OutOfTime()
        counted.update(r["trial_id"] for r in search.read_history(out))
        last[0] = time.time() - start

    try:
        search.run(config, after_child=after_child)
    except _OutOfTime:
        pass
    except search.SearchError as e:  # In case Keras Tuner wraps the hook's exception.
        if "_OutOfTime" not in str(e):
            raise
    wall = time.time() - start
    history = search.read_history(out)
    over = not counted
    kept = [r for r in history if r["trial_id"] in counted] or history[:1]
    done = [r for r in kept if r["status"] == "COMPLETED"]
    if not done:
        raise RuntimeError(f"No child of {out} completed within the budget.")
    best = max(done, key=lambda r: r["reward"])
    with open(os.path.join(out, search.BEST_ARCHITECTURE), "w", encoding="utf-8") as f:
        f.write(json.dumps(best["architecture"]) + "\n")
    return {"search_seconds": last[0] if counted else wall, "wall_seconds": wall,
            "children": len(kept), "children_run": len(history),
            "over_budget": over, "search_reward": best["reward"]}


def _retrain(search_dir, seed, epochs, verbose):
    arch = os.path.join(search_dir, search.BEST_ARCHITECTURE)
    out = os.path.join(search_dir, "retrain")
    shutil.rmtree(out, ignore_errors=True)
    config = final_training.RetrainConfig(
        output_dir=out, architecture_path=arch, space=final_training.read_space(arch),
        data_name="digits", grid=(RETRAIN_POINT,), grid_epochs=epochs, epochs=epochs,
        seed=seed, verbose=verbose)
    result = retrain.run(config)
    return {"test_accuracy": 1.0 - result["test_error"], "num_parameters": result["num_parameters"],
            "depth": result["depth"]}


def _table(rows):
    lines = ["| method | test acc mean | std | min | max | search s (mean) | children (mean) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    summary = {}
    for m in METHODS:
        mine = [r for r in rows if r["method"] == m]
        if not mine:
            continue
        acc = np.array([r["test_accuracy"] for r in mine])
        kids = [r["children"] for r in mine if r["children"] is not None]
        summary[m] = {"mean": float(acc.mean()), "std": float(acc.std()), "min": float(acc.min()),
                      "max": float(acc.max()), "seeds": len(mine),
                      "search_seconds": float(np.mean([r["search_seconds"] for r in mine])),
                      "children": float(np.mean(kids)) if kids else None}
        s = summary[m]
        lines.append(f"| {m} | {s['mean']:.4f} | {s['std']:.4f} | {s['min']:.4f} | {s['max']:.4f} "
                     f"| {s['search_seconds']:.0f} | {'-' if s['children'] is None else s['children']:} |")
    lines += ["", "| seed | method | test acc | parameters | depth | search s | children |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        kids = "-" if r["children"] is None else (
            f"{r['children']}" + (" (over budget)" if r.get("over_budget") else ""))
        lines.append(f"| {r['seed']} | {r['method']} | {r['test_accuracy']:.4f} | "
                     f"{r['num_parameters']:,} | {r['depth']} | {r['search_seconds']:.0f} | {kids} |")
    return summary, "\n".join(lines)


def conv_mode(args) -> dict:
    """Runs the comparison `args` describes; returns {"summary", "rows", "table"}."""
    work = os.path.join(args.work_dir, "conv")
    verbose = getattr(args, "verbose", 0)
    retrain_epochs = getattr(args, "retrain_epochs", 10)
    max_trials = getattr(args, "scratch_max_trials", None) or 100000
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        base = os.path.join(work, f"seed{seed}")
        got = {}
        for method in METHODS:
            out = os.path.join(base, method)
            shutil.rmtree(out, ignore_errors=True)  # Fresh: a resumed search's time means nothing.
            if method == "nasrl_scratch":
                budget = getattr(args, "scratch_seconds", None) or got["nasrl_shared"]["search_seconds"]
                got[method] = dict(_scratch_search(out, seed, budget, max_trials, verbose),
                                   budget_seconds=budget)
            else:
                got[method] = _shared_search(out, seed, method.split("_")[0].replace(
                    "nasrl", "controller"), args.epochs, verbose)
            got[method].update(_retrain(out, seed, retrain_epochs, verbose))
            rows.append(dict(got[method], seed=seed, method=method))
            print(f"seed {seed} {method}: test accuracy {got[method]['test_accuracy']:.4f}, "
                  f"search {got[method]['search_seconds']:.0f} s"
                  + (f", {got[method]['children']} children" if method == "nasrl_scratch" else ""),
                  flush=True)
    summary, table = _table(rows)
    print(table, flush=True)
    results = {"summary": summary, "rows": rows, "table": table}
    with open(os.path.join(work, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first_seed", type=int, default=1)
    p.add_argument("--epochs", type=int, default=12, help="Supernet epochs.")
    p.add_argument("--retrain_epochs", type=int, default=10)
    p.add_argument("--scratch_seconds", type=float, default=None,
                   help="Tests only: the scratch budget (unset: nasrl_shared's wall time W).")
    p.add_argument("--scratch_max_trials", type=int, default=None,
                   help="Tests only: also stop the scratch search after this many children.")
    p.add_argument("--verbose", type=int, default=0)
    p.add_argument("--work_dir", default="/tmp/nas_tf_weight_sharing")
    conv_mode(p.parse_args(argv))


if __name__ == "__main__":
    main()
