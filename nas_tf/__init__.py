"""nas_tf: Neural Architecture Search with Reinforcement Learning (Zoph & Le, 2017).

The public API: the search-space language, the controller, REINFORCE, the
Keras Tuner oracle and tuner, and a whole search from Python (`Search`).
"""

from nas_tf.api import Search, SearchResult, open_search
from nas_tf.controller import Controller, ControllerConfig
from nas_tf.hp_space import anchor, space_from_hyperparameters, space_to_hyperparameters
from nas_tf.oracle import NASRL, NASRLOracle
from nas_tf.reinforce import Reinforce, ReinforceConfig, cifar10_reward, ptb_reward
from nas_tf.space import Anchor, Architecture, ArchitectureError, Categorical, Space, When

__all__ = [
    "Anchor",
    "Architecture",
    "ArchitectureError",
    "Categorical",
    "Controller",
    "ControllerConfig",
    "NASRL",
    "NASRLOracle",
    "Reinforce",
    "ReinforceConfig",
    "Search",
    "SearchResult",
    "Space",
    "When",
    "anchor",
    "cifar10_reward",
    "open_search",
    "ptb_reward",
    "space_from_hyperparameters",
    "space_to_hyperparameters",
]
