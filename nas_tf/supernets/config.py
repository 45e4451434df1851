"""The settings of a weight-sharing search (plain data: no TensorFlow here).

`SharedTraining` is how the shared weights train (ENAS's defaults: SGD with
Nesterov momentum 0.9, cosine learning rate 0.05 -> 0.0005, clipping at 5);
`SharedSearchConfig` is the loop around them (`nas_tf.supernets.search`).
A `nas_tf.SearchConfig` with `weight_sharing` set runs this loop instead of
the multi-trial search.
"""

import dataclasses
from typing import Optional

METHODS = ("controller", "random")
STATE = "shared_state.json"  # A weight-sharing search's position, in its output directory.


@dataclasses.dataclass(frozen=True)
class SharedTraining:
    """How the shared weights train.

    Attributes:
      learning_rate: the cosine schedule's start (ENAS: 0.05).
      min_learning_rate: its end (ENAS: 0.0005).
      total_steps: steps the cosine spans (one cycle; later steps keep the end).
      momentum: Nesterov momentum (ENAS: 0.9).
      clip_norm: global gradient-norm clipping (ENAS: 5.0); None: off.
      jit_compile: compile both steps with XLA (None: off; see `trainer.SharedWeights`).
    """

    learning_rate: float = 0.05
    min_learning_rate: float = 0.0005
    total_steps: int = 1000
    momentum: float = 0.9
    clip_norm: Optional[float] = 5.0
    jit_compile: Optional[bool] = None

    def __post_init__(self):
        if not (self.learning_rate > 0 and self.min_learning_rate >= 0):
            raise ValueError("SharedTraining: learning rates must be positive.")
        if self.total_steps < 1:
            raise ValueError(f"SharedTraining: total_steps must be >= 1, got {self.total_steps}.")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"SharedTraining: momentum must be in [0, 1), got {self.momentum}.")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"SharedTraining: clip_norm must be positive, got {self.clip_norm}.")



@dataclasses.dataclass(frozen=True)
class SharedSearchConfig:
    """The loop's settings (the shared weights' optimizer is `training`).

    Attributes:
      method: "controller" (the search algorithm's policy draws and learns)
        or "random" (random search with weight sharing, Li & Talwalkar 2019:
        uniform draws throughout, the best by shared-weight validation).
      epochs: epochs of the loop.
      steps_per_epoch: shared-weight steps per epoch (None: one pass over
        the training split).
      warmup_epochs: epochs of uniform architectures before the policy
        draws and learns (None: a quarter of `epochs`).
      controller_samples: proposals fed back per epoch.
      derive_samples: architectures ranked at the end.
      checkpoint_steps: also checkpoint every this many training steps
        (None: only at the phase ends).
      batch_size: training images (or windows) per step; also the size of
        the validation minibatch that rewards one controller sample.
      training: the shared weights' `SharedTraining` (its `total_steps` is
        replaced by the search's steps).
    """

    method: str = "controller"
    epochs: int = 20
    steps_per_epoch: Optional[int] = None
    warmup_epochs: Optional[int] = None
    controller_samples: int = 100
    derive_samples: int = 100
    checkpoint_steps: Optional[int] = None
    batch_size: int = 64
    training: SharedTraining = SharedTraining()

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}.")
        for name in ("epochs", "controller_samples", "derive_samples", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}.")
        if self.warmup_epochs is not None and self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}.")
        if self.checkpoint_steps is not None and self.checkpoint_steps < 1:
            raise ValueError(f"checkpoint_steps must be >= 1, got {self.checkpoint_steps}.")

    @property
    def warmup(self) -> int:
        return self.epochs // 4 if self.warmup_epochs is None else self.warmup_epochs


def shared_search_config(settings) -> SharedSearchConfig:
    """A `SharedSearchConfig` of a dict of its fields; "training.<field>" keys (or a
    "training" dict) set `SharedTraining`'s."""
    if isinstance(settings, SharedSearchConfig):
        return settings
    settings = dict(settings or {})
    training = dict(settings.pop("training", None) or {})
    for key in [k for k in settings if k.startswith("training.")]:
        training[key.split(".", 1)[1]] = settings.pop(key)
    try:
        return SharedSearchConfig(training=SharedTraining(**training), **settings)
    except TypeError as e:
        raise ValueError(f"weight_sharing: {e}") from None
