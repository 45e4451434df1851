"""NASCell: exact maths against numpy, every sampled cell steps, XLA, RNN use."""

import keras
import numpy as np
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from nas_tf import space as space_lib
from nas_tf.children.cell import NASCell
from nas_tf.controller import Controller
from nas_tf.spaces import cell as cell_space

UNITS, IN, BATCH, TIME = 5, 3, 4, 6


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def relu(v):
    return np.maximum(v, 0.0)


def make_cell(description, **kwargs):
    cell = NASCell(
        UNITS,
        description,
        kernel_initializer=keras.initializers.RandomUniform(-0.8, 0.8, seed=1),
        recurrent_initializer=keras.initializers.RandomUniform(-0.8, 0.8, seed=2),
        **kwargs,
    )
    cell.build((None, IN))
    return cell


def leaf_weights(cell):
    """W_k [IN, UNITS] and U_k [UNITS, UNITS] per leaf, in leaf order."""
    base = cell.description.base
    w = np.split(cell.kernel.numpy(), base, axis=1)
    u = np.split(cell.recurrent_kernel.numpy(), base, axis=1)
    return w, u


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, TIME, IN)).astype(np.float32)
    h = rng.normal(size=(BATCH, UNITS)).astype(np.float32)
    c = rng.normal(size=(BATCH, UNITS)).astype(np.float32)
    return x, h, c


def run_rnn(cell, x, h, c):
    rnn = keras.layers.RNN(cell, return_sequences=True, return_state=True)
    out, h_t, c_t = rnn(x, initial_state=[h, c])
    return out.numpy(), h_t.numpy(), c_t.numpy()


def test_paper_example_matches_the_papers_equations():
    """Sec. 3.4, written out by hand for the base-2 example of Figure 5."""
    cell = make_cell(cell_space.paper_example())
    (w1, w3), (w2, w4) = leaf_weights(cell)
    x, h, c = inputs()
    out, h_t, c_t = run_rnn(cell, x, h, c)
    for t in range(TIME):
        xt = x[:, t]
        a0 = np.tanh(xt @ w1 + h @ w2)
        a1 = relu((xt @ w3) * (h @ w4))
        a0_new = relu(a0 + c)
        a2 = sigmoid(a0_new * a1)
        h, c = a2, (xt @ w3) * (h @ w4)
        np.testing.assert_allclose(out[:, t], h, atol=1e-5)
    np.testing.assert_allclose(h_t, h, atol=1e-5)
    np.testing.assert_allclose(c_t, c, atol=1e-5)


def test_lstm_like_cell_matches_its_equations():
    cell = make_cell(cell_space.lstm_like())
    w, u = leaf_weights(cell)
    x, h, c = inputs(1)
    out, h_t, c_t = run_rnn(cell, x, h, c)
    for t in range(TIME):
        pre = [x[:, t] @ w[k] + h @ u[k] for k in range(4)]
        f, g = sigmoid(pre[0]), np.tanh(pre[1])
        o = sigmoid(sigmoid(pre[2]) + np.tanh(pre[3]))
        c = f * c + g
        h = np.tanh(c) * o
        np.testing.assert_allclose(out[:, t], h, atol=1e-5)
    np.testing.assert_allclose(h_t, h, atol=1e-5)
    np.testing.assert_allclose(c_t, c, atol=1e-5)


def test_max_and_sin_match_their_equations():
    """Control experiment 1's functions, written out by hand for a base-2 cell."""
    description = cell_space.CellDescription(
        nodes=(("max", "sin"), ("elem_mult", "relu"), ("add", "sin")),
        inject=("max", "tanh"), inject_node=1, memory_node=0)
    cell = make_cell(description)
    (w1, w3), (w2, w4) = leaf_weights(cell)
    x, h, c = inputs(5)
    out, h_t, c_t = run_rnn(cell, x, h, c)
    for t in range(TIME):
        xt = x[:, t]
        m = np.maximum(xt @ w1, h @ w2)
        a0 = np.sin(m)
        a1 = np.tanh(np.maximum(relu((xt @ w3) * (h @ w4)), c))
        h, c = np.sin(a0 + a1), m
        np.testing.assert_allclose(out[:, t], h, atol=1e-5)
    np.testing.assert_allclose(h_t, h, atol=1e-5)
    np.testing.assert_allclose(c_t, c, atol=1e-5)
    clone = NASCell.from_config(cell.get_config())  # A saved layer keeps max and sin.
    assert clone.description == description


# -- an independent numpy evaluator of any description ---------------------------

_NP_ACT = {"identity": lambda v: v, "tanh": np.tanh, "sigmoid": sigmoid, "relu": relu,
           "sin": np.sin}
_NP_COMB = {"add": lambda a, b: a + b, "elem_mult": lambda a, b: a * b, "max": np.maximum}


def numpy_step(description, leaf_x, leaf_h, c):
    """Recursive from the root, as the paper draws the tree.

    leaf_x[k], leaf_h[k]: the projections W_k x_t and U_k h_(t-1) of leaf k.
    """
    pre = {}

    def node(i):
        kids = cell_space.children(description.base, i)
        spec = description.nodes[i]
        if kids is None:
            a, b = leaf_x[i], leaf_h[i]
        else:
            a, b = node(kids[0]), node(kids[1])
        pre[i] = _NP_COMB[spec.combine](a, b)
        out = _NP_ACT[spec.activation](pre[i])
        if i == description.inject_node:
            inj = description.inject
            out = _NP_ACT[inj.activation](_NP_COMB[inj.combine](out, c))
        return out

    h_t = node(description.root)
    return h_t, pre[description.memory_node]


def random_description(base, data, functions="paper"):
    space = cell_space.ptb_cell(base, functions)
    values = {d.name: data.draw(st.sampled_from(d.values)) for d in space.decisions}
    arch = space.validate(space_lib.Architecture(values))
    return cell_space.CellDescription.from_architecture(arch, space)


@settings(max_examples=10, deadline=None)
@given(base=st.sampled_from([2, 4, 8]), use_bias=st.booleans(),
       functions=st.sampled_from(sorted(cell_space.FUNCTIONS)), data=st.data())
def test_every_cell_builds_steps_and_matches_numpy(base, use_bias, functions, data):
    description = random_description(base, data, functions)
    cell = make_cell(description, use_bias=use_bias)
    w, u = leaf_weights(cell)
    bx = bu = np.zeros((base, UNITS), np.float32)
    if use_bias:
        cell.bias.assign(np.random.default_rng(2).normal(size=cell.bias.shape))
        bx, bu = (b.reshape(base, UNITS) for b in cell.bias.numpy())
    x, h, c = inputs(2)
    x, h, c = x[:, 0] * 0.5, h * 0.5, c * 0.5  # Keep products of relu/identity nodes small.
    got_h, (h2, got_c) = cell(tf.constant(x), [tf.constant(h), tf.constant(c)])
    want_h, want_c = numpy_step(
        description,
        [x @ w[k] + bx[k] for k in range(base)],
        [h @ u[k] + bu[k] for k in range(base)],
        c,
    )
    assert got_h.shape == (BATCH, UNITS) and got_c.shape == (BATCH, UNITS)
    np.testing.assert_allclose(got_h.numpy(), want_h, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_c.numpy(), want_c, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(h2.numpy(), got_h.numpy())


def test_controller_samples_run_under_xla_in_an_rnn():
    space = cell_space.ptb_cell(8)
    x, h, c = inputs(3)
    for arch in Controller(space, seed=4).sample(2):
        description = cell_space.CellDescription.from_architecture(arch, space)
        cell = make_cell(description, dropout=0.3, recurrent_dropout=0.3, seed=0)
        rnn = keras.layers.RNN(cell, return_sequences=True, return_state=True)
        eager = rnn(x, initial_state=[h, c])
        compiled = tf.function(
            lambda x, h, c: rnn(x, initial_state=[h, c]), jit_compile=True
        )(tf.constant(x), tf.constant(h), tf.constant(c))
        for a, b in zip(eager, compiled):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
        train = tf.function(lambda x: rnn(x, training=True)[0], jit_compile=True)(x)
        assert train.shape == (BATCH, TIME, UNITS)


def test_recurrent_dropout_acts_in_training_only():
    cell = make_cell(cell_space.lstm_like(), recurrent_dropout=0.5, seed=3)
    rnn = keras.layers.RNN(cell, return_sequences=True)
    x, _, _ = inputs(4)
    a = rnn(x, training=True).numpy()
    b = rnn(x, training=False).numpy()
    assert not np.allclose(a, b)  # Dropout acts in training ...
    np.testing.assert_allclose(b, rnn(x).numpy())  # ... and not at inference.
    mask = cell.get_recurrent_dropout_mask(tf.ones((BATCH, UNITS)))
    assert set(np.unique(mask.numpy())) <= {0.0, 2.0}
    cell.reset_recurrent_dropout_mask()


def test_config_round_trip():
    cell = make_cell(cell_space.paper_example(), use_bias=True, dropout=0.1, seed=5)
    config = cell.get_config()
    clone = NASCell.from_config(config)
    assert clone.description == cell.description
    assert clone.get_config() == config
    assert keras.saving.get_registered_object("nas_tf>NASCell") is NASCell
