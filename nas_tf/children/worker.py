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

Nothing is silent and nothing hangs:

* an exception raised by the task comes back to the caller, re-raised, with
  the worker's formatted traceback in its `worker_traceback` attribute;
* the worker's stderr goes to a file that the caller copies to its own stderr
  after each child; when the worker dies, the tail of that file (with the
  `faulthandler` dump of a native crash) is in the `ChildCrashed` error;
* a child that runs past `timeout` seconds has its worker killed and raises
  `ChildTimedOut`;
* a worker whose search process died exits on its own within a second.

Fault injection (`nas_tf.durable.fault_point`): the worker does not inherit
`NAS_TF_FAULT` (whose points are meant for the search process); it takes
`NAS_TF_WORKER_FAULT` as its own `NAS_TF_FAULT` instead.
"""

import multiprocessing
import os
import sys
import tempfile
import traceback
from typing import Any, Callable, Optional

from nas_tf import durable

_CONTEXT = multiprocessing.get_context("spawn")
WORKER_FAULT_ENV = "NAS_TF_WORKER_FAULT"
TAIL_CHARS = 4000  # How much of a dead worker's stderr goes into the error.
DAY = 24 * 3600.0
STARTUP_SECONDS = 600.0  # Longest a worker may take to start (import TensorFlow, unpickle).


class ChildCrashed(RuntimeError):
    """The worker process died while training a child (the trial fails).

    Attributes:
      reason: "crash".
      traceback: the tail of the worker's stderr (may be empty).
    """

    reason = "crash"

    def __init__(self, message: str, traceback: str = ""):
        super().__init__(message)
        self.traceback = traceback


class ChildTimedOut(ChildCrashed):
    """A child ran past the timeout; its worker was killed (the trial fails)."""

    reason = "timeout"


def _watch_parent(parent_pid: int, stderr_path=None):
    """Exits this worker once the process that started it is gone (and removes its log)."""
    import threading
    import time

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                if stderr_path:
                    try:
                        os.remove(stderr_path)
                    except OSError:
                        pass
                os._exit(3)

    threading.Thread(target=watch, daemon=True, name="nas_tf-parent-watch").start()


def _serve(conn, task, stderr_path=None, parent_pid=None):
    """The worker's loop: call `task(request)` for each request until told to stop."""
    import faulthandler

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    spec = os.environ.pop(WORKER_FAULT_ENV, None)
    os.environ.pop(durable.FAULT_ENV, None)
    if spec:
        os.environ[durable.FAULT_ENV] = spec
    if stderr_path:
        fd = os.open(stderr_path, os.O_WRONLY | os.O_APPEND)
        os.dup2(fd, 2)
        os.close(fd)
    faulthandler.enable()
    if parent_pid is not None:
        _watch_parent(parent_pid, stderr_path)
    while True:
        try:
            request = conn.recv()
        except EOFError:  # The search went away.
            return
        if request is None:
            return
        conn.send(("started", None))  # The child's timeout runs from here.
        try:
            conn.send(("ok", task(request)))
        except BaseException as e:  # Reported to the search, which decides.
            trace = traceback.format_exc()
            sys.stderr.write(trace)
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
      timeout: seconds one request may take before its worker is killed
        (None: no limit).
    """

    def __init__(
        self,
        task: Callable[[Any], Any],
        children_per_worker: int = 20,
        timeout: Optional[float] = None,
    ):
        if children_per_worker < 1:
            raise ValueError(f"children_per_worker must be >= 1, got {children_per_worker}.")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be positive seconds or None, got {timeout}.")
        self.task = task
        self.children_per_worker = children_per_worker
        self.timeout = timeout
        self._process: Optional[multiprocessing.Process] = None
        self._conn = None
        self._served = 0
        self._stderr_path = None
        self._stderr_offset = 0

    def _start(self):
        fd, self._stderr_path = tempfile.mkstemp(prefix="nas_tf_worker_", suffix=".log")
        os.close(fd)
        self._stderr_offset = 0
        parent, child = _CONTEXT.Pipe()
        self._process = _CONTEXT.Process(
            target=_serve, args=(child, self.task, self._stderr_path, os.getpid()), daemon=True
        )
        self._process.start()
        child.close()
        self._conn, self._served = parent, 0

    def _copy_stderr(self) -> str:
        """Copies what the worker wrote to stderr since the last call to ours; returns it."""
        if not self._stderr_path:
            return ""
        try:
            with open(self._stderr_path, "rb") as f:
                f.seek(self._stderr_offset)
                new = f.read()
        except OSError:
            return ""
        self._stderr_offset += len(new)
        text = new.decode("utf-8", "replace")
        if text:
            sys.stderr.write(text)
            sys.stderr.flush()
        return text

    def _stderr_tail(self) -> str:
        """The end of the worker's stderr, without faulthandler's list of extension modules."""
        try:
            with open(self._stderr_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self._stderr_path) - 8 * TAIL_CHARS))
                text = f.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""
        lines = [line for line in text.splitlines() if not line.startswith("Extension modules:")]
        return "\n".join(lines)[-TAIL_CHARS:]

    def __call__(self, request):
        """Runs `task(request)` in the worker and returns its result.

        Raises:
          Whatever the task raised (re-raised here, with `worker_traceback`),
          `ChildTimedOut` if it ran past the timeout, or `ChildCrashed` if the
          worker process died.
        """
        if self._process is None or self._served >= self.children_per_worker:
            self.close()
            self._start()
        self._served += 1
        try:
            self._conn.send(request)
            durable.fault_point("during_child")  # The search dies while a child trains.
            # A new worker first imports and unpickles (not the child's time, but
            # bounded too), then says "started"; the child's timeout runs from there.
            startup = None if self.timeout is None else max(self.timeout, STARTUP_SECONDS)
            for wait in (startup, self.timeout):
                if not self._conn.poll(wait):
                    self._copy_stderr()
                    tail = self._stderr_tail()
                    self._discard()
                    raise ChildTimedOut(
                        f"the child ran past the {self.timeout:g} s timeout; its worker was killed.",
                        tail,
                    )
                status, payload = self._conn.recv()
                if status != "started":
                    break
        except (EOFError, OSError, BrokenPipeError):
            self._process.join(timeout=5)
            code = self._process.exitcode
            self._copy_stderr()
            tail = self._stderr_tail()
            self._discard()
            message = f"the child's worker process died (exit code {code})."
            lines = [line.strip() for line in tail.splitlines() if line.strip()]
            fatal = [line for line in lines if line.startswith("Fatal Python error")]
            if fatal or lines:
                message += f" Its stderr: {(fatal or lines)[-1][:300]}"
            raise ChildCrashed(message, tail) from None
        self._copy_stderr()
        if status == "error":
            error, trace = payload
            try:
                error.worker_traceback = trace
            except Exception:
                pass
            raise error
        return payload

    def _discard(self):
        """Kills the current worker (if alive) and forgets it."""
        if self._process is not None and self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._forget()

    def _forget(self):
        if self._conn is not None:
            self._conn.close()
        if self._stderr_path and os.path.exists(self._stderr_path):
            os.remove(self._stderr_path)
        self._process, self._conn, self._stderr_path = None, None, None

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
        self._copy_stderr()
        self._forget()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
