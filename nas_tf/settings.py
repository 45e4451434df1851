"""One path to a `SearchConfig`, and one place for every preset rule.

Flags and flag files (`nas_tf.train.config_from_flags` turns the flags that
were given into settings) and `nas_tf.Search(**settings)` all end in
`search_config(output_dir, **settings)`:

1. the preset (`preset="default"` or `"paper"`) and the space's family give
   the method's starting values (`resolve_preset`);
2. a nested setting given as a dict (`controller`, `reinforce`, `child`,
   `lm_model`, `lm_train`, `curriculum`) overrides fields of that start (or
   of the dataclass's defaults); the other settings are taken as given.

A setting left out keeps the preset's or the dataclass's value, so the same
settings give the same `config.json` whichever way they came.
"""

import dataclasses
from typing import Any, Dict, Union

from nas_tf import families

# SearchConfig fields that hold a config dataclass: a dict given for one
# overrides fields of its default.
NESTED = ("controller", "reinforce", "child", "lm_model", "lm_train", "curriculum")
# The SearchConfig fields a preset sets.
PRESET_FIELDS = ("controller", "reinforce", "reuse_rewards", "max_resamples", "mutate_best")


def preset_names():
    """The presets there are ("default", "paper")."""
    from nas_tf import oracle

    return tuple(oracle.PRESETS)


def resolve_preset(preset: str, family: Union[None, str, "families.Family"] = None) -> Dict[str, Any]:
    """The method settings a preset starts from, with the family's overrides.

    Args:
      preset: a name of `nas_tf.oracle.PRESETS` ("default": what measured
        best; "paper": Zoph & Le 2017's method where it is specified).
      family: a `Family`, a family name, or None (no family's overrides).
        The cell family's "paper" controller learns at 0.0005 (sec. 4.2).

    Returns:
      {"controller": ControllerConfig, "reinforce": ReinforceConfig,
      "reuse_rewards": bool, "max_resamples": int, "mutate_best": float,
      "mutate_until": float}.

    Raises:
      ValueError: for an unknown preset.
    """
    from nas_tf import oracle

    if preset not in oracle.PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; use one of {sorted(oracle.PRESETS)}.")
    chosen = oracle.PRESETS[preset]
    out = {
        "controller": chosen["controller_config"](),
        "reinforce": chosen["reinforce_config"](),
        "reuse_rewards": chosen["reuse_rewards"],
        "max_resamples": chosen["max_resamples"],
        "mutate_best": chosen["mutate_best"],
        "mutate_until": float(chosen["mutate_until"]),
    }
    if isinstance(family, str):
        family = families.get(family)
    overrides = family.preset_overrides.get(preset, {}) if family is not None else {}
    for field, changes in overrides.items():
        if dataclasses.is_dataclass(out.get(field)):
            out[field] = dataclasses.replace(out[field], **changes)
        else:
            out[field] = changes
    return out


def search_config(output_dir: str, **settings):
    """The `SearchConfig` of keyword settings: the one function every way in goes through.

    Args:
      output_dir: where the search writes.
      **settings: `SearchConfig` fields. A nested one (`NESTED`) takes its
        dataclass or a dict of its fields; `preset` picks the preset.

    Raises:
      TypeError: naming a setting `SearchConfig` does not have.
      ValueError: for an unknown preset or space, or an impossible value.
    """
    from nas_tf import builtin_families  # noqa: F401 (the paper's spaces)
    from nas_tf import search as search_lib
    from nas_tf.spaces import conv

    fields = {f.name: f for f in dataclasses.fields(search_lib.SearchConfig)}
    unknown = sorted(set(settings) - set(fields))
    if unknown:
        raise TypeError(
            f"Unknown search setting {unknown[0]!r}; the settings are the fields of "
            f"nas_tf.search.SearchConfig: {sorted(fields)}."
        )
    space = settings.get("space", fields["space"].default)
    family = families.for_space(space)
    if settings.get("preset") is None:
        # Weight sharing's default controller is ENAS's: it measured best there
        # (docs/weight_sharing.md); the multi-trial default is the `default` preset.
        shared = settings.get("weight_sharing") is not None
        settings["preset"] = "enas" if shared else fields["preset"].default
    start = resolve_preset(settings["preset"], family)
    for name in ("reuse_rewards", "max_resamples", "mutate_best", "mutate_until"):
        settings.setdefault(name, start[name])
    if settings.get("weight_sharing") is not None:
        from nas_tf.supernets import config as shared_config

        settings["weight_sharing"] = shared_config.shared_search_config(settings["weight_sharing"])
    for name in NESTED:
        value = settings.get(name)
        if name == "curriculum":
            if isinstance(value, dict):  # A depth curriculum (sec. 4.1) of the given fields.
                settings[name] = conv.DepthCurriculum(**value)
        elif value is None or isinstance(value, dict):
            base = start.get(name) or fields[name].default
            settings[name] = dataclasses.replace(base, **(value or {}))
    return search_lib.SearchConfig(output_dir=output_dir, **settings)


def set_setting(settings: Dict[str, Any], path: str, value: Any) -> None:
    """Sets "field" or "field.subfield" (a nested dict) in `settings`."""
    field, _, sub = path.partition(".")
    if sub:
        settings.setdefault(field, {})[sub] = value
    else:
        settings[field] = value

