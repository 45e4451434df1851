"""Trains the language-model child (`nas_tf.children.language_model`) and measures it.

Zoph & Le 2017, sec. 4.2 trains every child 35 epochs; the other settings
are Zaremba et al. 2014's medium setup (batch 20, 35 unrolled steps, SGD at
learning rate 1, gradient norm clipped at 5) with TensorFlow's PTB tutorial's
decay (x0.8 per epoch after epoch 6; Zaremba et al. divide by 1.2); Adam
(`TrainConfig.optimizer`) is the other choice, under the same clipping and
schedule. Training is truncated back-propagation through time over contiguous
batches (`nas_tf.data.ptb.batchify`) with the state carried from batch to
batch, in a custom loop around one `tf.function` step run through the
placement's strategy (`strategy.run`). Every training window is full
(`drop_remainder`), so the compiled step keeps one shape. A loss that stops
being finite raises `ChildDivergedError`.

Placement (`nas_tf.children.base`): mixed precision is honoured (float16 with
a `LossScaleOptimizer`, whose scaled loss and unscaled gradients the step
uses; bfloat16 on a TPU). The state carried across batches belongs to one
device, so the child trains on one replica: `distribution="default"` only;
"mirrored" and "tpu" are refused with a clear error (`TrainConfig`).
"""

import dataclasses
import math
import time
from typing import Callable, List, Optional

import keras
import numpy as np
import tensorflow as tf

from nas_tf.children import base
from nas_tf.children.base import ChildDivergedError
from nas_tf.children.language_model import (
    CellLanguageModel,
    LanguageModelConfig,
    build_model,
)
from nas_tf.data import ptb
from nas_tf.spaces import cell as cell_space


# The optimizers a child can train with: Keras's class of each.
OPTIMIZERS = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How a child is trained.

    Attributes:
      epochs: passes over the training data (35: sec. 4.2).
      batch_size: contiguous rows per batch (20: Zaremba et al.).
      bptt_steps: unrolled steps per batch (35: Zaremba et al.).
      eval_batch_size: rows when measuring perplexity.
      learning_rate: initial learning rate (1.0: Zaremba et al.'s SGD; Adam
        wants far less, e.g. 2e-3).
      lr_decay: factor applied per epoch once `lr_decay_after` epochs are done
        (0.8 after 6: TensorFlow's PTB tutorial, medium; Zaremba et al. use 1/1.2).
      lr_decay_after: epochs at the full learning rate.
      clip_norm: global gradient-norm clipping (5: Zaremba et al.).
      max_train_batches: stop each epoch after this many batches (None: all);
        for quick CPU searches.
      max_eval_batches: measure validation perplexity on this many batches
        (None: all).
      jit_compile: compile the training step with XLA. None: on when a GPU
        or TPU is visible (on CPU, XLA was measured slower for small models).
      seed: seeds weights and dropout.
      mixed_precision: float16 compute on a GPU (loss-scaled), bfloat16
        elsewhere; variables stay float32.
      distribution: "default" only (see the module doc); "mirrored" and
        "tpu" raise ValueError, naming the flag.
      optimizer: "sgd" (plain SGD, Zaremba et al.) or "adam" (Keras's Adam
        with its default betas and epsilon); either is clipped at
        `clip_norm` and follows `learning_rate_at`.
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
    mixed_precision: bool = False
    distribution: str = "default"
    optimizer: str = "sgd"

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"Unknown optimizer {self.optimizer!r}; choose one of {list(OPTIMIZERS)}."
            )
        if self.distribution not in base.DISTRIBUTIONS:
            raise ValueError(
                f"Unknown distribution {self.distribution!r}; choose one of {list(base.DISTRIBUTIONS)}."
            )
        if self.distribution != "default":
            raise ValueError(
                f"--child_distribution={self.distribution}: language-model children carry their "
                "recurrent state from batch to batch on one device and train on one replica; "
                "pass --child_distribution=default (one GPU each; run more workers with "
                "nas_tf.launch to use more GPUs)."
            )
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

    def make_optimizer(self) -> keras.optimizers.Optimizer:
        """A fresh Keras optimizer of `optimizer` at `learning_rate`, clipped at `clip_norm`.

        The training loop sets its learning rate each epoch (`learning_rate_at`).
        """
        return OPTIMIZERS[self.optimizer](
            learning_rate=self.learning_rate, global_clipnorm=self.clip_norm
        )


@dataclasses.dataclass
class LanguageModelResult(base.TrainedChild):
    """What training one child gave.

    Attributes:
      val_perplexities: validation perplexity after each epoch.
      best_val_perplexity: the lowest of them; the reward uses it (the paper
        does not say which epoch counts).
      bits_per_token: validation log2-loss per token at the best epoch (bits
        per character for character-level data, as the paper reports).
      train_losses: mean training cross-entropy (nats) per epoch.
      num_params (inherited): trainable parameters of the model.
      train_seconds (inherited): wall time of training and evaluation.
      model (inherited): the trained `CellLanguageModel` (its last-epoch
        weights, or the best epoch's with `restore_best`).
      step_ms: median wall time of one training step in milliseconds, the
        first step (which traces and compiles) left out; None if there was
        only one step.
      best_epoch: 0-based epoch of `best_val_perplexity`.
    """

    val_perplexities: List[float]
    best_val_perplexity: float
    bits_per_token: float
    train_losses: List[float]
    step_ms: Optional[float] = None
    best_epoch: int = 0


def _loss(logits, targets):
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    )


def placement_of(config: TrainConfig) -> base.Placement:
    """Where and in what precision a child of `config` trains."""
    return base.placement(config.distribution, None, config.mixed_precision)


class _Trainer:
    """The compiled train and eval steps of one model, run through its placement's strategy.

    Under float16 the optimizer is a `LossScaleOptimizer`: the step takes
    gradients of its scaled loss, and `apply_gradients` unscales them (and
    skips a step whose gradients overflowed, lowering the scale).
    """

    def __init__(
        self,
        model: CellLanguageModel,
        config: TrainConfig,
        placement: Optional[base.Placement] = None,
    ):
        self.model = model
        self.config = config
        self.placement = placement or base.Placement(tf.distribute.get_strategy())
        with self.placement.scope():
            self.optimizer = self.placement.optimizer(config.make_optimizer())
            self.optimizer.build(model.trainable_variables)
        jit = base.resolve_xla(config.jit_compile)
        self._train_fn = tf.function(self._run_train, jit_compile=jit, reduce_retracing=True)
        self.eval_step = tf.function(self._eval_step, reduce_retracing=True)

    def train_step(self, x, y, states):
        return self._train_fn(x, y, states)

    def _run_train(self, x, y, states):
        return self.placement.strategy.run(self._train_step, args=(x, y, states))

    def _train_step(self, x, y, states):
        with tf.GradientTape() as tape:
            logits, new_states = self.model(x, states, training=True)
            loss = _loss(logits, y)
            scaled = self.optimizer.scale_loss(loss)
        variables = self.model.trainable_variables
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return loss, new_states

    def _eval_step(self, x, y, states):
        logits, new_states = self.model(x, states, training=False)
        return _loss(logits, y), new_states


def compiled_train_step(model: CellLanguageModel, config: TrainConfig = TrainConfig()) -> Callable:
    """The compiled training step of `train_language_model`, with its own optimiser.

    For timing and custom loops: `step(x, y, states)` takes int32 tokens and
    targets [batch, time] and the states, applies one update of
    `config.optimizer` at `config.learning_rate` (clipped at `config.clip_norm`, XLA per
    `config.jit_compile`) and returns (mean loss, new states).
    """
    return _Trainer(model, config, placement_of(config)).train_step


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
    placement: Optional[base.Placement] = None,
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
      placement: where and in what precision (default: `placement_of(train_config)`).

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
            description, data, model_config, train_config, on_epoch_end, keep_model, restore_best,
            placement or placement_of(train_config),
        )  # fmt: skip
    except tf.errors.ResourceExhaustedError as e:
        raise base.oom_error(e) from e


def _train(
    description, data, model_config, train_config, on_epoch_end, keep_model, restore_best, where
):
    start = time.time()
    with where.scope():
        model = build_model(
            description, data.vocab_size, model_config, seed=train_config.seed,
            dtype_policy=where.policy,
        )  # fmt: skip
    trainer = _Trainer(model, train_config, where)
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
        num_params=int(sum(np.prod(v.shape) for v in model.trainable_variables)),
        train_seconds=time.time() - start,
        model=model if keep_model else None,
        step_ms=1000 * float(np.median(step_seconds[1:])) if len(step_seconds) > 1 else None,
        best_epoch=best_epoch,
    )
