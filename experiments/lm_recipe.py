"""Benchmark: a final-training recipe in which every baseline language model learns.

A claim that one recurrent cell beats another means little if the models sit
on the unigram plateau (they have learnt word frequencies and nothing else).
This program chooses one recipe for all final models on the validation split
only, then shows that under it `keras.layers.LSTM`, the hand-written
LSTM-like cell (`nas_tf.spaces.cell.lstm_like`) and the paper's base-8 cell
(experiments/paper/ptb_cell_base8.json), at equal parameter count (within
2 %, `replicate_cell_search.final_models`), leave the plateau in every seed.

1. Levels. Unigram and bigram perplexity of every split (`nas_tf.data.ngram`).
2. Sweep. Every point of the grid (optimizer, learning rate, initial weight
   range, dropout) trains each model once (seed 0). A point qualifies when
   every model's best validation perplexity is below `--plateau` x the
   validation unigram level; the chosen point is the qualifying one with
   the lowest geometric mean of the models' validation perplexities (the
   lowest worst ratio when none qualifies, and the report says so).
3. Confirmation. The chosen point, every model, `--seeds` training seeds:
   best validation perplexity, test perplexity, and test perplexity on the
   shuffled test tokens (it should rise to about the unigram level: no
   future token leaks through the state or the batching).

Every run appends a line to `<output_dir>/runs.jsonl`; a rerun skips them.
The report goes to `<output_dir>/report.md` and `recipe.json`.

    python experiments/lm_recipe.py --data=text --output_dir=runs/lm_recipe_word
    python experiments/lm_recipe.py --data=text_char --units=96 --epochs=4 \\
        --learning_rates=1 --init_scales=0.05,0.1 --output_dir=runs/lm_recipe_char
    python experiments/lm_recipe.py --quick         # a minute, for tests
"""

import argparse
import itertools
import json
import math
import os
import sys
import time
import types
from typing import Dict, List

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, ".."))
sys.path.insert(0, _HERE)

from nas_tf import durable, jsonl  # noqa: E402

MODELS = ("lstm", "lstm_like", "paper")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="text", choices=("text", "text_char", "ptb", "ptb_char"))
    p.add_argument("--data_dir", help="TFDS directory with a prepared Penn Treebank.")
    p.add_argument("--output_dir", default="runs/lm_recipe")
    p.add_argument("--units", type=int, default=64, help="The LSTM's width; its parameter count "
                   "is every model's target.")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr_decay_after", type=int, default=6, help="Epochs at the full rate, "
                   "then x0.8 per epoch.")
    p.add_argument("--optimizers", default="sgd", help="Comma-separated: sgd, adam.")
    p.add_argument("--learning_rates", default="0.5,1,2", help="SGD learning rates.")
    p.add_argument("--adam_learning_rates", default="0.002", help="Adam learning rates.")
    p.add_argument("--init_scales", default="0.05,0.1", help="Weights start in [-s, s].")
    p.add_argument("--dropouts", default="0.3,0.5", help="Input and output dropout.")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--seeds", type=int, default=3, help="Training seeds of the confirmation.")
    p.add_argument("--plateau", type=float, default=0.8, help="A model has left the plateau when "
                   "its best validation perplexity is below this times the unigram level.")
    p.add_argument("--max_train_batches", type=int, default=0, help="0: whole epochs.")
    p.add_argument("--max_eval_batches", type=int, default=0, help="0: whole splits.")
    p.add_argument("--quick", action="store_true", help="Tiny sizes, for tests.")
    args = p.parse_args(argv)
    if args.quick:
        args.units, args.epochs, args.seeds = 40, 1, 2
        args.learning_rates, args.init_scales, args.dropouts = "1", "0.05,0.1", "0.3"
        args.max_train_batches, args.max_eval_batches = 3, 2
    args.models = [m for m in args.models.split(",") if m]
    args.optimizers = [o for o in args.optimizers.split(",") if o]
    for m in args.models:
        if m not in MODELS:
            p.error(f"--models: unknown {m!r}; choose from {list(MODELS)}.")
    for o in args.optimizers:
        if o not in ("sgd", "adam"):
            p.error(f"--optimizers: unknown {o!r}; choose sgd or adam.")
    for name in ("learning_rates", "adam_learning_rates", "init_scales", "dropouts"):
        try:
            values = [float(v) for v in getattr(args, name).split(",") if v]
        except ValueError:
            p.error(f"--{name} must be comma-separated numbers, got {getattr(args, name)!r}.")
        if not values or min(values) < 0 or (name == "dropouts" and max(values) >= 1):
            p.error(f"--{name}: give non-negative values (dropout below 1).")
        setattr(args, name, values)
    if args.units < 1 or args.epochs < 1 or args.seeds < 1:
        p.error("--units, --epochs and --seeds must be positive.")
    return args


def grid(args) -> List[dict]:
    """Every recipe of the sweep, in a fixed order."""
    points = []
    for optimizer in args.optimizers:
        rates = args.learning_rates if optimizer == "sgd" else args.adam_learning_rates
        for lr, init, dropout in itertools.product(rates, args.init_scales, args.dropouts):
            points.append({"optimizer": optimizer, "learning_rate": lr, "init_scale": init,
                           "dropout": dropout})  # fmt: skip
    return points


def context(args) -> dict:
    """What every run of this output directory shares; a run of another context is not reused."""
    names = ("data", "units", "epochs", "lr_decay_after", "max_train_batches", "max_eval_batches")
    return {n: getattr(args, n) for n in names}


def key(args, model: str, point: dict, seed: int) -> str:
    return json.dumps([context(args), model, point, seed], sort_keys=True)


def train_one(args, model, point: dict, seed: int, data, levels) -> dict:
    """Trains one model under one recipe; its validation, test and shuffled-test figures."""
    import keras

    from nas_tf.children import language_model as lm
    from nas_tf.children import lm_trainer
    from nas_tf.children.base import ChildTrainingError
    from nas_tf.data import ngram

    keras.backend.clear_session()
    config = lm.LanguageModelConfig(
        units=model.units, input_dropout=point["dropout"], output_dropout=point["dropout"],
        init_scale=point["init_scale"], cell="lstm" if model.description is None else "nas",
    )  # fmt: skip
    train = lm_trainer.TrainConfig(
        epochs=args.epochs, lr_decay_after=args.lr_decay_after, seed=seed,
        learning_rate=point["learning_rate"], optimizer=point["optimizer"],
        max_train_batches=args.max_train_batches or None,
        max_eval_batches=args.max_eval_batches or None,
    )  # fmt: skip
    start = time.time()
    try:
        result = lm_trainer.train_language_model(
            model.description, data, config, train, restore_best=True
        )
    except ChildTrainingError as e:
        return {"failed": e.reason, "best_val_perplexity": math.nan, "seconds": time.time() - start}

    def test_ppl(ids):
        loss = lm_trainer.evaluate(result.model, ids, train.eval_batch_size, train.bptt_steps,
                                   train.max_eval_batches)  # fmt: skip
        return math.exp(loss)

    return {
        "val_perplexities": result.val_perplexities,
        "best_val_perplexity": result.best_val_perplexity,
        "test_perplexity": test_ppl(data.test),
        "shuffled_test_perplexity": test_ppl(ngram.shuffled(data.test, seed)),
        "ratio": result.best_val_perplexity / levels["valid"]["unigram"],
        "parameters": result.num_params,
        "units": model.units,
        "step_ms": result.step_ms,
        "seconds": time.time() - start,
    }


def choose(points: List[dict], sweep: Dict[str, Dict[str, dict]], plateau: float):
    """(chosen point, whether it qualifies): see the module doc."""

    def ratios(i):
        return [r.get("ratio", math.inf) for r in sweep[i].values()]

    def score(i):
        return float(np.mean([math.log(r) if r < math.inf else math.inf for r in ratios(i)]))

    qualifying = [i for i in sweep if max(ratios(i)) < plateau]
    if qualifying:
        best = min(qualifying, key=score)
        return points[int(best)], True
    best = min(sweep, key=lambda i: max(ratios(i)))
    return points[int(best)], False


def _fmt(values, digits=1) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "failed"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def report(args, data, levels, points, sweep, chosen, qualifies, confirm, seconds) -> str:
    bits = data.level == "char"
    lines = [f"# Final-training recipe on {data.name}", ""]
    lines += ["| split | tokens | unigram ppl | bigram ppl |", "| --- | --- | --- | --- |"]
    for split in ("train", "valid", "test"):
        lv = levels[split]
        lines.append(f"| {split} | {lv['tokens']:,} | {lv['unigram']:.1f} | {lv['bigram']:.1f} |")
    lines += ["", f"Sweep (seed 0; best validation perplexity; plateau: below {args.plateau} x "
              f"{levels['valid']['unigram']:.1f}):", ""]  # fmt: skip
    lines += ["| optimizer | lr | init | dropout | " + " | ".join(args.models) + " |",
              "| --- " * (4 + len(args.models)) + "|"]  # fmt: skip
    for i, p in enumerate(points):
        row = sweep.get(str(i), {})
        cells = [_fmt([row.get(m, {}).get("best_val_perplexity")]) for m in args.models]
        mark = " **chosen**" if p == chosen else ""
        lines.append(f"| {p['optimizer']} | {p['learning_rate']:g} | {p['init_scale']:g} | "
                     f"{p['dropout']:g}{mark} | " + " | ".join(cells) + " |")  # fmt: skip
    verdict = "every model below the plateau" if qualifies else "NO point had every model below the plateau"
    lines += ["", f"Chosen ({verdict}): {json.dumps(chosen)}", ""]
    unit = "test bits per char" if bits else "test ppl"
    lines += [f"| model | parameters | seeds left the plateau | best val ppl | {unit} | "
              "shuffled test ppl | ms / step |", "| --- " * 7 + "|"]  # fmt: skip
    for m in args.models:
        runs = confirm[m]
        ok = sum(1 for r in runs if r.get("ratio", math.inf) < args.plateau)
        test = [r.get("test_perplexity") for r in runs]
        if bits:
            test = [math.log2(t) if t else None for t in test]
        lines.append(
            f"| {m} | {runs[0].get('parameters', 0):,} | {ok} / {len(runs)} | "
            f"{_fmt([r.get('best_val_perplexity') for r in runs])} | {_fmt(test, 3 if bits else 1)} | "
            f"{_fmt([r.get('shuffled_test_perplexity') for r in runs])} | "
            f"{_fmt([r.get('step_ms') for r in runs])} |"
        )
    lines += ["", f"Command: `python experiments/lm_recipe.py {' '.join(sys.argv[1:])}`; "
              f"{seconds / 60:.1f} min of training in this output directory.", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    import replicate_cell_search as rcs

    from nas_tf import data as data_lib
    from nas_tf.data import ngram

    data = data_lib.load(args.data, args.data_dir)
    levels = ngram.split_levels(data)
    shape = types.SimpleNamespace(final_units=args.units, cell_base=4, cell_functions="paper")
    models = {m.name: m for m in rcs.final_models(shape, [], data.vocab_size)}
    os.makedirs(args.output_dir, exist_ok=True)
    path = os.path.join(args.output_dir, "runs.jsonl")
    done = {r["key"]: r for r in jsonl.records(path)} if os.path.exists(path) else {}

    def run(stage, name, point, seed):
        k = key(args, name, point, seed)
        if k not in done:
            record = {"key": k, **train_one(args, models[name], point, seed, data, levels)}
            durable.append_line(path, json.dumps(record, sort_keys=True))
            done[k] = record
            print(f"[{stage}] {name} {point} seed {seed}: val "
                  f"{record['best_val_perplexity']:.2f} ({record['seconds']:.0f} s)", flush=True)
        return done[k]

    points = grid(args)
    sweep = {str(i): {m: run("sweep", m, p, 0) for m in args.models} for i, p in enumerate(points)}
    chosen, qualifies = choose(points, sweep, args.plateau)
    confirm = {m: [run("confirm", m, chosen, s) for s in range(args.seeds)] for m in args.models}
    seconds = sum(r.get("seconds", 0) for r in done.values())
    text = report(args, data, levels, points, sweep, chosen, qualifies, confirm, seconds)
    durable.atomic_write_text(os.path.join(args.output_dir, "report.md"), text)
    summary = {"data": data.name, "levels": levels, "chosen": chosen, "qualifies": qualifies,
               "args": vars(args), "confirm": confirm}  # fmt: skip
    durable.atomic_write_text(os.path.join(args.output_dir, "recipe.json"),
                              json.dumps(summary, indent=1, sort_keys=True) + "\n")  # fmt: skip
    print(text)


if __name__ == "__main__":
    main()
