"""Trains children in a separate, recycled process.

TensorFlow keeps a few MiB of per-model state (traced functions, optimizer and
metric variables) that `keras.backend.clear_session()` does not return: a
search that trains thousands of children in its own process grows without
bound (measured: about 8.5 MiB per child, see docs/conv.md). Training each
child in a worker process that is replaced every `children_per_worker`
children keeps the search process flat, and a child that crashes its process
(out of memory, a native fault) fails its trial instead of ending the search.

The worker is started with the "spawn" method (TensorFlow is not fork-safe)
and receives a plain-Python `task`: a callable that is pickled once per
worker, so it should hold only the data and settings to train with.
"""

import multiprocessing
import traceback
from typing import Any, Callable, Optional

_CONTEXT = multiprocessing.get_context("spawn")


class ChildCrashed(RuntimeError):
    """The worker process died while training a child."""


def _serve(conn, task):
    """The worker's loop: call `task(request)` for each request until told to stop."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    while True:
        request = conn.recv()
        if request is None:
            return
        try:
            conn.send(("ok", task(request)))
        except BaseException as e:  # Reported to the search, which fails the trial.
            trace = traceback.format_exc()
            try:
                conn.send(("error", (e, trace)))
            except Exception:  # The exception itself does not pickle.
                conn.send(("error", (RuntimeError(f"{type(e).__name__}: {e}"), trace)))


class WorkerPool:
    """One worker process at a time, replaced every `children_per_worker` calls.

    Args:
      task: a picklable callable, run in the worker on each request.
      children_per_worker: how many requests a worker serves before it is
        replaced (bounds its memory).
    """

    def __init__(self, task: Callable[[Any], Any], children_per_worker: int = 20):
        if children_per_worker < 1:
            raise ValueError(f"children_per_worker must be >= 1, got {children_per_worker}.")
        self.task = task
        self.children_per_worker = children_per_worker
        self._process: Optional[multiprocessing.Process] = None
        self._conn = None
        self._served = 0

    def _start(self):
        parent, child = _CONTEXT.Pipe()
        self._process = _CONTEXT.Process(target=_serve, args=(child, self.task), daemon=True)
        self._process.start()
        child.close()
        self._conn, self._served = parent, 0

    def __call__(self, request):
        """Runs `task(request)` in the worker and returns its result.

        Raises:
          Whatever the task raised (re-raised here), or `ChildCrashed` if the
          worker process died.
        """
        if self._process is None or self._served >= self.children_per_worker:
            self.close()
            self._start()
        self._served += 1
        try:
            self._conn.send(request)
            status, payload = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            code = self._process.exitcode if self._process else None
            self._process.join(timeout=5)
            code = self._process.exitcode if code is None else code
            self._process, self._conn = None, None
            raise ChildCrashed(f"the child's worker process died (exit code {code}).") from None
        if status == "error":
            error, trace = payload
            raise error
        return payload

    def close(self):
        """Stops the current worker, if any."""
        if self._process is None:
            return
        try:
            self._conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._process, self._conn = None, None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
