"""One writer per output directory: a lock file held for the life of a search.

Two searches writing one output directory corrupt it (two oracles append to
one journal, the same trials are trained twice into one history). So a
search, `nas_tf.retrain`, `nas_tf.train_lm` and the launcher hold
`<output_dir>/.nas_tf.lock` from before they write or delete anything
(`--overwrite` included) until they end:

* the lock is an `fcntl.flock` on that file, which holds the holder's host,
  pid, program and start time; a second process refuses with `LockedError`,
  naming them;
* the kernel releases a flock when its holder dies, however it dies, so a
  lock file whose flock can be taken is stale and is taken over: a search
  killed by SIGKILL resumes without anyone deleting a file. A lock left by
  another host is taken over too, with a warning: the file system said that
  nobody holds it (see "Limits");
* a process that ends normally deletes the file;
* a holder hands the lock to the processes it starts (the launcher to its
  chief, across the chief's restarts) with `child_env()`: a process whose
  `NAS_TF_DIR_LOCK` holds the holder's token works under the held lock;
* within one process the lock is re-entrant (the entry point and
  `nas_tf.search.run` both take it);
* Keras Tuner's workers share the chief's directory legitimately: they do
  not take the directory's lock, only their own (`worker_lock_name`), which
  keeps two workers of the same id apart.

Limits: flock is as good as the file system's. Local disks and NFSv4 (Linux
maps flock to NFS locks) keep two machines apart; a FUSE mount such as
gcsfuse keeps locks on one machine only, and some file systems refuse flock:
then the record alone is checked (a live pid on this host, or any unreleased
record of another host, refuses) and a warning says the lock is advisory.
"""

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import uuid
from typing import Dict, Optional

LOCK_FILE = ".nas_tf.lock"
ENV = "NAS_TF_DIR_LOCK"
# flock errors that mean "this file system cannot lock", not "someone holds it".
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENOTSUP}
_held: Dict[str, "DirLock"] = {}
_registry = threading.Lock()


class LockedError(RuntimeError):
    """Another process holds the output directory (the message names it)."""


def worker_lock_name(tuner_id: str) -> str:
    """The lock file of one Keras Tuner worker (`worker0` -> `.nas_tf.worker0.lock`)."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in tuner_id) or "worker"
    return f".nas_tf.{safe}.lock"


def is_lock_file(name: str) -> bool:
    """Whether a file name is one of this module's lock files (never synced or cleared)."""
    return name == LOCK_FILE or (name.startswith(".nas_tf.") and name.endswith(".lock"))


def host() -> str:
    return socket.gethostname() or "localhost"


def read(directory: str, name: str = LOCK_FILE) -> Optional[dict]:
    """The record of the lock file in `directory`, or None (no file, empty, unreadable)."""
    try:
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            return _parse(f.read())
    except OSError:
        return None


def _parse(text: str) -> Optional[dict]:
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _read_fd(fd: int) -> Optional[dict]:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    return _parse(b"".join(chunks).decode("utf-8", "replace"))


def describe(record: Optional[dict]) -> str:
    """"pid 12 on host a (nas_tf.train, started 2026-...)" for messages."""
    if not record:
        return "a process that has not written its record yet"
    return (f"pid {record.get('pid', '?')} on host {record.get('host', '?')} "
            f"({record.get('program', '?')}, started {record.get('started', '?')})")  # fmt: skip


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError) as e:
        return isinstance(e, PermissionError)  # Alive, but another user's.
    return True


class DirLock:
    """A held lock on one directory (see the module doc); a context manager.

    Attributes:
      directory, path: the directory and its lock file.
      record: what the lock file says (host, pid, program, started, token).
      previous: the record of a stale lock this one took over, or None.
      delegated: True when this process works under its parent's lock.
    """

    def __init__(self, directory, path, fd, record, previous=None, delegated=False):
        self.directory, self.path = directory, path
        self.record, self.previous, self.delegated = record, previous, delegated
        self._fd = fd
        self._depth = 1

    def child_env(self) -> Dict[str, str]:
        """Environment that lets processes this one starts work under its lock."""
        return {ENV: self.record["token"]}

    def release(self) -> None:
        """Releases the lock (the last release of this process deletes the lock file)."""
        with _registry:
            self._depth -= 1
            if self._depth > 0:
                return
            _held.pop(self.path, None)
        if self.delegated or self._fd is None:
            return
        try:
            if _still_ours(self.path, self.record):
                os.remove(self.path)  # Before the flock goes: no one can lock the old file.
        except OSError:
            pass
        finally:
            os.close(self._fd)  # Releases the flock.
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _still_ours(path, record) -> bool:
    current = read(os.path.dirname(path), os.path.basename(path))
    return bool(current) and current.get("token") == record.get("token")


def acquire(directory: str, name: str = LOCK_FILE, environ=None) -> DirLock:
    """Takes the lock of `directory` (created if missing) for this process.

    Args:
      directory: the output directory.
      name: the lock file's name (`LOCK_FILE`, or `worker_lock_name(id)`).
      environ: where `NAS_TF_DIR_LOCK` is read (default `os.environ`).

    Returns:
      The held `DirLock`; release it (or use it in a `with`).

    Raises:
      LockedError: another process holds it, naming that process and the lock file.
    """
    environ = os.environ if environ is None else environ
    os.makedirs(directory, exist_ok=True)
    path = os.path.abspath(os.path.join(directory, name))
    with _registry:
        held = _held.get(path)
        if held is not None:
            held._depth += 1
            return held
    lock = _acquire(directory, path, environ.get(ENV))
    with _registry:
        _held[path] = lock
    return lock


def _acquire(directory, path, inherited) -> DirLock:
    for _ in range(100):  # Retries only while others delete and recreate the file.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            record = _read_fd(fd)
            os.close(fd)
            if inherited and record and record.get("token") == inherited:
                return DirLock(directory, path, None, record, delegated=True)
            raise LockedError(_held_message(directory, path, record)) from None
        except OSError as e:
            if e.errno not in _UNSUPPORTED:
                os.close(fd)
                raise
            return _acquire_without_flock(directory, path, fd, inherited)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if not same:  # Its holder deleted it as we opened it: lock the new file.
            os.close(fd)
            continue
        previous = _read_fd(fd)
        if previous and previous.get("host") != host():
            print(f"nas_tf: warning: took over the lock of {directory} left by "
                  f"{describe(previous)}: its file system says nobody holds it. If that "
                  "search still runs (file systems such as gcsfuse keep locks on one machine "
                  "only), stop one of the two now.", file=sys.stderr, flush=True)  # fmt: skip
        return DirLock(directory, path, fd, _write_record(fd), previous=previous)
    raise LockedError(f"Could not lock {path}: other processes keep replacing it.")


def _acquire_without_flock(directory, path, fd, inherited) -> DirLock:
    """The record-only lock of a file system without flock (advisory, with a warning)."""
    previous = _read_fd(fd)
    if previous:
        if inherited and previous.get("token") == inherited:
            os.close(fd)
            return DirLock(directory, path, None, previous, delegated=True)
        here = previous.get("host") == host()
        if not here or _pid_alive(previous.get("pid")):
            os.close(fd)
            raise LockedError(
                _held_message(directory, path, previous)
                + ("" if here else " This file system cannot lock files, so whether it still "
                   f"runs is unknown: if it does not, delete {path} and run again.")
            )  # fmt: skip
    print(f"nas_tf: warning: the file system of {directory} cannot lock files (flock); the "
          f"lock in {path} is advisory: do not start two searches on this directory.",
          file=sys.stderr, flush=True)  # fmt: skip
    return DirLock(directory, path, fd, _write_record(fd), previous=previous)


def _write_record(fd) -> dict:
    record = {
        "host": host(),
        "pid": os.getpid(),
        "program": os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python",
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "token": uuid.uuid4().hex,
    }
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode("utf-8"))
    with contextlib.suppress(OSError):
        os.fsync(fd)
    return record


def _held_message(directory, path, record) -> str:
    return (
        f"{directory} is in use by {describe(record)}: only one search may write an output "
        f"directory at a time (lock file {path}). Wait for it to end or stop it, or choose "
        "another output directory."
    )
