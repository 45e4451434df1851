"""The Penn Treebank child: a 2-layer recurrent language model of a searched cell.

Zoph & Le 2017, sec. 4.2: every child is a two-layer RNN of the sampled cell,
sized to about the parameter count of the "medium" baselines (Zaremba et al.
2014; Gal 2015: about 20M), trained 35 epochs; the reward is c / (validation
perplexity)^2 with c = 80. The paper fixes the other hyperparameters without
listing them; the defaults here are Zaremba et al.'s medium setup (batch 20,
35 unrolled steps, SGD at learning rate 1 decayed by 0.8 per epoch after
epoch 6, gradient norm clipped at 5, weights uniform in [-0.05, 0.05],
dropout 0.5).

Training is truncated back-propagation through time over contiguous batches
(`nas_tf.data.ptb.batchify`) with the state carried from batch to batch, in a
custom loop around one `tf.function` step. A loss that stops being finite
raises `ChildDivergedError`.

The same model can wrap Keras's own `keras.layers.LSTM` instead of a searched
cell (`LanguageModelConfig(cell="lstm")`), the baseline a searched cell is
compared with at the same width, data and training budget (the paper's
Table 2 compares its cells with LSTM language models of similar size).
"""

import dataclasses
import math
import time
from typing import Callable, List, Optional, Union

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from nas_tf.children.cell import NASCell
from nas_tf.children.convnet import ChildTrainingError  # One failure type for all children.
from nas_tf.data import ptb
from nas_tf.spaces import cell as cell_space

# Zaremba et al. 2014, "medium": the size sec. 4.2 matches (20M in Table 2).
MEDIUM_PARAMETERS = 20_000_000

# The recurrent layers a language model can use: a searched cell (`NASCell`)
# or Keras's LSTM.
CELLS = ("nas", "lstm")
# An LSTM's four gate projections of x_t and h_(t-1) weigh as much as a base-4
# cell's leaves: 2 * 4 * units^2 per layer (plus 4 * units of gate biases).
LSTM_BASE = 4


class ChildDivergedError(ChildTrainingError):
    """The loss became NaN or infinite (`reason` "nan")."""

    def __init__(self, message: str):
        super().__init__("nan", message)


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


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How a child is trained.

    Attributes:
      epochs: passes over the training data (35: sec. 4.2).
      batch_size: contiguous rows per batch (20: Zaremba et al.).
      bptt_steps: unrolled steps per batch (35: Zaremba et al.).
      eval_batch_size: rows when measuring perplexity.
      learning_rate: SGD learning rate (1.0: Zaremba et al.).
      lr_decay: factor applied per epoch once `lr_decay_after` epochs are done
        (0.8 after 6: Zaremba et al., medium).
      lr_decay_after: epochs at the full learning rate.
      clip_norm: global gradient-norm clipping (5: Zaremba et al.).
      max_train_batches: stop each epoch after this many batches (None: all);
        for quick CPU searches.
      max_eval_batches: measure validation perplexity on this many batches
        (None: all).
      jit_compile: compile the training step with XLA. None: on when a GPU
        or TPU is visible (on CPU, XLA was measured slower for small models).
      seed: seeds weights and dropout.
    """

    epochs: int = 35
    batch_size: int = 20
    bptt_steps: int = 35
    eval_batch_size: int = 10
    learning_rate: float = 1.0
    lr_decay: float = 0.8
    lr_decay_after: int = 6
    clip_norm: Optional[float] = 5.0
    max_train_batches: Optional[int] = None
    max_eval_batches: Optional[int] = None
    jit_compile: Optional[bool] = None
    seed: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch_size", "bptt_steps", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}.")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}.")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be positive or None, got {self.clip_norm}.")

    def learning_rate_at(self, epoch: int) -> float:
        """Learning rate of 0-based `epoch`."""
        return self.learning_rate * self.lr_decay ** max(0, epoch + 1 - self.lr_decay_after)


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
        self.embedding = keras.layers.Embedding(
            vocab_size, self.units, embeddings_initializer=init(0), name="embedding"
        )
        self.embedding_dropout = keras.layers.Dropout(
            input_dropout, noise_shape=noise, seed=seed, name="input_dropout"
        )
        self.rnns = []
        self.dropouts = []
        for i in range(self.num_layers):
            self.rnns.append(self._recurrent_layer(i, init))
            self.dropouts.append(
                keras.layers.Dropout(
                    output_dropout, noise_shape=noise, seed=seed + 1 + i, name=f"output_dropout_{i}"
                )
            )
        if not self.tie_embeddings:
            self.softmax = keras.layers.Dense(
                vocab_size, kernel_initializer=init(99), name="softmax"
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
                self.units, return_sequences=True, return_state=True, name=f"rnn_{i}", **common
            )
        cell = NASCell(self.units, self.description, name=f"cell_{i}", **common)
        return keras.layers.RNN(cell, return_sequences=True, return_state=True, name=f"rnn_{i}")

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
        """Zero [h, c] for every layer."""
        zeros = tf.zeros((batch_size, self.units))
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
            logits = ops.matmul(x, ops.transpose(self.embedding.embeddings)) + self.softmax_bias
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
) -> CellLanguageModel:
    """A built `CellLanguageModel` for `description` with `config`.

    Args:
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
    )
    model.build((None, None))
    return model


# -- training ------------------------------------------------------------------


@dataclasses.dataclass
class LanguageModelResult:
    """What training one child gave.

    Attributes:
      val_perplexities: validation perplexity after each epoch.
      best_val_perplexity: the lowest of them; the reward uses it (the paper
        does not say which epoch counts).
      bits_per_token: validation log2-loss per token at the best epoch (bits
        per character for character-level data, as the paper reports).
      train_losses: mean training cross-entropy (nats) per epoch.
      num_parameters: trainable parameters of the model.
      seconds: wall time of training and evaluation.
      model: the trained `CellLanguageModel` (its last-epoch weights, or the
        best epoch's with `restore_best`).
      step_ms: median wall time of one training step in milliseconds, the
        first step (which traces and compiles) left out; None if there was
        only one step.
      best_epoch: 0-based epoch of `best_val_perplexity`.
    """

    val_perplexities: List[float]
    best_val_perplexity: float
    bits_per_token: float
    train_losses: List[float]
    num_parameters: int
    seconds: float
    model: Optional[CellLanguageModel] = None
    step_ms: Optional[float] = None
    best_epoch: int = 0


def _loss(logits, targets):
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    )


class _Trainer:
    """The compiled train and eval steps of one model."""

    def __init__(self, model: CellLanguageModel, config: TrainConfig):
        self.model = model
        self.config = config
        self.optimizer = keras.optimizers.SGD(
            learning_rate=config.learning_rate, global_clipnorm=config.clip_norm
        )
        self.optimizer.build(model.trainable_variables)
        jit = config.jit_compile
        if jit is None:
            devices = tf.config.list_physical_devices
            jit = bool(devices("GPU") or devices("TPU"))
        self.train_step = tf.function(self._train_step, jit_compile=jit, reduce_retracing=True)
        self.eval_step = tf.function(self._eval_step, reduce_retracing=True)

    def _train_step(self, x, y, states):
        with tf.GradientTape() as tape:
            logits, new_states = self.model(x, states, training=True)
            loss = _loss(logits, y)
        variables = self.model.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return loss, new_states

    def _eval_step(self, x, y, states):
        logits, new_states = self.model(x, states, training=False)
        return _loss(logits, y), new_states


def compiled_train_step(model: CellLanguageModel, config: TrainConfig = TrainConfig()) -> Callable:
    """The compiled training step of `train_language_model`, with its own optimiser.

    For timing and custom loops: `step(x, y, states)` takes int32 tokens and
    targets [batch, time] and the states, applies one SGD update at
    `config.learning_rate` (clipped at `config.clip_norm`, XLA per
    `config.jit_compile`) and returns (mean loss, new states).
    """
    return _Trainer(model, config).train_step


def evaluate(
    model: CellLanguageModel,
    ids: np.ndarray,
    batch_size: int = 10,
    bptt_steps: int = 35,
    max_batches: Optional[int] = None,
    step_fn: Optional[Callable] = None,
) -> float:
    """Mean cross-entropy (nats per token) of `model` on a token stream.

    The stream is cut into contiguous rows and read left to right with the
    state carried across windows; perplexity is exp of the result.
    """
    rows = ptb.batchify(ids, batch_size)
    if step_fn is None:

        @tf.function(reduce_retracing=True)
        def step_fn(x, y, states):
            logits, new_states = model(x, states, training=False)
            return _loss(logits, y), new_states

    states = model.initial_states(batch_size)
    total, count = 0.0, 0
    for i, (x, y) in enumerate(ptb.bptt_windows(rows, bptt_steps)):
        if max_batches is not None and i >= max_batches:
            break
        loss, states = step_fn(tf.constant(x), tf.constant(y), states)
        total += float(loss) * y.size
        count += y.size
    return total / count


def train_language_model(
    description: Optional[cell_space.CellDescription],
    data: ptb.LMData,
    model_config: LanguageModelConfig = LanguageModelConfig(),
    train_config: TrainConfig = TrainConfig(),
    on_epoch_end: Optional[Callable[[int, float], None]] = None,
    keep_model: bool = True,
    restore_best: bool = False,
) -> LanguageModelResult:
    """Trains one child on `data` and measures its validation perplexity.

    Args:
      description: the cell; None when `model_config.cell` is "lstm".
      data: token ids (`nas_tf.data.ptb.load` or `nas_tf.data.text_corpus.load`).
      model_config: the model's shape.
      train_config: the training schedule.
      on_epoch_end: called with (epoch, validation perplexity) after each epoch.
      keep_model: return the trained model in the result.
      restore_best: end with the weights of the epoch of lowest validation
        perplexity rather than the last epoch's (for a final model).

    Returns:
      A `LanguageModelResult` (metrics only; the reward, c / best_val_perplexity^2,
      is `nas_tf.rewards.ptb_reward`).

    Raises:
      ChildDivergedError: if a training loss or the validation loss is not
        finite (a `ChildTrainingError` with reason "nan").
      ChildTrainingError: with reason "oom" when memory runs out.
      ValueError: if the data is too short for one batch.
    """
    try:
        return _train(
            description, data, model_config, train_config, on_epoch_end, keep_model, restore_best
        )
    except tf.errors.ResourceExhaustedError as e:
        message = str(e).splitlines()[0] if str(e) else "out of memory"
        raise ChildTrainingError("oom", message) from e


def _train(description, data, model_config, train_config, on_epoch_end, keep_model, restore_best):
    start = time.time()
    model = build_model(description, data.vocab_size, model_config, seed=train_config.seed)
    trainer = _Trainer(model, train_config)
    c = train_config
    rows = ptb.batchify(data.train, c.batch_size)
    val_ppls, train_losses, best_loss = [], [], math.inf
    best_epoch, best_weights, step_seconds = 0, None, []
    for epoch in range(c.epochs):
        trainer.optimizer.learning_rate.assign(c.learning_rate_at(epoch))
        states = model.initial_states(c.batch_size)
        total, n = 0.0, 0
        # Full windows only, so the compiled step keeps one shape.
        for i, (x, y) in enumerate(ptb.bptt_windows(rows, c.bptt_steps, drop_remainder=True)):
            if c.max_train_batches is not None and i >= c.max_train_batches:
                break
            tick = time.perf_counter()
            loss, states = trainer.train_step(tf.constant(x), tf.constant(y), states)
            loss = float(loss)  # Waits for the step, so the time below is the step's.
            step_seconds.append(time.perf_counter() - tick)
            if not math.isfinite(loss):
                raise ChildDivergedError(
                    f"Training loss is {loss} at epoch {epoch}, batch {i}: the cell diverged."
                )
            total, n = total + loss, n + 1
        if n == 0:
            raise ValueError(
                f"No training batch: {len(data.train)} tokens are too few for batch "
                f"{c.batch_size} x {c.bptt_steps} steps."
            )
        train_losses.append(total / n)
        val_loss = evaluate(
            model, data.valid, c.eval_batch_size, c.bptt_steps, c.max_eval_batches,
            trainer.eval_step,
        )  # fmt: skip
        if not math.isfinite(val_loss) or val_loss > 700:  # exp(700) overflows a float.
            raise ChildDivergedError(f"Validation loss is {val_loss} after epoch {epoch}.")
        val_ppls.append(math.exp(val_loss))
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
            if restore_best and epoch < c.epochs - 1:
                best_weights = model.get_weights()
            else:
                best_weights = None
        if on_epoch_end is not None:
            on_epoch_end(epoch, val_ppls[-1])
    if best_weights is not None:
        model.set_weights(best_weights)
    best = math.exp(best_loss)
    return LanguageModelResult(
        val_perplexities=val_ppls,
        best_val_perplexity=best,
        bits_per_token=best_loss / math.log(2),
        train_losses=train_losses,
        num_parameters=int(sum(np.prod(v.shape) for v in model.trainable_variables)),
        seconds=time.time() - start,
        model=model if keep_model else None,
        step_ms=1000 * float(np.median(step_seconds[1:])) if len(step_seconds) > 1 else None,
        best_epoch=best_epoch,
    )
