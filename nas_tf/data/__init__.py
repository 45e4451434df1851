"""Datasets for the children: CIFAR-10 from TFDS, embedded offline data.

`load(name)` picks one by name: "digits" (embedded, offline, the default for
quick runs) or "cifar10" (a prepared TFDS directory; never downloads).
User data enters through `from_arrays` / `from_datasets`.
"""

from typing import Optional

from nas_tf.data.cifar10 import (
    DataNotPreparedError,
    ImageData,
    augment,
    channel_stats,
    from_arrays,
    from_datasets,
    load_cifar10,
    split_train_valid,
)
from nas_tf.data.embedded import EMBEDDED, load_digits, load_embedded

DATASETS = ("cifar10",) + tuple(sorted(EMBEDDED))


def load(name: str, data_dir: Optional[str] = None, seed: int = 0) -> ImageData:
    """A dataset by name, split train / validation / test.

    Args:
      name: one of `DATASETS`.
      data_dir: TFDS data directory (cifar10 only).
      seed: seed of the random validation split.

    Raises:
      ValueError: for an unknown name.
      DataNotPreparedError: if cifar10 is not prepared under `data_dir`.
    """
    if name == "cifar10":
        return load_cifar10(data_dir, seed=seed)
    if name in EMBEDDED:
        return load_embedded(name, seed=seed)
    raise ValueError(f"Unknown dataset {name!r}; choose one of {list(DATASETS)}.")


__all__ = [
    "DATASETS",
    "DataNotPreparedError",
    "EMBEDDED",
    "ImageData",
    "augment",
    "channel_stats",
    "from_arrays",
    "from_datasets",
    "load",
    "load_cifar10",
    "load_digits",
    "load_embedded",
    "split_train_valid",
]
