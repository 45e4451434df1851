"""The CIFAR-10 convolutional search spaces and the depth curriculum.

Zoph & Le 2017, sec. 4.1: every layer is convolution + batch normalisation +
ReLU with skip connections. Per layer the controller predicts, in order,
filter height, filter width, (stride height, stride width when strides are
searched), number of filters, then the layer's anchor point.

A space is described by a `ConvSpaceSpec`: the decisions (its `space`) plus
the metadata the child builder needs that is not a decision (the max-pooling
positions of v3). Three named factories give the paper's variants:

* `cifar10_v1()`: 15 layers, no stride or pooling;
* `cifar10_v2()`: 20 layers, strides searched in {1, 2, 3};
* `cifar10_v3()`: 39 layers, max pooling after layers 13 and 24: the
  controller predicts 13 layers, each a densely connected block of 3
  convolutions, with 6, 12, 24 or 36 filters.

Sec. 4.1 on v3, as we read it (the paper's wording could not be checked
against its text here; the project's paper notes and issue 10 give the same
reading): two pooling layers at layers 13 and 24; to limit the space, the
controller predicts 13 layers, each a fully connected block of 3 layers; the
numbers of filters become 6, 12, 24, 36 instead of 24, 36, 48, 64. Where that
is ambiguous, this is what nas_tf chose (docs/conv.md says it too):

* a block's 3 convolutions share the predicted filter height, width and
  number; convolution k of a block takes the block's inputs (the earlier
  blocks its anchor selects, or the image) and the block's convolutions
  before k, concatenated (DenseNet's dense connectivity); the block's output,
  what later anchors select and what goes to the classifier when nothing
  selects it, is its last convolution;
* "layer 13 and layer 24" count convolutions (there are 13 predicted layers
  only): the boundaries sit after convolutions 13 and 24 of 39, the first
  inside block 5 (after its first convolution), the second after block 8.
  Every tensor that crosses a boundary is max-pooled, inside a block too;
* the depth curriculum counts predicted layers (blocks): 6, +2 every 1,600
  architectures, reaches 13 blocks (39 convolutions) after 6,400 of the
  12,800 architectures.

`get_space(name, **overrides)` picks one by name, e.g. from a flag.
"""

import dataclasses
import functools
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from nas_tf import space as space_lib

# Zoph & Le 2017, sec. 4.1: filter height/width in {1, 3, 5, 7}, number of
# filters in {24, 36, 48, 64}, strides (when predicted) in {1, 2, 3}.
FILTER_SIZES = (1, 3, 5, 7)
NUM_FILTERS = (24, 36, 48, 64)
STRIDES = (1, 2, 3)
# Zoph & Le 2017, Table 1 and sec. 4.1: pooling "at layer 13 and layer 24" of 39
# convolutions; 13 predicted layers, each a densely connected block of 3
# convolutions, with 6, 12, 24 or 36 filters.
V3_POOL_AT = (13, 24)
V3_DEPTH = 39
V3_LAYERS = 13
V3_BLOCK_SIZE = 3
V3_NUM_FILTERS = (6, 12, 24, 36)


def _positive_ints(name: str, values) -> tuple:
    values = tuple(values)
    if not values:
        raise ValueError(f"{name} must not be empty.")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must hold positive integers; got {v!r} in {values}.")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} repeats a value: {values}.")
    return values


def layer_prefix(i: int) -> str:
    """Name prefix of the decisions of layer `i` (0-based): "layer_<i>/"."""
    return f"layer_{i}/"


def anchor_name(i: int) -> str:
    """Name of layer `i`'s anchor decision."""
    return f"layer_{i}/anchor"


@dataclasses.dataclass(frozen=True)
class ConvSpaceSpec:
    """A convolutional search space and the structure that is not searched.

    Attributes:
      name: the space's name ("cifar10_v1", ...).
      depth: the maximum number of convolutional layers.
      filter_sizes: allowed filter heights and widths.
      num_filters: allowed numbers of filters.
      strides: allowed stride heights and widths, or None (or ()) when strides
        are not searched (every convolution then has stride 1).
      pool_at: 1-based convolution numbers p after which a max-pooling
        boundary sits (between convolution p and p + 1). Fixed, not
        predicted. A boundary at or after the last convolution of a sampled
        network is ignored.
      block_size: convolutions per predicted layer (v3: 3), densely
        connected inside the block (see the module docstring); 1: each
        predicted layer is one convolution.
    """

    name: str
    depth: int
    filter_sizes: Tuple[int, ...] = FILTER_SIZES
    num_filters: Tuple[int, ...] = NUM_FILTERS
    strides: Optional[Tuple[int, ...]] = None
    pool_at: Tuple[int, ...] = ()
    block_size: int = 1

    def __post_init__(self):
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(
                f"Space {self.name!r}: depth must be a positive integer, got {self.depth!r}."
            )
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, int) or self.block_size < 1:
            raise ValueError(
                f"Space {self.name!r}: block_size must be a positive integer, got {self.block_size!r}."
            )
        object.__setattr__(self, "filter_sizes", _positive_ints("filter_sizes", self.filter_sizes))
        object.__setattr__(self, "num_filters", _positive_ints("num_filters", self.num_filters))
        if self.strides is not None and len(tuple(self.strides)) == 0:
            object.__setattr__(self, "strides", None)  # () also means "not searched".
        if self.strides is not None:
            object.__setattr__(self, "strides", _positive_ints("strides", self.strides))
        pool_at = tuple(sorted(_positive_ints("pool_at", self.pool_at))) if self.pool_at else ()
        for p in pool_at:
            if p >= self.num_convolutions():
                raise ValueError(
                    f"Space {self.name!r}: pool_at {p} must lie between layers, "
                    f"below {self.num_convolutions()} convolutions."
                )
        object.__setattr__(self, "pool_at", pool_at)

    @functools.cached_property
    def space(self) -> space_lib.Space:
        """The controller's `Space`: the decisions of every layer, in paper order."""
        decisions = []
        for i in range(self.depth):
            p, at_depth = layer_prefix(i), i + 1  # Layer i exists in networks of depth >= i + 1.
            kinds = [("filter_height", self.filter_sizes), ("filter_width", self.filter_sizes)]
            if self.strides is not None:
                kinds += [("stride_height", self.strides), ("stride_width", self.strides)]
            kinds.append(("num_filters", self.num_filters))
            for kind, values in kinds:
                decisions.append(
                    space_lib.Categorical(p + kind, values, kind=kind, min_depth=at_depth)
                )
            sources = tuple(anchor_name(j) for j in range(i))
            decisions.append(space_lib.Anchor(anchor_name(i), sources, min_depth=at_depth))
        return space_lib.Space(tuple(decisions), name=self.name)

    def num_convolutions(self, depth: Optional[int] = None) -> int:
        """Convolutions of a network of `depth` predicted layers (default: the maximum)."""
        return (self.depth if depth is None else depth) * self.block_size

    def pool_positions(self, depth: Optional[int] = None) -> Tuple[int, ...]:
        """The pooling boundaries active in a network of `depth` predicted layers.

        Args:
          depth: the sampled network's depth; defaults to the maximum.

        Returns:
          The 1-based convolution numbers p, below the network's number of
          convolutions, after which a max pool sits.
        """
        n = self.num_convolutions(depth)
        return tuple(p for p in self.pool_at if p < n)

    def to_config(self) -> Dict[str, Any]:
        """JSON-compatible description (see `from_config`)."""
        config = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "ConvSpaceSpec":
        config = dict(config)
        for key in ("filter_sizes", "num_filters", "pool_at"):
            if key in config:
                config[key] = tuple(config[key])
        if config.get("strides") is not None:
            config["strides"] = tuple(config["strides"])
        return cls(**config)


def _scaled_pools(convolutions: int) -> Tuple[int, ...]:
    """The v3 pooling positions scaled from 39 convolutions to `convolutions` (exact at 39)."""
    pools = {round(p * convolutions / V3_DEPTH) for p in V3_POOL_AT}
    return tuple(sorted(p for p in pools if 1 <= p < convolutions))


def cifar10_v1(depth: int = 15, filter_sizes=FILTER_SIZES, num_filters=NUM_FILTERS,
               strides=None, pool_at=()) -> ConvSpaceSpec:
    """Zoph & Le 2017, Table 1, v1: no stride or pooling (5.50% error).

    The default depth, 15, is that of the network the paper found, not a
    stated cap: its curriculum reaches 20 layers.
    """
    return ConvSpaceSpec("cifar10_v1", depth, filter_sizes, num_filters, strides, pool_at)


def cifar10_v2(depth: int = 20, filter_sizes=FILTER_SIZES, num_filters=NUM_FILTERS,
               strides=STRIDES, pool_at=()) -> ConvSpaceSpec:
    """Zoph & Le 2017, Table 1, v2: 20 layers, strides predicted in {1, 2, 3} (6.01%)."""
    return ConvSpaceSpec("cifar10_v2", depth, filter_sizes, num_filters, strides, pool_at)


def cifar10_v3(depth: int = V3_LAYERS, filter_sizes=FILTER_SIZES, num_filters=V3_NUM_FILTERS,
               strides=None, pool_at=None, block_size: int = V3_BLOCK_SIZE) -> ConvSpaceSpec:
    """Zoph & Le 2017, Table 1, v3: 39 layers, max pooling after layers 13 and 24 (4.47%).

    13 predicted layers, each a densely connected block of 3 convolutions,
    with 6, 12, 24 or 36 filters (sec. 4.1; the module docstring gives the
    reading). With `depth` or `block_size` overridden and `pool_at` left
    None, the paper's two positions are scaled to the number of convolutions
    n = depth * block_size (round(13 n / 39), round(24 n / 39)).
    """
    if pool_at is None:
        n = depth * block_size
        pool_at = V3_POOL_AT if n == V3_DEPTH else _scaled_pools(n)
    return ConvSpaceSpec(
        "cifar10_v3", depth, filter_sizes, num_filters, strides, pool_at, block_size
    )


SPACES: Dict[str, Callable[..., ConvSpaceSpec]] = {
    "cifar10_v1": cifar10_v1,
    "cifar10_v2": cifar10_v2,
    "cifar10_v3": cifar10_v3,
}
_OVERRIDES = ("depth", "filter_sizes", "num_filters", "strides", "pool_at", "block_size")


def get_space(name: str, **overrides) -> ConvSpaceSpec:
    """The named space, with keyword overrides of its defaults.

    Args:
      name: one of `SPACES` ("cifar10_v1", "cifar10_v2", "cifar10_v3").
      **overrides: any of depth, filter_sizes, num_filters, strides (() turns
        the stride search off), pool_at (() turns pooling off), block_size
        (cifar10_v3 only). An override
        given as None keeps the space's default, so unset flags can be passed
        straight through.

    Raises:
      ValueError: naming the unknown space, the unknown override or the
        impossible value.
    """
    if name not in SPACES:
        raise ValueError(f"Unknown search space {name!r}; choose one of {sorted(SPACES)}.")
    unknown = sorted(set(overrides) - set(_OVERRIDES))
    if unknown:
        raise ValueError(
            f"Space {name!r} has no setting {unknown[0]!r}; the settings are {list(_OVERRIDES)}."
        )
    kwargs = {k: v for k, v in overrides.items() if v is not None}
    try:
        return SPACES[name](**kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"Space {name!r} with {kwargs}: {e}") from None


@dataclasses.dataclass(frozen=True)
class DepthCurriculum:
    """Zoph & Le 2017, sec. 4.1: start at 6 layers, add 2 every 1,600 architectures.

    Usable as `NASRLOracle(depth_schedule=...)`: called with the number of
    architectures sampled so far, it returns the depth of the next one.

    Attributes:
      start: depth of the first architectures.
      step: layers added at each stage.
      every: architectures sampled per stage.
      max_depth: the depth stops growing here (None: no cap; the oracle also
        caps at the space's maximum).
    """

    start: int = 6
    step: int = 2
    every: int = 1600
    max_depth: Optional[int] = None

    def __post_init__(self):
        if self.start < 1 or self.step < 0 or self.every < 1:
            raise ValueError(
                f"DepthCurriculum needs start >= 1, step >= 0, every >= 1; got {self}."
            )
        if self.max_depth is not None and self.max_depth < 1:
            raise ValueError(f"DepthCurriculum max_depth must be positive, got {self.max_depth}.")

    def __call__(self, num_sampled: int) -> int:
        if num_sampled < 0:
            raise ValueError(f"num_sampled must be >= 0, got {num_sampled}.")
        depth = self.start + self.step * (int(num_sampled) // self.every)
        return depth if self.max_depth is None else min(depth, self.max_depth)
