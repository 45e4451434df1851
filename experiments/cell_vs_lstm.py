"""Benchmark: a searched cell against Keras's LSTM in the same language model.

Trains two language models in one run, one after the other, that differ only
in their recurrent layer: the cell (an architecture JSON such as a search's
`best_architecture.json`, or one of the paper's hand-written cells) and
`keras.layers.LSTM` of the same width. Data, embedding, softmax, dropout,
optimiser, schedule, batches and seed are the same (`nas_tf.train_lm.run`).
It prints a table: parameters, best validation and test perplexity (bits per
character on character-level data), milliseconds per training step, and the
ratio cell / LSTM. The step times are measured after training on fresh
copies of both models, alternating rounds of steps between the two (medians),
so that load from other processes weighs on both alike. Each model is also written to
`<output_dir>/{cell,lstm}/` (`results.json`, `model.keras`).

Zoph & Le 2017 (Table 2) compare their base-8 cell with LSTM language models
of matching size on Penn Treebank; this program makes that comparison at any
size. A base-4 cell has as many recurrent weights as an LSTM of the same width
(2 * 4 * units^2 per layer); the LSTM adds 4 * units gate biases.

Usage (a few minutes on a laptop CPU, on the embedded corpus):
    python experiments/cell_vs_lstm.py
    python experiments/cell_vs_lstm.py --architecture=runs/ptb_quick/best_architecture.json
    python experiments/cell_vs_lstm.py --data=text_char --units=128
"""

import argparse
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from nas_tf import cli, train_lm  # noqa: E402
from nas_tf.children import language_model as lm  # noqa: E402
from nas_tf.children import lm_trainer  # noqa: E402
from nas_tf.spaces import cell as cell_space  # noqa: E402

BUILTIN_CELLS = {"lstm_like": cell_space.lstm_like, "paper_example": cell_space.paper_example}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--architecture", help="Architecture JSON of the cell (ptb_cell of "
                   "--cell_base); unset: the --builtin cell.")
    p.add_argument("--cell_base", type=int, default=None, help="Base of the cell in "
                   "--architecture (unset: read from the file).")
    p.add_argument("--builtin", choices=sorted(BUILTIN_CELLS), default="lstm_like",
                   help="Hand-written cell used without --architecture: lstm_like (base 4, an "
                   "LSTM's structure) or paper_example (the paper's base-2 example, sec. 3.4).")
    p.add_argument("--data", choices=train_lm.DATASETS, default="text", help="Dataset: the "
                   "embedded corpus (text, text_char) or a prepared Penn Treebank (ptb, ptb_char).")
    p.add_argument("--data_dir", help="TFDS directory with a prepared Penn Treebank.")
    p.add_argument("--output_dir", default="runs/cell_vs_lstm", help="Where both models go.")
    p.add_argument("--units", type=int, default=128, help="Width of both models.")
    p.add_argument("--epochs", type=int, default=6, help="Epochs of both models.")
    p.add_argument("--batch_size", type=int, default=20, help="Rows per batch.")
    p.add_argument("--bptt_steps", type=int, default=35, help="Unrolled steps per batch.")
    p.add_argument("--learning_rate", type=float, default=1.0, help="SGD learning rate.")
    p.add_argument("--lr_decay_after", type=int, default=4, help="Epochs at the full rate; "
                   "then x0.8 per epoch.")
    p.add_argument("--dropout", type=float, default=0.5, help="Input and output dropout.")
    p.add_argument("--max_train_batches", type=int, default=None, help="Batches per epoch "
                   "(unset: all).")
    p.add_argument("--max_eval_batches", type=int, default=None, help="Validation and test "
                   "batches (unset: all).")
    p.add_argument("--xla", choices=cli.AUTO_ON_OFF, default="auto", help="XLA for the "
                   "training steps (auto: on with a GPU).")
    p.add_argument("--seed", type=int, default=0, help="Seed of both models.")
    p.add_argument("--timing_rounds", type=int, default=5, help="Alternating timing rounds.")
    p.add_argument("--timing_steps", type=int, default=20, help="Training steps per model and "
                   "round.")
    args = p.parse_args(argv)
    for name in ("units", "epochs", "batch_size", "bptt_steps", "timing_rounds", "timing_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be positive.")
    return args


def the_cell(args):
    """The cell to compare and its label."""
    if args.architecture is None:
        return BUILTIN_CELLS[args.builtin](), args.builtin
    description = train_lm.load_architecture(args.architecture, args.cell_base)
    return description, os.path.basename(args.architecture)


def step_times(configs, data, train, rounds, steps):
    """Median ms per training step of fresh models, alternating rounds between them.

    Args:
      configs: name -> (description, `LanguageModelConfig`).
      data: the `LMData` whose first training windows are used.
      train: the `TrainConfig` (batch, steps, optimiser, XLA).
      rounds: rounds; every round runs `steps` steps of each model in turn.
      steps: steps per model and round.

    Returns:
      name -> median milliseconds of one step (the first call, which traces
      and compiles, left out).
    """
    from nas_tf.data import ptb

    rows = ptb.batchify(data.train, train.batch_size)
    windows = list(ptb.bptt_windows(rows, train.bptt_steps, drop_remainder=True))[:steps]
    windows = [(tf.constant(x), tf.constant(y)) for x, y in windows]
    runners = {}
    for name, (description, model_config) in configs.items():
        model = lm.build_model(description, data.vocab_size, model_config, seed=train.seed)
        step = lm_trainer.compiled_train_step(model, train)
        float(step(*windows[0], model.initial_states(train.batch_size))[0])  # Compile.
        runners[name] = (model, step)
    times = {name: [] for name in configs}
    for _ in range(rounds):
        for name, (model, step) in runners.items():
            states = model.initial_states(train.batch_size)
            for i in range(steps):
                x, y = windows[i % len(windows)]
                tick = time.perf_counter()
                loss, states = step(x, y, states)
                float(loss)
                times[name].append(time.perf_counter() - tick)
    return {name: 1000 * float(np.median(t)) for name, t in times.items()}


def table(results, label, char):
    """The comparison as text: one row per model and the ratio cell / LSTM."""
    unit = "bpc" if char else "ppl"

    def figure(r, key):
        return r[f"{key}_bits_per_token"] if char else r[f"{key}_perplexity"]

    rows = []
    for name, r in (("cell: " + label, results["cell"]), ("keras LSTM", results["lstm"])):
        rows.append((name, f"{r['num_parameters']:,}", f"{figure(r, 'best_val'):.3f}",
                     f"{figure(r, 'test'):.3f}", f"{r['timed_step_ms']:.1f}",
                     f"{r['seconds']:.0f}"))  # fmt: skip
    c, s = results["cell"], results["lstm"]
    rows.append(("ratio cell / LSTM", f"{c['num_parameters'] / s['num_parameters']:.3f}",
                 f"{figure(c, 'best_val') / figure(s, 'best_val'):.3f}",
                 f"{figure(c, 'test') / figure(s, 'test'):.3f}",
                 f"{c['timed_step_ms'] / s['timed_step_ms']:.2f}",
                 f"{c['seconds'] / s['seconds']:.2f}"))  # fmt: skip
    head = ("model", "parameters", f"best val {unit}", f"test {unit}", "ms / train step",
            "train + eval s")  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    try:
        description, label = the_cell(args)
    except (OSError, ValueError) as e:
        print(f"cell_vs_lstm: {e}", file=sys.stderr)
        return 2
    data = train_lm.load_data(args.data, args.data_dir)
    train = lm_trainer.TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        bptt_steps=args.bptt_steps,
        learning_rate=args.learning_rate,
        lr_decay_after=args.lr_decay_after,
        max_train_batches=args.max_train_batches,
        max_eval_batches=args.max_eval_batches,
        jit_compile=cli.auto_on_off(args.xla),
        seed=args.seed,
    )
    print(description)
    results, configs = {}, {}
    for kind in ("cell", "lstm"):
        keras.backend.clear_session()
        config = train_lm.RunConfig(
            output_dir=os.path.join(args.output_dir, kind),
            data_name=args.data,
            data_dir=args.data_dir,
            description=description if kind == "cell" else None,
            model=lm.LanguageModelConfig(
                units=args.units,
                input_dropout=args.dropout,
                output_dropout=args.dropout,
                cell="nas" if kind == "cell" else "lstm",
            ),
            train=train,
            architecture_path=args.architecture,
        )
        results[kind] = train_lm.run(config, data=data)
        configs[kind] = (config.description, config.model)
    keras.backend.clear_session()
    timed = step_times(configs, data, train, args.timing_rounds, args.timing_steps)
    for kind, ms in timed.items():
        results[kind]["timed_step_ms"] = ms
    char = data.level == "char"
    print()
    print(f"{data.name}: {args.units} units, {args.epochs} epochs, batch {args.batch_size} x "
          f"{args.bptt_steps} steps, {keras.backend.backend()} on "
          f"{'GPU' if tf.config.list_physical_devices('GPU') else 'CPU'}; "
          f"{'bits per char' if char else 'perplexity'}, lower is better.")  # fmt: skip
    print(table(results, label, char))
    if any(not math.isfinite(r["test_perplexity"]) for r in results.values()):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
