"""The NAS-Bench-201 cell supernet (nas_tf.supernets.nb201), its trainer and batches.

Tiny sizes throughout (C = 4, one cell per stage, 8x8x1 images, batch 4):
the checks are exact, not statistical.
"""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from nas_tf import space as space_lib
from nas_tf.algorithms.base import random_architecture
from nas_tf.benchmarks import nasbench201
from nas_tf.data import cifar10 as image_data
from nas_tf.supernets import nb201
from nas_tf.supernets.config import SharedTraining
from nas_tf.supernets.image_batches import ImageBatches
from nas_tf.supernets.trainer import SharedWeights

SHAPE, CLASSES, BATCH, CHANNELS = (8, 8, 1), 3, 4, 4
CONVS = ("nor_conv_1x1", "nor_conv_3x3")
NO_XLA = SharedTraining(jit_compile=False, total_steps=10)


def make_net(**kwargs):
    kwargs.setdefault("seed", 1)
    return nb201.NB201Supernet(SHAPE, CLASSES, channels=CHANNELS, cells_per_stage=1, **kwargs)


def batch(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH,) + SHAPE).astype(np.float32)
    return x, rng.integers(0, CLASSES, BATCH).astype(np.int32)


def arch(seed):
    return random_architecture(nb201.nb201_space(), np.random.default_rng(seed))


def arch_of(ops):
    return space_lib.Architecture(dict(zip(nb201.EDGE_NAMES, ops)))


def sig(net):
    return [*net.input_signature, tf.TensorSpec([net.code_length], tf.int32)]


def conv_layers(net):
    """(cell, edge index, op) -> the `_ConvBN` of that branch."""
    return {(c, e, op): layer for c, cell in enumerate(net.cells)
            for e, ops in enumerate(cell) for op, layer in ops.items()}


def test_space_and_encode():
    space = nb201.nb201_space()
    assert [d.name for d in space.decisions] == list(nb201.EDGE_NAMES)
    assert nb201.OPS == nasbench201.OPS and nb201.EDGES == nasbench201.EDGES
    net = make_net()
    assert net.code_length == 6
    ops = ("avg_pool_3x3", "none", "nor_conv_3x3", "skip_connect", "nor_conv_1x1", "none")
    code = net.encode(arch_of(ops))
    assert code.dtype == np.int32 and code.tolist() == [4, 0, 3, 1, 2, 0]
    assert nb201.cell_ops(arch_of(ops)) == ops
    # Three cells (one per stage), 6 edges x 5 ops branches each.
    assert len(net.cells) == 3 and len(net.branch_names) == 3 * 6 * 5


@pytest.fixture(scope="module")
def traced():
    """One instrumented supernet and its `SharedWeights` (a train trace costs ~10 s here)."""
    net = make_net(instrument=True)
    return net, SharedWeights(net, NO_XLA)


def test_one_trace_for_many_cells(traced):
    net, shared = traced
    shared.reset(make_net())
    x, y = batch()
    for seed in range(50):
        code = net.encode(arch(seed))
        loss, norm = shared.train_step(x, y, code)
        assert np.isfinite(loss) and np.isfinite(norm)
        assert 0.0 <= shared.evaluate([(x, y)], code) <= 1.0
    assert shared.traces == {"train": 1, "eval": 1}
    assert int(shared.step.numpy()) == 50


def test_a_step_that_overflows_changes_nothing(traced):
    # One network's non-finite loss must not poison the shared weights (or their momentum).
    net, shared = traced
    shared.reset(make_net())
    x, y = batch()
    code = net.encode(arch(0))
    shared.train_step(x, y, code)  # Some momentum to keep.
    before = [w.numpy().copy() for w in shared.weights + shared.velocities]
    step = int(shared.step.numpy())
    loss, _ = shared.train_step(np.full_like(x, np.nan), y, code)
    assert not np.isfinite(loss) and int(shared.step.numpy()) == step + 1
    for old, new in zip(before, shared.weights + shared.velocities):
        np.testing.assert_array_equal(old, new.numpy())
    loss, norm = shared.train_step(x, y, code)  # And training goes on.
    assert np.isfinite(loss) and np.isfinite(norm)
    assert shared.traces["train"] == 1


def test_only_the_sampled_branches_run(traced):
    net, shared = traced
    x, y = batch()
    for seed in range(6):
        a = arch(seed)
        code = net.encode(a)
        expected = {f"cell_{c}/{edge}={a[edge]}" for c in range(3) for edge in nb201.EDGE_NAMES}
        for run in (lambda: shared.evaluate([(x, y)], code), lambda: shared.train_step(x, y, code)):
            before = net.runs()
            run()
            moved = {name: n - before[name] for name, n in net.runs().items() if n != before[name]}
            assert set(moved) == expected, a
            assert set(moved.values()) == {1}, moved  # Once each, backwards not counted again.
    assert shared.traces["train"] == 1 and shared.traces["eval"] <= 1


def test_gradients_of_unused_kernels_are_exactly_zero(traced):
    """After a reset, one step's velocities are the step's (clipped) gradients."""
    net, shared = traced
    x, y = batch(2)
    layers = conv_layers(net)
    velocity = {w.ref(): v for w, v in zip(shared.weights, shared.velocities)}
    conv_archs = [arch_of(np.random.default_rng(s).choice(CONVS, 6).tolist()) for s in range(2)]
    for k, a in enumerate([arch(s) for s in range(6)] + conv_archs):
        all_conv = k >= 6  # Every edge live: every used weight learns.
        shared.reset(make_net())
        before = {w.ref(): w.numpy() for w in shared.weights}
        shared.train_step(x, y, net.encode(a))
        for (c, e, op), layer in layers.items():
            used = a[nb201.EDGE_NAMES[e]] == op
            for w in (layer.kernel, layer.gamma, layer.beta):
                g = velocity[w.ref()].numpy()
                if not used:
                    assert not g.any(), (a, c, e, op, w.name)
                    np.testing.assert_array_equal(w.numpy(), before[w.ref()])
                elif all_conv:
                    assert g.any(), (a, c, e, op, w.name)
        for w in [net.stem.kernel, net.dense, net.reductions[0].shortcut, net.reductions[1].b.kernel]:
            assert velocity[w.ref()].numpy().any()
    assert shared.traces["train"] == 1


def test_every_op_of_every_edge_changes_the_logits():
    """Late binding would make some ops alias others (every edge live: all convs)."""
    net = make_net()
    x, _ = batch(1)
    base_ops = ["nor_conv_3x3"] * 6
    logits_fn = tf.function(lambda x, code: net.logits_and_l2(x, code)[0], input_signature=[
        net.input_signature[0], tf.TensorSpec([6], tf.int32)])
    for e, edge in enumerate(nb201.EDGE_NAMES):
        outs = {}
        for op in nb201.OPS:
            ops = list(base_ops)
            ops[e] = op
            outs[op] = logits_fn(x, net.encode(arch_of(ops))).numpy()
        for a, b in itertools.combinations(nb201.OPS, 2):
            assert np.abs(outs[a] - outs[b]).max() > 1e-4, (edge, a, b)
    # Eager (Python-dispatched switch) and traced agree.
    code = net.encode(arch(3))
    np.testing.assert_allclose(net.logits_and_l2(x, code)[0].numpy(),
                               logits_fn(x, code).numpy(), rtol=1e-5, atol=1e-6)


def test_gradients_of_unused_kernels_are_exactly_zero():
    net = make_net(weight_decay=0.01)
    x, y = batch(2)
    layers = conv_layers(net)

    @tf.function(input_signature=sig(net))
    def grads_of(x, y, code):
        with tf.GradientTape() as tape:
            loss = net.train_loss(x, y, code)
        return loss, tape.gradient(loss, net.trainable_variables)

    index = {v.ref(): i for i, v in enumerate(net.trainable_variables)}
    conv_archs = [arch_of(np.random.default_rng(s).choice(CONVS, 6).tolist()) for s in range(2)]
    for k, a in enumerate([arch(s) for s in range(8)] + conv_archs):
        all_conv = k >= 8
        _, grads = grads_of(x, y, net.encode(a))
        for (c, e, op), layer in layers.items():
            used = a[nb201.EDGE_NAMES[e]] == op
            for v in (layer.kernel, layer.gamma, layer.beta):
                g = grads[index[v.ref()]]
                g = np.zeros(v.shape) if g is None else tf.convert_to_tensor(g).numpy()
                if not used:
                    assert not g.any(), (a, c, e, op, v.name)
                elif all_conv:  # Every edge live: every used weight learns.
                    assert g.any(), (a, c, e, op, v.name)
        for v in [net.stem.kernel, net.dense, net.reductions[0].shortcut]:
            assert tf.convert_to_tensor(grads[index[v.ref()]]).numpy().any()


def test_l2_counts_the_used_kernels_only():
    net = make_net()
    x, _ = batch()
    layers = conv_layers(net)
    fixed = float(net.stem.l2() + sum(r.l2() for r in net.reductions)
                  + tf.reduce_sum(tf.square(net.dense)))
    for seed in range(4):
        a = arch(seed)
        _, l2 = net.logits_and_l2(x, net.encode(a))
        used = sum(float(layer.l2()) for (c, e, op), layer in layers.items()
                   if a[nb201.EDGE_NAMES[e]] == op)
        np.testing.assert_allclose(float(l2), fixed + used, rtol=1e-5)


def test_cellstr_matches_the_benchmark():
    rng = np.random.default_rng(0)
    for code in [0, nasbench201.NUM_CELLS - 1] + rng.integers(0, nasbench201.NUM_CELLS, 50).tolist():
        ops = [nb201.OPS[i] for i in nasbench201.decode(code)]
        text = nb201.cellstr(ops)
        assert text == nasbench201.cellstr(code)
        assert nasbench201.parse_cellstr(text) == code
    assert nb201.cellstr(["nor_conv_3x3", "none", "skip_connect", "avg_pool_3x3", "none",
                          "nor_conv_1x1"]) == (
        "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|")


def test_is_parameter_free():
    for ops in itertools.product(nb201.OPS, repeat=6):
        assert nb201.is_parameter_free(ops) == (not any(op in CONVS for op in ops))
    assert nb201.is_parameter_free(["skip_connect"] * 6)
    assert not nb201.is_parameter_free(["none"] * 5 + ["nor_conv_1x1"])


def image_data_set(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 255, (n, 8, 8, 1)).astype(np.uint8)
    y = rng.integers(0, CLASSES, n).astype(np.int32)
    return image_data.from_arrays(x, y, num_valid=10, seed=seed, num_classes=CLASSES,
                                  pad=1, flip=True, name="tiny")


def test_train_batches_are_a_function_of_seed_and_step():
    data = image_data_set()
    a, b = ImageBatches(data, 6, seed=3), ImageBatches(data, 6, seed=3)
    other = ImageBatches(data, 6, seed=4)
    assert a.steps_per_epoch == 30 // 6
    for step in (7, 0, 4, 5, 23, 7):  # Any order, across epochs, repeated.
        (xa, ya), (xb, yb) = a.train(step), b.train(step)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
        assert xa.shape == (6, 8, 8, 1) and xa.dtype == np.float32 and ya.dtype == np.int32
        assert not np.array_equal(xa, other.train(step)[0])
    assert not np.array_equal(a.train(1)[0], a.train(2)[0])
    # Within an epoch the batches are disjoint (a permutation); epochs differ in order.
    epoch = [a.train(s)[0] for s in range(a.steps_per_epoch)]
    assert not np.array_equal(a.train(0)[0], a.train(a.steps_per_epoch)[0])
    assert len(epoch) == 5
    # Validation batches are fixed and cover the split once.
    assert a.num_valid == 2
    np.testing.assert_array_equal(a.valid(0)[0], b.valid(2)[0])
    assert sum(len(a.valid(i)[1]) for i in range(a.num_valid)) == 10


def test_train_batches_take_each_image_once_per_epoch():
    rng = np.random.default_rng(1)
    x = np.arange(30, dtype=np.uint8).reshape(30, 1, 1, 1) * np.ones((1, 2, 2, 1), np.uint8)
    data = image_data.from_arrays(x, rng.integers(0, 2, 30), x_valid=x[:2], y_valid=np.zeros(2),
                                  num_classes=2, pad=0, flip=False, name="ids")
    batches = ImageBatches(data, 7, seed=0)  # 4 steps of 7, 2 images dropped per epoch.
    std, mean = float(data.std[0]), float(data.mean[0])
    for epoch in range(2):
        seen = np.concatenate([batches.train(epoch * 4 + k)[0][:, 0, 0, 0] for k in range(4)])
        ids = np.rint(seen * std + mean).astype(int)
        assert len(set(ids.tolist())) == 28


def test_reset_restores_step_and_velocities(traced):
    net, shared = traced
    x, y = batch()
    codes = [net.encode(arch(s)) for s in range(3)]
    shared.reset(make_net())
    initial = [v.numpy() for v in net.trainable_variables]
    for code in codes:
        shared.train_step(x, y, code)
    trained = [v.numpy() for v in net.trainable_variables]
    assert int(shared.step.numpy()) == 3
    assert any(v.numpy().any() for v in shared.velocities)
    shared.reset(make_net())  # Same seed: the initial weights.
    assert int(shared.step.numpy()) == 0
    assert not any(v.numpy().any() for v in shared.velocities)
    for v, value in zip(net.trainable_variables, initial):
        np.testing.assert_array_equal(v.numpy(), value)
    for code in codes:  # Nothing of the first run is left: the same steps, the same weights.
        shared.train_step(x, y, code)
    for v, value in zip(net.trainable_variables, trained):
        np.testing.assert_array_equal(v.numpy(), value)
    assert shared.traces["train"] == 1
