"""The chief's service: its token, and a worker that never comes back."""

import socket

import grpc
import pytest

from conftest import toy_oracle
from nas_tf import chief
from nas_tf import kt_compat


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_requests_without_the_token_are_refused(tmp_path):
    from keras_tuner.src import protos

    oracle = toy_oracle(tmp_path)
    address = f"127.0.0.1:{_free_port()}"
    server, _ = chief.start(oracle, address, secret="s3cret")
    try:
        stub = kt_compat.oracle_stub(grpc.insecure_channel(address))
        request = protos.get_service().GetSpaceRequest()
        for metadata in ((), ((chief.TOKEN_HEADER, "guess"),)):
            with pytest.raises(grpc.RpcError) as refused:
                stub.GetSpace(request, metadata=metadata, timeout=30)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert chief.TOKEN_ENV in refused.value.details()
        answer = stub.GetSpace(request, metadata=((chief.TOKEN_HEADER, "s3cret"),), timeout=30)
        assert answer.HasField("hyperparameters")  # Served: the oracle's space.
    finally:
        server.stop(grace=None)


class _Clock:
    """A clock that moves only when the chief sleeps (no real waiting)."""

    def __init__(self):
        self.now, self.sleeps = 1000.0, 0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps += 1
        if self.sleeps > 50:
            raise AssertionError("the chief never finished")
        self.now += seconds


def test_a_worker_that_never_returns_has_its_trial_retried_and_the_chief_finishes(tmp_path):
    oracle = toy_oracle(tmp_path)
    oracle.max_trials = 2
    clock = _Clock()
    servicer = chief._WatchingServicer(oracle, clock)
    lost = oracle.create_trial("worker0")  # ...whose machine then disappears.
    done = oracle.create_trial("worker1")
    servicer.last_seen.update({lost.trial_id: clock(), done.trial_id: clock()})
    oracle.update_trial(done.trial_id, {"score": 1.0})
    done.status = "COMPLETED"
    oracle.end_trial(done)
    assert oracle.create_trial("worker1").status == "STOPPED"  # The budget is spent.
    servicer.stop_triggered = True
    assert not kt_compat.chief_may_exit(oracle)  # Keras Tuner alone would wait forever.

    chief.wait_until_done(oracle, servicer, lost=60.0, clock=clock, sleep=clock.sleep, poll=20.0)
    assert 60.0 <= clock.now - 1000.0 <= 80.0
    assert oracle.ongoing_trials == {} and "worker0" not in oracle.tuner_ids
    retried = oracle.create_trial("worker2")  # The next worker trains it again.
    assert retried.trial_id == lost.trial_id and retried.status == "RUNNING"


def test_the_lost_worker_timeout_is_checked(monkeypatch):
    monkeypatch.setenv(chief.LOST_ENV, "0")
    with pytest.raises(ValueError, match=chief.LOST_ENV):
        chief.lost_after()
    monkeypatch.setenv(chief.LOST_ENV, "90")
    assert chief.lost_after() == 90.0
    monkeypatch.delenv(chief.LOST_ENV)
    assert chief.lost_after() == chief.DEFAULT_LOST_AFTER
