"""Keras Tuner hyperparameters <-> nas_tf search spaces.

Every tunable Keras Tuner hyperparameter becomes one controller decision:

* `hp.Choice` -> its values; `hp.Boolean` -> (False, True);
* `hp.Int` / `hp.Float` -> the grid their `step` defines (without a step,
  Keras Tuner's own 10-point grid of the range is used);
* `hp.Fixed` -> no decision (its value is passed through);
* conditional scopes -> `When` conditions.

Skip connections are declared with `anchor(hp, name, sources)`: a marker
`hp.Fixed` plus one `hp.Boolean` per source. The controller recognises the
group and samples it with anchor-point attention; any other Keras Tuner oracle
sees ordinary booleans, so the HyperModel runs unchanged under them.

The reserved hyperparameter `nas_tf/depth` carries the network depth of
spaces with `min_depth` decisions; its value comes from a depth schedule, not
from the controller. Names under `nas_tf/` are reserved, so a user's own
hyperparameter named `depth` is an ordinary decision.
"""

import math
from typing import Dict, List, Mapping, Optional, Sequence

import keras_tuner

from nas_tf import kt_compat
from nas_tf import space as space_lib

DEPTH = "nas_tf/depth"
_RESERVED = "nas_tf/"
_ANCHOR = "@anchor"
_SOURCE = "@anchor:"


def _bit_name(anchor_name: str, source: str) -> str:
    return f"{anchor_name}{_SOURCE}{source}"


def anchor(hp: keras_tuner.HyperParameters, name: str, sources: Sequence[str]) -> List[bool]:
    """Declares the anchor point of layer `name` inside a HyperModel.

    Under `NASRLOracle` the returned flags are sampled with the paper's
    set-selection attention (P(j feeds i) = sigmoid(v^T tanh(W_prev h_j +
    W_curr h_i)), Zoph & Le 2017, sec. 3.3). Under any other oracle they are
    plain `hp.Boolean`s.

    Args:
      hp: the trial's `HyperParameters`.
      name: this layer's anchor name; later layers list it in their `sources`.
      sources: the anchor names of the earlier layers that may feed this one,
        each declared with `anchor` before.

    Returns:
      One bool per source: whether that layer feeds this one.

    Example:
      ```python
      def build(hp):
          outputs = []
          for i in range(4):
              feeds = nas_tf.anchor(hp, f"layer_{i}", [f"layer_{j}" for j in range(i)])
              inputs = [outputs[j] for j, f in enumerate(feeds) if f] or [image]
              ...
      ```
    """
    for source in sources:
        if _ANCHOR in source or "," in source:
            raise ValueError(f"Anchor source name {source!r} may not contain '@anchor' or ','.")
    hp.Fixed(name + _ANCHOR, ",".join(sources))
    return [hp.Boolean(_bit_name(name, s), default=False) for s in sources]


def _grid(hp) -> tuple:
    types = keras_tuner.engine.hyperparameters
    if isinstance(hp, types.Boolean):
        return (False, True)
    if isinstance(hp, types.Choice):
        return tuple(hp.values)
    if isinstance(hp, types.Float) and hp.step and hp.sampling == "linear":
        # Keras Tuner's own grid loses the end point to rounding (0.3 // 0.1 == 2);
        # count the steps with a tolerance and round away the float noise.
        n = int(math.floor((hp.max_value - hp.min_value) / hp.step + 1e-9)) + 1
        return tuple(round(hp.min_value + i * hp.step, 12) for i in range(n))
    return tuple(sorted(set(hp.values)))


def space_from_hyperparameters(
    hps: keras_tuner.HyperParameters, name="hyperparameters", kinds: Optional[Mapping] = None
):
    """Builds the controller's `Space` from a Keras Tuner search space.

    Args:
      hps: the Keras Tuner search space.
      name: the name of the resulting space.
      kinds: optional decision name -> kind, for decisions that share the
        controller's embedding and head (Keras Tuner has no such notion; by
        default every hyperparameter is its own kind).

    Returns:
      (space, fixed): the `Space`, and the values of `hp.Fixed` entries (anchor
      markers included) keyed by name, which every trial must carry.
    """
    decisions = []
    fixed = {}
    known = {}
    anchors = set()
    max_depth = None
    for hp in hps.space:
        if hp.name == DEPTH:
            max_depth = max(hp.values)
            continue
        if hp.name.startswith(_RESERVED):
            raise ValueError(
                f"Hyperparameter name {hp.name!r} is reserved: names starting with "
                f"{_RESERVED!r} belong to nas_tf ({DEPTH!r} is the curriculum's depth)."
            )
        min_depth, when, static_ok = 0, [], True
        for cond in hp.conditions:
            if not (hasattr(cond, "name") and hasattr(cond, "values")):
                raise ValueError(f"Hyperparameter {hp.name!r}: unsupported condition {cond!r}.")
            if cond.name == DEPTH:
                min_depth = max(min_depth, min(cond.values))
            elif cond.name in fixed:
                static_ok &= fixed[cond.name] in cond.values
            elif cond.name in known:
                when.append(space_lib.When(cond.name, tuple(cond.values)))
            else:
                raise ValueError(
                    f"Hyperparameter {hp.name!r} is conditioned on {cond.name!r}, "
                    "which is not declared before it."
                )
        if not static_ok:
            continue  # Conditioned on a fixed value it can never take.
        common = dict(min_depth=min_depth, when=tuple(when))
        if isinstance(hp, keras_tuner.engine.hyperparameters.Fixed):
            fixed[hp.name] = hp.value
            if hp.name.endswith(_ANCHOR):
                anchor_name = hp.name[: -len(_ANCHOR)]
                sources = tuple(s for s in str(hp.value).split(",") if s)
                missing = [s for s in sources if s not in anchors]
                if missing:
                    raise ValueError(
                        f"Anchor {anchor_name!r} lists source {missing[0]!r}, "
                        "which is not an anchor declared before it."
                    )
                decisions.append(space_lib.Anchor(anchor_name, sources, **common))
                anchors.add(anchor_name)
            continue
        if _SOURCE in hp.name:
            continue  # A bit of an anchor declared above.
        decision = space_lib.Categorical(
            hp.name, _grid(hp), kind=(kinds or {}).get(hp.name, ""), **common
        )
        decisions.append(decision)
        known[hp.name] = decision
    space = space_lib.Space(tuple(decisions), name=name)
    if space.uses_depth and max_depth is None:
        raise ValueError(f"Hyperparameters condition on {DEPTH!r} but do not declare it.")
    return space, fixed


def space_to_hyperparameters(space: space_lib.Space) -> keras_tuner.HyperParameters:
    """The Keras Tuner search space of a nas_tf `Space` (the inverse mapping)."""
    hps = keras_tuner.HyperParameters()
    if space.uses_depth:
        hps.Choice(DEPTH, list(range(1, space.max_depth + 1)), default=space.max_depth)
    for d in space.decisions:
        conditions = [(c.decision, list(c.values)) for c in d.when]
        if d.min_depth:
            conditions.insert(0, (DEPTH, list(range(d.min_depth, space.max_depth + 1))))
        with _scopes(hps, conditions):
            if isinstance(d, space_lib.Anchor):
                anchor(hps, d.name, d.sources)
            else:
                hps.Choice(d.name, list(d.values), default=d.values[0])
    return hps


class _scopes:
    """Enters nested conditional scopes, one per condition."""

    def __init__(self, hps, conditions):
        self._hps, self._conditions, self._stack = hps, conditions, []

    def __enter__(self):
        for name, values in self._conditions:
            scope = self._hps.conditional_scope(name, values)
            scope.__enter__()
            self._stack.append(scope)

    def __exit__(self, *exc):
        while self._stack:
            self._stack.pop().__exit__(*exc)


def architecture_to_values(
    space: space_lib.Space, arch: space_lib.Architecture, fixed: Mapping
) -> Dict:
    """The trial values (plain Python types) that encode `arch`."""
    values = {}
    if space.uses_depth:
        values[DEPTH] = int(arch.depth)
    for d in space.decisions:
        if d.name not in arch.values:
            continue
        if isinstance(d, space_lib.Anchor):
            values[d.name + _ANCHOR] = fixed.get(d.name + _ANCHOR, ",".join(d.sources))
            for source, flag in zip(d.sources, arch.values[d.name]):
                values[_bit_name(d.name, source)] = bool(flag)
        else:
            values[d.name] = arch.values[d.name]
    for name, value in fixed.items():
        if not name.endswith(_ANCHOR):
            values[name] = value
    return values


def values_to_architecture(
    space: space_lib.Space, values: Mapping, depth: Optional[int] = None
) -> space_lib.Architecture:
    """Reads an architecture back from trial values, validated against `space`.

    Raises:
      ArchitectureError: if the values are not a point of the space.
    """
    if space.uses_depth:
        depth = values.get(DEPTH, depth)
    arch = {}
    partial = {}
    for d in space.decisions:
        if not space.is_active(d, partial, depth):
            continue
        if isinstance(d, space_lib.Anchor):
            arch[d.name] = tuple(
                int(bool(values.get(_bit_name(d.name, s), False))) for s in d.sources
            )
        elif d.name in values:
            arch[d.name] = values[d.name]
            partial[d.name] = values[d.name]
    return space.validate(space_lib.Architecture(arch, depth if space.uses_depth else None))


# Keras Tuner copies an oracle's hyperparameters per trial; the quick copy is a shim.
QuickCopyHyperParameters = kt_compat.QuickCopyHyperParameters
