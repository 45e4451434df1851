"""What a supernet is: one weight set per choice, one trace, only the sampled path run.

A supernet (ENAS, Pham et al. 2018) holds a weight set for every choice of
every decision of a `nas_tf.space.Space`. An architecture enters its
computation as an int32 *code* tensor (`encode`), never as a Python value, so
the `tf.function`s that train and evaluate it are traced once for all
architectures (`tf.function` traces once per distinct Python argument;
tensorflow/tensorflow#24726). Each choice is selected with `tf.switch_case`
(a `Case` op: only the taken branch runs, forwards and backwards) or a
gather over stacked weights, so a step costs what the sampled network costs.

Two failures of earlier ports are checked by tests of every supernet:

* computing every branch (ENAS's macro code builds all six branches outside
  its `tf.case`): with `instrument=True` a supernet counts the runs of each
  branch in `branch_runs`, and only the sampled branches may move;
* late binding (`lambda: y` in a loop returns the last `y` for every
  branch): each choice of each decision must change the output.

The contract (a subclass of `Supernet`, a `tf.Module`, so
`tf.train.Checkpoint` saves its variables):

* `space`: the space it covers; `code_length`: the code's length;
* `encode(arch) -> np.ndarray` (int32, `[code_length]`);
* `input_signature`: `(x spec, y spec)` of one batch, batch dimension None;
* `train_loss(x, y, code) -> scalar`: the mean training loss of the
  sampled network (weight decay included), in training mode;
* `eval_sums(x, y, code) -> (sum, count)`: float32 sums over the batch of
  the validation figure's terms (correct predictions, or token
  log-losses) and how many terms there were;
* `score_name`, `score(sum, count) -> float` (accuracy, or perplexity),
  `higher_is_better`, and `reward(score) -> float` (higher is better).
"""

import abc
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from nas_tf import space as space_lib


class Supernet(tf.Module, abc.ABC):
    """Base class: branch instrumentation and the contract (see the module docstring).

    Args:
      space: the space whose architectures are the sub-networks.
      instrument: count the runs of every branch in `branch_runs` (tests).
      name: the module's name.
    """

    score_name = "accuracy"
    higher_is_better = True

    def __init__(self, space: space_lib.Space, instrument: bool = False, name=None):
        super().__init__(name=name)
        self.space = space
        self.instrument = bool(instrument)
        self.branch_names: List[str] = []  # Branch id -> "decision=choice" (instrumented).
        self.branch_runs = None

    # -- the contract -----------------------------------------------------------------

    @property
    @abc.abstractmethod
    def code_length(self) -> int:
        """Length of `encode`'s vector."""

    @abc.abstractmethod
    def encode(self, arch: space_lib.Architecture) -> np.ndarray:
        """The int32 code of `arch` (`[code_length]`)."""

    @property
    @abc.abstractmethod
    def input_signature(self) -> Tuple[tf.TensorSpec, tf.TensorSpec]:
        """(x, y) specs of one batch, batch dimension None."""

    @abc.abstractmethod
    def train_loss(self, x, y, code) -> tf.Tensor:
        """Mean training loss of the sampled network on (x, y), weight decay included."""

    @abc.abstractmethod
    def eval_sums(self, x, y, code) -> Tuple[tf.Tensor, tf.Tensor]:
        """(sum of the validation figure's terms, their count), float32."""

    def score(self, total: float, count: float) -> float:
        """The validation figure from `eval_sums` totals (default: accuracy)."""
        return float(total) / max(float(count), 1.0)

    def reward(self, score: float) -> float:
        """The controller's reward for a validation figure (default: the figure)."""
        return float(score)

    # -- instrumentation --------------------------------------------------------------

    def declare_branches(self, names: Sequence[str]) -> None:
        """Names every branch (call once, before the first trace, when instrumented)."""
        self.branch_names = list(names)
        if self.instrument:
            self.branch_runs = tf.Variable(
                tf.zeros([len(self.branch_names)], tf.int64), trainable=False, name="branch_runs"
            )

    def branch_id(self, name: str) -> int:
        return self.branch_names.index(name)

    def mark(self, branch: int) -> None:
        """Counts one run of `branch` (inside the branch's function; no-op unless instrumented)."""
        if self.branch_runs is not None:
            self.branch_runs.assign_add(tf.one_hot(branch, len(self.branch_names), dtype=tf.int64))

    def runs(self) -> Dict[str, int]:
        """Branch name -> runs so far (instrumented supernets only)."""
        if self.branch_runs is None:
            raise ValueError("Build the supernet with instrument=True to count branch runs.")
        return dict(zip(self.branch_names, self.branch_runs.numpy().tolist()))


class ImageClassifier(Supernet):
    """A supernet of image classifiers: its loss and accuracy from `logits_and_l2`.

    Subclasses define `logits_and_l2(x, code) -> (logits, L2 of the kernels
    the sampled network used)` and `weight_decay`.
    """

    @abc.abstractmethod
    def logits_and_l2(self, x, code) -> Tuple[tf.Tensor, tf.Tensor]:
        """The sampled network's logits and the L2 of the weights it used."""

    def train_loss(self, x, y, code):
        """Mean cross-entropy + weight_decay * sum of squares of the used kernels."""
        logits, l2 = self.logits_and_l2(x, code)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        return loss + self.weight_decay * l2

    def eval_sums(self, x, y, code):
        """(correct predictions, batch size), float32."""
        logits, _ = self.logits_and_l2(x, code)
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y), tf.float32)
        return tf.reduce_sum(correct), tf.cast(tf.size(y), tf.float32)


def switch(index, branches: Sequence[Callable[[], tf.Tensor]], name=None):
    """`tf.switch_case` over `branches`, each bound to its own arguments.

    Build branches with `functools.partial` (or a factory), never with a
    closure over a loop variable: that is the late-binding bug that made
    every ENAS branch return the last one.
    """
    if len(branches) == 1:
        return branches[0]()
    return tf.switch_case(tf.cast(index, tf.int32), list(branches), name=name)


def choice_codes(space: space_lib.Space, arch: space_lib.Architecture,
                 names: Sequence[str]) -> List[int]:
    """The choice index of each named categorical decision of `arch` (0 when inactive)."""
    out = []
    for name in names:
        value = arch.values.get(name)
        out.append(0 if value is None else space[name].index(value))
    return out
