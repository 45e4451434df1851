"""An architecture search end to end, without flags.

`run(config)` is what `python -m nas_tf.train` calls (and what tests call
directly): it loads the data, builds the named search space and its task
(from the space's family, `nas_tf.families`: convolutional children on images,
recurrent-cell language models on text, or a family of one's own), and runs a `ChildSearch` (a `NASRL` tuner whose trials train
children) in `config.output_dir`. What a user gets there:

* `config.json`: the resolved configuration; resuming with settings that
  change the search is refused (`ConfigChangedError`) unless
  `allow_config_change` is set;
* `search/`: the Keras Tuner project (trials, oracle state, controller
  checkpoint) - running again resumes from it;
* `history.jsonl`: one line per finished child: trial id, status, the
  architecture JSON, reward, validation accuracy (or perplexity) per epoch,
  parameters, training time, or the reason it failed (`nas_tf.history`
  reads and writes it, and a distributed search's per-worker files);
* `best_architecture.json` and `best_model.keras`: the best child so far
  (only the best child's trained model is kept on disk).

Nothing lost, nothing trained twice, nothing silent:

* every file is written atomically and durably (`nas_tf.durable`): a kill at
  any moment leaves the old file or the new one, and history lines are
  appended whole;
* a trial whose result is already in `history.jsonl` (a kill came after the
  line was written but before Keras Tuner saved the trial) is not trained
  again on resume: its recorded result is reported instead;
* a child's own failure (out of memory, a NaN loss, impossible shapes, a
  crashed or timed-out worker) fails its trial, with the reason, message and
  worker traceback in the history, and the search goes on; except that a
  recurrent cell whose loss diverges is a finished child with reward 0 and
  "diverged": true in its record (`nas_tf.tasks.CellTask`), so the controller
  learns to avoid it; it is the best child only when no other one finished
  (`_rank`); any other error
  (a bug, a missing file, a full disk) stops the search with a `SearchError`
  that carries the traceback, leaving the saved state to resume from;
* `max_consecutive_failures` failed children in a row stop the search too.

Fault points (`nas_tf.durable.fault_point`, for tests): "during_child" (a
child is training), "after_record" (its history line was just written),
"before_best_model" (the best child's model is about to be kept or
dropped), "during_best_export" (between writing `best_architecture.json` and
`best_model.keras`).
"""

import dataclasses
import json
import math
import os
import shutil
import sys
import time
import traceback
from typing import Optional

import keras_tuner
import tensorflow as tf

from nas_tf import builtin_families  # noqa: F401 (registers the paper's space families)
from nas_tf import data as data_lib
from nas_tf import dirlock
from nas_tf import distributed
from nas_tf import durable
from nas_tf import families
from nas_tf import history as history_lib
from nas_tf import hp_space
from nas_tf import kt_compat
from nas_tf import oracle as oracle_lib
from nas_tf import progress as progress_lib
from nas_tf import space as space_lib
from nas_tf import summaries
from nas_tf.children import base as children_base
from nas_tf.children import convnet, worker

HISTORY = history_lib.HISTORY
# The search's settings and their files, under the names this module has always had.
from nas_tf.search_config import (  # noqa: E402,F401
    BEST_ARCHITECTURE,
    BEST_MODEL,
    CONFIG,
    FREE_SETTINGS,
    PROJECT,
    ConfigChangedError,
    SearchConfig,
    check_and_write_config,
    config_changes,
)

def role() -> str:
    """This process's part in a search: "single", or Keras Tuner's "chief" or "worker".

    Keras Tuner decides it from `KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`
    and `KERASTUNER_ORACLE_PORT` (`nas_tf.launch` sets them).
    """
    if not kt_compat.has_chief():
        return "single"
    return "chief" if kt_compat.is_chief() else "worker"


# The history's reader and writer, under the names this module has always had.
history_path = history_lib.path
history_files = history_lib.files
read_history = history_lib.read
merge_history = history_lib.merge
_read_history_file = history_lib.read_file
HistoryError = history_lib.HistoryError


class SearchError(keras_tuner.errors.FatalError):
    """An error of nas_tf or its environment (not of a child) stopped the search.

    The finished children are in the history and the oracle state is saved:
    once the cause is fixed, running again resumes with the interrupted trial.
    """


# A child's own failures: they fail its trial and the search goes on.
CHILD_FAILURES = (convnet.ChildTrainingError, worker.ChildCrashed, tf.errors.ResourceExhaustedError)


# The dataset registry (`nas_tf.data`): every name a search can load, and how.
DATASETS = data_lib.names()
load_data = data_lib.load


class ChildSearch(oracle_lib.NASRL):
    """A NASRL tuner whose trials train the children of a task.

    Args:
      task: a task from `nas_tf.tasks` (its `space` is searched).
      output_dir: where `history.jsonl` and the best model go.
      verbose: 0 silent, 1 a line per child, 2 Keras progress too.
      isolate_children: train in a recycled worker process (see
        `nas_tf.children.worker`).
      children_per_worker: children per worker process.
      child_timeout: seconds a child may train in a worker (None: no limit).
      metric: the record's validation figure logged beside the reward
        (its family's `metric`).
      **kwargs: `NASRL` arguments (objective and space are set here).

    Attributes:
      trainings: children this object has trained (a result already in the
        history is reported again without training).
      after_child: None, or a function called with no arguments once each
        finished child's trial is saved (`nas_tf.remote` syncs a bucket there).
    """

    def __init__(
        self,
        task,
        output_dir,
        verbose=1,
        isolate_children=True,
        children_per_worker=20,
        child_timeout=None,
        metric="val_accuracy",
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
        worker_id = self.tuner_id if self._is_worker() else None
        self._history_path = history_path(output_dir, worker_id)
        self._history = {r["trial_id"]: r for r in read_history(output_dir)}
        self._best = None  # (reward, trial id) of the best child, read from the history.
        self.trainings = 0
        self.after_child = None
        self._worker_id = worker_id
        # TensorBoard: children's runs here, and the controller's (the chief's oracle).
        self._logdir = os.path.join(output_dir, summaries.TENSORBOARD)
        if isinstance(self.oracle, oracle_lib.NASRLOracle):
            self.oracle.summary_dir = self._logdir
            summaries.write_hparams_config(self._logdir, task.space, ["reward", metric])
        done = list(self._history.values())
        self._failures = sum(r["status"] != "COMPLETED" for r in done)
        self._diverged = sum(bool(r.get("diverged")) for r in done if r["status"] == "COMPLETED")
        self._best_reward = _best_of([r for r in done if r["status"] == "COMPLETED"])[0]
        self._progress = progress_lib.Progress(
            self.oracle.max_trials, done=len(done), verbose=verbose
        )
        if isolate_children:
            self._train = worker.WorkerPool(task, children_per_worker, timeout=child_timeout)
        else:
            self._train = task

    def run_trial(self, trial, *args, **kwargs):
        try:
            return self._run_trial(trial)
        except (keras_tuner.errors.FailedTrialError, keras_tuner.errors.FatalError):
            raise
        except Exception as e:  # Ours or the environment's: stop, do not skip.
            raise self._stop(trial, e) from e

    def _run_trial(self, trial):
        # The space comes from the task: a worker's oracle is a client of the chief's.
        arch = hp_space.values_to_architecture(self.task.space, trial.hyperparameters.values)
        record = {"trial_id": trial.trial_id, "architecture": json.loads(arch.to_json())}
        model_path = os.path.join(self.get_trial_dir(trial.trial_id), "model.keras")
        done = self._history.get(trial.trial_id)
        if done is not None and done.get("architecture") == record["architecture"]:
            return self._report_again(done, model_path)
        self.trainings += 1
        try:
            result = self._train((arch.to_json(), model_path))
        except CHILD_FAILURES as e:
            reason = getattr(e, "reason", None) or (
                "oom" if isinstance(e, tf.errors.ResourceExhaustedError) else "error"
            )
            message = str(e) if not isinstance(e, tf.errors.ResourceExhaustedError) else (
                str(e).splitlines()[0] if str(e) else "out of memory"
            )
            record.update(status="FAILED", reason=reason, message=message)
            trace = _traceback_of(e)
            if trace:
                record["traceback"] = trace
            self._record(record)
            raise keras_tuner.errors.FailedTrialError(f"{reason}: {message}") from e
        record.update(status="COMPLETED", **result)
        self._record(record)
        self._keep_best_model(trial.trial_id, _rank(record), model_path)
        return self.task.objective(result)

    def _report_again(self, done, model_path):
        """A trial already in the history (killed before Keras Tuner saved it): no retraining."""
        if done["status"] == "COMPLETED":
            self._keep_best_model(done["trial_id"], _rank(done), model_path)
            return self.task.objective(done)
        reason, message = done.get("reason", "error"), done.get("message", "")
        raise keras_tuner.errors.FailedTrialError(f"{reason}: {message}")

    def _stop(self, trial, error) -> SearchError:
        trace = getattr(error, "worker_traceback", None) or traceback.format_exc()
        message = (
            f"Trial {trial.trial_id}: {type(error).__name__}: {error}\n"
            "This is an error of nas_tf or of its environment, not of the child, so the "
            f"search stopped. The finished children are saved in {self.output_dir}; once the "
            "cause is fixed, running the same command again resumes with this trial.\n"
            f"{trace}"
        )
        return SearchError(message)

    def on_trial_end(self, trial):
        if self._is_worker():  # The chief counts failures in a row and stops the search.
            return super().on_trial_end(trial)
        try:
            super().on_trial_end(trial)
            if self.after_child is not None:
                self.after_child()
        except RuntimeError as e:
            if "consecutive failures" not in str(e):
                raise
            # Keras Tuner raises before saving: save, so that a resume starts after it.
            self.oracle._save_trial(self.oracle.trials[trial.trial_id])
            self.oracle.save()
            last = self._history.get(trial.trial_id, {})
            raise SearchError(
                f"{self.oracle.max_consecutive_failed_trials} children failed in a row, so the "
                f"search stopped (see the reasons in {os.path.join(self.output_dir, HISTORY)}). "
                "Fix the cause, or raise --search_max_consecutive_failures, and run again to "
                f"resume. The last failure ({last.get('reason', '?')}): {last.get('message', '')}"
            ) from e

    def _keep_best_model(self, trial_id, rank, model_path):
        """Keeps only the best child's model on disk (thousands of children would fill it).

        `rank` is the child's `_rank` (None: never the best). Idempotent: a
        resumed search calls it again for a trial it had recorded.
        """
        durable.fault_point("before_best_model")
        if self._best is None:
            done = [r for r in self._history.values() if r["status"] == "COMPLETED"]
            done = [r for r in done if r["trial_id"] != trial_id]
            self._best = _best_rank_of(done)
        best_rank, best_id = self._best
        if rank is not None and (best_rank is None or rank > best_rank):
            if best_id is not None and best_id != trial_id:
                old = os.path.join(self.get_trial_dir(best_id), "model.keras")
                if os.path.exists(old):
                    os.remove(old)
            self._best = (rank, trial_id)
        elif best_id != trial_id and os.path.exists(model_path):
            os.remove(model_path)

    def close(self):
        """Stops the worker process, if any."""
        if isinstance(self._train, worker.WorkerPool):
            self._train.close()

    def _record(self, record):
        if self._worker_id is not None:
            record["worker"] = self._worker_id  # The report draws each worker's children.
        history_lib.append(self._history_path, record)
        self._history[record["trial_id"]] = record
        durable.fault_point("after_record")
        summaries.write_child(self._logdir, record)
        self._failures += record["status"] != "COMPLETED"
        self._diverged += record["status"] == "COMPLETED" and bool(record.get("diverged"))
        reward = record.get("reward")
        if record["status"] == "COMPLETED" and _finite(reward):
            self._best_reward = max(reward, self._best_reward or -math.inf)
        if self.log_level >= 1 or record.get("traceback"):
            if record["status"] == "COMPLETED" and record.get("diverged"):
                what = (
                    f"reward {record['reward']:.4f}  DIVERGED: {str(record.get('message', ''))[:300]}"
                    f"  {_seconds(record.get('train_seconds'))}"
                )
            elif record["status"] == "COMPLETED":
                what = (
                    f"reward {record['reward']:.4f}  {self.task.headline(record)}  "
                    f"params {_params(record.get('num_params'))}  "
                    f"{_seconds(record.get('train_seconds'))}"
                )
            else:
                what = f"FAILED ({record['reason']}): {record['message'][:300]}"
            # A failure with a traceback is shown even when silent.
            self._progress.verbose = max(self.log_level, 1)
            self._progress.update(
                # Finished children this process knows of (a worker: its own and earlier ones).
                done=len(self._history),
                values={
                    "best": self._best_reward,
                    "diverged": self._diverged or None,
                    "failed": self._failures or None,
                },
                prefix=f"[child {record['trial_id']}]",
                note=what,
            )
            if record.get("traceback"):
                print(record["traceback"], file=sys.stderr, flush=True)


def _traceback_of(error) -> str:
    """The worker's stderr tail (a crash) or the traceback it sent, if any."""
    trace = getattr(error, "traceback", None) or getattr(error, "worker_traceback", None)
    if isinstance(trace, str) and trace.strip():
        return trace[-worker.TAIL_CHARS:]
    return ""


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _params(n) -> str:
    return f"{n:,}" if isinstance(n, int) and not isinstance(n, bool) else "-"


def _seconds(x) -> str:
    return f"{x:.1f}s" if _finite(x) else "-"


_trial_order = history_lib.trial_order


def _rank(record):
    """How a finished record ranks for the best child (higher is better), or None if never.

    The reward first; at equal rewards a child that trained ranks above one
    that diverged (reward 0, `nas_tf.tasks.CellTask`), so a diverged child is
    the best only when no other finished.
    """
    reward = record.get("reward")
    if not _finite(reward):
        return None
    return (reward, not record.get("diverged"))


def _best_rank_of(records):
    """(`_rank`, trial id) of the best finished record, earliest on ties; (None, None) if none."""
    best = (None, None)
    for r in sorted(records, key=lambda r: _trial_order(r["trial_id"])):
        rank = _rank(r)
        if rank is not None and (best[0] is None or rank > best[0]):
            best = (rank, r["trial_id"])
    return best


def _best_of(records):
    """(reward, trial id) of the best finished record (`_rank`: highest finite reward, a
    diverged child below a trained one of equal reward, earliest on ties)."""
    rank, trial_id = _best_rank_of(records)
    return (None if rank is None else rank[0]), trial_id


def summarize(output_dir: str, task, top_k: int = 5) -> str:
    """A text table of the best `top_k` children."""
    history = read_history(output_dir)
    done = [r for r in history if r["status"] == "COMPLETED"]
    done.sort(key=lambda r: _rank(r) or (-math.inf, False), reverse=True)
    diverged = sum(bool(r.get("diverged")) for r in done)
    depth = task.space.uses_depth
    lines = [
        f"{len(done)} children trained"
        + (f" ({diverged} diverged, reward 0)" if diverged else "")
        + f", {len(history) - len(done)} failed. "
        f"Top {min(top_k, len(done))}:",
        f"{'trial':>6} {'reward':>8}  {'validation':<18} {'params':>12}" + ("  depth" if depth else ""),
    ]
    for r in done[:top_k]:
        lines.append(
            f"{r['trial_id']:>6} {r['reward']:8.4f}  {task.headline(r):<18} "
            f"{_params(r.get('num_params')):>12}"
            + (f"  {r['architecture']['depth']:>5}" if depth else "")
        )
    return "\n".join(lines)


def _export_best(tuner: ChildSearch, output_dir: str) -> Optional[dict]:
    """Writes the best child's architecture and model (the same rule as the kept model)."""
    done = [r for r in read_history(output_dir) if r["status"] == "COMPLETED"]
    reward, trial_id = _best_of(done)
    if trial_id is None:
        return None
    record = next(r for r in done if r["trial_id"] == trial_id)
    space = tuner.task.space
    arch = space.validate(
        space_lib.Architecture.from_json(json.dumps(record["architecture"]))
    )
    durable.atomic_write_text(os.path.join(output_dir, BEST_ARCHITECTURE), arch.to_json() + "\n")
    durable.fault_point("during_best_export")
    model = os.path.join(tuner.get_trial_dir(trial_id), "model.keras")
    best_model = os.path.join(output_dir, BEST_MODEL)
    if os.path.exists(model):
        durable.atomic_copy(model, best_model)
    elif os.path.exists(best_model):
        os.remove(best_model)  # Another child's model: it must not pass for the best one's.
    return {"trial_id": trial_id, "reward": reward, "architecture": arch}


def _readable(arch, output_dir: str) -> str:
    """`arch` as its family reads it (`nas_tf.describe.summary`, the search's config picks the spec)."""
    from nas_tf import describe

    with open(os.path.join(output_dir, CONFIG), encoding="utf-8") as f:
        return describe.summary(arch, config=json.load(f))


def _share_accelerators():
    """Lets the worker processes use the GPUs: this process takes memory as needed."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # TensorFlow has already initialised the device.


def run(config: SearchConfig, data=None, after_child=None) -> Optional[dict]:
    """Runs (or resumes) a search.

    Args:
      config: the `SearchConfig`.
      data: optional `ImageData` (e.g. from `nas_tf.data.from_arrays`) or
        `LMData`; otherwise `config.dataset` is loaded.
      after_child: optional function called with no arguments after each
        finished child of this process is saved (`ChildSearch.after_child`).

    Returns:
      The best child: {"trial_id", "reward", "architecture"}, or None if no
      child finished.

    Raises:
      ValueError: for an impossible space or dataset.
      ConfigChangedError: when resuming with changed settings (see
        `check_and_write_config`).
      HistoryError: when `history.jsonl` is corrupt.
      SearchError: when an error that is not a child's stopped the search.
      nas_tf.data.DataNotPreparedError: when cifar10 or ptb is not available offline.
      nas_tf.dirlock.LockedError: when another search holds `output_dir`.
    """
    # One writer per directory, locked before anything is written or deleted (--overwrite).
    with lock_output_dir(config.output_dir):
        if config.weight_sharing is not None:
            from nas_tf.supernets import runner

            try:
                return runner.run(config, data)
            except runner.UnsupportedSpaceError as e:  # One line at the command line.
                raise SearchError(str(e)) from e
        return _run(config, data, after_child)


def lock_output_dir(output_dir: str) -> dirlock.DirLock:
    """This process's lock on `output_dir`: the directory's, or a worker's own (`nas_tf.dirlock`).

    Keras Tuner's workers write into their chief's directory, so they do not
    take its lock; each takes one of its own id.
    """
    if role() == "worker":
        tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "worker")
        return dirlock.acquire(output_dir, dirlock.worker_lock_name(tuner_id))
    return dirlock.acquire(output_dir)


def _run(config: SearchConfig, data, after_child) -> Optional[dict]:
    os.makedirs(config.output_dir, exist_ok=True)
    check_and_write_config(config)
    if config.isolate_children:
        _share_accelerators()
    if data is None:
        data = load_data(config.dataset, config.data_dir, seed=config.seed)
    seeded = dataclasses.replace(
        config,
        child=dataclasses.replace(config.child, seed=config.child.seed or config.seed),
        lm_train=dataclasses.replace(config.lm_train, seed=config.lm_train.seed or config.seed),
    )
    task = families.make_task(seeded, data)
    project = os.path.join(config.output_dir, PROJECT)
    part = role()
    if config.overwrite and part != "worker":  # A worker must not delete the chief's search.
        shutil.rmtree(project, ignore_errors=True)
        for path in history_files(config.output_dir) + [
            os.path.join(config.output_dir, name) for name in (BEST_ARCHITECTURE, BEST_MODEL)
        ]:
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
        max_resamples=config.max_resamples,
        mutate_best=config.mutate_best,
        mutate_until=config.mutate_until,
        preset=config.preset,
        # config.json's guard lists the changes; the oracle's own follows it.
        allow_settings_change=config.allow_config_change,
        isolate_children=config.isolate_children,
        children_per_worker=config.children_per_worker,
        child_timeout=config.child_timeout,
        metric=families.for_space(config.space).metric,
        max_consecutive_failed_trials=config.max_consecutive_failures,
    )
    tuner.oracle.verbose = 0
    tuner.after_child = after_child
    if config.verbose:
        finished = len(read_history(config.output_dir))
        where = "" if part == "single" else f" as {part} {tuner.tuner_id}"
        if part != "chief":  # The chief trains no child.
            print(f"nas_tf: children train on {children_base.devices_in_words()}", flush=True)
        print(
            f"nas_tf: searching {task.space.name} ({len(task.space.decisions)} decisions) on "
            f"{config.dataset}{where}, {config.max_trials} children, {finished} already done; "
            f"output in {config.output_dir}",
            flush=True,
        )
    try:
        tuner.search(verbose=0)
    except (distributed.ChiefUnreachableError, distributed.ChiefError) as e:
        raise SearchError(f"{type(e).__name__}: {e}") from e
    finally:
        tuner.close()
        tuner._progress.close()
    if part == "worker":  # The chief merges the history and exports the best child.
        if config.verbose:
            print(f"nas_tf: worker {tuner.tuner_id} done: the chief has no more children.")
        return None
    if part == "chief":
        merge_history(config.output_dir)
    best = _export_best(tuner, config.output_dir)
    if config.verbose:
        print(summarize(config.output_dir, task, config.top_k))
        if best is not None:
            print(
                f"Best architecture (trial {best['trial_id']}, reward {best['reward']:.4f}; "
                f"{os.path.join(config.output_dir, BEST_ARCHITECTURE)}):"
            )
            print(_readable(best["architecture"], config.output_dir))
        sys.stdout.flush()
    return best
