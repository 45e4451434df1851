"""Named search spaces (Zoph & Le 2017, sec. 4.1): CIFAR-10 convolutional v1/v2/v3."""

from nas_tf.spaces.conv import (
    SPACES,
    ConvSpaceSpec,
    DepthCurriculum,
    cifar10_v1,
    cifar10_v2,
    cifar10_v3,
    get_space,
)

__all__ = [
    "SPACES",
    "ConvSpaceSpec",
    "DepthCurriculum",
    "cifar10_v1",
    "cifar10_v2",
    "cifar10_v3",
    "get_space",
]
