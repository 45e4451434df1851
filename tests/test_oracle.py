"""NASRLOracle and the NASRL tuner inside real Keras Tuner searches."""

import json
import math
import os

import keras
import keras_tuner as kt
import numpy as np
import pytest

import nas_tf
from conftest import layered_space
from conftest import toy_drive as _drive
from conftest import toy_hyperparameters as _space_hps
from conftest import toy_oracle as _oracle
from conftest import toy_score as _score
from nas_tf import hp_space
from nas_tf import space as space_lib


def test_hyperparameters_map_onto_decisions_and_back():
    space, fixed = hp_space.space_from_hyperparameters(_space_hps())
    assert space["units"].values == (2, 4, 6, 8)
    assert space["init"].values == pytest.approx((0.0, 0.1, 0.2, 0.3))
    assert space["init"].when == (space_lib.When("bias", (True,)),)
    assert space["bias"].values == (False, True)
    assert isinstance(space["l2"], space_lib.Anchor) and space["l2"].sources == ("l0", "l1")
    assert "epochs" not in space.names and fixed["epochs"] == 1
    controller = nas_tf.Controller(space, seed=0)
    for arch in controller.sample(10):
        values = hp_space.architecture_to_values(space, arch, fixed)
        assert values["epochs"] == 1
        assert hp_space.values_to_architecture(space, values) == arch
    # A nas_tf space with depth survives the trip through hyperparameters.
    deep = layered_space(depth=3)
    kinds = {d.name: d.kind for d in deep.decisions}
    hps = hp_space.space_to_hyperparameters(deep)
    back, _ = hp_space.space_from_hyperparameters(hps, name=deep.name, kinds=kinds)
    assert back == deep


def test_oracle_learns_and_never_proposes_a_trained_architecture_twice(tmp_path):
    oracle = _oracle(tmp_path)
    values = _drive(oracle, 60)
    keys = [json.dumps(v, sort_keys=True) for v in values]
    assert len(set(keys)) == len(keys)
    assert oracle.learner.num_updates >= 20
    space, fixed = oracle.controller.space, oracle._fixed

    def policy_score(controller):
        archs = controller.sample(100)
        return np.mean([_score(hp_space.architecture_to_values(space, a, fixed)) for a in archs])

    assert policy_score(oracle.controller) > policy_score(nas_tf.Controller(space, seed=7)) + 1.0
    assert all(isinstance(v, (bool, int, float, str)) for vals in values for v in vals.values())


def test_resume_continues_exactly(tmp_path):
    straight = _oracle(tmp_path / "a")
    _drive(straight, 20)
    expected = _drive(straight, 8)

    interrupted = _oracle(tmp_path / "b")
    _drive(interrupted, 20)
    del interrupted
    resumed = _oracle(tmp_path / "b", seed=None)  # The seed comes back from the saved state.
    resumed.reload()
    assert _drive(resumed, 8) == expected


def test_resuming_with_other_settings_is_refused_unless_allowed(tmp_path):
    oracle = _oracle(tmp_path)
    oracle.checkpoint_every = oracle.checkpoint_trials = 2
    _drive(oracle, 12)
    faster = nas_tf.ReinforceConfig(batch_size=3, learning_rate=0.01)
    with pytest.raises(ValueError, match=r"reinforce\.learning_rate: 0\.05 -> 0\.01"):
        _oracle(tmp_path, reinforce_config=faster).reload()
    resumed = _oracle(tmp_path, reinforce_config=faster, allow_settings_change=True)
    resumed.reload()  # From the checkpoint, with the new rate (not the checkpoint's).
    assert resumed.store.checkpoint[0] is not None
    assert float(resumed.learner.adam.learning_rate.numpy()) == pytest.approx(0.01)


def test_missing_checkpoint_is_replayed_to_the_same_weights(tmp_path):
    oracle = _oracle(tmp_path)
    oracle.checkpoint_every = oracle.checkpoint_trials = 2
    _drive(oracle, 30)  # The policy re-draws trained architectures from about trial 20.
    loaded = _oracle(tmp_path)
    loaded.reload()
    weights = loaded.controller.get_weights()
    assert loaded.learner.num_updates >= 5
    project = tmp_path / "project"
    for name in os.listdir(project):
        if name.startswith("nasrl_controller_"):
            os.remove(project / name)
    replayed = _oracle(tmp_path)
    with pytest.warns(UserWarning, match="replaying"):
        replayed.reload()
    assert replayed.learner.num_updates == loaded.learner.num_updates
    for name, value in weights.items():
        np.testing.assert_allclose(replayed.controller.get_weights()[name], value, atol=1e-6)
    # Re-used rewards of re-sampled duplicates were replayed too, and the RNG restored.
    assert len(replayed.algorithm.feeds) == len(loaded.algorithm.feeds) > 30
    assert replayed.algorithm.best == loaded.algorithm.best is not None
    assert _drive(replayed, 3) == _drive(loaded, 3)


def test_state_is_journaled_in_constant_bytes_per_trial(tmp_path):
    oracle = _oracle(tmp_path, reinforce_config=nas_tf.ReinforceConfig(batch_size=3))
    oracle.snapshot_min_bytes = 1 << 30  # One snapshot, then only the journal.
    _drive(oracle, 20)
    early = oracle.store.journal.bytes_written
    _drive(oracle, 40)
    middle = oracle.store.journal.bytes_written
    _drive(oracle, 40)
    late = oracle.store.journal.bytes_written
    # Rewriting the whole state would grow the bytes per trial with the trial count.
    assert (late - middle) < 1.5 * (middle - early)
    state = nas_tf.journal.JournaledState(str(tmp_path / "project" / "oracle.json")).load()
    expected = json.loads(json.dumps(oracle.get_state()))
    # Keras Tuner saves inside end_trial before it forgets the trial as ongoing,
    # and keeps tried hashes in a set (no order).
    for key in ("ongoing_trials", "tried_so_far"):
        assert sorted(state.pop(key)) == sorted(expected.pop(key)) or key == "ongoing_trials"
    assert state == expected


def test_non_finite_scores_are_never_rewards_nor_best(tmp_path):
    oracle = _oracle(tmp_path, max_consecutive_failed_trials=10)
    bad = {0: float("nan"), 1: float("inf"), 3: float("-inf")}
    calls = []

    def score(values):
        calls.append(values)
        return bad.get(len(calls) - 1, _score(values))

    _drive(oracle, 6, score)
    statuses = [oracle.trials[t].status for t in oracle.start_order]
    assert statuses[:4] == ["FAILED", "FAILED", "COMPLETED", "FAILED"]
    assert all(math.isfinite(t.score) for t in oracle.get_best_trials(3))
    assert len(oracle._rewarded) == 3
    assert all(math.isfinite(r) for _, r, _ in oracle.learner.pending)


class _FakeTrainer(nas_tf.NASRL):
    """Scores trials without training, so search mechanics can be tested fast."""

    def run_trial(self, trial, *args, **kwargs):
        values = trial.hyperparameters.values
        # Trial 01 fails whatever it drew, so every run has a failure.
        if values.get("fail") or trial.trial_id == "01":
            raise kt.errors.FailedTrialError("this architecture cannot be built")
        self.hypermodel.build(trial.hyperparameters)
        return {"score": float(_score(values))}


def _fake_build(hp):
    _space_hps_into(hp)
    if hp.Boolean("fail"):
        return None
    if hp["act"] == "tanh":
        hp.Choice("late", [1, 2, 3])  # Appears only once a tanh trial has run.
    return None


def _space_hps_into(hp):
    hp.Choice("act", ["relu", "tanh"])
    hp.Int("units", 2, 8, step=2)
    nas_tf.anchor(hp, "l0", [])
    nas_tf.anchor(hp, "l1", ["l0"])


def test_failed_trials_and_new_hyperparameters_in_a_search(tmp_path):
    tuner = _FakeTrainer(
        hypermodel=_fake_build,
        objective=kt.Objective("score", "max"),
        max_trials=16,
        seed=3,
        max_consecutive_failed_trials=16,
        directory=str(tmp_path),
        project_name="p",
        reinforce_config=nas_tf.ReinforceConfig(batch_size=2),
    )
    tuner.search(verbose=0)
    trials = list(tuner.oracle.trials.values())
    failed = [t for t in trials if t.status == "FAILED"]
    done = [t for t in trials if t.status == "COMPLETED"]
    assert failed and done and len(trials) == 16
    assert all(not t.hyperparameters.values.get("fail") for t in done)
    assert "late" in tuner.oracle.controller.space.names
    assert any("late" in t.hyperparameters.values for t in done)
    best = tuner.oracle.get_best_trials(1)[0]
    assert best.status == "COMPLETED"


def test_consecutive_failure_limit_still_applies(tmp_path):
    class AlwaysFails(nas_tf.NASRL):
        def run_trial(self, trial, *args, **kwargs):
            raise kt.errors.FailedTrialError("no")

    tuner = AlwaysFails(
        hypermodel=_space_hps_into,
        objective=kt.Objective("score", "max"),
        max_trials=10,
        directory=str(tmp_path),
        project_name="p",
    )
    with pytest.raises(RuntimeError, match="consecutive failures"):
        tuner.search(verbose=0)


def _build_mlp(hp):
    inputs = keras.Input((4,))
    outputs = []
    for i in range(3):
        feeds = nas_tf.anchor(hp, f"layer_{i}", [f"layer_{j}" for j in range(i)])
        chosen = [outputs[j] for j, f in enumerate(feeds) if f] or [inputs]
        x = chosen[0] if len(chosen) == 1 else keras.layers.Concatenate()(chosen)
        units = hp.Choice(f"units_{i}", [2, 4])
        outputs.append(keras.layers.Dense(units, activation=hp.Choice("act", ["relu", "tanh"]))(x))
    model = keras.Model(inputs, keras.layers.Dense(1)(outputs[-1]))
    model.compile(keras.optimizers.SGD(hp.Float("lr", 0.01, 0.03, step=0.01)), "mse")
    return model


@pytest.mark.slow
def test_real_keras_search_then_resume_with_more_trials(tmp_path):
    x = np.random.rand(16, 4).astype("float32")
    y = x.sum(axis=1, keepdims=True)

    def tuner(max_trials, overwrite):
        return nas_tf.NASRL(
            _build_mlp,
            objective="val_loss",
            max_trials=max_trials,
            seed=5,
            directory=str(tmp_path),
            project_name="mlp",
            overwrite=overwrite,
            reinforce_config=nas_tf.ReinforceConfig(batch_size=2),
        )

    first = tuner(3, overwrite=True)
    first.search(x, y, validation_data=(x, y), epochs=1, verbose=0)
    assert len(first.oracle.trials) == 3
    assert first.oracle.learner.num_updates == 1
    best = first.get_best_models(1)[0]
    assert best.predict(x, verbose=0).shape == (16, 1)

    # Keras Tuner's own file decides whether a run reloads; torn (before nas_tf
    # wrote it atomically, or outside nas_tf) it no longer stops the resume.
    tuner_file = tmp_path / "mlp" / f"{first.tuner_id}.json"
    assert json.loads(tuner_file.read_text()) == {}
    tuner_file.write_text("{")
    with pytest.warns(UserWarning, match="unreadable"):
        second = tuner(5, overwrite=False)
    second.search(x, y, validation_data=(x, y), epochs=1, verbose=0)
    assert len(second.oracle.trials) == 5
    # One update per 2 rewards fed: the 5 trials' plus any re-sampled known ones.
    feeds = second.oracle.algorithm.feeds
    assert len(feeds) >= 5 and second.oracle.learner.num_updates == len(feeds) // 2
    assert all(t.status == "COMPLETED" for t in second.oracle.trials.values())


def test_top_level_exports_and_bad_arguments():
    with pytest.raises(ValueError, match="preset"):
        nas_tf.NASRLOracle(objective="score", preset="fast")
    with pytest.raises(ValueError, match="Unknown reward"):
        nas_tf.NASRLOracle(objective="score", reward="nope")
    with pytest.raises(ValueError, match="either"):
        nas_tf.NASRLOracle(objective="score", space=layered_space(), hyperparameters=_space_hps())


def test_a_finished_oracle_is_freed(tmp_path):
    import gc
    import weakref

    oracle = _oracle(tmp_path)
    _drive(oracle, 3)
    ref = weakref.ref(oracle)
    del oracle
    gc.collect()
    assert ref() is None  # Keras Tuner's per-oracle lock table no longer pins it.


# -- default arguments learn; the paper preset; known rewards ------------------------------


def _big_space():
    return layered_space(depth=4, filters=(2, 4, 8, 16), sizes=(1, 3, 5, 7))


def _target_match(space):
    target = nas_tf.Controller(space, seed=123).sample(1)[0]
    names = [d.name for d in space.decisions if isinstance(d, space_lib.Categorical)]
    return lambda v: float(sum(v[n] == target[n] for n in names))


def _additive(space):
    return lambda v: float(sum(v[f"layer_{i}/size"] + v[f"layer_{i}/filters"] / 4 for i in range(4)))


def _interaction(space):
    # Rewards pairs that agree: no decision is good alone.
    def score(v):
        pairs = [(v[f"layer_{i}/size"], v[f"layer_{i + 1}/size"]) for i in range(3)]
        skips = sum(int(x) for k, x in v.items() if "@anchor:" in k)
        return float(sum(a == b for a, b in pairs) * 2 + (skips == 2))
    return score


@pytest.mark.parametrize(
    "objective", [_target_match, pytest.param(_additive, marks=pytest.mark.slow),
                  pytest.param(_interaction, marks=pytest.mark.slow)])
def test_default_oracle_learns_within_300_trials(tmp_path, objective):
    space = _big_space()
    score = objective(space)
    oracle = nas_tf.NASRLOracle(objective=kt.Objective("score", "max"), max_trials=300,
                                space=space, seed=5)  # Default method arguments.
    oracle._set_project_dir(str(tmp_path), "p")
    oracle.verbose = 0
    scores = [score(v) for v in _drive(oracle, 300, score)]
    assert len(scores) == 300
    first, last = np.mean(scores[:50]), np.mean(scores[-50:])
    assert last > first + 0.5 * np.std(scores[:50]), (first, last)


def test_paper_preset_retrains_duplicates_and_never_mutates(tmp_path):
    hps = kt.HyperParameters()
    hps.Choice("a", [1, 2])
    hps.Choice("b", [1, 2])
    oracle = nas_tf.NASRLOracle(objective=kt.Objective("score", "max"), max_trials=12,
                                hyperparameters=hps, seed=3, preset="paper")
    assert oracle.reinforce_config == nas_tf.ReinforceConfig.paper()
    assert oracle.controller_config == nas_tf.ControllerConfig.paper()
    assert not oracle.reuse_rewards
    oracle._set_project_dir(str(tmp_path), "p")
    oracle.verbose = 0
    values = _drive(oracle, 12, lambda v: float(v["a"] + v["b"]))
    assert len(values) == 12  # Four architectures, twelve trials: duplicates retrained.
    assert len(oracle.algorithm.feeds) == 12 and all(f[3] for f in oracle.algorithm.feeds)  # All on-policy.
    assert oracle.learner.num_updates == 1


def test_default_preset_mutates_off_policy_and_stops_when_the_space_is_exhausted(tmp_path):
    hps = kt.HyperParameters()
    hps.Choice("a", [1, 2])
    hps.Choice("b", [1, 2])
    oracle = nas_tf.NASRLOracle(objective=kt.Objective("score", "max"), max_trials=12,
                                hyperparameters=hps, seed=3, max_resamples=0)
    oracle._set_project_dir(str(tmp_path), "p")
    oracle.verbose = 0
    with pytest.warns(UserWarning, match="exhausted"):
        values = _drive(oracle, 12, lambda v: float(v["a"] * 10 + v["b"]))
    assert sorted((v["a"], v["b"]) for v in values) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    mutated = [f for f in oracle.algorithm.feeds if not f[3]]
    assert mutated  # With max_resamples=0 a known draw is mutated at once...
    on_policy = [f for f in oracle.algorithm.feeds if f[3]]
    assert all(f[2] is not None for f in on_policy)  # ...and every PG sample carries its q.
    assert all(q is not None for _, _, q in oracle.learner.pending)


def test_cifar10_reward_reads_every_epoch_not_the_best_one(tmp_path):
    hps = kt.HyperParameters()
    hps.Choice("a", [1, 2, 3])
    oracle = nas_tf.NASRLOracle(objective=kt.Objective("val_accuracy", "max"), max_trials=3,
                                hyperparameters=hps, seed=3, reward="cifar10")
    oracle._set_project_dir(str(tmp_path), "p")
    oracle.verbose = 0
    trial = oracle.create_trial("t")
    accs = [0.1, 0.9, 0.5, 0.6, 0.7, 0.8, 0.2]
    for step, acc in enumerate(accs):
        oracle.update_trial(trial.trial_id, {"val_accuracy": acc}, step=step)
    trial.status = "COMPLETED"
    oracle.end_trial(trial)
    assert oracle.trials[trial.trial_id].score == 0.9  # Keras Tuner's best epoch...
    assert oracle.algorithm.feeds[-1][1] == pytest.approx(0.8**3)  # ...the paper's last-5 maximum.


def test_a_user_hyperparameter_named_depth_is_an_ordinary_decision():
    hps = kt.HyperParameters()
    hps.Int("depth", 1, 3)
    hps.Choice("width", [8, 16])
    space, _ = hp_space.space_from_hyperparameters(hps)
    assert space.names == ("depth", "width") and not space.uses_depth
    reserved = kt.HyperParameters()
    reserved.Choice("nas_tf/mine", [1, 2])
    with pytest.raises(ValueError, match="reserved"):
        hp_space.space_from_hyperparameters(reserved)


def test_progress_reports_of_a_running_trial_are_not_rewritten_but_its_start_and_end_are(
        tmp_path, monkeypatch):
    from nas_tf import durable

    oracle = _oracle(tmp_path)
    writes = []
    atomic_write_text = durable.atomic_write_text
    monkeypatch.setattr(durable, "atomic_write_text", lambda path, text: (
        writes.append((os.path.basename(os.path.dirname(path)), json.loads(text)["status"]))
        if path.endswith("trial.json") else None, atomic_write_text(path, text)))
    first = oracle.create_trial("tuner0")
    for step in range(3):
        oracle.update_trial(first.trial_id, {"score": float(step)}, step=step)
    first.status = "COMPLETED"
    oracle.end_trial(first)
    folder = f"trial_{first.trial_id}"
    assert writes == [(folder, "RUNNING"), (folder, "COMPLETED")]
    with open(tmp_path / "project" / folder / "trial.json") as f:
        assert len(json.load(f)["metrics"]["metrics"]["score"]["observations"]) == 3

    # Killed while the next trial runs: its file says RUNNING, so a resume retries it.
    second = oracle.create_trial("tuner0")
    oracle.update_trial(second.trial_id, {"score": 1.0})
    del oracle
    resumed = _oracle(tmp_path, seed=None)
    resumed.reload()
    retried = resumed.create_trial("tuner0")
    assert retried.trial_id == second.trial_id
    assert retried.hyperparameters.values == second.hyperparameters.values
    writes.clear()
    resumed.update_trial(retried.trial_id, {"score": 2.0})
    retried.status = "COMPLETED"
    resumed.end_trial(retried)
    assert writes == [(f"trial_{second.trial_id}", "COMPLETED")]

    # A chief writes every report: its workers outlive its restarts, and Keras
    # Tuner scores a worker's trial from the reports the chief holds.
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "8000")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    third = resumed.create_trial("tuner0")
    writes.clear()
    resumed.update_trial(third.trial_id, {"score": 3.0})
    assert writes == [(f"trial_{third.trial_id}", "RUNNING")]


def test_the_oracles_quick_copy_of_its_hyperparameters_is_keras_tuners_copy(tmp_path):
    oracle = _oracle(tmp_path)
    hps = oracle.hyperparameters
    assert isinstance(hps, hp_space.QuickCopyHyperParameters)
    hps.values = {"act": "tanh", "units": 4, "bias": True, "init": 0.1}
    ours, theirs = hps.copy(), kt.HyperParameters.from_config(hps.get_config())
    assert type(ours) is kt.HyperParameters
    assert ours.get_config() == theirs.get_config()
    assert ours.is_active("init") and not ours.is_active("nope")
    # Independent of the original: new entries and values stay in the copy.
    ours.Choice("late", [1, 2])
    ours.values["act"] = "relu"
    assert "late" not in hps.values and len(hps.space) == len(theirs.space)
    assert hps.values["act"] == "tanh"
    # A resumed oracle's hyperparameters come from Keras Tuner's state: copied quickly too.
    _drive(oracle, 2)
    resumed = _oracle(tmp_path)
    resumed.reload()
    assert isinstance(resumed.hyperparameters, hp_space.QuickCopyHyperParameters)
    assert resumed.hyperparameters.get_config() == oracle.hyperparameters.get_config()


def test_mutate_best_trials_are_untried_neighbours_of_the_best_fed_to_top_k_only(tmp_path):
    with pytest.raises(ValueError, match="mutate_best"):
        _oracle(tmp_path, mutate_best=1.5)
    oracle = _oracle(tmp_path, mutate_best=1.0)
    seen = [json.dumps(v, sort_keys=True) for v in _drive(oracle, 3)]  # m = 3: the controller's.
    learner, space = oracle.learner, oracle.controller.space
    assert learner.num_updates == 1 and not learner.pending
    for _ in range(5):
        best = space.architecture_from_json(oracle.algorithm.best[0])
        (values,) = _drive(oracle, 1)
        arch = hp_space.values_to_architecture(space, values)
        changed = {k for k in set(arch.values) | set(best.values)
                   if arch.values.get(k) != best.values.get(k)}
        assert 1 <= len(changed) <= 4, changed  # A step or two of the walk, and what they toggle.
        seen.append(json.dumps(values, sort_keys=True))
        # Not a sample of the policy: the top-K buffer has it, the batch does not.
        assert learner.num_updates == 1 and not learner.pending
        assert any(a.to_json() == arch.to_json() for a, _ in learner.topk) or len(learner.topk) == 5
    assert len(set(seen)) == len(seen)  # Every trial untried.
    # A decision that appears mid-search gets a random value in the mutated best.
    oracle.hyperparameters.Choice("late", [1, 2])
    (values,) = _drive(oracle, 1)
    assert values["late"] in (1, 2) and learner.num_updates == 1 and not learner.pending
    # The best is the first of the highest rewards fed.
    rewards = [r for _, r, _, _ in oracle.algorithm.feeds]
    assert oracle.algorithm.best[1] == max(rewards)
    assert oracle.algorithm.best[0] == oracle.algorithm.feeds[rewards.index(max(rewards))][0]
