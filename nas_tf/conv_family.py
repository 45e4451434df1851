"""The convolutional family: the CIFAR-10 spaces v1, v2, v3 (Zoph & Le 2017, sec. 4.1).

Its spaces are `nas_tf.spaces.conv`'s, its children `nas_tf.children.convnet`'s
networks trained by `nas_tf.tasks.ConvTask`, its reward the cubed maximum
validation accuracy of the last 5 epochs. This file registers them, with how
an architecture of the family reads (one line per layer) and is drawn
(`nas_tf.report.diagrams.conv_network`).

Keras is imported inside the hooks only, so that describing an architecture
or writing a report does not start TensorFlow.
"""

import functools
from typing import List, Sequence

from nas_tf import families
from nas_tf import space as space_lib
from nas_tf.spaces import conv

NAME = "conv"


def owns(arch: space_lib.Architecture) -> bool:
    """Whether `arch` has a convolutional network's decisions ("layer_0/filter_height", ...)."""
    names = arch.values
    return conv.anchor_name(0) in names and f"{conv.layer_prefix(0)}filter_height" in names


def conv_spec(arch: space_lib.Architecture, pool_at: Sequence[int] = ()):
    """The smallest convolutional space (`ConvSpaceSpec`) that holds `arch`.

    Its choices are the values `arch` uses; `pool_at` (not part of an
    architecture: the space fixes it) places max pools after those layers.

    Raises:
      ArchitectureError: if `arch` is not a convolutional network.
    """
    if not owns(arch) or not isinstance(arch.depth, int):
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
    """A title line, then one line per layer (`spec`: the space, for its pooling; default none)."""
    return "\n".join([f"Convolutional network, {arch.depth} layers:"] + conv_lines(arch, spec))


def build(arch, spec=None, input_shape=(32, 32, 3), num_classes=10, **unused):
    """The uncompiled Keras network from images to logits.

    Args:
      arch: the architecture.
      spec: its `ConvSpaceSpec` (pooling positions); default `conv_spec(arch)`.
      input_shape, num_classes: the images and classes.
      **unused: other families' `Architecture.build` settings (ignored).
    """
    return build_classifier(arch, spec or conv_spec(arch), input_shape, num_classes)


def build_classifier(arch, spec, input_shape, num_classes, weight_decay=None):
    """`nas_tf.children.convnet.build_convnet` (what `nas_tf.retrain` trains again)."""
    from nas_tf.children import convnet

    kwargs = {} if weight_decay is None else {"weight_decay": weight_decay}
    return convnet.build_convnet(arch, spec, input_shape, num_classes, **kwargs)


def make_task(spec, data, config):
    """A `ConvTask` with `config.child` (seeded) on image `data`."""
    from nas_tf import tasks
    from nas_tf.data import cifar10 as image_data

    if not isinstance(data, image_data.ImageData):
        raise ValueError(f"Space {spec.name!r} searches image classifiers: use an image dataset.")
    return tasks.ConvTask(spec.to_config(), data, config.child, int(config.verbose >= 2))


def supernet(spec, data, config):
    """The v1/v2 supernet (`nas_tf.supernets.conv`) and step-addressed batches of image `data`."""
    from nas_tf.data import cifar10 as image_data
    from nas_tf.supernets import conv as conv_supernet
    from nas_tf.supernets import image_batches

    if not isinstance(data, image_data.ImageData):
        raise ValueError(f"Space {spec.name!r} searches image classifiers: use an image dataset.")
    net = conv_supernet.build(spec, data.input_shape, data.num_classes,
                              weight_decay=config.child.weight_decay, seed=config.seed)
    shared = config.weight_sharing
    return net, image_batches.ImageBatches(data, shared.batch_size, seed=config.seed)


def diagram(arch, path, spec=None, title=None) -> str:
    """Zoph & Le 2017, Figure 7 style (`nas_tf.report.diagrams.conv_network`)."""
    from nas_tf.report import diagrams

    return diagrams.conv_network(arch, path, spec or conv_spec(arch), title)


FAMILY = families.register(families.Family(
    name=NAME,
    spaces={name: functools.partial(conv.get_space, name) for name in conv.SPACES},
    make_task=make_task,
    data_kind=families.IMAGE,
    metric="val_accuracy",
    reward="cifar10",
    flags={
        "search_depth": "space_overrides.depth",
        "search_filter_sizes": "space_overrides.filter_sizes",
        "search_num_filters": "space_overrides.num_filters",
        "search_strides": "space_overrides.strides",
        "search_pool_at": "space_overrides.pool_at",
        "search_curriculum_start": "curriculum.start",
        "search_curriculum_step": "curriculum.step",
        "search_curriculum_every": "curriculum.every",
    },
    space_flags={"search_strides": ("cifar10_v2",), "search_pool_at": ("cifar10_v3",)},
    owns=owns,
    summary=summary,
    build=build,
    build_classifier=build_classifier,
    spec_to_config=lambda spec: spec.to_config(),
    spec_from_config=conv.ConvSpaceSpec.from_config,
    diagram=diagram,
    supernet=supernet,
    diagram_file="best_network.png",
    diagram_title="Best convolutional network",
))
