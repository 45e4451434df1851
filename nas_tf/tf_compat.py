"""The one private TensorFlow API nas_tf uses, owned here and pinned by a test.

`ConcreteFunction._call_flat(tensors, captured_inputs)` runs a traced graph on
its flattened inputs, skipping the public call's canonicalisation of nested
arguments (on the controller's small graphs, about half a sampling call:
`experiments/controller_speed.py`). `graph_call.FlatCall` reaches it only
through `flat_caller`; `tests/test_tf_compat.py` checks that the installed
TensorFlow still has it and that it computes what the public call does, so a
TensorFlow upgrade that changes it fails there by name, not deep in a search.
"""

from typing import Callable, Optional

import tensorflow as tf


def flat_inputs(args) -> list:
    """The tensors of `args` in the order a concrete function takes them (variables as handles)."""
    return [x.handle if isinstance(x, tf.Variable) else x for x in tf.nest.flatten(args)]


def flat_caller(concrete) -> Optional[Callable[[list], object]]:
    """A function that runs `concrete` on `flat_inputs(args)`, or None where TensorFlow lacks one.

    Args:
      concrete: a `ConcreteFunction` (from `tf.function.get_concrete_function`).

    Returns:
      call(flat) -> the function's (structured) outputs, or None: then only
      the public `concrete(*args)` call is available.
    """
    call_flat = getattr(concrete, "_call_flat", None)
    if call_flat is None:
        return None
    # Captured inputs are read at each call, as the public call reads them.
    return lambda flat: call_flat(flat, concrete.captured_inputs)
