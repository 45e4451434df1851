"""The paper's rewards, in one place.

Children report metrics only (validation accuracy per epoch, perplexity);
the oracle and the tasks turn them into rewards here, so the reward a
controller learns from and the one a search reports are the same function.
"""

import math
from typing import Callable, Dict, Sequence


def identity_reward(value: float) -> float:
    """The objective value itself."""
    return float(value)


def cifar10_reward(val_accuracies: Sequence[float], last: int = 5, power: float = 3.0) -> float:
    """Zoph & Le 2017, sec. 4.1: max validation accuracy of the last 5 epochs, cubed.

    Args:
      val_accuracies: validation accuracy per epoch, in [0, 1], in epoch order.
      last: how many final epochs to take the maximum over.
      power: the exponent.

    Raises:
      ValueError: for no epochs, or a non-finite accuracy among the last ones.
    """
    accs = [float(a) for a in val_accuracies]
    if not accs:
        raise ValueError("cifar10_reward needs at least one epoch of accuracy.")
    if last < 1:
        raise ValueError(f"last must be >= 1, got {last}.")
    window = accs[-last:]
    if not all(math.isfinite(a) for a in window):
        raise ValueError(f"cifar10_reward: non-finite accuracy in the last epochs {window}.")
    return max(window) ** power


# The reward of a recurrent cell whose loss diverged (NaN or infinite): the
# limit of c / ppl^2 as the perplexity goes to infinity. Given to the
# controller like any other reward (`nas_tf.tasks.CellTask`), it pushes the
# policy away from diverging cells; a failed trial would teach it nothing.
DIVERGED_PTB_REWARD = 0.0


def ptb_reward(perplexity: float, c: float = 80.0) -> float:
    """Zoph & Le 2017, sec. 4.2: c / (validation perplexity)^2 with c = 80.

    A diverged child has no perplexity: its reward is `DIVERGED_PTB_REWARD`,
    the limit of this one as the perplexity goes to infinity.

    Raises:
      ValueError: for a perplexity that is not positive and finite.
    """
    perplexity = float(perplexity)
    if not perplexity > 0 or not math.isfinite(perplexity):
        raise ValueError(f"Perplexity must be positive and finite, got {perplexity}.")
    # Divided twice: a finite perplexity above 1e154 (a child that learnt
    # nothing can reach exp(700)) would overflow when squared; its reward is 0.
    return c / perplexity / perplexity


REWARDS: Dict[str, Callable] = {
    "identity": identity_reward,
    "cifar10": cifar10_reward,
    "ptb": ptb_reward,
}


def trial_reward(trial, reward, objective) -> float:
    """A completed Keras Tuner trial's reward (higher is better).

    Args:
      trial: the trial (its `score`, and its metrics for "cifar10").
      reward: a `REWARDS` name or a callable taking the trial.
      objective: the search's `keras_tuner.Objective`.
    """
    if callable(reward):
        return float(reward(trial))
    score = float(trial.score)
    if reward == "identity":
        return score if objective.direction == "max" else -score
    if reward == "ptb":
        return ptb_reward(score)
    # The paper's CIFAR-10 reward needs every epoch's value in epoch order;
    # Keras Tuner's score is the best epoch only.
    history = sorted(trial.metrics.get_history(objective.name), key=lambda o: o.step)
    return cifar10_reward([float(sum(o.value) / len(o.value)) for o in history] or [score])
