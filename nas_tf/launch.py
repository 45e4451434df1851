r"""Runs a distributed search on one machine: a Keras Tuner chief and N workers.

  python -m nas_tf.launch --workers=4 -- --flagfile=experiments/cifar.flags \
      --data_dir=$HOME/tensorflow_datasets --output_dir=runs/cifar

Everything after `--` is `python -m nas_tf.train`'s flags, checked here before
any process starts. The launcher starts `nas_tf.train` once as the chief (it
serves the controller, `KERASTUNER_TUNER_ID=chief`, and sees no GPU) and once
per worker (`worker0`, `worker1`, ...; each trains children on its own GPU,
`CUDA_VISIBLE_DEVICES`), all with Keras Tuner's environment variables. By
default there is one worker per visible GPU (`CUDA_VISIBLE_DEVICES`, else the
NVIDIA driver's list), or one on a machine without GPUs.

* Every output line is prefixed with its process's name (`[worker1] ...`).
* A process that dies before the search ends is restarted with the same id
  (at most --max_restarts times each): the chief gives a restarted worker the
  trial it was running, so that trial is retried, not lost; a restarted chief
  reloads its state and its workers reconnect. A restart never deletes
  anything: every restart, and every worker, gets `--nooverwrite` after the
  train flags (absl's last value wins over any --overwrite spelling, flag
  files included).
* The launcher holds the output directory's lock (`nas_tf.dirlock`) for the
  whole search and hands it to its chief: a second search started on the same
  directory refuses before anything is written or deleted.
* Ctrl-C (or SIGTERM) stops every process (SIGINT, then SIGKILL after
  --stop_grace seconds) and exits with status 130.

Exit status: 0 when the chief and every worker finished, 1 when a process
died more than --max_restarts times (the others are stopped; run the same
command again to resume), 2 for bad flags.

Several machines: `--role=chief` on one (with --port), `--role=workers
--host=CHIEF_ADDRESS --port=PORT --first_worker=K` on the others, all with
the same train flags and an --output_dir they share (docs/distributed.md).

A URL --output_dir (gs://...) works with --role=all: the launcher restores
its local mirror (`nas_tf.remote`), runs every process on the mirror, and
syncs it to the URL every --sync_every seconds and when the search ends.

Fault injection (tests): `NAS_TF_LAUNCH_FAULT_<NAME>` (e.g.
`NAS_TF_LAUNCH_FAULT_WORKER0=during_child:2`) becomes `NAS_TF_FAULT` of that
process's first start only; no process inherits the launcher's `NAS_TF_FAULT`.
"""

import dataclasses
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence

from absl import app
from absl import flags

from nas_tf import cli

FLAGS = flags.FlagValues()
define = cli.definer(FLAGS)
define.integer("workers", None, "Worker processes to start (unset: one per visible GPU, or one "
               "on a machine without GPUs).", lower_bound=1)
define.enum("role", "all", ["all", "chief", "workers"], "Start the chief and the workers (all), "
            "only the chief (the first machine of a multi-host search), or only workers that "
            "connect to the chief at --host:--port (the other machines).")
define.string("host", "127.0.0.1", "Address of the chief: where it listens, and where workers "
              "connect. With --role=chief, an address the other machines can reach (or 0.0.0.0).")
define.integer("port", None, "Port of the chief (unset: a free one; required with "
               "--role=workers).", lower_bound=1, upper_bound=65535)
define.integer("first_worker", 0, "Number of this machine's first worker: worker ids must be "
               "unique over the machines of a search.", lower_bound=0)
define.integer("max_restarts", 3, "Times each process is restarted after dying before the search "
               "ends; one more death stops the search.", lower_bound=0)
define.float("chief_start_timeout", 600.0, "Seconds to wait for the chief to listen before the "
             "workers start.", lower_bound=1.0)
define.float("stop_grace", 10.0, "Seconds a process has to stop after SIGINT before SIGKILL.",
             lower_bound=0.0)
define.float("sync_every", 60.0, "With a URL --output_dir: seconds between syncs of the local "
             "mirror the processes write to (and one at the end).", lower_bound=1.0)

FAULT_PREFIX = "NAS_TF_LAUNCH_FAULT_"
_FAULT_ENV = "NAS_TF_FAULT"  # nas_tf.durable.FAULT_ENV (not imported: it loads TensorFlow).


def visible_gpus(environ=None) -> List[str]:
    """GPU ids this machine shows: `CUDA_VISIBLE_DEVICES` if set, else the NVIDIA driver's."""
    environ = os.environ if environ is None else environ
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        ids = [d.strip() for d in listed.split(",") if d.strip()]
        # CUDA stops at the first invalid id ("-1" hides every GPU).
        valid = []
        for d in ids:
            if d.startswith("-"):
                break
            valid.append(d)
        return valid
    driver = "/proc/driver/nvidia/gpus"
    if os.path.isdir(driver):
        return [str(i) for i in range(len(os.listdir(driver)))]
    return []


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Process:
    """One process of the search: its name (Keras Tuner id), command and environment."""

    name: str
    argv: List[str]
    env: Dict[str, str]
    restart_argv: Optional[List[str]] = None  # For restarts (the chief's never overwrites).
    popen: Optional[subprocess.Popen] = None
    starts: int = 0
    done: bool = False


def never_overwrite(argv: Sequence[str]) -> List[str]:
    """`argv` with `--nooverwrite` after every flag: absl's last value wins.

    Whatever spelling turned --overwrite on (`=1`, `=t`, `=TRUE`, in a
    --flagfile, nested), the process parses it as off. It goes before a `--`,
    after which absl reads no flags.
    """
    argv = list(argv)
    end = argv.index("--") if "--" in argv else len(argv)
    return argv[:end] + ["--nooverwrite"] + argv[end:]


def plan(
    train_args: Sequence[str],
    workers: int,
    role: str = "all",
    host: str = "127.0.0.1",
    port: int = 0,
    first_worker: int = 0,
    gpus: Sequence[str] = (),
    environ=None,
    python: str = sys.executable,
) -> List[Process]:
    """The processes of a search: the chief (unless role is "workers"), then the workers.

    Worker i sees GPU `gpus[i % len(gpus)]` only (when `gpus` is given); the
    chief sees none. Every process gets Keras Tuner's environment variables;
    `NAS_TF_LAUNCH_FAULT_<NAME>` becomes that process's `NAS_TF_FAULT`.
    """
    environ = dict(os.environ if environ is None else environ)
    faults = {k[len(FAULT_PREFIX):].lower(): v for k, v in environ.items() if k.startswith(FAULT_PREFIX)}
    base = {k: v for k, v in environ.items() if not k.startswith(FAULT_PREFIX) and k != _FAULT_ENV}
    base.update(KERASTUNER_ORACLE_IP=host, KERASTUNER_ORACLE_PORT=str(port))
    base.setdefault("PYTHONUNBUFFERED", "1")
    command = [python, "-m", "nas_tf.train", *train_args]
    out = []
    if role in ("all", "chief"):
        env = dict(base, KERASTUNER_TUNER_ID="chief", CUDA_VISIBLE_DEVICES="")
        out.append(Process("chief", command, env, restart_argv=never_overwrite(command)))
    if role in ("all", "workers"):
        for i in range(first_worker, first_worker + workers):
            env = dict(base, KERASTUNER_TUNER_ID=f"worker{i}")
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = gpus[(i - first_worker) % len(gpus)]
            # Only the chief may start afresh: a worker's --overwrite would delete its search.
            out.append(Process(f"worker{i}", never_overwrite(command), env))
    for p in out:
        if p.name in faults:
            p.env[_FAULT_ENV] = faults[p.name]
    return out


class Launcher:
    """Starts, watches, restarts and stops the processes of one search.

    Args:
      processes: from `plan`.
      host, port: where the chief listens (the workers start once it does).
      max_restarts: restarts per process after it died (nonzero exit).
      chief_start_timeout: seconds to wait for the chief to listen.
      stop_grace: seconds between SIGINT and SIGKILL when stopping.
      out: where prefixed lines go.
      sync: None, or a function called every `sync_every` seconds while the
        processes run (`nas_tf.remote.Mirror.sync_or_warn` for a URL output dir).
    """

    def __init__(self, processes, host, port, max_restarts=3, chief_start_timeout=600.0,
                 stop_grace=10.0, out=None, sync=None, sync_every=60.0):  # fmt: skip
        self.processes = {p.name: p for p in processes}
        self.host, self.port = host, port
        self.max_restarts = max_restarts
        self.chief_start_timeout = chief_start_timeout
        self.stop_grace = stop_grace
        self.out = out or sys.stdout
        self._lock = threading.Lock()
        self._pumps: List[threading.Thread] = []
        self._interrupted = False
        self.sync, self.sync_every = sync, sync_every
        self._next_sync = time.monotonic() + sync_every

    def say(self, name: str, line: str) -> None:
        with self._lock:
            self.out.write(f"[{name}] {line.rstrip()}\n")
            self.out.flush()

    def _start(self, p: Process) -> None:
        argv = p.restart_argv if (p.starts and p.restart_argv) else p.argv
        env = dict(p.env)
        if p.starts:
            env.pop(_FAULT_ENV, None)  # An injected fault strikes the first start only.
        p.popen = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            errors="replace", bufsize=1, start_new_session=True,  # Ctrl-C reaches the launcher only.
        )  # fmt: skip
        p.starts += 1
        pump = threading.Thread(target=self._pump, args=(p.name, p.popen), daemon=True)
        pump.start()
        self._pumps.append(pump)

    def _pump(self, name, popen):
        for line in popen.stdout:
            self.say(name, line)

    def _wait_for_chief(self) -> bool:
        chief = self.processes.get("chief")
        deadline = time.monotonic() + self.chief_start_timeout
        while time.monotonic() < deadline and not self._interrupted:
            if chief is not None and chief.popen.poll() is not None:
                return False
            try:
                socket.create_connection((self._connect_host(), self.port), timeout=1).close()
                return True
            except OSError:
                time.sleep(0.2)
        return False

    def _connect_host(self):
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    def run(self) -> int:
        """Runs the search to its end; returns the exit status (see the module doc)."""
        previous = {s: signal.signal(s, self._interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._run()
        finally:
            self.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _interrupt(self, signum, frame):
        self._interrupted = True

    def _run(self) -> int:
        chief = self.processes.get("chief")
        if chief is not None:
            self._start(chief)
            if not self._wait_for_chief():
                if self._interrupted:
                    return 130
                self.say("launch", f"the chief did not listen on port {self.port}; stopping.")
                return 1
        for p in self.processes.values():
            if p.popen is None:
                self._start(p)
        while True:
            if self._interrupted:
                self.say("launch", "interrupted: stopping every process.")
                return 130
            for p in self.processes.values():
                code = p.popen.poll()
                if code is None or p.done:
                    continue
                if code == 0:
                    p.done = True
                    self.say("launch", f"{p.name} finished.")
                    continue
                if p.starts > self.max_restarts:
                    self.say("launch", f"{p.name} exited with status {code} and was restarted "
                             f"{self.max_restarts} times; stopping the search (run again to resume).")  # fmt: skip
                    return 1
                self.say("launch", f"{p.name} exited with status {code}; restarting it "
                         f"({p.starts}/{self.max_restarts}).")  # fmt: skip
                self._start(p)
            if all(p.done for p in self.processes.values()):
                return 0
            if self.sync is not None and time.monotonic() >= self._next_sync:
                self.sync()
                self._next_sync = time.monotonic() + self.sync_every
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGINT to every live process, SIGKILL to those alive after `stop_grace` seconds."""
        live = [p.popen for p in self.processes.values() if p.popen and p.popen.poll() is None]
        for popen in live:
            try:
                os.killpg(popen.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.stop_grace
        for popen in live:
            try:
                popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                popen.wait()
        for pump in self._pumps:
            pump.join(timeout=5)


def check_train_args(train_args: Sequence[str]):
    """Parses and checks `nas_tf.train`'s flags as it would (UsageError naming the problem).

    Returns:
      (--output_dir, --local_dir) as the train flags give them.
    """
    from nas_tf import train  # Loads TensorFlow: only once the launcher's flags are fine.

    try:
        cli.parse(train.FLAGS, ["nas_tf.train", *train_args])
    except flags.Error as e:
        raise app.UsageError(f"train flag: {e}") from None
    try:
        config = train.config_from_flags()
        train.check_config(config)
        return config.output_dir, train.FLAGS.local_dir
    finally:
        cli.unparse(train.FLAGS)


def split_argv(argv: Sequence[str]):
    """(launcher argv, train flags): the train flags are everything after the first `--`."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def main(argv, train_args=()):
    if len(argv) > 1:
        raise app.UsageError(
            f"Unexpected arguments: {' '.join(argv[1:])}. Put nas_tf.train's flags after `--`."
        )
    if FLAGS.role == "workers" and FLAGS.port is None:
        raise app.UsageError("--role=workers needs --port (and --host): where the chief listens.")
    output_dir, local_dir = check_train_args(train_args)
    from nas_tf import dirlock, remote

    if not remote.is_url(output_dir):
        if FLAGS.role == "workers":  # Workers work in their chief's directory, unlocked.
            return _launch(train_args)
        # Held for the whole search and handed to the chief, across its restarts.
        try:
            with dirlock.acquire(output_dir) as lock:
                return _launch(train_args, environ=dict(os.environ, **lock.child_env()))
        except dirlock.LockedError as e:
            print(f"[launch] {e}", file=sys.stderr, flush=True)
            return 1
    if FLAGS.role != "all":
        raise app.UsageError(
            f"--output_dir {output_dir}: a URL works with --role=all only (the launcher mirrors "
            "it for its own processes); the machines of a multi-host search need one directory "
            "they all see on a shared file system with atomic rename and fsync (NFSv4, "
            "Filestore; docs/distributed.md)."
        )
    # The processes write to a local mirror of the URL that this process syncs (nas_tf.remote).
    try:
        with remote.mirrored(output_dir, local_dir) as mirror:  # Locks the mirror.
            status = _launch([*train_args, f"--output_dir={mirror.local}"], mirror.sync_or_warn,
                             environ=dict(os.environ, **mirror.lock.child_env()))  # fmt: skip
    except (remote.SyncError, dirlock.LockedError) as e:
        print(f"[launch] {e}", file=sys.stderr, flush=True)
        return 1
    return status


def with_chief_token(environ: dict, role: str, out=None) -> dict:
    """`environ` with the search's shared secret (`nas_tf.chief`), made if unset.

    The chief refuses every request without it. A chief started alone
    (--role=chief) prints it, to be set on the worker machines.
    """
    from nas_tf import chief

    if environ.get(chief.TOKEN_ENV) or role == "workers":
        return environ
    environ[chief.TOKEN_ENV] = secrets.token_hex(16)
    if role == "chief":
        print(f"[launch] the chief accepts workers that carry its token: set "
              f"{chief.TOKEN_ENV}={environ[chief.TOKEN_ENV]} in the environment of "
              "`nas_tf.launch --role=workers` on every worker machine.", file=out or sys.stdout,
              flush=True)
    return environ


def _launch(train_args, sync=None, environ=None) -> int:
    """Plans, starts and watches the processes (`main` after the flags are checked)."""
    gpus = visible_gpus()
    workers = FLAGS.workers or max(1, len(gpus))
    port = FLAGS.port or free_port()
    environ = with_chief_token(dict(os.environ if environ is None else environ), FLAGS.role)
    processes = plan(
        train_args, workers, FLAGS.role, FLAGS.host, port, FLAGS.first_worker, gpus, environ
    )
    names = ", ".join(p.name + (f" (GPU {p.env['CUDA_VISIBLE_DEVICES']})"
                                if p.env.get("CUDA_VISIBLE_DEVICES") else "") for p in processes)  # fmt: skip
    print(f"[launch] chief at {FLAGS.host}:{port}; starting {names}", flush=True)
    launcher = Launcher(
        processes, FLAGS.host, port, FLAGS.max_restarts, FLAGS.chief_start_timeout, FLAGS.stop_grace,
        sync=sync, sync_every=FLAGS.sync_every,
    )
    return launcher.run()


def _entry():
    own, train_args = split_argv(sys.argv)
    sys.argv = own
    cli.run(lambda argv: main(argv, train_args), FLAGS, __doc__)


if __name__ == "__main__":
    _entry()
