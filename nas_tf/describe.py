"""A found architecture in readable form and as a Keras model, whatever its family.

How an architecture reads and builds belongs to its family
(`nas_tf.families`): a convolutional network gives one line per layer, a
recurrent cell one line per tree node, an architecture of no registered
family (a user's HyperModel) one line per decision. The family comes from
the search's config when there is one, else from the families' own
`owns` checks of the decision names.

Importing this module fills `nas_tf.space`'s hooks, so that
`Architecture.summary()`, `str(architecture)` and `Architecture.build()`
reach the families while `nas_tf/space.py` imports nothing above it
(`nas_tf.builtin_families` imports it, with the built-in families). Nothing
here imports Keras until a model is built.
"""

from typing import Optional

from nas_tf import families
from nas_tf import space as space_lib

OTHER = "other"


def family_of(arch: space_lib.Architecture, config: Optional[dict] = None):
    """The `Family` of `arch`: the one of `config`'s space if given and known, else the one that owns it."""
    found, _ = families.search_spec(config)
    return found or families.of_architecture(arch)


def family(arch: space_lib.Architecture) -> str:
    """The name of the registered family that owns `arch` ("conv", "cell", ...), or "other"."""
    found = families.of_architecture(arch)
    return found.name if found else OTHER


def spec_from_config(config: Optional[dict]):
    """The spec a search's `config.json` content describes (None: no known space)."""
    return families.search_spec(config)[1]


def summary(arch: space_lib.Architecture, spec=None, config: Optional[dict] = None) -> str:
    """A readable summary: a title line, then one line per layer, node or decision.

    Args:
      arch: the architecture.
      spec: its family's spec (a `ConvSpaceSpec` places the pools); default:
        the one of `config`, else the family's default.
      config: a search's `config.json` content (picks the family and spec).
    """
    found = family_of(arch, config)
    if found is None or found.summary is None:
        return space_lib.decision_summary(arch)
    if spec is None and config is not None:
        spec = spec_from_config(config)
    return found.summary(arch, spec)


def build(arch: space_lib.Architecture, *, spec=None, config: Optional[dict] = None, **kwargs):
    """The Keras model of a found architecture (uncompiled, untrained).

    Args:
      arch: an architecture of a registered family.
      spec: the family's spec; default: the one of `config`, else the
        family's default.
      config: a search's `config.json` content (picks the family and spec).
      **kwargs: the family's build settings: a convolutional network's
        `input_shape` and `num_classes`, a cell's `vocab_size` and
        `language_model`.

    Raises:
      ValueError: for an architecture of no registered family that builds (a
        user's HyperModel builds its own model: `hypermodel.build(hp)`).
    """
    found = family_of(arch, config)
    if found is None or found.build is None:
        raise ValueError(
            "build() knows the registered space families "
            f"({', '.join(families.names())}); this architecture is of none of them "
            f"({', '.join(list(arch.values)[:4])}, ...). "
            "Build it with the HyperModel that defined its space."
        )
    if spec is None and config is not None:
        spec = spec_from_config(config)
    return found.build(arch, spec, **kwargs)


space_lib.set_architecture_hooks(summary=summary, build=build)
