"""A searched recurrent cell as a Keras layer (Zoph & Le 2017, sec. 3.4).

`NASCell` computes one step of a `CellDescription`: every leaf k combines
W_k x_t and U_k h_(t-1); inner nodes combine their children; c_(t-1) is merged
into the inject node; c_t is the memory node's value before its activation and
h_t is the root's output. The projections of all leaves are two fused matmuls
(one for x_t, one for h_(t-1)), the rest is elementwise.

The layer works inside `keras.layers.RNN` (state = [h, c]), saves its
description in `get_config` so a model round-trips through `.keras` files, and
traces under `tf.function(jit_compile=True)`.
"""

from typing import Mapping, Union

import keras
from keras import ops

# The mixin that keras.layers.LSTMCell uses to draw one dropout mask per sequence
# (variational dropout, Gal & Ghahramani 2016); Keras does not export it.
from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell

from nas_tf.spaces import cell as cell_space

# Every function of `cell_space.ALL_ACTIVATIONS` / `ALL_COMBINATIONS`: max and
# sin are the paper's control experiment 1 (`ptb_cell(base, "extended")`).
_ACTIVATIONS = {
    "identity": lambda v: v,
    "tanh": ops.tanh,
    "sigmoid": ops.sigmoid,
    "relu": ops.relu,
    "sin": ops.sin,
}
_COMBINATIONS = {
    "add": ops.add,
    "elem_mult": ops.multiply,
    "max": ops.maximum,
}


def run_cell(description: cell_space.CellDescription, wx, uh, c_prev):
    """The tree arithmetic of one step, for any backend tensors.

    Args:
      description: the cell.
      wx: leaf projections of x_t, a list of `base` tensors [batch, units].
      uh: leaf projections of h_(t-1), a list of `base` tensors [batch, units].
      c_prev: the memory c_(t-1), [batch, units].

    Returns:
      (h_t, c_t).
    """
    outputs = []
    c_t = None
    for i, node in enumerate(description.nodes):
        kids = description.children(i)
        left, right = (wx[i], uh[i]) if kids is None else (outputs[kids[0]], outputs[kids[1]])
        value = _COMBINATIONS[node.combine](left, right)
        if i == description.memory_node:
            c_t = value  # Sec. 3.4: c_t takes the node's value before the activation.
        out = _ACTIVATIONS[node.activation](value)
        if i == description.inject_node:
            inject = description.inject
            out = _ACTIVATIONS[inject.activation](_COMBINATIONS[inject.combine](out, c_prev))
        outputs.append(out)
    return outputs[-1], c_t


@keras.saving.register_keras_serializable(package="nas_tf")
class NASCell(DropoutRNNCell, keras.layers.Layer):
    """One step of a searched cell; use it inside `keras.layers.RNN`.

    Args:
      units: width of h and c.
      description: a `CellDescription`, or its `to_config()` dict.
      use_bias: add a bias to every leaf projection. The paper's equations have
        none (sec. 3.4), hence the default.
      dropout: rate of a per-sequence dropout mask on x_t (variational, Gal &
        Ghahramani 2016).
      recurrent_dropout: rate of a per-sequence dropout mask on h_(t-1).
      kernel_initializer: initialiser of the W_k (x_t projections).
      recurrent_initializer: initialiser of the U_k (h_(t-1) projections).
      bias_initializer: initialiser of the biases.
      seed: seed of the dropout masks.
    """

    def __init__(
        self,
        units: int,
        description: Union[cell_space.CellDescription, Mapping],
        use_bias: bool = False,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="glorot_uniform",
        bias_initializer="zeros",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if units < 1:
            raise ValueError(f"units must be positive, got {units}.")
        if not isinstance(description, cell_space.CellDescription):
            description = cell_space.CellDescription.from_config(description)
        for name, rate in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate}.")
        self.units = int(units)
        self.description = description
        self.use_bias = bool(use_bias)
        self.dropout = float(dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed=seed)
        self.state_size = [self.units, self.units]
        self.output_size = self.units

    def build(self, input_shape):
        base, units = self.description.base, self.units
        self.kernel = self.add_weight(
            shape=(input_shape[-1], base * units),
            initializer=self.kernel_initializer,
            name="kernel",
        )
        self.recurrent_kernel = self.add_weight(
            shape=(units, base * units),
            initializer=self.recurrent_initializer,
            name="recurrent_kernel",
        )
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(2, base * units), initializer=self.bias_initializer, name="bias"
            )
        self.built = True

    def call(self, inputs, states, training=False):
        h_prev, c_prev = states[0], states[1]
        if training and self.dropout > 0:
            inputs = inputs * self.get_dropout_mask(inputs)
        if training and self.recurrent_dropout > 0:
            h_prev = h_prev * self.get_recurrent_dropout_mask(h_prev)
        wx = ops.matmul(inputs, self.kernel)
        uh = ops.matmul(h_prev, self.recurrent_kernel)
        if self.use_bias:
            wx = wx + self.bias[0]
            uh = uh + self.bias[1]
        wx = ops.split(wx, self.description.base, axis=-1)
        uh = ops.split(uh, self.description.base, axis=-1)
        h, c = run_cell(self.description, wx, uh, c_prev)
        return h, [h, c]

    def get_initial_state(self, batch_size=None):
        return [ops.zeros((batch_size, self.units), dtype=self.compute_dtype) for _ in range(2)]

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            description=self.description.to_config(),
            use_bias=self.use_bias,
            dropout=self.dropout,
            recurrent_dropout=self.recurrent_dropout,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            recurrent_initializer=keras.initializers.serialize(self.recurrent_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            seed=self.seed,
        )
        return config
