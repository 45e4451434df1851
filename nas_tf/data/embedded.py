"""Real datasets that ship with the install, for offline runs and tests.

`digits`: scikit-learn's handwritten digits (1,797 greyscale 8x8 images, 10
classes, from the UCI optical recognition data set), split at random with a
fixed seed into train / validation / test and fed through the same pipeline
as CIFAR-10 (whitening, pad-and-crop scaled to the image size: 1 pixel for
8x8, as 4 is for 32x32). Flips are off: a mirrored digit is another glyph.
"""

from typing import Callable, Dict

import numpy as np

from nas_tf.data import cifar10

DIGITS_NUM_VALID = 180  # 10 %.
DIGITS_NUM_TEST = 360  # 20 %.


def load_digits(
    num_valid: int = DIGITS_NUM_VALID, num_test: int = DIGITS_NUM_TEST, seed: int = 0
) -> cifar10.ImageData:
    """scikit-learn's 8x8 digits as `ImageData` (train 1,257 / valid 180 / test 360).

    Args:
      num_valid: validation images (the reward).
      num_test: test images, held out first.
      seed: seed of both random splits.
    """
    from sklearn.datasets import load_digits as _sk_load_digits  # Slow import.

    digits = _sk_load_digits()
    x = digits.images.astype(np.float32)[..., None]  # (1797, 8, 8, 1), values 0..16.
    y = digits.target.astype(np.int32)
    x_rest, y_rest, x_test, y_test = cifar10.split_train_valid(x, y, num_test, seed)
    return cifar10.from_arrays(
        x_rest, y_rest, x_test, y_test, num_valid=num_valid, seed=seed + 1,
        num_classes=10, pad=1, flip=False, name="digits",
    )  # fmt: skip


EMBEDDED: Dict[str, Callable[..., cifar10.ImageData]] = {"digits": load_digits}


def load_embedded(name: str, **kwargs) -> cifar10.ImageData:
    """An embedded dataset by name (see `EMBEDDED`).

    Raises:
      ValueError: naming the unknown dataset and the known ones.
    """
    if name not in EMBEDDED:
        raise ValueError(f"Unknown embedded dataset {name!r}; choose one of {sorted(EMBEDDED)}.")
    return EMBEDDED[name](**kwargs)
