"""Controller maths checked against an independent numpy evaluation."""

import math

import numpy as np
import pytest

from conftest import conditional_space, layered_space
from nas_tf import controller as controller_lib
from nas_tf import space as space_lib
from nas_tf.controller import Controller, ControllerConfig


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _lstm(x, h, c, w, prefix):
    z = x @ w[prefix + "/kernel"] + h @ w[prefix + "/recurrent_kernel"] + w[prefix + "/bias"]
    i, f, g, o = np.split(z, 4)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    return _sigmoid(o) * np.tanh(c), c


def _shape(controller, logits):
    """The controller's logit shaping: / temperature, then C * tanh (ENAS-style)."""
    config = controller.config
    if config.temperature is not None:
        logits = logits / config.temperature
    if config.tanh_constant is not None:
        logits = config.tanh_constant * np.tanh(logits)
    return logits


def numpy_rollout(controller, arch):
    """Log-prob, entropy and per-decision probabilities of `arch`, in float64 numpy."""
    w = {k: v.astype(np.float64) for k, v in controller.get_weights().items()}
    space, units = controller.space, controller.config.units
    layers = controller.config.num_layers
    h, c = [np.zeros(units)] * layers, [np.zeros(units)] * layers
    x = w["go/kernel"][0]
    log_prob, entropy, probs, anchors, seen = 0.0, 0.0, {}, {}, {}
    for d in space.decisions:
        if not space.is_active(d, seen, arch.depth):
            continue
        for l in range(layers):
            h[l], c[l] = _lstm(x, h[l], c[l], w, f"lstm_{l}")
            x = h[l]
        out = x
        if isinstance(d, space_lib.Anchor):
            bits = arch[d.name]
            query = out @ w["attention_curr/kernel"]
            p_on, chosen = [], []
            for src, bit in zip(d.sources, bits):
                if src not in anchors:
                    p_on.append(None)
                    continue
                # Zoph & Le 2017, sec. 3.3: sigmoid(v^T tanh(W_prev h_j + W_curr h_i)).
                logit = np.tanh(anchors[src] @ w["attention_prev/kernel"] + query) @ w[
                    "attention_v/kernel"
                ]
                p = _sigmoid(_shape(controller, logit[0]))
                p_on.append(p)
                log_prob += math.log(p if bit else 1.0 - p)
                entropy += -(p * math.log(p) + (1 - p) * math.log(1 - p))
                if bit:
                    chosen.append(anchors[src])
            probs[d.name] = p_on
            x = np.mean(chosen, axis=0) if chosen else np.zeros(units)
            anchors[d.name] = out
        else:
            slug = controller_lib._slug(d.kind)
            logits = _shape(controller, out @ w[f"head_{slug}/kernel"] + w[f"head_{slug}/bias"])
            p = np.exp(logits - logits.max())
            p /= p.sum()
            k = d.index(arch[d.name])
            log_prob += math.log(p[k])
            entropy += -float(np.sum(p * np.log(p)))
            probs[d.name] = p
            x = w[f"embed_{slug}/embeddings"][k]
            seen[d.name] = arch[d.name]
    return log_prob, entropy, probs


@pytest.mark.parametrize(
    "make_space, depth, config",
    [
        (layered_space, 3, ControllerConfig()),
        (layered_space, 4, ControllerConfig.paper()),
        (conditional_space, None, ControllerConfig(temperature=2.0, tanh_constant=1.5)),
        # The while-loop rollout (long spaces), on the same spaces.
        (layered_space, 3, ControllerConfig(unroll_steps=0)),
        (conditional_space, None, ControllerConfig(unroll_steps=0, temperature=2.0)),
    ],
)
def test_log_prob_and_entropy_match_numpy(make_space, depth, config):
    controller = Controller(make_space(), config, seed=7)
    archs = controller.sample(6, depth=depth)
    log_prob, entropy = controller.log_prob_and_entropy(archs)
    for arch, lp, ent in zip(archs, log_prob, entropy):
        np_lp, np_ent, _ = numpy_rollout(controller, arch)
        assert lp == pytest.approx(np_lp, abs=1e-4)
        assert ent == pytest.approx(np_ent, abs=1e-4)


@pytest.mark.parametrize("make_space", [layered_space, conditional_space])
def test_unrolled_and_looped_rollouts_are_the_same_policy(make_space):
    """Same samples from the same seed, same scores, probabilities and REINFORCE gradients."""
    from nas_tf.reinforce import Reinforce, ReinforceConfig

    unrolled = Controller(make_space(), ControllerConfig(unroll_steps=100), seed=3)
    looped = Controller(make_space(), ControllerConfig(unroll_steps=0), seed=3)
    archs, log_q = unrolled.sample_with_log_prob(7)
    looped_archs, looped_log_q = looped.sample_with_log_prob(7)
    assert looped_archs == archs
    np.testing.assert_allclose(looped_log_q, log_q, atol=1e-5)
    for a, b in zip(unrolled.log_prob_and_entropy(archs), looped.log_prob_and_entropy(archs)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    for pa, pb in zip(unrolled.probabilities(archs), looped.probabilities(archs)):
        assert pa.keys() == pb.keys()
        for name in pa:
            np.testing.assert_allclose(pa[name], pb[name], atol=1e-6)
    rewards = [float(i) for i in range(7)]
    config = ReinforceConfig(entropy_weight=0.1, topk_size=0, topk_weight=0.0)
    loss_a, grads_a, _ = Reinforce(unrolled, config).loss_and_gradients(archs, rewards, log_q)
    loss_b, grads_b, _ = Reinforce(looped, config).loss_and_gradients(archs, rewards, log_q)
    assert loss_a == pytest.approx(loss_b, abs=1e-5)
    for ga, gb in zip(grads_a, grads_b):
        np.testing.assert_allclose(ga, gb, atol=1e-5)


def test_anchor_probabilities_match_the_formula():
    controller = Controller(layered_space(depth=4), seed=11)
    archs = controller.sample(4, depth=4)
    for arch, probs in zip(archs, controller.probabilities(archs)):
        _, _, np_probs = numpy_rollout(controller, arch)
        for i in range(1, 4):
            name = f"layer_{i}/anchor"
            np.testing.assert_allclose(probs[name], np_probs[name], atol=1e-5)
            assert probs[name].shape == (i,)


def test_zero_logits_give_entropy_sum_log_n():
    space = conditional_space()
    controller = Controller(space, seed=1)
    controller.set_weights({name: np.zeros(value.shape) for name, value in
                            controller.get_weights().items()
                            if name.startswith("head_") or name.startswith("attention_v/")})
    dense = space_lib.Architecture(
        {"model": "dense", "units": 8, "rate": 0.2, "a0": (), "a1": (1,), "a2": (0, 1)}
    )
    linear = space_lib.Architecture({"model": "linear", "rate": 0.1, "a0": (), "a2": (1, 0)})
    log_prob, entropy = controller.log_prob_and_entropy([dense, linear])
    # dense: model(2), units(3), rate(2), a1 (1 bit), a2 (2 bits); linear: no units, a2 one live bit.
    expected_dense = math.log(2) + math.log(3) + math.log(2) + 3 * math.log(2)
    expected_linear = math.log(2) + math.log(2) + 1 * math.log(2)
    np.testing.assert_allclose(entropy, [expected_dense, expected_linear], rtol=1e-6)
    np.testing.assert_allclose(log_prob, [-expected_dense, -expected_linear], rtol=1e-6)


def test_sampling_is_batched_seeded_and_respects_depth():
    space = layered_space(depth=5)
    a = Controller(space, seed=5).sample(8, depth=3)
    b = Controller(space, seed=5).sample(8, depth=3)
    assert a == b and len(a) == 8
    assert all(arch.depth == 3 and "layer_3/size" not in arch.values for arch in a)
    assert len(set(x.to_json() for x in a)) > 1
    deepest = Controller(space, seed=5).sample(2)
    assert all(arch.depth == 5 for arch in deepest)


def test_rng_state_is_kept_current_by_sampling_and_reset():
    controller = Controller(layered_space(depth=4), seed=3)
    start = controller.get_rng_state()
    np.testing.assert_array_equal(start, controller.rng.state.numpy())
    first = controller.sample(3)
    moved = controller.get_rng_state()  # Returned by the sampling call itself.
    assert not np.array_equal(moved, start)
    np.testing.assert_array_equal(moved, controller.rng.state.numpy())
    controller.set_rng_state(start)
    np.testing.assert_array_equal(controller.get_rng_state(), start)
    assert controller.sample(3) == first


def test_sampled_log_probabilities_are_those_of_the_samples():
    controller = Controller(layered_space(depth=4), seed=3)
    archs, log_q = controller.sample_with_log_prob(6, depth=4)
    scored, _ = controller.log_prob_and_entropy(archs)
    np.testing.assert_allclose(log_q, scored, atol=1e-5)
    assert np.all(log_q < 0)


def test_paper_preset_and_initialisation_range():
    config = ControllerConfig.paper()
    assert (config.units, config.num_layers, config.init_range) == (35, 2, 0.08)
    assert config.temperature is None and config.tanh_constant is None
    assert ControllerConfig().tanh_constant == 2.5  # The library default (measured).
    controller = Controller(layered_space(), config, seed=0)
    for name, value in controller.get_weights().items():
        assert np.abs(value).max() <= 0.08, name


def test_growing_the_space_keeps_learned_weights():
    small = layered_space(depth=2)
    controller = Controller(small, seed=2)
    before = controller.get_weights()
    grown = space_lib.Space(small.decisions + (space_lib.Categorical("extra", ("a", "b", "c")),))
    controller.set_space(grown)
    after = controller.get_weights()
    assert set(before) < set(after)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value)
    assert "extra" in controller.sample(1)[0].values


def test_temperature_and_tanh_clipping_shape_the_logits():
    space = space_lib.Space((space_lib.Categorical("x", tuple(range(5))),))
    plain = Controller(space, ControllerConfig.paper(), seed=4)
    hot = Controller(space, ControllerConfig.paper(temperature=5.0), seed=4)
    clipped = Controller(space, ControllerConfig(tanh_constant=0.01), seed=4)
    arch = [space_lib.Architecture({"x": 0})]
    for c in (plain, hot, clipped):
        head = [n[: -len("/kernel")] for n in c.get_weights() if n.startswith("head_")][0]
        c.set_weights({head + "/kernel": np.zeros((35, 5)), head + "/bias": np.arange(5.0)})
    _, ent_plain = plain.log_prob_and_entropy(arch)
    _, ent_hot = hot.log_prob_and_entropy(arch)
    _, ent_clipped = clipped.log_prob_and_entropy(arch)
    assert ent_plain[0] < ent_hot[0] < ent_clipped[0] <= math.log(5) + 1e-6
    with pytest.raises(ValueError, match="temperature"):
        ControllerConfig(temperature=0.0)


def test_weights_checkpoint_errors_are_clear():
    controller = Controller(layered_space(depth=2), seed=0)
    with pytest.raises(ValueError, match="lacks"):
        controller.set_weights({"nope/kernel": np.zeros(3)})
    name = "go/kernel"
    with pytest.raises(ValueError, match="shape"):
        controller.set_weights({name: np.zeros((2, 2))})


def test_controllers_of_one_space_share_their_traced_graphs_not_their_weights():
    from nas_tf import controller as controller_lib
    from nas_tf.reinforce import Reinforce, ReinforceConfig

    space = layered_space(depth=3)
    first = Reinforce(Controller(space, seed=11), ReinforceConfig(batch_size=4))
    archs, log_q = first.controller.sample_with_log_prob(4)
    first.update(archs, [0.1, 0.9, 0.3, 0.5], log_q.tolist())
    graphs = first.controller._graphs
    traces = graphs.sample.function.experimental_get_tracing_count()
    second = Reinforce(Controller(space, seed=12), ReinforceConfig(batch_size=4))
    assert second.controller._graphs is graphs  # One trace per process, not per controller.
    other, other_q = second.controller.sample_with_log_prob(4)
    assert graphs.sample.function.experimental_get_tracing_count() == traces
    # Each controller samples with its own weights and generator: a fresh
    # controller with the second's seed, alone, draws the same.
    assert other == Controller(space, seed=12).sample(4)
    before = first.controller.get_weights()
    second.update(other, [0.2, 0.4, 0.6, 0.8], other_q.tolist())
    after = first.controller.get_weights()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert int(first.adam.iterations.numpy()) == 1
    assert int(second.adam.iterations.numpy()) == 1
    assert [id(v.value) for v in second.controller.trainable_variables] == [
        id(v) for v in controller_lib.trainables(second.controller.weights)]


def test_flat_call_gives_the_functions_results_for_each_nest_and_shape():
    import tensorflow as tf

    from nas_tf.graph_call import FlatCall

    fn = tf.function(lambda w, x: (tf.matmul(x, w["a"]) + w["b"], w["b"].read_value()),
                     autograph=False, reduce_retracing=True)  # fmt: skip
    call = FlatCall(fn, weight_args=1)
    first = {"a": tf.Variable(np.eye(2, dtype=np.float32)), "b": tf.Variable([1.0, 2.0])}
    second = {"a": tf.Variable(2 * np.eye(2, dtype=np.float32)), "b": tf.Variable([0.0, -1.0])}
    for x in (np.ones((3, 2), np.float32), np.arange(4, dtype=np.float32).reshape(2, 2)):
        for w in (first, second, first):  # Repeated calls use the kept concrete function.
            for _ in range(2):
                got, want = call(w, tf.constant(x)), fn(w, tf.constant(x))
                np.testing.assert_array_equal(got[0].numpy(), want[0].numpy())
                np.testing.assert_array_equal(got[1].numpy(), want[1].numpy())
    first["b"].assign([5.0, 5.0])  # A variable's new value is read, not a copy.
    np.testing.assert_array_equal(call(first, tf.constant(np.zeros((3, 2), np.float32)))[0],
                                  np.full((3, 2), 5.0))  # fmt: skip
    assert fn.experimental_get_tracing_count() <= 2


def test_encoding_is_cached_by_architecture_and_still_validates():
    controller = Controller(layered_space(), ControllerConfig(), seed=5)
    archs = controller.sample(4, depth=3)
    first = controller.encode(archs)
    again = controller.encode(list(reversed(archs)))  # From the cache, in the asked order.
    np.testing.assert_array_equal(again[0], first[0][::-1])
    np.testing.assert_array_equal(again[1], first[1][::-1])
    bad = space_lib.Architecture(dict(archs[0].values, **{"layer_0/size": 2}), archs[0].depth)
    for _ in range(2):  # A rejected architecture is never cached.
        with pytest.raises(space_lib.ArchitectureError, match="layer_0/size"):
            controller.encode([bad])


def test_weights_live_in_one_vector_and_are_set_by_name():
    controller = Controller(layered_space(depth=2), seed=3)
    (flat,) = controller.trainable_variables
    before = controller.get_weights()
    assert flat.shape == (sum(v.size for v in before.values()),)
    assert list(before) == controller.weight_layout.names
    assert before["lstm_0/kernel"].shape == (35, 140) and before["go/kernel"].shape == (1, 35)
    # Setting some weights by name leaves the others as they were.
    controller.set_weights({"go/kernel": np.ones((1, 35)), "lstm_1/bias": np.zeros(140)})
    after = controller.get_weights()
    for name, value in before.items():
        expected = {"go/kernel": np.ones((1, 35)), "lstm_1/bias": np.zeros(140)}.get(name, value)
        np.testing.assert_array_equal(after[name], expected)
    # A weight starts from a stream of its own: the same in a controller of a larger space.
    grown = space_lib.Space(layered_space(depth=2).decisions
                            + (space_lib.Categorical("extra", (1, 2)),))
    other = Controller(grown, seed=3).get_weights()
    for name, value in before.items():
        np.testing.assert_array_equal(other[name], value)
