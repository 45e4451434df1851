"""Benchmark: a child built by nas_tf vs the same network written by hand.

Trains both side by side in one run (timed epochs alternate between the two
models; medians are reported), with XLA off and on, on synthetic 32x32x3
images through the same tf.data pipeline (whitening, pad-and-crop, flips),
and prints training images per second and the ratio built / hand. It also
checks that the two are the same network: with the built model's weights the
hand-written one gives the same logits.

The architecture is a fixed 6-layer point of cifar10_v1 with skip connections:

    layer  filter  filters  inputs
    0      3x3     36       image
    1      3x3     48       0
    2      5x5     36       0, 1
    3      3x3     64       2
    4      1x1     48       1, 3
    5      7x7     24       3, 4      -> global average pool -> dense

Usage:
    python experiments/child_throughput.py --images=1024 --repeats=5
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from nas_tf import children, data  # noqa: E402
from nas_tf import space as space_lib  # noqa: E402
from nas_tf.spaces import cifar10_v1  # noqa: E402

# (filter height, filter width, filters, inputs) per layer.
LAYERS = [
    (3, 3, 36, ()),
    (3, 3, 48, (0,)),
    (5, 5, 36, (0, 1)),
    (3, 3, 64, (2,)),
    (1, 1, 48, (1, 3)),
    (7, 7, 24, (3, 4)),
]


def architecture():
    values = {}
    for i, (fh, fw, nf, inputs) in enumerate(LAYERS):
        p = f"layer_{i}/"
        values.update({p + "filter_height": fh, p + "filter_width": fw, p + "num_filters": nf})
        values[p + "anchor"] = tuple(int(j in inputs) for j in range(i))
    return space_lib.Architecture(values, depth=len(LAYERS))


def hand_written(input_shape, num_classes, weight_decay=1e-4):
    """The same network, spelled out layer by layer in Keras."""
    reg = keras.regularizers.L2(weight_decay / 2)

    def block(x, fh, fw, nf):
        x = keras.layers.Conv2D(nf, (fh, fw), padding="same", use_bias=False,
                                kernel_regularizer=reg)(x)  # fmt: skip
        return keras.layers.ReLU()(keras.layers.BatchNormalization()(x))

    def cat(*xs):
        return keras.layers.Concatenate()(list(xs))

    image = keras.Input(input_shape)
    l0 = block(image, 3, 3, 36)
    l1 = block(l0, 3, 3, 48)
    l2 = block(cat(l0, l1), 5, 5, 36)
    l3 = block(l2, 3, 3, 64)
    l4 = block(cat(l1, l3), 1, 1, 48)
    l5 = block(cat(l3, l4), 7, 7, 24)
    x = keras.layers.GlobalAveragePooling2D()(l5)
    logits = keras.layers.Dense(num_classes, kernel_regularizer=reg, dtype="float32")(x)
    return keras.Model(image, logits, name="hand")


def timed_epoch(model, dataset, num_images):
    start = time.perf_counter()
    model.fit(dataset, epochs=1, shuffle=False, verbose=0)
    return num_images / (time.perf_counter() - start)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024, help="Synthetic training images.")
    parser.add_argument("--batch_size", type=int, default=64, help="Images per step.")
    parser.add_argument(
        "--repeats", type=int, default=5, help="Timed epochs per model, alternating (median)."
    )
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(args.images + 1, 32, 32, 3)).astype("uint8")
    y = rng.integers(0, 10, size=args.images + 1)
    images = data.from_arrays(x, y, num_valid=1, num_classes=10, name="synthetic")
    dataset = images.train_dataset(args.batch_size, seed=0)
    spec = cifar10_v1(depth=len(LAYERS))
    arch = architecture()

    rows = []
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        models = {
            "built": children.build_convnet(arch, spec, (32, 32, 3), 10),
            "hand": hand_written((32, 32, 3), 10),
        }
        # Same network: the hand-written model with the built one's weights
        # gives the same logits.
        models["hand"].set_weights(models["built"].get_weights())
        probe = x[:4].astype("float32")
        diff = np.abs(models["built"](probe) - models["hand"](probe)).max()
        speeds = {name: [] for name in models}
        for name, model in models.items():
            children.compile_child(model, jit_compile=jit)
            model.fit(dataset, epochs=1, shuffle=False, verbose=0)  # Tracing, compilation.
        for r in range(args.repeats):  # Side by side: alternate timed epochs ...
            order = list(models.items())
            for name, model in order[::-1] if r % 2 else order:  # ... and who goes first.
                speeds[name].append(timed_epoch(model, dataset, images.num_train))
        print(f"xla={jit}", {k: [round(v, 1) for v in vs] for k, vs in speeds.items()})
        med = {name: float(np.median(v)) for name, v in speeds.items()}
        rows.append((jit, med["built"], med["hand"], models["built"].count_params(), diff))

    print(f"python experiments/child_throughput.py {' '.join(argv)}".rstrip())
    header = ("XLA", "built img/s", "hand img/s", "built/hand", "params", "max|dlogit|")
    print("{:<5} {:>12} {:>11} {:>11} {:>9} {:>12}".format(*header))
    for jit, built, hand, params, diff in rows:
        print(
            f"{str(jit):<5} {built:>12.1f} {hand:>11.1f} {built / hand:>11.3f} "
            f"{params:>9,} {diff:>12.2e}"
        )
    print(f"XLA on / off (built): {rows[1][1] / rows[0][1]:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
