"""The paper's final training of one architecture, as a library (`nas_tf.retrain` is its program).

Zoph & Le 2017, sec. 4.1: the found network is trained again with a small
grid over learning rate, weight decay, batch-norm epsilon and the epoch at
which the learning rate decays, scored on held-out validation data; the
best point then trains on the full training set. This module holds the
grid, one training run with its epoch checkpoints, and the table row.
"""

import dataclasses
import json
import math
import os
import shutil
import time
from typing import Any, Dict, List, Optional, Tuple

from nas_tf import durable
from nas_tf import families
from nas_tf import jsonl
from nas_tf import progress

CONFIG = "config.json"
GRID = "grid.jsonl"
RESULTS = "results.json"
BEST_MODEL = "best_model.keras"
SAVED_MODEL = "saved_model"
SCORE_EPOCHS = 5  # Sec. 4.1: the reward's window, max validation accuracy of the last 5 epochs.


def retrainable_spaces():
    """The registered spaces whose family builds image classifiers (`Family.build_classifier`)."""
    return [s for s in families.space_names() if families.for_space(s).build_classifier]


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
      space: the space the architecture belongs to, as `nas_tf.families.spec_to_config`
        records it (a convolutional space: its `ConvSpaceSpec` config).
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
    """The record of the space an architecture file belongs to (`families.spec_to_config`).

    For a convolutional space, its `ConvSpaceSpec.to_config()`.

    Args:
      architecture_path: the architecture JSON file.
      search_config: a search's config.json; None: the one beside the
        architecture file, if any.
      space: a space name; overrides the search config's, and with no search
        config gives that space with the paper's values.

    Raises:
      ValueError: naming the file that is unreadable or holds a cell search.
    """
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
        if found_name not in retrainable_spaces():
            raise ValueError(
                f"Search config {search_config} is a {found_name!r} search; nas_tf.retrain trains "
                "image classifiers (for a recurrent cell use python -m nas_tf.train_lm)."
            )
        name = space or found_name
        if space and space != found_name:
            overrides = {}
    return families.spec_to_config(name, families.overrides_from_json(overrides))


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
            return families.space_of(spec).architecture_from_json(f.read())
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"Architecture file {path} cannot be read: {e}") from None
    except space_lib.ArchitectureError as e:
        name = families.space_of(spec).name
        raise ValueError(f"Architecture file {path} is not a network of {name}: {e}") from None


def widen(arch, spec, more_filters: int):
    """`(arch, spec)` with `more_filters` filters added to every convolution.

    The child builder then builds the wider network unchanged: the space's
    filter choices and the architecture's values move up together.
    """
    from nas_tf import space as space_lib

    if not more_filters:
        return arch, spec
    if not hasattr(spec, "num_filters"):
        raise ValueError("--more_filters widens the convolutions of a convolutional space only.")
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

    Reuses the search's child builder (its family's `build_classifier`) and
    compiler (`nas_tf.children.convnet.compile_child`); the batch-norm epsilon is set on the built layers (the builder keeps
    Keras's default), before anything runs.
    """
    import keras

    keras.utils.set_random_seed(config.seed)
    family = families.for_space(families.config_space_name(config.space))
    model = family.build_classifier(arch, spec, data.input_shape, data.num_classes,
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
    """Grid point -> its record in `grid.jsonl` (a torn last line skipped, `nas_tf.jsonl`)."""
    records = {}
    if os.path.exists(path):
        for record in jsonl.records(path, _grid_problem, hint="Remove or repair that line to resume."):
            records[GridPoint(**record["point"])] = record
    return records


def _grid_problem(record):
    if isinstance(record, dict) and isinstance(record.get("point"), dict):
        return None
    return "not a grid record (a JSON object with a 'point')"


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
