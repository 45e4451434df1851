r"""The paper's final training of a found convolutional network: grid, full data, test error.

Zoph & Le 2017, sec. 4.1: after the search, the architecture with the best
validation accuracy is trained again with a small grid search over learning
rate, weight decay, batch-norm epsilon and the epoch at which the learning
rate decays; the best model of the grid is run until convergence and its test
accuracy is reported (Table 1).

This program does that for one architecture JSON of a convolutional space
(a search's `best_architecture.json`, or a file of `experiments/paper/`):

1. the grid: every combination of --grid_learning_rates, --grid_weight_decays,
   --grid_bn_epsilons and --grid_lr_decay_at trains --grid_epochs epochs on
   the training split and is scored on the held-out validation split (the
   max validation accuracy of its last 5 epochs, as the search's reward). A
   grid of one point is not trained: there is nothing to choose;
2. the final run: the best point trains --epochs epochs on the full training
   set (training + validation splits: CIFAR-10's 50,000 images);
3. the test split gives the error, printed as a row of the paper's Table 1
   (depth, parameters, error), and written to --output_dir:

  config.json        the resolved settings (a rerun with others is refused);
  grid.jsonl         one line per finished grid point;
  results.json       grid, chosen settings, per-epoch figures, test error;
  best_model.keras   the final model;
  saved_model/       the same model as a TensorFlow SavedModel (`model.export`)
                     for serving: `tf.saved_model.load(dir).serve(images)`.

  python -m nas_tf.retrain --architecture=runs/quick/best_architecture.json --data_name=digits
      # the defaults are the paper-scale schedule (16 x 50 + 300 epochs); for a
      # few minutes on a CPU add --grid_epochs=3 --epochs=10 --grid_learning_rates=0.1
  python -m nas_tf.retrain --architecture=runs/cifar10_v3/best_architecture.json \
      --data_dir=$HOME/tensorflow_datasets --more_filters=40

The space comes from the search's `config.json` beside the architecture file
(or --search_config); without one, from --space with the paper's values.
Killed at any point, the same command resumes: finished grid points are not
retrained and a run in progress continues from its last finished epoch
(weights, optimizer state and learning-rate schedule). Fault points for tests
(`NAS_TF_FAULT`, see `nas_tf.durable`): "retrain_after_epoch" (an epoch's
checkpoint was just written), "retrain_after_grid_point" (a grid point was
just recorded), "retrain_before_export" (the final model is trained and about
to be saved). Exit status: 0 done, 1 training failed, 2 data not prepared.
"""

import dataclasses
import itertools
import json
import math
import os
import shutil
import time
from typing import Any, Dict, List, Optional, Tuple

from absl import app
from absl import flags

from nas_tf import cli
from nas_tf import durable
from nas_tf import progress

# Its own registry, as every entry point (nas_tf/cli.py).
FLAGS = flags.FlagValues()
define = cli.definer(FLAGS)

CONV_SPACES = ("cifar10_v1", "cifar10_v2", "cifar10_v3")

define.string("architecture", None, "JSON file of the network to train: an architecture of a "
        "convolutional space, such as a search's best_architecture.json. Required.")
define.string("search_config", None, "The search's config.json, which names the space the "
        "architecture belongs to (unset: config.json beside --architecture, if there is one).")
define.enum("space", None, list(CONV_SPACES), "The architecture's space with the paper's values, "
      "when no search config.json is found (unset: cifar10_v1). Overrides the search config.")
define.enum("data_name", "cifar10", ["cifar10", "digits"], "Images: 'cifar10' (a prepared "
      "TensorFlow Datasets directory, never downloaded) or 'digits' (embedded, no download).")
define.string("data_dir", None, "TensorFlow Datasets directory holding a prepared cifar10 (a "
              "local path or a URL such as gs://BUCKET/tensorflow_datasets).")
define.string("output_dir", None, "Where the results go, and where a killed run resumes from "
        "(unset: <directory of --architecture>/retrain); a URL (gs://...) is worked on in "
        "--local_dir and synced there at the end (nas_tf.remote).")
define.string("local_dir", None, "With a URL --output_dir: the local mirror the run works in "
              "(unset: ~/.cache/nas_tf/mirrors/<hash of the URL>).")
define.boolean("overwrite", False, "Delete an earlier run in --output_dir and start afresh.")
define.integer("seed", 0, "Seed of the validation split, the weights and the shuffling.",
         lower_bound=0)
define.integer("verbose", 1, "0: silent; 1: a line per grid point and per final epoch; 2: Keras "
         "progress bars too.", lower_bound=0, upper_bound=2)

define.integer("more_filters", 0, "Widen every convolution by this many filters (Zoph & Le 2017, "
         "Table 1: 40 more filters turn the 4.47% v3 network into the 3.65% one).",
         lower_bound=0)
# The paper names the grid's axes, not its values. The defaults bracket the
# search's child settings (DenseNet's: lr 0.1, weight decay 1e-4, lr / 10 at
# 50% and 75% of training) and the two batch-norm epsilons in common use
# (1e-3: Keras and TensorFlow; 1e-5: Torch, which DenseNet used).
define.list("grid_learning_rates", ["0.1", "0.05"], "Grid: initial SGD learning rates (not given "
      "in the paper; the search's children use 0.1).")
define.list("grid_weight_decays", ["1e-4", "5e-4"], "Grid: weight decays (not given in the paper; "
      "the search's children use 1e-4).")
define.list("grid_bn_epsilons", ["1e-3", "1e-5"], "Grid: batch-norm epsilons (not given in the "
      "paper; Keras's default 1e-3 and Torch's 1e-5).")
define.list("grid_lr_decay_at", ["0.5", "0.75"], "Grid: fraction of the epochs after which the "
      "learning rate is first divided by 10; it is divided again halfway from there to the "
      "end (0.5 gives DenseNet's 50% / 75%).")
define.integer("grid_epochs", 50, "Epochs of each grid point (the search's child length, sec. 4.1: "
         "50).", lower_bound=1)
define.integer("epochs", 300, "Epochs of the final run on the full training set (the paper trains "
         "'until convergence'; DenseNet's schedule: 300).", lower_bound=1)
define.integer("batch_size", 64, "Images per step (DenseNet's 64, as the search's children).",
         lower_bound=1)
define.float("momentum", 0.9, "Nesterov momentum (the search's children: 0.9).", lower_bound=0.0,
       upper_bound=0.999999)
define.enum("xla", "auto", list(cli.AUTO_ON_OFF), "XLA: auto is on with a GPU or TPU, off on CPU.")

CONFIG = "config.json"
GRID = "grid.jsonl"
RESULTS = "results.json"
BEST_MODEL = "best_model.keras"
SAVED_MODEL = "saved_model"
SCORE_EPOCHS = 5  # Sec. 4.1: the reward's window, max validation accuracy of the last 5 epochs.


@dataclasses.dataclass(frozen=True)
class GridPoint:
    """One setting of the paper's grid.

    Attributes:
      learning_rate: initial SGD learning rate.
      weight_decay: SGD weight decay (an L2 penalty of weight_decay / 2).
      bn_epsilon: batch normalisation's epsilon.
      lr_decay_at: fraction of the epochs after which the learning rate is
        divided by 10; it is divided again at (1 + lr_decay_at) / 2.
    """

    learning_rate: float
    weight_decay: float
    bn_epsilon: float
    lr_decay_at: float

    def __post_init__(self):
        if not self.learning_rate > 0 or self.weight_decay < 0 or not self.bn_epsilon > 0:
            raise ValueError(f"Impossible grid point {self}: learning rate and epsilon must be "
                             "positive, weight decay >= 0.")  # fmt: skip
        if not 0 < self.lr_decay_at < 1:
            raise ValueError(f"lr_decay_at must be a fraction in (0, 1), got {self.lr_decay_at}.")

    @property
    def decay_fractions(self) -> Tuple[float, float]:
        return (self.lr_decay_at, (1 + self.lr_decay_at) / 2)


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
    """One final training.

    Attributes:
      output_dir: where results go and a killed run resumes from.
      architecture_path: the architecture JSON file.
      space: the `ConvSpaceSpec` the architecture belongs to, as its config.
      data_name: "cifar10" or "digits".
      data_dir: TFDS directory for cifar10.
      grid: the `GridPoint`s to try, in order.
      grid_epochs: epochs of each grid point.
      epochs: epochs of the final run.
      batch_size, momentum: SGD (Nesterov).
      more_filters: filters added to every convolution.
      jit_compile: XLA (None: on with an accelerator).
      seed: validation split, weights and shuffling.
      verbose: 0, 1 or 2.
    """

    output_dir: str
    architecture_path: str
    space: Dict[str, Any]
    data_name: str = "cifar10"
    data_dir: Optional[str] = None
    grid: Tuple[GridPoint, ...] = (GridPoint(0.1, 1e-4, 1e-3, 0.5),)
    grid_epochs: int = 50
    epochs: int = 300
    batch_size: int = 64
    momentum: float = 0.9
    more_filters: int = 0
    jit_compile: Optional[bool] = None
    seed: int = 0
    verbose: int = 1

    def __post_init__(self):
        object.__setattr__(self, "grid", tuple(self.grid))
        if not self.grid:
            raise ValueError("The grid needs at least one point.")
        if len(set(self.grid)) != len(self.grid):
            raise ValueError("The grid repeats a point; give each value once per axis.")
        if min(self.grid_epochs, self.epochs, self.batch_size) < 1 or self.more_filters < 0:
            raise ValueError("grid_epochs, epochs and batch_size must be positive, more_filters >= 0.")

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["grid"] = [dataclasses.asdict(p) for p in self.grid]
        return out


# -- the architecture -----------------------------------------------------------


def read_space(architecture_path: str, search_config: Optional[str] = None,
               space: Optional[str] = None) -> dict:  # fmt: skip
    """The config of the `ConvSpaceSpec` an architecture file belongs to.

    Args:
      architecture_path: the architecture JSON file.
      search_config: a search's config.json; None: the one beside the
        architecture file, if any.
      space: a space name; overrides the search config's, and with no search
        config gives that space with the paper's values.

    Raises:
      ValueError: naming the file that is unreadable or holds a cell search.
    """
    from nas_tf.spaces import conv

    if search_config is None:
        beside = os.path.join(os.path.dirname(os.path.abspath(architecture_path)), CONFIG)
        search_config = beside if os.path.isfile(beside) else None
    overrides, name = {}, space or "cifar10_v1"
    if search_config is not None:
        try:
            with open(search_config, encoding="utf-8") as f:
                found = json.load(f)
            found_name, overrides = found["space"], dict(found.get("space_overrides") or {})
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"Search config {search_config} cannot be read ({e}).") from None
        if found_name not in conv.SPACES:
            raise ValueError(
                f"Search config {search_config} is a {found_name!r} search; nas_tf.retrain trains "
                "convolutional networks (for a recurrent cell use python -m nas_tf.train_lm)."
            )
        name = space or found_name
        if space and space != found_name:
            overrides = {}
    return conv.get_space(name, **overrides).to_config()


def load_architecture(path: str, spec):
    """The architecture in `path`, validated against `spec`.

    Raises:
      ValueError: if the file is missing, unreadable or outside the space.
    """
    from nas_tf import space as space_lib

    if not os.path.isfile(path):
        raise ValueError(f"Architecture file {path} does not exist.")
    try:
        with open(path, encoding="utf-8") as f:
            return spec.space.architecture_from_json(f.read())
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"Architecture file {path} cannot be read: {e}") from None
    except space_lib.ArchitectureError as e:
        raise ValueError(f"Architecture file {path} is not a network of {spec.name}: {e}") from None


def widen(arch, spec, more_filters: int):
    """`(arch, spec)` with `more_filters` filters added to every convolution.

    The child builder then builds the wider network unchanged: the space's
    filter choices and the architecture's values move up together.
    """
    from nas_tf import space as space_lib

    if not more_filters:
        return arch, spec
    wide = dataclasses.replace(spec, num_filters=tuple(n + more_filters for n in spec.num_filters))
    values = {
        name: value + more_filters if name.endswith("/num_filters") else value
        for name, value in arch.values.items()
    }
    return wide.space.validate(space_lib.Architecture(values, arch.depth)), wide


# -- training with checkpoints ----------------------------------------------------


class _Checkpoint:
    """Per-epoch checkpoints of one training run in `directory`, for resuming.

    `state.json` names the last finished epoch, its weights file (model and
    optimizer, so the learning-rate schedule resumes at its step) and the
    per-epoch figures so far. Each epoch's weights go to a new file before
    `state.json` points at it, so a kill leaves a consistent pair.
    """

    def __init__(self, directory: str):
        self.directory = directory
        self.path = os.path.join(directory, "state.json")

    def load(self) -> dict:
        if not os.path.exists(self.path):
            return {"epoch": 0, "weights": None, "history": {}}
        with open(self.path, encoding="utf-8") as f:
            return json.load(f)

    def callback(self, start: dict):
        import keras

        checkpoint = self
        history = {k: list(v) for k, v in start["history"].items()}

        class Save(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                for key, value in (logs or {}).items():
                    history.setdefault(key, []).append(float(value))
                checkpoint.save(self.model, epoch + 1, history)
                durable.fault_point("retrain_after_epoch")

        return Save()

    def save(self, model, epoch: int, history: dict) -> None:
        os.makedirs(self.directory, exist_ok=True)
        old = self.load()["weights"]
        name = f"epoch_{epoch}.weights.h5"
        with durable.atomic_path(os.path.join(self.directory, name)) as tmp:
            model.save_weights(tmp)
        state = {"epoch": epoch, "weights": name, "history": history}
        durable.atomic_write_text(self.path, json.dumps(state, sort_keys=True) + "\n")
        if old and old != name and os.path.exists(os.path.join(self.directory, old)):
            os.remove(os.path.join(self.directory, old))


def build_model(arch, spec, data, point: GridPoint, config: RetrainConfig):
    """The compiled network of `arch` with the grid point's settings.

    Reuses the search's child builder and compiler (`nas_tf.children.convnet`);
    the batch-norm epsilon is set on the built layers (the builder keeps
    Keras's default), before anything runs.
    """
    import keras

    from nas_tf.children import convnet

    keras.utils.set_random_seed(config.seed)
    model = convnet.build_convnet(arch, spec, data.input_shape, data.num_classes,
                                  weight_decay=point.weight_decay)  # fmt: skip
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.epsilon = point.bn_epsilon
    return model


def train(arch, spec, data, point: GridPoint, epochs: int, directory: str,
          config: RetrainConfig, validate: bool):  # fmt: skip
    """Trains (or resumes training) one network.

    Args:
      validate: measure the validation split after each epoch (grid points);
        the final run has none (its training set includes it).

    Returns:
      (model, history, resumed_at): the trained model, the per-epoch figures
      of the whole run, and the epoch this call started from (0: a fresh run).

    Raises:
      ChildTrainingError: "nan" if the loss stops being finite.
    """
    import numpy as np

    from nas_tf.children import convnet

    model = build_model(arch, spec, data, point, config)
    steps = -(-data.num_train // config.batch_size)
    schedule = convnet.ChildConfig(
        epochs=epochs, learning_rate=point.learning_rate, lr_decay_at=point.decay_fractions
    ).learning_rate_schedule(steps)
    convnet.compile_child(model, schedule, config.momentum, True, config.jit_compile)
    checkpoint = _Checkpoint(directory)
    state = checkpoint.load()
    if state["weights"]:
        model.optimizer.build(model.trainable_variables)
        model.load_weights(os.path.join(directory, state["weights"]))
    if state["epoch"] < epochs:
        # verbose 1: nas_tf's progress line per epoch; 2: Keras's own lines.
        line = progress.Progress(epochs, done=state["epoch"], verbose=int(config.verbose == 1),
                                 label="epoch")  # fmt: skip
        model.fit(
            data.train_dataset(config.batch_size, seed=config.seed + state["epoch"]),
            validation_data=data.valid_dataset(config.batch_size) if validate else None,
            initial_epoch=state["epoch"],
            epochs=epochs,
            callbacks=[checkpoint.callback(state), progress.keras_callback(line)],
            shuffle=False,
            verbose=2 if config.verbose > 1 else 0,
        )
        line.close()
    history = checkpoint.load()["history"]
    losses = history.get("loss", [])
    if not all(np.isfinite(losses)):
        raise convnet.ChildTrainingError("nan", f"the training loss became {losses[-1]}.")
    return model, history, state["epoch"]


def _read_grid(path: str) -> Dict[GridPoint, dict]:
    records = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    record = json.loads(line)
                    records[GridPoint(**record["point"])] = record
    return records


def _score(history: dict) -> float:
    """A grid point's score: max validation accuracy of its last 5 epochs; -inf if it diverged."""
    accs = history.get("val_accuracy", [])
    if not accs or not all(math.isfinite(v) for v in history.get("loss", [])):
        return float("-inf")
    return max(accs[-SCORE_EPOCHS:])


def run_grid(arch, spec, data, config: RetrainConfig, say) -> Tuple[GridPoint, List[dict]]:
    """Trains every grid point not yet recorded; returns the best point and all records."""
    from nas_tf.children import convnet

    path = os.path.join(config.output_dir, GRID)
    records = _read_grid(path)
    if len(config.grid) == 1:
        return config.grid[0], []
    for i, point in enumerate(config.grid):
        if point in records:
            continue
        directory = os.path.join(config.output_dir, "grid", f"point_{i}")
        start = time.time()
        try:
            _, history, resumed_at = train(arch, spec, data, point, config.grid_epochs,
                                           directory, config, validate=True)  # fmt: skip
            failure = None
        except convnet.ChildTrainingError as e:  # A diverging setting is a grid result.
            history, failure, resumed_at = _Checkpoint(directory).load()["history"], str(e), None
        record = {"point": dataclasses.asdict(point), "score": _score(history),
                  "history": history, "failure": failure, "resumed_at_epoch": resumed_at,
                  "seconds_this_session": time.time() - start}  # fmt: skip
        durable.append_line(path, json.dumps(record, sort_keys=True))
        records[point] = record
        shutil.rmtree(directory, ignore_errors=True)
        durable.fault_point("retrain_after_grid_point")
        say(f"grid {i + 1}/{len(config.grid)}: lr {point.learning_rate:g}, weight decay "
            f"{point.weight_decay:g}, bn epsilon {point.bn_epsilon:g}, lr decay at "
            f"{point.lr_decay_at:g}: validation accuracy {record['score']:.4f}", flush=True)  # fmt: skip
    ordered = [records[p] for p in config.grid]
    best = max(range(len(ordered)), key=lambda k: (ordered[k]["score"], -k))
    if ordered[best]["score"] == float("-inf"):
        raise convnet.ChildTrainingError("nan", "every grid point diverged.")
    return config.grid[best], ordered


# -- the run --------------------------------------------------------------------


def full_training_set(data):
    """`data` with the validation split moved into training (sec. 4.1: 50,000 images)."""
    import numpy as np

    from nas_tf.data import cifar10

    x = np.concatenate([data.x_train, data.x_valid])
    y = np.concatenate([data.y_train, data.y_valid])
    mean, std = cifar10.channel_stats(x)
    return dataclasses.replace(data, x_train=x, y_train=y, x_valid=x[:0], y_valid=y[:0],
                               mean=mean, std=std)  # fmt: skip


def count_convolutions(model) -> int:
    """The network's depth as the paper's table counts it: its convolutional layers."""
    import keras

    return sum(isinstance(layer, keras.layers.Conv2D) for layer in model.layers)


def format_parameters(n: int) -> str:
    """4.2M, 37.4M, 12.3K: parameters as the paper's table prints them."""
    for unit, scale in (("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def table_row(name: str, depth: int, parameters: int, error: float) -> str:
    """One row of Zoph & Le 2017, Table 1: model, depth, parameters, error rate (%)."""
    return f"| {name} | {depth} | {format_parameters(parameters)} | {100 * error:.2f} |"


def _check_resume(config: RetrainConfig) -> None:
    from nas_tf import search

    path = os.path.join(config.output_dir, CONFIG)
    text = json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        changes = [c for c in search.config_changes(old, json.loads(text))
                   if not c.startswith("verbose")]  # fmt: skip
        if changes:
            raise ValueError(
                f"{config.output_dir} holds a final training with other settings; resuming "
                f"would mix two. Changed: {'; '.join(changes)}. Pass --overwrite to start afresh "
                "or choose another --output_dir."
            )
    os.makedirs(config.output_dir, exist_ok=True)
    durable.atomic_write_text(path, text)


def _export(model, output_dir: str) -> Tuple[str, str]:
    """Writes the model as .keras and as a SavedModel, each atomically."""
    keras_path = os.path.join(output_dir, BEST_MODEL)
    with durable.atomic_path(keras_path) as tmp:
        model.save(tmp)
    saved = os.path.join(output_dir, SAVED_MODEL)
    tmp_dir = saved + ".tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    from absl import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.WARNING)  # TensorFlow's saver logs every asset at INFO.
    try:
        model.export(tmp_dir, verbose=False)
    finally:
        logging.set_verbosity(verbosity)
    shutil.rmtree(saved, ignore_errors=True)
    os.replace(tmp_dir, saved)
    durable.fsync_directory(output_dir)
    return keras_path, saved


def run(config: RetrainConfig, data=None) -> dict:
    """Grid, final run and test error of `config`; resumes whatever a kill left.

    Args:
      config: what to train.
      data: an `ImageData` to use instead of loading `config.data_name`.

    Returns:
      The results written to `<output_dir>/results.json`.

    Raises:
      ValueError: a changed configuration in an existing output directory, or
        an architecture outside its space.
      nas_tf.data.DataNotPreparedError: CIFAR-10 is not prepared.
      ChildTrainingError: the final run diverged (or every grid point did).
    """
    from nas_tf import search
    from nas_tf.spaces import conv

    say = print if config.verbose else (lambda *a, **k: None)
    spec = conv.ConvSpaceSpec.from_config(config.space)
    arch = load_architecture(config.architecture_path, spec)
    arch, spec = widen(arch, spec, config.more_filters)
    _check_resume(config)
    done = os.path.join(config.output_dir, RESULTS)
    if os.path.exists(done):  # Finished before: report, do not train again.
        with open(done, encoding="utf-8") as f:
            results = json.load(f)
        say(results["row"])
        return results
    if data is None:
        data = search.load_data(config.data_name, config.data_dir, seed=config.seed)
    if not data.num_test:
        raise ValueError(f"Dataset {data.name!r} has no test split to report an error on.")
    start = time.time()
    say(f"Final training of {config.architecture_path} ({spec.name}, +{config.more_filters} "
        f"filters) on {data.name}: {len(config.grid)} grid points of {config.grid_epochs} "
        f"epochs, then {config.epochs} epochs on {data.num_train + data.num_valid:,} "
        "images.", flush=True)  # fmt: skip
    best, grid = run_grid(arch, spec, data, config, say)
    full = full_training_set(data)
    final_dir = os.path.join(config.output_dir, "final")
    model, history, resumed_at = train(arch, spec, full, best, config.epochs, final_dir, config,
                                       validate=False)  # fmt: skip
    test_loss, test_accuracy = model.evaluate(full.test_dataset(256), verbose=0)
    durable.fault_point("retrain_before_export")
    keras_path, saved = _export(model, config.output_dir)
    depth, params = count_convolutions(model), int(model.count_params())
    error = 1.0 - float(test_accuracy)
    name = os.path.basename(config.architecture_path) + (
        f" + {config.more_filters} filters" if config.more_filters else "")  # fmt: skip
    results = {
        "architecture_path": config.architecture_path,
        "space": spec.name,
        "more_filters": config.more_filters,
        "depth": depth,
        "num_parameters": params,
        "test_accuracy": float(test_accuracy),
        "test_error": error,
        "test_loss": float(test_loss),
        "best_point": dataclasses.asdict(best),
        "grid": grid,
        "final_history": history,
        "final_train_images": full.num_train,
        "final_resumed_at_epoch": resumed_at,
        "seconds_this_session": time.time() - start,
        "model_path": keras_path,
        "saved_model_path": saved,
        "row": table_row(name, depth, params, error),
    }
    durable.atomic_write_text(os.path.join(config.output_dir, RESULTS),
                              json.dumps(results, indent=2, sort_keys=True) + "\n")  # fmt: skip
    shutil.rmtree(final_dir, ignore_errors=True)
    say("| model | depth | parameters | error rate (%) |")
    say("| --- | --- | --- | --- |")
    say(results["row"])
    say(f"Wrote {RESULTS}, {BEST_MODEL} and {SAVED_MODEL}/ to {config.output_dir}.", flush=True)
    return results


# -- the command line -------------------------------------------------------------


def _floats(name: str) -> Tuple[float, ...]:
    values = FLAGS[name].value or []
    try:
        out = tuple(float(v) for v in values)
    except ValueError:
        raise app.UsageError(f"--{name} must be a comma-separated list of numbers, got "
                             f"{','.join(values)!r}.") from None  # fmt: skip
    if not out:
        raise app.UsageError(f"--{name} must list at least one value.")
    if len(set(out)) != len(out):
        raise app.UsageError(f"--{name} repeats a value: {','.join(values)}.")
    return out


def config_from_flags() -> RetrainConfig:
    """The `RetrainConfig` the flags describe (flag problems raise UsageError)."""
    cli.check_finite(FLAGS)
    if FLAGS.architecture is None:
        raise app.UsageError("--architecture is required (a best_architecture.json).")
    from nas_tf import remote

    output_dir = FLAGS.output_dir or os.path.join(
        os.path.dirname(FLAGS.architecture) or ".", "retrain")
    try:
        remote.check_data_dir(FLAGS.data_dir)
        if remote.is_url(output_dir):
            remote.check_url(output_dir)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    axes = [_floats(n) for n in ("grid_learning_rates", "grid_weight_decays",
                                 "grid_bn_epsilons", "grid_lr_decay_at")]  # fmt: skip
    try:
        grid = tuple(GridPoint(*values) for values in itertools.product(*axes))
        space = read_space(FLAGS.architecture, FLAGS.search_config, FLAGS.space)
        from nas_tf.spaces import conv

        load_architecture(FLAGS.architecture, conv.ConvSpaceSpec.from_config(space))
        return RetrainConfig(
            output_dir=output_dir,
            architecture_path=FLAGS.architecture,
            space=space,
            data_name=FLAGS.data_name,
            data_dir=FLAGS.data_dir,
            grid=grid,
            grid_epochs=FLAGS.grid_epochs,
            epochs=FLAGS.epochs,
            batch_size=FLAGS.batch_size,
            momentum=FLAGS.momentum,
            more_filters=FLAGS.more_filters,
            jit_compile=cli.auto_on_off(FLAGS.xla),
            seed=FLAGS.seed,
            verbose=FLAGS.verbose,
        )
    except ValueError as e:
        raise app.UsageError(str(e))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from nas_tf import data as data_lib
    from nas_tf import remote
    from nas_tf.children.convnet import ChildTrainingError

    config = config_from_flags()

    def work():
        # A URL is worked on in a local mirror, synced at the end (nas_tf.remote).
        with remote.mirrored(config.output_dir, FLAGS.local_dir, config.verbose) as mirror:
            if FLAGS.overwrite:
                mirror.clear()
            run(dataclasses.replace(config, output_dir=mirror.local))

    return cli.exit_status(work, {
        data_lib.DataNotPreparedError: 2,
        remote.SyncError: 1,
        ValueError: 1,
        ChildTrainingError: 1,
    })

if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cli.run(main, FLAGS, __doc__)
