"""`nas_tf.launch`: a chief and workers on one machine, restarted when they die.

The fast tests drive the launcher with stand-in processes (small Python
scripts, no TensorFlow); the slow ones run the real `nas_tf.train` as chief
and two workers on the quick flags.
"""

import io
import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import TINY_FLAGS, lock_held_elsewhere
from nas_tf import launch


def test_visible_gpus_follow_cuda_visible_devices():
    assert launch.visible_gpus({"CUDA_VISIBLE_DEVICES": "0,2"}) == ["0", "2"]
    assert launch.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    # CUDA ignores every id from the first invalid one on.
    assert launch.visible_gpus({"CUDA_VISIBLE_DEVICES": "3,-1,1"}) == ["3"]


def test_plan_gives_each_worker_its_gpu_and_only_the_chief_overwrite():
    environ = {"PATH": "/bin", "NAS_TF_FAULT": "x:1", "NAS_TF_LAUNCH_FAULT_WORKER1": "during_child:2"}
    procs = launch.plan(
        ["--output_dir=o", "--overwrite"], workers=3, port=1234, gpus=["4", "5"],
        environ=environ, python="py",
    )  # fmt: skip
    names = [p.name for p in procs]
    assert names == ["chief", "worker0", "worker1", "worker2"]
    env = {p.name: p.env for p in procs}
    assert env["chief"]["CUDA_VISIBLE_DEVICES"] == ""  # The controller leaves the GPUs to children.
    assert [env[f"worker{i}"]["CUDA_VISIBLE_DEVICES"] for i in range(3)] == ["4", "5", "4"]
    assert all(e["KERASTUNER_ORACLE_PORT"] == "1234" and e["KERASTUNER_ORACLE_IP"] == "127.0.0.1" for e in env.values())
    assert {e["KERASTUNER_TUNER_ID"] for e in env.values()} == set(names)
    chief = procs[0]
    assert chief.argv == ["py", "-m", "nas_tf.train", "--output_dir=o", "--overwrite"]
    # Restarts resume: absl's last value wins over the user's --overwrite.
    assert chief.restart_argv == ["py", "-m", "nas_tf.train", "--output_dir=o", "--overwrite", "--nooverwrite"]
    assert all(p.argv[-1] == "--nooverwrite" for p in procs[1:])  # Workers never delete.
    # The launcher's own fault reaches nobody; a named one reaches its process only.
    assert [e.get("NAS_TF_FAULT") for e in env.values()] == [None, None, "during_child:2", None]


def _overwrite_spellings(tmp_path):
    """Every way a user can turn --overwrite on, as train flags."""
    inner = tmp_path / "inner.flags"
    inner.write_text("--overwrite=1\n")
    outer = tmp_path / "outer.flags"
    outer.write_text(f"--search_max_trials=2\n--flagfile={inner}\n")
    listed = tmp_path / "listed.flags"
    listed.write_text("--overwrite\n")
    return {
        "bare": ["--overwrite"], "=true": ["--overwrite=true"], "=1": ["--overwrite=1"],
        "=t": ["--overwrite=t"], "=TRUE": ["--overwrite=TRUE"], "space": ["--overwrite", "true"],
        "flagfile": [f"--flagfile={listed}"], "nested flagfile": [f"--flagfile={outer}"],
    }  # fmt: skip


def test_a_restarted_chief_or_a_worker_never_overwrites_whatever_the_spelling(tmp_path):
    from nas_tf import cli, train

    try:
        for name, spelling in _overwrite_spellings(tmp_path).items():
            chief, worker = launch.plan(["--output_dir=o", *spelling], workers=1, environ={}, python="py")
            parsed = {}
            for label, argv in (("first", chief.argv), ("restart", chief.restart_argv),
                                ("worker", worker.argv)):  # fmt: skip
                assert argv[:3] == ["py", "-m", "nas_tf.train"]
                cli.parse(train.FLAGS, ["train", *argv[3:]])
                parsed[label] = train.FLAGS.overwrite
            # The user's first start overwrites as asked; a restart and a worker never do.
            assert parsed == {"first": True, "restart": False, "worker": False}, name
    finally:
        train.FLAGS.unparse_flags()
    # Before a `--` (after which absl reads no flags).
    assert launch.never_overwrite(["--overwrite=1", "--", "x"]) == ["--overwrite=1", "--nooverwrite", "--", "x"]


def test_plan_for_the_workers_of_another_machine():
    procs = launch.plan([], workers=2, role="workers", host="10.0.0.1", port=9, first_worker=4, environ={})
    assert [p.name for p in procs] == ["worker4", "worker5"]
    assert procs[0].env["KERASTUNER_ORACLE_IP"] == "10.0.0.1"


# Stand-ins: a chief that listens until every worker has left a `done` file,
# and a worker that dies (SIGKILL) the first time it runs.
CHIEF = """
import os, socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
print("serving", flush=True)
while not all(os.path.exists(os.path.join(sys.argv[2], f"done_{w}")) for w in sys.argv[3:]):
    time.sleep(0.05)
print("all trials done", flush=True)
"""
WORKER = """
import os, signal, sys
name, root = os.environ["KERASTUNER_TUNER_ID"], sys.argv[1]
marker = os.path.join(root, f"started_{name}")
first = not os.path.exists(marker)
open(marker, "a").write("x")
print(f"training as {name}", flush=True)
if first and name == "worker0":
    os.kill(os.getpid(), signal.SIGKILL)
if os.environ.get("INTERRUPT_LAUNCHER"):
    os.kill(os.getppid(), signal.SIGINT)
    signal.pause()
open(os.path.join(root, f"done_{name}"), "w").close()
"""


def _stand_ins(tmp_path, port, workers=("worker0", "worker1"), env=None):
    chief, worker = tmp_path / "chief.py", tmp_path / "worker.py"
    chief.write_text(textwrap.dedent(CHIEF))
    worker.write_text(textwrap.dedent(WORKER))
    base = dict(os.environ, **(env or {}))
    procs = [launch.Process("chief", [sys.executable, str(chief), str(port), str(tmp_path), *workers], dict(base))]
    for w in workers:
        procs.append(launch.Process(w, [sys.executable, str(worker), str(tmp_path)], dict(base, KERASTUNER_TUNER_ID=w)))
    return procs


def test_a_dead_worker_is_restarted_and_lines_are_prefixed(tmp_path):
    port = launch.free_port()
    out = io.StringIO()
    runner = launch.Launcher(_stand_ins(tmp_path, port), "127.0.0.1", port, max_restarts=1, out=out)
    assert runner.run() == 0
    log = out.getvalue()
    assert "[chief] serving" in log and "[chief] all trials done" in log
    assert log.count("[worker0] training as worker0") == 2 and log.count("[worker1] training as worker1") == 1
    assert f"[launch] worker0 exited with status {-9}; restarting it (1/1)." in log
    assert (tmp_path / "started_worker0").read_text() == "xx"


def test_a_process_dying_past_max_restarts_stops_the_search(tmp_path):
    port = launch.free_port()
    out = io.StringIO()
    runner = launch.Launcher(_stand_ins(tmp_path, port), "127.0.0.1", port, max_restarts=0, out=out)
    assert runner.run() == 1
    assert "worker0 exited with status -9 and was restarted 0 times; stopping" in out.getvalue()
    assert all(p.popen.poll() is not None for p in runner.processes.values())  # None left running.


def test_interrupt_stops_every_process(tmp_path):
    port = launch.free_port()
    procs = _stand_ins(tmp_path, port, workers=("worker1",), env={"INTERRUPT_LAUNCHER": "1"})
    out = io.StringIO()
    runner = launch.Launcher(procs, "127.0.0.1", port, stop_grace=5.0, out=out)
    assert runner.run() == 130
    assert "interrupted: stopping every process." in out.getvalue()
    codes = {p.name: p.popen.poll() for p in runner.processes.values()}
    assert all(code is not None and code != 0 for code in codes.values()), codes
    assert not (tmp_path / "done_worker1").exists()


def test_stray_arguments_are_refused_with_where_train_flags_go():
    launch.FLAGS.unparse_flags()
    launch.FLAGS(["launch"])
    with pytest.raises(launch.app.UsageError, match="after `--`"):
        launch.main(["launch", "--search_max_trials=3"])
    assert launch.split_argv(["l", "--workers=2", "--", "--output_dir=x"]) == (["l", "--workers=2"], ["--output_dir=x"])


# -- the real search ------------------------------------------------------------------------


def _launch(tmp_path, extra_env=None, timeout=900, max_trials=4):
    out = tmp_path / "run"
    log = tmp_path / "trainings.log"
    env = dict(os.environ, NAS_TF_TRAINING_LOG=str(log), NAS_TF_CHIEF_TIMEOUT="300", **(extra_env or {}))
    argv = [
        sys.executable, "-m", "nas_tf.launch", "--workers=2", "--max_restarts=1", "--",
        *TINY_FLAGS, f"--search_max_trials={max_trials}", "--child_isolate=false", "--verbose=1",
        f"--output_dir={out}",
    ]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    trainings = log.read_text().splitlines() if log.exists() else []
    return out, done.stdout, trainings


def _check_one_coherent_history(out, max_trials, trainings):
    from nas_tf import search

    lines = [json.loads(line) for line in (out / search.HISTORY).read_text().splitlines()]
    ids = [r["trial_id"] for r in lines]
    assert sorted(ids) == [f"{i}" for i in range(max_trials)]  # Every child exactly once...
    assert all(r["status"] == "COMPLETED" for r in lines)
    assert len(trainings) == max_trials  # ...and trained once (no retraining anywhere).
    per_worker = [p for p in os.listdir(out) if p.startswith("history.worker")]
    assert per_worker and sum(len((out / p).read_text().splitlines()) for p in per_worker) == max_trials
    best = max(lines, key=lambda r: r["reward"])  # Chosen over both workers' children.
    assert json.loads((out / search.BEST_ARCHITECTURE).read_text()) == best["architecture"]
    assert (out / search.BEST_MODEL).exists()


@pytest.mark.slow
def test_train_as_chief_and_two_workers_trains_every_child_once(tmp_path):
    out, stdout, trainings = _launch(tmp_path)
    _check_one_coherent_history(out, 4, trainings)
    assert "[worker0] [child" in stdout or "[worker1] [child" in stdout
    assert "[launch] chief finished." in stdout


@pytest.mark.slow
def test_a_worker_killed_mid_child_is_restarted_and_loses_nothing(tmp_path):
    out, stdout, trainings = _launch(tmp_path, {"NAS_TF_LAUNCH_FAULT_WORKER0": "during_child:1"})
    assert "[launch] worker0 exited with status -9; restarting it (1/1)." in stdout
    _check_one_coherent_history(out, 4, trainings)


def test_launch_refuses_an_output_dir_another_search_holds(tmp_path, capsys):
    from nas_tf import cli, dirlock

    out = tmp_path / "run"
    with lock_held_elsewhere(out) as holder:
        try:
            cli.parse(launch.FLAGS, ["launch", "--workers=1"])
            assert launch.main(["launch"], [*TINY_FLAGS, f"--output_dir={out}", "--overwrite"]) == 1
        finally:
            launch.FLAGS.unparse_flags()
        err = capsys.readouterr().err
        assert f"[launch] {out} is in use by pid {holder.pid} on host {dirlock.host()}" in err


@pytest.mark.slow
def test_a_chief_killed_and_restarted_never_overwrites_the_search(tmp_path):
    # --overwrite=1 in a flag file: the first start starts afresh, the restart must resume.
    flagfile = tmp_path / "fresh.flags"
    flagfile.write_text("--overwrite=1\n")
    out = tmp_path / "run"
    log = tmp_path / "trainings.log"
    env = dict(os.environ, NAS_TF_TRAINING_LOG=str(log), NAS_TF_CHIEF_TIMEOUT="300",
               NAS_TF_LAUNCH_FAULT_CHIEF="oracle_save_state:5")  # Mid-search (1 per create or end).
    argv = [sys.executable, "-m", "nas_tf.launch", "--workers=2", "--max_restarts=1", "--",
            *TINY_FLAGS, "--search_max_trials=4", "--child_isolate=false", "--verbose=1",
            f"--flagfile={flagfile}", f"--output_dir={out}"]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "[launch] chief exited with status -9; restarting it (1/1)." in done.stdout
    trainings = log.read_text().splitlines() if log.exists() else []
    _check_one_coherent_history(out, 4, trainings)  # Nothing deleted, nothing trained twice.
    assert not (out / ".nas_tf.lock").exists()  # The launcher released its lock.


def test_every_process_of_a_search_carries_one_chief_token(capsys):
    from nas_tf import chief

    env = launch.with_chief_token({}, "all")
    token = env[chief.TOKEN_ENV]
    assert len(token) == 32 and capsys.readouterr().out == ""  # One host: nothing to share.
    processes = launch.plan(["--search_max_trials=2"], 2, environ=env)
    assert {p.env[chief.TOKEN_ENV] for p in processes} == {token}
    alone = launch.with_chief_token({}, "chief")  # Multi-host: printed for the workers.
    assert f"{chief.TOKEN_ENV}={alone[chief.TOKEN_ENV]}" in capsys.readouterr().out
    assert launch.with_chief_token({chief.TOKEN_ENV: "mine"}, "chief")[chief.TOKEN_ENV] == "mine"
    assert chief.TOKEN_ENV not in launch.with_chief_token({}, "workers")
