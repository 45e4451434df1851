"""The readable reference policy (`nas_tf.policy`) and the fast `Controller` agree exactly.

Given the same weights (copied by name), both give the same log-probabilities
and entropies, the same samples from the same uniform draws, the same
REINFORCE gradients and the same Adam step.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from conftest import conditional_space, layered_space
from nas_tf import space as space_lib
from nas_tf.controller import Controller, ControllerConfig
from nas_tf.policy import MIN_UNIFORM, ReferencePolicy
from nas_tf.reinforce import Reinforce, ReinforceConfig

CASES = [
    (layered_space, 3, ControllerConfig()),
    (layered_space, 4, ControllerConfig.paper()),
    (conditional_space, None, ControllerConfig(temperature=2.0, tanh_constant=1.5)),
    (conditional_space, None, ControllerConfig(unroll_steps=0)),  # The while-loop rollout.
]


def _pair(make_space, config, seed=5):
    """A fast controller and a reference policy holding the fast one's weights."""
    fast = Controller(make_space(), config, seed=seed)
    reference = ReferencePolicy(make_space(), config, seed=seed + 1)
    reference.set_weights(fast.get_weights())
    return fast, reference


def fast_path_uniforms(controller, num):
    """The uniforms the fast path's next `sample_with_log_prob(num)` draws, per decision.

    It draws one row of [B, cat_width + num_anchors] per decision from its
    Philox generator: a categorical decision reads its kind's columns, an
    anchor the column of each source.
    """
    space, table = controller.space, controller._table
    generator = tf.random.Generator.from_state(controller.get_rng_state(),
                                               tf.random.Algorithm.PHILOX)
    anchors = [d.name for d in space.decisions if isinstance(d, space_lib.Anchor)]
    uniforms = [{} for _ in range(num)]
    for t, d in enumerate(space.decisions):
        noise = generator.uniform([num, table.cat_width + table.num_anchors], MIN_UNIFORM, 1.0)
        if isinstance(d, space_lib.Anchor):
            columns = [table.cat_width + anchors.index(s) for s in d.sources]
        else:
            offset = int(table.arrays["offset"][t])
            columns = list(range(offset, offset + d.num_choices))
        for b in range(num):
            uniforms[b][d.name] = noise.numpy()[b, columns]
    return uniforms


def test_weights_have_the_same_names_and_shapes_both_ways():
    fast, reference = _pair(layered_space, ControllerConfig())
    names = {k: v.shape for k, v in fast.get_weights().items()}
    assert {k: v.shape for k, v in reference.get_weights().items()} == names
    other = ReferencePolicy(layered_space(), ControllerConfig(), seed=11)
    fast.set_weights(other.get_weights())
    for name, value in other.get_weights().items():
        np.testing.assert_array_equal(fast.get_weights()[name], value)


@pytest.mark.parametrize("make_space, depth, config", CASES)
def test_same_samples_log_probabilities_and_entropies(make_space, depth, config):
    fast, reference = _pair(make_space, config)
    uniforms = fast_path_uniforms(fast, 6)
    archs, log_q = fast.sample_with_log_prob(6, depth=depth)
    ref_archs, ref_log_q = reference.sample(6, depth=depth, uniforms=uniforms)
    assert ref_archs == archs
    np.testing.assert_allclose(ref_log_q, log_q, atol=1e-5)
    log_prob, entropy = fast.log_prob_and_entropy(archs)
    ref_log_prob, ref_entropy = reference.log_prob_and_entropy(archs)
    np.testing.assert_allclose(ref_log_prob.numpy(), log_prob, atol=1e-5)
    np.testing.assert_allclose(ref_entropy.numpy(), entropy, atol=1e-5)


@pytest.mark.parametrize("make_space, depth, config", CASES[1:])
def test_same_reinforce_gradients_and_adam_step(make_space, depth, config):
    fast, reference = _pair(make_space, config)
    archs = fast.sample(5, depth=depth)
    rewards = np.array([0.3, 0.9, 0.1, 0.5, 0.7])
    learner = Reinforce(fast, ReinforceConfig.paper(learning_rate=0.01))
    loss, grads, _ = learner.loss_and_gradients(archs, rewards)
    # The paper's first baseline: the batch's mean reward.
    ref_loss, ref_grads = reference.gradients(archs, rewards - rewards.mean())
    assert float(ref_loss) == pytest.approx(loss, abs=1e-5)
    for name, grad in zip(fast.weight_layout.names, grads):
        np.testing.assert_allclose(ref_grads[name].numpy(), grad, atol=1e-5, err_msg=name)
    reference.optimizer.learning_rate.assign(0.01)
    learner.update(archs, rewards)
    reference.update(archs, rewards)
    assert reference.baseline == pytest.approx(learner.baseline)
    after = fast.get_weights()
    for name, value in reference.get_weights().items():
        np.testing.assert_allclose(value, after[name], atol=1e-5, err_msg=name)


def test_zero_logits_give_entropy_sum_log_n_and_uniform_samples():
    reference = ReferencePolicy(conditional_space(), ControllerConfig.paper(), seed=2)
    reference.set_weights({name: np.zeros(value.shape)
                           for name, value in reference.get_weights().items()
                           if name.startswith("head_") or name.startswith("attention_v/")})
    dense = space_lib.Architecture(
        {"model": "dense", "units": 8, "rate": 0.2, "a0": (), "a1": (1,), "a2": (0, 1)})
    linear = space_lib.Architecture({"model": "linear", "rate": 0.1, "a0": (), "a2": (1, 0)})
    log_prob, entropy = reference.log_prob_and_entropy([dense, linear])
    # dense: model(2), units(3), rate(2), a1 (1 bit), a2 (2 bits); linear: no units, a2 one live bit.
    expected = [math.log(2) + math.log(3) + math.log(2) + 3 * math.log(2), 3 * math.log(2)]
    np.testing.assert_allclose(entropy.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(log_prob.numpy(), -np.array(expected), rtol=1e-6)
    # A uniform policy: every decision is a fair draw.
    archs, log_q = reference.sample(4)
    for arch, lq in zip(archs, log_q):
        assert lq == pytest.approx(-expected[0] if arch["model"] == "dense" else -expected[1],
                                   rel=1e-6)


def test_temperature_scales_the_logits_and_their_gradient():
    """TuNAS's check: at temperature T the logits, and so d log p / d logits, scale by 1/T."""
    space = space_lib.Space((space_lib.Categorical("op", ("a", "b", "c")),))
    plain = ReferencePolicy(space, ControllerConfig.paper(), seed=4)
    hot = ReferencePolicy(space, ControllerConfig.paper(temperature=2.0), seed=4)
    hot.set_weights(plain.get_weights())
    arch = space_lib.Architecture({"op": "b"})
    _, g_plain = plain.gradients([arch], [1.0])
    _, g_hot = hot.gradients([arch], [1.0])
    # The head's bias enters the logits once: its gradient is (onehot - p) / T.
    bias = [n for n in g_plain if n.startswith("head_") and n.endswith("/bias")][0]
    p_hot = np.exp(hot.log_prob_and_entropy([space_lib.Architecture({"op": v}) for v in "abc"])[0])
    np.testing.assert_allclose(-g_hot[bias].numpy(), (np.eye(3)[1] - p_hot) / 2.0, atol=1e-6)
    p = np.exp(plain.log_prob_and_entropy([space_lib.Architecture({"op": v}) for v in "abc"])[0])
    np.testing.assert_allclose(-g_plain[bias].numpy(), np.eye(3)[1] - p, atol=1e-6)
