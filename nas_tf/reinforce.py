"""Policy-gradient training of the controller (Zoph & Le 2017, sec. 3.2, and beyond).

The paper's estimator, over a batch of m sampled architectures, is

    (1/m) sum_k sum_t grad log P(a_t | a_(t-1:1)) (R_k - b),

with b an exponential moving average of earlier rewards. `Reinforce` keeps the
rewards that have arrived and applies an update as soon as m are pending, in
whatever order they came (asynchronous workers finish out of order, as in the
paper's distributed setup).

Each of the following is a switch of `ReinforceConfig`, off in
`ReinforceConfig.paper()` (docs/search_brain.md has the formulas and
docs/nasbench201.md what each measured):

* `ratio_clip`: every sample carries the log-probability q it had when it was
  drawn; the step maximises PPO's clipped surrogate
  min(rho A, clip(rho, 1 - eps, 1 + eps) A) with rho = pi_theta(a) / q(a)
  (Schulman et al. 2017; NASNet, Zoph et al. 2018). For a sample drawn from
  the current policy rho = 1 and its gradient is the paper's; for a stale one
  (its child trained while the policy moved on) rho corrects for the change.
* `update_epochs`: passes over each batch (PPO; needs `ratio_clip`).
* `advantage`: "baseline" (R - b), "normalized" ((R - b) / std of the batch's
  rewards: the step no longer depends on the reward's scale), or "rank"
  (centred ranks in the batch).
* `risk_seeking`: keep only the batch's top share eps, with the batch's
  (1 - eps)-quantile as the baseline (Petersen et al., ICLR 2021): it
  optimises the best architectures found rather than the mean.
* `topk_size`, `topk_weight`: priority queue training (Abolafia et al. 2018):
  the K best distinct architectures seen so far, and a maximum-likelihood term
  lambda * mean_k log pi(a_k) over them.
"""

import dataclasses
import json
import math
import threading
import warnings
from typing import Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf

from nas_tf import controller as controller_lib
from nas_tf import durable
from nas_tf import reinforce_step
from nas_tf import rewards as rewards_lib
from nas_tf import space as space_lib

# Re-exported for compatibility: the rewards live in `nas_tf.rewards`.
identity_reward = rewards_lib.identity_reward
cifar10_reward = rewards_lib.cifar10_reward
ptb_reward = rewards_lib.ptb_reward
REWARDS = rewards_lib.REWARDS

ADVANTAGES = ("baseline", "normalized", "rank")


@dataclasses.dataclass(frozen=True)
class ReinforceConfig:
    """Policy-gradient hyperparameters.

    The defaults are what measured best at the budgets Keras Tuner users give
    (tens to hundreds of trials; docs/nasbench201.md). `ReinforceConfig.paper()`
    is Zoph & Le's method where the paper specifies it (docs/search_brain.md
    lists our choices where it does not).

    Attributes:
      learning_rate: Adam learning rate. The paper's 0.0006 (sec. 4.1; 0.0005
        for Penn Treebank, sec. 4.2) suits its 12,800-child searches; in a
        search of a few hundred trials it leaves the policy near uniform.
      batch_size: m, the number of rewards per update. The paper's replicas
        each train 8 children before a gradient (sec. 3.2).
      baseline_decay: decay of the EMA baseline; the paper does not give it.
        0.95 averages over about the last 20 rewards.
      advantage: "baseline", "normalized" or "rank" (module docstring).
      risk_seeking: None, or the share eps in (0, 1] of each batch kept
        (baseline = the batch's (1 - eps)-quantile); replaces the EMA baseline.
      ratio_clip: None (the paper: every sample is taken as drawn from the
        current policy), or PPO's eps for the importance ratio pi / q.
      update_epochs: optimisation passes over each batch (1 in the paper).
      topk_size: K, the number of best distinct architectures kept for the
        maximum-likelihood term (0: off).
      topk_weight: lambda, the weight of that term.
      clip_norm: global gradient-norm clipping (None: off, as in the paper).
      entropy_weight: weight of an entropy bonus (0: off, as in the paper).
      adam_beta_1, adam_beta_2, adam_epsilon: Adam's constants (Keras
        defaults; the paper gives none).
    """

    learning_rate: float = 0.03
    batch_size: int = 8
    baseline_decay: float = 0.95
    advantage: str = "rank"
    risk_seeking: Optional[float] = None
    ratio_clip: Optional[float] = 0.2
    update_epochs: int = 1
    topk_size: int = 5
    topk_weight: float = 2.0
    clip_norm: Optional[float] = 5.0
    entropy_weight: float = 0.0
    adam_beta_1: float = 0.9
    adam_beta_2: float = 0.999
    adam_epsilon: float = 1e-7

    def __post_init__(self):
        def bad(message):
            raise ValueError(f"ReinforceConfig: {message}")

        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            bad(f"learning_rate must be positive, got {self.learning_rate}.")
        if self.batch_size < 1:
            bad(f"batch_size must be at least 1, got {self.batch_size}.")
        if not 0.0 <= self.baseline_decay < 1.0:
            bad(f"baseline_decay must be in [0, 1), got {self.baseline_decay}.")
        if self.advantage not in ADVANTAGES:
            bad(f"advantage must be one of {ADVANTAGES}, got {self.advantage!r}.")
        if self.risk_seeking is not None and not 0.0 < self.risk_seeking <= 1.0:
            bad(f"risk_seeking must be in (0, 1] or None, got {self.risk_seeking}.")
        if self.ratio_clip is not None and not self.ratio_clip > 0:
            bad(f"ratio_clip must be positive or None, got {self.ratio_clip}.")
        if self.update_epochs < 1:
            bad(f"update_epochs must be at least 1, got {self.update_epochs}.")
        if self.update_epochs > 1 and self.ratio_clip is None:
            bad("update_epochs > 1 needs ratio_clip: repeated plain REINFORCE steps on one "
                "batch are unbounded.")
        if self.topk_size < 0 or self.topk_weight < 0:
            bad("topk_size and topk_weight must be >= 0.")
        if self.topk_weight > 0 and self.topk_size == 0:
            bad("topk_weight > 0 needs topk_size > 0.")
        if self.clip_norm is not None and not self.clip_norm > 0:
            bad(f"clip_norm must be positive or None, got {self.clip_norm}.")
        if self.entropy_weight < 0:
            bad(f"entropy_weight must be >= 0, got {self.entropy_weight}.")

    @classmethod
    def paper(cls, learning_rate: float = 0.0006, **overrides) -> "ReinforceConfig":
        """Zoph & Le 2017 where specified: plain REINFORCE, EMA baseline, Adam, m = 8.

        Adam 0.0006 (sec. 4.1; pass 0.0005 for the Penn Treebank search,
        sec. 4.2), one pass per batch, no importance ratio, no clipping, no
        entropy bonus, no top-K term. The baseline decay (0.95) is not given
        in the paper.
        """
        values = dict(
            learning_rate=learning_rate,
            batch_size=8,
            baseline_decay=0.95,
            advantage="baseline",
            risk_seeking=None,
            ratio_clip=None,
            update_epochs=1,
            topk_size=0,
            topk_weight=0.0,
            clip_norm=None,
            entropy_weight=0.0,
        )
        values.update(overrides)
        return cls(**values)

    @property
    def needs_log_q(self) -> bool:
        """Whether samples must carry the log-probability they were drawn with."""
        return self.ratio_clip is not None


# -- the learner ---------------------------------------------------------------


def advantages(rewards, baseline, config: ReinforceConfig):
    """Per-sample (advantage, kept) for one batch, as the step uses them.

    Args:
      rewards: float array [n].
      baseline: the EMA baseline before this batch.
      config: the `ReinforceConfig`.

    Returns:
      (advantage [n] float64, kept [n] bool): samples not kept (risk-seeking)
      take no part in the policy-gradient term.
    """
    r = np.asarray(rewards, np.float64)
    kept = np.ones(r.shape, bool)
    b = float(baseline)
    if config.risk_seeking is not None:
        b = float(np.quantile(r, 1.0 - config.risk_seeking))
        kept = r >= b
    if config.advantage == "rank":
        ranks = np.empty(len(r))
        ranks[np.argsort(r, kind="stable")] = np.arange(len(r))
        adv = ranks / max(len(r) - 1, 1) - 0.5
        if config.risk_seeking is not None:
            adv = adv - (np.mean(adv[kept]) if kept.any() else 0.0)
        return np.where(kept, adv, 0.0), kept
    adv = r - b
    if config.advantage == "normalized":
        adv = adv / (np.std(r) + 1e-8)
    return np.where(kept, adv, 0.0), kept


# The traced step, by the names it had here.
_loss = reinforce_step.batch_loss
_gradients = reinforce_step.batch_gradients
_apply_adam = reinforce_step.apply_adam
AdamState = reinforce_step.AdamState
_shared_step = reinforce_step.shared_step


class Reinforce:
    """Trains a `Controller` by policy gradient.

    Args:
      controller: the policy to train.
      config: a `ReinforceConfig`.

    Attributes:
      baseline: the EMA baseline b (None until the first update).
      pending: (architecture, reward, log_q) triples not yet used by an update
        (log_q None when the sample's drawing probability is not needed).
      topk: the best distinct (architecture, reward) pairs seen, best first.
      num_updates: updates applied so far.
      adam: Adam's state (`AdamState`; its step counter counts gradient
        steps, `update_epochs` per update).
      last_stats: the last update's figures (`nas_tf.summaries` logs them):
        loss and grad_norm (before clipping) of its first step, entropy (mean
        over the batch's samples), baseline (the one its advantages used),
        mean_reward, mean_advantage, learning_rate, batch (its size).
    """

    def __init__(self, controller: controller_lib.Controller, config=None):
        self.controller = controller
        self.config = config or ReinforceConfig()
        self.baseline: Optional[float] = None
        self.pending: List = []
        self.topk: List = []
        self.num_updates = 0
        self.last_stats: Dict[str, float] = {}
        self._warm_up_thread: Optional[threading.Thread] = None
        self._make_optimizer()

    def _make_optimizer(self, slots: Optional[Dict[str, np.ndarray]] = None):
        self.wait_for_warm_up()
        c = self.config
        # The layout the slots follow: `refresh` reads them after the controller's changed.
        self._slot_layout = layout = self.controller.weight_layout
        zeros = np.zeros(layout.size, np.float32)
        self.adam = AdamState(
            iterations=keras.Variable(0, dtype="int64", name="iteration", trainable=False),
            learning_rate=keras.Variable(c.learning_rate, dtype="float32", name="learning_rate",
                                         trainable=False),
            m=keras.Variable(zeros, name="momentum", trainable=False),
            v=keras.Variable(zeros, name="velocity", trainable=False),
        )
        if slots:
            self._set_slots(slots)
        a = self.adam
        # Adam's state as the shared step takes it (TensorFlow variables).
        self._adam = dict(m=[a.m.value], v=[a.v.value], iterations=a.iterations.value,
                          lr=a.learning_rate.value)
        self._train_fn = self._compile_step()

    def _compile_step(self):
        step = _shared_step(self.controller, self.config)
        return lambda *batch: step(self.controller.weights, self._adam, *batch)

    def warm_up(self, background: bool = True) -> None:
        """Traces and instantiates the training step before the first update needs it.

        Tracing the step (and TensorFlow's graph optimisation on its first
        call) is most of the controller's start-up; a search's first update
        comes only after m children have trained. Run in a background thread,
        it overlaps with them, and the first architectures are proposed as
        soon as the sampling graph is ready. The warm-up calls the step on a
        batch of the usual shape whose weights are all zero: gradients are
        exactly zero, so Adam's fresh (zero) moments and the weights stay as
        they are, and the step counter is put back. A learner that has
        updated already is warm. Every method that uses the step or the
        optimizer waits for the warm-up first.
        """
        if self._warm_up_thread is not None or int(self.adam.iterations.numpy()) != 0:
            return

        def run():
            width = self.controller.signature()[0].shape[1]
            rows = self._padded_rows(1)
            depth = max(self.controller.space.max_depth, 1) if self.controller.space.uses_depth else 0
            tensors = [tf.zeros([rows, width], tf.int32), tf.fill([rows], depth)]
            tensors.append(tf.zeros([5, rows], tf.float32))  # The five columns of `_batch`.
            try:
                self._train_fn(*tensors)
                self.adam.iterations.assign_sub(1)
            except Exception as e:  # The first update traces again, and reports.
                warnings.warn(f"Controller warm-up failed ({e!r}); the first update will trace.")

        if background:
            # Not a daemon: an exiting interpreter waits for it rather than
            # stopping TensorFlow mid-trace.
            self._warm_up_thread = threading.Thread(target=run, name="nas_tf-warm-up")
            self._warm_up_thread.start()
        else:
            run()

    def wait_for_warm_up(self):
        """Returns once a background `warm_up` has finished (at once if none runs)."""
        thread = getattr(self, "_warm_up_thread", None)
        if thread is not None:
            thread.join()
            self._warm_up_thread = None

    def _padded_rows(self, rows: int) -> int:
        """Rows of a padded batch: m + K, or a multiple of it for a larger batch."""
        size = self.config.batch_size + (self.config.topk_size if self.config.topk_weight > 0 else 0)
        return -(-rows // size) * size

    def refresh(self):
        """Call after the controller's space changed: keeps Adam's slots by name.

        Buffered samples that are not architectures of the new space (they
        lack a decision that appeared) can no longer be scored: they leave the
        pending batch and the top-K buffer.
        """
        space = self.controller.space

        def valid(arch):
            try:
                space.validate(arch)
                return True
            except space_lib.ArchitectureError:
                return False

        self.wait_for_warm_up()
        self.pending = [item for item in self.pending if valid(item[0])]
        self.topk = [item for item in self.topk if valid(item[0])]
        if self.controller.weight_layout.names != self._slot_layout.names:
            self._make_optimizer(self.get_slots())
        else:
            self._train_fn = self._compile_step()

    def loss_and_gradients(self, archs, rewards, log_q=None):
        """(loss, clipped gradients, gradient norm before clipping) of a batch, without a step.

        Uses the current baseline and top-K buffer, like `update`; for tests
        and diagnostics.
        """
        batch, _ = self._batch(archs, rewards, log_q)
        loss, grads, norm, _ = _gradients(self.controller.policy, self.config,
                                          self.controller.weights, batch)
        named = self._slot_layout.split(tf.convert_to_tensor(grads[0]).numpy())
        return float(loss), list(named.values()), float(norm)

    # -- feeding -------------------------------------------------------------------

    def add(self, arch: space_lib.Architecture, reward: float, log_q: Optional[float] = None,
            on_policy: bool = True) -> bool:
        """Records one reward; updates the controller once m are pending.

        Args:
          arch: the architecture.
          reward: its reward (finite).
          log_q: the log-probability the architecture had under the policy
            that drew it; needed when `config.ratio_clip` is set.
          on_policy: False for an architecture the policy did not draw (e.g.
            one made by mutation): it joins the top-K buffer, never the
            policy-gradient batch, whose estimator assumes samples of the
            policy. With `ratio_clip` set, a sample without `log_q` is
            treated the same way.

        Returns:
          True if an update was applied.

        Raises:
          ValueError: for a non-finite reward (it would poison the baseline).
        """
        reward = float(reward)
        if not math.isfinite(reward):
            raise ValueError(f"Reward must be finite, got {reward}.")
        self._offer_topk(arch, reward)
        if not on_policy or (self.config.needs_log_q and log_q is None):
            return False
        self.pending.append((arch, reward, None if log_q is None else float(log_q)))
        if len(self.pending) < self.config.batch_size:
            return False
        batch = self.pending[: self.config.batch_size]
        self.pending = self.pending[self.config.batch_size :]
        self.update([a for a, _, _ in batch], [r for _, r, _ in batch], [q for _, _, q in batch])
        return True

    def _offer_topk(self, arch, reward):
        k = self.config.topk_size
        if k <= 0:
            return
        key = arch.to_json()
        if any(a.to_json() == key for a, _ in self.topk):
            return
        self.topk.append((arch, reward))
        self.topk.sort(key=lambda item: -item[1])
        del self.topk[k:]

    # -- the step ------------------------------------------------------------------

    def update(self, archs, rewards, log_q=None) -> float:
        """One update (update_epochs gradient steps) on a batch; returns the first loss.

        The advantage uses the baseline from before this batch; the baseline then
        absorbs the batch's rewards in order. The first batch's baseline is its
        own mean reward (a zero baseline would make the first advantages all
        positive and push the policy towards whatever was sampled first).
        """
        self.wait_for_warm_up()
        c = self.config
        rewards = np.asarray(rewards, np.float64)
        if self.baseline is None:
            self.baseline = float(np.mean(rewards))
        tensors, adv = self._batch(archs, rewards, log_q)
        first = None
        for _ in range(c.update_epochs):
            loss, norm, entropy = self._train_fn(*tensors)
            if first is None:  # Entropy: of the batch's own rows (not top-K, not padding).
                first = (float(loss), float(norm), float(np.mean(entropy.numpy()[: len(archs)])))
        durable.fault_point("controller_update")
        self.last_stats = dict(
            loss=first[0], grad_norm=first[1], entropy=first[2], baseline=float(self.baseline),
            mean_reward=float(np.mean(rewards)), mean_advantage=float(np.mean(adv)),
            learning_rate=float(c.learning_rate), batch=len(archs),
        )
        decay = c.baseline_decay
        for r in rewards:
            self.baseline = decay * self.baseline + (1.0 - decay) * float(r)
        self.num_updates += 1
        return first[0]

    def _batch(self, archs, rewards, log_q):
        """The step's input tensors (see `reinforce_step.batch_loss`) and the batch's advantages."""
        c = self.config
        n = len(archs)
        rewards = np.asarray(rewards, np.float64)
        baseline = np.mean(rewards) if self.baseline is None else self.baseline
        adv, kept = advantages(rewards, baseline, c)
        if log_q is None or any(q is None for q in log_q):
            if c.needs_log_q:
                raise ValueError("ratio_clip needs the log-probability of every sample.")
            log_q = np.zeros(n)
        n_kept = max(int(kept.sum()), 1)
        columns = [
            np.asarray(log_q, np.float64),
            adv,
            np.where(kept, 1.0 / n_kept, 0.0),  # pg_weight
            np.zeros(n),  # mle_weight
            np.full(n, c.entropy_weight / n),  # ent_weight
        ]
        rows = list(archs)
        if c.topk_weight > 0 and self.topk:
            k = len(self.topk)
            rows += [a for a, _ in self.topk]
            columns = [np.concatenate([x, np.zeros(k)]) for x in columns]
            columns[3][n:] = c.topk_weight / k
        # Padding rows: copies of the first with zero weights (they change nothing).
        pad = self._padded_rows(len(rows)) - len(rows)
        columns = [np.concatenate([x, np.zeros(pad)]) for x in columns]
        idx, depth = self.controller.encode(rows)
        idx = np.concatenate([idx, np.repeat(idx[:1], pad, axis=0)])
        depth = np.concatenate([depth, np.repeat(depth[:1], pad)])
        tensors = [tf.constant(idx), tf.constant(depth),
                   tf.constant(np.asarray(columns, np.float32))]
        return tensors, adv

    # -- state -------------------------------------------------------------------

    def get_slots(self) -> Dict[str, np.ndarray]:
        """Adam's state by the names `keras.optimizers.Adam` gives it."""
        self.wait_for_warm_up()
        a, layout = self.adam, self._slot_layout
        slots = {"controller_adam/iteration": np.asarray(a.iterations.numpy()),
                 "controller_adam/learning_rate": np.asarray(a.learning_rate.numpy())}
        m, v = layout.split(a.m.numpy()), layout.split(a.v.numpy())
        for name in layout.names:
            slot = "controller_adam/" + name.replace("/", "_")
            slots[slot + "_momentum"], slots[slot + "_velocity"] = m[name], v[name]
        return slots

    def _set_slots(self, slots: Dict[str, np.ndarray]):
        """Restores `get_slots()`; entries of other names or shapes are left as they are."""
        self.wait_for_warm_up()
        a, layout = self.adam, self._slot_layout
        # The learning rate stays the config's: a resume allowed to change it uses the new one.
        if "controller_adam/iteration" in slots:
            a.iterations.assign(slots["controller_adam/iteration"])
        for suffix, var in (("_momentum", a.m), ("_velocity", a.v)):
            found = {}
            for name in layout.names:
                value = slots.get("controller_adam/" + name.replace("/", "_") + suffix)
                if value is not None and tuple(np.shape(value)) == layout.shapes[name]:
                    found[name] = value
            var.assign(layout.join(found, var.numpy().copy()))

    def get_state(self) -> dict:
        """JSON-safe scalars and lists; arrays come from `get_arrays`."""
        return {
            "baseline": self.baseline,
            "num_updates": self.num_updates,
            "pending": [[json.loads(a.to_json()), r, q] for a, r, q in self.pending],
            "topk": [[json.loads(a.to_json()), r] for a, r in self.topk],
        }

    def get_arrays(self) -> Dict[str, np.ndarray]:
        """Controller weights, Adam slots and the sampling RNG, by name."""
        arrays = {"weights/" + k: v for k, v in self.controller.get_weights().items()}
        arrays.update({"adam/" + k: v for k, v in self.get_slots().items()})
        arrays["rng"] = self.controller.get_rng_state()
        return arrays

    def set_state(self, state: dict, arrays: Optional[Dict[str, np.ndarray]] = None):
        """Restores `get_state()` (and, if given, `get_arrays()`)."""
        space = self.controller.space

        def arch(a):
            return space.architecture_from_json(a if isinstance(a, str) else json.dumps(a))

        self.baseline = state["baseline"]
        self.num_updates = state["num_updates"]
        self.pending = [
            (arch(item[0]), item[1], item[2] if len(item) > 2 else None)
            for item in state["pending"]
        ]
        self.topk = [(arch(a), r) for a, r in state.get("topk", [])]
        if arrays is None:
            return
        self.controller.set_weights(
            {k[len("weights/") :]: v for k, v in arrays.items() if k.startswith("weights/")}
        )
        self.controller.set_rng_state(arrays["rng"])
        self._make_optimizer({k[len("adam/") :]: v for k, v in arrays.items() if k.startswith("adam/")})
