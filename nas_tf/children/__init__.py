"""Child networks built from sampled architectures (Zoph & Le 2017, sec. 3.3, 4.1)."""

from nas_tf.children.convnet import (
    ChildConfig,
    ChildResult,
    ChildTrainingError,
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
    "ChildResult",
    "ChildTrainingError",
    "ConvLayer",
    "build_convnet",
    "compile_child",
    "dangling",
    "decode",
    "fit_child",
    "train_child",
]
