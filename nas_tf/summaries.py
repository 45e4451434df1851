"""What a search writes for people to watch: TensorBoard events and the update log.

`tensorboard --logdir=<output_dir>` then shows:

* run `tensorboard/controller`, one step per controller update: the scalars
  `controller/mean_reward`, `baseline` (the EMA baseline the batch's
  advantages were taken against), `mean_advantage`, `loss`, `grad_norm`
  (before clipping), `entropy` (the policy's entropy per sample, summed over
  its decisions, averaged over the batch),
  `learning_rate` and `reused_share` (share of the batch whose reward was
  re-used: the architecture was trained before and drawn again), and one
  histogram per decision position, `decisions/<name>`, of the value indices
  the batch sampled (one bin per value; an anchor's bins are its sources, each
  counted when flagged), so one watches the policy sharpen;
* run `tensorboard/trial_<id>` per child: its training curves per epoch (the
  per-epoch lists of its history record: `val_accuracy`, `val_loss`,
  `train_loss`, `train_accuracy`, `val_perplexity`), its `reward`, and its
  architecture as hyperparameters for TensorBoard's HPARAMS view (the same
  view Keras Tuner's trials give).

The controller's per-update figures also go, one JSON object a line, to
`controller_updates.jsonl` in the Keras Tuner project directory, which
`nas_tf.report` reads. Lines carry their update number, so a resumed search
that replays updates writes only those missing (a kill between an update and
its line loses nothing and doubles nothing).
"""

import functools
import json
import math
import os
import time
from typing import Dict, Iterable, List, Mapping, Sequence

import numpy as np

from nas_tf import durable
from nas_tf import jsonl
from nas_tf import space as space_lib

TENSORBOARD = "tensorboard"
CONTROLLER_RUN = "controller"
CONTROLLER_LOG = "controller_updates.jsonl"

# The per-update scalars, in the order they are logged.
CONTROLLER_SCALARS = (
    "mean_reward",
    "baseline",
    "mean_advantage",
    "loss",
    "grad_norm",
    "entropy",
    "learning_rate",
    "reused_share",
)

# Per-epoch lists of a history record drawn as a child's curves.
CHILD_CURVES = ("val_accuracy", "val_loss", "train_loss", "train_accuracy", "val_perplexity")


def trial_run(trial_id: str) -> str:
    """The TensorBoard run (sub-directory) of a child."""
    return f"trial_{trial_id}"


def value_counts(decision, values: Iterable) -> np.ndarray:
    """Counts of each value index of `decision` over sampled values.

    A categorical decision counts its value's index; an anchor counts each
    flagged source's index. Values of an inactive decision (None) count nothing.
    """
    if isinstance(decision, space_lib.Anchor):
        counts = np.zeros(len(decision.sources), np.float64)
        for bits in values:
            if bits is not None:
                counts += np.asarray(bits, np.float64)
        return counts
    counts = np.zeros(decision.num_choices, np.float64)
    for value in values:
        if value is not None:
            counts[decision.index(value)] += 1
    return counts


def histogram_tensor(counts: Sequence[float]) -> np.ndarray:
    """TensorBoard's histogram tensor: one [left, right, count] row per value index i,
    the bin [i - 0.5, i + 0.5]."""
    idx = np.arange(len(counts), dtype=np.float64)
    return np.stack([idx - 0.5, idx + 0.5, np.asarray(counts, np.float64)], axis=1)


def read_controller_log(path: str) -> List[dict]:
    """The update log's records by update number (the last line of a number wins).

    Read by `nas_tf.jsonl`'s rule: a last line torn by a kill is skipped; a
    missing file is an empty log.

    Raises:
      nas_tf.jsonl.CorruptLineError: naming the file and line, for any other
        line that is not a JSON object with an integer "update".
    """
    if not os.path.exists(path):
        return []
    by_update = {}
    for record in jsonl.records(path, _update_problem, hint="The update log is damaged."):
        by_update[record["update"]] = record
    return [by_update[k] for k in sorted(by_update)]


def _update_problem(record):
    if isinstance(record, dict) and isinstance(record.get("update"), int):
        return None
    return "not an update record (a JSON object with an integer 'update')"


class ControllerSummaries:
    """Writes the controller's per-update figures (update log and TensorBoard).

    Args:
      log_path: the JSON-lines update log.
      logdir: the TensorBoard directory; the run `controller` goes under it.
    """

    def __init__(self, log_path: str, logdir: str):
        self.log_path, self.logdir = log_path, logdir
        self._writer = None
        self._histograms = (None, [])
        records = read_controller_log(log_path)
        self.last_update = records[-1]["update"] if records else 0

    def write(
        self,
        update: int,
        stats: Mapping[str, float],
        space: space_lib.Space,
        batch: Sequence[space_lib.Architecture],
    ) -> bool:
        """Logs update number `update` unless it was logged already.

        Args:
          update: the update's number (1 for the first).
          stats: the figures of `CONTROLLER_SCALARS` (missing ones are left out).
          space: the searched space (for the decision histograms).
          batch: the batch's architectures.

        Returns:
          True if written, False if `update` was already in the log.
        """
        if update <= self.last_update:
            return False
        scalars = {
            k: float(stats[k]) for k in CONTROLLER_SCALARS
            if k in stats and stats[k] is not None and math.isfinite(float(stats[k]))
        }
        counts = {
            d.name: value_counts(d, [a.values.get(d.name) for a in batch]) for d in space.decisions
        }
        self._write_tensorboard(update, scalars, counts, space)
        record = dict(scalars, update=update, batch=len(batch))
        durable.append_line(self.log_path, json.dumps(record, sort_keys=True))
        self.last_update = update
        return True

    def _write_tensorboard(self, step, scalars, counts, space):
        """One event of the update's scalars and histograms.

        Built as TensorBoard protos, without TensorFlow ops, and written by
        `_EventWriter`: the same records `tf.summary.scalar` / `write` make,
        at about a tenth of the oracle's time per update (docs/report.md).
        The tags' metadata is built once per space; each update only fills in
        its values.
        """
        from tensorboard.compat.proto import event_pb2, summary_pb2

        if self._writer is None:
            self._writer = _EventWriter(os.path.join(self.logdir, CONTROLLER_RUN))
        summary = summary_pb2.Summary()
        for name, value in scalars.items():
            item = summary.value.add(tag=f"controller/{name}", tensor=_tensor_proto(
                np.float32(value)))
            item.metadata.CopyFrom(_scalar_metadata())
        if self._histograms[0] is not space:  # Built once per space (it may grow).
            self._histograms = (space, _histogram_metadata(space))
        for d, metadata in self._histograms[1]:
            item = summary.value.add(tag=f"decisions/{d.name}", tensor=_tensor_proto(
                histogram_tensor(counts[d.name])))
            item.metadata.CopyFrom(metadata)
        self._writer.write(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class _EventWriter:
    """A TensorBoard event file written synchronously, each event flushed as it comes.

    TensorBoard's own `EventFileWriter` hands events to a thread that frames
    them with a checksum computed in Python, and its `flush` waits for that
    thread: about 0.4 ms an event. TensorFlow's record writer frames them in
    C++ (about 0.01 ms). The file is a new one per writer, named as
    TensorBoard's (`events.out.tfevents.<time>.<host>.<pid>.<n>`), and
    starts with the file-version event that TensorBoard expects.
    """

    _count = 0

    def __init__(self, run_dir: str):
        import socket

        import tensorflow as tf
        from tensorboard.compat.proto import event_pb2

        os.makedirs(run_dir, exist_ok=True)
        _EventWriter._count += 1
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
                f".{os.getpid()}.{_EventWriter._count}")
        self.path = os.path.join(run_dir, name)
        self._records = tf.io.TFRecordWriter(self.path)
        self.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def write(self, event):
        self._records.write(event.SerializeToString())
        self._records.flush()  # On disk as it happens: a killed search keeps its events.

    def close(self):
        self._records.close()


def _tensor_proto(value: np.ndarray):
    """A float32 scalar or float64 array as a TensorProto (what `make_tensor_proto` makes)."""
    from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2

    value = np.asarray(value)
    dtype = {np.dtype(np.float32): types_pb2.DT_FLOAT,
             np.dtype(np.float64): types_pb2.DT_DOUBLE}[value.dtype]  # fmt: skip
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=n) for n in value.shape])
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape,
                                  tensor_content=np.ascontiguousarray(value).tobytes())


@functools.lru_cache(maxsize=None)
def _scalar_metadata():
    from tensorboard.plugins.scalar import metadata as scalar_metadata

    return scalar_metadata.create_summary_metadata(display_name="", description="")


def _histogram_metadata(space: space_lib.Space) -> list:
    """(decision, its histogram's SummaryMetadata) for every decision of `space`."""
    from tensorboard.plugins.histogram import metadata as histogram_metadata

    out = []
    for d in space.decisions:
        labels = d.sources if isinstance(d, space_lib.Anchor) else d.values
        out.append((d, histogram_metadata.create_summary_metadata(
            display_name=f"decisions/{d.name}",
            description="Value indices sampled in this update's batch: "
            + ", ".join(f"{i}={v}" for i, v in enumerate(labels)),
        )))
    return out


def _hparam_value(value):
    """An architecture value as an HPARAMS value (str, float or bool)."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return str(value)


def architecture_hparams(architecture: Mapping) -> Dict[str, object]:
    """An architecture's JSON ({"depth", "values"}) as flat HPARAMS values."""
    out = {name: _hparam_value(v) for name, v in sorted(architecture.get("values", {}).items())}
    if architecture.get("depth") is not None:
        out["depth"] = float(architecture["depth"])
    return out


def write_hparams_config(logdir: str, space: space_lib.Space, metrics: Sequence[str]):
    """The HPARAMS experiment (every decision, its values; the metrics) at `logdir`'s root."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp_api

    hparams = []
    for d in space.decisions:
        if isinstance(d, space_lib.Anchor):
            continue  # Flag lists: shown as text values, no fixed domain.
        values = [_hparam_value(v) for v in d.values]
        if len({type(v) for v in values}) != 1:
            values = [str(v) for v in values]
        hparams.append(hp_api.HParam(d.name, hp_api.Discrete(values)))
    if space.uses_depth:
        hparams.append(hp_api.HParam("depth", hp_api.IntInterval(1, space.max_depth)))
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        hp_api.hparams_config(
            hparams=hparams, metrics=[hp_api.Metric(m, display_name=m) for m in metrics]
        )
    writer.close()


def _float32(value) -> float:
    """`value` as TensorBoard stores scalars (float32): beyond its range, +-inf.

    A child that learnt nothing can report a finite perplexity such as 1e200,
    which float32 (and `tf.summary.scalar`) cannot hold.
    """
    value = float(value)
    if math.isfinite(value) and abs(value) > float(np.finfo(np.float32).max):
        return math.copysign(math.inf, value)
    return value


def write_child(logdir: str, record: Mapping):
    """A child's run: its curves per epoch, its reward and its hyperparameters.

    Args:
      logdir: the TensorBoard directory; the run `trial_<id>` goes under it.
      record: the child's history record (`nas_tf.search`); a failed child
        gets its hyperparameters only.
    """
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp_api

    writer = tf.summary.create_file_writer(os.path.join(logdir, trial_run(record["trial_id"])))
    with writer.as_default():
        if isinstance(record.get("architecture"), dict):
            hp_api.hparams(architecture_hparams(record["architecture"]), trial_id=record["trial_id"])
        for name in CHILD_CURVES:
            values = record.get(name)
            if isinstance(values, list):
                for epoch, value in enumerate(values):
                    tf.summary.scalar(name, _float32(value), step=epoch)
        reward = record.get("reward")
        if record.get("status") == "COMPLETED" and isinstance(reward, (int, float)):
            tf.summary.scalar("reward", _float32(reward), step=0)
            for name in ("num_params", "train_seconds"):
                if isinstance(record.get(name), (int, float)):
                    tf.summary.scalar(name, _float32(record[name]), step=0)
    writer.close()
