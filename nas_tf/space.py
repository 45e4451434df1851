"""The search-space language: decisions, anchor decisions, activity conditions.

A search space is an ordered tuple of decisions. The controller walks them in
order, one token each (Zoph & Le 2017, sec. 3.1), so the order is part of the
space. Two kinds of decision exist:

* `Categorical`: a choice over a tuple of named values (ints, floats, strings
  or bools). Decisions that share a `kind` share one embedding and one softmax
  head in the controller (e.g. every layer's "filter_height").
* `Anchor`: the anchor point of one layer (sec. 3.3). Its value holds one
  independent yes/no per earlier anchor listed in `sources`: "source j feeds
  this layer". The controller samples the bits with set-selection attention.

Either kind may carry activity conditions: `min_depth` (the decision exists
only when the sampled network has at least that many layers) and `when`
(the decision exists only while other, earlier decisions hold given values).
Inactive decisions have no value in an architecture and count for nothing in
the controller's log-probability.

A space is plain data: it prints, compares, and round-trips through JSON, and
so does an `Architecture` sampled from it.
"""

import dataclasses
import json
import numbers
from typing import Any, Mapping, Optional, Union

Value = Union[bool, int, float, str]
_VALUE_TYPES = (bool, int, float, str)


class ArchitectureError(ValueError):
    """An architecture is malformed or lies outside its search space."""


def _short(value: Any, limit: int = 120) -> str:
    """`repr(value)`, cut to `limit` characters (error messages quote user input)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _same_value(a: Any, b: Any) -> bool:
    """Equality that keeps `True`, `1` and `1.0` apart (JSON keeps them apart)."""
    return type(a) is type(b) and a == b


@dataclasses.dataclass(frozen=True)
class When:
    """Activity condition: the decision exists only if `decision` is in `values`.

    Attributes:
      decision: name of an earlier categorical decision.
      values: the values of that decision under which the condition holds.
    """

    decision: str
    values: tuple

    def __post_init__(self):
        object.__setattr__(self, "values", tuple(self.values))


@dataclasses.dataclass(frozen=True)
class Categorical:
    """A choice among named values.

    Attributes:
      name: unique name of the decision within its space.
      values: the tuple of allowed values (bool, int, float or str).
      kind: the decision type; decisions of one kind share the controller's
        embedding and softmax head, so they must have the same values.
        Defaults to `name`.
      min_depth: the decision exists only in networks of at least this depth.
      when: further activity conditions, all of which must hold.
    """

    name: str
    values: tuple
    kind: str = ""
    min_depth: int = 0
    when: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "values", tuple(self.values))
        object.__setattr__(self, "when", tuple(self.when))
        if not self.kind:
            object.__setattr__(self, "kind", self.name)
        if not self.values:
            raise ValueError(f"Decision {self.name!r} has no values.")
        for value in self.values:
            if not isinstance(value, _VALUE_TYPES):
                raise ValueError(
                    f"Decision {self.name!r}: value {value!r} is a "
                    f"{type(value).__name__}; values must be bool, int, float or str."
                )
        for i, value in enumerate(self.values):
            if any(_same_value(value, other) for other in self.values[:i]):
                raise ValueError(f"Decision {self.name!r} repeats value {value!r}.")

    @property
    def num_choices(self) -> int:
        return len(self.values)

    def index(self, value: Any) -> int:
        """Returns the position of `value` in `values`.

        Raises:
          ArchitectureError: naming the decision, if the value is not allowed.
        """
        for i, allowed in enumerate(self.values):
            if _same_value(value, allowed):
                return i
        raise ArchitectureError(
            f"Decision {self.name!r}: value {_short(value)} is not one of {list(self.values)}."
        )


@dataclasses.dataclass(frozen=True)
class Anchor:
    """The anchor point of one layer: which earlier layers feed it.

    Attributes:
      name: unique name of the decision within its space.
      sources: names of earlier `Anchor` decisions, one per earlier layer.
        The value is a list of 0/1 flags, one per source, in this order.
      min_depth: the decision exists only in networks of at least this depth.
      when: further activity conditions, all of which must hold.
    """

    name: str
    sources: tuple = ()
    min_depth: int = 0
    when: tuple = ()
    kind = "anchor"

    def __post_init__(self):
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "when", tuple(self.when))


Decision = Union[Categorical, Anchor]


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One point of a search space.

    Attributes:
      values: decision name -> value, for the active decisions only. An anchor's
        value is a tuple of 0/1 ints, one per source.
      depth: the number of layers of the network; None for spaces that do not
        use `min_depth`.
    """

    values: Mapping[str, Any]
    depth: Optional[int] = None

    def __getitem__(self, name):
        return self.values[name]

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): the architecture's identity for hashing and equality.

        Computed once per object (an architecture is immutable): the oracle
        compares, hashes and logs the same architectures many times a trial.
        """
        text = self.__dict__.get("_json")
        if text is None:
            text = json.dumps(
                {"depth": self.depth, "values": _json_values(self.values)}, sort_keys=True
            )
            object.__setattr__(self, "_json", text)  # A cache, not a field: frozen allows it.
        return text

    @classmethod
    def from_json(cls, text: str) -> "Architecture":
        """Parses `to_json` output (validate it with `Space.validate`).

        Raises:
          ArchitectureError: if `text` is not JSON of the form
            {"depth": int or null, "values": {...}}, naming what is wrong.
        """
        if not isinstance(text, (str, bytes, bytearray)):
            raise ArchitectureError(f"An architecture is JSON text, got a {type(text).__name__}.")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8, huge ints.
            raise ArchitectureError(f"Architecture is not valid JSON: {_short(str(e), 200)}") from None
        if not isinstance(data, dict) or not isinstance(data.get("values"), dict):
            raise ArchitectureError(
                'An architecture is a JSON object {"depth": ..., "values": {...}}; '
                f"got {_short(text[:200], 210)}."
            )
        depth = data.get("depth")
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int)):
            raise ArchitectureError(f"Architecture depth must be an integer or null, got {_short(depth)}.")
        values = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data["values"].items()
        }
        return cls(values=values, depth=depth)

    def summary(self, spec=None) -> str:
        """A readable summary, one line per layer, cell node or decision.

        Its family's form (`nas_tf.describe.summary`, through the hook that
        `import nas_tf` installs); one line per decision without it.

        Args:
          spec: its family's spec (for a convolutional network, the
            `ConvSpaceSpec` that places the pools); default: none.
        """
        hook = _HOOKS["summary"]
        return decision_summary(self) if hook is None else hook(self, spec)

    def __str__(self):
        return self.summary()

    def build(self, **kwargs):
        """The Keras model of this architecture: `nas_tf.describe.build(self, **kwargs)`.

        A convolutional network takes `input_shape`, `num_classes` and `spec`;
        a recurrent cell gives its language model (`vocab_size`,
        `language_model`).

        Raises:
          RuntimeError: if no family is known (`nas_tf.describe` not imported;
            `import nas_tf` imports it).
        """
        hook = _HOOKS["build"]
        if hook is None:
            raise RuntimeError("Architecture.build() needs the space families: import nas_tf.")
        return hook(self, **kwargs)

    def __eq__(self, other):
        if not isinstance(other, Architecture):
            return NotImplemented
        return self.to_json() == other.to_json()

    def __hash__(self):
        return hash(self.to_json())


# How an architecture reads and builds depends on its family, which this
# plain-data module does not know (it imports nothing of nas_tf): importing
# `nas_tf.describe` fills these slots (dependency inversion; `import nas_tf` does).
_HOOKS = {"summary": None, "build": None}


def set_architecture_hooks(summary=None, build=None) -> None:
    """Installs what `Architecture.summary()` and `Architecture.build()` call.

    Args:
      summary: `(arch, spec) -> str`.
      build: `(arch, **kwargs) -> keras.Model`.
    """
    _HOOKS.update(summary=summary, build=build)


def decision_summary(arch: "Architecture") -> str:
    """One line per decision: the summary of an architecture of no known family."""
    title = "Architecture" + (f" (depth {arch.depth})" if arch.depth is not None else "") + ":"
    lines = [title]
    for name, value in arch.values.items():
        if isinstance(value, tuple):
            value = "[" + ", ".join(str(v) for v in value) + "]"
        lines.append(f"  {name}: {value}")
    return "\n".join(lines)


def _json_values(values):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


@dataclasses.dataclass(frozen=True)
class Space:
    """An ordered, declarative search space.

    Attributes:
      decisions: the decisions in the order the controller predicts them.
      name: a name for printing and for picking a space from a flag.
    """

    decisions: tuple
    name: str = "space"

    def __post_init__(self):
        object.__setattr__(self, "decisions", tuple(self.decisions))
        seen = {}
        kinds = {}
        for d in self.decisions:
            if d.name in seen:
                raise ValueError(f"Space {self.name!r}: decision {d.name!r} is repeated.")
            if (isinstance(d.min_depth, bool) or not isinstance(d.min_depth, numbers.Integral)
                    or d.min_depth < 0):
                raise ValueError(f"Decision {d.name!r}: min_depth must be an integer >= 0, "
                                 f"got {d.min_depth!r}.")
            for cond in d.when:
                parent = seen.get(cond.decision)
                if not isinstance(parent, Categorical):
                    raise ValueError(
                        f"Decision {d.name!r}: condition on {cond.decision!r}, which is "
                        "not an earlier categorical decision."
                    )
                for v in cond.values:
                    parent.index(v)
            if isinstance(d, Anchor):
                for s in d.sources:
                    if not isinstance(seen.get(s), Anchor):
                        raise ValueError(
                            f"Anchor {d.name!r}: source {s!r} is not an earlier anchor."
                        )
            else:
                other = kinds.setdefault(d.kind, d)
                if not (
                    len(other.values) == len(d.values)
                    and all(map(_same_value, other.values, d.values))
                ):
                    raise ValueError(
                        f"Decisions {other.name!r} and {d.name!r} share kind "
                        f"{d.kind!r} but not values."
                    )
            seen[d.name] = d
        # Looked up for every decision of every architecture validated or
        # encoded: kept, not recomputed (caches, not fields).
        object.__setattr__(self, "_by_name", seen)
        object.__setattr__(self, "_uses_depth", any(d.min_depth > 0 for d in self.decisions))
        object.__setattr__(self, "_max_depth",
                           max((d.min_depth for d in self.decisions), default=0) or None)

    # -- structure -----------------------------------------------------------

    def __getitem__(self, name: str) -> Decision:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"Space {self.name!r} has no decision {name!r}.") from None

    @property
    def names(self):
        return tuple(d.name for d in self.decisions)

    @property
    def uses_depth(self) -> bool:
        return self._uses_depth

    @property
    def max_depth(self) -> Optional[int]:
        return self._max_depth

    def is_active(self, decision: Decision, values: Mapping, depth: Optional[int]) -> bool:
        """Whether `decision` exists, given earlier `values` and `depth`."""
        if decision.min_depth and (depth is None or depth < decision.min_depth):
            return False
        for cond in decision.when:
            if cond.decision not in values:
                return False
            if not any(_same_value(values[cond.decision], v) for v in cond.values):
                return False
        return True

    # -- validation and JSON -------------------------------------------------

    def validate(self, arch: Architecture) -> Architecture:
        """Checks that `arch` is a point of this space.

        Returns:
          `arch`, with anchor values normalised to tuples.

        Raises:
          ArchitectureError: naming the first decision whose value is missing,
            unexpected or not allowed.
        """
        if not isinstance(arch.values, Mapping):
            raise ArchitectureError("Architecture values must be a mapping.")
        if self.uses_depth:
            if not isinstance(arch.depth, int) or isinstance(arch.depth, bool) or arch.depth < 1:
                raise ArchitectureError(
                    f"Space {self.name!r} needs a positive integer depth; got {_short(arch.depth)}."
                )
            if arch.depth > self.max_depth:
                raise ArchitectureError(
                    f"Space {self.name!r}: depth {arch.depth} exceeds its maximum depth {self.max_depth}."
                )
        unknown = sorted(set(arch.values) - set(self.names))
        if unknown:
            raise ArchitectureError(
                f"Space {self.name!r} has no decision {_short(unknown[0])} "
                f"(value {_short(arch.values[unknown[0]])})."
            )
        out = {}
        active_names = set()
        for d in self.decisions:
            if not self.is_active(d, out, arch.depth):
                if d.name in arch.values:
                    raise ArchitectureError(
                        f"Decision {d.name!r} is inactive in this architecture but has "
                        f"value {_short(arch.values[d.name])}."
                    )
                continue
            active_names.add(d.name)
            if d.name not in arch.values:
                raise ArchitectureError(f"Decision {d.name!r} is active but has no value.")
            value = arch.values[d.name]
            if isinstance(d, Categorical):
                d.index(value)
                out[d.name] = value
            else:
                out[d.name] = self._check_anchor(d, value, active_names)
        return Architecture(values=out, depth=arch.depth)

    def _check_anchor(self, d: Anchor, value, active_names) -> tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(d.sources):
            raise ArchitectureError(
                f"Anchor {d.name!r}: value {_short(value)} must be a list of "
                f"{len(d.sources)} flags (0 or 1), one per source {list(d.sources)}."
            )
        for flag, source in zip(value, d.sources):
            if type(flag) is not int or flag not in (0, 1):
                raise ArchitectureError(
                    f"Anchor {d.name!r}: flag {_short(flag)} for source {source!r} must be 0 or 1."
                )
            if flag and source not in active_names:
                raise ArchitectureError(
                    f"Anchor {d.name!r}: source {source!r} is inactive but flagged as input."
                )
        return tuple(value)

    def architecture_from_json(self, text: str) -> Architecture:
        """Parses and validates an architecture written by `Architecture.to_json`."""
        return self.validate(Architecture.from_json(text))

    def to_config(self) -> dict:
        """A JSON-compatible description of the space (see `from_config`)."""
        out = []
        for d in self.decisions:
            item = {
                "type": "anchor" if isinstance(d, Anchor) else "categorical",
                "name": d.name,
                "min_depth": d.min_depth,
                "when": [{"decision": c.decision, "values": list(c.values)} for c in d.when],
            }
            if isinstance(d, Anchor):
                item["sources"] = list(d.sources)
            else:
                item["values"] = list(d.values)
                item["kind"] = d.kind
            out.append(item)
        return {"name": self.name, "decisions": out}

    @classmethod
    def from_config(cls, config: Mapping) -> "Space":
        decisions = []
        for item in config["decisions"]:
            when = tuple(When(c["decision"], tuple(c["values"])) for c in item.get("when", ()))
            common = dict(name=item["name"], min_depth=item.get("min_depth", 0), when=when)
            if item["type"] == "anchor":
                decisions.append(Anchor(sources=tuple(item["sources"]), **common))
            elif item["type"] == "categorical":
                decisions.append(
                    Categorical(values=tuple(item["values"]), kind=item.get("kind", ""), **common)
                )
            else:
                raise ValueError(f"Unknown decision type {item['type']!r} in {item['name']!r}.")
        return cls(decisions=tuple(decisions), name=config.get("name", "space"))

    def __str__(self):
        lines = [f"Space {self.name!r} ({len(self.decisions)} decisions)"]
        for d in self.decisions:
            extra = ""
            if d.min_depth:
                extra += f"  [depth >= {d.min_depth}]"
            for c in d.when:
                extra += f"  [{c.decision} in {list(c.values)}]"
            if isinstance(d, Anchor):
                lines.append(f"  {d.name}: anchor over {list(d.sources)}{extra}")
            else:
                kind = "" if d.kind == d.name else f" ({d.kind})"
                lines.append(f"  {d.name}{kind}: {list(d.values)}{extra}")
        return "\n".join(lines)

