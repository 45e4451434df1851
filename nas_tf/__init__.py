"""nas_tf: Neural Architecture Search with Reinforcement Learning (Zoph & Le, 2017).

The public API: the search-space language, the controller, REINFORCE, the
Keras Tuner oracle and tuner, and a whole search from Python (`Search`).
"""

import importlib

# Where each public name lives. They are imported on first use (PEP 562), so
# that tools which need none of them, such as `python -m nas_tf.report`, start
# without importing TensorFlow and Keras (about 11 s on a 2-core machine).
_EXPORTS = {
    "Search": "nas_tf.api",
    "SearchResult": "nas_tf.api",
    "open_search": "nas_tf.api",
    "Controller": "nas_tf.controller",
    "ControllerConfig": "nas_tf.controller",
    "anchor": "nas_tf.hp_space",
    "space_from_hyperparameters": "nas_tf.hp_space",
    "space_to_hyperparameters": "nas_tf.hp_space",
    "NASRL": "nas_tf.oracle",
    "NASRLOracle": "nas_tf.oracle",
    "Reinforce": "nas_tf.reinforce",
    "ReinforceConfig": "nas_tf.reinforce",
    "cifar10_reward": "nas_tf.reinforce",
    "ptb_reward": "nas_tf.reinforce",
    "Anchor": "nas_tf.space",
    "Architecture": "nas_tf.space",
    "ArchitectureError": "nas_tf.space",
    "Categorical": "nas_tf.space",
    "Space": "nas_tf.space",
    "When": "nas_tf.space",
}


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nas_tf' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    _register_families()
    globals()[name] = value  # Later lookups skip this function.
    return value


def _register_families():
    """Registers the built-in space families, so that `Architecture.summary()` and
    `.build()` know them (`nas_tf.builtin_families`; no Keras is imported)."""
    try:
        importlib.import_module("nas_tf.builtin_families")
    except ModuleNotFoundError:  # A build of nas_tf's core alone (Bazel's //nas_tf).
        pass


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


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
