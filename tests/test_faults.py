"""Kill the search at named points of a trial's life; the rerun loses nothing and trains nothing twice.

Each test runs `python -m nas_tf.train` with `NAS_TF_FAULT=point:k`, which
SIGKILLs the search the k-th time it passes `point` (`nas_tf.durable`), checks
that it died that way, runs the same command again without the fault, and
compares with an uninterrupted run: every child is in history.jsonl exactly
once with the same result, no finished child was trained twice (counted with
`NAS_TF_TRAINING_LOG`), and best_architecture.json is the same.
`TF_DETERMINISTIC_OPS` makes the children's training (the data pipeline's
random augmentation) reproducible, so the results can be compared exactly.
"""

import collections
import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import TINY_FLAGS
from nas_tf import durable, search, tasks
from nas_tf.children import worker

_TRIALS = 3
_TINY = TINY_FLAGS + [f"--search_max_trials={_TRIALS}", "--verbose=1"]


def _search(out, fault=None, worker_fault=None, isolate=False, log=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_DETERMINISTIC_OPS="1")
    for name in (durable.FAULT_ENV, worker.WORKER_FAULT_ENV, tasks.TRAINING_LOG_ENV):
        env.pop(name, None)
    if fault:
        env[durable.FAULT_ENV] = fault
    if worker_fault:
        env[worker.WORKER_FAULT_ENV] = worker_fault
    if log:
        env[tasks.TRAINING_LOG_ENV] = log
    cmd = [sys.executable, "-m", "nas_tf.train", f"--output_dir={out}", f"--child_isolate={isolate}"]
    return subprocess.run(cmd + _TINY, env=env, capture_output=True, text=True, timeout=400)


def _history_lines(out):
    with open(os.path.join(out, search.HISTORY)) as f:
        return [json.loads(line) for line in f if line.strip()]


def _trainings(log):
    """Finished trainings per trial directory."""
    if not os.path.exists(log):
        return collections.Counter()
    with open(log) as f:
        return collections.Counter(os.path.basename(os.path.dirname(line.strip())) for line in f)


def _results(records):
    keep = ("status", "architecture", "reward", "val_accuracy", "num_params")
    return {r["trial_id"]: {k: r.get(k) for k in keep} for r in records}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("uninterrupted"))
    log = os.path.join(out, "trainings.log")
    done = _search(out, log=log)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(os.path.join(out, search.BEST_ARCHITECTURE)) as f:
        best = f.read()
    return _results(_history_lines(out)), best, _trainings(log)


def _kill_and_resume(tmp_path, uninterrupted, isolate=False, **fault):
    out, log = str(tmp_path / "run"), str(tmp_path / "trainings.log")
    killed = _search(out, log=log, isolate=isolate, **fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    recorded = [r["trial_id"] for r in _history_lines(out)] if os.path.exists(
        os.path.join(out, search.HISTORY)
    ) else []
    resumed = _search(out, log=log, isolate=isolate)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    lines = _history_lines(out)
    ids = [r["trial_id"] for r in lines]
    assert len(ids) == len(set(ids)) == _TRIALS  # Every child once: none lost, none recorded twice.
    expected, best, _ = uninterrupted
    assert _results(lines) == expected  # The same children with the same results...
    with open(os.path.join(out, search.BEST_ARCHITECTURE)) as f:
        assert f.read() == best  # ...and the same best.
    assert os.path.exists(os.path.join(out, search.BEST_MODEL))
    trainings = _trainings(log)
    if not isolate:  # (A worker outliving its search by a moment may finish its child once more.)
        assert trainings == collections.Counter({f"trial_{i}": 1 for i in ids})  # None trained twice.
    assert all(trainings[f"trial_{i}"] == 1 for i in recorded)
    kept = [d for d in os.listdir(os.path.join(out, search.PROJECT))
            if os.path.exists(os.path.join(out, search.PROJECT, d, "model.keras"))]  # fmt: skip
    assert len(kept) == 1  # Only the best child's model stays on disk.
    return recorded, resumed


@pytest.mark.slow
def test_killed_after_the_history_line_the_child_is_not_trained_again(tmp_path, uninterrupted):
    # Keras Tuner had not saved the trial: the resumed search runs the same trial id again.
    recorded, _ = _kill_and_resume(tmp_path, uninterrupted, fault="after_record:2")
    assert recorded == ["0", "1"]


@pytest.mark.slow
def test_killed_while_a_child_trains(tmp_path, uninterrupted):
    recorded, _ = _kill_and_resume(tmp_path, uninterrupted, fault="during_child:3")
    assert recorded == ["0", "1"]


@pytest.mark.slow
def test_killed_before_keeping_the_best_model(tmp_path, uninterrupted):
    recorded, _ = _kill_and_resume(tmp_path, uninterrupted, fault="before_best_model:2")
    assert recorded == ["0", "1"]


@pytest.mark.slow
def test_killed_while_exporting_the_best(tmp_path, uninterrupted):
    recorded, _ = _kill_and_resume(tmp_path, uninterrupted, fault="during_best_export:1")
    assert recorded == ["0", "1", "2"]


@pytest.mark.slow
def test_killed_while_an_isolated_child_trains(tmp_path, uninterrupted):
    recorded, _ = _kill_and_resume(tmp_path, uninterrupted, isolate=True, fault="during_child:2")
    assert recorded == ["0"]


@pytest.mark.slow
def test_a_killed_worker_fails_only_its_child(tmp_path):
    out = str(tmp_path / "run")
    # Each worker SIGKILLs itself at its 2nd child: child 1 dies, a new worker trains child 2.
    done = _search(out, isolate=True, worker_fault="during_child:2")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = _history_lines(out)
    assert [r["status"] for r in lines] == ["COMPLETED", "FAILED", "COMPLETED"]
    assert lines[1]["reason"] == "crash" and "exit code -9" in lines[1]["message"]
    assert "FAILED (crash)" in done.stdout


@pytest.mark.slow
def test_children_past_the_timeout_fail_and_the_search_goes_on(tmp_path):
    out = str(tmp_path / "run")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop(durable.FAULT_ENV, None)
    cmd = [sys.executable, "-m", "nas_tf.train", f"--output_dir={out}", "--child_timeout=0.05"]
    done = subprocess.run(cmd + _TINY, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = _history_lines(out)
    assert [(r["status"], r["reason"]) for r in lines] == [("FAILED", "timeout")] * _TRIALS
    assert "0.05 s timeout" in lines[0]["message"]
    assert not os.path.exists(os.path.join(out, search.BEST_ARCHITECTURE))
