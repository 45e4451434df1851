"""The paper's search: a controller RNN proposes, REINFORCE learns from the rewards.

`ControllerSearch` is a `SearchAlgorithm` (propose / feedback / state /
restore) around a `Controller` and its `Reinforce` learner, with the
library's additions to Zoph & Le 2017 (docs/search_brain.md):

* re-used rewards: a sample that was already evaluated is a free
  policy-gradient sample (its known reward), and the controller draws again,
  up to `max_resamples` times, before walking from the last sample to an
  untried neighbour;
* `mutate_best`: a share of the proposals are mutations of the best
  architecture so far (they feed the top-K buffer only, never the
  policy-gradient batch), for the first `mutate_until` proposals;
* `frozen`: the ablation of the learning itself (the policy stays at its
  initial weights; `UniformMutationSearch` replaces it by uniform draws).

Every feed is logged; `restore` replays the log after a learner checkpoint
(or from the seed when there is none), which gives the same weights, so a
restored search proposes exactly what an uninterrupted one would.
"""

import math
import warnings
from typing import Callable, List, Optional

import numpy as np

from nas_tf import controller as controller_lib
from nas_tf import reinforce as reinforce_lib
from nas_tf import space as space_lib
from nas_tf.algorithms import base


def default_reinforce_config(**overrides) -> reinforce_lib.ReinforceConfig:
    """The `default` preset's learner: `ReinforceConfig()` with 3 passes per batch.

    Several clipped passes over each batch (PPO's epochs, Schulman et al.
    2017; NASNet's controller, Zoph et al. 2018) take more from the few
    batches a search of tens to hundreds of trials has, so that the
    controller has learned by the time the mutation rule stops
    (`mutate_until`). `overrides` replace fields: a `reinforce_config` given
    to a search replaces the preset's whole, so build it with this function
    (e.g. `default_reinforce_config(learning_rate=0.05)`) to keep the passes.
    """
    return reinforce_lib.ReinforceConfig(**dict(dict(update_epochs=3), **overrides))


# What `preset=` starts from; explicit arguments override it.
PRESETS = {
    # Measured best at tens to hundreds of trials (docs/nasbench201.md): the
    # mutation rule helps only in the first trials, then the controller alone
    # proposes, so that what the search finds late is what it learned.
    "default": dict(
        controller_config=controller_lib.ControllerConfig,
        reinforce_config=default_reinforce_config,
        reuse_rewards=True,
        max_resamples=2,
        mutate_best=0.5,
        mutate_until=40,
    ),
    # Zoph & Le 2017 where it is specified: plain REINFORCE with Adam 0.0006
    # and an EMA baseline, every sampled architecture trained (duplicates
    # too), nothing mutated, no clipping.
    "paper": dict(
        controller_config=controller_lib.ControllerConfig.paper,
        reinforce_config=reinforce_lib.ReinforceConfig.paper,
        reuse_rewards=False,
        max_resamples=0,
        mutate_best=0.0,
        mutate_until=math.inf,
    ),
    # ENAS's controller (Pham et al. 2018, macro search: melodyguan/enas
    # scripts): 1 x 64 LSTM, weights U(-0.1, 0.1), logits 1.5 tanh; Adam 1e-3
    # on 20 samples per step, EMA baseline 0.99, entropy bonus 1e-4 (ENAS adds
    # it to the reward; here it is the loss's bonus). Its skip-density penalty
    # is not implemented. For weight-sharing searches (docs/weight_sharing.md).
    "enas": dict(
        controller_config=lambda: controller_lib.ControllerConfig(
            units=64, num_layers=1, init_range=0.1, tanh_constant=1.5),
        reinforce_config=lambda: reinforce_lib.ReinforceConfig(
            learning_rate=1e-3, batch_size=20, baseline_decay=0.99, advantage="baseline",
            ratio_clip=None, update_epochs=1, topk_size=0, topk_weight=0.0, clip_norm=None,
            entropy_weight=1e-4),
        reuse_rewards=False,
        max_resamples=0,
        mutate_best=0.0,
        mutate_until=math.inf,
    ),
}


def resolve(preset: str, controller_config=None, reinforce_config=None, reuse_rewards=None,
            max_resamples=None, mutate_best=None, mutate_until=None) -> dict:
    """The preset's settings with the given ones (not None) over them, checked."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; use one of {sorted(PRESETS)}.")
    chosen = PRESETS[preset]
    out = dict(
        controller_config=controller_config or chosen["controller_config"](),
        reinforce_config=reinforce_config or chosen["reinforce_config"](),
        reuse_rewards=chosen["reuse_rewards"] if reuse_rewards is None else bool(reuse_rewards),
        max_resamples=chosen["max_resamples"] if max_resamples is None else int(max_resamples),
        mutate_best=chosen["mutate_best"] if mutate_best is None else float(mutate_best),
        mutate_until=chosen["mutate_until"] if mutate_until is None else float(mutate_until),
    )
    if out["max_resamples"] < 0:
        raise ValueError(f"max_resamples must be >= 0, got {out['max_resamples']}.")
    if not 0.0 <= out["mutate_best"] <= 1.0:
        raise ValueError(f"mutate_best must be in [0, 1], got {out['mutate_best']}.")
    if not out["mutate_until"] >= 0:
        raise ValueError(f"mutate_until must be >= 0 (inf: no end), got {out['mutate_until']}.")
    return out


class ControllerSearch(base.SearchAlgorithm):
    """Zoph & Le's controller and REINFORCE as a plain search algorithm.

    Args:
      space: the space to search (may grow later: `set_space`).
      seed: seeds the controller's weights and sampling and every mutation.
      controller_config, reinforce_config, reuse_rewards, max_resamples,
        mutate_best: as for `NASRLOracle` (None: the preset's).
      mutate_until: the mutation rule applies to proposals before this
        count only (math.inf: throughout; None: the preset's). After it the
        controller alone proposes, so what the search finds late is what
        its learning found.
      preset: "default" or "paper" (`PRESETS`).
      frozen: an ablation: the learner is never fed, so the policy keeps
        its initial weights exactly (every other rule unchanged). Comparing
        a search with its frozen twin on the same seed measures what the
        learning adds.
      depth_schedule: callable from the number of proposals so far to the
        depth of the next architecture (e.g. a `DepthCurriculum`); default:
        the deepest the space allows.
      tried: as for `SearchAlgorithm`.
      on_update: called after each controller update with the update's
        figures (the learner's `last_stats` plus `reused_share`) and its
        batch of architectures (for summaries).

    Attributes:
      learner: the `Reinforce` learner (its `controller` is the policy).
      num_proposed: architectures proposed so far.
      best: (architecture JSON, reward) of the best feed, the first of equals.
    """

    def __init__(self, space: space_lib.Space, seed: int = 0, *, controller_config=None,
                 reinforce_config=None, reuse_rewards=None, max_resamples=None,
                 mutate_best=None, mutate_until=None, preset: str = "default",
                 frozen: bool = False,
                 depth_schedule: Optional[Callable[[int], int]] = None, tried=None,
                 on_update: Optional[Callable[[dict, List], None]] = None):
        super().__init__(space, seed, tried)
        settings = resolve(preset, controller_config, reinforce_config, reuse_rewards,
                           max_resamples, mutate_best, mutate_until)
        self.controller_config = settings["controller_config"]
        self.reinforce_config = settings["reinforce_config"]
        self.reuse_rewards = settings["reuse_rewards"]
        self.max_resamples = settings["max_resamples"]
        self.mutate_best = settings["mutate_best"]
        self.mutate_until = settings["mutate_until"]
        self.frozen = bool(frozen)
        self.depth_schedule = depth_schedule
        self.on_update = on_update
        self.learner = self._new_learner(space)
        # Part of the sample queue's key: changes when the space grows. A driver
        # with its own count of entries (Keras Tuner's) may set it.
        self.space_version = len(space.decisions)
        self._reset()

    def _new_learner(self, space):
        controller = controller_lib.Controller(space, self.controller_config, seed=self.seed)
        learner = reinforce_lib.Reinforce(controller, self.reinforce_config)
        if space.decisions and not self.frozen:
            learner.warm_up(background=True)  # Traces while the first children train.
        return learner

    def _reset(self):
        self.num_proposed = 0
        self.best = None
        # The current policy's queue of samples (`_samples`): its key, generator
        # state, size and next index are saved; the samples are redrawn after a restore.
        self._sample_queue = {"key": None, "rng": None, "size": 0, "next": 0}
        self._queued = None
        # Proposal key -> log-probability under the policy that drew it (None:
        # not drawn by the policy, e.g. a mutation), until its feedback.
        self._behaviour = {}
        self._known_rewards = {}  # Architecture JSON -> reward of its evaluation.
        self.feeds = []  # Every [arch JSON, reward, log q, on policy] fed, in order.
        # Architectures fed so far; re-use marks of the pending samples (`_learn`).
        self._fed_archs, self._pending_reused = set(), []

    @property
    def controller(self) -> controller_lib.Controller:
        return self.learner.controller

    @property
    def num_updates(self) -> int:
        return self.learner.num_updates

    def set_space(self, space: space_lib.Space) -> None:
        """Continues in a space that grew (new decisions get fresh weights)."""
        self.space = space
        self.space_version = len(space.decisions)
        self.learner.wait_for_warm_up()  # It traces the current space.
        self.controller.set_space(space)
        self.learner.refresh()

    def depth(self) -> Optional[int]:
        """The depth of the next proposal (None for a space without depth)."""
        if not self.space.uses_depth:
            return None
        if self.depth_schedule is None:
            return self.space.max_depth
        return min(int(self.depth_schedule(self.num_proposed)), self.space.max_depth)

    # -- proposing --------------------------------------------------------------------

    def sample(self, n):
        """`n` independent draws of the current policy (the controller's generator, saved)."""
        archs, _ = self.controller.sample_with_log_prob(int(n), depth=self.depth())
        return list(archs)

    def forget(self):
        """Drops the feed log and the tried set; `checkpoint()` right after needs no replay."""
        super().forget()
        self.feeds, self._known_rewards, self._fed_archs = [], {}, set()

    def propose(self, key):
        arch = self._propose(key)
        if arch is not None:
            self.num_proposed += 1
            self._mark(arch)
        return arch

    def _propose(self, key):
        depth = self.depth()
        best = self._mutated_best(depth)
        if best is not None:
            self._behaviour[key] = None  # Not drawn by the policy: top-K only.
            return best
        arch = None
        for arch, log_q in self._samples(depth):
            if not self.reuse_rewards or not self.is_tried(arch):
                self._behaviour[key] = log_q
                return arch
            known = self._known_rewards.get(arch.to_json())
            if known is not None:
                # Already evaluated: a sample of the current policy whose reward
                # is known, so an ordinary policy-gradient sample, for free.
                self._learn(arch, known, log_q)
        # The policy keeps proposing what was tried: explore next to its last sample.
        arch = self._mutate_until_new(arch)
        if arch is not None:
            self._behaviour[key] = None
        return arch

    def _samples(self, depth):
        """Up to `max_resamples + 1` (architecture, log q) samples of the current policy.

        Samples come from a queue drawn m at a time in one batched call and
        valid until the policy changes (the next update, another curriculum
        depth, or a grown space). Every queued sample is an independent draw
        of the policy current when it is used, so the queue changes the cost
        of sampling, not what is sampled; it is saved, so a restored search
        draws the same. Stopping at the first new architecture is a stopping
        time, so feeding every sample drawn up to it keeps the estimator's
        direction unbiased (Wald's identity; docs/search_brain.md).
        """
        left = self.max_resamples + 1 if self.reuse_rewards else 1
        controller = self.controller
        while left > 0:
            key = [self.learner.num_updates, depth, self.space_version]
            queue = self._sample_queue
            if queue["key"] != key or queue["next"] >= queue["size"]:
                # One search uses about m samples per policy (m feeds end it).
                size = self.reinforce_config.batch_size
                self._sample_queue = queue = {"key": key, "rng": controller.get_rng_state().tolist(),
                                              "size": size, "next": 0}
                archs, log_q = controller.sample_with_log_prob(size, depth=depth)
                self._queued = list(zip(archs, log_q.tolist()))
            elif self._queued is None:
                self._queued = self._redraw_queue(queue, depth)
            i = queue["next"]
            queue["next"] = i + 1
            left -= 1
            yield self._queued[i]

    def _redraw_queue(self, queue, depth):
        """A restored queue's samples, drawn again from its saved generator state."""
        controller = self.controller
        after = controller.get_rng_state()
        controller.set_rng_state(queue["rng"])
        archs, log_q = controller.sample_with_log_prob(queue["size"], depth=depth)
        controller.set_rng_state(after)
        return list(zip(archs, log_q.tolist()))

    def _mutated_best(self, depth):
        """A mutation of the best architecture so far, for `mutate_best` of the proposals.

        None (draw from the policy) for the other proposals, before m have
        been made or any has a reward, from the `mutate_until`-th on, and
        when the best architecture is of
        another depth than the current one or no longer an architecture of
        the space (decisions that appeared since get random values). The
        draws come from the seed and the proposal count, so a restored
        search makes the same choices.
        """
        if self.mutate_best <= 0 or self.best is None:
            return None
        if not self.reinforce_config.batch_size <= self.num_proposed < self.mutate_until:
            return None
        rng = np.random.default_rng([self.seed, self.num_proposed, 1])
        if rng.random() >= self.mutate_best:
            return None
        space = self.space
        try:
            best = space_lib.Architecture.from_json(self.best[0])
            best = space.validate(space_lib.Architecture(
                base.complete(space, best.values, best.depth, rng), best.depth))
        except (space_lib.ArchitectureError, KeyError, ValueError):
            return None
        if space.uses_depth and best.depth != depth:
            return None
        return self._mutate_until_new(best, warn=False)

    def _mutate_until_new(self, arch, warn=True):
        """A random walk from `arch`, one decision at a time, to an untried architecture.

        Each step changes one active decision (or one anchor bit); decisions
        that a change makes active get random values and those it makes
        inactive are dropped, so every step is valid. The random stream comes
        from the seed and the proposal count. Returns None (with a warning
        if `warn`) when no untried architecture turned up: the space looks
        exhausted.
        """
        space = self.space
        rng = np.random.default_rng([self.seed, self.num_proposed])
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
                    space_lib.Architecture(base.complete(space, step, arch.depth, rng), arch.depth)
                )
            except space_lib.ArchitectureError:
                continue  # e.g. a flag on a source that the change made inactive
            values = dict(candidate.values)
            if not self.is_tried(candidate):
                return candidate
        if warn:
            warnings.warn(
                "No untried architecture found near the controller's samples; "
                "the space looks exhausted. Stopping."
            )
        return None

    # -- learning ---------------------------------------------------------------------

    def feedback(self, key, architecture, reward):
        """Feeds a finite reward; `key` of a proposal ties it to its drawing probability."""
        self._mark(architecture)
        self._known_rewards[architecture.to_json()] = float(reward)
        needs_log_q = self.reinforce_config.needs_log_q
        if key in self._behaviour:
            log_q = self._behaviour.pop(key)
            on_policy = log_q is not None or not needs_log_q
        else:
            log_q, on_policy = None, not needs_log_q  # Not proposed by this policy.
        self._learn(architecture, reward, log_q, on_policy=on_policy)

    def _learn(self, arch, reward, log_q=None, on_policy=True):
        """Feeds the learner and logs the feed, so the controller can be replayed.

        A feed is a re-used reward when rewards are re-used and its
        architecture was fed before.
        """
        arch_json = arch.to_json()
        self.feeds.append([arch_json, reward, log_q, on_policy])
        self._note_best(arch_json, reward)
        if self.frozen:
            return  # The ablation: the policy never changes.
        learner = self.learner
        reused = self.reuse_rewards and arch_json in self._fed_archs
        self._fed_archs.add(arch_json)
        waiting = [a for a, _, _ in learner.pending]
        if learner.add(arch, reward, log_q, on_policy=on_policy):
            m, flags = learner.config.batch_size, self._pending_reused + [reused]
            self._pending_reused = flags[m:]
            if self.on_update is not None:
                reused = flags[:m]
                stats = dict(learner.last_stats,
                             reused_share=float(np.mean(reused)) if reused else 0.0)
                self.on_update(stats, (waiting + [arch])[:m])
        elif len(learner.pending) > len(waiting):
            self._pending_reused.append(reused)

    def _note_best(self, arch_json, reward):
        if self.best is None or reward > self.best[1]:
            self.best = (arch_json, reward)

    # -- state ------------------------------------------------------------------------

    def checkpoint(self):
        """(the learner's arrays and state, number of feeds they include)."""
        learner = self.learner
        return dict(learner.get_arrays(), learner_state=learner.get_state()), len(self.feeds)

    def state(self) -> dict:
        """The saved state; the feed log by reference (the journal appends to it)."""
        return {
            "rng": self.controller.get_rng_state().tolist(),
            "sample_queue": self._sample_queue,
            "num_updates": self.learner.num_updates,
            "num_proposed": self.num_proposed,
            "behaviour": self._behaviour,
            "feeds": self.feeds,
        }

    def restore(self, state: dict, checkpoint=None) -> bool:
        """Continues from `state()`, on an object built with the same arguments.

        Args:
          state: a `state()`.
          checkpoint: a `checkpoint()` taken at or before `state`, or None:
            the learner is rebuilt by replaying the whole feed log from the
            seed (the same adds in the same order give the same weights).

        Returns:
          Whether `checkpoint` was used (False: the whole log was replayed).
        """
        self._reset()
        self.num_proposed = int(state.get("num_proposed", 0))
        self._behaviour = dict(state.get("behaviour", {}))
        feeds = [list(f) for f in state.get("feeds", [])]
        done, used = 0, checkpoint is not None
        if used:
            arrays, done = checkpoint
            arrays = dict(arrays)
            try:
                self.learner.set_state(arrays.pop("learner_state"), arrays)
            except (ValueError, KeyError) as e:
                warnings.warn(f"Controller checkpoint unusable ({e}); rebuilding the controller "
                              f"by replaying all {len(feeds)} rewards it was fed.")
                self.learner, done, used = self._new_learner(self.space), 0, False
        self.feeds = feeds[:done]
        for arch_json, reward, _, _ in self.feeds:
            self._note_best(arch_json, reward)
            self._seen.add(arch_json)
            self._known_rewards[arch_json] = reward
        self._restore_reuse_marks(self.feeds)
        for arch_json, reward, log_q, on_policy in feeds[done:]:
            arch = self._mark(self.space.architecture_from_json(arch_json))
            self._known_rewards[arch_json] = reward
            self._learn(arch, reward, log_q, on_policy)
        if self.learner.num_updates != state["num_updates"]:
            warnings.warn(
                f"Replaying the feed log gave {self.learner.num_updates} controller updates "
                f"where {state['num_updates']} were saved (the search space grew mid-search?)."
            )
        self.controller.set_rng_state(state["rng"])
        if state.get("sample_queue") is not None:
            self._sample_queue = dict(state["sample_queue"])
        return used

    def _restore_reuse_marks(self, feeds):
        """The re-use marks of the feeds a checkpoint includes (see `_learn`)."""
        needs_log_q = self.reinforce_config.needs_log_q
        flags = []
        for arch_json, _, log_q, on_policy in feeds:
            if on_policy and (log_q is not None or not needs_log_q):
                flags.append(self.reuse_rewards and arch_json in self._fed_archs)
            self._fed_archs.add(arch_json)
        pending = len(self.learner.pending)
        self._pending_reused = flags[len(flags) - pending:] if pending else []


class UniformMutationSearch(ControllerSearch):
    """The mutation rule without a controller: an ablation of `ControllerSearch`.

    The proposals that `ControllerSearch` draws from its policy are uniform
    draws here (every active decision uniform, as `RandomSearch`); the rest
    (the `mutate_best` rule and its schedule, re-draws of tried
    architectures, the walk to an untried neighbour) is the same code with
    the same seeds. Nothing is learned (`frozen`).

    Args:
      as for `ControllerSearch` (`frozen` is always True).
    """

    def __init__(self, space: space_lib.Space, seed: int = 0, **kwargs):
        kwargs["frozen"] = True
        super().__init__(space, seed, **kwargs)

    def _samples(self, depth):
        """Up to `max_resamples + 1` uniform draws (log q None: nothing learns from them)."""
        left = self.max_resamples + 1 if self.reuse_rewards else 1
        rng = np.random.default_rng([self.seed, self.num_proposed, 2])
        for _ in range(left):
            yield base.random_architecture(self.space, rng, depth), None
