"""The convolutional architecture search, end to end, without flags.

`run(config)` is what `python -m nas_tf.train` calls (and what tests call
directly): it loads the data, builds the named search space, and runs a
`ConvSearch` (a `NASRL` tuner whose trials train child networks) in
`config.output_dir`. What a user gets there:

* `config.json`: the resolved configuration (written by the entry point);
* `search/`: the Keras Tuner project (trials, oracle state, controller
  checkpoint) - running again resumes from it;
* `history.jsonl`: one line per finished child: trial id, status, the
  architecture JSON, reward, validation accuracy per epoch, parameters,
  training time, or the reason it failed;
* `best_architecture.json` and `best_model.keras`: the best child so far.
"""

import dataclasses
import json
import os
import shutil
import sys
import time
from typing import Any, Dict, List, Optional

import keras
import keras_tuner

from nas_tf import controller as controller_lib
from nas_tf import data as data_lib
from nas_tf import hp_space
from nas_tf import oracle as oracle_lib
from nas_tf import reinforce as reinforce_lib
from nas_tf.children import convnet, worker
from nas_tf.spaces import conv

HISTORY = "history.jsonl"
BEST_ARCHITECTURE = "best_architecture.json"
BEST_MODEL = "best_model.keras"
PROJECT = "search"


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Everything one search needs.

    Attributes:
      output_dir: where the search writes (and resumes from).
      space: a name from `nas_tf.spaces.conv.SPACES`.
      space_overrides: keyword overrides for `conv.get_space` (depth,
        filter_sizes, num_filters, strides, pool_at).
      dataset: a name from `nas_tf.data.DATASETS`.
      data_dir: TFDS data directory for cifar10.
      max_trials: number of children to train in all.
      seed: seeds the controller, the data split and child shuffling.
      controller: a `ControllerConfig`.
      reinforce: a `ReinforceConfig`.
      child: a `ChildConfig`.
      curriculum: a `DepthCurriculum`, or None to sample full-depth networks.
      reuse_rewards: do not retrain an architecture already trained.
      isolate_children: train children in a worker process replaced every
        `children_per_worker` children, so that the search's memory stays
        flat and a crashing child fails only its trial. False trains them in
        the search's own process (simpler to debug).
      children_per_worker: children a worker trains before it is replaced.
      overwrite: start afresh instead of resuming.
      top_k: how many of the best children the summary lists.
      verbose: 0 silent, 1 one line per child, 2 Keras progress too.
    """

    output_dir: str
    space: str = "cifar10_v1"
    space_overrides: Dict[str, Any] = dataclasses.field(default_factory=dict)
    dataset: str = "digits"
    data_dir: Optional[str] = None
    max_trials: int = 12
    seed: int = 1
    controller: controller_lib.ControllerConfig = controller_lib.ControllerConfig()
    reinforce: reinforce_lib.ReinforceConfig = reinforce_lib.ReinforceConfig()
    child: convnet.ChildConfig = convnet.ChildConfig()
    curriculum: Optional[conv.DepthCurriculum] = None
    reuse_rewards: bool = True
    isolate_children: bool = True
    children_per_worker: int = 20
    overwrite: bool = False
    top_k: int = 5
    verbose: int = 1

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True, default=str)


@dataclasses.dataclass(frozen=True)
class TrainConvChild:
    """Trains one child from its architecture JSON; picklable, for worker processes.

    Attributes:
      spec: `ConvSpaceSpec.to_config()` of the searched space.
      data: the `ImageData` to train on.
      child: the `ChildConfig`.
      verbose: Keras `fit` verbosity.
    """

    spec: Dict[str, Any]
    data: data_lib.ImageData
    child: convnet.ChildConfig
    verbose: int = 0

    def __call__(self, request):
        """request = (architecture JSON, path for the trained .keras model or None)."""
        arch_json, model_path = request
        keras.backend.clear_session()
        spec = conv.ConvSpaceSpec.from_config(self.spec)
        arch = spec.space.architecture_from_json(arch_json)
        result = convnet.train_child(arch, spec, self.data, self.child, verbose=self.verbose)
        if model_path:
            result.model.save(model_path)
        return result.to_dict()


class ConvSearch(oracle_lib.NASRL):
    """A NASRL tuner whose trials build and train convolutional children.

    Args:
      spec: the `ConvSpaceSpec` searched.
      data: a `nas_tf.data.ImageData`.
      child_config: how each child trains.
      output_dir: where `history.jsonl` and the best model go.
      verbose: 0 silent, 1 a line per child, 2 Keras progress too.
      isolate_children: train in a recycled worker process (see
        `nas_tf.children.worker`).
      children_per_worker: children per worker process.
      **kwargs: `NASRL` arguments (objective and space are set here).
    """

    def __init__(
        self,
        spec,
        data,
        child_config,
        output_dir,
        verbose=1,
        isolate_children=True,
        children_per_worker=20,
        **kwargs,
    ):
        super().__init__(
            hypermodel=None,
            objective=keras_tuner.Objective("reward", "max"),
            space=spec.space,
            **kwargs,
        )
        self.spec, self.data, self.child_config = spec, data, child_config
        self.output_dir, self.log_level = output_dir, verbose
        self._started = time.time()
        task = TrainConvChild(spec.to_config(), data, child_config, int(verbose >= 2))
        self._train = worker.WorkerPool(task, children_per_worker) if isolate_children else task

    def run_trial(self, trial, *args, **kwargs):
        space = self.oracle.controller.space
        arch = hp_space.values_to_architecture(space, trial.hyperparameters.values)
        record = {"trial_id": trial.trial_id, "architecture": json.loads(arch.to_json())}
        model_path = os.path.join(self.get_trial_dir(trial.trial_id), "model.keras")
        try:
            result = self._train((arch.to_json(), model_path))
        except (convnet.ChildTrainingError, worker.ChildCrashed) as e:
            reason = getattr(e, "reason", "crash")
            record.update(status="FAILED", reason=reason, message=str(e))
            self._record(record)
            raise keras_tuner.errors.FailedTrialError(f"{reason}: {e}") from e
        record.update(status="COMPLETED", **result)
        self._record(record)
        return {"reward": result["reward"], "val_accuracy": max(result["val_accuracy"])}

    def close(self):
        """Stops the worker process, if any."""
        if isinstance(self._train, worker.WorkerPool):
            self._train.close()

    def _record(self, record):
        with open(os.path.join(self.output_dir, HISTORY), "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self.log_level >= 1:
            done = len(self.oracle.trials)
            if record["status"] == "COMPLETED":
                what = (
                    f"reward {record['reward']:.4f}  val_acc {max(record['val_accuracy']):.4f}  "
                    f"params {record['num_params']:,}  {record['train_seconds']:.1f}s"
                )
            else:
                what = f"FAILED ({record['reason']}): {record['message'][:120]}"
            elapsed = time.time() - self._started
            print(
                f"[child {record['trial_id']} | {done}/{self.oracle.max_trials} | "
                f"{elapsed:.0f}s] {what}",
                flush=True,
            )


def read_history(output_dir: str) -> List[dict]:
    """The history records, one per trial (the last record wins after a re-run)."""
    path = os.path.join(output_dir, HISTORY)
    if not os.path.exists(path):
        return []
    records = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # A line cut short by a kill.
                records[record["trial_id"]] = record
    return [records[k] for k in sorted(records)]


def summarize(output_dir: str, top_k: int = 5) -> str:
    """A text table of the best `top_k` children."""
    done = [r for r in read_history(output_dir) if r["status"] == "COMPLETED"]
    failed = len(read_history(output_dir)) - len(done)
    done.sort(key=lambda r: r["reward"], reverse=True)
    lines = [f"{len(done)} children trained, {failed} failed. Top {min(top_k, len(done))}:"]
    lines.append(f"{'trial':>6} {'reward':>8} {'val_acc':>8} {'params':>10} {'depth':>5}")
    for r in done[:top_k]:
        lines.append(
            f"{r['trial_id']:>6} {r['reward']:8.4f} {max(r['val_accuracy']):8.4f} "
            f"{r['num_params']:10,d} {str(r['architecture'].get('depth')):>5}"
        )
    return "\n".join(lines)


def _export_best(tuner: ConvSearch, output_dir: str) -> Optional[dict]:
    best = [t for t in tuner.oracle.get_best_trials(1) if t.status == "COMPLETED"]
    if not best:
        return None
    trial = best[0]
    arch = hp_space.values_to_architecture(tuner.oracle.controller.space, trial.hyperparameters.values)
    with open(os.path.join(output_dir, BEST_ARCHITECTURE), "w") as f:
        f.write(arch.to_json() + "\n")
    model = os.path.join(tuner.get_trial_dir(trial.trial_id), "model.keras")
    if os.path.exists(model):
        shutil.copyfile(model, os.path.join(output_dir, BEST_MODEL))
    return {"trial_id": trial.trial_id, "reward": trial.score, "architecture": arch}


def _share_accelerators():
    """Lets the worker processes use the GPUs: this process takes memory as needed."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # TensorFlow has already initialised the device.


def run(config: SearchConfig, data: Optional[data_lib.ImageData] = None) -> Optional[dict]:
    """Runs (or resumes) a convolutional search.

    Args:
      config: the `SearchConfig`.
      data: optional `ImageData` (e.g. from `nas_tf.data.from_arrays`);
        otherwise `config.dataset` is loaded.

    Returns:
      The best child: {"trial_id", "reward", "architecture"}, or None if no
      child finished.

    Raises:
      ValueError: for an impossible space or dataset.
      nas_tf.data.DataNotPreparedError: when cifar10 is not available offline.
    """
    spec = conv.get_space(config.space, **config.space_overrides)
    if config.isolate_children:
        _share_accelerators()
    if data is None:
        data = data_lib.load(config.dataset, data_dir=config.data_dir, seed=config.seed)
    os.makedirs(config.output_dir, exist_ok=True)
    project = os.path.join(config.output_dir, PROJECT)
    if config.overwrite:
        shutil.rmtree(project, ignore_errors=True)
        for name in (HISTORY, BEST_ARCHITECTURE, BEST_MODEL):
            path = os.path.join(config.output_dir, name)
            if os.path.exists(path):
                os.remove(path)
    child = dataclasses.replace(config.child, seed=config.child.seed or config.seed)
    tuner = ConvSearch(
        spec,
        data,
        child,
        config.output_dir,
        verbose=config.verbose,
        max_trials=config.max_trials,
        seed=config.seed,
        directory=config.output_dir,
        project_name=PROJECT,
        overwrite=False,
        controller_config=config.controller,
        reinforce_config=config.reinforce,
        depth_schedule=config.curriculum,
        reuse_rewards=config.reuse_rewards,
        isolate_children=config.isolate_children,
        children_per_worker=config.children_per_worker,
        max_consecutive_failed_trials=max(3, config.max_trials),
    )
    tuner.oracle.verbose = 0
    if config.verbose:
        finished = len([t for t in tuner.oracle.trials.values() if t.status != "RUNNING"])
        print(
            f"nas_tf: searching {spec.name} (max depth {spec.depth}) on {config.dataset} "
            f"({data.num_train} train / {data.num_valid} valid), {config.max_trials} children, "
            f"{finished} already done; output in {config.output_dir}",
            flush=True,
        )
    try:
        tuner.search(verbose=0)
    finally:
        tuner.close()
    best = _export_best(tuner, config.output_dir)
    if config.verbose:
        print(summarize(config.output_dir, config.top_k))
        if best is not None:
            print(f"Best architecture (trial {best['trial_id']}, reward {best['reward']:.4f}):")
            print(best["architecture"].to_json())
        sys.stdout.flush()
    return best
