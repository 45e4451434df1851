"""Drives a NASRLOracle on a toy objective, resuming whatever is in PROJECT_DIR.

  python tests/oracle_fault_driver.py PROJECT_DIR NUM_TRIALS

Used by tests/test_oracle_faults.py, which kills it at named points with
NAS_TF_FAULT and runs it again. Like `nas_tf.search.ChildSearch`, it never
evaluates a trial twice: `evaluations.jsonl` (appended durably) is read back
and a re-run trial takes its recorded score. At the end it writes `final.json`:
every trial's values and score, and the controller's weights.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras_tuner as kt  # noqa: E402

import nas_tf  # noqa: E402
from nas_tf import durable  # noqa: E402


def space():
    hps = kt.HyperParameters()
    for i in range(4):
        hps.Choice(f"op_{i}", ["a", "b", "c", "d"])
        nas_tf.anchor(hps, f"l{i}", [f"l{j}" for j in range(i)])
    return hps


def score(values):
    ops = sum("abcd".index(values[f"op_{i}"]) for i in range(4))
    skips = sum(int(v) for k, v in values.items() if "@anchor:" in k)
    return float(ops + 0.5 * skips)


def main(project_dir, num_trials):
    oracle = nas_tf.NASRLOracle(
        objective=kt.Objective("score", "max"),
        max_trials=num_trials,
        hyperparameters=space(),
        seed=11,
        reinforce_config=nas_tf.ReinforceConfig(batch_size=3),
    )
    oracle.snapshot_min_bytes = 4096  # Several snapshots in a short search...
    oracle.checkpoint_every = oracle.checkpoint_trials = 2  # ...and several checkpoints.
    oracle._set_project_dir(os.path.dirname(project_dir), os.path.basename(project_dir))
    oracle.verbose = 0
    if os.path.exists(os.path.join(project_dir, "oracle.json")):
        oracle.reload()
    log = os.path.join(project_dir, "evaluations.jsonl")
    done = {}
    if os.path.exists(log):
        with open(log) as f:
            for line in f:
                if line.strip():
                    record = json.loads(line)
                    done[record["trial_id"]] = record["score"]
    while True:
        trial = oracle.create_trial("tuner0")
        if trial.status == "STOPPED":
            break
        values = dict(trial.hyperparameters.values)
        if trial.trial_id in done:
            value = done[trial.trial_id]
        else:
            value = score(values)
            durable.append_line(log, json.dumps({"trial_id": trial.trial_id, "score": value}))
        oracle.update_trial(trial.trial_id, {"score": value})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    final = {
        "trials": {t: [oracle.trials[t].hyperparameters.values, oracle.trials[t].score]
                   for t in sorted(oracle.trials)},
        "weights": {k: v.tolist() for k, v in oracle.controller.get_weights().items()},
        "next": [a.to_json() for a in oracle.controller.sample(4)],
    }
    with open(os.path.join(project_dir, "final.json"), "w") as f:
        json.dump(final, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
