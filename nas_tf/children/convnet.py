"""CIFAR-10 children: a sampled architecture -> a Keras functional model.

Zoph & Le 2017, sec. 3.3 and 4.1. Every layer is Conv2D (padding "same") +
batch normalisation + ReLU. Its inputs are the earlier layers its anchor
selects, concatenated along depth, with the paper's three rules that keep every
sample buildable:

1. a layer with no input takes the image;
2. every layer output that feeds no later layer is concatenated into the final
   output, which goes to global average pooling and the softmax classifier;
3. inputs of different spatial size are zero-padded to the largest before the
   concatenation (centred; the extra pixel of an odd difference at the
   bottom/right).

Max pooling (v3) sits at fixed boundaries: a boundary after layer p (1-based)
max-pools (2x2, stride 2, "same"; the paper gives no size) every tensor that
crosses it, i.e. every input a layer after p takes from layer p or earlier
(the image included), and the dangling outputs on their way to the classifier.
So all feature maps past a boundary live at the reduced resolution, and rule 3
only pads what strides made smaller.
"""

import dataclasses
import time
from typing import Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from nas_tf import space as space_lib
from nas_tf.children import base
from nas_tf.children.base import ChildTrainingError  # noqa: F401 (the failure of every child)
from nas_tf.spaces import conv

# Common reproductions of Zoph & Le 2017 (DenseNet's child settings): SGD with
# Nesterov momentum 0.9, learning rate 0.1, weight decay 1e-4.
LEARNING_RATE = 0.1
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
POOL_SIZE = 2


@dataclasses.dataclass(frozen=True)
class ConvLayer:
    """One decoded layer of a child.

    Attributes:
      filter_height, filter_width, stride_height, stride_width, num_filters:
        the convolution.
      inputs: 0-based indices of the earlier layers that feed this one
        (empty: the image; -1 names the image beside other layers, inside a
        dense block whose input is the image).
      stage: number of pooling boundaries before this layer.
    """

    filter_height: int
    filter_width: int
    stride_height: int
    stride_width: int
    num_filters: int
    inputs: Tuple[int, ...]
    stage: int


def decode(arch: space_lib.Architecture, spec: conv.ConvSpaceSpec) -> List[ConvLayer]:
    """Validates `arch` against `spec` and lists its convolutions.

    A predicted layer is `spec.block_size` convolutions (v3: a densely
    connected block of 3, `nas_tf.spaces.conv`): convolution k of a block
    takes the block's inputs and the block's convolutions before k; the
    block's last convolution is its output.

    Raises:
      ArchitectureError: if `arch` is not a point of the space.
    """
    arch = spec.space.validate(arch)
    pools = spec.pool_positions(arch.depth)
    block = spec.block_size
    layers = []
    for i in range(arch.depth):
        p = conv.layer_prefix(i)
        strided = spec.strides is not None
        flags = arch[conv.anchor_name(i)]
        sources = tuple(block * j + block - 1 for j, f in enumerate(flags) if f)
        for k in range(block):
            index = block * i + k
            inside = tuple(range(block * i, index))  # The block's earlier convolutions.
            layers.append(
                ConvLayer(
                    filter_height=arch[p + "filter_height"],
                    filter_width=arch[p + "filter_width"],
                    stride_height=arch[p + "stride_height"] if strided else 1,
                    stride_width=arch[p + "stride_width"] if strided else 1,
                    num_filters=arch[p + "num_filters"],
                    inputs=(sources or ((-1,) if inside else ())) + inside,
                    stage=sum(1 for q in pools if q <= index),  # Boundary q lies before index q.
                )
            )
    return layers


def dangling(layers: Sequence[ConvLayer]) -> Tuple[int, ...]:
    """Indices of the layers whose output feeds no later layer (the last included)."""
    used = {j for layer in layers for j in layer.inputs}
    return tuple(i for i in range(len(layers)) if i not in used)


def _pad_and_concat(tensors, name: str):
    """Rule 3: zero-pads to the largest height and width, then concatenates."""
    if len(tensors) == 1:
        return tensors[0]
    height = max(t.shape[1] for t in tensors)
    width = max(t.shape[2] for t in tensors)
    padded = []
    for k, t in enumerate(tensors):
        dh, dw = height - t.shape[1], width - t.shape[2]
        if dh or dw:
            pads = ((dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2))
            t = keras.layers.ZeroPadding2D(pads, name=f"{name}_pad{k}")(t)
        padded.append(t)
    return keras.layers.Concatenate(axis=-1, name=f"{name}_concat")(padded)


def build_convnet(
    arch: space_lib.Architecture,
    spec: conv.ConvSpaceSpec,
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    weight_decay: float = WEIGHT_DECAY,
    pool_size: int = POOL_SIZE,
    dtype_policy: Optional[str] = None,
    name: str = "child",
) -> keras.Model:
    """Builds the child network of `arch` (functional API; outputs logits).

    Args:
      arch: an architecture of `spec.space`.
      spec: the space, with its pooling positions.
      input_shape: HWC shape of the images.
      num_classes: classifier width.
      weight_decay: SGD weight decay on every kernel, as DenseNet's optimiser
        applies it (gradient += weight_decay * w), i.e. an L2 penalty of
        weight_decay / 2 * sum(w^2). 0 turns it off.
      pool_size: size and stride of the max pools at `spec.pool_at`.
      dtype_policy: a Keras dtype policy for the layers (e.g.
        "mixed_float16"); the logits stay float32.
      name: the model's name.

    Returns:
      An uncompiled `keras.Model` from images to logits.

    Raises:
      ArchitectureError: if `arch` is not a point of the space.
    """
    layers = decode(arch, spec)
    reg = keras.regularizers.L2(weight_decay / 2) if weight_decay else None
    policy = {"dtype": dtype_policy} if dtype_policy else {}
    image = keras.Input(tuple(input_shape), name="image")
    outputs: List = []
    pooled: Dict[Tuple[int, int], object] = {}  # (producer, stage) -> tensor at that stage.

    def at_stage(producer: int, stage: int):
        """The output of `producer` (-1: the image), max-pooled up to `stage`."""
        start = 0 if producer < 0 else layers[producer].stage
        tensor = image if producer < 0 else outputs[producer]
        for s in range(start + 1, stage + 1):
            key = (producer, s)
            if key not in pooled:
                src = "image" if producer < 0 else f"layer_{producer}"
                pooled[key] = keras.layers.MaxPooling2D(
                    pool_size, pool_size, padding="same", name=f"{src}_pool{s}", **policy
                )(tensor)
            tensor = pooled[key]
        return tensor

    for i, layer in enumerate(layers):
        # Rule 1: a layer with no input takes the image.
        sources = layer.inputs or (-1,)
        x = _pad_and_concat([at_stage(j, layer.stage) for j in sources], f"layer_{i}")
        x = keras.layers.Conv2D(
            layer.num_filters,
            (layer.filter_height, layer.filter_width),
            strides=(layer.stride_height, layer.stride_width),
            padding="same",
            use_bias=False,  # Batch normalisation supplies the shift.
            kernel_regularizer=reg,
            name=f"layer_{i}_conv",
            **policy,
        )(x)
        x = keras.layers.BatchNormalization(name=f"layer_{i}_bn", **policy)(x)
        outputs.append(keras.layers.ReLU(name=f"layer_{i}_relu", **policy)(x))

    # Rule 2: every output that feeds no later layer goes to the classifier.
    final_stage = layers[-1].stage  # Boundaries after the last convolution are ignored.
    x = _pad_and_concat([at_stage(j, final_stage) for j in dangling(layers)], "final")
    x = keras.layers.GlobalAveragePooling2D(name="global_pool", **policy)(x)
    logits = keras.layers.Dense(
        num_classes, kernel_regularizer=reg, dtype="float32", name="logits"
    )(x)
    return keras.Model(image, logits, name=name)


def compile_child(
    model: keras.Model,
    learning_rate=LEARNING_RATE,
    momentum: float = MOMENTUM,
    nesterov: bool = True,
    jit_compile: Optional[bool] = None,
    placement: Optional[base.Placement] = None,
    steps_per_execution: int = 1,
) -> keras.Model:
    """Compiles a child with SGD + Nesterov momentum and sparse cross-entropy.

    Mixed precision is chosen when building (`build_convnet(dtype_policy=)`);
    under float16 the optimizer is wrapped in a `LossScaleOptimizer` here
    (Keras would scale the loss itself only for a model whose own policy is
    float16; a child's layers carry the policy, its model does not).

    Args:
      model: a model from `build_convnet` (it outputs logits).
      learning_rate: a float or a `keras.optimizers.schedules` schedule.
      momentum, nesterov: the SGD momentum.
      jit_compile: XLA; None means on with a GPU or TPU, off on CPU (where it
        was measured slower; see docs/conv.md).
      placement: the child's `base.Placement` (its policy decides loss
        scaling); None: float32 on the default device.
      steps_per_execution: training steps per compiled call (fewer host
        round trips on accelerators; see docs/distributed.md).

    Returns:
      `model`, compiled, with metric "accuracy" (sample-weighted, so padded
      validation batches measure the real images only).
    """
    optimizer = keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=nesterov)
    if placement is not None:
        optimizer = placement.optimizer(optimizer)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        # Weighted: padded validation images (weight 0) do not count. Without
        # weights (training) it is plain accuracy.
        weighted_metrics=["accuracy"],
        jit_compile=base.resolve_xla(jit_compile),
        steps_per_execution=steps_per_execution,
    )
    return model


@dataclasses.dataclass(frozen=True)
class ChildConfig:
    """How a child is trained.

    Attributes:
      epochs: training epochs (Zoph & Le 2017, sec. 4.1: 50).
      batch_size: images per step (not given in the paper; DenseNet's 64).
      learning_rate, momentum, nesterov, weight_decay: SGD settings
        (DenseNet's, as common reproductions use them: 0.1, 0.9, Nesterov, 1e-4).
      lr_decay_at: fractions of `epochs` after which the learning rate is
        divided by 10 (DenseNet: 50% and 75%); () keeps it constant.
      jit_compile: XLA; None chooses (on with an accelerator).
      mixed_precision: float16 (GPU) or bfloat16 (TPU, CPU) compute.
      reward_epochs: the reward is the max validation accuracy over this many
        last epochs, cubed (sec. 4.1: 5).
      reward_power: the exponent of that reward (sec. 4.1: 3). 1 makes the
        reward the accuracy itself, so that the controller's moving-average
        baseline is the average of previous accuracies, the form sec. 3.2
        states.
      seed: shuffling seed of the training data (None: unseeded).
      distribution: "default", "mirrored" (all local GPUs) or "tpu" (see
        `nas_tf.children.base.strategy`).
      tpu: the TPU name or address for distribution "tpu".
      static_shapes: every training and validation batch has `batch_size`
        images (the last training batch dropped, the last validation batch
        padded with weight-0 images), so the compiled step keeps one shape
        (XLA compiles once; required on TPUs).
      steps_per_execution: training steps per compiled call (Keras); more
        cuts host round trips on accelerators. 1 is Keras's default; its gain
        can only be measured on a device (see docs/distributed.md).
    """

    epochs: int = 50
    batch_size: int = 64
    learning_rate: float = LEARNING_RATE
    momentum: float = MOMENTUM
    nesterov: bool = True
    weight_decay: float = WEIGHT_DECAY
    lr_decay_at: Tuple[float, ...] = (0.5, 0.75)
    jit_compile: Optional[bool] = None
    mixed_precision: bool = False
    reward_epochs: int = 5
    reward_power: float = 3.0
    seed: Optional[int] = None
    distribution: str = "default"
    tpu: Optional[str] = None
    static_shapes: bool = True
    steps_per_execution: int = 1

    def __post_init__(self):
        object.__setattr__(self, "lr_decay_at", tuple(self.lr_decay_at))
        if self.epochs < 1 or self.batch_size < 1 or self.reward_epochs < 1:
            raise ValueError("epochs, batch_size and reward_epochs must be positive.")
        if not self.reward_power > 0:
            raise ValueError(f"reward_power must be positive, got {self.reward_power}.")
        if self.learning_rate <= 0 or not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ValueError(f"Impossible SGD settings in {self}.")
        if self.distribution not in base.DISTRIBUTIONS:
            raise ValueError(
                f"Unknown distribution {self.distribution!r}; choose one of {list(base.DISTRIBUTIONS)}."
            )
        if not isinstance(self.steps_per_execution, int) or self.steps_per_execution < 1:
            raise ValueError(
                f"steps_per_execution must be a positive integer, got {self.steps_per_execution!r}."
            )
        if any(not 0 < f < 1 for f in self.lr_decay_at):
            raise ValueError(f"lr_decay_at must be fractions in (0, 1), got {self.lr_decay_at}.")

    def learning_rate_schedule(self, steps_per_epoch: int):
        """The learning rate: constant, or divided by 10 at each `lr_decay_at`."""
        if not self.lr_decay_at:
            return self.learning_rate
        epochs = {max(1, round(f * self.epochs)) for f in self.lr_decay_at}
        bounds = sorted(e * steps_per_epoch for e in epochs)
        values = [self.learning_rate * 0.1**k for k in range(len(bounds) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(bounds, values)

    def placement(self, **strategy_kwargs) -> base.Placement:
        """Where and in what precision the child trains (`base.placement`)."""
        return base.placement(self.distribution, self.tpu, self.mixed_precision, **strategy_kwargs)


@dataclasses.dataclass
class ChildResult(base.TrainedChild):
    """What training one child produced (with `num_params`, `train_seconds`, `model`).

    Attributes:
      val_accuracy: validation accuracy per epoch.
      val_loss, train_loss, train_accuracy: per epoch.
      images_per_second: training images per second of `fit` wall time
        (validation passes and compilation included).
    """

    val_accuracy: List[float]
    val_loss: List[float]
    train_loss: List[float]
    train_accuracy: List[float]
    images_per_second: float


class _RaiseOnNaN(keras.callbacks.Callback):
    """Ends training with `ChildTrainingError("nan")` once an epoch's loss is not finite."""

    def on_epoch_end(self, epoch, logs=None):
        for key in ("loss", "val_loss"):
            value = (logs or {}).get(key)
            if value is not None and not np.isfinite(float(value)):
                raise ChildTrainingError("nan", f"{key} is {float(value)} after epoch {epoch + 1}.")


def fit_child(
    model: keras.Model,
    data,
    config: ChildConfig = ChildConfig(),
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 0,
) -> ChildResult:
    """Trains a compiled child on `data` and scores it.

    Args:
      model: a compiled child.
      data: a `nas_tf.data.ImageData`.
      config: epochs, batch size, reward window, seed.
      callbacks: extra Keras callbacks (e.g. Keras Tuner's).
      verbose: Keras `fit` verbosity.

    Raises:
      ChildTrainingError: "nan" or "oom".
    """
    start = time.perf_counter()
    static = config.static_shapes
    try:
        history = model.fit(
            data.train_dataset(config.batch_size, seed=config.seed, static=static),
            validation_data=data.valid_dataset(config.batch_size, static=static),
            epochs=config.epochs,
            callbacks=[_RaiseOnNaN(), *callbacks],
            shuffle=False,  # The training dataset shuffles itself.
            verbose=verbose,
        )
    except tf.errors.ResourceExhaustedError as e:
        raise base.oom_error(e) from e
    seconds = time.perf_counter() - start
    h = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    return ChildResult(
        val_accuracy=h["val_accuracy"],
        val_loss=h["val_loss"],
        train_loss=h["loss"],
        train_accuracy=h["accuracy"],
        num_params=int(model.count_params()),
        train_seconds=seconds,
        images_per_second=_images_per_epoch(data.num_train, config) * config.epochs / seconds,
        model=model,
    )


def _images_per_epoch(num_train: int, config: ChildConfig) -> int:
    """Training images seen per epoch (full batches only with static shapes)."""
    if config.static_shapes and num_train >= config.batch_size:
        return num_train - num_train % config.batch_size
    return num_train


def train_child(
    arch: space_lib.Architecture,
    spec: conv.ConvSpaceSpec,
    data,
    config: ChildConfig = ChildConfig(),
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 0,
    placement: Optional[base.Placement] = None,
) -> ChildResult:
    """Builds, compiles and trains the child of `arch` on `data`.

    Args:
      arch: an architecture of `spec.space`.
      spec: its space.
      data: a `nas_tf.data.ImageData` (input shape and classes come from it).
      config: the training settings (paper defaults).
      callbacks, verbose: passed to `fit`.
      placement: where and in what precision (default: `config.placement()`).

    Returns:
      A `ChildResult`: metrics only. The reward is computed from them by
      `nas_tf.rewards.cifar10_reward` (in the task and the oracle alike).

    Raises:
      ArchitectureError: if `arch` is not a point of the space.
      ChildTrainingError: "build" (Keras or TensorFlow rejected the model's
        shapes or values), "nan" or "oom". A trial that raises it should
        count as failed. Any other error (a bug, a missing file) propagates.
    """
    spec.space.validate(arch)  # Outside the space: the caller's error, not the child's.
    where = placement or config.placement()
    try:
        with where.scope():
            model = build_convnet(
                arch, spec, data.input_shape, data.num_classes,
                weight_decay=config.weight_decay, dtype_policy=where.policy,
            )  # fmt: skip
            steps = -(-_images_per_epoch(data.num_train, config) // config.batch_size)
            compile_child(
                model, config.learning_rate_schedule(steps), config.momentum,
                config.nesterov, config.jit_compile, where, config.steps_per_execution,
            )  # fmt: skip
    except tf.errors.ResourceExhaustedError as e:
        raise base.oom_error(e) from e
    except space_lib.ArchitectureError:
        raise
    except (ValueError, tf.errors.InvalidArgumentError) as e:
        # Impossible shapes or values: this child cannot exist. Bugs (TypeError,
        # AttributeError, KeyError, ...) are not caught: they must stop the search.
        raise ChildTrainingError("build", f"{type(e).__name__}: {e}") from e
    return fit_child(model, data, config, callbacks, verbose)
