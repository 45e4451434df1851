"""REINFORCE: the direction of one step, batching, learning, rewards."""

import math

import numpy as np
import pytest

from conftest import layered_space
from nas_tf import reinforce as reinforce_lib
from nas_tf import space as space_lib
from nas_tf.controller import Controller
from nas_tf.reinforce import Reinforce, ReinforceConfig


def _learner(space, seed=0, **config):
    return Reinforce(Controller(space, seed=seed), ReinforceConfig(**config))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_one_step_moves_probability_with_the_advantage(sign):
    learner = _learner(layered_space(depth=3), learning_rate=0.01)
    rewarded, other = learner.controller.sample(2, depth=3)
    before = learner.controller.log_prob_and_entropy([rewarded])[0][0]
    learner.baseline = 0.0
    learner.update([rewarded], [sign])
    after = learner.controller.log_prob_and_entropy([rewarded])[0][0]
    assert (after - before) * sign > 0


def test_the_loss_is_the_reinforce_estimator():
    learner = _learner(layered_space(depth=2), learning_rate=0.01)
    archs = learner.controller.sample(3, depth=2)
    log_prob, _ = learner.controller.log_prob_and_entropy(archs)
    learner.baseline = 0.5
    rewards = [1.0, 0.0, 0.25]
    loss = learner.update(archs, rewards)
    expected = -np.mean((np.array(rewards) - 0.5) * log_prob)
    assert loss == pytest.approx(expected, rel=1e-5)
    # The EMA absorbs the batch in order after the step.
    b = 0.5
    for r in rewards:
        b = 0.95 * b + 0.05 * r
    assert learner.baseline == pytest.approx(b)


def test_updates_fire_when_m_rewards_arrived_in_any_order():
    learner = _learner(layered_space(depth=2), batch_size=3)
    archs = learner.controller.sample(7, depth=2)
    fired = [learner.add(a, float(i)) for i, a in enumerate(archs)]
    assert fired == [False, False, True, False, False, True, False]
    assert learner.num_updates == 2 and len(learner.pending) == 1
    assert learner.baseline is not None
    with pytest.raises(ValueError, match="finite"):
        learner.add(archs[0], float("nan"))


def test_controller_learns_a_hidden_target_while_random_does_not():
    space = layered_space(depth=4, filters=(2, 4, 8, 16), sizes=(1, 3, 5, 7))
    target = Controller(space, seed=99).sample(1, depth=4)[0]
    categorical = [d.name for d in space.decisions if isinstance(d, space_lib.Categorical)]

    def reward(arch):
        return float(np.mean([arch[n] == target[n] for n in categorical]))

    learner = _learner(space, seed=1, learning_rate=0.03, batch_size=10, baseline_decay=0.9)
    history = []
    for _ in range(50):
        for arch in learner.controller.sample(10, depth=4):
            history.append(reward(arch))
            learner.add(arch, history[-1])
    random_mean = 0.25  # Four values per decision.
    rng = np.random.default_rng(0)
    random_history = [
        np.mean([rng.integers(4) == 0 for _ in categorical]) for _ in range(len(history))
    ]
    assert abs(np.mean(random_history[-50:]) - random_mean) < 0.1
    assert np.mean(history[:50]) < random_mean + 0.1
    assert np.mean(history[-50:]) > random_mean + 0.25


def test_paper_rewards():
    assert reinforce_lib.cifar10_reward([0.1, 0.9, 0.5, 0.6, 0.7, 0.8, 0.2]) == pytest.approx(0.8**3)
    assert reinforce_lib.cifar10_reward([0.5]) == pytest.approx(0.125)
    assert reinforce_lib.ptb_reward(80.0) == pytest.approx(80.0 / 6400.0)
    with pytest.raises(ValueError):
        reinforce_lib.ptb_reward(0.0)
    with pytest.raises(ValueError):
        reinforce_lib.cifar10_reward([])


def test_paper_defaults_and_bad_config():
    config = ReinforceConfig()
    assert config.learning_rate == 0.0006 and config.entropy_weight == 0.0
    for bad in (dict(learning_rate=0.0), dict(batch_size=0), dict(baseline_decay=1.0), dict(clip_norm=-1.0)):
        with pytest.raises(ValueError):
            ReinforceConfig(**bad)


def test_state_round_trip_restores_weights_slots_and_rng():
    space = layered_space(depth=3)
    a = _learner(space, seed=3, batch_size=2, learning_rate=0.01)
    for arch in a.controller.sample(5, depth=3):
        a.add(arch, 1.0 if arch["layer_0/size"] == 1 else 0.0)
    state, arrays = a.get_state(), a.get_arrays()
    b = _learner(space, seed=42, batch_size=2, learning_rate=0.01)
    b.set_state(state, arrays)
    assert b.controller.sample(4, depth=3) == a.controller.sample(4, depth=3)
    more = a.controller.sample(4, depth=3)
    b.controller.sample(4, depth=3)
    for arch in more:
        a.add(arch, 0.3)
        b.add(arch, 0.3)
    for k, v in a.controller.get_weights().items():
        np.testing.assert_array_equal(b.controller.get_weights()[k], v)
    assert math.isclose(a.baseline, b.baseline)
