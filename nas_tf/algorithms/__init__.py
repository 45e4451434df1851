"""Search algorithms as plain objects: `propose`, `feedback`, `state`, `restore`.

`ControllerSearch` is the paper's controller and REINFORCE; `RandomSearch`
the baseline. `NASRLOracle` adapts `ControllerSearch` to Keras Tuner; a
weight-sharing trainer can drive either directly.
"""

from nas_tf.algorithms.base import RandomSearch, SearchAlgorithm
from nas_tf.algorithms.controller_search import (PRESETS, ControllerSearch, UniformMutationSearch,
                                                 default_reinforce_config)

__all__ = ["ControllerSearch", "PRESETS", "RandomSearch", "SearchAlgorithm",
           "UniformMutationSearch", "default_reinforce_config"]
