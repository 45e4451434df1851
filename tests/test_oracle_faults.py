"""Kill the oracle (SIGKILL) at each named point of a trial's life; the resumed search
equals an uninterrupted one: same trials, same scores, same controller, nothing twice."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

DRIVER = os.path.join(os.path.dirname(__file__), "oracle_fault_driver.py")
TRIALS = 30


def _run(project, fault=None):
    env = dict(os.environ)
    env.pop("NAS_TF_FAULT", None)
    if fault:
        env["NAS_TF_FAULT"] = fault
    return subprocess.run(
        [sys.executable, DRIVER, str(project), str(TRIALS)],
        env=env, capture_output=True, text=True, timeout=600,
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    project = tmp_path_factory.mktemp("straight") / "project"
    result = _run(project)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(project / "final.json") as f:
        return json.load(f)


def _check_fault(project, fault, uninterrupted):
    killed = _run(project, fault)
    assert killed.returncode == -signal.SIGKILL, (fault, killed.returncode, killed.stderr[-2000:])
    resumed = _run(project)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    with open(project / "final.json") as f:
        final = json.load(f)
    assert final["trials"] == uninterrupted["trials"]
    assert final["next"] == uninterrupted["next"]
    for name, value in uninterrupted["weights"].items():
        np.testing.assert_allclose(final["weights"][name], value, atol=1e-6, err_msg=name)
    with open(project / "evaluations.jsonl") as f:
        evaluated = [json.loads(line)["trial_id"] for line in f if line.strip()]
    assert sorted(evaluated) == sorted(uninterrupted["trials"])  # Each trial evaluated once.


# oracle_save_trial:9 is the start of the fifth trial: its file is written, the
# oracle's state that starts it is not.
@pytest.mark.parametrize("fault", ["controller_update:3", "oracle_save_trial:9"])
def test_kill_then_resume_equals_an_uninterrupted_search(tmp_path, fault, uninterrupted):
    _check_fault(tmp_path / "project", fault, uninterrupted)


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault",
    ["controller_update:1", "oracle_save_checkpoint:2", "oracle_save_state:7", "oracle_save_state:20",
     "oracle_save_snapshot:2", "oracle_save_checkpoint:1", "oracle_save_trial:10",
     "oracle_save_trial:31"],
)
def test_kill_anywhere_in_the_oracle_then_resume(tmp_path, fault, uninterrupted):
    _check_fault(tmp_path / "project", fault, uninterrupted)
