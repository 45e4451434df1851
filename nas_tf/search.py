"""An architecture search end to end, without flags.

`run(config)` is what `python -m nas_tf.train` calls (and what tests call
directly): it loads the data, builds the named search space and its task
(`nas_tf.tasks`: convolutional children on images, or recurrent-cell language
models on text), and runs a `ChildSearch` (a `NASRL` tuner whose trials train
children) in `config.output_dir`. What a user gets there:

* `config.json`: the resolved configuration (written by the entry point);
* `search/`: the Keras Tuner project (trials, oracle state, controller
  checkpoint) - running again resumes from it;
* `history.jsonl`: one line per finished child: trial id, status, the
  architecture JSON, reward, validation accuracy (or perplexity) per epoch,
  parameters, training time, or the reason it failed;
* `best_architecture.json` and `best_model.keras`: the best child so far
  (only the best child's trained model is kept on disk).
"""

import dataclasses
import json
import os
import shutil
import sys
import time
from typing import Any, Dict, List, Optional

import keras_tuner

from nas_tf import controller as controller_lib
from nas_tf import data as data_lib
from nas_tf import hp_space
from nas_tf import oracle as oracle_lib
from nas_tf import reinforce as reinforce_lib
from nas_tf import tasks
from nas_tf.children import convnet, language_model, worker
from nas_tf.data import ptb, text_corpus
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
      space: a name from `nas_tf.spaces.conv.SPACES`, or "ptb_cell".
      space_overrides: keyword overrides for `conv.get_space` (depth,
        filter_sizes, num_filters, strides, pool_at), or {"base": n} for
        "ptb_cell".
      dataset: a name from `DATASETS`.
      data_dir: TFDS data directory for cifar10 and ptb.
      max_trials: number of children to train in all.
      seed: seeds the controller, the data split and child shuffling.
      controller: a `ControllerConfig`.
      reinforce: a `ReinforceConfig`.
      child: a `ChildConfig` (convolutional children).
      lm_model: a `LanguageModelConfig` (cell children).
      lm_train: a `TrainConfig` (cell children).
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
    lm_model: language_model.LanguageModelConfig = language_model.LanguageModelConfig()
    lm_train: language_model.TrainConfig = language_model.TrainConfig()
    curriculum: Optional[conv.DepthCurriculum] = None
    reuse_rewards: bool = True
    isolate_children: bool = True
    children_per_worker: int = 20
    overwrite: bool = False
    top_k: int = 5
    verbose: int = 1

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True, default=str)


DATASETS = ("digits", "cifar10", "text", "text_char", "ptb", "ptb_char")


def load_data(name: str, data_dir: Optional[str] = None, seed: int = 0):
    """An image (`ImageData`) or text (`LMData`) dataset by name.

    Raises:
      ValueError: for an unknown name.
      nas_tf.data.DataNotPreparedError: when cifar10 or ptb is not available offline.
    """
    if name in ("text", "text_char"):
        return text_corpus.load("char" if name.endswith("_char") else "word")
    if name in ("ptb", "ptb_char"):
        return ptb.load("char" if name.endswith("_char") else "word", data_dir)
    if name in DATASETS:
        return data_lib.load(name, data_dir=data_dir, seed=seed)
    raise ValueError(f"Unknown dataset {name!r}; choose one of {list(DATASETS)}.")


class ChildSearch(oracle_lib.NASRL):
    """A NASRL tuner whose trials train the children of a task.

    Args:
      task: a task from `nas_tf.tasks` (its `space` is searched).
      output_dir: where `history.jsonl` and the best model go.
      verbose: 0 silent, 1 a line per child, 2 Keras progress too.
      isolate_children: train in a recycled worker process (see
        `nas_tf.children.worker`).
      children_per_worker: children per worker process.
      **kwargs: `NASRL` arguments (objective and space are set here).
    """

    def __init__(
        self,
        task,
        output_dir,
        verbose=1,
        isolate_children=True,
        children_per_worker=20,
        **kwargs,
    ):
        super().__init__(
            hypermodel=None,
            objective=keras_tuner.Objective("reward", "max"),
            space=task.space,
            **kwargs,
        )
        self.task = task
        self.output_dir, self.log_level = output_dir, verbose
        self._started = time.time()
        self._best = None  # (reward, trial id) of the best child, read from the history.
        self._train = worker.WorkerPool(task, children_per_worker) if isolate_children else task

    def run_trial(self, trial, *args, **kwargs):
        space = self.oracle.controller.space
        arch = hp_space.values_to_architecture(space, trial.hyperparameters.values)
        record = {"trial_id": trial.trial_id, "architecture": json.loads(arch.to_json())}
        model_path = os.path.join(self.get_trial_dir(trial.trial_id), "model.keras")
        try:
            result = self._train((arch.to_json(), model_path))
        except (convnet.ChildTrainingError, worker.ChildCrashed, ValueError) as e:
            reason = getattr(e, "reason", None)
            reason = reason or ("crash" if isinstance(e, worker.ChildCrashed) else "error")
            record.update(status="FAILED", reason=reason, message=str(e))
            self._record(record)
            raise keras_tuner.errors.FailedTrialError(f"{reason}: {e}") from e
        record.update(status="COMPLETED", **result)
        self._record(record)
        self._keep_best_model(trial.trial_id, result["reward"], model_path)
        return self.task.objective(result)

    def _keep_best_model(self, trial_id, reward, model_path):
        """Keeps only the best child's model on disk (thousands of children would fill it)."""
        if self._best is None:
            done = [r for r in read_history(self.output_dir) if r["status"] == "COMPLETED"]
            done = [r for r in done if r["trial_id"] != trial_id]
            self._best = max(((r["reward"], r["trial_id"]) for r in done), default=(None, None))
        best_reward, best_id = self._best
        if best_reward is None or reward > best_reward:
            if best_id is not None:
                old = os.path.join(self.get_trial_dir(best_id), "model.keras")
                if os.path.exists(old):
                    os.remove(old)
            self._best = (reward, trial_id)
        elif os.path.exists(model_path):
            os.remove(model_path)

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
                    f"reward {record['reward']:.4f}  {self.task.headline(record)}  "
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


def summarize(output_dir: str, task, top_k: int = 5) -> str:
    """A text table of the best `top_k` children."""
    history = read_history(output_dir)
    done = [r for r in history if r["status"] == "COMPLETED"]
    done.sort(key=lambda r: r["reward"], reverse=True)
    depth = task.space.uses_depth
    lines = [
        f"{len(done)} children trained, {len(history) - len(done)} failed. "
        f"Top {min(top_k, len(done))}:",
        f"{'trial':>6} {'reward':>8}  {'validation':<18} {'params':>12}" + ("  depth" if depth else ""),
    ]
    for r in done[:top_k]:
        lines.append(
            f"{r['trial_id']:>6} {r['reward']:8.4f}  {task.headline(r):<18} {r['num_params']:12,d}"
            + (f"  {r['architecture']['depth']:>5}" if depth else "")
        )
    return "\n".join(lines)


def _export_best(tuner: ChildSearch, output_dir: str) -> Optional[dict]:
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


def run(config: SearchConfig, data=None) -> Optional[dict]:
    """Runs (or resumes) a search.

    Args:
      config: the `SearchConfig`.
      data: optional `ImageData` (e.g. from `nas_tf.data.from_arrays`) or
        `LMData`; otherwise `config.dataset` is loaded.

    Returns:
      The best child: {"trial_id", "reward", "architecture"}, or None if no
      child finished.

    Raises:
      ValueError: for an impossible space or dataset.
      nas_tf.data.DataNotPreparedError: when cifar10 or ptb is not available offline.
    """
    if config.isolate_children:
        _share_accelerators()
    if data is None:
        data = load_data(config.dataset, config.data_dir, seed=config.seed)
    child = dataclasses.replace(config.child, seed=config.child.seed or config.seed)
    task = tasks.make_task(
        config.space,
        config.space_overrides,
        data,
        child=child,
        lm_model=config.lm_model,
        lm_train=dataclasses.replace(config.lm_train, seed=config.lm_train.seed or config.seed),
        verbose=int(config.verbose >= 2),
    )
    os.makedirs(config.output_dir, exist_ok=True)
    project = os.path.join(config.output_dir, PROJECT)
    if config.overwrite:
        shutil.rmtree(project, ignore_errors=True)
        for name in (HISTORY, BEST_ARCHITECTURE, BEST_MODEL):
            path = os.path.join(config.output_dir, name)
            if os.path.exists(path):
                os.remove(path)
    tuner = ChildSearch(
        task,
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
            f"nas_tf: searching {task.space.name} ({len(task.space.decisions)} decisions) on "
            f"{config.dataset}, {config.max_trials} children, {finished} already done; "
            f"output in {config.output_dir}",
            flush=True,
        )
    try:
        tuner.search(verbose=0)
    finally:
        tuner.close()
    best = _export_best(tuner, config.output_dir)
    if config.verbose:
        print(summarize(config.output_dir, task, config.top_k))
        if best is not None:
            print(f"Best architecture (trial {best['trial_id']}, reward {best['reward']:.4f}):")
            print(best["architecture"].to_json())
        sys.stdout.flush()
    return best
