"""Datasets for the children, in one registry: names, kinds and loading.

Every entry point and library function that takes a dataset name reads it
here (`REGISTRY`, `names`, `load`): the flag enums of `nas_tf.train` and
`nas_tf.train_lm`, `nas_tf.search`, the launcher. Nothing downloads during a
search: "digits" and "text" / "text_char" ship with nas_tf; "cifar10" and
"ptb" / "ptb_char" read a prepared TensorFlow Datasets directory
(`DataNotPreparedError` otherwise, saying how to prepare it).

User data enters through `from_arrays` / `from_datasets`.
"""

import dataclasses
from typing import Callable, Optional, Tuple, Union

from nas_tf.data import ptb, text_corpus
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
from nas_tf.data.ptb import LMData

IMAGE, TEXT = "image", "text"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One named dataset.

    Attributes:
      name: the name flags and configs use.
      kind: IMAGE (an `ImageData` for the convolutional spaces) or TEXT (an
        `LMData` for the recurrent cell).
      embedded: ships with nas_tf (no `data_dir`, no download).
      description: one line for help texts.
      loader: (data_dir, seed) -> the data.
    """

    name: str
    kind: str
    embedded: bool
    description: str
    loader: Callable[[Optional[str], int], Union[ImageData, LMData]]


REGISTRY = {
    d.name: d
    for d in (
        Dataset("digits", IMAGE, True, "8x8 handwritten digits (embedded)",
                lambda data_dir, seed: load_embedded("digits", seed=seed)),
        Dataset("cifar10", IMAGE, False, "CIFAR-10 (a prepared TFDS directory)",
                lambda data_dir, seed: load_cifar10(data_dir, seed=seed)),
        Dataset("text", TEXT, True, "an embedded English corpus, words",
                lambda data_dir, seed: text_corpus.load("word")),
        Dataset("text_char", TEXT, True, "the embedded corpus, characters",
                lambda data_dir, seed: text_corpus.load("char")),
        Dataset("ptb", TEXT, False, "Penn Treebank, words (prepared with nas_tf.prepare_ptb)",
                lambda data_dir, seed: ptb.load("word", data_dir)),
        Dataset("ptb_char", TEXT, False, "Penn Treebank, characters (prepared with nas_tf.prepare_ptb)",
                lambda data_dir, seed: ptb.load("char", data_dir)),
    )
}  # fmt: skip

# Image datasets (`load` of an image name returns an `ImageData`).
DATASETS = tuple(sorted(n for n, d in REGISTRY.items() if d.kind == IMAGE))


def names(kind: Optional[str] = None) -> Tuple[str, ...]:
    """Registered names in registry order; only those of `kind` (IMAGE or TEXT) if given."""
    return tuple(n for n, d in REGISTRY.items() if kind is None or d.kind == kind)


def get(name: str) -> Dataset:
    """The registry entry of `name`.

    Raises:
      ValueError: for an unknown name, listing the known ones.
    """
    if name not in REGISTRY:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {list(REGISTRY)}.")
    return REGISTRY[name]


def load(name: str, data_dir: Optional[str] = None, seed: int = 0) -> Union[ImageData, LMData]:
    """A dataset by name: `ImageData` split train / validation / test, or `LMData`.

    Args:
      name: one of `names()`.
      data_dir: TFDS data directory (cifar10, ptb, ptb_char).
      seed: seed of the random validation split (images).

    Raises:
      ValueError: for an unknown name.
      DataNotPreparedError: if cifar10 or Penn Treebank is not prepared under `data_dir`.
    """
    return get(name).loader(data_dir, seed)


__all__ = [
    "DATASETS",
    "DataNotPreparedError",
    "Dataset",
    "EMBEDDED",
    "IMAGE",
    "ImageData",
    "LMData",
    "REGISTRY",
    "TEXT",
    "augment",
    "channel_stats",
    "from_arrays",
    "from_datasets",
    "get",
    "load",
    "load_cifar10",
    "load_digits",
    "load_embedded",
    "names",
    "split_train_valid",
]
