"""Keras Tuner's chief/worker mode with NASRLOracle: a chief and two workers."""

import pytest

from distributed_cluster import Cluster


@pytest.mark.slow
def test_chief_and_two_workers_run_every_trial_once(tmp_path):
    max_trials = 12
    with Cluster(tmp_path, max_trials) as cluster:
        cluster.start_all()
        cluster.finish()
    started, done = cluster.events("start"), cluster.events("done")
    assert set(done) == cluster.trial_ids()  # No trial lost...
    assert max(started.values()) == 1 and max(done.values()) == 1  # ...and none run twice.
    state = cluster.check_complete()
    assert state["nasrl"]["num_updates"] >= (max_trials // 2) - 1
