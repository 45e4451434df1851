"""Faults in a distributed search (a chief and two workers): SIGKILL at named points.

A worker killed mid-child and restarted with the same id gets its trial back;
a chief killed while it saves and restarted (same directory and port) resumes
its state, and the workers reconnect while they wait for it, or, given up
after `NAS_TF_CHIEF_TIMEOUT`, fail with a clear error and are restarted. Either
way every trial ends exactly once, and no child is trained twice but one whose
result its worker gave up sending.
"""

import signal

import keras_tuner as kt
import pytest
from keras_tuner.engine import trial as trial_module

import nas_tf
from distributed_cluster import WORKERS, Cluster
from nas_tf import distributed

KILLED = -signal.SIGKILL
MAX_TRIALS = 12


@pytest.mark.slow
def test_worker_killed_mid_child_resumes_its_trial_when_restarted(tmp_path):
    with Cluster(tmp_path, MAX_TRIALS) as cluster:
        cluster.start_all(faults={"worker0": "during_child:2"})
        cluster.expect_exit("worker0", KILLED, timeout=240)
        killed_in = cluster.events_of("worker0", "start")[-1]
        assert killed_in not in cluster.events_of("worker0", "done")
        cluster.start("worker0")  # Same id, no fault.
        cluster.finish()
    started, done = cluster.events("start"), cluster.events("done")
    assert set(done) == cluster.trial_ids() and max(done.values()) == 1
    # The killed child was started again by the restarted worker0, and only it.
    assert started[killed_in] == 2 and cluster.events_of("worker0", "start").count(killed_in) == 2
    assert cluster.events_of("worker0", "done").count(killed_in) == 1
    assert all(n == 1 for t, n in started.items() if t != killed_in)
    cluster.check_complete()


# The chief's 2nd save is the first trial it creates (the 1st is at its start);
# later saves are a trial's creation or its end, whichever request comes.
@pytest.mark.slow
@pytest.mark.parametrize("fault", ["oracle_save_state:2", "oracle_save_state:9"])
def test_chief_killed_and_restarted_workers_reconnect(tmp_path, fault):
    with Cluster(tmp_path, MAX_TRIALS, env={"NAS_TF_CHIEF_TIMEOUT": "180"}) as cluster:
        cluster.start_all(faults={"chief": fault})
        cluster.expect_exit("chief", KILLED, timeout=240)
        for name in WORKERS:  # They wait for the chief; none has given up.
            assert cluster.procs[name].poll() is None, cluster.output(name)
        cluster.start("chief")  # Same directory and port, overwrite=False.
        cluster.finish()
    done = cluster.events("done")
    assert set(done) == cluster.trial_ids() and max(done.values()) == 1  # Each child once.
    assert max(cluster.events("start").values()) == 1
    cluster.check_complete()


@pytest.mark.slow
def test_workers_give_up_clearly_on_a_dead_chief_and_can_be_restarted(tmp_path):
    # Long enough for a live chief's slowest answer (its first trial builds the
    # controller, while three processes share two cores), short for a dead one.
    with Cluster(tmp_path, MAX_TRIALS, env={"NAS_TF_CHIEF_TIMEOUT": "30"}) as cluster:
        # The workers must find the chief serving already.
        cluster.start("chief", fault="oracle_save_state:7")
        cluster.wait_for_chief()
        for name in WORKERS:
            cluster.start(name, peers=WORKERS)
        cluster.expect_exit("chief", KILLED, timeout=240)
        for name in WORKERS:
            cluster.expect_exit(name, 1, timeout=120)
            out = cluster.output(name)
            assert f"ChiefUnreachableError: The chief oracle at {cluster.address}" in out, out
            assert "_InactiveRpcError" not in out, out
        unreported = {name: cluster.events_of(name, "start")[-1] for name in WORKERS}
        cluster.env["NAS_TF_CHIEF_TIMEOUT"] = "180"
        cluster.start("chief")
        for name in WORKERS:
            cluster.start(name)
        cluster.finish()
    done = cluster.events("done")
    assert set(done) == cluster.trial_ids()
    # A child whose result could not be sent is trained again, by the same worker.
    for trial_id, n in done.items():
        assert n == 1 or (n == 2 and trial_id in unreported.values()), (trial_id, n)
    for name, trial_id in unreported.items():
        assert cluster.events_of(name, "done").count(trial_id) == done[trial_id]
    cluster.check_complete()


# -- the chief's oracle, driven directly (fast) ---------------------------------------


def _space():
    hps = kt.HyperParameters()
    hps.Choice("units", [1, 2, 3, 4])
    nas_tf.anchor(hps, "l0", [])
    nas_tf.anchor(hps, "l1", ["l0"])
    return hps


def _oracle(directory):
    oracle = nas_tf.NASRLOracle(
        objective=kt.Objective("score", "max"), max_trials=6, hyperparameters=_space(), seed=3,
        reinforce_config=nas_tf.ReinforceConfig(batch_size=2),
    )
    oracle._set_project_dir(str(directory), "p")
    oracle.verbose = 0
    return oracle


@pytest.fixture
def as_chief(monkeypatch):
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "1")


def _sent(oracle, trial_id):
    """What a worker sends at a trial's end: a copy over gRPC, marked COMPLETED."""
    trial = trial_module.Trial.from_proto(oracle.trials[trial_id].to_proto())
    trial.status = trial_module.TrialStatus.COMPLETED
    return trial


def test_restarted_chief_keeps_running_trials_for_their_workers(tmp_path, as_chief):
    oracle = _oracle(tmp_path)
    oracle.save()  # As the chief does before serving: before its controller exists.
    first = oracle.create_trial("worker0")
    second = oracle.create_trial("worker1")
    oracle.update_trial(first.trial_id, {"score": 1.0})
    oracle.end_trial(_sent(oracle, first.trial_id))

    restarted = _oracle(tmp_path)
    restarted.reload()
    # worker1 still trains its trial: nobody else gets it, and the chief waits for it.
    assert restarted._retry_queue == []
    assert restarted.create_trial("worker1").trial_id == second.trial_id
    assert "worker1" in restarted.tuner_ids
    assert restarted.create_trial("worker0").trial_id not in (first.trial_id, second.trial_id)


def test_an_end_trial_resent_after_a_chief_restart_counts_once(tmp_path, as_chief):
    oracle = _oracle(tmp_path)
    oracle.save()
    trial = oracle.create_trial("worker0")
    oracle.update_trial(trial.trial_id, {"score": 2.0})
    sent = _sent(oracle, trial.trial_id)
    oracle.end_trial(sent)  # Saved; then the chief dies before it answers.

    restarted = _oracle(tmp_path)
    restarted.reload()
    restarted.end_trial(sent)  # The worker resends it.
    restarted.end_trial(_sent(restarted, trial.trial_id))
    assert restarted.end_order == [trial.trial_id]
    assert restarted._run_times[trial.trial_id] == 1
    assert restarted._rewarded_order == [trial.trial_id]
    assert restarted.ongoing_trials == {}


def test_chief_timeout_is_checked():
    assert distributed.chief_timeout(5) == 5.0
    for bad in (0, -1, "soon", float("inf")):
        with pytest.raises(ValueError, match="chief_timeout"):
            distributed.chief_timeout(bad)
