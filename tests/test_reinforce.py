"""Policy gradient: each option's maths against numpy, batching, presets, state, learning."""

import math

import keras
import numpy as np
import pytest

from conftest import layered_space
from nas_tf import rewards as rewards_lib
from nas_tf import space as space_lib
from nas_tf.controller import Controller, ControllerConfig
from nas_tf.reinforce import Reinforce, ReinforceConfig, advantages


def _learner(space, seed=0, controller=None, **config):
    """A learner with plain R - b advantages and no top-K term unless asked for."""
    config = dict(dict(advantage="baseline", topk_size=0, topk_weight=0.0), **config)
    return Reinforce(
        Controller(space, controller or ControllerConfig(), seed=seed), ReinforceConfig(**config)
    )


def _batch(learner, n, depth=2):
    archs = learner.controller.sample(n, depth=depth)
    log_prob, entropy = learner.controller.log_prob_and_entropy(archs)
    return archs, log_prob.astype(np.float64), entropy.astype(np.float64)


# -- the step's maths ----------------------------------------------------------------


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_one_step_moves_probability_with_the_advantage(sign):
    learner = _learner(layered_space(depth=3), learning_rate=0.01, ratio_clip=None)
    rewarded = learner.controller.sample(1, depth=3)[0]
    before = learner.controller.log_prob_and_entropy([rewarded])[0][0]
    learner.baseline = 0.0
    learner.update([rewarded], [sign])
    after = learner.controller.log_prob_and_entropy([rewarded])[0][0]
    assert (after - before) * sign > 0


def test_paper_loss_is_the_reinforce_estimator_and_the_baseline_an_ema():
    learner = Reinforce(Controller(layered_space(depth=2), ControllerConfig.paper()),
                        ReinforceConfig.paper(learning_rate=0.01))
    archs, log_prob, _ = _batch(learner, 3)
    learner.baseline = 0.5
    rewards = [1.0, 0.0, 0.25]
    loss = learner.update(archs, rewards)
    assert loss == pytest.approx(-np.mean((np.array(rewards) - 0.5) * log_prob), rel=1e-5)
    b = 0.5
    for r in rewards:
        b = 0.95 * b + 0.05 * r
    assert learner.baseline == pytest.approx(b)


def test_ppo_surrogate_matches_numpy_in_every_ratio_regime():
    learner = _learner(layered_space(depth=2), ratio_clip=0.2)
    archs, log_prob, _ = _batch(learner, 4)
    learner.baseline = 0.0
    rewards = np.array([1.0, -1.0, 2.0, -0.5])
    # Drawing probabilities chosen so the ratios fall inside and outside [0.8, 1.2].
    log_q = log_prob - np.log([0.5, 0.5, 1.5, 1.0])
    loss, _, _ = learner.loss_and_gradients(archs, rewards, log_q)
    ratio = np.exp(log_prob - log_q)
    surrogate = np.minimum(ratio * rewards, np.clip(ratio, 0.8, 1.2) * rewards)
    assert loss == pytest.approx(-np.mean(surrogate), rel=1e-5)


def test_on_policy_ppo_gradient_equals_reinforce_gradient():
    space = layered_space(depth=2)
    ppo = _learner(space, seed=4, ratio_clip=0.2, clip_norm=None)
    plain = _learner(space, seed=4, ratio_clip=None, clip_norm=None)
    archs, log_prob, _ = _batch(ppo, 5)
    rewards = [0.3, 0.9, 0.1, 0.5, 0.7]
    ppo.baseline = plain.baseline = 0.4
    _, g_ppo, _ = ppo.loss_and_gradients(archs, rewards, log_prob)
    _, g_plain, _ = plain.loss_and_gradients(archs, rewards)
    for a, b in zip(g_ppo, g_plain):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_advantage_transforms_match_numpy():
    r = np.array([3.0, 1.0, 4.0, 1.5, 9.0, 2.0])
    base = ReinforceConfig(advantage="baseline")
    adv, kept = advantages(r, 2.0, base)
    np.testing.assert_allclose(adv, r - 2.0)
    assert kept.all()
    adv, _ = advantages(r, 2.0, ReinforceConfig(advantage="normalized"))
    np.testing.assert_allclose(adv, (r - 2.0) / np.std(r), rtol=1e-6)
    adv, _ = advantages(r, 2.0, ReinforceConfig(advantage="rank"))
    np.testing.assert_allclose(adv, np.array([3, 0, 4, 1, 5, 2]) / 5 - 0.5)
    # Risk-seeking (Petersen et al. 2021): keep the top eps share, baseline = its quantile.
    adv, kept = advantages(r, 2.0, ReinforceConfig(advantage="baseline", risk_seeking=0.5))
    q = np.quantile(r, 0.5)
    np.testing.assert_array_equal(kept, r >= q)
    np.testing.assert_allclose(adv, np.where(r >= q, r - q, 0.0))


def test_risk_seeking_loss_averages_over_the_kept_samples_only():
    learner = _learner(layered_space(depth=2), ratio_clip=None, risk_seeking=0.5)
    archs, log_prob, _ = _batch(learner, 4)
    rewards = np.array([0.1, 0.8, 0.4, 0.9])
    loss, _, _ = learner.loss_and_gradients(archs, rewards)
    q = np.quantile(rewards, 0.5)
    kept = rewards >= q
    assert loss == pytest.approx(-np.sum((rewards - q) * log_prob * kept) / kept.sum(), rel=1e-5)


def test_topk_term_and_entropy_bonus_enter_the_loss_as_written():
    learner = _learner(layered_space(depth=2), ratio_clip=None, topk_size=2, topk_weight=0.5,
                       entropy_weight=0.1, batch_size=100)
    archs, log_prob, entropy = _batch(learner, 4)
    rewards = np.array([0.2, 0.7, 0.5, 0.1])
    for a, r in zip(archs, rewards):
        learner.add(a, r)
    assert [r for _, r in learner.topk] == [0.7, 0.5]
    learner.baseline = 0.3
    loss, _, _ = learner.loss_and_gradients(archs, rewards)
    top = np.array([log_prob[1], log_prob[2]])
    expected = -np.mean((rewards - 0.3) * log_prob) - 0.5 * np.mean(top) - 0.1 * np.mean(entropy)
    assert loss == pytest.approx(expected, rel=1e-5)


def test_entropy_gradient_raises_entropy_and_clipping_bounds_the_gradient():
    space = layered_space(depth=2)
    learner = _learner(space, seed=2, ratio_clip=None, entropy_weight=1.0, clip_norm=None)
    archs, _, _ = _batch(learner, 4)
    learner.baseline = 0.0
    _, grads, norm = learner.loss_and_gradients(archs, [0.0] * 4)  # Entropy term only.
    assert norm > 0
    # A small step along the negative gradient raises the sampled paths' entropy.
    before = learner.controller.log_prob_and_entropy(archs)[1].mean()
    weights = learner.controller.get_weights()
    learner.controller.set_weights({name: weights[name] - 0.01 / norm * g
                                    for name, g in zip(weights, grads)})
    assert learner.controller.log_prob_and_entropy(archs)[1].mean() > before
    clipped = _learner(space, seed=2, ratio_clip=None, entropy_weight=1.0, clip_norm=norm / 10)
    clipped.baseline = 0.0
    _, c_grads, c_norm = clipped.loss_and_gradients(archs, [0.0] * 4)
    assert c_norm == pytest.approx(norm, rel=1e-5)  # Reported before clipping.
    total = math.sqrt(sum(float(np.sum(g**2)) for g in c_grads))
    assert total == pytest.approx(norm / 10, rel=1e-4)
    for g, h in zip(grads, c_grads):
        np.testing.assert_allclose(h, g / 10, atol=1e-6)


def test_several_epochs_take_several_steps_per_batch():
    learner = _learner(layered_space(depth=2), update_epochs=3, batch_size=2)
    archs, log_prob, _ = _batch(learner, 2)
    learner.add(archs[0], 1.0, log_prob[0])
    learner.add(archs[1], 0.0, log_prob[1])
    assert learner.num_updates == 1 and int(learner.adam.iterations.numpy()) == 3


# -- feeding ---------------------------------------------------------------------------


def test_updates_fire_when_m_rewards_arrived_in_any_order():
    learner = _learner(layered_space(depth=2), batch_size=3, ratio_clip=None)
    archs = learner.controller.sample(7, depth=2)
    fired = [learner.add(a, float(i)) for i, a in enumerate(archs)]
    assert fired == [False, False, True, False, False, True, False]
    assert learner.num_updates == 2 and len(learner.pending) == 1
    with pytest.raises(ValueError, match="finite"):
        learner.add(archs[0], float("nan"))


def test_off_policy_samples_only_join_the_topk_buffer():
    learner = _learner(layered_space(depth=2), batch_size=2, topk_size=3, topk_weight=1.0)
    archs, log_q, _ = _batch(learner, 3)
    assert not learner.add(archs[0], 0.9, on_policy=False)  # e.g. made by mutation
    assert not learner.add(archs[1], 0.8)  # ratio_clip needs log q: not a PG sample
    assert learner.pending == [] and len(learner.topk) == 2
    learner.add(archs[2], 0.1, log_q[2])
    assert len(learner.pending) == 1
    learner.add(archs[0], 0.9, log_q[0])  # The same architecture again: still one entry.
    assert [r for _, r in learner.topk] == [0.9, 0.8, 0.1]


def test_refresh_keeps_adam_slots_when_the_space_grows():
    small = layered_space(depth=2)
    learner = _learner(small, batch_size=2, ratio_clip=None)
    for arch in learner.controller.sample(4, depth=2):
        learner.add(arch, float(arch["layer_0/size"]))
    slots = learner.get_slots()
    grown = space_lib.Space(small.decisions + (space_lib.Categorical("extra", (1, 2)),))
    learner.controller.set_space(grown)
    learner.refresh()
    after = learner.get_slots()
    assert set(slots) < set(after)
    for name, value in slots.items():
        np.testing.assert_array_equal(after[name], value)
    learner.update(learner.controller.sample(2, depth=2), [0.0, 1.0])  # Trains the grown space.


def test_growing_the_space_drops_buffered_samples_it_made_invalid():
    small = layered_space(depth=2)
    learner = Reinforce(Controller(small, seed=1), ReinforceConfig(batch_size=4))
    archs, log_q = learner.controller.sample_with_log_prob(3, depth=2)
    for arch, q in zip(archs, log_q):
        learner.add(arch, 1.0, q)
    assert len(learner.pending) == 3 and len(learner.topk) == 3
    grown = space_lib.Space(small.decisions + (space_lib.Categorical("extra", (1, 2)),))
    learner.controller.set_space(grown)
    learner.refresh()  # The old samples lack "extra": they cannot be scored any more.
    assert learner.pending == [] and learner.topk == []
    new, new_q = learner.controller.sample_with_log_prob(4, depth=2)
    for arch, q in zip(new, new_q):
        learner.add(arch, 0.5, q)
    assert learner.num_updates == 1


# -- presets and configuration -----------------------------------------------------------


def test_paper_preset_is_zoph_and_le_and_bad_config_is_refused():
    paper = ReinforceConfig.paper()
    assert (paper.learning_rate, paper.batch_size, paper.clip_norm, paper.ratio_clip) == (
        0.0006, 8, None, None)
    assert (paper.update_epochs, paper.topk_size, paper.entropy_weight, paper.advantage) == (
        1, 0, 0.0, "baseline")
    assert paper.risk_seeking is None
    assert ReinforceConfig.paper(learning_rate=0.0005).learning_rate == 0.0005  # PTB, sec. 4.2
    for bad, match in (
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(batch_size=0), "batch_size"),
        (dict(baseline_decay=1.0), "baseline_decay"),
        (dict(clip_norm=-1.0), "clip_norm"),
        (dict(advantage="z"), "advantage"),
        (dict(risk_seeking=0.0), "risk_seeking"),
        (dict(ratio_clip=None, update_epochs=2), "update_epochs"),
        (dict(topk_size=0, topk_weight=1.0), "topk_size"),
    ):
        with pytest.raises(ValueError, match=match):
            ReinforceConfig(**bad)


def test_paper_rewards():
    assert rewards_lib.cifar10_reward([0.1, 0.9, 0.5, 0.6, 0.7, 0.8, 0.2]) == pytest.approx(0.8**3)
    assert rewards_lib.cifar10_reward([0.5]) == pytest.approx(0.125)
    assert rewards_lib.ptb_reward(80.0) == pytest.approx(80.0 / 6400.0)
    assert rewards_lib.ptb_reward(1e200) == 0.0  # Squared, it would overflow.
    assert 0.0 < rewards_lib.ptb_reward(1e150) < 1e-298
    for bad in (lambda: rewards_lib.ptb_reward(0.0), lambda: rewards_lib.cifar10_reward([]),
                lambda: rewards_lib.cifar10_reward([0.5, float("nan")])):
        with pytest.raises(ValueError):
            bad()


# -- state and learning ---------------------------------------------------------------------


def test_state_round_trip_restores_weights_slots_rng_and_buffers():
    space = layered_space(depth=3)
    config = dict(batch_size=2, learning_rate=0.01, topk_size=2, topk_weight=0.5)
    a = _learner(space, seed=3, **config)
    archs, log_q = a.controller.sample_with_log_prob(5, depth=3)
    for arch, q in zip(archs, log_q):
        a.add(arch, 1.0 if arch["layer_0/size"] == 1 else 0.0, q)
    state, arrays = a.get_state(), a.get_arrays()
    b = _learner(space, seed=42, **config)
    b.set_state(state, arrays)
    assert b.pending == a.pending and b.topk == a.topk
    more, more_q = a.controller.sample_with_log_prob(4, depth=3)
    assert b.controller.sample(4, depth=3) == more
    for arch, q in zip(more, more_q):
        a.add(arch, 0.3, q)
        b.add(arch, 0.3, q)
    for k, v in a.controller.get_weights().items():
        np.testing.assert_array_equal(b.controller.get_weights()[k], v)
    assert math.isclose(a.baseline, b.baseline)
    # A resume allowed to change the learning rate uses the new one, not the checkpoint's.
    c = _learner(space, seed=42, **dict(config, learning_rate=0.002))
    c.set_state(a.get_state(), a.get_arrays())
    assert math.isclose(float(c.adam.learning_rate.numpy()), 0.002, rel_tol=1e-6)
    assert int(c.adam.iterations.numpy()) == int(a.adam.iterations.numpy()) > 0


def test_default_learner_finds_a_hidden_target_within_a_few_hundred_samples():
    space = layered_space(depth=4, filters=(2, 4, 8, 16), sizes=(1, 3, 5, 7))
    target = Controller(space, seed=99).sample(1, depth=4)[0]
    categorical = [d.name for d in space.decisions if isinstance(d, space_lib.Categorical)]

    def reward(arch):
        return float(np.mean([arch[n] == target[n] for n in categorical]))

    # The untrained policy is near uniform: about 0.25 (four values per decision).
    before = np.mean([reward(a) for a in Controller(space, seed=1).sample(200, depth=4)])
    learner = Reinforce(Controller(space, seed=1))  # Library defaults.
    history = []
    for _ in range(40):
        archs, log_q = learner.controller.sample_with_log_prob(8, depth=4)
        for arch, q in zip(archs, log_q):
            history.append(reward(arch))
            learner.add(arch, history[-1], q)
    assert before < 0.35
    assert np.mean(history[-40:]) > max(0.6, before + 0.3)


def test_fused_adam_step_equals_keras_adam():
    space = layered_space(depth=2)
    ours = _learner(space, seed=6, ratio_clip=None, clip_norm=None, learning_rate=0.05)
    keras_way = _learner(space, seed=6, ratio_clip=None, clip_norm=None, learning_rate=0.05)
    archs, _, _ = _batch(ours, 4)
    rewards = [0.9, 0.1, 0.4, 0.6]
    # Keras's own Adam on one Keras variable per named weight.
    variables = {name: keras.Variable(value, name=name.replace("/", "_"))
                 for name, value in keras_way.controller.get_weights().items()}
    optimizer = keras.optimizers.Adam(learning_rate=0.05)
    for _ in range(3):
        ours.baseline = keras_way.baseline = 0.5
        _, grads, _ = keras_way.loss_and_gradients(archs, rewards)
        optimizer.apply_gradients(zip(grads, variables.values()))
        keras_way.controller.set_weights({name: v.numpy() for name, v in variables.items()})
        ours.update(archs, rewards)
    for name, value in keras_way.controller.get_weights().items():
        np.testing.assert_allclose(ours.controller.get_weights()[name], value, atol=2e-5)  # float32 rounding
    assert int(ours.adam.iterations.numpy()) == 3


def test_warm_up_in_the_background_changes_nothing_and_first_update_is_exact():
    space = layered_space(depth=3)
    warm = _learner(space, seed=4, topk_size=3, topk_weight=0.5)
    cold = _learner(space, seed=4, topk_size=3, topk_weight=0.5)
    before = warm.controller.get_weights()
    warm.warm_up(background=True)
    archs, log_q = warm.controller.sample_with_log_prob(4)  # Sampling runs meanwhile.
    assert cold.controller.sample(4) == archs
    warm.wait_for_warm_up()
    assert int(warm.adam.iterations.numpy()) == 0
    for name, value in warm.controller.get_weights().items():
        np.testing.assert_array_equal(value, before[name])
    assert all(not np.any(v) for v in warm.get_slots().values() if v.ndim)
    rewards = [0.2, 0.9, 0.4, 0.6]
    for learner in (warm, cold):
        learner.update(archs, rewards, log_q.tolist())
    assert int(warm.adam.iterations.numpy()) == 1
    for name, value in cold.controller.get_weights().items():
        np.testing.assert_array_equal(warm.controller.get_weights()[name], value)
    assert warm.last_stats == cold.last_stats
