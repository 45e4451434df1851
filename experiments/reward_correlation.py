"""Benchmark: does a search's child reward predict the final result?

A search ranks cells by the reward of a cheap child; the claim it serves is
about the cells' final perplexity. This program measures how well the one
ranks the other, over cells drawn uniformly from the `ptb_cell` space (good
and bad alike), for several child budgets and for the weight-sharing
supernet:

* child budgets: a 2-layer child of --child_units trained --child_batches
  batches (the old laptop child), and the same child trained whole epochs;
  its validation perplexity after epoch e of a --child_epochs run is exactly
  the e-epoch child's (the schedule is flat before --lr_decay_after);
  reward 80 / ppl^2 (sec. 4.2), and 0 for a child that diverged (the limit
  of that reward, so that a search is pushed away from such cells);
* shared weights: one `CellSupernet` trained --shared_steps steps on
  uniformly drawn cells (ENAS's warm-up), then every cell's perplexity on
  the validation split under the shared weights;
* final: every cell as a full language model at the LSTM's parameter count
  (`replicate_cell_search.final_models`' width solver), the chosen recipe
  (docs/lm_recipe.md), test perplexity of the best validation epoch.

For each predictor: Spearman's rank correlation with the final test
perplexity (signs such that +1 is a perfect prediction), a 95 % bootstrap
interval over cells, and the cheapest child budget at or above --target.
Every run appends to `<output_dir>/runs.jsonl`; a rerun skips them.

    python experiments/reward_correlation.py --cells=24 --output_dir=runs/reward_correlation
    python experiments/reward_correlation.py --quick
"""

import argparse
import json
import math
import os
import sys
import time
from typing import Dict, List, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, ".."))
sys.path.insert(0, _HERE)

from nas_tf import durable, jsonl  # noqa: E402

REWARD_C = 80.0  # The paper's c in c / ppl^2 (sec. 4.2).


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="text", choices=("text", "text_char", "ptb", "ptb_char"))
    p.add_argument("--data_dir")
    p.add_argument("--output_dir", default="runs/reward_correlation")
    p.add_argument("--cells", type=int, default=24, help="Cells drawn uniformly (seeded).")
    p.add_argument("--seed", type=int, default=0, help="Seed of the draws and of every run.")
    p.add_argument("--cell_base", type=int, default=4)
    p.add_argument("--child_units", type=int, default=32)
    p.add_argument("--child_batches", type=int, default=60, help="The batch-cut child's budget.")
    p.add_argument("--child_epochs", type=int, default=3, help="Whole-epoch children: 1..n.")
    p.add_argument("--final_units", type=int, default=64, help="The LSTM width whose "
                   "parameter count every final model matches.")
    p.add_argument("--final_epochs", type=int, default=8)
    p.add_argument("--lr_decay_after", type=int, default=6)
    # Children and final models train with the recipe lm_recipe.py chose at word level.
    p.add_argument("--optimizer", default="adam", choices=("sgd", "adam"))
    p.add_argument("--learning_rate", type=float, default=0.002)
    p.add_argument("--init_scale", type=float, default=0.3)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--shared_steps", type=int, default=2000, help="Supernet steps (0: skip).")
    p.add_argument("--shared_units", type=int, default=64)
    p.add_argument("--target", type=float, default=0.6, help="Correlation a budget must reach.")
    p.add_argument("--max_eval_batches", type=int, default=0, help="0: whole splits.")
    p.add_argument("--quick", action="store_true", help="Tiny sizes, for tests.")
    args = p.parse_args(argv)
    if args.quick:
        args.cells, args.child_units, args.child_batches, args.child_epochs = 4, 8, 3, 2
        args.final_units, args.final_epochs, args.shared_steps, args.shared_units = 40, 1, 5, 8
        args.max_eval_batches = 2
    if args.cells < 3:
        p.error("--cells must be at least 3 (a rank correlation needs them).")
    for name in ("child_units", "child_batches", "child_epochs", "final_units", "final_epochs"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be positive.")
    return args


# -- statistics ---------------------------------------------------------------------------


def ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank (inf ranks last)."""
    values = np.asarray(values, np.float64)
    order = np.argsort(values, kind="stable")
    out = np.empty(len(values))
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[order[j + 1]] == values[order[i]]:
            j += 1
        out[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho: Pearson's correlation of the ranks (NaN when one side is constant)."""
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def spearman_interval(a, b, reps: int = 2000, seed: int = 0):
    """95 % percentile bootstrap interval of `spearman` over resampled pairs."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(reps):
        i = rng.integers(len(a), size=len(a))
        rho = spearman(a[i], b[i])
        if math.isfinite(rho):
            values.append(rho)
    if not values:
        return math.nan, math.nan
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def child_reward(ppl: Optional[float]) -> float:
    """80 / ppl^2, and 0 (its limit) for a diverged child (None or inf)."""
    if ppl is None or not math.isfinite(ppl):
        return 0.0
    return REWARD_C / ppl**2


# -- runs ---------------------------------------------------------------------------------


def draw_cells(args) -> List[dict]:
    import replicate_cell_search as rcs

    from nas_tf.spaces import cell as cell_space

    draws = rcs.random_architectures(cell_space.ptb_cell(args.cell_base), args.seed)
    return [json.loads(next(draws).to_json()) for _ in range(args.cells)]


def _description(args, architecture: dict):
    from nas_tf import space as space_lib
    from nas_tf.spaces import cell as cell_space

    space = cell_space.ptb_cell(args.cell_base)
    arch = space.validate(space_lib.Architecture.from_json(json.dumps(architecture)))
    return cell_space.CellDescription.from_architecture(arch, space)


def _train(args, description, units: int, epochs: int, batches: Optional[int]):
    """Validation perplexity per epoch and the test perplexity (None each when it diverged)."""
    import keras

    from nas_tf.children import language_model as lm
    from nas_tf.children import lm_trainer
    from nas_tf.children.base import ChildTrainingError

    keras.backend.clear_session()
    model = lm.LanguageModelConfig(units=units, input_dropout=args.dropout,
                                   output_dropout=args.dropout, init_scale=args.init_scale)
    train = lm_trainer.TrainConfig(
        epochs=epochs, lr_decay_after=args.lr_decay_after, seed=args.seed,
        learning_rate=args.learning_rate, optimizer=args.optimizer, max_train_batches=batches,
        max_eval_batches=args.max_eval_batches or None)  # fmt: skip
    start = time.time()
    try:
        result = lm_trainer.train_language_model(description, args.data_obj, model, train,
                                                 restore_best=True)
    except ChildTrainingError as e:
        return {"failed": e.reason, "seconds": time.time() - start}
    test = lm_trainer.evaluate(result.model, args.data_obj.test, train.eval_batch_size,
                               train.bptt_steps, train.max_eval_batches)
    return {"val_perplexities": result.val_perplexities, "test_perplexity": math.exp(test),
            "parameters": result.num_params, "units": units, "seconds": time.time() - start}


def shared_perplexities(args, cells: List[dict]) -> Dict[str, object]:
    """Each cell's validation perplexity under one supernet trained on uniform cells."""
    from nas_tf import space as space_lib
    from nas_tf.algorithms import base as algorithms_base
    from nas_tf.supernets import cell as cell_supernet
    from nas_tf.supernets import config as config_lib
    from nas_tf.supernets import text_batches
    from nas_tf.supernets import trainer as trainer_lib

    data = args.data_obj
    net = cell_supernet.CellSupernet(
        base=args.cell_base, vocab_size=data.vocab_size, embedding_size=args.shared_units,
        units=args.shared_units, dropout=args.dropout, steps=35, seed=args.seed,
        init_scale=args.init_scale)  # fmt: skip
    batches = text_batches.TextBatches(data, 20, 35, seed=args.seed)
    weights = trainer_lib.SharedWeights(net, config_lib.SharedTraining(total_steps=args.shared_steps))
    rng = np.random.default_rng(args.seed)
    start = time.time()
    for step in range(args.shared_steps):
        arch = algorithms_base.random_architecture(net.space, rng)
        weights.train_step(*batches.train(step), net.encode(arch))
    valid = [batches.valid(i) for i in range(batches.num_valid)]
    if args.max_eval_batches:
        valid = valid[: args.max_eval_batches]
    ppls = []
    for architecture in cells:
        arch = space_lib.Architecture.from_json(json.dumps(architecture))
        ppls.append(weights.evaluate(valid, net.encode(net.space.validate(arch))))
    return {"perplexities": ppls, "steps": args.shared_steps, "seconds": time.time() - start}


def run_all(args, cells: List[dict]) -> Dict[str, dict]:
    """Every run (resumed from runs.jsonl); {key: record}."""
    from nas_tf import data as data_lib

    import replicate_cell_search as rcs
    import types

    args.data_obj = data_lib.load(args.data, args.data_dir)
    os.makedirs(args.output_dir, exist_ok=True)
    path = os.path.join(args.output_dir, "runs.jsonl")
    done = {r["key"]: r for r in jsonl.records(path)} if os.path.exists(path) else {}
    settings = {k: v for k, v in vars(args).items() if k not in ("output_dir", "quick", "data_obj")}

    def once(name: str, make):
        k = json.dumps([name, settings], sort_keys=True)
        if k not in done:
            record = {"key": k, "name": name, **make()}
            durable.append_line(path, json.dumps(record, sort_keys=True))
            done[k] = record
            print(f"[{name}] {json.dumps({x: y for x, y in record.items() if x in ('val_perplexities', 'test_perplexity', 'failed', 'seconds')})}", flush=True)  # noqa: E501
        return done[k]

    shape = types.SimpleNamespace(final_units=args.final_units, cell_base=args.cell_base,
                                  cell_functions="paper")
    out = {}
    for i, architecture in enumerate(cells):
        description = _description(args, architecture)
        search = {"method": "cell", "seed": i, "best_architecture": architecture}
        final = rcs.final_models(shape, [search], args.data_obj.vocab_size)[1]
        out[i] = {
            "batches": once(f"cell{i}_batches", lambda: _train(
                args, description, args.child_units, 1, args.child_batches)),
            "epochs": once(f"cell{i}_epochs", lambda: _train(
                args, description, args.child_units, args.child_epochs, None)),
            "final": once(f"cell{i}_final", lambda: _train(
                args, description, final.units, args.final_epochs, None)),
        }  # fmt: skip
    if args.shared_steps:
        out["shared"] = once("shared", lambda: shared_perplexities(args, cells))
    return out


def _best(val: Optional[List[float]], epochs: Optional[int] = None) -> Optional[float]:
    if not val:
        return None
    return min(val[:epochs] if epochs else val)


def correlations(args, runs) -> List[dict]:
    """One row per predictor: its Spearman rho with the final test perplexity, and interval."""
    n = args.cells
    final = [runs[i]["final"].get("test_perplexity", math.inf) for i in range(n)]
    target = [-f for f in final]  # Lower perplexity ranks higher.
    predictors = [(f"{args.child_batches} batches", [
        child_reward(_best(runs[i]["batches"].get("val_perplexities"))) for i in range(n)])]
    for e in range(1, args.child_epochs + 1):
        # A child that diverged within --child_epochs counts as diverged at every budget.
        rewards = [child_reward(_best(runs[i]["epochs"].get("val_perplexities"), e))
                   for i in range(n)]  # fmt: skip
        predictors.append((f"{e} epoch{'s' if e > 1 else ''}", rewards))
    if "shared" in runs:
        ppls = runs["shared"]["perplexities"]
        predictors.append((f"shared weights ({runs['shared']['steps']} steps)",
                           [child_reward(p) for p in ppls]))
    rows = []
    for name, values in predictors:
        rho = spearman(values, target)
        lo, hi = spearman_interval(values, target)
        rows.append({"predictor": name, "spearman": rho, "interval": [lo, hi],
                     "diverged": sum(1 for v in values if v == 0.0)})
    return rows


def report(args, cells, runs, rows, seconds: float) -> str:
    final = [runs[i]["final"].get("test_perplexity") for i in range(args.cells)]
    ok = [f for f in final if f is not None and math.isfinite(f)]
    lines = [f"# Child reward against final test perplexity ({args.cells} random base-"
             f"{args.cell_base} cells, {args.data})", ""]
    lines += [f"Final models: {len(ok)} trained ({args.cells - len(ok)} diverged); test perplexity "
              f"median {np.median(ok):.1f}, range {min(ok):.1f}-{max(ok):.1f}." if ok else
              "Final models: every one diverged.", ""]  # fmt: skip
    lines += ["| predictor | Spearman rho | 95 % bootstrap interval | diverged (reward 0) |",
              "| --- | --- | --- | --- |"]
    for r in rows:
        lo, hi = r["interval"]
        lines.append(f"| {r['predictor']} | {r['spearman']:.3f} | {lo:.3f} - {hi:.3f} | "
                     f"{r['diverged']} |")
    child_rows = [r for r in rows if not r["predictor"].startswith("shared")]
    enough = [r for r in child_rows if r["spearman"] >= args.target]
    lines += ["", (f"Cheapest child budget at or above {args.target}: **{enough[0]['predictor']}**."
                   if enough else f"No child budget reached {args.target}."), ""]  # fmt: skip
    lines += [f"Command: `python experiments/reward_correlation.py {' '.join(sys.argv[1:])}`; "
              f"{seconds / 60:.1f} min of training in this output directory.", ""]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    cells = draw_cells(args)
    runs = run_all(args, cells)
    rows = correlations(args, runs)
    seconds = sum(r.get("seconds", 0) for i in range(args.cells) for r in runs[i].values())
    seconds += runs.get("shared", {}).get("seconds", 0)
    text = report(args, cells, runs, rows, seconds)
    durable.atomic_write_text(os.path.join(args.output_dir, "report.md"), text)
    durable.atomic_write_text(
        os.path.join(args.output_dir, "correlation.json"),
        json.dumps({"rows": rows, "cells": cells, "settings": {
            k: v for k, v in vars(args).items() if k != "data_obj"}}, indent=1, sort_keys=True) + "\n")
    print(text)


if __name__ == "__main__":
    main()
