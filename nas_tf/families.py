"""The registry of space families: what a search space brings with it.

A family is a group of named search spaces that share a child builder and a
task (the paper has two: convolutional networks on images, sec. 4.1, and
recurrent cells on text, sec. 4.2). It registers once, in its own file:

    families.register(families.Family(
        name="dense",
        spaces={"tiny_dense": tiny_dense},     # name -> factory(**overrides)
        make_task=DenseTask.from_config,       # (spec, data, config) -> task
        metric="val_accuracy",
        ...
    ))

and the code that searches, retrains, describes and reports never names a
family or a space: it asks this registry (`for_space`, `space_spec`,
`make_task`, `of_architecture`). The shape follows tensorflow/models'
`official/core/registry.py` and `task_factory.py`. The built-in families
(`nas_tf.conv_family`, `nas_tf.cell_family`) register when `nas_tf` is
imported (through `nas_tf.describe`).

This module is plain Python: it imports nothing of Keras, TensorFlow or
the families themselves, so that everything may import it.
"""

import dataclasses
import inspect
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from nas_tf import space as space_lib

IMAGE, TEXT = "image", "text"  # `nas_tf.data` dataset kinds.


@dataclasses.dataclass(frozen=True)
class Family:
    """Everything the search, `nas_tf.retrain`, `nas_tf.describe` and the report need of a family.

    Attributes:
      name: the family's name ("conv", "cell").
      spaces: space name -> factory. Called with a search's `space_overrides`
        as keyword arguments, a factory returns a `Space`, or a spec: an
        object with a `space` attribute (the `Space`) and the metadata its
        child builder needs beyond the decisions (`ConvSpaceSpec`'s pooling).
      make_task: `(spec, data, config) -> task`: the task (`nas_tf.tasks`)
        that trains this family's children on `data` with the settings of
        `config` (a `SearchConfig`, seeds resolved). A task is picklable and
        has `space`, `__call__((arch_json, model_path)) -> record` (with
        "reward", "num_params" and "train_seconds"), `headline(record) -> str`
        and `objective(record) -> {"reward": ..., metric: ...}`.
      data_kind: the kind of dataset its children train on (`IMAGE`/`TEXT`).
      metric: the record's validation figure logged beside the reward.
      reward: the `nas_tf.rewards.REWARDS` name of the reward its task reports.
      flags: `nas_tf.train` flag -> the setting it sets for this family, as
        "field" or "field.subfield" of `SearchConfig` ("space_overrides.depth").
      space_flags: flag -> the only spaces of the family it applies to.
      preset_overrides: preset -> {config field: {subfield: value}}, applied
        on top of the preset (`nas_tf.settings.resolve_preset`).
      owns: `arch -> bool`, whether an architecture without its config is
        one of this family's (from its decision names); None: never assumed.
      summary: `(arch, spec) -> str`, the readable form (`Architecture.summary`).
      build: `(arch, spec=None, **kwargs) -> keras.Model`, a fresh model
        (`Architecture.build`).
      build_classifier: `(arch, spec, input_shape, num_classes, weight_decay)
        -> keras.Model`, for families of image classifiers that
        `nas_tf.retrain` can train again; None: not retrainable there.
      spec_to_config: `spec -> dict` to save a spec (`nas_tf.retrain`); None:
        the space name and overrides are saved and the spec rebuilt from them.
      spec_from_config: the inverse of `spec_to_config`.
      diagram: `(arch, path, spec, title) -> path`: draws the architecture
        into a PNG for the report; None: no drawing.
      supernet: `(spec, data, config) -> (supernet, batches)`: the family's
        weight-sharing supernet (`nas_tf.supernets.base.Supernet`) and its
        data as batches addressed by step (`nas_tf.supernets.image_batches`),
        for a search with `config.weight_sharing`; None: multi-trial only.
      diagram_file: the drawing's file name in the report directory.
      diagram_title: the report's heading for that drawing.
    """

    name: str
    spaces: Mapping[str, Callable[..., Any]]
    make_task: Callable[[Any, Any, Any], Any]
    data_kind: str = IMAGE
    metric: str = "val_accuracy"
    reward: str = "identity"
    flags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    space_flags: Mapping[str, Tuple[str, ...]] = dataclasses.field(default_factory=dict)
    preset_overrides: Mapping[str, Mapping[str, Mapping[str, Any]]] = dataclasses.field(
        default_factory=dict
    )
    owns: Optional[Callable[[space_lib.Architecture], bool]] = None
    summary: Optional[Callable[..., str]] = None
    build: Optional[Callable[..., Any]] = None
    build_classifier: Optional[Callable[..., Any]] = None
    spec_to_config: Optional[Callable[[Any], dict]] = None
    spec_from_config: Optional[Callable[[dict], Any]] = None
    diagram: Optional[Callable[..., str]] = None
    supernet: Optional[Callable[[Any, Any, Any], Tuple[Any, Any]]] = None
    diagram_file: str = "best_architecture.png"
    diagram_title: str = "Best architecture"

    def __post_init__(self):
        if not self.name or not self.spaces:
            raise ValueError("A family needs a name and at least one space.")
        if self.data_kind not in (IMAGE, TEXT):
            raise ValueError(f"Family {self.name!r}: data_kind must be {IMAGE!r} or {TEXT!r}.")


# name -> Family, and space name -> family name, in registration order.
_FAMILIES: Dict[str, Family] = {}
_SPACES: Dict[str, str] = {}


def register(family: Family, replace: bool = False) -> Family:
    """Registers `family` (its name and every space name it owns); returns it.

    Raises:
      KeyError: if the family or one of its spaces is registered already
        (unless `replace`: a family registered again under its name).
    """
    if family.name in _FAMILIES and not replace:
        raise KeyError(f"Family {family.name!r} is already registered.")
    if replace:
        unregister(family.name)
    taken = sorted(s for s in family.spaces if s in _SPACES)
    if taken:
        raise KeyError(f"Space {taken[0]!r} already belongs to family {_SPACES[taken[0]]!r}.")
    _FAMILIES[family.name] = family
    for space_name in family.spaces:
        _SPACES[space_name] = family.name
    return family


def unregister(name: str) -> None:
    """Removes a family and its spaces (tests register their own and clean up)."""
    family = _FAMILIES.pop(name, None)
    if family is not None:
        for space_name in family.spaces:
            _SPACES.pop(space_name, None)


def get(name: str) -> Family:
    """The family called `name` (KeyError naming the registered ones)."""
    if name not in _FAMILIES:
        raise KeyError(f"Unknown space family {name!r}; registered: {sorted(_FAMILIES)}.")
    return _FAMILIES[name]


def names() -> Tuple[str, ...]:
    """Registered family names, in registration order."""
    return tuple(_FAMILIES)


def space_names() -> Tuple[str, ...]:
    """Every registered space name, in registration order (`--search_space`'s values)."""
    return tuple(_SPACES)


def for_space(space_name: str) -> Family:
    """The family that owns the space `space_name`.

    Raises:
      ValueError: naming the registered spaces, for an unknown one.
    """
    if space_name not in _SPACES:
        raise ValueError(
            f"Unknown search space {space_name!r}; choose one of {sorted(_SPACES)}."
        )
    return _FAMILIES[_SPACES[space_name]]


def space_spec(space_name: str, overrides: Optional[Mapping[str, Any]] = None):
    """The spec (or `Space`) the factory of `space_name` gives with `overrides`.

    Raises:
      ValueError: for an unknown space, a setting its factory does not take,
        or an impossible value.
    """
    factory = for_space(space_name).spaces[space_name]
    overrides = dict(overrides or {})
    params = _parameters(factory)
    if params is not None:
        unknown = sorted(set(overrides) - set(params))
        if unknown:
            has = ", ".join(repr(p) for p in params) or "none"
            raise ValueError(f"Space {space_name!r} has no setting {unknown[0]!r}; it has {has}.")
    try:
        return factory(**overrides)
    except TypeError as e:
        raise ValueError(f"Space {space_name!r} with {overrides}: {e}") from None


def _parameters(factory) -> Optional[List[str]]:
    """The keyword settings a factory takes (None: any, it has **kwargs)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def space_of(spec) -> space_lib.Space:
    """The `Space` of a spec (a factory's result)."""
    return spec if isinstance(spec, space_lib.Space) else spec.space


def spec_to_config(space_name: str, overrides: Mapping[str, Any]) -> dict:
    """A JSON-compatible record of a space and its overrides, read back by `spec_from_config`."""
    family = for_space(space_name)
    if family.spec_to_config is not None:
        return family.spec_to_config(space_spec(space_name, overrides))
    return {"space": space_name, "space_overrides": _json(overrides)}


def config_space_name(config: Mapping[str, Any]) -> str:
    """The space name in a `spec_to_config` record ("space", or a `ConvSpaceSpec`'s "name")."""
    return config.get("space", config.get("name"))


def spec_from_config(config: Mapping[str, Any]):
    """The spec that `spec_to_config` recorded (its family from the space name)."""
    name = config_space_name(config)
    family = for_space(name)
    if family.spec_from_config is not None:
        return family.spec_from_config(config)
    return space_spec(name, overrides_from_json(config.get("space_overrides")))


def search_spec(config: Optional[Mapping[str, Any]]):
    """(family, spec) of a search's `config.json` content; (None, None) if it names no known space."""
    if not config or config.get("space") not in _SPACES:
        return None, None
    name = config["space"]
    try:
        return for_space(name), space_spec(name, overrides_from_json(config.get("space_overrides")))
    except ValueError:
        return for_space(name), None


def overrides_from_json(overrides: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """Space overrides read from JSON: lists back to the tuples the factories take."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in (overrides or {}).items()}


def _json(overrides: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}


def make_task(config, data):
    """The task of `config.space` with `config.space_overrides`, on `data`.

    Args:
      config: a `SearchConfig` (seeds resolved).
      data: the loaded dataset.

    Raises:
      ValueError: for an unknown space, bad overrides, or data of the wrong kind.
    """
    spec = space_spec(config.space, config.space_overrides)
    return for_space(config.space).make_task(spec, data, config)


def of_architecture(arch: space_lib.Architecture) -> Optional[Family]:
    """The first registered family that claims `arch` by its decisions, or None."""
    for family in _FAMILIES.values():
        if family.owns is not None and family.owns(arch):
            return family
    return None
