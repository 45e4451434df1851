"""Image batches addressed by step: the data position of a shared-weight search is one integer.

A weight-sharing search trains for hours and must resume after a kill where
it stopped, on the same batches. `ImageBatches.train(step)` is therefore a
pure function of (seed, step): epoch e's order is a permutation drawn from
`[seed, e]`, and the pad-and-crop / flip augmentation of step s from
`[seed, s]`. A resumed search asks for the next step and gets what the
uninterrupted one would have got. Images are whitened with the training
split's per-channel statistics, as `nas_tf.data.cifar10.ImageData` does.
"""

from typing import Tuple

import numpy as np


class ImageBatches:
    """Training, validation and test batches of an `ImageData`.

    Args:
      data: a `nas_tf.data.cifar10.ImageData`.
      batch_size: training images per step (the last partial batch of an
        epoch is dropped, so every step has one shape).
      seed: seeds the order and the augmentation.
      valid_batch_size: images per validation batch (default `batch_size`).
    """

    def __init__(self, data, batch_size: int, seed: int = 0, valid_batch_size: int = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        if data.num_train < batch_size:
            raise ValueError(f"{data.name}: {data.num_train} training images, fewer than one "
                             f"batch of {batch_size}.")
        self.data, self.batch_size, self.seed = data, int(batch_size), int(seed)
        self.valid_batch_size = int(valid_batch_size or batch_size)
        mean, std = np.asarray(data.mean, np.float32), np.asarray(data.std, np.float32)
        self._train = ((data.x_train.astype(np.float32) - mean) / std).astype(np.float32)
        self._valid = ((data.x_valid.astype(np.float32) - mean) / std).astype(np.float32)
        self._test = ((data.x_test.astype(np.float32) - mean) / std).astype(np.float32)

    @property
    def steps_per_epoch(self) -> int:
        return self.data.num_train // self.batch_size

    def train(self, step: int) -> Tuple[np.ndarray, np.ndarray]:
        """The augmented batch of training step `step` (0-based)."""
        epoch, k = divmod(int(step), self.steps_per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.data.num_train)
        index = order[k * self.batch_size:(k + 1) * self.batch_size]
        x = self._augment(self._train[index], np.random.default_rng([self.seed, int(step), 7]))
        return x, self.data.y_train[index].astype(np.int32)

    def _augment(self, x, rng):
        pad = self.data.pad
        if pad:
            n, h, w, _ = x.shape
            padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
            dy, dx = rng.integers(0, 2 * pad + 1, n), rng.integers(0, 2 * pad + 1, n)
            x = np.stack([padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
        if self.data.flip:
            flip = rng.random(len(x)) < 0.5
            x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
        return np.ascontiguousarray(x, np.float32)

    def _fixed(self, images, labels, i):
        n = len(images)
        if not n:
            raise ValueError(f"{self.data.name} has no images in this split.")
        count = -(-n // self.valid_batch_size)
        i = int(i) % count
        part = slice(i * self.valid_batch_size, (i + 1) * self.valid_batch_size)
        return images[part], labels[part].astype(np.int32)

    @property
    def num_valid(self) -> int:
        """Validation batches in one pass (the last may be smaller)."""
        return -(-self.data.num_valid // self.valid_batch_size)

    def valid(self, i: int):
        """Validation batch `i` (mod `num_valid`), in a fixed order, not augmented."""
        return self._fixed(self._valid, self.data.y_valid, i)

    @property
    def num_test(self) -> int:
        return -(-self.data.num_test // self.valid_batch_size)

    def test(self, i: int):
        """Test batch `i` (mod `num_test`)."""
        return self._fixed(self._test, self.data.y_test, i)
