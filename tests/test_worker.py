"""Children in recycled worker processes: results, errors, crashes, recycling."""

import os

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
    return value * 2


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
        pids = [pool(("pid", None)) for _ in range(5)]
    finally:
        pool.close()
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
    assert os.getpid() not in pids


def test_child_errors_pickle_with_their_reason():
    import pickle

    from nas_tf.children import language_model

    for error in (convnet.ChildTrainingError("oom", "no memory"), language_model.ChildDivergedError("inf")):
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error) and back.reason == error.reason and str(back) == str(error)
