"""The NAS-Bench-201 cell family: a weight-sharing-only family, for measurement.

NAS-Bench-201 (Dong & Yang, ICLR 2020) tabulates every one of its 15,625
cells on CIFAR-10, so a search over its cell can be scored against the
table. This family lets `nas_tf.train --weight_sharing` search that cell on
any image data with `nas_tf.supernets.nb201`; `experiments/weight_sharing.py`
uses it to measure weight sharing. Multi-trial searches of the cell run on
the table itself (`experiments/nasbench201.py`), so this family has no
child task.
"""

import dataclasses

from nas_tf import families
from nas_tf import space as space_lib

NAME = "nb201"
SPACE = "nb201_cell"
_EDGES = ("edge_1_0", "edge_2_0", "edge_2_1", "edge_3_0", "edge_3_1", "edge_3_2")


@dataclasses.dataclass(frozen=True)
class NB201Spec:
    """The cell's space and the network around it (the benchmark's: 16 channels, 5 cells)."""

    space: space_lib.Space
    channels: int = 16
    cells_per_stage: int = 5


def nb201_cell(channels: int = 16, cells_per_stage: int = 5) -> NB201Spec:
    """The space factory: `channels` C and `cells_per_stage` N of the network."""
    from nas_tf.supernets import nb201

    if channels < 1 or cells_per_stage < 1:
        raise ValueError("channels and cells_per_stage must be positive.")
    return NB201Spec(nb201.nb201_space(), int(channels), int(cells_per_stage))


def owns(arch: space_lib.Architecture) -> bool:
    return set(arch.values) == set(_EDGES)


def summary(arch: space_lib.Architecture, spec=None) -> str:
    """The benchmark's cell string."""
    from nas_tf.supernets import nb201

    return "NAS-Bench-201 cell: " + nb201.cellstr(nb201.cell_ops(arch))


def make_task(spec, data, config):
    raise ValueError(f"Space {SPACE!r} is searched with weight sharing (--weight_sharing); "
                     "multi-trial searches of it run on the benchmark's table "
                     "(experiments/nasbench201.py).")


def supernet(spec, data, config):
    """`nas_tf.supernets.nb201.NB201Supernet` and step-addressed batches of image `data`."""
    from nas_tf.data import cifar10 as image_data
    from nas_tf.supernets import image_batches
    from nas_tf.supernets import nb201

    if not isinstance(data, image_data.ImageData):
        raise ValueError(f"Space {SPACE!r} searches image classifiers: use an image dataset.")
    net = nb201.NB201Supernet(data.input_shape, data.num_classes, channels=spec.channels,
                              cells_per_stage=spec.cells_per_stage, seed=config.seed)
    return net, image_batches.ImageBatches(data, config.weight_sharing.batch_size,
                                           seed=config.seed)


FAMILY = families.register(families.Family(
    name=NAME,
    spaces={SPACE: nb201_cell},
    make_task=make_task,
    data_kind=families.IMAGE,
    metric="val_accuracy",
    reward="identity",
    flags={"search_nb201_channels": "space_overrides.channels",
           "search_nb201_cells": "space_overrides.cells_per_stage"},
    owns=owns,
    summary=summary,
    supernet=supernet,
))
