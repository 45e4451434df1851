"""Children in recycled worker processes: results, errors, crashes, timeouts, recycling."""

import os
import threading

import pytest

from nas_tf.children import convnet, worker


def _task(request):
    kind, value = request
    if kind == "pid":
        return os.getpid()
    if kind == "fail":
        raise convnet.ChildTrainingError("nan", value)
    if kind == "crash":
        os._exit(7)
    if kind == "segfault":
        import faulthandler

        faulthandler._sigsegv()
    if kind == "bug":
        return _helper_with_a_bug(value)
    if kind == "hang":
        # A hung child: nothing wakes it before `value` seconds but the pool's kill.
        threading.Event().wait(value)
        return "woke"
    return value * 2


def _helper_with_a_bug(value):
    return value.no_such_attribute


def test_results_errors_and_crashes_cross_the_process_boundary():
    pool = worker.WorkerPool(_task, children_per_worker=10)
    try:
        assert pool(("double", 21)) == 42
        with pytest.raises(convnet.ChildTrainingError, match="loss is nan") as info:
            pool(("fail", "loss is nan"))
        assert info.value.reason == "nan"
        with pytest.raises(worker.ChildCrashed, match="exit code 7"):
            pool(("crash", None))
        assert pool(("double", 1)) == 2  # A fresh worker took over.
    finally:
        pool.close()


def test_workers_are_replaced_every_n_children():
    pool = worker.WorkerPool(_task, children_per_worker=2)
    try:
        pids = [pool(("pid", None)) for _ in range(3)]
    finally:
        pool.close()
    assert pids[0] == pids[1] != pids[2]
    assert os.getpid() not in pids


def test_child_errors_pickle_with_their_reason():
    import pickle

    from nas_tf.children import base

    for error in (convnet.ChildTrainingError("oom", "no memory"), base.ChildDivergedError("inf")):
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error) and back.reason == error.reason and str(back) == str(error)


def test_a_native_crash_reports_the_workers_stderr():
    pool = worker.WorkerPool(_task, children_per_worker=10)
    try:
        with pytest.raises(worker.ChildCrashed) as info:
            pool(("segfault", None))
        assert info.value.reason == "crash"
        assert "Segmentation fault" in info.value.traceback  # faulthandler's dump...
        assert "_task" in info.value.traceback  # ...with the Python stack.
        assert "Segmentation fault" in str(info.value)
    finally:
        pool.close()


def test_bugs_come_back_with_a_traceback_and_a_child_past_its_timeout_is_killed():
    pool = worker.WorkerPool(_task, children_per_worker=10, timeout=1.0)
    try:
        # Worker start-up is not the child's time.
        with pytest.raises(AttributeError, match="no_such_attribute") as info:
            pool(("bug", 3))
        assert "_helper_with_a_bug" in info.value.worker_traceback
        assert pool(("double", 1)) == 2  # The same worker goes on.
        # Were the timeout not enforced, the call would return "woke" and this fails.
        with pytest.raises(worker.ChildTimedOut, match="1 s timeout") as info:
            pool(("hang", 600))
        assert info.value.reason == "timeout" and isinstance(info.value, worker.ChildCrashed)
        assert pool(("double", 5)) == 10  # A fresh worker took over.
    finally:
        pool.close()
    with pytest.raises(ValueError, match="timeout"):
        worker.WorkerPool(_task, timeout=0)
