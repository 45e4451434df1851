"""A chief and workers of tests/distributed_search.py on this machine, for the tests.

Every wait is bounded: a worker whose chief is gone would otherwise block on
gRPC (an hour in Keras Tuner; `NAS_TF_CHIEF_TIMEOUT` in nas_tf).
"""

import collections
import glob
import json
import os
import socket
import subprocess
import sys
import time

from nas_tf import durable
from nas_tf import journal

SCRIPT = os.path.join(os.path.dirname(__file__), "distributed_search.py")
WORKERS = ("worker0", "worker1")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """Processes of one distributed search in `root`; use as a context manager.

    Leaving the `with` block kills whatever is still running.
    """

    def __init__(self, root, max_trials, env=None):
        self.root = root
        self.max_trials = max_trials
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.logs = root / "logs"
        self.logs.mkdir()
        self.project = root / "search" / "distributed"
        self.env = dict(env or {})
        self.procs = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)

    def start(self, tuner_id, fault=None, peers=()):
        """Starts (or restarts, with the same id) a process; `fault` is a NAS_TF_FAULT value."""
        assert tuner_id not in self.procs or self.procs[tuner_id].poll() is not None
        env = dict(
            os.environ,
            KERASTUNER_TUNER_ID=tuner_id,
            KERASTUNER_ORACLE_IP="127.0.0.1",
            KERASTUNER_ORACLE_PORT=str(self.port),
            **self.env,
        )
        env.pop(durable.FAULT_ENV, None)
        if fault:
            env[durable.FAULT_ENV] = fault
        if peers:
            env["DISTRIBUTED_TEST_PEERS"] = ",".join(peers)
        out = open(self.root / f"{tuner_id}.out", "a")  # Appended across restarts.
        args = [sys.executable, SCRIPT, str(self.root / "search"), str(self.logs), str(self.max_trials)]
        with out:
            self.procs[tuner_id] = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        return self.procs[tuner_id]

    def start_all(self, faults=None):
        """The chief and both workers; the workers start searching together."""
        faults = faults or {}
        for name in ("chief",) + WORKERS:
            self.start(name, faults.get(name), peers=WORKERS if name != "chief" else ())

    def wait_for_chief(self, timeout=120):
        """Returns once the chief accepts connections (at most `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert self.procs["chief"].poll() is None, self.output("chief")
                assert time.monotonic() < deadline, f"chief not serving after {timeout} s"
                time.sleep(0.1)

    def output(self, tuner_id, chars=4000):
        path = self.root / f"{tuner_id}.out"
        return path.read_text()[-chars:] if path.exists() else ""

    def expect_exit(self, tuner_id, code, timeout):
        """Waits (at most `timeout` seconds) for the process to exit with `code`."""
        try:
            rc = self.procs[tuner_id].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{tuner_id} still running after {timeout} s:\n{self.output(tuner_id)}"
            ) from None
        assert rc == code, f"{tuner_id} exited {rc}, expected {code}:\n{self.output(tuner_id)}"

    def finish(self, timeout=240):
        """Both workers, then the chief, exit successfully."""
        for name in WORKERS:
            self.expect_exit(name, 0, timeout)
        # After the last trial the chief polls every 20 s before it exits.
        self.expect_exit("chief", 0, 120)

    def events(self, event):
        """Counter of trial ids over every worker's `event` lines ("start" or "done")."""
        counts = collections.Counter()
        for path in glob.glob(str(self.logs / "*.log")):
            with open(path) as f:
                counts.update(line.split()[1] for line in f if line.split()[0] == event)
        return counts

    def events_of(self, tuner_id, event):
        path = self.logs / f"{tuner_id}.log"
        if not path.exists():
            return []
        return [line.split()[1] for line in path.read_text().splitlines() if line.split()[0] == event]

    def trial_ids(self):
        return {f"{i:0{len(str(self.max_trials))}d}" for i in range(self.max_trials)}

    def state(self):
        return journal.JournaledState(str(self.project / "oracle.json")).load()

    def statuses(self):
        """Trial id -> status, from the chief's trial files."""
        out = {}
        for path in glob.glob(str(self.project / "trial_*" / "trial.json")):
            with open(path) as f:
                trial = json.load(f)
            out[trial["trial_id"]] = trial["status"]
        return out

    def check_complete(self):
        """Every trial completed exactly once, in the trial files and the oracle's state."""
        expected = self.trial_ids()
        assert self.statuses() == {t: "COMPLETED" for t in expected}
        state = self.state()
        assert sorted(state["end_order"]) == sorted(expected)  # Each trial ended once.
        assert sorted(state["start_order"]) == sorted(expected)
        assert state["retry_queue"] == []
        assert sorted(state["nasrl"]["rewarded"]) == sorted(expected)  # Each reward fed once.
        return state
