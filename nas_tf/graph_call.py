"""Calling the controller's traced graphs with little Python overhead.

The controller's graphs take its weights (and Adam's state) as nested
arguments, so that one trace serves every controller of a space
(`controller._shared_graphs`). A `tf.function` call canonicalises every
nested argument on every call: for NAS-Bench-201's controller that is about
half the time of a sampling call and a third of a training step's, on a
2-core CPU (`experiments/controller_speed.py`). The structure never changes
between calls, so `FlatCall` keeps the concrete function of each input
signature and hands it the flattened tensors directly, through the private
call that `nas_tf.tf_compat` owns.
"""

import threading
from typing import Dict, Tuple

from nas_tf import tf_compat

_flat_inputs = tf_compat.flat_inputs


def _signature(flat) -> Tuple:
    """What selects a concrete function: the shapes and dtypes of the tensor inputs."""
    return tuple((x.dtype, tuple(x.shape)) for x in flat)


class FlatCall:
    """Calls a `tf.function` through its concrete functions on flat inputs.

    The first call with a new signature (shapes and dtypes of the tensor
    inputs) goes through the `tf.function` as usual, which traces if needed,
    and keeps its concrete function; later calls of that signature flatten
    the arguments (`tf.nest` order, the order the concrete function takes
    them) and execute it. The results are the same tensors either way.

    Args:
      function: a `tf.function` whose arguments are nests of tensors and
        variables (no Python values).
      weight_args: how many leading arguments are nests of variables only
        (the controller's weights, Adam's state). Their shapes are fixed for
        the function, so they do not enter the signature, and the flattening
        of the last nest passed at each position is kept while the same
        object is passed again.

    Attributes:
      function: the wrapped `tf.function` (for its tracing count).
    """

    def __init__(self, function, weight_args: int = 0):
        self.function = function
        self.weight_args = weight_args
        self._concrete: Dict[Tuple, object] = {}  # signature -> (concrete, its flat call)
        self._weights = [(None, [])] * weight_args  # (nest, its flat handles) by position
        self._lock = threading.Lock()

    def _flat_weights(self, nests) -> list:
        flat = []
        for i, nest in enumerate(nests):
            cached = self._weights[i]  # One read: another thread may replace it.
            if cached[0] is not nest:
                cached = self._weights[i] = (nest, _flat_inputs(nest))
            flat += cached[1]
        return flat

    def __call__(self, *args):
        rest = _flat_inputs(args[self.weight_args:])
        key = _signature(rest)
        kept = self._concrete.get(key)
        if kept is None:
            with self._lock:
                out = self.function(*args)  # Traces once per signature.
                concrete = self.function.get_concrete_function(*args)
                self._concrete[key] = (concrete, tf_compat.flat_caller(concrete))
            return out
        concrete, call_flat = kept
        if call_flat is None:  # A TensorFlow without it: the public structured call.
            return concrete(*args)
        return call_flat(self._flat_weights(args[: self.weight_args]) + rest)
