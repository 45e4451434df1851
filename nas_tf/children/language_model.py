"""The Penn Treebank child model: a 2-layer recurrent language model of a searched cell.

Zoph & Le 2017, sec. 4.2: every child is a two-layer RNN of the sampled cell,
sized to about the parameter count of the "medium" baselines (Zaremba et al.
2014; Gal 2015: about 20M); the reward is c / (validation perplexity)^2 with
c = 80. This module holds the model and its size; `nas_tf.children.lm_trainer`
trains it (truncated back-propagation through time, Zaremba et al.'s medium
setup).

The same model can wrap Keras's own `keras.layers.LSTM` instead of a searched
cell (`LanguageModelConfig(cell="lstm")`), the baseline a searched cell is
compared with at the same width, data and training budget (the paper's
Table 2 compares its cells with LSTM language models of similar size).
"""

import dataclasses
import math
from typing import Callable, List, Optional, Union

import keras
import tensorflow as tf
from keras import ops

from nas_tf.children.cell import NASCell
from nas_tf.spaces import cell as cell_space

# Zaremba et al. 2014, "medium": the size sec. 4.2 matches (20M in Table 2).
MEDIUM_PARAMETERS = 20_000_000

# The recurrent layers a language model can use: a searched cell (`NASCell`)
# or Keras's LSTM.
CELLS = ("nas", "lstm")
# An LSTM's four gate projections of x_t and h_(t-1) weigh as much as a base-4
# cell's leaves: 2 * 4 * units^2 per layer (plus 4 * units of gate biases).
LSTM_BASE = 4


@dataclasses.dataclass(frozen=True)
class LanguageModelConfig:
    """Shape of the child model.

    Attributes:
      units: width of h and c (and of the embedding). None: the width that
        gives about `parameter_budget` parameters (sec. 4.2).
      parameter_budget: the target size when `units` is None.
      num_layers: recurrent layers (2: sec. 4.2).
      tie_embeddings: share the input embedding with the softmax weights
        (Inan et al. 2016; the paper's "shared embeddings" row, Table 2).
      input_dropout: dropout on the embeddings (one mask per sequence if
        `variational`).
      output_dropout: dropout on each layer's output, before the next layer
        and before the softmax.
      recurrent_dropout: dropout on h_(t-1) inside the cell, one mask per
        sequence (Gal & Ghahramani 2016); 0 in Zaremba et al.'s setup.
      variational: one dropout mask per sequence for the input and output
        dropout (Gal 2015) instead of a fresh mask per step (Zaremba et al.).
      init_scale: every weight starts uniform in [-init_scale, init_scale]
        (0.05: Zaremba et al., medium).
      use_bias: biases on the recurrent layer's projections. None: the
        layer's own convention, no biases in a searched cell (sec. 3.4) and
        gate biases in the LSTM (Keras's default, forget-gate bias 1).
      cell: "nas", the searched cell (`NASCell`), or "lstm",
        `keras.layers.LSTM` of the same width (the baseline).
    """

    units: Optional[int] = None
    parameter_budget: int = MEDIUM_PARAMETERS
    num_layers: int = 2
    tie_embeddings: bool = False
    input_dropout: float = 0.5
    output_dropout: float = 0.5
    recurrent_dropout: float = 0.0
    variational: bool = False
    init_scale: float = 0.05
    use_bias: Optional[bool] = None
    cell: str = "nas"

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}.")
        if self.units is not None and self.units < 1:
            raise ValueError(f"units must be positive, got {self.units}.")
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be positive, got {self.num_layers}.")
        for name in ("input_dropout", "output_dropout", "recurrent_dropout"):
            rate = getattr(self, name)
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate}.")
        if not self.init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {self.init_scale}.")


def count_parameters(
    base: int, units: int, vocab_size: int, num_layers: int = 2, tie_embeddings: bool = False,
    use_bias: bool = False, cell: str = "nas",
) -> int:  # fmt: skip
    """Parameters of a `CellLanguageModel` (embedding width = units).

    Args:
      base: leaves of the cell (not used for the LSTM, which weighs as base 4).
      units: width of the recurrent layers and the embedding.
      vocab_size: number of tokens.
      num_layers: recurrent layers.
      tie_embeddings: the softmax reuses the embedding.
      use_bias: the recurrent layers have biases (a cell: one per leaf
        projection, 2 * base * units; the LSTM: one per gate, 4 * units).
      cell: "nas" or "lstm".
    """
    if cell == "lstm":
        per_layer = 2 * LSTM_BASE * units * units + (LSTM_BASE * units if use_bias else 0)
    else:
        per_layer = 2 * base * units * units + (2 * base * units if use_bias else 0)
    softmax = (0 if tie_embeddings else units * vocab_size) + vocab_size
    return vocab_size * units + num_layers * per_layer + softmax


def units_for_budget(
    base: int, vocab_size: int, budget: int = MEDIUM_PARAMETERS, num_layers: int = 2,
    tie_embeddings: bool = False,
) -> int:  # fmt: skip
    """The largest width whose model has at most `budget` parameters (sec. 4.2)."""
    a = 2 * base * num_layers
    b = vocab_size * (1 if tie_embeddings else 2)
    c = vocab_size - budget
    units = int((-b + math.sqrt(b * b - 4 * a * c)) / (2 * a))
    def size(u):
        return count_parameters(base, u, vocab_size, num_layers, tie_embeddings)

    while units > 1 and size(units) > budget:
        units -= 1
    return max(units, 1)


@keras.saving.register_keras_serializable(package="nas_tf")
class CellLanguageModel(keras.Model):
    """Embedding, `num_layers` RNNs of one searched cell (or LSTMs), softmax.

    `call(tokens, states=None, training=False)` takes int tokens [batch, time]
    and the previous states (a list of [h, c] per layer; zeros if None), and
    returns (logits [batch, time, vocab], new states).

    Args:
      vocab_size: number of tokens.
      description: the cell, a `CellDescription` or its config dict; None
        with `cell="lstm"`.
      units: width of h, c and the embedding.
      num_layers, tie_embeddings, input_dropout, output_dropout,
      recurrent_dropout, variational, init_scale, use_bias, cell: see
        `LanguageModelConfig`.
      seed: seeds the initial weights and the dropout masks.
      **kwargs: `keras.Model` arguments; `dtype` (a policy such as
        "mixed_float16") applies to every layer but the softmax, whose logits
        stay float32.

    Raises:
      ValueError: for an unknown `cell`, or a description that does not fit it
        (missing for "nas", given for "lstm").
    """

    def __init__(
        self,
        vocab_size: int,
        description: Optional[Union[cell_space.CellDescription, dict]],
        units: int,
        num_layers: int = 2,
        tie_embeddings: bool = False,
        input_dropout: float = 0.0,
        output_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        variational: bool = False,
        init_scale: float = 0.05,
        use_bias: Optional[bool] = None,
        seed: int = 0,
        cell: str = "nas",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}.")
        if cell == "lstm" and description is not None:
            raise ValueError("cell='lstm' takes no cell description; pass None.")
        if cell == "nas" and description is None:
            raise ValueError("cell='nas' needs a cell description.")
        if description is not None and not isinstance(description, cell_space.CellDescription):
            description = cell_space.CellDescription.from_config(description)
        self.cell = cell
        self.vocab_size = int(vocab_size)
        self.description = description
        self.units = int(units)
        self.num_layers = int(num_layers)
        self.tie_embeddings = bool(tie_embeddings)
        self.input_dropout = float(input_dropout)
        self.output_dropout = float(output_dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.variational = bool(variational)
        self.init_scale = float(init_scale)
        # None: no biases in a searched cell (sec. 3.4), gate biases in the LSTM.
        self.use_bias = (cell == "lstm") if use_bias is None else bool(use_bias)
        self.seed = int(seed)

        def init(k):
            return keras.initializers.RandomUniform(-init_scale, init_scale, seed=seed * 100 + k)

        noise = (None, 1, self.units) if variational else None
        # Keras 3 sublayers do not inherit a model's policy: each is given it.
        self._layer_dtype = dict(dtype=self.dtype_policy)
        self.embedding = keras.layers.Embedding(
            vocab_size, self.units, embeddings_initializer=init(0), name="embedding",
            **self._layer_dtype,
        )  # fmt: skip
        self.embedding_dropout = keras.layers.Dropout(
            input_dropout, noise_shape=noise, seed=seed, name="input_dropout", **self._layer_dtype
        )
        self.rnns = []
        self.dropouts = []
        for i in range(self.num_layers):
            self.rnns.append(self._recurrent_layer(i, init))
            self.dropouts.append(
                keras.layers.Dropout(
                    output_dropout, noise_shape=noise, seed=seed + 1 + i,
                    name=f"output_dropout_{i}", **self._layer_dtype,
                )  # fmt: skip
            )
        if not self.tie_embeddings:
            self.softmax = keras.layers.Dense(
                vocab_size, kernel_initializer=init(99), name="softmax", dtype="float32"
            )

    def _recurrent_layer(self, i: int, init: Callable) -> keras.layers.Layer:
        """Layer `i`: an RNN of the searched cell, or a Keras LSTM; outputs (x, h, c)."""
        common = dict(
            use_bias=self.use_bias,
            recurrent_dropout=self.recurrent_dropout,
            kernel_initializer=init(2 * i + 1),
            recurrent_initializer=init(2 * i + 2),
            seed=self.seed * 100 + 50 + i,
        )
        if self.cell == "lstm":
            # Keras's defaults otherwise: tanh / sigmoid, zero biases but a
            # forget-gate bias of 1 (Jozefowicz et al. 2015).
            return keras.layers.LSTM(
                self.units, return_sequences=True, return_state=True, name=f"rnn_{i}",
                **common, **self._layer_dtype,
            )  # fmt: skip
        cell = NASCell(self.units, self.description, name=f"cell_{i}", **common, **self._layer_dtype)
        return keras.layers.RNN(
            cell, return_sequences=True, return_state=True, name=f"rnn_{i}", **self._layer_dtype
        )

    def build(self, input_shape=None):
        self.embedding.build((None, None))
        for rnn in self.rnns:
            rnn.build((None, None, self.units))
        if self.tie_embeddings:
            self.softmax_bias = self.add_weight(
                shape=(self.vocab_size,), initializer="zeros", name="softmax_bias"
            )
        else:
            self.softmax.build((None, None, self.units))
        self.built = True

    def initial_states(self, batch_size: int) -> List[List[tf.Tensor]]:
        """Zero [h, c] for every layer (in the compute dtype: float16 under mixed precision)."""
        zeros = tf.zeros((batch_size, self.units), dtype=self.compute_dtype)
        return [[zeros, zeros] for _ in range(self.num_layers)]

    def call(self, tokens, states=None, training=False):
        if states is None:
            states = self.initial_states(ops.shape(tokens)[0])
        x = self.embedding_dropout(self.embedding(tokens), training=training)
        new_states = []
        for rnn, dropout, state in zip(self.rnns, self.dropouts, states):
            x, h, c = rnn(x, initial_state=list(state), training=training)
            x = dropout(x, training=training)
            new_states.append([h, c])
        if self.tie_embeddings:
            x = ops.cast(x, "float32")  # Logits in float32, as the untied softmax's.
            embeddings = ops.cast(self.embedding.embeddings, "float32")
            logits = ops.matmul(x, ops.transpose(embeddings)) + self.softmax_bias
        else:
            logits = self.softmax(x)
        return logits, new_states

    def get_config(self):
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            description=None if self.description is None else self.description.to_config(),
            units=self.units,
            num_layers=self.num_layers,
            tie_embeddings=self.tie_embeddings,
            input_dropout=self.input_dropout,
            output_dropout=self.output_dropout,
            recurrent_dropout=self.recurrent_dropout,
            variational=self.variational,
            init_scale=self.init_scale,
            use_bias=self.use_bias,
            seed=self.seed,
            cell=self.cell,
        )
        return config


def build_model(
    description: Optional[cell_space.CellDescription],
    vocab_size: int,
    config: LanguageModelConfig = LanguageModelConfig(),
    seed: int = 0,
    dtype_policy: Optional[str] = None,
) -> CellLanguageModel:
    """A built `CellLanguageModel` for `description` with `config`.

    Args:
      dtype_policy: a Keras dtype policy such as "mixed_float16" (None: float32).
      description: the cell; None when `config.cell` is "lstm".
      vocab_size: number of tokens.
      config: the model's shape; with `units=None` the width is the largest
        within `parameter_budget` (an LSTM counts as a base-4 cell).
      seed: seeds the weights and the dropout masks.

    Raises:
      ValueError: if `description` does not fit `config.cell`.
    """
    if config.cell == "nas" and description is None:
        raise ValueError("A searched-cell model (cell='nas') needs a cell description.")
    base = LSTM_BASE if config.cell == "lstm" else description.base
    units = config.units or units_for_budget(
        base, vocab_size, config.parameter_budget, config.num_layers, config.tie_embeddings,
    )  # fmt: skip
    model = CellLanguageModel(
        vocab_size,
        description,
        units,
        num_layers=config.num_layers,
        tie_embeddings=config.tie_embeddings,
        input_dropout=config.input_dropout,
        output_dropout=config.output_dropout,
        recurrent_dropout=config.recurrent_dropout,
        variational=config.variational,
        init_scale=config.init_scale,
        use_bias=config.use_bias,
        seed=seed,
        cell=config.cell,
        name="lstm_language_model" if config.cell == "lstm" else "cell_language_model",
        dtype=dtype_policy,
    )
    model.build((None, None))
    return model
