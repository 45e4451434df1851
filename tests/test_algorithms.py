"""The search algorithms as plain objects, driven without Keras Tuner."""

import json
import os
import shutil

import numpy as np
import pytest

import nas_tf
from conftest import layered_space
from nas_tf import algorithms
from nas_tf import kt_compat
from nas_tf import space as space_lib


def _reward(arch):
    """Prefers large categorical choices and skip connections (a smooth toy)."""
    total = 0.0
    for name, value in sorted(arch.values.items()):
        if isinstance(value, tuple):
            total += sum(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            total += float(value) / 10.0
    return total


def _run(algorithm, num, start=0):
    """Proposes and feeds `num` architectures; returns their JSON."""
    out = []
    for i in range(start, start + num):
        arch = algorithm.propose(str(i))
        if arch is None:
            break
        out.append(arch.to_json())
        algorithm.feedback(str(i), arch, _reward(arch))
    return out


def _search(space, **kwargs):
    kwargs.setdefault("reinforce_config", nas_tf.ReinforceConfig(batch_size=3, learning_rate=0.05))
    kwargs.setdefault("controller_config", nas_tf.ControllerConfig(units=8, num_layers=1))
    return algorithms.ControllerSearch(space, seed=11, **kwargs)


def test_controller_search_proposes_untried_architectures_and_learns():
    space = layered_space(depth=3)
    search = _search(space)
    proposed = _run(search, 30)
    assert len(set(proposed)) == len(proposed) == 30
    for arch_json in proposed:
        space.validate(space.architecture_from_json(arch_json))
    on_policy = sum(1 for f in search.feeds if f[3])
    assert search.learner.num_updates == on_policy // 3 >= 3  # One update per m = 3.
    assert search.best[1] == max(_reward(space.architecture_from_json(a)) for a in proposed)
    # Re-used rewards of re-drawn duplicates are fed too: more feeds than proposals.
    assert len(search.feeds) >= len(proposed)


@pytest.mark.parametrize("with_checkpoint", [True, False])
def test_restore_continues_exactly(with_checkpoint):
    space = layered_space(depth=3)
    straight = _search(space)
    _run(straight, 14)
    checkpoint = straight.checkpoint() if with_checkpoint else None
    _run(straight, 4, start=14)
    state = json.loads(json.dumps(straight.state()))  # What a save writes.
    expected = _run(straight, 8, start=18)

    restored = _search(space)
    assert restored.restore(state, checkpoint) is with_checkpoint
    assert _run(restored, 8, start=18) == expected
    for name, value in straight.controller.get_weights().items():
        np.testing.assert_allclose(restored.controller.get_weights()[name], value, atol=1e-6)


def test_pending_feedback_keeps_its_drawing_probability_across_restore():
    space = layered_space(depth=2)
    search = _search(space, reinforce_config=nas_tf.ReinforceConfig(
        batch_size=2, learning_rate=0.05, ratio_clip=0.2))
    arch = search.propose("a")
    state = json.loads(json.dumps(search.state()))
    restored = _search(space, reinforce_config=search.reinforce_config)
    restored.restore(state)
    restored.feedback("a", arch, 1.0)
    assert restored.feeds[-1][2] == pytest.approx(state["behaviour"]["a"])
    assert restored.feeds[-1][3] is True


def test_a_frozen_search_never_changes_its_policy():
    space = layered_space(depth=3)
    search = _search(space, frozen=True)
    initial = {k: v.copy() for k, v in search.controller.get_weights().items()}
    proposed = _run(search, 30)
    assert len(set(proposed)) == 30
    assert search.learner.num_updates == 0 and not search.learner.pending
    for name, value in search.controller.get_weights().items():
        np.testing.assert_array_equal(value, initial[name])
    # The same seed and rules as a learning search: the first batch is the same.
    assert proposed[:3] == _run(_search(space), 3)


def test_mutations_stop_at_mutate_until():
    space = layered_space(depth=3)
    search = _search(space, mutate_best=1.0, mutate_until=9)
    _run(search, 9)
    mutated = [not f[3] for f in search.feeds]
    assert any(mutated[3:9])  # From m = 3 on, every proposal mutates the best...
    search.num_proposed = 9
    assert search._mutated_best(search.depth()) is None  # ...and none from the 9th on.
    with pytest.raises(ValueError, match="mutate_until"):
        _search(space, mutate_until=-1)


def test_uniform_mutation_search_learns_nothing_and_restores_exactly():
    space = layered_space(depth=3)
    search = algorithms.UniformMutationSearch(space, seed=4, mutate_best=0.5)
    first = _run(search, 12)
    state = json.loads(json.dumps(search.state()))
    rest = _run(search, 12, start=12)
    assert len(set(first + rest)) == 24
    assert search.learner.num_updates == 0
    # Uniform draws alone are another sequence from the m-th proposal on (mutations).
    plain = _run(algorithms.UniformMutationSearch(space, seed=4, mutate_best=0.0), 12)
    assert plain[:8] == first[:8] and plain != first
    again = algorithms.UniformMutationSearch(space, seed=4, mutate_best=0.5)
    again.restore(state)
    assert _run(again, 12, start=12) == rest


def test_random_search_never_repeats_and_restores_exactly():
    space = space_lib.Space((space_lib.Categorical("a", (1, 2, 3)),
                             space_lib.Categorical("b", ("x", "y"))), name="tiny")
    search = algorithms.RandomSearch(space, seed=3)
    first = _run(search, 3)
    state = json.loads(json.dumps(search.state()))
    rest = _run(search, 10, start=3)
    assert len(set(first + rest)) == len(first + rest) == 6  # The whole space, then None.
    again = algorithms.RandomSearch(space, seed=3)
    again.restore(state)
    assert _run(again, 10, start=3) == rest


def test_presets_are_checked_before_anything_is_built():
    space = layered_space(depth=2)
    with pytest.raises(ValueError, match="Unknown preset"):
        algorithms.ControllerSearch(space, preset="fast")
    with pytest.raises(ValueError, match="mutate_best"):
        algorithms.ControllerSearch(space, mutate_best=2.0)
    paper = algorithms.ControllerSearch(space, preset="paper")
    assert (paper.reuse_rewards, paper.max_resamples, paper.mutate_best) == (False, 0, 0.0)


def test_the_default_mutates_only_early_and_the_paper_never():
    import math

    space = layered_space(depth=2)
    default = algorithms.ControllerSearch(space)
    assert default.mutate_until == 40 and default.reinforce_config.update_epochs == 3
    assert default.reinforce_config == algorithms.default_reinforce_config()
    paper = algorithms.ControllerSearch(space, preset="paper")
    assert paper.mutate_until == math.inf
    assert paper.reinforce_config == nas_tf.ReinforceConfig.paper()
    # NASRLOracle takes the setting, and builds its search with its own preset.
    assert nas_tf.NASRLOracle(mutate_until=5).mutate_until == 5
    assert nas_tf.NASRLOracle(preset="paper", mutate_best=0.5).mutate_until == math.inf


def test_keras_tuner_internals_the_shim_relies_on_are_there():
    """Pins what `nas_tf.kt_compat` reads of Keras Tuner (a new version fails here first)."""
    import keras_tuner as kt
    from keras_tuner.src.engine import oracle as kt_oracle

    oracle = kt.oracles.RandomSearchOracle(objective=kt.Objective("s", "max"), max_trials=2)
    for name in ("_run_times", "_id_to_hash", "_tried_so_far", "_retry_queue", "_seed_state",
                 "start_order", "end_order", "ongoing_trials", "tuner_ids", "_duplicate",
                 "_compute_values_hash", "_set_project_dir", "_get_oracle_fname"):
        assert hasattr(oracle, name), name
    assert hasattr(oracle._display, "trial_start") and hasattr(oracle._display, "trial_number")
    assert set(kt_compat.oracle_state(oracle)) == set(oracle.get_state())
    assert isinstance(kt_oracle.LOCKS, kt_compat._WeakDefaultDict)  # Patched once, at import.
    assert kt_compat.has_chief() is False and kt_compat.is_chief() is False
    from keras_tuner.src.engine import conditions

    assert conditions.Parent.to_proto._nas_tf_quiet  # Keras Tuner's stray print, silenced.
    import grpc

    assert hasattr(kt_compat.oracle_stub(grpc.insecure_channel("127.0.0.1:1")), "CreateTrial")


def test_conditions_serialise_without_printing(capsys):
    from keras_tuner.src.engine import conditions

    proto = conditions.Parent("act", ["relu"]).to_proto()
    assert proto.parent.name == "act" and capsys.readouterr().out == ""


def test_an_untested_keras_tuner_is_refused_with_the_way_out(monkeypatch):
    kt_compat.check_version("1.4.8")
    monkeypatch.delenv(kt_compat.ALLOW_UNTESTED, raising=False)
    with pytest.raises(ImportError, match="keras-tuner 1.4.7 to 1.4.8; 2.0.0 is installed"):
        kt_compat.check_version("2.0.0")
    monkeypatch.setenv(kt_compat.ALLOW_UNTESTED, "1")
    kt_compat.check_version("2.0.0")


def _legacy_copy(tmp_path):
    """A project saved by the oracle before the algorithm/adapter split (20 trials)."""
    here = os.path.join(os.path.dirname(__file__), "data", "legacy_oracle")
    shutil.copytree(os.path.join(here, "project"), tmp_path / "project")
    with open(os.path.join(here, "expected.json"), encoding="utf-8") as f:
        return json.load(f)


def test_a_search_saved_before_the_split_resumes_exactly(tmp_path):
    from test_oracle import _drive, _oracle

    # Made by the oracle of commit bbba023: 20 trials, a checkpoint after update 4,
    # then the 8 trials that an uninterrupted search proposed next.
    expected = _legacy_copy(tmp_path)
    resumed = _oracle(tmp_path, seed=None,
                      controller_config=nas_tf.ControllerConfig(units=8, num_layers=1))
    resumed.reload()
    assert resumed.store.checkpoint[0] == "nasrl_controller_000004.npz"
    assert _drive(resumed, 8) == expected


def test_a_truncated_checkpoint_is_replayed_from_the_feed_log(tmp_path):
    from test_oracle import _drive, _oracle

    expected = _legacy_copy(tmp_path)
    path = tmp_path / "project" / "nasrl_controller_000004.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # A torn copy: np.load raises BadZipFile.
    resumed = _oracle(tmp_path, seed=None,
                      controller_config=nas_tf.ControllerConfig(units=8, num_layers=1))
    with pytest.warns(UserWarning, match="unreadable"):
        resumed.reload()
    assert resumed.store.checkpoint == (None, 0)
    assert _drive(resumed, 8) == expected


def test_another_algorithm_through_the_keras_tuner_adapter_resumes_exactly(tmp_path):
    from conftest import toy_drive as _drive, toy_hyperparameters

    import keras_tuner as kt

    class RandomOracle(nas_tf.NASRLOracle):
        def make_algorithm(self, space):
            return algorithms.RandomSearch(space, self.seed, tried=self._tried)

    def oracle(directory, seed=5):
        o = RandomOracle(objective=kt.Objective("score", "max"), max_trials=50,
                         hyperparameters=toy_hyperparameters(), seed=seed)
        o._set_project_dir(str(directory), "project")
        o.verbose = 0
        return o

    straight = oracle(tmp_path / "a")
    first = _drive(straight, 6)
    expected = _drive(straight, 4)
    assert len({json.dumps(v, sort_keys=True) for v in first + expected}) == 10
    assert not any(name.endswith(".npz") for name in os.listdir(tmp_path / "a" / "project"))

    interrupted = oracle(tmp_path / "b")
    assert _drive(interrupted, 6) == first
    resumed = oracle(tmp_path / "b", seed=None)
    resumed.reload()
    assert _drive(resumed, 4) == expected
