"""Data: the paper's CIFAR-10 pipeline, the TFDS loader (never downloading), digits."""

import importlib.resources
import os
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from nas_tf import data


def _images(n, h=6, w=6, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, h, w, c)).astype("uint8"), rng.integers(0, 10, n)


def test_split_train_valid_is_a_seeded_partition():
    x = np.arange(50)
    y = x % 10
    xt, yt, xv, yv = data.split_train_valid(x, y, 5, seed=3)
    assert len(xt) == 45 and len(xv) == 5
    assert sorted(np.concatenate([xt, xv])) == list(range(50))
    np.testing.assert_array_equal(yt, xt % 10)
    again = data.split_train_valid(x, y, 5, seed=3)
    np.testing.assert_array_equal(again[2], xv)
    assert not np.array_equal(data.split_train_valid(x, y, 5, seed=4)[2], xv)
    with pytest.raises(ValueError, match="num_valid"):
        data.split_train_valid(x, y, 50)


def test_channel_stats():
    x = np.zeros((2, 2, 2, 2), "float32")
    x[..., 0] = [[[1, 3], [1, 3]], [[1, 3], [1, 3]]]
    x[..., 1] = 5
    mean, std = data.channel_stats(x)
    np.testing.assert_allclose(mean, [2, 5])
    np.testing.assert_allclose(std, [1, 1e-6])  # A constant channel is not divided by 0.


def test_whitening_uses_the_train_split_statistics():
    x, y = _images(20)
    d = data.from_arrays(x, y, x[:4], y[:4], num_valid=5, seed=0)
    mean, std = data.channel_stats(d.x_train.astype("float64"))
    np.testing.assert_allclose(d.mean, mean)
    images, labels = next(iter(d.valid_dataset(batch_size=5)))
    np.testing.assert_allclose(images.numpy(), (d.x_valid - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(labels.numpy(), d.y_valid)
    whole = np.concatenate([im.numpy() for im, _ in d.train_dataset(8, augment_images=False)])
    np.testing.assert_allclose(whole.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(whole.std(axis=(0, 1, 2)), 1, atol=1e-3)


def test_augment_pads_crops_and_flips():
    image = tf.reshape(tf.range(1.0, 4 * 5 * 2 + 1), (4, 5, 2))
    assert np.array_equal(data.augment(image, pad=0, flip=False).numpy(), image.numpy())
    padded = np.pad(image.numpy(), ((1, 1), (1, 1), (0, 0)))
    for _ in range(8):
        out = data.augment(image, pad=1, flip=True).numpy()
        assert out.shape == (4, 5, 2)
        windows = [padded[i : i + 4, j : j + 5] for i in range(3) for j in range(3)]
        windows += [w[:, ::-1] for w in windows]
        assert any(np.array_equal(out, w) for w in windows)


def test_train_dataset_covers_each_example_once_per_epoch():
    x, y = _images(30, c=1)
    x[:, 0, 0, 0] = np.arange(30)  # A tag, kept by pad=0 and no flips.
    d = data.from_arrays(x, y, num_valid=6, pad=0, flip=False)
    ds = d.train_dataset(batch_size=7, seed=1)
    tags = []
    for images, labels in ds:
        assert images.shape[1:] == (6, 6, 1) and images.dtype == tf.float32
        assert labels.dtype == tf.int32
        tags += list(np.round(images[:, 0, 0, 0].numpy() * d.std[0] + d.mean[0]).astype(int))
    assert sorted(tags) == sorted(d.x_train[:, 0, 0, 0].astype(int))
    assert d.num_train == 24 and d.num_valid == 6 and d.num_test == 0
    with pytest.raises(ValueError, match="no test split"):
        d.test_dataset(4)


def test_from_arrays_shapes_and_errors():
    x, y = _images(12, c=1)
    d = data.from_arrays(x[..., 0], y, x_valid=x[:3, ..., 0], y_valid=y[:3], num_classes=10)
    assert d.input_shape == (6, 6, 1) and d.num_train == 12 and d.num_valid == 3
    assert data.from_arrays(x, np.array([0, 3] * 6), num_valid=2).num_classes == 4
    with pytest.raises(ValueError, match="labels"):
        data.from_arrays(x, y[:5], num_valid=2)
    with pytest.raises(ValueError, match="x_test images"):
        data.from_arrays(x, y, x[:, :4], y, num_valid=2)


def test_from_datasets_tuples_and_dicts():
    x, y = _images(10)
    train = tf.data.Dataset.from_tensor_slices((x, y))
    test = tf.data.Dataset.from_tensor_slices({"image": x[:4], "label": y[:4]})
    d = data.from_datasets(train, test, num_valid=2, seed=0)
    assert d.num_train == 8 and d.num_valid == 2 and d.num_test == 4
    np.testing.assert_array_equal(d.x_test, x[:4])


def test_digits_is_embedded_and_seeded():
    d = data.load("digits")
    assert (d.num_train, d.num_valid, d.num_test) == (1257, 180, 360)
    assert d.input_shape == (8, 8, 1) and d.num_classes == 10
    assert d.pad == 1 and not d.flip
    again = data.load_digits(seed=0)
    np.testing.assert_array_equal(again.y_valid, d.y_valid)
    images, labels = next(iter(d.train_dataset(32, seed=0)))
    assert images.shape == (32, 8, 8, 1)
    with pytest.raises(ValueError, match="Unknown dataset 'mnist'"):
        data.load("mnist")
    with pytest.raises(ValueError, match="Unknown embedded dataset"):
        data.load_embedded("mnist")


def _no_download(*args, **kwargs):
    raise AssertionError("The loader tried to download.")


def test_cifar10_not_prepared_fails_fast_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", _no_download)
    monkeypatch.setattr(tfds.download.DownloadManager, "download", _no_download)
    with pytest.raises(data.DataNotPreparedError, match="tfds build cifar10") as info:
        data.load("cifar10", data_dir=str(tmp_path))  # A download attempt fails the test above.
    assert str(tmp_path) in str(info.value)


def _write_fake_cifar_binaries(root, per_batch=4, test=5):
    """The CIFAR-10 binary format: records of 1 label byte + 3,072 pixel bytes."""
    folder = os.path.join(root, "cifar-10-batches-bin")
    os.makedirs(folder)
    with open(os.path.join(folder, "batches.meta.txt"), "w") as f:
        f.write("\n".join(f"class{i}" for i in range(10)))
    rng = np.random.default_rng(0)
    files = [(f"data_batch_{i}.bin", per_batch) for i in range(1, 6)] + [("test_batch.bin", test)]
    for name, n in files:
        records = rng.integers(0, 256, size=(n, 3073)).astype("uint8")
        records[:, 0] = rng.integers(0, 10, n)
        records.tofile(os.path.join(folder, name))


@pytest.fixture(scope="module")
def fake_cifar10_dir(tmp_path_factory):
    """A real prepared TFDS cifar10 directory, generated from fake binaries offline."""
    source = str(tmp_path_factory.mktemp("cifar_source"))
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    _write_fake_cifar_binaries(source)
    patch = pytest.MonkeyPatch()
    # TFDS's preparation imports importlib_resources, absent here; the standard
    # library's importlib.resources provides what it uses.
    if "importlib_resources" not in sys.modules:
        patch.setitem(sys.modules, "importlib_resources", importlib.resources)
    patch.setattr(tfds.download.DownloadManager, "download_and_extract", lambda self, url: source)
    try:
        builder = tfds.builder("cifar10", data_dir=data_dir)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
    finally:
        patch.undo()
    return data_dir


def test_cifar10_from_a_prepared_directory(fake_cifar10_dir, monkeypatch):
    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", _no_download)
    d = data.load_cifar10(fake_cifar10_dir, num_valid=5, seed=0)
    assert (d.num_train, d.num_valid, d.num_test) == (15, 5, 5)
    assert d.input_shape == (32, 32, 3) and d.num_classes == 10
    assert d.pad == 4 and d.flip and d.name == "cifar10"
    assert d.x_train.dtype == np.uint8
    np.testing.assert_allclose(d.mean, d.x_train.reshape(-1, 3).mean(axis=0), rtol=1e-5)
    images, labels = next(iter(d.train_dataset(batch_size=4, seed=0)))
    assert images.shape == (4, 32, 32, 3) and labels.shape == (4,)
    again = data.load_cifar10(fake_cifar10_dir, num_valid=5, seed=0)
    np.testing.assert_array_equal(again.x_valid, d.x_valid)
    with pytest.raises(ValueError, match="num_valid"):
        data.load("cifar10", data_dir=fake_cifar10_dir)  # 5,000 of 20 images.
