"""CIFAR-10 through TensorFlow Datasets, and the paper's image pipeline.

Zoph & Le 2017, sec. 4.1: 5,000 of the 50,000 training images are held out at
random for validation (the reward); the test set is only for the final model.
Images are whitened, "upsampled then randomly cropped" to 32x32 (here: zero
padding of 4 pixels, then a random 32x32 crop, as in the reproductions) and
randomly flipped left-right.

The pipeline works on any in-memory images (`from_arrays`, `from_datasets`);
`load_cifar10` feeds it from a prepared TFDS directory and never downloads.
"""

import dataclasses
import os
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

# Zoph & Le 2017, sec. 4.1: 45,000 training / 5,000 validation images.
NUM_VALID = 5000
PAD = 4


class DataNotPreparedError(RuntimeError):
    """The dataset is not on disk, and this library does not download it."""


def split_train_valid(x, y, num_valid: int, seed: int = 0):
    """Holds out `num_valid` examples at random (fixed `seed`).

    Returns:
      (x_train, y_train, x_valid, y_valid).

    Raises:
      ValueError: if `num_valid` leaves no training example.
    """
    n = len(x)
    if not 0 <= num_valid < n:
        raise ValueError(f"num_valid must be in [0, {n}) for {n} examples, got {num_valid}.")
    order = np.random.default_rng(seed).permutation(n)
    valid, train = np.sort(order[:num_valid]), np.sort(order[num_valid:])
    return x[train], y[train], x[valid], y[valid]


def channel_stats(x) -> Tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over a batch of NHWC images."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - 1))
    std = x.std(axis=axes)
    return x.mean(axis=axes).astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def augment(image, pad: int = PAD, flip: bool = True, seed=None):
    """Zero-pads by `pad`, crops back at random, and flips left-right at random.

    Args:
      image: one whitened HWC image (zero is the mean after whitening).
      pad: pixels of zero padding on each side before the random crop.
      flip: whether to flip left-right with probability 1/2.
      seed: optional op seed.
    """
    shape = tf.shape(image)
    if pad:
        image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
        image = tf.image.random_crop(image, shape, seed=seed)
    if flip:
        image = tf.image.random_flip_left_right(image, seed=seed)
    return image


def _as_images(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]  # Greyscale without a channel axis.
    if x.ndim != 4:
        raise ValueError(f"{name} must be NHWC (or NHW) images, got shape {x.shape}.")
    return x


def _as_labels(y, n: int, name: str) -> np.ndarray:
    y = np.asarray(y).reshape(-1).astype(np.int32)
    if len(y) != n:
        raise ValueError(f"{name} has {len(y)} labels for {n} images.")
    return y


@dataclasses.dataclass(frozen=True, eq=False)
class ImageData:
    """Train / validation / test images with the paper's preprocessing.

    The arrays are the raw images; whitening (with the train split's
    per-channel statistics) and augmentation happen in the tf.data pipelines.

    Attributes:
      name: the dataset's name.
      x_train, y_train: the training images (NHWC) and int32 labels.
      x_valid, y_valid: the validation split (the reward).
      x_test, y_test: the test split, or empty arrays when there is none.
      num_classes: number of classes.
      mean, std: per-channel statistics of `x_train`.
      pad: padding of the random crop (0: no crop).
      flip: whether training images are flipped left-right at random.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: np.ndarray
    std: np.ndarray
    pad: int = PAD
    flip: bool = True

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_train(self) -> int:
        return len(self.x_train)

    @property
    def num_valid(self) -> int:
        return len(self.x_valid)

    @property
    def num_test(self) -> int:
        return len(self.x_test)

    def _whitened(self, x, y) -> tf.data.Dataset:
        mean, std = tf.constant(self.mean), tf.constant(self.std)
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        ds = ds.map(
            lambda im, lab: ((tf.cast(im, tf.float32) - mean) / std, lab),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        return ds.cache()

    def train_dataset(
        self, batch_size: int, seed: Optional[int] = None, augment_images=True, static=False
    ):
        """Shuffled, augmented training batches (reshuffled every epoch).

        With `static`, every batch has `batch_size` images (the last partial
        batch is dropped; reshuffling shows the dropped images in other
        epochs), so a compiled step keeps one shape (XLA, TPUs); unless there
        are fewer images than one batch.
        """
        ds = self._whitened(self.x_train, self.y_train)
        ds = ds.shuffle(self.num_train, seed=seed, reshuffle_each_iteration=True)
        if augment_images and (self.pad or self.flip):
            pad, flip = self.pad, self.flip
            ds = ds.map(
                lambda im, lab: (augment(im, pad, flip), lab), num_parallel_calls=tf.data.AUTOTUNE
            )
        drop = static and self.num_train >= batch_size
        return ds.batch(batch_size, drop_remainder=drop).prefetch(tf.data.AUTOTUNE)

    def valid_dataset(self, batch_size: int, static=False) -> tf.data.Dataset:
        """Whitened validation batches, in order.

        With `static`, batches are (images, labels, weights) of exactly
        `batch_size`: the last one is padded with zero images of weight 0, so
        weighted metrics are those of the real images and a compiled step
        keeps one shape.
        """
        ds = self._whitened(self.x_valid, self.y_valid)
        if not static:
            return ds.batch(batch_size).prefetch(2)
        pad = -self.num_valid % batch_size
        ds = ds.map(lambda im, lab: (im, lab, tf.constant(1.0)))
        if pad:
            zeros = tf.data.Dataset.from_tensors(
                (tf.zeros(self.input_shape, tf.float32), tf.constant(0, self.y_valid.dtype),
                 tf.constant(0.0))
            ).repeat(pad)
            ds = ds.concatenate(zeros)
        return ds.batch(batch_size, drop_remainder=True).prefetch(2)

    def test_dataset(self, batch_size: int) -> tf.data.Dataset:
        """Whitened test batches, in order.

        Raises:
          ValueError: if the data has no test split.
        """
        if not self.num_test:
            raise ValueError(f"Dataset {self.name!r} has no test split.")
        return self._whitened(self.x_test, self.y_test).batch(batch_size).prefetch(2)


def from_arrays(
    x_train,
    y_train,
    x_test=None,
    y_test=None,
    *,
    x_valid=None,
    y_valid=None,
    num_valid: int = NUM_VALID,
    seed: int = 0,
    num_classes: Optional[int] = None,
    pad: int = PAD,
    flip: bool = True,
    name: str = "arrays",
) -> ImageData:
    """The paper's pipeline over in-memory images.

    Args:
      x_train, y_train: training images (NHWC or NHW, any numeric dtype) and
        integer labels.
      x_test, y_test: optional test split, untouched by the validation carve.
      x_valid, y_valid: an explicit validation split; if absent, `num_valid`
        examples are held out of the training images at random with `seed`.
      num_valid: size of the held-out validation split.
      seed: seed of the held-out split.
      num_classes: defaults to 1 + the largest label.
      pad: padding of the random crop; flip: random left-right flips.
      name: the dataset's name.

    Raises:
      ValueError: on mismatched shapes or impossible split sizes.
    """
    x_train = _as_images(x_train, "x_train")
    y_train = _as_labels(y_train, len(x_train), "y_train")
    if x_valid is None:
        x_train, y_train, x_valid, y_valid = split_train_valid(x_train, y_train, num_valid, seed)
    else:
        x_valid = _as_images(x_valid, "x_valid")
        y_valid = _as_labels(y_valid, len(x_valid), "y_valid")
    if x_test is None:
        x_test, y_test = x_train[:0], y_train[:0]
    else:
        x_test = _as_images(x_test, "x_test")
        y_test = _as_labels(y_test, len(x_test), "y_test")
    for split, x in (("x_valid", x_valid), ("x_test", x_test)):
        if x.shape[1:] != x_train.shape[1:]:
            raise ValueError(
                f"{split} images are {x.shape[1:]}, training images {x_train.shape[1:]}."
            )
    if num_classes is None:
        num_classes = int(max(y.max(initial=0) for y in (y_train, y_valid, y_test))) + 1
    mean, std = channel_stats(x_train)
    return ImageData(
        name, x_train, y_train, x_valid, y_valid, x_test, y_test,
        int(num_classes), mean, std, int(pad), bool(flip),
    )  # fmt: skip


def _dataset_arrays(ds: tf.data.Dataset):
    images, labels = [], []
    for item in ds.as_numpy_iterator():
        image, label = (item["image"], item["label"]) if isinstance(item, dict) else item
        images.append(image)
        labels.append(label)
    if not images:
        raise ValueError("The dataset is empty.")
    return np.stack(images), np.asarray(labels)


def from_datasets(train: tf.data.Dataset, test: Optional[tf.data.Dataset] = None, **kwargs):
    """The paper's pipeline over unbatched `tf.data` datasets.

    Each element is `(image, label)` or `{"image": ..., "label": ...}`. The
    datasets are read once into memory (fine at CIFAR scale); keyword
    arguments are those of `from_arrays`.
    """
    x_train, y_train = _dataset_arrays(train)
    x_test, y_test = _dataset_arrays(test) if test is not None else (None, None)
    return from_arrays(x_train, y_train, x_test, y_test, **kwargs)


def not_prepared_message(name: str, data_dir: str) -> str:
    return (
        f"TFDS dataset {name!r} is not prepared under {data_dir!r}, and nas_tf never "
        "downloads. Prepare it on a machine with network access with\n"
        f"    tfds build {name} --data_dir=<dir>\n"
        f"then copy <dir>/{name} to {data_dir!r} (or pass that directory as data_dir)."
    )


def read_tfds(name: str, data_dir: Optional[str] = None, splits=("train", "test")):
    """Reads prepared TFDS splits into numpy arrays, without ever downloading.

    Returns:
      One (images, labels) pair per split.

    Raises:
      DataNotPreparedError: quickly, with instructions, if the data is absent.
    """
    import tensorflow_datasets as tfds  # Imported late: slow, and only needed here.

    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        root = os.path.dirname(os.path.dirname(builder.data_dir))
        raise DataNotPreparedError(not_prepared_message(name, root))
    out = []
    for split in splits:
        data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        out.append((data["image"], data["label"]))
    return out


def load_cifar10(
    data_dir: Optional[str] = None, num_valid: int = NUM_VALID, seed: int = 0
) -> ImageData:
    """CIFAR-10 from a prepared TFDS directory, split 45,000 / 5,000 / 10,000.

    Args:
      data_dir: the TFDS data directory (default: TFDS's, ~/tensorflow_datasets).
      num_valid: images held out of the 50,000 for validation (sec. 4.1: 5,000).
      seed: seed of the held-out split.

    Raises:
      DataNotPreparedError: if CIFAR-10 is not prepared under `data_dir`.
    """
    (x_train, y_train), (x_test, y_test) = read_tfds("cifar10", data_dir)
    return from_arrays(
        x_train, y_train, x_test, y_test, num_valid=num_valid, seed=seed,
        num_classes=10, pad=PAD, flip=True, name="cifar10",
    )  # fmt: skip
