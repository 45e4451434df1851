"""Shared test setup: quiet TensorFlow, fixed seeds, tiny spaces."""

import contextlib
import os
import random

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from nas_tf import space as space_lib  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    tf.random.set_seed(0)


# Flags of a search small enough for a test: 2 layers of 2-4 filters, 1 epoch.
TINY_FLAGS = [
    "--search_depth=2",
    "--search_num_filters=2,4",
    "--search_filter_sizes=1,3",
    "--child_epochs=1",
    "--child_batch_size=128",
    "--controller_batch_size=2",
]


def layered_space(depth=4, filters=(2, 4, 8), sizes=(1, 3), name="tiny"):
    """A small convolution-like space: size, filters and anchor per layer, with min_depth."""
    decisions = []
    for i in range(depth):
        decisions += [
            space_lib.Categorical(f"layer_{i}/size", sizes, kind="size", min_depth=i + 1),
            space_lib.Categorical(f"layer_{i}/filters", filters, kind="filters", min_depth=i + 1),
            space_lib.Anchor(
                f"layer_{i}/anchor",
                tuple(f"layer_{j}/anchor" for j in range(i)),
                min_depth=i + 1,
            ),
        ]
    return space_lib.Space(tuple(decisions), name=name)


def conditional_space():
    """A space with value conditions: `units` exists only for the 'dense' model."""
    return space_lib.Space(
        (
            space_lib.Categorical("model", ("linear", "dense")),
            space_lib.Categorical("units", (8, 16, 32), when=(space_lib.When("model", ("dense",)),)),
            space_lib.Categorical("rate", (0.1, 0.2)),
            space_lib.Anchor("a0"),
            space_lib.Anchor("a1", ("a0",), when=(space_lib.When("model", ("dense",)),)),
            space_lib.Anchor("a2", ("a0", "a1")),
        ),
        name="conditional",
    )


# A NASRLOracle driven through the Oracle API on a toy HyperModel space
# (test_oracle.py, test_algorithms.py and its saved-state fixture use it).


def toy_hyperparameters():
    """A HyperModel-like space: choices, a condition, a fixed entry, three anchors."""
    import keras_tuner

    from nas_tf import hp_space

    hps = keras_tuner.HyperParameters()
    hps.Choice("act", ["relu", "tanh"])
    hps.Int("units", 2, 8, step=2)
    hps.Boolean("bias")
    with hps.conditional_scope("bias", [True]):
        hps.Float("init", 0.0, 0.3, step=0.1)
    hps.Fixed("epochs", 1)
    hp_space.anchor(hps, "l0", [])
    hp_space.anchor(hps, "l1", ["l0"])
    hp_space.anchor(hps, "l2", ["l0", "l1"])
    return hps


def toy_score(values):
    """A synthetic objective that prefers many units, tanh, and skip connections."""
    skips = sum(int(v) for k, v in values.items() if "@anchor:" in k)
    return values["units"] + (values["act"] == "tanh") + skips + values.get("init", 0.0)


def toy_oracle(directory, seed=7, **kwargs):
    """A NASRLOracle on `toy_hyperparameters` in `directory`/project, m = 3."""
    import keras_tuner

    from nas_tf import oracle as oracle_lib
    from nas_tf import reinforce

    kwargs.setdefault("reinforce_config", reinforce.ReinforceConfig(batch_size=3, learning_rate=0.05))
    oracle = oracle_lib.NASRLOracle(
        objective=keras_tuner.Objective("score", "max"),
        max_trials=200,
        hyperparameters=toy_hyperparameters(),
        seed=seed,
        **kwargs,
    )
    oracle._set_project_dir(str(directory), "project")
    oracle.verbose = 0
    return oracle


def toy_drive(oracle, num, score=toy_score):
    """Runs `num` trials through the Oracle API; returns their values."""
    out = []
    for _ in range(num):
        trial = oracle.create_trial("tuner0")
        if trial.status == "STOPPED":
            break
        values = dict(trial.hyperparameters.values)
        value = score(values)
        oracle.update_trial(trial.trial_id, {"score": value})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
        out.append(values)
    return out


@contextlib.contextmanager
def lock_held_elsewhere(directory):
    """Another process holds `directory`'s lock (`nas_tf.dirlock`) until the block ends."""
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from nas_tf import dirlock; lock = dirlock.acquire(sys.argv[1]); "
         "print('locked', flush=True); sys.stdin.read()", str(directory)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.stdin.close()  # It releases the lock and ends.
        holder.wait(timeout=60)
