"""Runs (or resumes) a tiny weight-sharing search in OUTPUT_DIR.

  python tests/shared_search_driver.py OUTPUT_DIR

The NAS-Bench-201 cell supernet (C = 2, one cell per stage) on the embedded
digits, 3 epochs of 3 steps, 1 warm-up epoch, 6 controller samples per
epoch, 5 derived. Used by tests/test_shared_search.py, in its own process
(`build`) and as a subprocess that `NAS_TF_FAULT` kills and a second run
resumes. At the end it writes `final.npz`: the shared weights, their
velocities and step, and the controller's arrays.
"""

import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from nas_tf.algorithms import controller_search  # noqa: E402
from nas_tf.data import embedded  # noqa: E402
from nas_tf.supernets import nb201  # noqa: E402
from nas_tf.supernets.config import SharedSearchConfig, SharedTraining  # noqa: E402
from nas_tf.supernets.image_batches import ImageBatches  # noqa: E402
from nas_tf.supernets.search import SharedSearch  # noqa: E402

SEED = 5
CONFIG = SharedSearchConfig(
    epochs=3, steps_per_epoch=3, warmup_epochs=1, controller_samples=6, derive_samples=5,
    batch_size=16, training=SharedTraining(jit_compile=False),
)
# ENAS's REINFORCE settings with a batch of 4 instead of 20, so the controller
# updates within the search (feeds 4, 8 and 12), one update mid-epoch.
REINFORCE = dataclasses.replace(controller_search.PRESETS["enas"]["reinforce_config"](), batch_size=4)

_data = None


def data():
    global _data
    if _data is None:
        _data = embedded.load_digits()
    return _data


def build(output_dir, config=CONFIG):
    """The search (resumed if `output_dir` holds one)."""
    digits = data()
    net = nb201.NB201Supernet(digits.input_shape, digits.num_classes, channels=2,
                              cells_per_stage=1, seed=SEED)
    batches = ImageBatches(digits, config.batch_size, seed=SEED, valid_batch_size=60)
    algorithm = controller_search.ControllerSearch(net.space, SEED, preset="enas",
                                                   reinforce_config=REINFORCE)
    return SharedSearch(net, batches, algorithm, config, output_dir)


def final_state(search) -> dict:
    """The shared weights, velocities and step, and the controller's arrays, by name."""
    out = {f"w{i}": w.numpy() for i, w in enumerate(search.weights.weights)}
    out.update({f"v{i}": v.numpy() for i, v in enumerate(search.weights.velocities)})
    out["step"] = np.asarray(search.weights.step.numpy())
    arrays, _ = search.algorithm.checkpoint()
    out.update({f"controller/{k}": np.asarray(v) for k, v in arrays.items()
                if k != "learner_state"})
    return out


def main(output_dir):
    search = build(output_dir)
    search.run()
    np.savez(os.path.join(output_dir, "final.npz"), **final_state(search))


if __name__ == "__main__":
    main(sys.argv[1])
