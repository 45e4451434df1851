"""Pins the private TensorFlow API that `nas_tf.tf_compat` owns.

If a TensorFlow upgrade removes or changes `ConcreteFunction._call_flat`,
these tests fail here, naming it; `graph_call.FlatCall` then falls back to
the public call, slower but correct.
"""

import numpy as np
import tensorflow as tf

from nas_tf import tf_compat


def _function():
    """A function of a nest of variables and a tensor, capturing a variable too."""
    captured = tf.Variable([10.0, 20.0])

    @tf.function(autograph=False)
    def fn(w, x):
        return {"y": tf.matmul(x, w["a"]) + w["b"] + captured, "b": w["b"].read_value()}

    return fn, captured


def test_concrete_functions_still_have_call_flat():
    fn, _ = _function()
    w = {"a": tf.Variable(np.eye(2, dtype=np.float32)), "b": tf.Variable([1.0, 2.0])}
    concrete = fn.get_concrete_function(w, tf.TensorSpec([None, 2], tf.float32))
    assert tf_compat.flat_caller(concrete) is not None, (
        f"TensorFlow {tf.__version__}: ConcreteFunction._call_flat is gone; update "
        "nas_tf/tf_compat.py (FlatCall now takes the slower public call).")


def test_call_flat_takes_nest_order_with_variable_handles_and_returns_the_structure():
    fn, captured = _function()
    w = {"a": tf.Variable(np.eye(2, dtype=np.float32)), "b": tf.Variable([1.0, 2.0])}
    x = tf.constant(np.arange(6, dtype=np.float32).reshape(3, 2))
    concrete = fn.get_concrete_function(w, x)
    call = tf_compat.flat_caller(concrete)
    flat = tf_compat.flat_inputs((w, x))
    assert [t.dtype for t in flat] == [tf.resource, tf.resource, tf.float32]
    for _ in range(2):
        got, want = call(flat), fn(w, x)
        assert set(got) == {"y", "b"}
        for key in want:
            np.testing.assert_array_equal(got[key].numpy(), want[key].numpy())
        # New variable values (arguments and captures) are read at each call.
        w["b"].assign([3.0, 4.0])
        captured.assign([0.0, 1.0])
    other = {"a": tf.Variable(2 * np.eye(2, dtype=np.float32)), "b": tf.Variable([0.0, 0.0])}
    np.testing.assert_array_equal(call(tf_compat.flat_inputs((other, x)))["y"].numpy(),
                                  2 * x.numpy() + [0.0, 1.0])
