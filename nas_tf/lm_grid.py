"""The tuning grid of a final language model (Zoph & Le 2017, sec. 4.2), resumable.

The paper tuned its final Penn Treebank models "over learning rate, weight
initialization, dropout rates and decay epoch" without giving the values. A
`GridPoint` is one setting of those four axes; `grid_points` builds their
combinations and `GridPoint.apply` puts one into a model's and a schedule's
configs. `run_grid` trains every point with a function it is given and
chooses the point of lowest best validation perplexity (validation only: the
test split chooses nothing). A point whose loss diverges is a result, not a
failure: it is recorded and the grid goes on.

Each finished point is one line of a JSON-lines file (`grid.jsonl`, written
with `nas_tf.durable.append_line`, read with `nas_tf.jsonl`), so the same
call after a kill trains only the points that have no line yet (a line torn
by the kill is ignored). A line counts only for the same `context`, the
settings every point shares: a grid rerun with, say, other epochs or units in
the same directory trains afresh instead of mixing two grids.

`nas_tf.train_lm` is its program (the --grid_* flags); experiment scripts call
`run_grid` directly. This module imports no TensorFlow until `run_grid` runs.
"""

import dataclasses
import itertools
import json
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from nas_tf import durable
from nas_tf import jsonl

GRID = "grid.jsonl"
FAULT_AFTER_POINT = "train_lm_after_grid_point"  # `nas_tf.durable.fault_point` name.


@dataclasses.dataclass(frozen=True)
class GridPoint:
    """One setting of the paper's four tuned axes.

    Attributes:
      learning_rate: initial learning rate (`TrainConfig.learning_rate`).
      init_scale: weights start uniform in [-init_scale, init_scale]
        (`LanguageModelConfig.init_scale`: the "weight initialization").
      input_dropout: dropout on the embeddings.
      output_dropout: dropout between layers and before the softmax.
      lr_decay_after: epochs at the full learning rate (the "decay epoch").
    """

    learning_rate: float
    init_scale: float
    input_dropout: float
    output_dropout: float
    lr_decay_after: int

    def __post_init__(self):
        if not (self.learning_rate > 0 and self.init_scale > 0):
            raise ValueError(f"{self}: learning rate and init scale must be positive.")
        if not (0 <= self.input_dropout < 1 and 0 <= self.output_dropout < 1):
            raise ValueError(f"{self}: dropout rates must be in [0, 1).")
        if self.lr_decay_after < 0:
            raise ValueError(f"{self}: lr_decay_after must be >= 0.")

    def settings(self) -> Dict[str, Any]:
        """The point as plain JSON data (its record's "settings")."""
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """One line for a progress message."""
        return (f"lr {self.learning_rate:g}, init scale {self.init_scale:g}, dropout "
                f"{self.input_dropout:g}/{self.output_dropout:g}, decay after "
                f"{self.lr_decay_after}")  # fmt: skip

    def apply(self, model_config, train_config):
        """`(model_config, train_config)` with this point's values put in.

        Args:
          model_config: a `nas_tf.children.language_model.LanguageModelConfig`.
          train_config: a `nas_tf.children.lm_trainer.TrainConfig`.
        """
        model = dataclasses.replace(model_config, init_scale=self.init_scale,
                                    input_dropout=self.input_dropout,
                                    output_dropout=self.output_dropout)  # fmt: skip
        train = dataclasses.replace(train_config, learning_rate=self.learning_rate,
                                    lr_decay_after=self.lr_decay_after)  # fmt: skip
        return model, train

    @classmethod
    def of(cls, model_config, train_config) -> "GridPoint":
        """The point a model config and a schedule already hold (a grid of one)."""
        return cls(train_config.learning_rate, model_config.init_scale,
                   model_config.input_dropout, model_config.output_dropout,
                   train_config.lr_decay_after)  # fmt: skip


def _number(text: str) -> float:
    """A finite float (NaN and infinities are no value of any axis)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


# The axes as `nas_tf.train_lm` names their list flags, in `grid_points`'s order:
# name -> (how a value parses, what it must be, the check).
AXES = {
    "grid_learning_rates": (_number, "a positive number", lambda v: v > 0),
    "grid_init_scales": (_number, "a positive number", lambda v: v > 0),
    "grid_dropouts": (_number, "a rate in [0, 1)", lambda v: 0 <= v < 1),
    "grid_lr_decay_after": (int, "a whole number >= 0", lambda v: v >= 0),
}


def parse_axis(name: str, texts: Sequence[str]) -> tuple:
    """The values of one axis (`AXES`) from their texts, each parsed and checked.

    Args:
      name: a key of `AXES`.
      texts: the values as given (a list flag's items); none gives ().

    Raises:
      ValueError: naming --`name`, for a value that does not parse, is out of
        range, or repeats.
    """
    parse, requirement, ok = AXES[name]
    texts = [t.strip() for t in texts]
    values = []
    for text in texts:
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise ValueError(f"--{name}: {text!r} is not {requirement}.")
        values.append(value)
    if len(set(values)) != len(values):
        raise ValueError(f"--{name} repeats a value: {','.join(texts)}.")
    return tuple(values)


Dropout = Union[float, Tuple[float, float]]


def grid_points(
    learning_rates: Sequence[float],
    init_scales: Sequence[float],
    dropouts: Sequence[Dropout],
    lr_decay_after: Sequence[int],
) -> Tuple[GridPoint, ...]:
    """Every combination of the axes, the last axis varying fastest.

    Args:
      learning_rates, init_scales, lr_decay_after: the values of each axis.
      dropouts: a rate (input and output dropout alike) or an
        (input, output) pair per value.

    Raises:
      ValueError: an axis is empty, repeats a value, or holds an impossible value.
    """
    axes = {"learning_rates": list(learning_rates), "init_scales": list(init_scales),
            "dropouts": [d if isinstance(d, tuple) else (d, d) for d in dropouts],
            "lr_decay_after": list(lr_decay_after)}  # fmt: skip
    for name, values in axes.items():
        if not values or len(set(values)) != len(values):
            raise ValueError(f"Grid axis {name} must list distinct values, got {list(values)}.")
    return tuple(
        GridPoint(lr, scale, drop[0], drop[1], int(after))
        for lr, scale, drop, after in itertools.product(*axes.values())
    )


def shared_settings(run: dict, data, epochs: int) -> dict:
    """What every point of a grid shares, as JSON data: `run_grid`'s context.

    Args:
      run: a run's settings (`nas_tf.train_lm.RunConfig.to_dict()`).
      data: its `LMData` (name and sizes go in).
      epochs: epochs of each grid point.

    Returns:
      `run` less the grid's own axes and what does not change a point's
      figures (directories, `restore_best`, the grid itself), with `epochs`.
    """
    shared = {k: v for k, v in run.items() if k not in _NOT_SHARED}
    shared["model"] = {k: v for k, v in run["model"].items() if k not in _POINT_FIELDS}
    shared["train"] = {k: v for k, v in run["train"].items() if k not in _POINT_FIELDS}
    shared["train"]["epochs"] = epochs
    shared["data"] = {"name": data.name, "vocab_size": data.vocab_size, "train_ids": len(data.train)}
    return shared


_POINT_FIELDS = {f.name for f in dataclasses.fields(GridPoint)}
_NOT_SHARED = {"output_dir", "data_dir", "architecture_path", "restore_best", "grid", "grid_epochs"}


@dataclasses.dataclass
class GridOutcome:
    """What `run_grid` found.

    Attributes:
      chosen: the point of lowest best validation perplexity (the earliest
        of equals).
      records: every point's record, in the order of the points given.
      result: what `train_point` returned for `chosen` if it trained in this
        call (its model can be the final one); None if it was read back.
    """

    chosen: GridPoint
    records: List[dict]
    result: Any = None


def _check_record(record) -> Optional[str]:
    """What is wrong with a grid.jsonl line (None: a record); see `nas_tf.jsonl.read`."""
    if not isinstance(record, dict) or not isinstance(record.get("settings"), dict):
        return "not a grid record (a JSON object with 'settings')"
    try:
        GridPoint(**record["settings"])
    except (TypeError, ValueError) as e:
        return f"not a grid point ({e})"
    return None


def read_records(path: str, context: Any = None) -> Dict[GridPoint, dict]:
    """Point -> its latest record in the grid file `path` written for `context`.

    A missing file holds none; a torn last line is skipped; lines of another
    context are ignored.

    Raises:
      nas_tf.jsonl.CorruptLineError: a whole line that is not a grid record.
    """
    if not os.path.exists(path):
        return {}
    found = {}
    for record in jsonl.records(path, _check_record, hint="Remove or repair that line to resume."):
        if record.get("context") == context:
            found[GridPoint(**record["settings"])] = record
    return found


def _record(point: GridPoint, context, result, error, seconds: float) -> dict:
    """A grid.jsonl line: the point's validation figures, or diverged with the error."""
    diverged = result is None
    return {
        "settings": point.settings(),
        "context": context,
        "diverged": diverged,
        "error": error,
        "val_perplexities": None if diverged else [float(p) for p in result.val_perplexities],
        "best_val_perplexity": None if diverged else float(result.best_val_perplexity),
        "best_epoch": None if diverged else int(result.best_epoch),
        "seconds": seconds,
    }


def _score(record: dict) -> float:
    """The perplexity a record is ranked by; infinite if it diverged."""
    ppl = record.get("best_val_perplexity")
    return math.inf if record.get("diverged") or ppl is None else float(ppl)


def _train_one(point, train_point, context):
    """(record, result) of training `point`; a divergence is a record with result None."""
    from nas_tf.children.base import ChildDivergedError

    start = time.time()
    try:
        result, error = train_point(point), None
    except ChildDivergedError as e:
        result, error = None, str(e)
    return _record(point, context, result, error, time.time() - start), result


def run_grid(
    points: Sequence[GridPoint],
    train_point: Callable[[GridPoint], Any],
    path: str,
    context: Any = None,
    say: Optional[Callable[[str], None]] = None,
) -> GridOutcome:
    """Trains every grid point not yet in `path` and chooses the best one.

    Args:
      points: the distinct `GridPoint`s, in order (`grid_points` builds them).
      train_point: trains one point and returns its result, an object with
        `val_perplexities`, `best_val_perplexity` and `best_epoch` (such as
        `nas_tf.children.lm_trainer.LanguageModelResult`); it raises
        `ChildDivergedError` if the loss stops being finite.
      path: the grid file (conventionally `<output_dir>/grid.jsonl`, `GRID`);
        its directory must exist. Finished points of the same `context` are
        read from it, not trained again; each newly finished point is
        appended as it ends.
      context: JSON data of the settings every point shares (model, schedule,
        data); records of another context do not count. None is a context too.
      say: called with a line per point (None: silent).

    Returns:
      A `GridOutcome`. Only the result of the best point trained in this call
      is kept (one model in memory at most besides the one training).

    Raises:
      nas_tf.children.base.ChildDivergedError: every point diverged (a
        `ChildTrainingError`, reason "nan").
      ValueError: no points, or a point given twice.
      nas_tf.jsonl.CorruptLineError: a damaged line in `path`.
      Whatever `train_point` raises besides divergence (an out-of-memory
      `ChildTrainingError`, say) stops the grid; finished points stay recorded.
    """
    points = tuple(points)
    if not points or len(set(points)) != len(points):
        raise ValueError(f"A grid needs distinct points, got {list(points)}.")
    context = json.loads(json.dumps(context, sort_keys=True))  # As it reads back from the file.
    say = say or (lambda line: None)
    records = read_records(path, context)
    say(f"Grid of {len(points)} points; {sum(p in records for p in points)} already in {path}.")
    kept = None  # (point, result) of the best point trained in this call.
    for i, point in enumerate(points):
        if point in records:
            continue
        record, result = _train_one(point, train_point, context)
        durable.append_line(path, json.dumps(record, sort_keys=True))
        records[point] = record
        durable.fault_point(FAULT_AFTER_POINT)
        figure = "diverged" if record["diverged"] else (
            f"best validation perplexity {record['best_val_perplexity']:.2f}")  # fmt: skip
        say(f"grid {i + 1}/{len(points)}: {point.describe()}: {figure}")
        if result is not None and (kept is None or _score(record) < _score(records[kept[0]])):
            kept = (point, result)
    return _choose(points, records, kept)


def _choose(points, records, kept) -> GridOutcome:
    """The outcome: the lowest-perplexity point, its result if trained in this call."""
    from nas_tf.children.base import ChildDivergedError

    ordered = [records[p] for p in points]
    best = min(range(len(points)), key=lambda k: (_score(ordered[k]), k))
    if _score(ordered[best]) == math.inf:
        raise ChildDivergedError(
            f"every one of the {len(points)} grid points diverged (learning rates "
            f"{sorted({p.learning_rate for p in points})}); try lower learning rates."
        )
    chosen = points[best]
    return GridOutcome(chosen, ordered, kept[1] if kept and kept[0] == chosen else None)
