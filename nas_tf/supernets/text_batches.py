"""Batches of token windows for a language-model supernet.

Weight-sharing search (Pham et al. 2018) alternates short stretches of
shared-weight training with controller updates, so training batches must be
addressable by a step number and reproducible: `train(step)` draws `batch_size`
windows of `steps` tokens from the training ids, shuffled per epoch by
`numpy.random.default_rng([seed, epoch])`. The windows are disjoint and
stateless (the supernet starts every window from h = c = 0), so their order
can be shuffled. Validation and test batches are fixed: the split cut into
`batch_size` contiguous rows (`nas_tf.data.ptb.batchify`) read `steps` columns
at a time (`bptt_windows`, remainder dropped), so batch i+1 continues batch i's
rows. The method names match `ImageBatches` (train / steps_per_epoch / valid /
num_valid / test / num_test).
"""

from typing import List, Tuple

import numpy as np

from nas_tf.data import ptb

Batch = Tuple[np.ndarray, np.ndarray]


class TextBatches:
    """(x, y) int32 [batch_size, steps] batches of an `LMData`; y is x shifted by one token.

    Args:
      data: the corpus (`nas_tf.data.ptb.LMData`, e.g. `text_corpus.load("word")`).
      batch_size: rows per batch.
      steps: tokens per row (the supernet's T).
      seed: seeds the training windows' order.

    Raises:
      ValueError: if a split is too short for one batch.
    """

    def __init__(self, data: ptb.LMData, batch_size: int, steps: int, seed: int = 0):
        if batch_size < 1 or steps < 1:
            raise ValueError(f"batch_size and steps must be positive, got {batch_size}, {steps}.")
        self.data = data
        self.batch_size = int(batch_size)
        self.steps = int(steps)
        self.seed = int(seed)
        self._train = np.asarray(data.train, np.int32).reshape(-1)
        self._num_windows = (len(self._train) - 1) // self.steps
        self.steps_per_epoch = self._num_windows // self.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"{len(self._train)} training tokens make fewer than {self.batch_size} "
                f"windows of {self.steps} tokens.")
        self._valid = self._fixed(data.valid, "validation")
        self._test = self._fixed(data.test, "test")
        self.num_valid = len(self._valid)
        self.num_test = len(self._test)

    def _fixed(self, ids, split: str) -> List[Batch]:
        try:
            rows = ptb.batchify(ids, self.batch_size)
        except ValueError as e:
            raise ValueError(f"The {split} split is too short: {e}") from None
        out = [(x.copy(), y.copy())
               for x, y in ptb.bptt_windows(rows, self.steps, drop_remainder=True)]
        if not out:
            raise ValueError(
                f"The {split} split ({len(ids)} tokens) has no batch of "
                f"{self.batch_size} x {self.steps} tokens.")
        return out

    def train(self, step: int) -> Batch:
        """Training batch `step`: a function of (seed, step) only."""
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}.")
        epoch, k = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(self._num_windows)
        starts = order[k * self.batch_size:(k + 1) * self.batch_size] * self.steps
        index = starts[:, None] + np.arange(self.steps)[None, :]
        return self._train[index], self._train[index + 1]

    def valid(self, i: int) -> Batch:
        """The i-th fixed validation batch (i taken mod `num_valid`)."""
        return self._valid[int(i) % self.num_valid]

    def test(self, i: int) -> Batch:
        """The i-th fixed test batch (i taken mod `num_test`)."""
        return self._test[int(i) % self.num_test]
