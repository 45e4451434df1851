"""The weight-sharing search (nas_tf.supernets.search, runner, `nas_tf.train --weight_sharing`).

A tiny NB201-cell search on the embedded digits (tests/shared_search_driver.py)
runs to the end; killed (SIGKILL) at each named fault point and run again, it
ends exactly as an uninterrupted run: the same derived architectures and
scores, the same shared weights, velocities and step, the same controller.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import shared_search_driver as driver
from nas_tf.supernets import search as search_lib
from nas_tf.supernets.config import STATE

DRIVER = os.path.join(os.path.dirname(__file__), "shared_search_driver.py")
SUBPROCESS_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The tiny search run to the end in this process: (output dir, derive text, final state)."""
    out = tmp_path_factory.mktemp("straight")
    search = driver.build(str(out))
    assert not search.resumed
    result = search.run()
    return out, result, search, driver.final_state(search)


def test_a_tiny_search_runs_to_the_end(uninterrupted):
    out, result, search, _ = uninterrupted
    for name in (search_lib.BEST_ARCHITECTURE, search_lib.DERIVE, search_lib.LOG, STATE):
        assert (out / name).exists(), name
    derived = [json.loads(line) for line in _read(out / search_lib.DERIVE).splitlines()]
    assert 1 <= len(derived) <= 5
    scores = [d["accuracy"] for d in derived]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    best = json.loads(_read(out / search_lib.BEST_ARCHITECTURE))
    assert best == derived[0]["architecture"]
    assert search.supernet.space.architecture_from_json(json.dumps(best)).to_json() == \
        result["architecture"].to_json()
    assert result["score"] == scores[0]
    log = [json.loads(line) for line in _read(out / search_lib.LOG).splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert [r["step"] for r in log] == [3, 6, 9]
    # Warm-up epoch: no controller phase; then 6 feeds an epoch, a REINFORCE batch of 4.
    assert log[0]["mean_reward"] is None and log[0]["controller_updates"] == 0
    assert [r["controller_updates"] for r in log[1:]] == [1, 3]
    assert log[-1]["traces"] == {"train": 1, "eval": 1}
    assert int(search.weights.step.numpy()) == 9
    state = json.loads(_read(out / STATE))
    assert state["position"]["epoch"] == 3 and state["position"]["valid_index"] == 12
    # Only the newest checkpoint is kept.
    number = state["position"]["checkpoint"]
    assert sorted(os.listdir(out / search_lib.CHECKPOINTS)) == sorted(
        [f"controller-{number:06d}.npz", f"weights-{number:06d}.index",
         f"weights-{number:06d}.data-00000-of-00001"])


def test_a_finished_search_derives_the_same_again(uninterrupted):
    """Run again in a finished directory: nothing trains, the same derive (restored rng)."""
    out, _, _, final = uninterrupted
    before = _read(out / search_lib.DERIVE)
    again = driver.build(str(out))
    assert again.resumed and again.position["epoch"] == 3
    again.run()
    assert _read(out / search_lib.DERIVE) == before
    _assert_same_state(driver.final_state(again), final)


def _assert_same_state(got, expected):
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def _run_driver(out, fault=None):
    env = dict(os.environ, **SUBPROCESS_ENV)
    env.pop("NAS_TF_FAULT", None)
    if fault:
        env["NAS_TF_FAULT"] = fault
    return subprocess.run([sys.executable, DRIVER, str(out)], env=env, capture_output=True,
                          text=True, timeout=600)


# shared_after_step:5: epoch 2's second step (controller-drawn), between checkpoints;
# shared_before_state:2: epoch 1's end, its weights and controller written, not its state;
# shared_after_feedback:3: mid-way through epoch 2's controller phase, 3 feeds pending
# in the REINFORCE batch of 4.
@pytest.mark.slow
@pytest.mark.parametrize("fault", ["shared_after_step:5", "shared_before_state:2",
                                   "shared_after_feedback:3"])
def test_kill_then_resume_equals_an_uninterrupted_search(tmp_path, fault, uninterrupted):
    straight, _, _, final = uninterrupted
    out = tmp_path / "search"
    out.mkdir()
    killed = _run_driver(out, fault)
    assert killed.returncode == -signal.SIGKILL, (fault, killed.returncode, killed.stderr[-3000:])
    assert not (out / search_lib.DERIVE).exists()
    resumed = _run_driver(out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _read(out / search_lib.DERIVE) == _read(straight / search_lib.DERIVE)
    assert _read(out / search_lib.BEST_ARCHITECTURE) == _read(straight / search_lib.BEST_ARCHITECTURE)
    with np.load(out / "final.npz") as z:
        _assert_same_state({k: z[k] for k in z.files}, final)


def _train(out, *flags):
    env = dict(os.environ, **SUBPROCESS_ENV)
    env.pop("NAS_TF_FAULT", None)
    return subprocess.run(
        [sys.executable, "-m", "nas_tf.train", "--weight_sharing", f"--output_dir={out}",
         "--verbose=0", *flags],
        env=env, capture_output=True, text=True, timeout=600)


TINY_CLI = ["--search_space=nb201_cell", "--search_nb201_channels=2", "--search_nb201_cells=1",
            "--shared_steps_per_epoch=2", "--shared_controller_samples=4",
            "--shared_derive_samples=3", "--shared_xla=off"]


@pytest.mark.slow
def test_cli_runs_reports_and_resumes(tmp_path):
    out = tmp_path / "run"
    first = _train(out, *TINY_CLI, "--shared_epochs=2")
    assert first.returncode == 0, first.stderr[-3000:]
    for name in ("best_architecture.json", "history.jsonl", "config.json", search_lib.DERIVE):
        assert (out / name).exists(), name
    history = [json.loads(line) for line in _read(out / "history.jsonl").splitlines()]
    assert 1 <= len(history) <= 3 and history[0]["source"] == "weight_sharing"
    assert history[0]["architecture"] == json.loads(_read(out / "best_architecture.json"))
    config = json.loads(_read(out / "config.json"))
    assert config["weight_sharing"]["epochs"] == 2
    report = subprocess.run([sys.executable, "-m", "nas_tf.report", str(out)],
                            env=dict(os.environ, **SUBPROCESS_ENV), capture_output=True,
                            text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (out / "report" / "index.html").exists()

    # More epochs is a changed setting: refused (exit 1, one line naming it), nothing touched...
    log = _read(out / search_lib.LOG)
    refused = _train(out, *TINY_CLI, "--shared_epochs=3")
    assert refused.returncode == 1, refused.stderr[-3000:]
    assert "weight_sharing.epochs" in refused.stderr and "--allow_config_change" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert _read(out / search_lib.LOG) == log
    assert json.loads(_read(out / "config.json"))["weight_sharing"]["epochs"] == 2
    # ...unless allowed: it resumes after epoch 2 and trains one more epoch.
    more = _train(out, *TINY_CLI, "--shared_epochs=3", "--allow_config_change")
    assert more.returncode == 0, more.stderr[-3000:]
    epochs = [json.loads(line)["epoch"] for line in _read(out / search_lib.LOG).splitlines()]
    assert epochs == [1, 2, 3]
    assert json.loads(_read(out / STATE))["position"]["step"] == 6
    assert json.loads(_read(out / "config.json"))["weight_sharing"]["epochs"] == 3


def test_cli_refuses_a_space_without_supernet_support(tmp_path):
    out = tmp_path / "v3"
    result = _train(out, "--search_space=cifar10_v3", "--shared_epochs=1",
                    "--shared_steps_per_epoch=1")
    assert result.returncode != 0
    assert "cifar10_v3" in result.stderr and "v1 and cifar10_v2" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


@pytest.mark.slow
def test_readme_weight_sharing_command_runs(tmp_path):
    """The README's command as written (output moved to tmp): killed once, resumed, then
    the best network retrained by `nas_tf.retrain` and the search reported."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "quick"
    command = [sys.executable, "-m", "nas_tf.train",
               "--flagfile=experiments/cifar_shared_quick.flags", f"--output_dir={out}"]
    env = dict(os.environ, **SUBPROCESS_ENV)
    killed = subprocess.run(command, cwd=root, env=dict(env, NAS_TF_FAULT="shared_after_step:50"),
                            capture_output=True, text=True, timeout=900)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (out / STATE).exists()  # Some epochs were checkpointed before the kill.
    resumed = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True,
                             timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Convolutional network, 4 layers" in resumed.stdout
    epochs = [json.loads(line)["epoch"] for line in _read(out / search_lib.LOG).splitlines()]
    assert epochs == list(range(1, 13))
    retrain = subprocess.run(
        [sys.executable, "-m", "nas_tf.retrain", f"--architecture={out / 'best_architecture.json'}",
         "--data_name=digits", "--grid_epochs=1", "--epochs=1", "--grid_learning_rates=0.1",
         f"--output_dir={tmp_path / 'retrain'}"],
        cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert retrain.returncode == 0, retrain.stderr[-3000:]
    assert (tmp_path / "retrain" / "results.json").exists()
    report = subprocess.run([sys.executable, "-m", "nas_tf.report", str(out)], cwd=root, env=env,
                            capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]


def test_python_api_runs_a_weight_sharing_search(tmp_path):
    """docs/weight_sharing.md's `nas_tf.Search` example, on tiny settings."""
    import nas_tf

    result = nas_tf.Search(
        str(tmp_path / "api"), space="nb201_cell", dataset="digits", verbose=0,
        space_overrides={"channels": 2, "cells_per_stage": 1},
        weight_sharing={"epochs": 2, "steps_per_epoch": 2, "warmup_epochs": 1,
                        "controller_samples": 4, "derive_samples": 3,
                        "training.jit_compile": False}).run()
    config = json.loads(_read(tmp_path / "api" / "config.json"))
    assert config["preset"] == "enas"  # Weight sharing's default controller.
    assert config["weight_sharing"]["training"]["jit_compile"] is False
    best = _read(tmp_path / "api" / "best_architecture.json")
    assert result.best_architecture.to_json() == nas_tf.Architecture.from_json(best).to_json()
