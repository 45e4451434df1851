"""One process of a distributed NASRL search (chief or worker), for the tests.

Keras Tuner decides the role from KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP /
KERASTUNER_ORACLE_PORT. A worker appends `start <trial id>` to
`<log_dir>/<tuner id>.log` when it starts a child and `done <trial id>` when
the child has finished (just before its score goes to the chief), so the
tests can check that no trial is lost and no child is trained twice.

Fault point "during_child" (`NAS_TF_FAULT=during_child:n`): the worker dies
with SIGKILL in its n-th child, after `start` and before `done`.

With `DISTRIBUTED_TEST_PEERS=worker0,worker1`, a process waits (at most
`DISTRIBUTED_TEST_PEERS_TIMEOUT` seconds, default 300) until every named peer
has started too before it searches, so that both workers are running when a
fault strikes.

Usage: python distributed_search.py DIRECTORY LOG_DIR MAX_TRIALS
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras_tuner as kt  # noqa: E402

import nas_tf  # noqa: E402
from nas_tf import durable  # noqa: E402


def build(hp):
    hp.Choice("units", [1, 2, 3, 4])
    hp.Choice("act", ["relu", "tanh"])
    nas_tf.anchor(hp, "l0", [])
    nas_tf.anchor(hp, "l1", ["l0"])
    nas_tf.anchor(hp, "l2", ["l0", "l1"])


class LoggingSearch(nas_tf.NASRL):
    def __init__(self, log_dir, **kwargs):
        super().__init__(**kwargs)
        self.log_path = os.path.join(log_dir, os.environ["KERASTUNER_TUNER_ID"] + ".log")

    def _log(self, event, trial_id):
        with open(self.log_path, "a") as f:
            f.write(f"{event} {trial_id}\n")

    def run_trial(self, trial, *args, **kwargs):
        values = trial.hyperparameters.values
        self._log("start", trial.trial_id)
        time.sleep(0.2)  # The child trains (and the other worker takes trials too).
        durable.fault_point("during_child")
        skips = sum(int(v) for k, v in values.items() if "@anchor:" in k)
        self._log("done", trial.trial_id)
        return {"score": float(values["units"] + skips)}


def wait_for_peers(log_dir):
    """A start barrier: every peer named in DISTRIBUTED_TEST_PEERS has started."""
    peers = [p for p in os.environ.get("DISTRIBUTED_TEST_PEERS", "").split(",") if p]
    if not peers:
        return
    with open(os.path.join(log_dir, os.environ["KERASTUNER_TUNER_ID"] + ".ready"), "w"):
        pass
    deadline = time.monotonic() + float(os.environ.get("DISTRIBUTED_TEST_PEERS_TIMEOUT", 300))
    while not all(os.path.exists(os.path.join(log_dir, p + ".ready")) for p in peers):
        if time.monotonic() > deadline:
            sys.exit(f"distributed_search.py: peers {peers} did not all start in time.")
        time.sleep(0.05)


def main(directory, log_dir, max_trials):
    tuner = LoggingSearch(
        log_dir,
        hypermodel=build,
        objective=kt.Objective("score", "max"),
        max_trials=int(max_trials),
        seed=1,
        directory=directory,
        project_name="distributed",
        reinforce_config=nas_tf.ReinforceConfig(batch_size=2),
    )
    wait_for_peers(log_dir)
    tuner.search(verbose=0)


if __name__ == "__main__":
    main(*sys.argv[1:])
