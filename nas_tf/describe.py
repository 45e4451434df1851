"""A found architecture in readable form and as a Keras model.

An `Architecture` is a mapping from decision names to values. This module
recognises the paper's two families by their decision names and lays them
out the way one reads a network:

* a convolutional network (`nas_tf.spaces.conv`: "layer_<i>/filter_height",
  ..., "layer_<i>/anchor"): one line per layer, filter height x width, number
  of filters, stride, and the layers that feed it (max pools where the space
  puts them);
* a recurrent cell (`nas_tf.spaces.cell`: "node_<k>_combine", ...): one line
  per tree node, with the cell-inject and cell-index wiring;
* anything else (a user's HyperModel): one line per decision.

`build(arch)` gives the Keras model of a convolutional network or of a
cell's language model, so a found network can be taken into one's own code.
`Architecture.summary()`, `str(architecture)` and `Architecture.build()` call
these.
"""

from typing import List, Optional, Sequence

from nas_tf import space as space_lib

CONV, CELL, OTHER = "conv", "cell", "other"


def family(arch: space_lib.Architecture) -> str:
    """"conv", "cell" or "other", from the decision names."""
    names = set(arch.values)
    if "layer_0/anchor" in names and "layer_0/filter_height" in names:
        return CONV
    if "node_0_combine" in names and "cell_index_out" in names:
        return CELL
    return OTHER


def conv_spec(arch: space_lib.Architecture, pool_at: Sequence[int] = ()):
    """The smallest convolutional space (`ConvSpaceSpec`) that holds `arch`.

    Its choices are the values `arch` uses; `pool_at` (not part of an
    architecture: the space fixes it) places max pools after those layers.

    Raises:
      ArchitectureError: if `arch` is not a convolutional network.
    """
    from nas_tf.spaces import conv

    if family(arch) != CONV or not isinstance(arch.depth, int):
        raise space_lib.ArchitectureError(
            "Not a convolutional architecture (no layer_<i>/... decisions with a depth)."
        )
    values = arch.values

    def used(kind):
        return tuple(sorted({values[f"layer_{i}/{kind}"] for i in range(arch.depth)}))

    strided = "layer_0/stride_height" in values
    strides = tuple(sorted(set(used("stride_height")) | set(used("stride_width")))) if strided else None
    return conv.ConvSpaceSpec(
        name="cifar10_v2" if strided else "cifar10_v1",
        depth=arch.depth,
        filter_sizes=tuple(sorted(set(used("filter_height")) | set(used("filter_width")))),
        num_filters=used("num_filters"),
        strides=strides,
        pool_at=tuple(p for p in pool_at if p < arch.depth),
    )


def conv_lines(arch: space_lib.Architecture, spec=None) -> List[str]:
    """One line per layer of a convolutional network (and per pooling boundary)."""
    from nas_tf.children import convnet

    spec = spec or conv_spec(arch)
    layers = convnet.decode(arch, spec)
    lines, stage = [], 0
    for i, layer in enumerate(layers):
        if layer.stage > stage:
            lines.append(f"  max pool {convnet.POOL_SIZE}x{convnet.POOL_SIZE}, stride {convnet.POOL_SIZE}")
            stage = layer.stage
        inputs = ", ".join("image" if j < 0 else f"layer {j}" for j in layer.inputs) or "image"
        stride = (
            f", stride {layer.stride_height}x{layer.stride_width}"
            if (layer.stride_height, layer.stride_width) != (1, 1) else ""
        )
        lines.append(
            f"  layer {i}: conv {layer.filter_height}x{layer.filter_width}, "
            f"{layer.num_filters} filters{stride}  <- {inputs}"
        )
    ends = convnet.dangling(layers)
    lines.append(f"  classifier <- {', '.join(f'layer {j}' for j in ends)}")
    return lines


def summary(arch: space_lib.Architecture, spec=None) -> str:
    """A readable summary: a title line, then one line per layer, node or decision.

    Args:
      arch: the architecture.
      spec: for a convolutional network, its `ConvSpaceSpec` (for the pooling
        positions); default: `conv_spec(arch)` (no pooling).
    """
    kind = family(arch)
    if kind == CONV:
        return "\n".join([f"Convolutional network, {arch.depth} layers:"] + conv_lines(arch, spec))
    if kind == CELL:
        from nas_tf.spaces import cell

        return str(cell.CellDescription.from_architecture(arch))
    title = "Architecture" + (f" (depth {arch.depth})" if arch.depth is not None else "") + ":"
    lines = [title]
    for name, value in arch.values.items():
        if isinstance(value, tuple):
            value = "[" + ", ".join(str(v) for v in value) + "]"
        lines.append(f"  {name}: {value}")
    return "\n".join(lines)


def build(
    arch: space_lib.Architecture,
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    spec=None,
    vocab_size: int = 10000,
    language_model=None,
):
    """The Keras model of a found architecture (uncompiled, untrained).

    Args:
      arch: a convolutional network or a recurrent cell.
      input_shape, num_classes: a convolutional network's images and classes.
      spec: a convolutional network's `ConvSpaceSpec` (pooling positions);
        default `conv_spec(arch)`.
      vocab_size: a cell's language model vocabulary.
      language_model: a cell's `LanguageModelConfig` (default: the paper's
        2-layer model).

    Returns:
      A `keras.Model` from images to logits, or a built `CellLanguageModel`.

    Raises:
      ValueError: for an architecture of another family (a user's HyperModel
        builds its own model: `hypermodel.build(hp)`).
    """
    kind = family(arch)
    if kind == CONV:
        from nas_tf.children import convnet

        return convnet.build_convnet(arch, spec or conv_spec(arch), input_shape, num_classes)
    if kind == CELL:
        from nas_tf.children import language_model as lm
        from nas_tf.spaces import cell

        description = cell.CellDescription.from_architecture(arch)
        return lm.build_model(description, vocab_size, language_model or lm.LanguageModelConfig())
    raise ValueError(
        "build() knows the paper's convolutional networks and recurrent cells; this "
        f"architecture has neither's decisions ({', '.join(list(arch.values)[:4])}, ...). "
        "Build it with the HyperModel that defined its space."
    )


def spec_from_config(config: Optional[dict]):
    """The `ConvSpaceSpec` a search's `config.json` content describes (None: not a conv search)."""
    from nas_tf.spaces import conv

    if not config or config.get("space") not in conv.SPACES:
        return None
    overrides = {
        k: (tuple(v) if isinstance(v, list) else v)
        for k, v in (config.get("space_overrides") or {}).items()
    }
    return conv.get_space(config["space"], **overrides)
