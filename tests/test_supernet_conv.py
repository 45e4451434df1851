"""The convolutional supernet (nas_tf.supernets.conv): one trace, only the sampled path, the child's logits."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from nas_tf import space as space_lib
from nas_tf.algorithms.base import random_architecture
from nas_tf.children import convnet
from nas_tf.spaces import conv as conv_space
from nas_tf.supernets import conv

SHAPE, CLASSES, BATCH = (8, 8, 2), 3, 6
V1 = conv_space.cifar10_v1(depth=3, filter_sizes=(1, 3), num_filters=(2, 4))
V2 = conv_space.cifar10_v2(depth=3, filter_sizes=(1, 3), num_filters=(2, 4), strides=(1, 2))
# Strides 1 and 3 on 8 pixels: sizes 8 and 3, an odd padding (the extra pixel bottom/right).
V2_ODD = conv_space.cifar10_v2(depth=3, filter_sizes=(1, 3), num_filters=(2, 4), strides=(1, 3))
SPECS = pytest.mark.parametrize("spec", [V1, V2], ids=["v1", "v2"])
SHARING = pytest.mark.parametrize("sharing", conv.KERNEL_SHARING)


def batch(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH,) + SHAPE).astype(np.float32)
    return x, rng.integers(0, CLASSES, BATCH).astype(np.int32)


def arch(spec, seed):
    return random_architecture(spec.space, np.random.default_rng(seed))


def sig(net):
    return [*net.input_signature, tf.TensorSpec([net.code_length], tf.int32)]


def used_masks(net, spec, a):
    """Variable ref -> boolean mask of the entries the network of `a` uses."""
    layers = convnet.decode(a, spec)
    F = len(spec.filter_sizes)
    masks = {v.ref(): np.zeros(v.shape, bool) for v in net.trainable_variables}
    for i, layer in enumerate(layers):
        k = spec.filter_sizes.index(layer.filter_height) * F + spec.filter_sizes.index(layer.filter_width)
        n = layer.num_filters
        for s in ([j + 1 for j in layer.inputs] or [0]):
            c = SHAPE[2] if s == 0 else layers[s - 1].num_filters
            v, rows, cols = net.kernel_part(i, k, s)
            masks[v.ref()][rows, cols, :c, :n] = True
        masks[net.gammas[i][k].ref()][:n] = True
        masks[net.betas[i][k].ref()][:n] = True
    for j in convnet.dangling(layers):
        masks[net.classifier_kernels[j].ref()][: layers[j].num_filters] = True
    masks[net.classifier_bias.ref()][:] = True
    return masks


def expected_branches(spec, a):
    layers = convnet.decode(a, spec)
    out = set()
    for i, layer in enumerate(layers):
        out.add(f"layer_{i}/filter={layer.filter_height}x{layer.filter_width}")
        out |= {f"layer_{i}/source=layer_{j}" for j in layer.inputs} or {f"layer_{i}/source=image"}
        if spec.strides:
            out.add(f"layer_{i}/stride={layer.stride_height}x{layer.stride_width}")
    return out | {f"classifier/layer_{j}" for j in convnet.dangling(layers)}


def test_one_trace_for_all_architectures():
    # The paper's filter sizes and strides, so every switch has its full width.
    spec = conv_space.cifar10_v2(depth=3, num_filters=(2, 4))
    net = conv.build(spec, SHAPE, CLASSES)
    traces = {"train": 0, "eval": 0}

    def counted(kind, fn):
        def wrapped(x, y, code):
            traces[kind] += 1
            return fn(x, y, code)
        return tf.function(wrapped, input_signature=sig(net))

    train, evaluate = counted("train", net.train_loss), counted("eval", net.eval_sums)
    x, y = batch()
    for seed in range(30):
        code = net.encode(arch(spec, seed))
        assert code.shape == (net.code_length,) and code.dtype == np.int32
        assert np.isfinite(train(x, y, code).numpy())
        correct, count = evaluate(x, y, code)
        assert 0 <= correct.numpy() <= BATCH and count.numpy() == BATCH
    assert traces == {"train": 1, "eval": 1}


@SPECS
def test_only_the_sampled_branches_run(spec):
    net = conv.ConvSupernet(spec, SHAPE, CLASSES, instrument=True)
    evaluate = tf.function(net.eval_sums, input_signature=sig(net))
    x, y = batch()
    for seed in range(4):
        a = arch(spec, seed)
        before = net.runs()
        evaluate(x, y, net.encode(a))
        moved = {name for name, n in net.runs().items() if n != before[name]}
        assert moved == expected_branches(spec, a), a


@SHARING
@SPECS
def test_unused_weights_do_not_matter(spec, sharing):
    net = conv.ConvSupernet(spec, SHAPE, CLASSES, kernel_sharing=sharing)
    x, _ = batch()
    rng = np.random.default_rng(1)
    for seed in range(3):
        a = arch(spec, seed)
        code = net.encode(a)
        before = net(x, code).numpy()
        saved = [v.numpy() for v in net.trainable_variables]
        masks = used_masks(net, spec, a)
        for v in net.trainable_variables:  # Other choices' weights and unused slices.
            noise = rng.normal(size=v.shape).astype(np.float32)
            v.assign(np.where(masks[v.ref()], v.numpy(), v.numpy() + 3 * noise))
        np.testing.assert_array_equal(net(x, code).numpy(), before)
        for v, value in zip(net.trainable_variables, saved):
            v.assign(value)


@SPECS
def test_every_choice_changes_the_output(spec):
    """Late binding would make some choices alias others."""
    net = conv.ConvSupernet(spec, SHAPE, CLASSES)
    x, _ = batch()
    base_arch = arch(spec, 0)
    base_logits = net(x, net.encode(base_arch)).numpy()
    changed = 0
    for d in spec.space.decisions:
        current = base_arch[d.name]
        if isinstance(d, space_lib.Anchor):
            others = [current[:b] + (1 - current[b],) + current[b + 1:] for b in range(len(current))]
        else:
            others = [v for v in d.values if v != current]
        for value in others:
            other = space_lib.Architecture({**base_arch.values, d.name: value}, base_arch.depth)
            logits = net(x, net.encode(other)).numpy()
            assert np.abs(logits - base_logits).max() > 1e-4, (d.name, value)
            changed += 1
    assert changed >= len(spec.space.decisions)


@SHARING
@SPECS
def test_gradients_reach_only_the_used_weights(spec, sharing):
    net = conv.ConvSupernet(spec, SHAPE, CLASSES, weight_decay=0.01, kernel_sharing=sharing)
    loss_fn = tf.function(net.train_loss, input_signature=sig(net))
    x, y = batch()
    for seed in range(2):
        a = arch(spec, seed)
        code = net.encode(a)
        masks = used_masks(net, spec, a)
        with tf.GradientTape() as tape:
            loss = loss_fn(x, y, code)
        grads = tape.gradient(loss, net.trainable_variables)
        for v, g in zip(net.trainable_variables, grads):
            mask = masks[v.ref()]
            if g is None:
                assert not mask.any(), v.name
                continue
            g = tf.convert_to_tensor(g).numpy()
            assert not g[~mask].any(), v.name  # Exactly zero outside the used slices.
            if mask.any():
                assert g[mask].any(), v.name
        # Weight decay: weight_decay * sum of squares of the used kernel slices.
        logits = net(x, code)
        ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)).numpy()
        l2 = sum(float(np.sum(np.square(v.numpy()[masks[v.ref()]])))
                 for v in net.trainable_variables
                 if "gamma" not in v.name and "beta" not in v.name and "bias" not in v.name)
        np.testing.assert_allclose(loss.numpy(), ce + 0.01 * l2, rtol=1e-5)


@SHARING
@pytest.mark.parametrize("spec", [V1, V2, V2_ODD], ids=["v1", "v2", "v2_odd"])
def test_equals_the_stand_alone_child(spec, sharing):
    """The child of `build_convnet`, given the supernet's sliced weights, in training mode (batch BN).

    Seeds 10 and 11 give, under v2, a layer with inputs of two sizes and
    dangling layers of two sizes (rule 3 in a layer and before the pool).
    """
    net = conv.ConvSupernet(spec, SHAPE, CLASSES, seed=3, kernel_sharing=sharing)
    x, _ = batch(2)
    F = len(spec.filter_sizes)
    for seed in range(2):
        a = arch(spec, 10 + seed)
        layers = convnet.decode(a, spec)
        child = convnet.build_convnet(a, spec, SHAPE, CLASSES, weight_decay=0)
        for i, layer in enumerate(layers):
            k = spec.filter_sizes.index(layer.filter_height) * F + spec.filter_sizes.index(layer.filter_width)
            n = layer.num_filters
            def part(s, c):
                v, rows, cols = net.kernel_part(i, k, s)
                return v.numpy()[rows, cols, :c, :n]

            parts = [part(j + 1, layers[j].num_filters) for j in layer.inputs] or [part(0, None)]
            child.get_layer(f"layer_{i}_conv").kernel.assign(np.concatenate(parts, axis=2))
            bn = child.get_layer(f"layer_{i}_bn")
            bn.gamma.assign(net.gammas[i][k].numpy()[:n] + 0.1 * (i + 1))  # Non-trivial BN.
            bn.beta.assign(net.betas[i][k].numpy()[:n] - 0.2)
            net.gammas[i][k].assign(np.concatenate([bn.gamma.numpy(), net.gammas[i][k].numpy()[n:]]))
            net.betas[i][k].assign(np.concatenate([bn.beta.numpy(), net.betas[i][k].numpy()[n:]]))
        dense = child.get_layer("logits")
        dense.kernel.assign(np.concatenate(
            [net.classifier_kernels[j].numpy()[: layers[j].num_filters] for j in convnet.dangling(layers)]
        ))
        net.classifier_bias.assign(np.linspace(-1, 1, CLASSES).astype(np.float32))
        dense.bias.assign(net.classifier_bias.numpy())
        expected = child(x, training=True).numpy()
        np.testing.assert_allclose(net(x, net.encode(a)).numpy(), expected, rtol=1e-4, atol=1e-5)
        keras.backend.clear_session()


def test_encode_rejects_another_depth_and_v3():
    net = conv.ConvSupernet(V1, SHAPE, CLASSES)
    short = random_architecture(V1.space, np.random.default_rng(0), depth=2)
    with pytest.raises(space_lib.ArchitectureError, match="depth 3 only.*depth 2"):
        net.encode(short)
    with pytest.raises(ValueError, match="block_size 3"):
        conv.ConvSupernet(conv_space.cifar10_v3(depth=2), SHAPE, CLASSES)
