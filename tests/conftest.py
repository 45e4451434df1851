"""Shared test setup: quiet TensorFlow, fixed seeds, tiny spaces."""

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
