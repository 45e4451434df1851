"""Child networks built from sampled architectures (Zoph & Le 2017, sec. 3.3, 4.1, 4.2).

`base` holds what both families share (failure type, result record,
accelerators, strategy and precision); `convnet` builds and trains the image
classifiers; `language_model` is the recurrent-cell language model and
`lm_trainer` trains it; `worker` trains either in a recycled process.
"""

from nas_tf.children.base import (
    ChildDivergedError,
    ChildTrainingError,
    Placement,
    TrainedChild,
    accelerator_present,
    accelerators,
    placement,
)
from nas_tf.children.convnet import (
    ChildConfig,
    ChildResult,
    ConvLayer,
    build_convnet,
    compile_child,
    dangling,
    decode,
    fit_child,
    train_child,
)

__all__ = [
    "ChildConfig",
    "ChildDivergedError",
    "ChildResult",
    "ChildTrainingError",
    "ConvLayer",
    "Placement",
    "TrainedChild",
    "accelerator_present",
    "accelerators",
    "build_convnet",
    "compile_child",
    "dangling",
    "decode",
    "fit_child",
    "placement",
    "train_child",
]
