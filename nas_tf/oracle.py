"""`NASRLOracle`: the controller and its policy gradient as a Keras Tuner oracle.

Written the way Keras Tuner's own oracles are: `populate_space` returns the
controller's next sample, completed trials feed the learner (through
`score_trial`, inside the synchronized `end_trial`), and everything the search
has learned is part of the oracle's saved state:

* `oracle.json` + `oracle.json.journal.jsonl` (`nas_tf.journal`: a snapshot
  and an append-only journal, O(1) bytes per save on average) hold Keras
  Tuner's state plus the baseline, the pending rewards, the sampling RNG,
  the rewards already fed and the log of every feed;
* `nasrl_controller_<n>.npz` beside it, written once `checkpoint_every`
  (25) updates and `checkpoint_trials` (100) trials have passed, holds the
  controller's weights, Adam's slots and the learner's state after update n;
  the feeds logged since are replayed on resume. Trial files are written
  atomically too.

A search resumed with `overwrite=False` therefore continues exactly: the next
samples equal those of an uninterrupted run with the same seed. If the
checkpoint is unreadable, the controller is rebuilt by replaying the whole
feed log (every reward fed, re-used ones included, in order) from the seed,
which gives the same weights.

Two presets (`preset=`): "default", measured best at tens to hundreds of
trials, and "paper", Zoph & Le 2017 exactly (docs/search_brain.md).
"""

import collections
import glob
import json
import math
import os
import threading
import warnings
import weakref
from typing import Callable, Optional, Union

import keras_tuner
import numpy as np
from keras_tuner.engine import trial as trial_module
from keras_tuner.src import utils as kt_utils
from keras_tuner.src.distribute import utils as dist_utils

from nas_tf import controller as controller_lib
from nas_tf import distributed
from nas_tf import durable
from nas_tf import hp_space
from nas_tf import journal
from nas_tf import reinforce as reinforce_lib
from nas_tf import rewards as rewards_lib
from nas_tf import space as space_lib
from nas_tf import summaries as summaries_lib

_CHECKPOINT = "nasrl_controller_{:06d}.npz"

# What `NASRLOracle(preset=...)` starts from; explicit arguments override it.
PRESETS = {
    # Measured best at tens to hundreds of trials (docs/nasbench201.md).
    "default": dict(
        controller_config=controller_lib.ControllerConfig,
        reinforce_config=reinforce_lib.ReinforceConfig,
        reuse_rewards=True,
        max_resamples=2,
        mutate_best=0.5,
    ),
    # Zoph & Le 2017 exactly: plain REINFORCE with Adam 0.0006 and an EMA
    # baseline, every sampled architecture trained (duplicates too), nothing
    # mutated, no clipping.
    "paper": dict(
        controller_config=controller_lib.ControllerConfig.paper,
        reinforce_config=reinforce_lib.ReinforceConfig.paper,
        reuse_rewards=False,
        max_resamples=0,
        mutate_best=0.0,
    ),
}


class _WeakDefaultDict(weakref.WeakKeyDictionary):
    """A `defaultdict` whose keys do not keep their objects alive."""

    def __init__(self, factory):
        super().__init__()
        self._factory = factory

    def __getitem__(self, key):
        try:
            return super().__getitem__(key)
        except KeyError:
            value = self[key] = self._factory()
            return value


def _let_oracles_be_freed():
    """Keras Tuner 1.4's `@synchronized` keys a lock per oracle in module-level
    defaultdicts, which keep every oracle ever used alive (with its trials and,
    here, its controller's TensorFlow graphs: about 44 MB per 200-trial
    NAS-Bench-201 search). Weak keys give the same locking without the leak.
    """
    from keras_tuner.src.engine import oracle as kt_oracle

    for name, factory in (("LOCKS", threading.Lock), ("THREADS", lambda: None)):
        table = getattr(kt_oracle, name, None)
        if isinstance(table, collections.defaultdict):
            weak = _WeakDefaultDict(factory)
            weak.update(table)
            setattr(kt_oracle, name, weak)


_let_oracles_be_freed()


def _complete(space, values, depth, rng):
    """`values` made consistent: inactive decisions dropped, newly active ones drawn."""
    out = {}
    for d in space.decisions:
        if not space.is_active(d, out, depth):
            continue
        if d.name in values:
            out[d.name] = values[d.name]
        elif isinstance(d, space_lib.Anchor):
            out[d.name] = tuple(int(b) for b in rng.integers(0, 2, len(d.sources)))
        else:
            out[d.name] = d.values[rng.integers(d.num_choices)]
    return out


def _local_directory(dirname: str) -> str:
    """`dirname`, created if missing: one `stat` for a local path, TensorFlow's file system for a URL."""
    if "://" in dirname:
        kt_utils.create_directory(dirname)  # Keras Tuner's own way (gs://...).
    elif not os.path.isdir(dirname):
        os.makedirs(dirname, exist_ok=True)
    return dirname


class NASRLOracle(keras_tuner.Oracle):
    """Neural Architecture Search with Reinforcement Learning as an oracle.

    Every tunable hyperparameter of the HyperModel is one controller decision;
    groups declared with `nas_tf.anchor` are sampled with anchor attention.

    Args:
      objective, max_trials, hyperparameters, allow_new_entries,
      tune_new_entries, seed, max_retries_per_trial,
      max_consecutive_failed_trials: as for `keras_tuner.Oracle`.
      space: optional nas_tf `Space` to search; it is turned into the oracle's
        hyperparameters (its depth, if any, becomes the reserved `nas_tf/depth` entry).
      controller_config: a `ControllerConfig` (default: the preset's).
      reinforce_config: a `ReinforceConfig` (default: the preset's).
      reward: how a completed trial becomes a reward: "identity" (the score,
        negated for objectives to minimise), "cifar10" (max of the objective
        over the last 5 reported steps, cubed: `nas_tf.rewards`), "ptb"
        (80 / score^2), or a callable taking the `Trial`.
      depth_schedule: callable from the number of trials started so far to
        the depth of the next network (e.g. a `DepthCurriculum`); defaults to
        the deepest the space allows.
      reuse_rewards: if True, an architecture that was already trained is not
        trained again: the draw, with its known reward, is a policy-gradient
        sample like any other, and the controller draws again (up to
        `max_resamples` times per trial). False re-trains duplicates, as the
        paper does. Default: the preset's (True; paper: False).
      max_resamples: draws of already-trained architectures per trial before
        the oracle changes random decisions of the last one until it is
        untried (exploring next to a converged policy; such an architecture
        joins the top-K buffer but never the policy-gradient batch); it stops
        only if the space looks exhausted. Default: the preset's (2).
      mutate_best: the share of trials, once m have started, that change
        random decisions of the best architecture found so far until it is
        untried, instead of drawing from the policy (a local search beside
        the policy; like any mutated architecture it joins the top-K buffer,
        whose maximum-likelihood term pulls the policy towards it, but never
        the policy-gradient batch). Default: the preset's (0.5; paper: 0).
      preset: "default" (measured best at tens to hundreds of trials) or
        "paper" (Zoph & Le 2017 exactly); the arguments above override it.
    """

    # The journal grows to at least this many bytes before a new snapshot.
    snapshot_min_bytes = 1 << 16
    # A controller checkpoint once both `checkpoint_every` updates and
    # `checkpoint_trials` trials have passed since the last. A checkpoint (the
    # weights and Adam's two slots, about 290 KB for the paper's controller)
    # was most of the bytes a trial wrote at one per 25 trials; one per 100
    # keeps a save's amortized bytes near the journal's, and a resume still
    # replays only the feeds of at most about 100 trials.
    checkpoint_every = 25
    checkpoint_trials = 100
    # Per-update figures to `controller_updates.jsonl` in the project directory
    # and TensorBoard events to `summary_dir`/controller (`nas_tf.summaries`).
    write_summaries = True
    summary_dir: Optional[str] = None  # None: <project directory>/tensorboard.

    def __init__(
        self,
        objective=None,
        max_trials=None,
        hyperparameters=None,
        allow_new_entries=True,
        tune_new_entries=True,
        seed=None,
        max_retries_per_trial=0,
        max_consecutive_failed_trials=3,
        space: Optional[space_lib.Space] = None,
        controller_config: Optional[controller_lib.ControllerConfig] = None,
        reinforce_config: Optional[reinforce_lib.ReinforceConfig] = None,
        reward: Union[str, Callable] = "identity",
        depth_schedule: Optional[Callable[[int], int]] = None,
        reuse_rewards: Optional[bool] = None,
        max_resamples: Optional[int] = None,
        mutate_best: Optional[float] = None,
        preset: str = "default",
    ):
        if preset not in PRESETS:
            raise ValueError(f"Unknown preset {preset!r}; use one of {sorted(PRESETS)}.")
        chosen = PRESETS[preset]
        controller_config = controller_config or chosen["controller_config"]()
        reinforce_config = reinforce_config or chosen["reinforce_config"]()
        reuse_rewards = chosen["reuse_rewards"] if reuse_rewards is None else bool(reuse_rewards)
        max_resamples = chosen["max_resamples"] if max_resamples is None else int(max_resamples)
        if max_resamples < 0:
            raise ValueError(f"max_resamples must be >= 0, got {max_resamples}.")
        mutate_best = chosen["mutate_best"] if mutate_best is None else float(mutate_best)
        if not 0.0 <= mutate_best <= 1.0:
            raise ValueError(f"mutate_best must be in [0, 1], got {mutate_best}.")
        self._space_name, self._kinds = "hyperparameters", {}
        if space is not None:
            if hyperparameters is not None:
                raise ValueError("Pass either `space` or `hyperparameters`, not both.")
            hyperparameters = hp_space.space_to_hyperparameters(space)
            self._space_name = space.name
            self._kinds = {d.name: d.kind for d in space.decisions}
        if not (callable(reward) or reward in rewards_lib.REWARDS):
            raise ValueError(
                f"Unknown reward {reward!r}; use one of {sorted(rewards_lib.REWARDS)} "
                "or a callable taking the Trial."
            )
        super().__init__(
            objective=objective,
            max_trials=max_trials,
            hyperparameters=hyperparameters,
            allow_new_entries=allow_new_entries,
            tune_new_entries=tune_new_entries,
            seed=seed,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        self.preset = preset
        self.controller_config = controller_config
        self.reinforce_config = reinforce_config
        self.reward = reward
        self.depth_schedule = depth_schedule
        self.reuse_rewards = reuse_rewards
        self.max_resamples = max_resamples
        self.mutate_best = mutate_best
        # Built lazily: Keras Tuner workers construct the oracle only to proxy it.
        self._learner: Optional[reinforce_lib.Reinforce] = None
        self._space_config = None
        self._space_size = None
        self._fixed = {}
        # _rewarded: trials already fed; _known_rewards: values hash -> reward;
        # _behaviour: trial id -> log-probability its architecture was drawn
        # with (None: not drawn by the policy, e.g. made by mutation), until
        # it is fed; _feeds: every (arch, reward, log q, on policy) fed, in order.
        self._reset_memory()
        self._journal = None
        self._summaries = None
        # Trials whose trial.json says RUNNING (see `_save_trial`).
        self._running_on_disk = set()
        self._track_containers()

    @property
    def hyperparameters(self) -> keras_tuner.HyperParameters:
        return self._hyperparameters

    @hyperparameters.setter
    def hyperparameters(self, hps):
        # Keras Tuner copies them for every trial: a copy without a
        # serialisation round trip (`hp_space.QuickCopyHyperParameters`).
        if hps is not None and not isinstance(hps, hp_space.QuickCopyHyperParameters):
            hps = hp_space.QuickCopyHyperParameters.of(hps)
        self._hyperparameters = hps

    # -- the controller ------------------------------------------------------------

    @property
    def controller(self) -> controller_lib.Controller:
        return self._ensure_learner().controller

    @property
    def learner(self) -> reinforce_lib.Reinforce:
        return self._ensure_learner()

    def _ensure_learner(self) -> reinforce_lib.Reinforce:
        """Builds the controller, or grows it when new hyperparameters appeared."""
        size = len(self.hyperparameters.space)
        if self._learner is not None and size == self._space_size:
            return self._learner
        space, fixed = hp_space.space_from_hyperparameters(
            self.hyperparameters, self._space_name, self._kinds
        )
        self._fixed = fixed
        config = space.to_config()
        self._space_size = size
        if self._learner is None:
            controller = controller_lib.Controller(space, self.controller_config, seed=self.seed)
            self._learner = reinforce_lib.Reinforce(controller, self.reinforce_config)
            if space.decisions:
                # The training graph traces while the first children train.
                self._learner.warm_up(background=True)
        elif config != self._space_config:
            self._learner.wait_for_warm_up()  # It traces the current space.
            self._learner.controller.set_space(space)
            self._learner.refresh()
        self._space_config = config
        return self._learner

    def _depth(self) -> Optional[int]:
        space = self._learner.controller.space
        if not space.uses_depth:
            return None
        if self.depth_schedule is None:
            return space.max_depth
        return min(int(self.depth_schedule(len(self.start_order))), space.max_depth)

    # -- Keras Tuner hooks ------------------------------------------------------------

    def populate_space(self, trial_id):
        learner = self._ensure_learner()
        space = learner.controller.space
        if not space.decisions:
            # Nothing to decide yet (the HyperModel declares its entries later).
            return {"status": trial_module.TrialStatus.RUNNING, "values": dict(self._fixed)}
        depth = self._depth()
        values = self._mutated_best(space, depth)
        if values is not None:
            self._behaviour[trial_id] = None  # Not drawn by the policy: top-K only.
            return {"status": trial_module.TrialStatus.RUNNING, "values": values}
        arch = None
        for arch, log_q in self._samples(learner.controller, depth):
            values = hp_space.architecture_to_values(space, arch, self._fixed)
            if not self.reuse_rewards or not self._duplicate(values):
                self._behaviour[trial_id] = log_q
                return {"status": trial_module.TrialStatus.RUNNING, "values": values}
            known = self._known_rewards.get(self._compute_values_hash(values))
            if known is not None:
                # Already trained: a sample of the current policy whose reward is
                # known, so it is an ordinary policy-gradient sample, for free.
                self._learn(arch, known, log_q)
        # The policy keeps proposing what was tried: explore next to its last sample.
        values = self._mutate_until_new(space, arch)
        if values is None:
            self.save()  # Keras Tuner saves only for a running trial; keep the updates made.
            return {"status": trial_module.TrialStatus.STOPPED, "values": None}
        self._behaviour[trial_id] = None  # Not drawn by the policy: top-K only.
        return {"status": trial_module.TrialStatus.RUNNING, "values": values}

    def _samples(self, controller, depth):
        """Up to `max_resamples + 1` (architecture, log q) samples of the current policy.

        Samples come from a queue drawn m at a time in one batched call
        (about as costly as a single sample) and valid until the policy
        changes: the next update, another curriculum depth, or a grown space
        empties it. Every
        queued sample is an independent draw of the policy that is current
        when it is used, with the log-probability it has under that policy,
        so the queue changes the cost of sampling, not what is sampled. The
        queue is saved with the oracle, so a resumed search draws the same.
        Stopping at the first new architecture is a stopping time, so feeding
        every sample drawn up to it keeps the estimator's direction unbiased
        (Wald's identity; docs/search_brain.md).
        """
        left = self.max_resamples + 1 if self.reuse_rewards else 1
        while left > 0:
            key = [self._learner.num_updates, depth, self._space_size]
            queue = self._sample_queue
            if queue["key"] != key or queue["next"] >= queue["size"]:
                # m feeds end a policy, and every sample drawn is fed (a known
                # architecture at once, a new one when its trial ends), so one
                # search process uses about m samples per policy. When more
                # are needed (a sample whose trial is still running or failed
                # is not fed), another m come. Drawing m (max_resamples + 1)
                # at once cost about 0.5 ms more per update, for samples
                # never used.
                size = self.reinforce_config.batch_size
                self._sample_queue = queue = {"key": key, "rng": controller.get_rng_state().tolist(),
                                              "size": size, "next": 0}
                archs, log_q = controller.sample_with_log_prob(size, depth=depth)
                self._queued = list(zip(archs, log_q.tolist()))
            elif self._queued is None:
                self._queued = self._redraw_queue(controller, queue, depth)
            i = queue["next"]
            queue["next"] = i + 1
            left -= 1
            yield self._queued[i]

    def _redraw_queue(self, controller, queue, depth):
        """A reloaded queue's samples, drawn again from its saved generator state.

        A reloaded oracle has the queue's key, state and index but not its
        samples; the same policy (restored exactly) and the same generator
        state draw the same ones. The generator then returns to where it was.
        """
        after = controller.get_rng_state()
        controller.set_rng_state(queue["rng"])
        archs, log_q = controller.sample_with_log_prob(queue["size"], depth=depth)
        controller.set_rng_state(after)
        return list(zip(archs, log_q.tolist()))

    def _mutated_best(self, space, depth):
        """The values of a mutation of the best architecture so far, for `mutate_best` of trials.

        None (draw from the policy) for the other trials, before m trials
        have started or any has a reward, and when the best architecture is
        of another depth than the curriculum's current one or no longer an
        architecture of the space (decisions that appeared since it was
        trained get random values). The draws come from the seed and the
        trial count, so a resumed search makes the same choices.
        """
        if self.mutate_best <= 0 or self._best is None:
            return None
        if len(self.start_order) < self.reinforce_config.batch_size:
            return None
        rng = np.random.default_rng([self.seed, len(self.start_order), 1])
        if rng.random() >= self.mutate_best:
            return None
        try:
            # In a space that grew since, with random values for its new decisions.
            best = space_lib.Architecture.from_json(self._best[0])
            best = space.validate(space_lib.Architecture(
                _complete(space, best.values, best.depth, rng), best.depth))
        except (space_lib.ArchitectureError, KeyError, ValueError):
            return None
        if space.uses_depth and best.depth != depth:
            return None
        return self._mutate_until_new(space, best, warn=False)

    def _mutate_until_new(self, space, arch, warn=True):
        """A random walk from `arch`, one decision at a time, to an untried architecture.

        Each step changes one active decision (or one anchor bit); decisions
        that a change makes active get random values and those it makes
        inactive are dropped, so every step is a valid architecture. The
        random stream is derived from the seed and the trial count, so a
        resumed search makes the same moves without saving extra state.

        Returns:
          The values of the first untried architecture on the walk, or None
          (with a warning) if none turned up: the space looks exhausted.
        """
        rng = np.random.default_rng([self.seed, len(self.start_order)])
        values = dict(arch.values)
        for _ in range(max(1000, self.max_resamples * 10)):
            d = space.decisions[rng.integers(len(space.decisions))]
            if d.name not in values:
                continue
            step = dict(values)
            if isinstance(d, space_lib.Anchor):
                if not d.sources:
                    continue
                bits = list(step[d.name])
                j = rng.integers(len(bits))
                bits[j] = 1 - bits[j]
                step[d.name] = tuple(bits)
            else:
                step[d.name] = d.values[rng.integers(d.num_choices)]
            try:
                candidate = space.validate(
                    space_lib.Architecture(_complete(space, step, arch.depth, rng), arch.depth)
                )
            except space_lib.ArchitectureError:
                continue  # e.g. a flag on a source that the change made inactive
            values = dict(candidate.values)
            out = hp_space.architecture_to_values(space, candidate, self._fixed)
            if not self._duplicate(out):
                return out
        if not warn:
            return None
        warnings.warn(
            "NASRLOracle: no untried architecture found near the controller's samples; "
            "the space looks exhausted. Stopping."
        )
        return None

    def score_trial(self, trial):
        """Scores a completed trial and feeds its reward to REINFORCE.

        Non-finite scores become NaN, which Keras Tuner treats as an invalid
        trial: never a reward, never the best, and counted as a failure.
        """
        super().score_trial(trial)
        if trial.score is None or not math.isfinite(trial.score):
            trial.score = float("nan")
            return
        self._feed(trial)

    def _feed(self, trial):
        if trial.trial_id in self._rewarded:
            return
        learner = self._ensure_learner()
        space = learner.controller.space
        try:
            arch = hp_space.values_to_architecture(space, trial.hyperparameters.values)
        except space_lib.ArchitectureError as e:
            warnings.warn(f"Trial {trial.trial_id} is not a point of the search space ({e}); "
                          "its score is not used as a reward.")
            return
        reward = self._reward_of(trial)
        if not math.isfinite(reward):
            return
        self._rewarded.add(trial.trial_id)
        self._rewarded_order.append(trial.trial_id)
        self._known_rewards[self._compute_values_hash(
            hp_space.architecture_to_values(space, arch, self._fixed))] = reward
        if trial.trial_id in self._behaviour:
            log_q = self._behaviour.pop(trial.trial_id)
            on_policy = log_q is not None or not self.reinforce_config.needs_log_q
        else:
            # Not proposed by this oracle's policy (e.g. a trial made by hand).
            log_q, on_policy = None, not self.reinforce_config.needs_log_q
        self._learn(arch, reward, log_q, on_policy=on_policy)

    def _reward_of(self, trial) -> float:
        if callable(self.reward):
            return float(self.reward(trial))
        score = float(trial.score)
        if self.reward == "identity":
            return score if self.objective.direction == "max" else -score
        if self.reward == "ptb":
            return rewards_lib.ptb_reward(score)
        # The paper's CIFAR-10 reward needs every epoch's accuracy, in epoch order;
        # Keras Tuner's score is the best epoch only.
        history = sorted(trial.metrics.get_history(self.objective.name), key=lambda o: o.step)
        values = [float(np.mean(obs.value)) for obs in history]
        return rewards_lib.cifar10_reward(values or [score])

    # -- state -----------------------------------------------------------------------

    def _learn(self, arch, reward, log_q=None, on_policy=True):
        """Feeds the learner and logs the feed, so the controller can be replayed.

        An update's figures go to the summaries (`nas_tf.summaries`). A feed is
        a re-used reward when rewards are re-used and its architecture was fed
        before (then it was trained before: a trained architecture is fed first).
        """
        arch_json = arch.to_json()
        self._feeds.append([arch_json, reward, log_q, on_policy])
        self._note_best(arch_json, reward)
        learner = self._learner
        reused = self.reuse_rewards and arch_json in self._fed_archs
        self._fed_archs.add(arch_json)
        waiting = [a for a, _, _ in learner.pending]
        if learner.add(arch, reward, log_q, on_policy=on_policy):
            m, flags = learner.config.batch_size, self._pending_reused + [reused]
            self._pending_reused = flags[m:]
            self._log_update((waiting + [arch])[:m], flags[:m])
        elif len(learner.pending) > len(waiting):
            self._pending_reused.append(reused)

    def _note_best(self, arch_json, reward):
        """Keeps the best (architecture JSON, reward) fed so far; the first of equals."""
        if self._best is None or reward > self._best[1]:
            self._best = (arch_json, reward)

    def _restore_reuse_marks(self, feeds):
        """The re-use marks of the feeds a checkpoint includes (see `_learn`)."""
        needs_log_q = self.reinforce_config.needs_log_q
        flags = []
        for arch_json, _, log_q, on_policy in feeds:
            if on_policy and (log_q is not None or not needs_log_q):
                flags.append(self.reuse_rewards and arch_json in self._fed_archs)
            self._fed_archs.add(arch_json)
        pending = len(self._learner.pending)
        self._pending_reused = flags[len(flags) - pending:] if pending else []

    def _log_update(self, batch, reused):
        """Writes the update's figures once (a replayed update is not written again)."""
        if not self.write_summaries or getattr(self, "_directory", None) is None:
            return  # Summaries off, or an oracle without a project directory.
        learner = self._learner
        if self._summaries is None:
            logdir = self.summary_dir or os.path.join(self._project_dir, summaries_lib.TENSORBOARD)
            self._summaries = summaries_lib.ControllerSummaries(
                os.path.join(self._project_dir, summaries_lib.CONTROLLER_LOG), logdir
            )
        stats = dict(learner.last_stats, reused_share=float(np.mean(reused)) if reused else 0.0)
        self._summaries.write(learner.num_updates, stats, learner.controller.space, batch)

    def _track_containers(self):
        """Keras Tuner's per-trial dicts and set as journal-tracked containers.

        They grow by one entry a trial; tracked, a save writes that entry
        without comparing or copying the rest (O(1) per trial, not O(n)).
        """
        self._run_times = journal.TrackedDict(self._run_times, default=int)
        self._id_to_hash = journal.TrackedDict(self._id_to_hash, default=lambda: None)
        self._tried_so_far = journal.TrackedSet(self._tried_so_far)
        self._display.trial_start = journal.TrackedDict(self._display.trial_start)
        self._display.trial_number = journal.TrackedDict(self._display.trial_number)

    def _journal_state(self):
        """The state to save, tracked containers by reference (what `save` journals).

        The same keys as Keras Tuner's `Oracle.get_state`, which copies and
        converts its per-trial containers on every call (O(n) a trial).
        """
        display = self._display
        state = {
            "ongoing_trials": {
                tuner_id: trial.trial_id for tuner_id, trial in self.ongoing_trials.items()
            },
            "hyperparameters": self.hyperparameters.get_config(),
            "start_order": self.start_order,
            "end_order": self.end_order,
            "run_times": self._run_times,
            "retry_queue": self._retry_queue,
            "seed": self.seed,
            "seed_state": self._seed_state,
            "tried_so_far": self._tried_so_far,
            "id_to_hash": self._id_to_hash,
            "display": {
                "search_start": display.search_start and display.search_start.isoformat(),
                "trial_start": display.trial_start,  # datetimes: the journal writes ISO strings.
                "trial_number": display.trial_number,
            },
        }
        if self._learner is not None:
            name, feeds = self._checkpoint
            state["nasrl"] = {
                "rng": self._learner.controller.get_rng_state().tolist(),
                "sample_queue": self._sample_queue,
                "num_updates": self._learner.num_updates,
                "checkpoint": name,
                "checkpoint_feeds": feeds,
                "rewarded": self._rewarded_order,
                "known_rewards": self._known_rewards,
                "behaviour": self._behaviour,
                "feeds": self._feeds,
            }
        return state

    def get_state(self):
        """The state as plain JSON values (a copy; `save` journals it without copying)."""
        return json.loads(journal.dumps(self._journal_state()))

    def _check_consecutive_failures(self):
        """Keras Tuner's stop after `max_consecutive_failed_trials`, from the end of the log.

        Keras Tuner re-counts over every ended trial (O(n) a trial); only the
        streak at the end can be new, so counting back to the last success
        finds the same.
        """
        streak, last = 0, None
        for trial_id in reversed(self.end_order):
            trial = self.trials[trial_id]
            if trial.status != trial_module.TrialStatus.FAILED:
                break
            streak, last = streak + 1, last or trial
            if streak == self.max_consecutive_failed_trials:
                raise RuntimeError(
                    "Number of consecutive failures exceeded the limit "
                    f"of {self.max_consecutive_failed_trials}.\n" + (last.message or "")
                )

    def set_state(self, state):
        super().set_state(state)
        self._track_containers()
        # Keras Tuner saves oracle.json inside `end_trial` before it forgets the
        # trial as ongoing, so a reload would re-run the last finished trial;
        # its own trial.json already says it is done.
        self.ongoing_trials = {
            tuner_id: trial
            for tuner_id, trial in self.ongoing_trials.items()
            if trial.status == trial_module.TrialStatus.RUNNING
        }
        self._learner = None
        self._reset_memory()
        nasrl = state.get("nasrl")
        if nasrl is None:
            return
        # The journal leaves out a log list that was still empty when "nasrl"
        # first appeared (a chief saves once before its controller exists).
        self._rewarded_order = list(nasrl.get("rewarded", []))
        self._rewarded = set(self._rewarded_order)
        self._known_rewards = journal.TrackedDict(nasrl["known_rewards"])
        self._behaviour = journal.TrackedDict(nasrl.get("behaviour", {}))
        feeds = [list(f) for f in nasrl.get("feeds", [])]
        name, done = nasrl["checkpoint"], nasrl["checkpoint_feeds"]
        learner = self._ensure_learner()
        if name is not None:
            path = os.path.join(self._project_dir, name)
            try:
                with np.load(path) as f:
                    arrays = {k: f[k] for k in f.files}
                learner.set_state(json.loads(str(arrays.pop("learner_state"))), arrays)
                self._checkpoint_updates = learner.num_updates
                self._checkpoint_trials = len(self.start_order)
            except (OSError, ValueError, KeyError, EOFError) as e:
                warnings.warn(
                    f"Controller checkpoint {path} unreadable ({e}); rebuilding the controller "
                    f"by replaying all {len(feeds)} rewards it was fed."
                )
                learner, name, done = self._fresh_learner(), None, 0
        self._checkpoint = (name, done)
        # The checkpoint holds the learner after `done` feeds; the same feeds
        # after it give the same updates, so the controller is exactly restored.
        self._feeds = feeds[:done]
        for arch_json, reward, _, _ in self._feeds:
            self._note_best(arch_json, reward)
        self._restore_reuse_marks(self._feeds)
        self._replay(feeds[done:])
        if learner.num_updates != nasrl["num_updates"]:
            warnings.warn(
                f"Replaying the feed log gave {learner.num_updates} controller updates where "
                f"{nasrl['num_updates']} were saved (the search space grew mid-search?)."
            )
        learner.controller.set_rng_state(nasrl["rng"])
        queue = nasrl.get("sample_queue")
        if queue is not None:
            self._sample_queue = dict(queue)
        self._remove_stale_checkpoints(name)
        # A kill after a trial's end was saved in its trial.json but before the
        # oracle's own save: finish what end_trial did, in trial order.
        for trial_id in sorted(self.trials):
            trial = self.trials[trial_id]
            if trial.status == trial_module.TrialStatus.RUNNING or trial_id in self.end_order:
                continue
            self.end_order.append(trial_id)
            if trial.status == trial_module.TrialStatus.COMPLETED:
                self._feed(trial)

    def _fresh_learner(self):
        self._learner = None
        return self._ensure_learner()

    def _reset_memory(self):
        # The current policy's queue of samples (`_samples`): its key, generator
        # state, size and next index are saved; the samples are redrawn after a reload.
        self._sample_queue = {"key": None, "rng": None, "size": 0, "next": 0}
        self._queued = None
        self._rewarded, self._rewarded_order = set(), []
        self._known_rewards, self._behaviour = journal.TrackedDict(), journal.TrackedDict()
        self._feeds = []
        self._best = None  # (architecture JSON, reward) of the best feed (`_note_best`).
        # Architectures fed so far; re-use marks of the pending samples (see `_learn`).
        self._fed_archs, self._pending_reused = set(), []
        # (checkpoint file name or None, feeds it includes); None: replay from the seed.
        self._checkpoint, self._checkpoint_updates, self._checkpoint_trials = (None, 0), 0, 0

    def _replay(self, feeds):
        """Feeds the learner again: the same adds in the same order give the same weights."""
        space = self._learner.controller.space
        for arch_json, reward, log_q, on_policy in feeds:
            self._learn(space.architecture_from_json(arch_json), reward, log_q, on_policy)

    def _remove_stale_checkpoints(self, keep):
        """Checkpoints other than `keep`: left by a kill before a state named them."""
        for name in os.listdir(self._project_dir):
            if name.startswith("nasrl_controller_") and name.endswith(".npz") and name != keep:
                os.remove(os.path.join(self._project_dir, name))

    @keras_tuner.synchronized
    def end_trial(self, trial):
        """Keras Tuner's `end_trial`, ignoring a repeat of one already processed.

        A worker resends a request whose connection broke (`nas_tf.distributed`):
        the chief may have ended the trial, saved, and died before answering.
        The chief's own copy of a trial is RUNNING until its end is processed
        (then COMPLETED, FAILED, or INVALID awaiting a retry that makes it
        RUNNING again); ending it again would count it twice. (Without a chief
        the tuner passes that very copy, already marked with its result.)
        """
        known = self.trials.get(trial.trial_id)
        if (known is not None and known is not trial
                and known.status != trial_module.TrialStatus.RUNNING):
            for tuner_id, ongoing in list(self.ongoing_trials.items()):
                if ongoing.trial_id == trial.trial_id:
                    self.ongoing_trials.pop(tuner_id)
            return
        super().end_trial(trial)

    @property
    def _project_dir(self):
        """Keras Tuner's project directory, created if missing.

        Keras Tuner asks TensorFlow's file system whether it exists on every
        access (several times a trial); a local directory is checked by one
        `stat`. The oracle writes its files through the local file system
        (`nas_tf.durable`) either way.
        """
        return _local_directory(os.path.join(str(self._directory), self._project_name))

    def _get_trial_dir(self, trial_id):
        return _local_directory(os.path.join(self._project_dir, f"trial_{trial_id}"))

    def _state_file(self) -> journal.JournaledState:
        path = self._get_oracle_fname()
        if self._journal is None or self._journal.path != path:
            self._journal = journal.JournaledState(
                path,
                unordered=("tried_so_far",),
                appendable=("nasrl/feeds", "nasrl/rewarded", "start_order", "end_order"),
                min_snapshot_bytes=self.snapshot_min_bytes,
            )
        return self._journal

    def _save_trial(self, trial):
        """Writes the trial's file, except for progress reports of a trial already saved running.

        Keras Tuner writes a trial's file when it starts, at every step it
        reports (each epoch, through the tuner's callback) and when it ends.
        In one process, what a resume needs of a running trial is its start
        (it is retried from scratch: its values and that it ran); its reports
        until it ends live in memory. So a running trial whose file already
        says so is not written again until its status changes (one durable
        write a trial instead of one per reported step). A chief keeps
        writing them: its workers outlive a restart of the chief and end
        their trials afterwards, and Keras Tuner scores a trial from the
        reports the chief holds, not from the worker's copy.
        """
        running = trial.status == trial_module.TrialStatus.RUNNING
        if (running and trial.trial_id in self._running_on_disk
                and not dist_utils.is_chief_oracle()):
            return
        durable.atomic_write_text(
            os.path.join(self._get_trial_dir(trial.trial_id), "trial.json"),
            json.dumps(trial.get_state()),
        )
        if running:
            self._running_on_disk.add(trial.trial_id)
        else:
            self._running_on_disk.discard(trial.trial_id)

    def save(self):
        """Saves the state; every `checkpoint_every` updates, a controller checkpoint first.

        The state names the last checkpoint and logs every feed since, so a
        resumed search replays at most `checkpoint_every` updates. The new
        checkpoint is written before the state that names it and the old one
        removed last, so a kill between any two writes leaves a state whose
        checkpoint exists.
        """
        learner = self._learner
        old = self._checkpoint[0]
        if (learner is not None and self._updates_since_checkpoint() >= self.checkpoint_every
                and len(self.start_order) - self._checkpoint_trials >= self.checkpoint_trials):
            name = _CHECKPOINT.format(learner.num_updates)
            arrays = dict(learner.get_arrays(), learner_state=np.array(json.dumps(learner.get_state())))
            durable.atomic_write(
                os.path.join(self._project_dir, name), lambda f: np.savez(f, **arrays)
            )
            durable.fault_point("oracle_save_checkpoint")
            self._checkpoint = (name, len(self._feeds))
            self._checkpoint_updates = learner.num_updates
            self._checkpoint_trials = len(self.start_order)
        self._state_file().save(self._journal_state())
        durable.fault_point("oracle_save_state")
        if old is not None and old != self._checkpoint[0]:
            stale = os.path.join(self._project_dir, old)
            if os.path.exists(stale):
                os.remove(stale)

    def _updates_since_checkpoint(self):
        if self._checkpoint[0] is None:
            return self._learner.num_updates
        return self._learner.num_updates - self._checkpoint_updates

    def reload(self):
        """Loads the trials and the journaled state (Keras Tuner's reload, made durable)."""
        for fname in glob.glob(os.path.join(self._project_dir, "trial_*", "trial.json")):
            try:
                trial = trial_module.Trial.load(fname)
            except (ValueError, KeyError, OSError) as e:
                raise journal.CorruptStateError(
                    f"Trial file {fname} is unreadable ({e}); trial files are written "
                    "atomically, so it was damaged outside nas_tf. Remove its trial folder "
                    "to re-run that trial, or start afresh with --overwrite."
                ) from e
            self.trials[trial.trial_id] = trial
            if trial.status == trial_module.TrialStatus.RUNNING:
                self._running_on_disk.add(trial.trial_id)
        state = self._state_file().load()
        if state is None:
            raise journal.CorruptStateError(
                f"{self._get_oracle_fname()} is missing although the project exists; "
                "start afresh with --overwrite."
            )
        self.set_state(state)
        if dist_utils.is_chief_oracle():
            # A restarted chief: its workers may still run these trials (they
            # resend their requests once it is back), or, restarted with the
            # same id, get theirs back from `create_trial`; queued for retry,
            # another worker would train them again. Until each such worker
            # has been told to stop, the chief must not exit.
            self.tuner_ids.update(self.ongoing_trials)
            return
        for _, trial in self.ongoing_trials.items():
            self._retry_queue.append(trial.trial_id)
        self.ongoing_trials = {}


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
        `max_resamples`, `mutate_best`, `preset`) and `keras_tuner.Tuner` options (`directory`,
        `project_name`, `overwrite`, ...).
    """

    _ORACLE_ARGS = (
        "space",
        "controller_config",
        "reinforce_config",
        "reward",
        "depth_schedule",
        "reuse_rewards",
        "max_resamples",
        "mutate_best",
        "preset",
    )

    def __init__(
        self,
        hypermodel=None,
        objective=None,
        max_trials=10,
        seed=None,
        hyperparameters=None,
        tune_new_entries=True,
        allow_new_entries=True,
        max_retries_per_trial=0,
        max_consecutive_failed_trials=3,
        chief_timeout=None,
        **kwargs,
    ):
        oracle_kwargs = {k: kwargs.pop(k) for k in self._ORACLE_ARGS if k in kwargs}
        oracle = NASRLOracle(
            objective=objective,
            max_trials=max_trials,
            seed=seed,
            hyperparameters=hyperparameters,
            tune_new_entries=tune_new_entries,
            allow_new_entries=allow_new_entries,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
            **oracle_kwargs,
        )
        super().__init__(oracle, hypermodel, **kwargs)
        if self._is_worker():  # Keras Tuner made `self.oracle` a proxy of the chief's.
            distributed.make_patient(self.oracle, chief_timeout)
