"""How many workers one chief serves: children per hour against N x one worker's.

A chief (`NASRLOracle` behind nas_tf's chief service) and N stand-in workers
run on loopback. Each worker is a real Keras Tuner worker (`nas_tf.NASRL`
through the chief's gRPC service: create trial, a report per "epoch", end
trial) whose child sleeps instead of training, and appends its record to its
history file (`nas_tf.history`), as a search's worker does. For each N and
child length it prints the children finished per hour in a measured window,
that rate over N times the one-worker rate (1.0: the chief is no bottleneck),
and the chief's CPU time per trial, from which the number of workers one
chief core sustains is projected.

  python experiments/chief_capacity.py --workers 1,2,4,8,16,32 --child_seconds 5 --window 60

Each worker is a Python process with TensorFlow loaded (about 0.4 GB): size
--workers to the machine's memory.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# -- one process of the cluster ---------------------------------------------------------


def _process_main(directory: str, child_seconds: float, epochs: int) -> None:
    """A chief or a worker (Keras Tuner reads the role from the environment)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, ROOT)
    import keras_tuner as kt

    import nas_tf
    from nas_tf import history

    def build(hp):
        for i in range(4):
            hp.Choice(f"op_{i}", ["a", "b", "c", "d"])
            nas_tf.anchor(hp, f"l{i}", [f"l{j}" for j in range(i)])

    class StandIn(nas_tf.NASRL):
        def run_trial(self, trial, *args, **kwargs):
            for epoch in range(epochs):  # A child that reports once per epoch.
                time.sleep(child_seconds / epochs)
                self.oracle.update_trial(trial.trial_id, {"score": float(epoch)}, step=epoch)
            record = {"trial_id": trial.trial_id, "status": "COMPLETED", "reward": 1.0,
                      "architecture": dict(trial.hyperparameters.values),
                      "end": time.time()}
            history.append(history.path(directory, os.environ.get("KERASTUNER_TUNER_ID")), record)
            return {"score": float(epochs)}

    tuner = StandIn(hypermodel=build, objective=kt.Objective("score", "max"),
                    max_trials=100000, seed=1, directory=directory, project_name="capacity",
                    reinforce_config=nas_tf.ReinforceConfig(batch_size=8))
    tuner.search(verbose=0)


# -- the measurement --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ends(directory: str):
    """End times of every finished child, from the workers' history files."""
    sys.path.insert(0, ROOT)
    from nas_tf import history

    return sorted(r["end"] for r in history.read(directory) if "end" in r)


def measure(workers: int, child_seconds: float, window: float, warmup: float, epochs: int):
    """(children per hour in the window, chief CPU seconds per child) for one setting."""
    directory = tempfile.mkdtemp(prefix="chief_capacity_")
    port = _free_port()
    base = dict(os.environ, KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(port),
                TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    command = [sys.executable, os.path.abspath(__file__), "--role_dir", directory,
               "--child_seconds", str(child_seconds), "--epochs", str(epochs)]
    procs = [subprocess.Popen(command, env=dict(base, KERASTUNER_TUNER_ID="chief"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    chief_pid = procs[0].pid
    try:
        time.sleep(2.0)  # The chief listens before the workers ask.
        for i in range(workers):
            procs.append(subprocess.Popen(command, env=dict(base, KERASTUNER_TUNER_ID=f"w{i}"),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        # Wait until every worker has finished a child (all started), then the warm-up.
        deadline = time.time() + 600
        while len(_ends(directory)) < workers and time.time() < deadline:
            time.sleep(1.0)
        time.sleep(warmup)
        start, cpu0 = time.time(), _cpu_seconds(chief_pid)
        time.sleep(window)
        end, cpu1 = time.time(), _cpu_seconds(chief_pid)
        done = [t for t in _ends(directory) if start <= t < end]
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait()
        shutil.rmtree(directory, ignore_errors=True)
    per_hour = len(done) * 3600.0 / (end - start)
    return per_hour, (cpu1 - cpu0) / max(len(done), 1), len(done)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", default="1,2,4,8,16,32", help="Comma-separated N.")
    p.add_argument("--child_seconds", default="1,5,30", help="Comma-separated child lengths.")
    p.add_argument("--window", type=float, default=60.0, help="Measured seconds per setting.")
    p.add_argument("--warmup", type=float, default=5.0, help="Seconds before measuring.")
    p.add_argument("--epochs", type=int, default=5, help="Reports per child.")
    p.add_argument("--role_dir", help=argparse.SUPPRESS)  # Internal: run as chief or worker.
    args = p.parse_args(argv)
    if args.role_dir:
        _process_main(args.role_dir, float(args.child_seconds), args.epochs)
        return
    print("| child s | N | children/h | / (N x one worker) | chief CPU ms/child | children |")
    print("|---|---|---|---|---|---|")
    for seconds in [float(s) for s in args.child_seconds.split(",")]:
        one = None
        for n in [int(w) for w in args.workers.split(",")]:
            rate, cpu, count = measure(n, seconds, args.window, args.warmup, args.epochs)
            one = one or rate / n
            print(f"| {seconds:g} | {n} | {rate:,.0f} | {rate / (n * one):.2f} | "
                  f"{1000 * cpu:.1f} | {count} |", flush=True)
            if cpu > 0:
                sustain = seconds / cpu
                print(f"|   |   | one chief core sustains about {sustain:,.0f} workers of "
                      f"{seconds:g} s children |   |   |   |", flush=True)


if __name__ == "__main__":
    main()
