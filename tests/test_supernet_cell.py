"""The recurrent-cell supernet (nas_tf.supernets.cell) and its batches (text_batches).

Tiny sizes throughout (vocab 30, 8 units, 6 steps, batch 4, base 4 unless a
test needs base 8): the checks are exact, not statistical.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from nas_tf import space as space_lib
from nas_tf.algorithms.base import random_architecture
from nas_tf.children.cell import run_cell
from nas_tf.data import ptb
from nas_tf.spaces import cell as cell_space
from nas_tf.supernets.cell import CellSupernet
from nas_tf.supernets.text_batches import TextBatches

VOCAB, UNITS, STEPS, BATCH = 30, 8, 6, 4


def make_net(base=4, **kwargs):
    kwargs.setdefault("instrument", True)
    return CellSupernet(base=base, vocab_size=VOCAB, embedding_size=UNITS, units=UNITS,
                        steps=STEPS, seed=1, **kwargs)


def tokens(seed):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, VOCAB, (BATCH, STEPS)).astype(np.int32),
            rng.integers(0, VOCAB, (BATCH, STEPS)).astype(np.int32))


def code_spec(net):
    return tf.TensorSpec([net.code_length], tf.int32)


@pytest.fixture(scope="module")
def traced():
    """One instrumented base-4 supernet with traced train and eval steps."""
    net = make_net(dropout=0.1, weight_decay=1e-4)
    sig = [*net.input_signature, code_spec(net)]

    @tf.function(input_signature=sig)
    def train(x, y, code):
        with tf.GradientTape() as tape:
            loss = net.train_loss(x, y, code)
        grads = tape.gradient(loss, net.trainable_variables)
        return loss, grads

    @tf.function(input_signature=sig)
    def evaluate(x, y, code):
        return net.eval_sums(x, y, code)

    return net, train, evaluate


def test_contract_and_encode_layout():
    net = make_net(base=2, instrument=False)
    assert net.code_length == 2 * 3 + 4
    assert net.score_name == "perplexity" and net.higher_is_better is False
    assert net.score(3 * math.log(7.0), 3) == pytest.approx(7.0)
    assert net.reward(7.0) == pytest.approx(80.0 / 7.0)  # ENAS's reward, not c / ppl^2.
    assert net.reward(net.score(1e6, 1)) == 0.0
    desc = cell_space.paper_example()
    code = net.encode(desc.to_architecture())
    # [combine, activation] per node, inject combine, inject activation, memory, inject node.
    assert code.dtype == np.int32
    assert code.tolist() == [0, 1, 1, 3, 1, 2, 0, 3, 1, 0]
    # Shared weights: embedding, fused W_k and U_k, softmax: independent of the code.
    shapes = sorted(tuple(v.shape) for v in net.trainable_variables)
    assert shapes == sorted([(VOCAB, UNITS), (UNITS, 2 * UNITS), (UNITS, 2 * UNITS),
                             (UNITS, VOCAB), (VOCAB,)])


def test_one_trace_for_many_architectures(traced):
    net, train, evaluate = traced
    x, y = tokens(0)
    for s in range(30):
        code = net.encode(random_architecture(net.space, np.random.default_rng(s)))
        loss, grads = train(x, y, code)
        total, count = evaluate(x, y, code)
        assert np.isfinite(loss.numpy()) and np.isfinite(total.numpy())
        assert count.numpy() == BATCH * STEPS and total.dtype == tf.float32
        assert all(g is not None for g in grads)
    assert train.experimental_get_tracing_count() == 1
    assert evaluate.experimental_get_tracing_count() == 1


def test_only_sampled_branches_run(traced):
    net, train, evaluate = traced
    x, y = tokens(1)
    for s in (100, 101, 102):
        arch = random_architecture(net.space, np.random.default_rng(s))
        values = arch.values
        net.branch_runs.assign(tf.zeros_like(net.branch_runs))
        train(x, y, net.encode(arch))  # Forward and backward: branches run once per step.
        evaluate(x, y, net.encode(arch))
        expected = {f"{name}={values[name]}" for name in values
                    if name != cell_space.MEMORY_OUT}
        for name, runs in net.runs().items():
            assert runs == (2 * STEPS if name in expected else 0), name
        assert len(expected) == 2 * 7 + 3


@pytest.mark.parametrize("functions", sorted(cell_space.FUNCTIONS))
def test_step_equals_run_cell(functions):
    for base in (2, 8):
        net = make_net(base=base, instrument=False, functions=functions)
        step = tf.function(net.step)
        rng = np.random.default_rng(base)
        for s in range(4):
            arch = random_architecture(net.space, np.random.default_rng(10 * base + s))
            desc = cell_space.CellDescription.from_architecture(arch)
            wx = [tf.constant(rng.normal(size=(BATCH, UNITS)), tf.float32) for _ in range(base)]
            uh = [tf.constant(rng.normal(size=(BATCH, UNITS)), tf.float32) for _ in range(base)]
            c = tf.constant(rng.normal(size=(BATCH, UNITS)), tf.float32)
            want_h, want_c = run_cell(desc, wx, uh, c)
            got_h, got_c = step(tf.concat(wx, -1), tf.concat(uh, -1), c, net.encode(arch))
            np.testing.assert_allclose(got_h.numpy(), want_h.numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(got_c.numpy(), want_c.numpy(), rtol=1e-5, atol=1e-6)


def test_eval_sums_equal_the_stand_alone_recurrence(traced):
    """The whole window: embedding, W_k / U_k, run_cell per step, softmax, from h = c = 0."""
    net, _, evaluate = traced
    x, y = tokens(2)
    arch = random_architecture(net.space, np.random.default_rng(7))
    desc = cell_space.CellDescription.from_architecture(arch)
    h = c = tf.zeros([BATCH, UNITS])
    total = 0.0
    for t in range(STEPS):
        emb = tf.gather(net.embedding, x[:, t])
        wx = tf.split(emb @ net.w, net.base, -1)
        uh = tf.split(h @ net.u, net.base, -1)
        h, c = run_cell(desc, wx, uh, c)
        logits = h @ net.softmax_w + net.softmax_b
        total += tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y[:, t], logits))
    got, count = evaluate(x, y, net.encode(arch))
    assert float(count) == BATCH * STEPS
    np.testing.assert_allclose(got.numpy(), float(total), rtol=1e-5)


@pytest.mark.parametrize("functions", sorted(cell_space.FUNCTIONS))
def test_every_choice_changes_the_output(functions):
    """The late-binding check: each choice of each decision gives its own (h, c)."""
    net = make_net(base=4, instrument=False, functions=functions)
    step = tf.function(net.step, input_signature=[tf.TensorSpec([BATCH, 4 * UNITS])] * 2 + [
        tf.TensorSpec([BATCH, UNITS]), code_spec(net)])
    rng = np.random.default_rng(3)
    wx, uh = (tf.constant(rng.normal(size=(BATCH, 4 * UNITS)), tf.float32) for _ in range(2))
    c = tf.constant(rng.normal(size=(BATCH, UNITS)), tf.float32)
    # All add / tanh: every node's value has both signs, so relu != identity anywhere.
    values = {}
    for d in net.space.decisions:
        values[d.name] = {cell_space.COMBINE_KIND: "add", cell_space.ACTIVATION_KIND: "tanh",
                          cell_space.INDEX_KIND: 0}[d.kind]
    base_code = net.encode(space_lib.Architecture(values=values))
    for position in range(net.code_length):
        decision = net.space[net._decision_names[position]]
        outs = []
        for choice in range(decision.num_choices):
            code = base_code.copy()
            code[position] = choice
            h, c_t = step(wx, uh, c, code)
            outs.append(np.concatenate([h.numpy().ravel(), c_t.numpy().ravel()]))
        for i in range(len(outs)):
            for j in range(i):
                assert np.abs(outs[i] - outs[j]).max() > 1e-6, (decision.name, i, j)
    assert step.experimental_get_tracing_count() == 1


# -- control experiment 1: max and sin (functions="extended") -------------------------


def extended_example():
    """A base-2 cell with max and sin in nodes and in the cell inject."""
    return cell_space.CellDescription(
        nodes=(("max", "sin"), ("elem_mult", "relu"), ("add", "sin")),
        inject=("max", "tanh"), inject_node=1, memory_node=0)


def test_extended_encode_keeps_the_papers_indices_and_adds_branches():
    paper, net = make_net(base=2, instrument=False), make_net(base=2, functions="extended")
    assert net.space == cell_space.ptb_cell(2, "extended") and net.code_length == paper.code_length
    arch = cell_space.paper_example().to_architecture()
    assert net.encode(arch).tolist() == paper.encode(arch).tolist()
    # max is combination 2, sin activation 4 (appended after the paper's).
    assert net.encode(extended_example().to_architecture()).tolist() == [
        2, 4, 1, 3, 0, 4, 2, 1, 0, 1]
    with pytest.raises(space_lib.ArchitectureError, match="'max'"):
        paper.encode(extended_example().to_architecture())
    names = set(net.branch_names)
    assert {"node_0_combine=max", "node_2_activation=sin", "inject_combine=max",
            "inject_activation=sin"} <= names
    assert len(names) == 3 * (3 + 5) + 3 + 5 + 3
    assert not any("max" in n or "sin" in n for n in paper.branch_names)


def test_extended_step_matches_numpy():
    """max and sin against numpy, written out by hand for `extended_example`."""
    net = make_net(base=2, instrument=False, functions="extended")
    rng = np.random.default_rng(4)
    wx, uh = (rng.normal(size=(BATCH, 2 * UNITS)).astype(np.float32) for _ in range(2))
    c = rng.normal(size=(BATCH, UNITS)).astype(np.float32)
    h_t, c_t = tf.function(net.step)(wx, uh, c, net.encode(extended_example().to_architecture()))
    (x1, x2), (h1, h2) = np.split(wx, 2, -1), np.split(uh, 2, -1)
    m = np.maximum(x1, h1)
    a1 = np.tanh(np.maximum(np.maximum(x2 * h2, 0.0), c))
    np.testing.assert_allclose(h_t.numpy(), np.sin(np.sin(m) + a1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c_t.numpy(), m, rtol=1e-5, atol=1e-6)


def test_extended_one_trace_and_only_sampled_branches_run():
    net = make_net(base=2, functions="extended")
    sig = [*net.input_signature, code_spec(net)]

    @tf.function(input_signature=sig)
    def train(x, y, code):
        with tf.GradientTape() as tape:
            loss = net.train_loss(x, y, code)
        return loss, tape.gradient(loss, net.trainable_variables)

    x, y = tokens(3)
    archs = [extended_example().to_architecture(), cell_space.paper_example().to_architecture()]
    archs += [random_architecture(net.space, np.random.default_rng(s)) for s in range(3)]
    for arch in archs:
        net.branch_runs.assign(tf.zeros_like(net.branch_runs))
        loss, grads = train(x, y, net.encode(arch))
        assert np.isfinite(loss.numpy()) and all(g is not None for g in grads)
        expected = {f"{name}={value}" for name, value in arch.values.items()
                    if name != cell_space.MEMORY_OUT}
        for name, runs in net.runs().items():
            assert runs == (STEPS if name in expected else 0), name
    assert train.experimental_get_tracing_count() == 1


# -- TextBatches ----------------------------------------------------------------------


def tiny_corpus():
    words = [f"w{i}" for i in range(12)]
    rng = np.random.default_rng(0)

    def lines(n):
        return [" ".join(rng.choice(words, 9)) for _ in range(n)]

    return ptb.from_lines(lines(40), lines(8), lines(6))


def test_text_batches_deterministic_shifted_and_fixed():
    data = tiny_corpus()
    batches = TextBatches(data, batch_size=BATCH, steps=STEPS, seed=5)
    assert batches.steps_per_epoch == ((len(data.train) - 1) // STEPS) // BATCH
    again = TextBatches(data, batch_size=BATCH, steps=STEPS, seed=5)
    other = TextBatches(data, batch_size=BATCH, steps=STEPS, seed=6)
    for step in (0, 3, batches.steps_per_epoch + 1):
        x, y = batches.train(step)
        assert x.shape == y.shape == (BATCH, STEPS) and x.dtype == y.dtype == np.int32
        np.testing.assert_array_equal(x, again.train(step)[0])
        np.testing.assert_array_equal(y, again.train(step)[1])
        assert not np.array_equal(x, other.train(step)[0])
        # Targets are the next tokens of the training stream.
        for row_x, row_y in zip(x, y):
            start = next(i for i in range(len(data.train) - STEPS)
                         if np.array_equal(data.train[i:i + STEPS], row_x))
            np.testing.assert_array_equal(row_y, data.train[start + 1:start + 1 + STEPS])
    # One epoch visits disjoint windows; the next epoch reshuffles them.
    epoch = [batches.train(s)[0] for s in range(batches.steps_per_epoch)]
    starts = {tuple(r) for b in epoch for r in b}
    assert len(starts) == BATCH * batches.steps_per_epoch
    assert not np.array_equal(batches.train(0)[0], batches.train(batches.steps_per_epoch)[0])

    rows = ptb.batchify(data.valid, BATCH)
    assert batches.num_valid == (rows.shape[1] - 1) // STEPS >= 1
    for i in range(batches.num_valid):
        x, y = batches.valid(i)
        np.testing.assert_array_equal(x, rows[:, i * STEPS:(i + 1) * STEPS])
        np.testing.assert_array_equal(y, rows[:, i * STEPS + 1:(i + 1) * STEPS + 1])
    np.testing.assert_array_equal(batches.valid(batches.num_valid)[0], batches.valid(0)[0])
    np.testing.assert_array_equal(batches.valid(0)[0], again.valid(0)[0])
    assert batches.num_test >= 1 and batches.test(0)[0].shape == (BATCH, STEPS)


def test_text_batches_over_the_embedded_corpus():
    from nas_tf.data import text_corpus

    data = text_corpus.load("word")
    batches = TextBatches(data, batch_size=BATCH, steps=STEPS)
    x, y = batches.train(7)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    assert batches.num_valid > 1 and batches.num_test > 1
    with pytest.raises(ValueError):
        TextBatches(tiny_corpus(), batch_size=BATCH, steps=10_000)
