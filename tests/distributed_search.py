"""One process of a distributed NASRL search (chief or worker), for the tests.

Keras Tuner decides the role from KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP /
KERASTUNER_ORACLE_PORT. Every trial a worker runs is appended to
`<log_dir>/<tuner id>.log`, so the test can check that no trial is lost or run
twice.

Usage: python distributed_search.py DIRECTORY LOG_DIR MAX_TRIALS
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras_tuner as kt  # noqa: E402

import nas_tf  # noqa: E402


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

    def run_trial(self, trial, *args, **kwargs):
        values = trial.hyperparameters.values
        with open(self.log_path, "a") as f:
            f.write(trial.trial_id + "\n")
        time.sleep(0.2)  # Lets the other worker take trials too.
        skips = sum(int(v) for k, v in values.items() if "@anchor:" in k)
        return {"score": float(values["units"] + skips)}


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
    tuner.search(verbose=0)


if __name__ == "__main__":
    main(*sys.argv[1:])
