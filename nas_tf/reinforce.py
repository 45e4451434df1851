"""REINFORCE for the controller (Zoph & Le 2017, sec. 3.2).

The gradient of the expected reward is estimated from a batch of m sampled
architectures as

    (1/m) sum_k sum_t grad log P(a_t | a_(t-1:1)) (R_k - b),

with b an exponential moving average of earlier rewards. `Reinforce` keeps the
rewards that have arrived and applies an update as soon as m are pending, in
whatever order they came: asynchronous workers may finish out of order, as in
the paper's distributed setup.
"""

import dataclasses
import math
from typing import Callable, Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf

from nas_tf import controller as controller_lib
from nas_tf import space as space_lib


@dataclasses.dataclass(frozen=True)
class ReinforceConfig:
    """REINFORCE hyperparameters.

    Attributes:
      learning_rate: Adam learning rate (0.0006 for CIFAR-10, sec. 4.1; the
        Penn Treebank search uses 0.0005, sec. 4.2). The paper's rate suits
        its 12,800-child searches; in a search of a few hundred trials it
        leaves the policy near uniform, and 0.01-0.05 (with the controller's
        `tanh_constant` around 2.5) is what learns (docs/nasbench201.md).
      batch_size: m, the number of rewards per update. The paper's replicas
        each train 8 children at once before a gradient (sec. 3.2).
      baseline_decay: decay of the EMA baseline; the paper does not give it.
        0.95 averages over about the last 20 rewards: slow enough to make a
        stable reference, fast enough to follow a controller that improves
        within a few hundred trials (ENAS uses 0.999 over far longer searches).
      clip_norm: global gradient-norm clipping (None: off); not in the paper,
        a guard against rare huge advantages.
      entropy_weight: weight of an entropy bonus added to the objective (0:
        off, as in the paper).
      adam_beta_1, adam_beta_2, adam_epsilon: Adam's constants (Keras
        defaults; the paper gives none).
    """

    learning_rate: float = 0.0006
    batch_size: int = 8
    baseline_decay: float = 0.95
    clip_norm: Optional[float] = 5.0
    entropy_weight: float = 0.0
    adam_beta_1: float = 0.9
    adam_beta_2: float = 0.999
    adam_epsilon: float = 1e-7

    def __post_init__(self):
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}.")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must be in [0, 1), got {self.baseline_decay}.")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be positive or None, got {self.clip_norm}.")
        if self.entropy_weight < 0:
            raise ValueError(f"entropy_weight must be >= 0, got {self.entropy_weight}.")


# -- rewards -----------------------------------------------------------------


def identity_reward(value: float) -> float:
    """The objective value itself."""
    return float(value)


def cifar10_reward(val_accuracies, last: int = 5, power: float = 3.0) -> float:
    """Zoph & Le 2017, sec. 4.1: max validation accuracy of the last 5 epochs, cubed.

    Args:
      val_accuracies: validation accuracy per epoch, in [0, 1].
      last: how many final epochs to take the maximum over.
      power: the exponent.
    """
    accs = [float(a) for a in val_accuracies]
    if not accs:
        raise ValueError("cifar10_reward needs at least one epoch of accuracy.")
    return max(accs[-last:]) ** power


def ptb_reward(perplexity: float, c: float = 80.0) -> float:
    """Zoph & Le 2017, sec. 4.2: c / (validation perplexity)^2 with c = 80."""
    perplexity = float(perplexity)
    if not perplexity > 0:
        raise ValueError(f"Perplexity must be positive, got {perplexity}.")
    return c / perplexity**2


REWARDS: Dict[str, Callable] = {
    "identity": identity_reward,
    "cifar10": cifar10_reward,
    "ptb": ptb_reward,
}


# -- the learner ---------------------------------------------------------------


class Reinforce:
    """Trains a `Controller` with REINFORCE and an EMA baseline.

    Args:
      controller: the policy to train.
      config: a `ReinforceConfig`.

    Attributes:
      baseline: the current baseline b (None until the first update).
      pending: (architecture, reward) pairs not yet used by an update.
      num_updates: updates applied so far.
    """

    def __init__(self, controller: controller_lib.Controller, config=ReinforceConfig()):
        self.controller = controller
        self.config = config
        self.baseline: Optional[float] = None
        self.pending: List = []
        self.num_updates = 0
        self._make_optimizer()

    def _make_optimizer(self, slots: Optional[Dict[str, np.ndarray]] = None):
        c = self.config
        self._variables = self.controller.trainable_variables
        self.optimizer = keras.optimizers.Adam(
            learning_rate=c.learning_rate,
            beta_1=c.adam_beta_1,
            beta_2=c.adam_beta_2,
            epsilon=c.adam_epsilon,
            name="controller_adam",
        )
        self.optimizer.build(self._variables)
        if slots:
            self._set_slots(slots)
        self._train_fn = self._compile_step()

    def _compile_step(self):
        return tf.function(
            self._train_step,
            jit_compile=self.controller.jit_compile,
            reduce_retracing=True,
            autograph=False,  # No tensor-dependent Python control flow in the step.
        )

    def refresh(self):
        """Call after the controller's space grew: keeps Adam's slots by name."""
        if [v.path for v in self.controller.trainable_variables] != [
            v.path for v in self._variables
        ]:
            self._make_optimizer(self.get_slots())
        else:
            self._train_fn = self._compile_step()

    def _train_step(self, idx, depth, advantage):
        with tf.GradientTape() as tape:
            log_prob, entropy = self.controller.scores(idx, depth)
            loss = -tf.reduce_mean(advantage * log_prob)
            if self.config.entropy_weight:
                loss -= self.config.entropy_weight * tf.reduce_mean(entropy)
        grads = tape.gradient(loss, self._variables)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, self._variables)]
        if self.config.clip_norm is not None:
            grads, _ = tf.clip_by_global_norm(grads, self.config.clip_norm)
        self.optimizer.apply_gradients(zip(grads, self._variables))
        return loss

    def add(self, arch: space_lib.Architecture, reward: float) -> bool:
        """Records one reward; updates the controller once m are pending.

        Non-finite rewards are refused (they would poison the baseline).

        Returns:
          True if an update was applied.
        """
        reward = float(reward)
        if not math.isfinite(reward):
            raise ValueError(f"Reward must be finite, got {reward}.")
        self.pending.append((arch, reward))
        if len(self.pending) < self.config.batch_size:
            return False
        batch = self.pending[: self.config.batch_size]
        self.pending = self.pending[self.config.batch_size :]
        self.update([a for a, _ in batch], [r for _, r in batch])
        return True

    def update(self, archs, rewards) -> float:
        """One REINFORCE step on a batch; returns the loss.

        The advantage uses the baseline from before this batch; the baseline then
        absorbs the batch's rewards in order. The first batch's baseline is its
        own mean reward (a zero baseline would make the first advantages all
        positive and push the policy towards whatever was sampled first).
        """
        rewards = np.asarray(rewards, np.float32)
        if self.baseline is None:
            self.baseline = float(np.mean(rewards))
        advantage = rewards - np.float32(self.baseline)
        idx, depth = self.controller.encode(archs)
        loss = self._train_fn(tf.constant(idx), tf.constant(depth), tf.constant(advantage))
        decay = self.config.baseline_decay
        for r in rewards:
            self.baseline = decay * self.baseline + (1.0 - decay) * float(r)
        self.num_updates += 1
        return float(loss)

    # -- state -------------------------------------------------------------------

    def get_slots(self) -> Dict[str, np.ndarray]:
        return {v.path: np.asarray(v.numpy()) for v in self.optimizer.variables}

    def _set_slots(self, slots: Dict[str, np.ndarray]):
        for v in self.optimizer.variables:
            if v.path in slots and tuple(v.shape) == tuple(np.shape(slots[v.path])):
                v.assign(slots[v.path])

    def get_state(self) -> dict:
        """JSON-safe scalars and lists; arrays come from `get_arrays`."""
        return {
            "baseline": self.baseline,
            "num_updates": self.num_updates,
            "pending": [[a.to_json(), r] for a, r in self.pending],
        }

    def get_arrays(self) -> Dict[str, np.ndarray]:
        """Controller weights, Adam slots and the sampling RNG, by name."""
        arrays = {"weights/" + k: v for k, v in self.controller.get_weights().items()}
        arrays.update({"adam/" + k: v for k, v in self.get_slots().items()})
        arrays["rng"] = self.controller.get_rng_state()
        return arrays

    def set_state(self, state: dict, arrays: Dict[str, np.ndarray]):
        space = self.controller.space
        self.baseline = state["baseline"]
        self.num_updates = state["num_updates"]
        self.pending = [(space.architecture_from_json(a), r) for a, r in state["pending"]]
        self.controller.set_weights(
            {k[len("weights/") :]: v for k, v in arrays.items() if k.startswith("weights/")}
        )
        self.controller.set_rng_state(arrays["rng"])
        self._make_optimizer({k[len("adam/") :]: v for k, v in arrays.items() if k.startswith("adam/")})
