"""`NASRLOracle`: the controller search (`nas_tf.algorithms`) as a Keras Tuner oracle.

Written the way Keras Tuner's own oracles are: `populate_space` returns the
algorithm's next proposal, a completed trial's reward is its feedback
(through `score_trial`, inside the synchronized `end_trial`), and the
algorithm's state is part of the oracle's. The files (journaled state,
controller checkpoints, trial files) are `nas_tf.oracle_store`'s; every use
of Keras Tuner's internals is `nas_tf.kt_compat`'s.

A search resumed with `overwrite=False` continues exactly: the next samples
equal those of an uninterrupted run with the same seed.
"""

import dataclasses
import functools
import json
import math
import os
import warnings
from typing import Callable, Optional, Union

import keras_tuner

from nas_tf import chief  # noqa: F401 (the chief's service: nas_tf.chief.serve)
from nas_tf import distributed
from nas_tf import durable
from nas_tf import hp_space
from nas_tf import journal
from nas_tf import kt_compat
from nas_tf import oracle_store
from nas_tf import rewards as rewards_lib
from nas_tf import space as space_lib
from nas_tf import summaries as summaries_lib
from nas_tf.algorithms import controller_search

PRESETS = controller_search.PRESETS
_RUNNING, _STOPPED = kt_compat.TrialStatus.RUNNING, kt_compat.TrialStatus.STOPPED


class NASRLOracle(keras_tuner.Oracle):
    """Neural Architecture Search with Reinforcement Learning as an oracle.

    Every tunable hyperparameter of the HyperModel is one controller decision;
    groups declared with `nas_tf.anchor` are sampled with anchor attention.

    Args:
      objective, max_trials, hyperparameters, allow_new_entries,
      tune_new_entries, seed, max_retries_per_trial,
      max_consecutive_failed_trials: as for `keras_tuner.Oracle`.
      space: optional nas_tf `Space` to search; it becomes the oracle's
        hyperparameters (its depth, if any, the reserved `nas_tf/depth` entry).
      controller_config, reinforce_config, reuse_rewards, max_resamples,
        mutate_best, mutate_until, preset: the search's settings (`ControllerSearch`;
        None: the preset's). `preset` is "default" (measured best at tens to
        hundreds of trials) or "paper" (Zoph & Le 2017 where it is specified).
      reward: how a completed trial becomes a reward: "identity" (the score,
        negated for objectives to minimise), "cifar10" (max of the objective
        over the last 5 reported steps, cubed), "ptb" (80 / score^2), or a
        callable taking the `Trial`.
      depth_schedule: callable from the number of trials started to the
        depth of the next network (e.g. a `DepthCurriculum`); default: the
        deepest the space allows.
      allow_settings_change: resume a saved search whose settings (preset,
        controller, REINFORCE, re-use and mutation, reward) differ from these;
        by default that is refused with the changes listed.
    """

    # Storage settings (`nas_tf.oracle_store`).
    snapshot_min_bytes = 1 << 16
    checkpoint_every = 25
    checkpoint_trials = 100
    # Per-update figures to `controller_updates.jsonl` in the project directory
    # and TensorBoard events to `summary_dir`/controller (`nas_tf.summaries`).
    write_summaries = True
    summary_dir: Optional[str] = None  # None: <project directory>/tensorboard.

    def __init__(self, objective=None, max_trials=None, hyperparameters=None,
                 allow_new_entries=True, tune_new_entries=True, seed=None,
                 max_retries_per_trial=0, max_consecutive_failed_trials=3,
                 space: Optional[space_lib.Space] = None, controller_config=None,
                 reinforce_config=None, reward: Union[str, Callable] = "identity",
                 depth_schedule: Optional[Callable[[int], int]] = None,
                 reuse_rewards: Optional[bool] = None, max_resamples: Optional[int] = None,
                 mutate_best: Optional[float] = None, preset: str = "default",
                 mutate_until: Optional[float] = None, allow_settings_change: bool = False):
        settings = controller_search.resolve(preset, controller_config, reinforce_config,
                                             reuse_rewards, max_resamples, mutate_best,
                                             mutate_until)
        self._space_name, self._kinds = "hyperparameters", {}
        if space is not None:
            if hyperparameters is not None:
                raise ValueError("Pass either `space` or `hyperparameters`, not both.")
            hyperparameters = hp_space.space_to_hyperparameters(space)
            self._space_name = space.name
            self._kinds = {d.name: d.kind for d in space.decisions}
        if not (callable(reward) or reward in rewards_lib.REWARDS):
            raise ValueError(f"Unknown reward {reward!r}; use one of "
                             f"{sorted(rewards_lib.REWARDS)} or a callable taking the Trial.")
        super().__init__(objective=objective, max_trials=max_trials,
                         hyperparameters=hyperparameters, allow_new_entries=allow_new_entries,
                         tune_new_entries=tune_new_entries, seed=seed,
                         max_retries_per_trial=max_retries_per_trial,
                         max_consecutive_failed_trials=max_consecutive_failed_trials)
        self.preset, self.reward, self.depth_schedule = preset, reward, depth_schedule
        self.allow_settings_change = allow_settings_change
        self.controller_config = settings["controller_config"]
        self.reinforce_config = settings["reinforce_config"]
        self.reuse_rewards = settings["reuse_rewards"]
        self.max_resamples = settings["max_resamples"]
        self.mutate_best = settings["mutate_best"]
        self.mutate_until = settings["mutate_until"]
        # Built lazily: Keras Tuner workers construct the oracle only to proxy it.
        self._algorithm: Optional[controller_search.ControllerSearch] = None
        self._space_size, self._space_config, self._fixed = None, None, {}
        self._rewarded, self._rewarded_order = set(), []  # Trial ids already fed.
        self._store, self._summaries = None, None
        self._running_on_disk = set()  # Trials whose trial.json says RUNNING.
        kt_compat.track_containers(self)

    @property
    def hyperparameters(self) -> keras_tuner.HyperParameters:
        return self._hyperparameters

    @hyperparameters.setter
    def hyperparameters(self, hps):
        # Keras Tuner copies them for every trial: a copy without a serialisation round trip.
        if hps is not None and not isinstance(hps, hp_space.QuickCopyHyperParameters):
            hps = hp_space.QuickCopyHyperParameters.of(hps)
        self._hyperparameters = hps

    # -- the search algorithm -----------------------------------------------------------

    @property
    def algorithm(self) -> controller_search.ControllerSearch:
        """The search algorithm, built on first use and grown with the hyperparameters."""
        size = len(self.hyperparameters.space)
        if self._algorithm is not None and size == self._space_size:
            return self._algorithm
        space, self._fixed = hp_space.space_from_hyperparameters(
            self.hyperparameters, self._space_name, self._kinds)
        config = space.to_config()
        if self._algorithm is None:
            self._algorithm = self.make_algorithm(space)
        elif config != self._space_config:
            self._algorithm.set_space(space)
        self._algorithm.space_version = size
        self._space_size, self._space_config = size, config
        return self._algorithm

    def make_algorithm(self, space: space_lib.Space):
        """The search algorithm; a subclass may return any `nas_tf.algorithms.SearchAlgorithm`
        built with `tried=self._tried` (Keras Tuner's record of what was tried)."""
        return controller_search.ControllerSearch(
            space, self.seed, controller_config=self.controller_config,
            reinforce_config=self.reinforce_config, reuse_rewards=self.reuse_rewards,
            max_resamples=self.max_resamples, mutate_best=self.mutate_best,
            mutate_until=self.mutate_until, preset=self.preset,
            depth_schedule=self.depth_schedule, tried=self._tried, on_update=self._on_update)

    @property
    def controller(self):
        return self.algorithm.controller

    @property
    def learner(self):
        return self.algorithm.learner

    def _tried(self, arch) -> bool:
        values = hp_space.architecture_to_values(self._algorithm.space, arch, self._fixed)
        return kt_compat.is_duplicate(self, values)

    def populate_space(self, trial_id):
        algorithm = self.algorithm
        if not algorithm.space.decisions:
            # Nothing to decide yet (the HyperModel declares its entries later).
            return {"status": _RUNNING, "values": dict(self._fixed)}
        algorithm.num_proposed = len(self.start_order)  # Trials started: the proposal index.
        arch = algorithm.propose(trial_id)
        if arch is None:
            self.save()  # Keras Tuner saves only for a running trial; keep the updates made.
            return {"status": _STOPPED, "values": None}
        values = hp_space.architecture_to_values(algorithm.space, arch, self._fixed)
        return {"status": _RUNNING, "values": values}

    def score_trial(self, trial):
        """Scores a completed trial and feeds its reward (a non-finite score becomes NaN)."""
        super().score_trial(trial)
        if trial.score is None or not math.isfinite(trial.score):
            trial.score = float("nan")  # Keras Tuner's invalid trial: never a reward.
            return
        self._feed(trial)

    def _feed(self, trial):
        if trial.trial_id in self._rewarded:
            return
        algorithm = self.algorithm
        try:
            arch = hp_space.values_to_architecture(algorithm.space, trial.hyperparameters.values)
        except space_lib.ArchitectureError as e:
            warnings.warn(f"Trial {trial.trial_id} is not a point of the search space ({e}); "
                          "its score is not used as a reward.")
            return
        reward = rewards_lib.trial_reward(trial, self.reward, self.objective)
        if not math.isfinite(reward):
            return
        self._rewarded.add(trial.trial_id)
        self._rewarded_order.append(trial.trial_id)
        algorithm.feedback(trial.trial_id, arch, reward)

    def _on_update(self, stats, batch):
        """Writes a controller update's figures (a replayed update is not written again)."""
        if not self.write_summaries or getattr(self, "_directory", None) is None:
            return
        if self._summaries is None:
            logdir = self.summary_dir or os.path.join(self._project_dir, summaries_lib.TENSORBOARD)
            self._summaries = summaries_lib.ControllerSummaries(
                os.path.join(self._project_dir, summaries_lib.CONTROLLER_LOG), logdir)
        algorithm = self._algorithm
        self._summaries.write(algorithm.num_updates, stats, algorithm.space, batch)

    # -- state --------------------------------------------------------------------------

    def _journal_state(self):
        """The state to save, tracked containers and logs by reference (what `save` journals)."""
        state = kt_compat.oracle_state(self)
        if self._algorithm is not None:
            name, feeds = self.store.checkpoint
            state["nasrl"] = dict(self._algorithm.state(), rewarded=self._rewarded_order,
                                  checkpoint=name, checkpoint_feeds=feeds,
                                  settings=self._settings)
        return state

    def get_state(self):
        return json.loads(journal.dumps(self._journal_state()))

    def set_state(self, state):
        super().set_state(state)
        kt_compat.track_containers(self)
        # Keras Tuner saves inside `end_trial` before it forgets the trial as
        # ongoing; its own trial.json already says whether it is done.
        self.ongoing_trials = {tuner_id: trial for tuner_id, trial in self.ongoing_trials.items()
                               if trial.status == _RUNNING}
        self._algorithm, self._space_size = None, None
        nasrl = state.get("nasrl")
        # A log list is left out while still empty (a chief saves before its controller exists).
        self._rewarded_order = list((nasrl or {}).get("rewarded", []))
        self._rewarded = set(self._rewarded_order)
        if nasrl is None:
            return
        self._check_settings(nasrl.get("settings"))
        checkpoint = self.store.read_checkpoint(nasrl, len(self.start_order))
        if not self.algorithm.restore(nasrl, checkpoint):
            self.store.checkpoint = (None, 0)
        self.store.remove_stale_checkpoints()
        # A kill after a trial's end was saved in its trial.json but before the
        # oracle's own save: finish what end_trial did, in trial order.
        for trial_id in sorted(self.trials):
            trial = self.trials[trial_id]
            if trial.status == _RUNNING or trial_id in self.end_order:
                continue
            self.end_order.append(trial_id)
            if trial.status == kt_compat.TrialStatus.COMPLETED:
                self._feed(trial)

    @functools.cached_property
    def _settings(self) -> dict:
        """What this oracle searches with, as saved (a callable reward by its name)."""
        reward = self.reward if isinstance(self.reward, str) else getattr(
            self.reward, "__qualname__", type(self.reward).__name__)
        return {"preset": self.preset, "reward": reward,
                "controller": dataclasses.asdict(self.controller_config),
                "reinforce": dataclasses.asdict(self.reinforce_config),
                "reuse_rewards": self.reuse_rewards, "max_resamples": self.max_resamples,
                "mutate_best": self.mutate_best, "mutate_until": self.mutate_until}

    def _check_settings(self, saved: Optional[dict]) -> None:
        """Refuses to resume with other settings than the search's (unless allowed)."""
        if saved is None:
            return  # Saved before settings were recorded.
        now = json.loads(json.dumps(self._settings))
        changes = [f"{path}: {old!r} -> {new!r}" for path, old, new in _differences(saved, now)]
        if changes and not self.allow_settings_change:
            raise ValueError(
                "This search was started with other settings; resuming would mix two "
                f"searches. Changed: {'; '.join(changes)}. Pass the original settings, "
                "allow_settings_change=True to resume anyway, or overwrite=True to start afresh.")

    def _check_consecutive_failures(self):
        kt_compat.check_consecutive_failures(self)

    @keras_tuner.synchronized
    def end_trial(self, trial):
        """Keras Tuner's `end_trial`, ignoring a repeat of one already processed.

        A worker resends a request whose connection broke (`nas_tf.distributed`):
        the chief may have ended the trial, saved, and died before answering.
        Its own copy is RUNNING until the end is processed; ending it again
        would count it twice.
        """
        known = self.trials.get(trial.trial_id)
        if known is not None and known is not trial and known.status != _RUNNING:
            for tuner_id, ongoing in list(self.ongoing_trials.items()):
                if ongoing.trial_id == trial.trial_id:
                    self.ongoing_trials.pop(tuner_id)
            return
        super().end_trial(trial)

    # -- files --------------------------------------------------------------------------

    @property
    def _project_dir(self):
        """Keras Tuner's project directory, created if missing (one `stat` when local)."""
        return _local_directory(os.path.join(str(self._directory), self._project_name))

    def _get_trial_dir(self, trial_id):
        return _local_directory(os.path.join(self._project_dir, f"trial_{trial_id}"))

    @property
    def store(self) -> oracle_store.OracleStore:
        path = self._get_oracle_fname()
        if self._store is None or self._store.journal.path != path:
            self._store = oracle_store.OracleStore(
                self._project_dir, path, self.snapshot_min_bytes,
                self.checkpoint_every, self.checkpoint_trials)
        return self._store

    def _save_trial(self, trial):
        """Writes the trial's file, except for progress reports of a trial saved running.

        What a resume needs of a running trial is its start (it is retried
        from scratch). A chief writes every report: its workers outlive its
        restarts, and Keras Tuner scores a trial from the chief's reports.
        """
        running = trial.status == _RUNNING
        if running and trial.trial_id in self._running_on_disk and not kt_compat.is_chief():
            return
        self.store.write_trial(self._get_trial_dir(trial.trial_id), trial)
        (self._running_on_disk.add if running else self._running_on_disk.discard)(trial.trial_id)
        durable.fault_point("oracle_save_trial")  # Before the oracle's own save.

    def save(self):
        """Saves the state, after a controller checkpoint when one is due."""
        self.store.maybe_checkpoint(self._algorithm, len(self.start_order))
        self.store.save(self._journal_state())

    def reload(self):
        """Loads the trials and the journaled state (Keras Tuner's reload, made durable)."""
        for trial in self.store.load_trials(kt_compat.Trial):
            self.trials[trial.trial_id] = trial
            if trial.status == _RUNNING:
                self._running_on_disk.add(trial.trial_id)
        state = self.store.load()
        if state is None:
            raise journal.CorruptStateError(f"{self._get_oracle_fname()} is missing although "
                                            "the project exists; start afresh with --overwrite.")
        # A kill between a new trial's file and the save that starts it: the
        # saved state never proposed it, so it is dropped and proposed again.
        started = set(state["start_order"])
        for trial_id in [t for t, trial in self.trials.items()
                         if trial.status == _RUNNING and t not in started]:
            self.store.remove_trial(self._get_trial_dir(self.trials.pop(trial_id).trial_id))
        self.set_state(state)
        if kt_compat.is_chief():
            # A restarted chief: its workers may still run these trials (they
            # resend their requests once it is back); it must not exit before
            # each has been told to stop.
            self.tuner_ids.update(self.ongoing_trials)
            return
        for _, trial in self.ongoing_trials.items():
            self._retry_queue.append(trial.trial_id)
        self.ongoing_trials = {}


def _differences(old, new, path=""):
    """(path, old, new) for each leaf that differs between two JSON values."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            yield from _differences(old.get(key), new.get(key), f"{path}.{key}" if path else key)
    elif old != new:
        yield path, old, new


def _local_directory(dirname: str) -> str:
    """`dirname`, created if missing: one `stat` for a local path, Keras Tuner's way for a URL."""
    if "://" in dirname:
        kt_compat.create_directory(dirname)
    elif not os.path.isdir(dirname):
        os.makedirs(dirname, exist_ok=True)
    return dirname


class NASRL(keras_tuner.Tuner):
    """Keras Tuner tuner driven by `NASRLOracle`.

    Args:
      hypermodel: a `HyperModel` or a build function.
      objective, max_trials, seed, hyperparameters, tune_new_entries,
      allow_new_entries, max_retries_per_trial, max_consecutive_failed_trials:
        as for Keras Tuner's tuners.
      chief_timeout: on a worker of a distributed search, seconds to wait for
        the chief per request (resending it if the chief restarts) before
        stopping with a clear `nas_tf.distributed.ChiefUnreachableError`;
        default: `NAS_TF_CHIEF_TIMEOUT`, else 600.
      **kwargs: `NASRLOracle` options (`space`, `controller_config`,
        `reinforce_config`, `reward`, `depth_schedule`, `reuse_rewards`,
        `max_resamples`, `mutate_best`, `mutate_until`, `preset`) and `keras_tuner.Tuner`
        options (`directory`, `project_name`, `overwrite`, ...).
    """

    _ORACLE_ARGS = ("space", "controller_config", "reinforce_config", "reward", "depth_schedule",
                    "reuse_rewards", "max_resamples", "mutate_best", "mutate_until", "preset",
                    "allow_settings_change")

    def __init__(self, hypermodel=None, objective=None, max_trials=10, seed=None,
                 hyperparameters=None, tune_new_entries=True, allow_new_entries=True,
                 max_retries_per_trial=0, max_consecutive_failed_trials=3, chief_timeout=None,
                 **kwargs):
        oracle_kwargs = {k: kwargs.pop(k) for k in self._ORACLE_ARGS if k in kwargs}
        oracle = NASRLOracle(
            objective=objective, max_trials=max_trials, seed=seed,
            hyperparameters=hyperparameters, tune_new_entries=tune_new_entries,
            allow_new_entries=allow_new_entries, max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials, **oracle_kwargs)
        super().__init__(oracle, hypermodel, **kwargs)
        if kt_compat.is_worker():  # Keras Tuner made `self.oracle` a proxy of the chief's.
            distributed.make_patient(self.oracle, chief_timeout)

    def save(self):
        """Keras Tuner's save, with the tuner's own file written atomically."""
        if not kt_compat.is_worker():
            self.oracle.save()
        oracle_store.save_tuner_state(self._get_tuner_fname(), self.get_state())

    def reload(self):
        """Keras Tuner's reload, tolerating a damaged tuner file (it holds no search state)."""
        if not kt_compat.is_worker():
            self.oracle.reload()
        self.set_state(oracle_store.load_tuner_state(self._get_tuner_fname()))
