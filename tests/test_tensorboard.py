"""TensorBoard events and the controller's update log, read back (nas_tf.summaries)."""

import glob
import json
import os

import keras_tuner as kt
import numpy as np
import pytest
import tensorflow as tf

import nas_tf
from nas_tf import hp_space
from nas_tf import summaries


def _hps():
    hps = kt.HyperParameters()
    hps.Choice("act", ["relu", "tanh"])
    hps.Int("units", 2, 8, step=2)
    nas_tf.anchor(hps, "l0", [])
    nas_tf.anchor(hps, "l1", ["l0"])
    return hps


def _oracle(directory, **kwargs):
    oracle = nas_tf.NASRLOracle(
        objective=kt.Objective("score", "max"),
        max_trials=100,
        hyperparameters=_hps(),
        seed=3,
        reinforce_config=nas_tf.ReinforceConfig(batch_size=3, learning_rate=0.05),
        **kwargs,
    )
    oracle._set_project_dir(str(directory), "project")
    oracle.verbose = 0
    return oracle


def _drive(oracle, num):
    for _ in range(num):
        trial = oracle.create_trial("tuner0")
        if trial.status == "STOPPED":
            break
        values = trial.hyperparameters.values
        oracle.update_trial(trial.trial_id, {"score": values["units"] + (values["act"] == "tanh")})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)


def read_events(run_dir):
    """{tag: [(step, value array)]} of every event file in `run_dir` (not below it)."""
    out = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, tf.make_ndarray(value.tensor)))
    return out


def _batches(oracle):
    """The policy-gradient batches of the feed log, in order: samples of the policy
    (mutated architectures join only the top-K buffer), each marked re-used when
    its architecture was fed before."""
    m = oracle.reinforce_config.batch_size
    seen, marked = set(), []
    for arch_json, reward, log_q, on_policy in oracle.algorithm.feeds:
        if on_policy and log_q is not None:
            marked.append((arch_json, reward, arch_json in seen))
        seen.add(arch_json)
    return [marked[i : i + m] for i in range(0, len(marked) - m + 1, m)]


def test_controller_updates_are_logged_once_with_exact_figures_even_across_a_kill(tmp_path):
    oracle = _oracle(tmp_path)
    _drive(oracle, 9)
    project = tmp_path / "project"
    log = summaries.read_controller_log(str(project / summaries.CONTROLLER_LOG))
    batches = _batches(oracle)
    assert oracle.learner.num_updates == len(log) == len(batches) >= 3
    assert [r["update"] for r in log] == list(range(1, len(log) + 1))
    for record, batch in zip(log, batches):
        assert record["mean_reward"] == pytest.approx(np.mean([r for _, r, _ in batch]))
        assert record["reused_share"] == pytest.approx(np.mean([reused for _, _, reused in batch]))
        assert record["learning_rate"] == pytest.approx(0.05)
        assert record["batch"] == 3
        assert record["entropy"] > 0 and record["grad_norm"] >= 0
    # The first batch's baseline is its own mean; later ones the EMA before them.
    assert log[0]["baseline"] == pytest.approx(log[0]["mean_reward"])
    b = log[0]["baseline"]
    for r in [r for _, r, _ in batches[0]]:
        b = 0.95 * b + 0.05 * r
    assert log[1]["baseline"] == pytest.approx(b)

    events = read_events(str(project / "tensorboard" / "controller"))
    for name in summaries.CONTROLLER_SCALARS:
        steps = [s for s, _ in events[f"controller/{name}"]]
        assert steps == list(range(1, len(log) + 1)), name
    rewards = [float(v) for _, v in events["controller/mean_reward"]]
    assert rewards == pytest.approx([r["mean_reward"] for r in log])
    # One histogram per decision position: exact counts of the batch's values.
    space = oracle.controller.space
    first = [space.architecture_from_json(a) for a, _, _ in batches[0]]
    for d in space.decisions:
        step, hist = events[f"decisions/{d.name}"][0]
        assert step == 1 and hist.shape[1] == 3
        expected = summaries.value_counts(d, [a.values.get(d.name) for a in first])
        np.testing.assert_array_equal(hist[:, 2], expected)
        np.testing.assert_array_equal(hist[:, 0], np.arange(len(expected)) - 0.5)
    act = next(d for d in space.decisions if d.name == "act")
    assert events["decisions/act"][0][1][:, 2].sum() == 3  # Every sample chose one value.
    assert act.values == ("relu", "tanh")

    # A reload replays the feeds since the checkpoint: nothing is logged twice.
    resumed = _oracle(tmp_path)
    resumed.reload()
    _drive(resumed, 2)
    again = summaries.read_controller_log(str(project / summaries.CONTROLLER_LOG))
    with open(project / summaries.CONTROLLER_LOG) as f:
        assert len(f.readlines()) == len(again) == resumed.learner.num_updates
    assert again[: len(log)] == log
    # A line lost, then the next torn by a kill: the replay writes it again.
    path = project / summaries.CONTROLLER_LOG
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][:10])
    _oracle(tmp_path).reload()  # No checkpoint yet: every feed is replayed.
    assert summaries.read_controller_log(str(path)) == [json.loads(x) for x in lines]


def test_child_run_has_curves_reward_and_hparams(tmp_path):
    record = {
        "trial_id": "07",
        "status": "COMPLETED",
        "architecture": {"depth": 2, "values": {"layer_0/num_filters": 8, "layer_1/anchor": [1]}},
        "val_accuracy": [0.25, 0.5, 0.75],
        "train_loss": [2.0, 1.5, 1.0],
        "reward": 0.421875,
        "num_params": 1234,
        "train_seconds": 3.5,
    }
    summaries.write_child(str(tmp_path), record)
    events = read_events(str(tmp_path / "trial_07"))
    assert [(s, float(v)) for s, v in events["val_accuracy"]] == [(0, 0.25), (1, 0.5), (2, 0.75)]
    assert [float(v) for _, v in events["train_loss"]] == [2.0, 1.5, 1.0]
    assert float(events["reward"][0][1]) == pytest.approx(0.421875)
    assert float(events["num_params"][0][1]) == 1234
    # The HPARAMS plugin's session start: the architecture, flattened.
    from tensorboard.plugins.hparams import metadata as hp_metadata

    path = glob.glob(str(tmp_path / "trial_07" / "events.out.tfevents.*"))[0]
    starts = [
        v for e in tf.compat.v1.train.summary_iterator(path) for v in e.summary.value
        if v.tag == hp_metadata.SESSION_START_INFO_TAG
    ]
    info = hp_metadata.parse_session_start_info_plugin_data(
        starts[0].metadata.plugin_data.content
    )
    assert info.hparams["layer_0/num_filters"].number_value == 8
    assert info.hparams["layer_1/anchor"].string_value == "1"
    assert info.hparams["depth"].number_value == 2


def test_hparams_config_lists_decisions_and_metrics(tmp_path):
    space, _ = hp_space.space_from_hyperparameters(_hps())
    summaries.write_hparams_config(str(tmp_path), space, ["reward", "val_accuracy"])
    from tensorboard.plugins.hparams import metadata as hp_metadata

    path = glob.glob(str(tmp_path / "events.out.tfevents.*"))[0]
    values = [
        v for e in tf.compat.v1.train.summary_iterator(path) for v in e.summary.value
        if v.tag == hp_metadata.EXPERIMENT_TAG
    ]
    experiment = hp_metadata.parse_experiment_plugin_data(values[0].metadata.plugin_data.content)
    names = [h.name for h in experiment.hparam_infos]
    assert names == ["act", "units"]  # Anchors have no fixed domain.
    assert [m.name.tag for m in experiment.metric_infos] == ["reward", "val_accuracy"]


def test_child_values_beyond_float32_are_written_as_infinity(tmp_path):
    # A child that learnt nothing: a finite perplexity that float32 cannot hold.
    record = {"trial_id": "3", "status": "COMPLETED", "val_perplexity": [1e200, 300.0],
              "reward": 0.0}  # fmt: skip
    summaries.write_child(str(tmp_path), record)
    events = read_events(str(tmp_path / "trial_3"))
    assert [float(v) for _, v in events["val_perplexity"]] == [float("inf"), 300.0]
    assert float(events["reward"][0][1]) == 0.0
