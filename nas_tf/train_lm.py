r"""Trains one full language model of a searched cell, or of an LSTM baseline.

The search (`python -m nas_tf.train --flagfile=experiments/ptb_quick.flags`)
writes its best cell to `<output_dir>/best_architecture.json`; this program
trains that cell alone as a full language model (Zoph & Le 2017, sec. 4.2: a
2-layer RNN of the cell, perplexity on the test split), or, with --cell=lstm,
the same model around `keras.layers.LSTM`. It prints the validation
perplexity after every epoch (bits per character on character-level data),
then the test perplexity, and writes to --output_dir:

  config.json     the resolved settings;
  grid.jsonl      with a tuning grid: one line per finished grid point;
  results.json    per-epoch validation figures, test figures, parameters,
                  milliseconds per training step, the grid and the chosen
                  settings;
  model.keras     the trained model (the best validation epoch's weights).

  python -m nas_tf.train_lm --architecture=runs/ptb_quick/best_architecture.json \
      --cell_base=4 --data_name=text --units=64 --epochs=5 --output_dir=runs/ptb_quick/final
  python -m nas_tf.train_lm --cell=lstm --data_name=text --units=64 --epochs=5 \
      --output_dir=runs/ptb_quick/lstm
  python -m nas_tf.train_lm --architecture=runs/ptb/best_architecture.json \
      --data_name=ptb --data_dir=/data/tfds --output_dir=runs/ptb/final   # paper sizes

A cell with max or sin (a search with --search_cell_functions=extended, the
paper's control experiment 1) loads as it is; --cell_functions=paper or
extended requires the file's cell to belong to that function set.

Library defaults are the paper's where it gives them (2 layers, 35 epochs,
about 20M parameters) and Zaremba et al. 2014's medium setup otherwise
(SGD; --optimizer=adam is the alternative).

The paper tuned its final models "over learning rate, weight initialization,
dropout rates and decay epoch" (sec. 4.2). --grid_learning_rates,
--grid_init_scales, --grid_dropouts and --grid_lr_decay_after list values of
those axes (an empty list: the single-value flag). With more than one
combination, each trains --grid_epochs epochs (unset: --epochs), the one of
lowest best validation perplexity is chosen (the test split chooses nothing;
a diverging point is recorded and skipped), and the final model trains
--epochs with it; when both lengths agree the chosen point's model is the
final one, if it trained in this run. The same command after a kill skips
the points grid.jsonl holds (`nas_tf.lm_grid`).

  python -m nas_tf.train_lm --cell=lstm --data_name=text --units=64 --epochs=5 \
      --grid_learning_rates=1,0.5 --grid_dropouts=0.3,0.5 --output_dir=runs/ptb_quick/lstm_grid
"""

import dataclasses
import json
import math
import os
import time
from typing import TYPE_CHECKING, Optional, Tuple

from absl import app
from absl import flags

from nas_tf import cli

cli.quiet_tensorflow()  # Before anything below imports TensorFlow.

from nas_tf import data as data_lib
from nas_tf import durable
from nas_tf import lm_grid
from nas_tf import progress
from nas_tf.spaces import cell as cell_space  # Plain Python: no TensorFlow yet.

# This entry point's own flag registry (the convention of `nas_tf.cli`).
FLAGS = flags.FlagValues()
define = cli.definer(FLAGS)

define.string("architecture", None, "JSON file of the cell to train: an architecture of "
              "ptb_cell(--cell_base), such as a search's best_architecture.json. Required with "
              "--cell=nas; not allowed with --cell=lstm.")
define.integer("cell_base", 8, "Leaves of the cell's tree, a power of two; must match the "
               "architecture file (paper: 8).", lower_bound=2)
define.enum("cell_functions", None, list(cell_space.FUNCTIONS), "The function set the cell in "
            "--architecture must belong to: 'paper' (add, elem_mult; identity, tanh, sigmoid, "
            "relu) or 'extended' (max and sin added: control experiment 1). Unset: the smallest "
            "set that holds the file's cell, so an extended search's best_architecture.json "
            "needs no flag.")
define.enum("cell", "nas", ["nas", "lstm"], "Recurrent layer: 'nas' for the cell in --architecture, "
            "'lstm' for keras.layers.LSTM of the same width (the baseline).")
define.enum("data_name", "ptb", list(data_lib.names(data_lib.TEXT)), "Text to model: 'text' / "
            "'text_char' (the embedded corpus, no download) or 'ptb' / 'ptb_char' (Penn Treebank, "
            "prepared offline in --data_dir).")
define.string("data_dir", None, "TensorFlow Datasets directory holding a prepared Penn Treebank (see "
              "docs/ptb.md; a local path or a URL); unused for the embedded corpus.")
define.string("output_dir", "runs/train_lm", "Directory for config.json, results.json and "
              "model.keras; created if missing, existing files are replaced. A URL (gs://...) "
              "is worked on in --local_dir and synced there at the end (nas_tf.remote).")
define.string("local_dir", None, "With a URL --output_dir: the local mirror the run works in "
              "(unset: ~/.cache/nas_tf/mirrors/<hash of the URL>).")
define.integer("verbose", 1, "0: silent; 1: a progress line per epoch (in place on a terminal) "
               "and the results.", lower_bound=0,
               upper_bound=1)

define.integer("units", None, "Width of the recurrent layers and the embedding (unset: the width that "
               "gives about --parameter_budget parameters).", lower_bound=1)
define.integer("parameter_budget", 20_000_000, "Parameters to aim for when --units is unset (paper: "
               "about 20M, the medium baselines it matches).", lower_bound=1)
define.integer("num_layers", 2, "Recurrent layers (paper: 2).", lower_bound=1, upper_bound=16)
define.boolean("tie_embeddings", False, "Share the embedding with the softmax weights (the paper's "
               "'shared embeddings' model).")
define.float("input_dropout", 0.5, "Dropout on the embeddings (Zaremba et al.: 0.5).",
             lower_bound=0.0, upper_bound=0.99)
define.float("output_dropout", 0.5, "Dropout between layers and before the softmax (Zaremba et al.: "
             "0.5).", lower_bound=0.0, upper_bound=0.99)
define.float("recurrent_dropout", 0.0, "Dropout on h(t-1) inside the recurrent layer, one mask per "
             "sequence (Zaremba et al.: 0).", lower_bound=0.0, upper_bound=0.99)
define.boolean("variational", False, "One dropout mask per sequence for the input and output dropout "
               "(Gal 2015) instead of a fresh mask per step.")
define.float("init_scale", 0.05, "Weights start uniform in [-s, s] (Zaremba et al., medium: 0.05).",
             lower_bound=1e-6)
define.enum("use_bias", "auto", list(cli.AUTO_ON_OFF), "Biases in the recurrent layer: auto is off "
            "for a searched cell (the paper's equations have none) and on for the LSTM (Keras's "
            "default).")

define.integer("epochs", 35, "Passes over the training split (paper: 35).", lower_bound=1)
define.integer("batch_size", 20, "Contiguous rows per batch (Zaremba et al.: 20).", lower_bound=1)
define.integer("bptt_steps", 35, "Unrolled steps per batch (Zaremba et al.: 35).", lower_bound=1)
define.integer("eval_batch_size", 10, "Rows when measuring validation and test perplexity.",
               lower_bound=1)
define.enum("optimizer", "sgd", ["sgd", "adam"], "Optimizer: 'sgd' is Zaremba et al.'s (with "
            "--learning_rate=1); 'adam' is Keras's Adam, e.g. at --learning_rate=2e-3. Either is "
            "clipped at --clip_norm and decayed per --lr_decay.")
define.float("learning_rate", 1.0, "Initial learning rate (Zaremba et al.'s SGD: 1.0; Adam: e.g. "
             "2e-3).", lower_bound=1e-8)
define.float("lr_decay", 0.8, "Learning-rate factor per epoch after --lr_decay_after epochs (TensorFlow's "
             "PTB tutorial, medium: 0.8; Zaremba et al. divide by 1.2).", lower_bound=1e-6, upper_bound=1.0)
define.integer("lr_decay_after", 6, "Epochs at the full learning rate (Zaremba et al., medium: 6).",
               lower_bound=0)
define.float("clip_norm", 5.0, "Global gradient-norm clipping (Zaremba et al.: 5); 0 turns it off.",
             lower_bound=0.0)
define.integer("max_train_batches", None, "Stop each epoch after this many batches (unset: the whole "
               "training split); for quick CPU runs.", lower_bound=1)
define.integer("max_eval_batches", None, "Measure validation and test perplexity on this many batches "
               "(unset: the whole splits); for quick CPU runs.", lower_bound=1)
define.enum("xla", "auto", list(cli.AUTO_ON_OFF), "XLA for the training step: auto is on with a GPU "
            "or TPU and off on CPU.")
define.boolean("restore_best", True, "Test and save the weights of the epoch with the lowest "
               "validation perplexity (else the last epoch's).")
define.integer("seed", 0, "Seed of the weights and the dropout masks.", lower_bound=0)

# The paper's tuning grid (sec. 4.2 names the axes, not their values).
define.list("grid_learning_rates", [], "Grid: initial learning rates, comma-separated (empty: "
            "--learning_rate alone).")
define.list("grid_init_scales", [], "Grid: weight-initialization scales (empty: --init_scale "
            "alone).")
define.list("grid_dropouts", [], "Grid: dropout rates, each setting --input_dropout and "
            "--output_dropout together (empty: those two flags).")
define.list("grid_lr_decay_after", [], "Grid: epochs at the full learning rate, whole numbers "
            "(empty: --lr_decay_after alone).")
define.integer("grid_epochs", None, "Epochs of each grid point when the grid has more than one "
               "(unset: --epochs, and the chosen point's model is the final one).", lower_bound=1)

if TYPE_CHECKING:  # TensorFlow loads after the flags are parsed.
    from nas_tf.children import language_model as lm
    from nas_tf.children import lm_trainer

# Text datasets of the registry (`nas_tf.data`).
DATASETS = data_lib.names(data_lib.TEXT)


def load_architecture(path: str, base: Optional[int] = None, functions: Optional[str] = None):
    """The `CellDescription` in an architecture JSON file of `ptb_cell(base, functions)`.

    Args:
      path: a file written by `Architecture.to_json` (the search's
        `best_architecture.json`).
      base: the cell base the file must hold; None: whatever base it holds.
      functions: the function set (`nas_tf.spaces.cell.FUNCTIONS`) the cell
        must belong to; None: the smallest set that holds it ("extended" for
        a cell with max or sin).

    Returns:
      The parsed `nas_tf.spaces.cell.CellDescription`.

    Raises:
      ValueError: if the file is missing or unreadable, is not an
        architecture, holds a cell of another base or with functions outside
        `functions`, or lies outside the space.
    """
    from nas_tf import space as space_lib

    if base is not None:
        cell_space.check_base(base)
    if functions is not None:
        cell_space.function_set(functions)
    if not os.path.isfile(path):
        raise ValueError(f"Architecture file {path} does not exist.")
    try:
        with open(path) as f:
            text = f.read()
        arch = space_lib.Architecture.from_json(text)
    except (OSError, UnicodeDecodeError, space_lib.ArchitectureError) as e:
        raise ValueError(f"Architecture file {path} cannot be read: {e}") from None
    nodes = sum(1 for k in arch.values if k.startswith("node_") and k.endswith("_combine"))
    if base is None:
        base = max(2, (nodes + 1) // 2)
        if nodes != cell_space.num_nodes(base) or base & (base - 1):
            raise ValueError(
                f"Architecture file {path} holds {nodes} cell nodes; a cell has 2 * base - 1 "
                "with base a power of two."
            )
    expected = cell_space.num_nodes(base)
    if nodes != expected:
        found = (nodes + 1) // 2
        held = f"a base-{found} cell" if nodes == cell_space.num_nodes(found) else f"{nodes} nodes"
        raise ValueError(
            f"Architecture file {path} holds {held}, but the cell base is {base} "
            f"({expected} nodes); pass the base the search used (--cell_base)."
        )
    outside = _functions_outside(arch.values, functions)
    if outside:
        needed = cell_space.smallest_functions(
            [v for k, v in arch.values.items() if k.endswith("_combine")],
            [v for k, v in arch.values.items() if k.endswith("_activation")],
        )
        hint = f"; pass --cell_functions={needed} or leave it unset" if needed else ""
        raise ValueError(
            f"Architecture file {path} uses {', '.join(outside)}, which the {functions!r} "
            f"function set (--cell_functions={functions}) does not have{hint}."
        )
    space = None if functions is None else cell_space.ptb_cell(base, functions)
    try:
        # No space: the smallest function set that holds the cell, at its base.
        return cell_space.CellDescription.from_architecture(arch, space)
    except space_lib.ArchitectureError as e:
        raise ValueError(f"Architecture file {path} is not a base-{base} cell: {e}") from None


def _functions_outside(values, functions: Optional[str]):
    """The combine and activation values of a cell that `functions` lacks (none if unset)."""
    if functions is None:
        return []
    fs = cell_space.function_set(functions)
    outside = [v for k, v in values.items()
               if (k.endswith("_combine") and v not in fs.combinations)
               or (k.endswith("_activation") and v not in fs.activations)]  # fmt: skip
    return sorted(set(map(str, outside)))


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One language model to train.

    Attributes:
      output_dir: where config.json, results.json and model.keras go.
      data_name: "text", "text_char" (embedded corpus), "ptb" or "ptb_char".
      data_dir: TFDS directory with a prepared Penn Treebank.
      description: the cell (`CellDescription`); None for the LSTM.
      model: the `LanguageModelConfig` (its `cell` says "nas" or "lstm");
        None: the defaults.
      train: the `lm_trainer.TrainConfig`; None: the defaults.
      restore_best: test and save the best validation epoch's weights.
      architecture_path: the file the cell came from (recorded only).
      verbose: 0 silent, 1 a line per epoch and the results.
      grid: the `nas_tf.lm_grid.GridPoint`s to choose among (`run`); their
        values replace those of `model` and `train`. Empty: no grid. A grid of
        one point is put into `model` and `train` and emptied.
      grid_epochs: epochs of each grid point; None: `train.epochs`.
    """

    output_dir: str
    data_name: str = "ptb"
    data_dir: Optional[str] = None
    description: Optional["cell_space.CellDescription"] = None
    model: Optional["lm.LanguageModelConfig"] = None
    train: Optional["lm_trainer.TrainConfig"] = None
    restore_best: bool = True
    architecture_path: Optional[str] = None
    verbose: int = 1
    grid: Tuple[lm_grid.GridPoint, ...] = ()
    grid_epochs: Optional[int] = None

    def __post_init__(self):
        from nas_tf.children import language_model as lm
        from nas_tf.children import lm_trainer

        if self.model is None:
            object.__setattr__(self, "model", lm.LanguageModelConfig())
        if self.train is None:
            object.__setattr__(self, "train", lm_trainer.TrainConfig())
        if self.data_name not in DATASETS:
            raise ValueError(f"data_name must be one of {DATASETS}, got {self.data_name!r}.")
        if self.model.cell == "nas" and self.description is None:
            raise ValueError("A searched-cell model needs a cell: give an architecture file.")
        if self.model.cell == "lstm" and self.description is not None:
            raise ValueError("The LSTM baseline takes no cell architecture.")
        self._settle_grid()

    def _settle_grid(self):
        """Checks the grid; a one-point grid becomes the model's and schedule's own values."""
        grid = tuple(self.grid)
        if len(set(grid)) != len(grid):
            raise ValueError("The grid repeats a point; give each value once per axis.")
        if self.grid_epochs is not None and self.grid_epochs < 1:
            raise ValueError(f"grid_epochs must be positive or None, got {self.grid_epochs}.")
        if len(grid) == 1:
            model, train = grid[0].apply(self.model, self.train)
            object.__setattr__(self, "model", model)
            object.__setattr__(self, "train", train)
            grid = ()
        object.__setattr__(self, "grid", grid)

    def at_point(self, point: "lm_grid.GridPoint", epochs: int) -> "RunConfig":
        """This run with `point`'s settings and `epochs` epochs, and no grid."""
        model, train = point.apply(self.model, self.train)
        train = dataclasses.replace(train, epochs=epochs)
        return dataclasses.replace(self, model=model, train=train, grid=())

    def to_dict(self) -> dict:
        """Plain JSON data: the cell as its config and its architecture values."""
        description = self.description
        return {
            "output_dir": self.output_dir,
            "data_name": self.data_name,
            "data_dir": self.data_dir,
            "architecture_path": self.architecture_path,
            "cell": description.to_config() if description is not None else None,
            "architecture": (
                description.to_architecture().values if description is not None else None
            ),
            "model": dataclasses.asdict(self.model),
            "train": dataclasses.asdict(self.train),
            "restore_best": self.restore_best,
            "grid": [point.settings() for point in self.grid],
            "grid_epochs": self.grid_epochs,
        }


def load_data(name: str, data_dir: Optional[str] = None):
    """The `LMData` of a dataset name in `DATASETS` (the registry's loader; never downloads).

    Raises:
      nas_tf.data.DataNotPreparedError: when Penn Treebank is not prepared.
    """
    return data_lib.load(name, data_dir)


def _train(config: RunConfig, data, keep_model: bool = True):
    """Trains `config`'s model (no grid), a progress line per epoch; its `LanguageModelResult`."""
    from nas_tf.children import lm_trainer

    line = progress.Progress(config.train.epochs, verbose=config.verbose, label="epoch")

    def on_epoch_end(epoch, ppl):
        figure = f"{math.log2(ppl):.3f} bits per char" if data.level == "char" else f"perplexity {ppl:.2f}"
        lr = config.train.learning_rate_at(epoch)
        line.update(epoch + 1, note=f"lr {lr:.4g}  validation {figure}")

    try:
        return lm_trainer.train_language_model(
            config.description, data, config.model, config.train, on_epoch_end,
            keep_model=keep_model, restore_best=config.restore_best and keep_model,
        )  # fmt: skip
    finally:
        line.close()


def tune(config: RunConfig, data, say=print):
    """Runs `config.grid` (resuming from `<output_dir>/grid.jsonl`) and chooses its best point.

    Args:
      config: a run with a grid of two or more points (with none, nothing
        trains); `output_dir` must exist.
      data: its `LMData`.
      say: called with a line per grid point.

    Returns:
      (final, result, records): `config` at the chosen point with `train.epochs`
      epochs and no grid; the chosen point's `LanguageModelResult` when it is
      already that final model (same epochs, trained in this call), else
      None; and the grid's records (`lm_grid.run_grid`).

    Raises:
      ChildDivergedError: every grid point diverged.
    """
    if not config.grid:
        return config, None, []
    epochs = config.grid_epochs or config.train.epochs
    final_length = epochs == config.train.epochs

    def train_point(point):
        return _train(config.at_point(point, epochs), data, keep_model=final_length)

    path = os.path.join(config.output_dir, lm_grid.GRID)
    context = lm_grid.shared_settings(config.to_dict(), data, epochs)
    outcome = lm_grid.run_grid(config.grid, train_point, path, context, say)
    final = config.at_point(outcome.chosen, config.train.epochs)
    result = outcome.result if final_length else None
    say(f"Chosen: {outcome.chosen.describe()}; " + (
        "its model is the final one." if result is not None
        else f"training the final model with it ({config.train.epochs} epochs)."))  # fmt: skip
    return final, result, outcome.records


def run(config: RunConfig, data=None) -> dict:
    """Trains the model of `config`, measures it on the test split, writes it out.

    With a grid (`config.grid`), `tune` chooses the settings first and the
    final model trains with them (unless the chosen point's model is it).

    Args:
      config: what to train.
      data: the `LMData` to use instead of loading `config.data_name`.

    Returns:
      The results written to `<output_dir>/results.json`.

    Raises:
      nas_tf.children.convnet.ChildTrainingError: if training diverges (with a
        grid: every grid point, or the final run) or runs out of memory.
      nas_tf.data.DataNotPreparedError: when Penn Treebank is not prepared.
    """
    from nas_tf.children import lm_trainer

    data = data if data is not None else load_data(config.data_name, config.data_dir)
    char = data.level == "char"
    say = print if config.verbose else (lambda *a, **k: None)
    what = "an LSTM" if config.model.cell == "lstm" else f"a base-{config.description.base} cell"
    say(f"Training {what} language model on {data.name} ({data.vocab_size} tokens, "
        f"{len(data.train):,} training ids).")  # fmt: skip
    start = time.time()
    os.makedirs(config.output_dir, exist_ok=True)
    final, result, grid = tune(config, data, say)
    if result is None:
        result = _train(final, data)
    model = result.model
    t = final.train
    test_loss = lm_trainer.evaluate(model, data.test, t.eval_batch_size, t.bptt_steps, t.max_eval_batches)
    model_path = os.path.join(config.output_dir, "model.keras")
    with durable.atomic_path(model_path) as tmp:
        model.save(tmp)
    results = {
        "cell": config.model.cell,
        "data": data.name,
        "level": data.level,
        "vocab_size": data.vocab_size,
        "units": model.units,
        "num_parameters": result.num_params,
        "val_perplexities": result.val_perplexities,
        "val_bits_per_token": [math.log2(p) for p in result.val_perplexities],
        "best_epoch": result.best_epoch + 1,
        "best_val_perplexity": result.best_val_perplexity,
        "best_val_bits_per_token": result.bits_per_token,
        "test_perplexity": math.exp(test_loss),
        "test_bits_per_token": test_loss / math.log(2),
        "train_losses": result.train_losses,
        "step_ms": result.step_ms,
        "seconds": time.time() - start,
        "model_path": model_path,
        "config": config.to_dict(),
        "grid": grid,
        "chosen": lm_grid.GridPoint.of(final.model, final.train).settings(),
    }
    durable.atomic_write_text(
        os.path.join(config.output_dir, "results.json"),
        json.dumps(results, indent=2, sort_keys=True) + "\n",
    )
    figure = (
        f"test {results['test_bits_per_token']:.3f} bits per char"
        if char
        else f"test perplexity {results['test_perplexity']:.2f}"
    )
    step = f"{result.step_ms:.1f} ms per training step" if result.step_ms else "one step"
    say(f"{figure} (epoch {results['best_epoch']} weights); {result.num_params:,} "
        f"parameters, {model.units} units; {step}.")  # fmt: skip
    say(f"Wrote {model_path} and results.json to {config.output_dir}.")
    return results


def grid_from_flags() -> Tuple["lm_grid.GridPoint", ...]:
    """The grid the --grid_* flags describe; an empty list stands for its single-value flag(s).

    Raises:
      app.UsageError: naming the flag of a value that does not parse, is out
        of range, or repeats.
    """
    alone = [(FLAGS.learning_rate,), (FLAGS.init_scale,),
             ((FLAGS.input_dropout, FLAGS.output_dropout),), (FLAGS.lr_decay_after,)]  # fmt: skip
    try:
        axes = [lm_grid.parse_axis(name, FLAGS[name].value or []) for name in lm_grid.AXES]
        return lm_grid.grid_points(*[axis or single for axis, single in zip(axes, alone)])
    except ValueError as e:
        raise app.UsageError(str(e)) from None


def config_from_flags() -> RunConfig:
    """The `RunConfig` the flags describe (flag problems raise UsageError)."""
    from nas_tf.children import language_model as lm
    from nas_tf.children import lm_trainer

    cli.check_finite(FLAGS)

    if FLAGS.cell == "nas" and FLAGS.architecture is None:
        raise app.UsageError("--cell=nas needs --architecture (a best_architecture.json).")
    if FLAGS.cell == "lstm" and FLAGS.architecture is not None:
        raise app.UsageError("--architecture applies to --cell=nas only.")
    grid = grid_from_flags()
    from nas_tf import remote

    try:
        remote.check_data_dir(FLAGS.data_dir)
        if remote.is_url(FLAGS.output_dir):
            remote.check_url(FLAGS.output_dir)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    try:
        description = None
        if FLAGS.architecture is not None:
            description = load_architecture(FLAGS.architecture, FLAGS.cell_base,
                                            FLAGS.cell_functions)
        return RunConfig(
            output_dir=FLAGS.output_dir,
            data_name=FLAGS.data_name,
            data_dir=FLAGS.data_dir,
            description=description,
            model=lm.LanguageModelConfig(
                units=FLAGS.units,
                parameter_budget=FLAGS.parameter_budget,
                num_layers=FLAGS.num_layers,
                tie_embeddings=FLAGS.tie_embeddings,
                input_dropout=FLAGS.input_dropout,
                output_dropout=FLAGS.output_dropout,
                recurrent_dropout=FLAGS.recurrent_dropout,
                variational=FLAGS.variational,
                init_scale=FLAGS.init_scale,
                use_bias=cli.auto_on_off(FLAGS.use_bias),
                cell=FLAGS.cell,
            ),
            train=lm_trainer.TrainConfig(
                epochs=FLAGS.epochs,
                batch_size=FLAGS.batch_size,
                bptt_steps=FLAGS.bptt_steps,
                eval_batch_size=FLAGS.eval_batch_size,
                learning_rate=FLAGS.learning_rate,
                lr_decay=FLAGS.lr_decay,
                lr_decay_after=FLAGS.lr_decay_after,
                clip_norm=FLAGS.clip_norm or None,
                max_train_batches=FLAGS.max_train_batches,
                max_eval_batches=FLAGS.max_eval_batches,
                jit_compile=cli.auto_on_off(FLAGS.xla),
                seed=FLAGS.seed,
                optimizer=FLAGS.optimizer,
            ),
            restore_best=FLAGS.restore_best,
            architecture_path=FLAGS.architecture,
            verbose=FLAGS.verbose,
            grid=grid,
            grid_epochs=FLAGS.grid_epochs,
        )
    except ValueError as e:
        raise app.UsageError(str(e))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from nas_tf import data as data_lib
    from nas_tf import dirlock, remote
    from nas_tf.children.convnet import ChildTrainingError

    config = config_from_flags()

    def work():
        # A URL is worked on in a local mirror, synced at the end (nas_tf.remote); either is
        # locked (nas_tf.dirlock) while this runs.
        with remote.mirrored(config.output_dir, FLAGS.local_dir, config.verbose) as mirror:
            durable.atomic_write_text(
                os.path.join(mirror.local, "config.json"),
                json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n",
            )
            run(dataclasses.replace(config, output_dir=mirror.local))

    return cli.exit_status(work, {
        data_lib.DataNotPreparedError: 2,
        remote.SyncError: 1,
        dirlock.LockedError: 1,
        ChildTrainingError: 1,
    })

if __name__ == "__main__":
    cli.run(main, FLAGS, __doc__)
