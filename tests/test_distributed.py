"""Keras Tuner's chief/worker mode with NASRLOracle: a chief and two workers."""

import os

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
    # Every reward the workers sent reached the controller: one update per m = 2
    # policy samples fed (mutations of the best feed the top-K buffer only).
    samples = sum(1 for _, _, _, on_policy in state["nasrl"]["feeds"] if on_policy)
    assert samples >= max_trials // 3
    assert state["nasrl"]["num_updates"] == samples // 2


def test_a_worker_that_cannot_reach_the_chief_stops_clearly_in_bounded_time(tmp_path, monkeypatch):
    """`nas_tf.train` as a worker whose chief never answers: a SearchError naming the chief."""
    from distributed_cluster import free_port
    from nas_tf import search

    port = free_port()  # Nothing listens there.
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "worker0")
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", str(port))
    monkeypatch.setenv("NAS_TF_CHIEF_TIMEOUT", "2")
    config = search.SearchConfig(
        output_dir=str(tmp_path / "run"), space_overrides={"depth": 1, "num_filters": (2,)},
        max_trials=2, isolate_children=False, verbose=0,
    )  # fmt: skip
    with pytest.raises(search.SearchError) as error:
        search.run(config)
    message = str(error.value)
    assert message.startswith("ChiefUnreachableError: The chief oracle at 127.0.0.1:") and str(port) in message
    assert "did not answer CreateTrial within 2 s" in message
    assert not os.path.exists(tmp_path / "run" / search.HISTORY)  # A worker exports nothing.
