"""Keras Tuner's chief/worker mode with NASRLOracle: a chief and two workers."""

import collections
import json
import os
import socket
import subprocess
import sys

import pytest

from nas_tf import journal

_SCRIPT = os.path.join(os.path.dirname(__file__), "distributed_search.py")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_chief_and_two_workers_run_every_trial_once(tmp_path):
    max_trials = 12
    port = _free_port()
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(tuner_id):
        env = dict(
            os.environ,
            KERASTUNER_TUNER_ID=tuner_id,
            KERASTUNER_ORACLE_IP="127.0.0.1",
            KERASTUNER_ORACLE_PORT=str(port),
        )
        out = open(tmp_path / f"{tuner_id}.out", "w")
        args = [sys.executable, _SCRIPT, str(tmp_path / "search"), str(logs), str(max_trials)]
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)

    chief = start("chief")
    workers = [start("worker0"), start("worker1")]
    try:
        for p in workers:
            # A worker that outlives its chief would block on gRPC for an hour.
            assert p.wait(timeout=240) == 0, (tmp_path / "worker0.out").read_text()[-3000:]
        assert chief.wait(timeout=120) == 0, (tmp_path / "chief.out").read_text()[-3000:]
    finally:
        for p in [chief] + workers:
            if p.poll() is None:
                p.kill()

    runs = collections.Counter()
    for name in os.listdir(logs):
        runs.update((logs / name).read_text().split())
    expected = {f"{i:02d}" for i in range(max_trials)}
    assert set(runs) == expected  # No trial lost...
    assert max(runs.values()) == 1  # ...and none run twice.
    state = journal.JournaledState(str(tmp_path / "search" / "distributed" / "oracle.json")).load()
    assert state["nasrl"]["num_updates"] >= (max_trials // 2) - 1
    assert len(state["end_order"]) == max_trials
