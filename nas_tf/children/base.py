"""What every child family shares: its failure type, its result record, and where it trains.

Both families (convolutional image classifiers, `convnet`; recurrent-cell
language models, `language_model` + `lm_trainer`) raise `ChildTrainingError`
for a child's own failure, return a `TrainedChild` record, and train under a
`Placement`: the distribution strategy and the dtype policy chosen once from
the same settings (`--child_distribution`, `--tpu`, `--child_mixed_precision`).

* Accelerators are detected in one place (`accelerators`), from TensorFlow's
  logical devices (what a strategy can place work on).
* Mixed precision: float16 on a GPU, with real loss scaling (`Placement.optimizer`
  wraps the optimizer in `keras.optimizers.LossScaleOptimizer`: Keras scales a
  model's loss only when the model itself carries the float16 policy, and a
  child's layers carry it, not the model); bfloat16 on a TPU (and on a CPU,
  for tests), which needs no loss scaling.
* `--child_distribution=tpu` with no TPU to reach fails fast
  (`check_distribution`), before any child starts, with what to pass.

A TPU system is initialised once per process (children train in a worker
process, which owns the TPU while it lives; the search process never touches
it).
"""

import dataclasses
import os
from typing import Callable, Dict, Optional

import keras
import tensorflow as tf

DISTRIBUTIONS = ("default", "mirrored", "tpu")
# Where a TPU VM's chips appear, and the variable Cloud TPU tooling sets.
_TPU_DEVICES = ("/dev/accel0", "/dev/vfio/0")
TPU_NAME_ENV = "TPU_NAME"


class ChildTrainingError(RuntimeError):
    """A child could not be built or trained; the trial should count as failed.

    Attributes:
      reason: "build" (the architecture gave no model), "nan" (the loss became
        NaN or infinite), "oom" (the accelerator ran out of memory).
    """

    def __init__(self, reason: str, message: str):
        super().__init__(f"Child {reason} failure: {message}")
        self.reason = reason

    def __reduce__(self):
        # Crosses process boundaries (children train in worker processes), for
        # subclasses with other constructor signatures too.
        return (_restore_error, (type(self), self.args, self.__dict__))


def _restore_error(cls, args, state):
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class ChildDivergedError(ChildTrainingError):
    """The loss became NaN or infinite (`reason` "nan")."""

    def __init__(self, message: str):
        super().__init__("nan", message)


def oom_error(error: Exception) -> ChildTrainingError:
    """The child failure for an out-of-memory error (its first line as the message)."""
    return ChildTrainingError("oom", str(error).splitlines()[0] if str(error) else "out of memory")


@dataclasses.dataclass(kw_only=True)
class TrainedChild:
    """What every trained child reports; each family adds its own figures.

    Attributes:
      num_params: the model's parameter count.
      train_seconds: wall time of training (compilation and evaluation included).
      model: the trained model (not in `to_dict`).
    """

    num_params: int
    train_seconds: float
    model: Optional[keras.Model] = dataclasses.field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        """The figures, JSON-compatible (the model left out)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        del out["model"]
        return out


# -- accelerators ---------------------------------------------------------------


def accelerators() -> Dict[str, int]:
    """Visible accelerators by kind ("GPU", "TPU"), from TensorFlow's logical devices."""
    found = {kind: len(tf.config.list_logical_devices(kind)) for kind in ("GPU", "TPU")}
    return {kind: n for kind, n in found.items() if n}


def devices_in_words() -> str:
    """The devices TensorFlow computes on: "the CPU (no GPU found)", "1 GPU (...)"."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "the CPU (no GPU found)"
    names = []
    for gpu in gpus:
        try:
            names.append(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))
        except (ValueError, RuntimeError):
            names.append(gpu.name)
    return f"{len(gpus)} GPU{'s' if len(gpus) > 1 else ''} ({', '.join(sorted(set(names)))})"


def accelerator_present() -> bool:
    """Whether a GPU or TPU is visible to TensorFlow."""
    return bool(accelerators())


def resolve_xla(jit_compile: Optional[bool]) -> bool:
    """XLA setting: None means on with a GPU or TPU and off on CPU (measured slower there)."""
    return accelerator_present() if jit_compile is None else bool(jit_compile)


# -- distribution and precision -------------------------------------------------


def _on_tpu_vm() -> bool:
    return any(os.path.exists(path) for path in _TPU_DEVICES)


def check_distribution(kind: str, tpu: Optional[str] = None) -> None:
    """Fails fast, without touching any device, when `kind` cannot work here.

    Raises:
      ValueError: for an unknown kind, or for "tpu" with no TPU named (`tpu`
        or `TPU_NAME`) and no TPU VM's chips on this host, saying what to pass.
    """
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"Unknown distribution {kind!r}; choose one of {list(DISTRIBUTIONS)}.")
    if kind == "tpu" and not (tpu or os.environ.get(TPU_NAME_ENV) or _on_tpu_vm()):
        raise ValueError(
            "--child_distribution=tpu: no TPU to reach from this host (no --tpu given, "
            f"{TPU_NAME_ENV} unset, and this is not a TPU VM). Pass --tpu=NAME (the Cloud TPU's "
            "name or grpc://address) or run on a TPU VM; or choose --child_distribution="
            "default or mirrored for GPUs."
        )


def _connect_tpu(tpu: Optional[str]):
    """A TPU cluster resolver for `tpu`, connected and initialised."""
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return resolver


_TPU_STRATEGY = None


def strategy(
    kind: str = "default",
    tpu: Optional[str] = None,
    connect_tpu: Callable = _connect_tpu,
    tpu_strategy: Callable = tf.distribute.TPUStrategy,
) -> tf.distribute.Strategy:
    """The distribution strategy for `kind`.

    Args:
      kind: "default" (the default device: a GPU if there is one, else the
        CPU), "mirrored" (data parallel over every local GPU), or "tpu".
      tpu: for "tpu": the TPU name or grpc address ("" or None: the local TPU
        of a TPU VM, or the one named by `TPU_NAME`).
      connect_tpu, tpu_strategy: how a TPU is reached and wrapped (tests pass
        stand-ins; the TPU path is otherwise the same).

    Raises:
      ValueError: for an unknown kind, or when no TPU can be reached.
    """
    global _TPU_STRATEGY
    check_distribution(kind, tpu)
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if _TPU_STRATEGY is None:
        try:
            resolver = connect_tpu(tpu)
        except (ValueError, tf.errors.OpError) as e:
            raise ValueError(
                f"No TPU reachable at {tpu or 'the local host'!r}: {e}. Pass --tpu=NAME (the "
                "Cloud TPU's name or grpc://address) or run on a TPU VM."
            ) from e
        _TPU_STRATEGY = tpu_strategy(resolver)
    return _TPU_STRATEGY


def dtype_policy(mixed_precision: bool, on_tpu: bool = False) -> Optional[str]:
    """The Keras dtype policy: None (float32), "mixed_float16" on a GPU, else "mixed_bfloat16".

    bfloat16 is the TPU's native type and needs no loss scaling; a GPU gets
    float16 (with loss scaling, see `Placement.optimizer`).
    """
    if not mixed_precision:
        return None
    if not on_tpu and tf.config.list_logical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16"


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where and in what precision one child trains.

    Attributes:
      strategy: the `tf.distribute.Strategy` to build, compile and run under.
      policy: a Keras dtype policy name, or None for float32.
    """

    strategy: tf.distribute.Strategy
    policy: Optional[str] = None

    @property
    def loss_scaled(self) -> bool:
        """float16 needs loss scaling (its gradients underflow); bfloat16 does not."""
        return self.policy == "mixed_float16"

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    def scope(self):
        return self.strategy.scope()

    def optimizer(self, optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
        """`optimizer`, wrapped in a dynamic `LossScaleOptimizer` under float16."""
        if self.loss_scaled and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            return keras.optimizers.LossScaleOptimizer(optimizer)
        return optimizer


def placement(
    distribution: str = "default",
    tpu: Optional[str] = None,
    mixed_precision: bool = False,
    **strategy_kwargs,
) -> Placement:
    """The `Placement` of the child settings (`strategy_kwargs`: stand-ins for tests)."""
    chosen = strategy(distribution, tpu, **strategy_kwargs)
    return Placement(chosen, dtype_policy(mixed_precision, on_tpu=distribution == "tpu"))
