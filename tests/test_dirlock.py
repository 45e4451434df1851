"""`nas_tf.dirlock`: one writer per output directory.

Another process is a small Python script that takes the lock and waits on its
stdin (or kills itself): deterministic, no sleeps.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from nas_tf import dirlock

# Takes the lock of argv[1] (file argv[2]), says so, then waits for stdin to close
# (or kills itself with SIGKILL, its lock unreleased, when argv[3] says "die").
HOLDER = textwrap.dedent("""
    import os, signal, sys
    from nas_tf import dirlock
    lock = dirlock.acquire(sys.argv[1], sys.argv[2])
    print("delegated" if lock.delegated else "locked", flush=True)
    if sys.argv[3] == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.stdin.read()
    lock.release()
""")


def _holder(directory, name=dirlock.LOCK_FILE, mode="wait", env=None):
    """A process that holds the lock of `directory` until its stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory), name, mode], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    line = proc.stdout.readline().strip()
    return proc, line


def _end(proc):
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0, proc.stderr.read()


def test_a_second_process_is_refused_with_the_holders_host_and_pid(tmp_path):
    holder, line = _holder(tmp_path)
    try:
        assert line == "locked"
        with pytest.raises(dirlock.LockedError) as refused:
            dirlock.acquire(tmp_path)
        message = str(refused.value)
        assert f"pid {holder.pid} on host {dirlock.host()}" in message
        assert "only one search may write an output directory" in message
        assert str(tmp_path / dirlock.LOCK_FILE) in message
        record = dirlock.read(tmp_path)
        assert record["pid"] == holder.pid and record["host"] == dirlock.host()
    finally:
        _end(holder)
    # Released: the file is gone and the directory can be locked again.
    assert not (tmp_path / dirlock.LOCK_FILE).exists()
    with dirlock.acquire(tmp_path) as lock:
        assert lock.previous is None and dirlock.read(tmp_path)["pid"] == os.getpid()
    assert not (tmp_path / dirlock.LOCK_FILE).exists()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, capsys):
    holder, line = _holder(tmp_path, mode="die")
    assert line == "locked" and holder.wait(timeout=60) == -signal.SIGKILL
    assert dirlock.read(tmp_path)["pid"] == holder.pid  # Left behind, unreleased.
    with dirlock.acquire(tmp_path) as lock:  # The kernel released its flock: stale.
        assert lock.previous["pid"] == holder.pid
        assert dirlock.read(tmp_path)["pid"] == os.getpid()
    assert "warning" not in capsys.readouterr().err  # Same host: nothing to tell.


def test_a_lock_left_by_another_host_is_taken_over_with_a_warning(tmp_path, capsys):
    record = {"host": "elsewhere", "pid": 4242, "program": "train.py", "started": "then", "token": "t"}
    (tmp_path / dirlock.LOCK_FILE).write_text(json.dumps(record))
    with dirlock.acquire(tmp_path) as lock:
        assert lock.previous == record
    err = capsys.readouterr().err
    assert "took over the lock" in err and "pid 4242 on host elsewhere" in err


def test_processes_given_the_token_work_under_the_lock_and_others_do_not(tmp_path):
    with dirlock.acquire(tmp_path) as lock:
        child, line = _holder(tmp_path, env=dict(os.environ, **lock.child_env()))
        assert line == "delegated"  # The launcher's chief, across its restarts.
        _end(child)
        assert dirlock.read(tmp_path)["token"] == lock.record["token"]  # Still ours.
        stranger, line = _holder(tmp_path, env=dict(os.environ, **{dirlock.ENV: "not-the-token"}))
        assert stranger.wait(timeout=60) == 1 and line == ""
        assert f"in use by pid {os.getpid()}" in stranger.stderr.read()


def test_reentrant_in_one_process_and_workers_take_their_own(tmp_path):
    holder, _ = _holder(tmp_path)
    try:
        # A Keras Tuner worker shares the chief's directory: only its own id is locked.
        with dirlock.acquire(tmp_path, dirlock.worker_lock_name("worker0")):
            twin, line = _holder(tmp_path, dirlock.worker_lock_name("worker0"))  # A second worker0.
            assert twin.wait(timeout=60) == 1 and line == ""
            assert ".nas_tf.worker0.lock" in twin.stderr.read()
    finally:
        _end(holder)
    with dirlock.acquire(tmp_path) as outer:
        with dirlock.acquire(tmp_path) as inner:  # The entry point, then search.run.
            assert inner is outer
        assert (tmp_path / dirlock.LOCK_FILE).exists()  # Held until the outer release.
    assert not (tmp_path / dirlock.LOCK_FILE).exists()
    assert dirlock.is_lock_file(dirlock.LOCK_FILE) and dirlock.is_lock_file(".nas_tf.worker0.lock")
    assert not dirlock.is_lock_file("history.worker0.jsonl")


def test_without_flock_the_record_decides(tmp_path, monkeypatch, capsys):
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(dirlock.fcntl, "flock", no_flock)
    path = tmp_path / dirlock.LOCK_FILE
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = {"host": dirlock.host(), "started": "then", "token": "t", "program": "p"}
    # A live process of this host holds it.
    path.write_text(json.dumps(dict(here, pid=os.getppid())))
    with pytest.raises(dirlock.LockedError, match=f"pid {os.getppid()}"):
        dirlock.acquire(tmp_path)
    # Another host's record: unknown, refused, with what to do.
    path.write_text(json.dumps(dict(here, host="elsewhere", pid=1)))
    with pytest.raises(dirlock.LockedError, match=r"cannot lock files.*delete .*\.nas_tf\.lock"):
        dirlock.acquire(tmp_path)
    # A dead process of this host: taken, with a warning that the lock is advisory.
    path.write_text(json.dumps(dict(here, pid=dead.pid)))
    with dirlock.acquire(tmp_path) as lock:
        assert lock.previous["pid"] == dead.pid
    assert "cannot lock files (flock)" in capsys.readouterr().err
    assert not path.exists()
