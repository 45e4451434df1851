"""The CIFAR-10 child builder: the paper's rules on hand-made architectures."""

import hypothesis
import hypothesis.strategies as st
import keras
import numpy as np
import pytest

import nas_tf
from nas_tf import children, data
from nas_tf.children import base, convnet
from nas_tf import space as space_lib
from nas_tf.spaces import cifar10_v1, cifar10_v2, cifar10_v3

TINY = dict(filter_sizes=(1, 3), num_filters=(2, 3, 4))


def arch_of(spec, layers):
    """An architecture from [(fh, fw, filters, inputs[, sh, sw]), ...]."""
    values = {}
    for i, layer in enumerate(layers):
        fh, fw, nf, inputs = layer[:4]
        p = f"layer_{i}/"
        values.update({p + "filter_height": fh, p + "filter_width": fw, p + "num_filters": nf})
        if spec.strides is not None:
            sh, sw = layer[4:] or (1, 1)
            values.update({p + "stride_height": sh, p + "stride_width": sw})
        values[p + "anchor"] = tuple(int(j in inputs) for j in range(i))
    return space_lib.Architecture(values, depth=len(layers))


def kernel(model, i):
    return tuple(model.get_layer(f"layer_{i}_conv").kernel.shape)


def shape(model, name):
    return tuple(model.get_layer(name).output.shape[1:])


def test_chain_concatenation_and_image_input():
    spec = cifar10_v1(depth=4, **TINY)
    # Layer 1 has no input (takes the image); layer 2 takes 0 and 1; 3 takes 2.
    model = children.build_convnet(
        arch_of(spec, [(3, 1, 2, ()), (1, 3, 3, ()), (3, 3, 4, (0, 1)), (1, 1, 2, (2,))]),
        spec,
        (8, 8, 1),
        num_classes=5,
    )
    assert kernel(model, 0) == (3, 1, 1, 2)
    assert kernel(model, 1) == (1, 3, 1, 3)  # Rule 1: the image, 1 channel.
    assert kernel(model, 2) == (3, 3, 2 + 3, 4)  # Concatenated along depth.
    assert kernel(model, 3) == (1, 1, 4, 2)
    assert shape(model, "layer_2_concat") == (8, 8, 5)
    # Only layer 3 dangles: no final concatenation.
    assert tuple(model.get_layer("logits").kernel.shape) == (2, 5)
    assert tuple(model.output.shape) == (None, 5)


def test_dangling_outputs_go_to_the_classifier():
    spec = cifar10_v1(depth=4, **TINY)
    layers = [(1, 1, 2, ()), (1, 1, 3, (0,)), (1, 1, 4, (0,)), (1, 1, 2, (1,))]
    arch = arch_of(spec, layers)
    assert children.dangling(children.decode(arch, spec)) == (2, 3)
    model = children.build_convnet(arch, spec, (8, 8, 1), num_classes=10)
    # Rule 2: layers 2 and 3 feed nothing; both reach the classifier.
    assert shape(model, "final_concat") == (8, 8, 4 + 2)
    assert tuple(model.get_layer("logits").kernel.shape) == (6, 10)


def test_zero_padding_after_strides():
    spec = cifar10_v2(depth=3, strides=(1, 2, 3), **TINY)
    layers = [(3, 3, 2, (), 2, 3), (1, 1, 3, (), 1, 1), (1, 1, 4, (0, 1), 1, 1)]
    model = children.build_convnet(arch_of(spec, layers), spec, (8, 8, 1), num_classes=3)
    assert shape(model, "layer_0_relu") == (4, 3, 2)  # ceil(8 / 2), ceil(8 / 3).
    assert shape(model, "layer_1_relu") == (8, 8, 3)
    # Rule 3: layer 0 is zero-padded to 8x8 (centred, odd remainder bottom/right).
    assert model.get_layer("layer_2_pad0").padding == ((2, 2), (2, 3))
    assert shape(model, "layer_2_concat") == (8, 8, 5)
    probe = keras.Model(model.input, model.get_layer("layer_2_concat").output)
    out = probe(np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")).numpy()
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:5] = True
    assert np.all(out[:, ~mask, :2] == 0)  # The padding is zeros ...
    assert np.any(out[:, mask, :2] != 0)  # ... around layer 0's output.


def test_pooling_boundaries():
    spec = cifar10_v3(depth=4, pool_at=(2,), block_size=1, **TINY)
    # Boundary after layer 2 (1-based): layers 2 and 3 (0-based) run at 4x4.
    layers = [(1, 1, 2, ()), (1, 1, 3, (0,)), (1, 1, 4, (0,)), (1, 1, 2, ())]
    arch = arch_of(spec, layers)
    assert [layer.stage for layer in children.decode(arch, spec)] == [0, 0, 1, 1]
    model = children.build_convnet(arch, spec, (8, 8, 1), num_classes=10)
    assert shape(model, "layer_1_relu") == (8, 8, 3)
    assert shape(model, "layer_0_pool1") == (4, 4, 2)  # Layer 0 crosses to layer 2.
    assert shape(model, "image_pool1") == (4, 4, 1)  # Layer 3 takes the pooled image.
    assert shape(model, "layer_2_relu") == (4, 4, 4)
    assert shape(model, "layer_3_relu") == (4, 4, 2)
    assert shape(model, "layer_1_pool1") == (4, 4, 3)  # Dangling layer 1 on its way out.
    assert shape(model, "final_concat") == (4, 4, 3 + 4 + 2)


def test_pooling_at_or_after_the_last_layer_is_ignored():
    spec = cifar10_v3(depth=4, pool_at=(2,), block_size=1, **TINY)
    model = children.build_convnet(
        arch_of(spec, [(1, 1, 2, ()), (1, 1, 3, (0,))]), spec, (8, 8, 1), num_classes=10
    )
    assert not [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]


def test_two_boundaries_pool_twice():
    spec = cifar10_v3(depth=3, pool_at=(1, 2), block_size=1, **TINY)
    model = children.build_convnet(
        arch_of(spec, [(1, 1, 2, ()), (1, 1, 3, ()), (1, 1, 4, (0, 1))]), spec, (8, 8, 1), 10
    )
    assert shape(model, "layer_1_relu") == (4, 4, 3)
    assert shape(model, "layer_0_pool2") == (2, 2, 2)
    assert shape(model, "layer_2_concat") == (2, 2, 5)


def test_weight_decay_is_sgd_decay_on_kernels():
    spec = cifar10_v1(depth=2, **TINY)
    arch = arch_of(spec, [(3, 3, 2, ()), (1, 1, 3, (0,))])
    model = children.build_convnet(arch, spec, (8, 8, 1), 10, weight_decay=1e-2)
    names = ("layer_0_conv", "layer_1_conv", "logits")
    kernels = [model.get_layer(n).kernel.numpy() for n in names]
    assert len(model.losses) == 3
    expected = sum(1e-2 / 2 * np.sum(k**2) for k in kernels)  # Gradient 1e-2 * w.
    np.testing.assert_allclose(float(sum(model.losses)), expected, rtol=1e-5)
    assert not children.build_convnet(arch, spec, (8, 8, 1), 10, weight_decay=0).losses


def test_compile_child_defaults():
    spec = cifar10_v1(depth=1, **TINY)
    model = children.build_convnet(arch_of(spec, [(1, 1, 2, ())]), spec, (8, 8, 1), 10)
    children.compile_child(model)
    assert model.jit_compile == base.accelerator_present()  # Auto: on with a GPU or TPU only.
    children.compile_child(model, jit_compile=False)
    assert model.jit_compile is False
    config = model.optimizer.get_config()
    assert config["momentum"] == pytest.approx(0.9) and config["nesterov"] is True
    assert float(model.optimizer.learning_rate) == pytest.approx(0.1)


def test_learning_rate_schedule_divides_by_ten():
    schedule = children.ChildConfig(epochs=4, lr_decay_at=(0.5, 0.75)).learning_rate_schedule(10)
    assert [float(schedule(s)) for s in (0, 20, 21, 31)] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    assert children.ChildConfig(lr_decay_at=()).learning_rate_schedule(10) == 0.1
    with pytest.raises(ValueError):
        children.ChildConfig(lr_decay_at=(1.5,))


def _architectures(draw, spec, depth):
    values = {}
    for d in spec.space.decisions:
        if d.min_depth > depth:
            continue
        if isinstance(d, space_lib.Anchor):
            n = len(d.sources)
            values[d.name] = tuple(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
        else:
            values[d.name] = draw(st.sampled_from(d.values))
    return space_lib.Architecture(values, depth=depth)


SPACES = {
    "v1": cifar10_v1(depth=5, **TINY),
    "v2": cifar10_v2(depth=5, strides=(1, 2, 3), **TINY),
    "v3": cifar10_v3(depth=5, pool_at=(2, 3), block_size=1, **TINY),
}


@hypothesis.settings(max_examples=10, deadline=None)
@hypothesis.given(st.sampled_from(sorted(SPACES)), st.integers(1, 5), st.data())
def test_every_architecture_builds_and_runs(name, depth, draw):
    spec = SPACES[name]
    arch = spec.space.validate(_architectures(draw.draw, spec, depth))
    model = children.build_convnet(arch, spec, (8, 8, 1), num_classes=4)
    out = model(np.ones((2, 8, 8, 1), "float32"), training=False).numpy()
    assert out.shape == (2, 4) and np.all(np.isfinite(out))
    assert len([l for l in model.layers if isinstance(l, keras.layers.Conv2D)]) == depth


def test_controller_samples_build():
    spec = SPACES["v2"]
    controller = nas_tf.Controller(spec.space, seed=2)
    for arch in controller.sample(4, depth=5):
        model = children.build_convnet(arch, spec, (8, 8, 3), num_classes=10)
        assert tuple(model(np.zeros((1, 8, 8, 3), "float32")).shape) == (1, 10)


@pytest.fixture(scope="module")
def tiny_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 8, 8, 1)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > 0).astype("int32")  # Learnable: the sign of the mean.
    return data.from_arrays(x, y, num_valid=16, pad=1, flip=False, name="tiny")


def test_train_child_reward(tiny_data):
    spec = cifar10_v1(depth=2, **TINY)
    arch = arch_of(spec, [(3, 3, 2, ()), (1, 1, 3, (0,))])
    config = children.ChildConfig(epochs=3, batch_size=16, seed=0)
    result = children.train_child(arch, spec, tiny_data, config)
    assert len(result.val_accuracy) == 3 and len(result.train_loss) == 3
    assert "reward" not in result.to_dict()  # Children report metrics; rewards.py rewards.
    assert result.num_params == result.model.count_params() > 0
    assert result.train_seconds > 0 and result.images_per_second > 0
    assert "model" not in result.to_dict()


def test_failures_raise_child_training_error(tiny_data, monkeypatch):
    spec = cifar10_v1(depth=2, **TINY)
    bad = space_lib.Architecture({"layer_0/filter_height": 2}, depth=1)
    with pytest.raises(space_lib.ArchitectureError, match="layer_0/filter_height"):
        children.train_child(bad, spec, tiny_data, children.ChildConfig(epochs=1))  # Not a child.
    arch = arch_of(spec, [(1, 1, 2, ())])

    def impossible(*args, **kwargs):
        raise ValueError("Negative dimension size caused by subtracting 3 from 2")

    monkeypatch.setattr(convnet, "build_convnet", impossible)
    with pytest.raises(children.ChildTrainingError, match="build") as info:
        children.train_child(arch, spec, tiny_data, children.ChildConfig(epochs=1))
    assert info.value.reason == "build" and "Negative dimension" in str(info.value)

    def bug(*args, **kwargs):
        return None.shape  # Our own bug: it must not pass for a failed child.

    monkeypatch.setattr(convnet, "build_convnet", bug)
    with pytest.raises(AttributeError):
        children.train_child(arch, spec, tiny_data, children.ChildConfig(epochs=1))
    monkeypatch.undo()
    nan_data = data.from_arrays(
        np.full((8, 8, 8, 1), np.nan, "float32"), np.zeros(8, "int32"), num_valid=2, num_classes=2
    )
    arch = arch_of(spec, [(1, 1, 2, ())])
    with pytest.raises(children.ChildTrainingError) as info:
        children.train_child(arch, spec, nan_data, children.ChildConfig(epochs=2, batch_size=4))
    assert info.value.reason == "nan"
