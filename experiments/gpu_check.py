"""GPU proof of issue 9, one program for a machine with one GPU (about 8 minutes on an H200).

Prints, side by side in one run:

1. training throughput (images/s) of a child built by nas_tf vs the same
   network written by hand in plain Keras, for a v1 15-layer child and a v3
   39-layer child (max pooling after layers 13 and 24, the space's default) at
   batch 128, with XLA off/on and float32/mixed precision, and the ratio
   built / hand (the issue asks for >= 0.95 in every setting);
2. the fraction of the GPU's peak that the best setting reaches: FLOPs per
   training step (counted from the convolutions and the classifier: forward
   2*MACs, training 3x forward) over the device's peak (a table by device
   name, or --peak_tflops);
3. controller sampling and update time on the GPU vs the CPU
   (experiments/controller_speed.py run twice, the CPU run with
   CUDA_VISIBLE_DEVICES="");
4. a 4-child search through `python -m nas_tf.launch` on the GPU.

Usage (on the device; writes its report to $OUT/gpu_check.txt too when $OUT is set):
    python experiments/gpu_check.py                 # the full check
    python experiments/gpu_check.py --quick         # seconds on a CPU: does it run?

Nothing here has been run on a GPU in the session that wrote it (none was lent);
the first session with a device runs it and records the output in docs/distributed.md.
"""

import argparse
import datetime
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from nas_tf import space as space_lib  # noqa: E402
from nas_tf.children import base, convnet  # noqa: E402
from nas_tf.spaces import conv  # noqa: E402

# Dense peak TFLOP/s by device-name fragment: (TF32 tensor cores, FP16/BF16 tensor cores).
PEAKS = {
    "H200": (494.7, 989.4),
    "H100": (494.7, 989.4),
    "A100": (156.0, 312.0),
    "L4": (60.0, 121.0),
    "V100": (15.7, 125.0),
    "T4": (8.1, 65.0),
}

LINES = []


def say(text=""):
    print(text, flush=True)
    LINES.append(text)


def random_architecture(spec: conv.ConvSpaceSpec, seed: int) -> space_lib.Architecture:
    """A fixed point of the space: each decision drawn from a seeded generator."""
    rng = np.random.default_rng(seed)
    values = {}
    for d in spec.space.decisions:
        if isinstance(d, space_lib.Anchor):
            values[d.name] = tuple(int(b) for b in rng.random(len(d.sources)) < 0.3)
        else:
            values[d.name] = d.values[rng.integers(d.num_choices)]
    return spec.space.validate(space_lib.Architecture(values, depth=spec.space.max_depth))


def hand_written(layers, pools, input_shape, num_classes, policy):
    """The same network in plain Keras, from the decoded layer list (no nas_tf builder code)."""
    dt = {"dtype": policy} if policy else {}
    image = keras.Input(input_shape)
    outs, stages = [], []

    def pooled(t, times):
        for _ in range(times):
            t = keras.layers.MaxPooling2D(2, 2, padding="same", **dt)(t)
        return t

    def cat(ts):
        if len(ts) == 1:
            return ts[0]
        h = max(t.shape[1] for t in ts)
        w = max(t.shape[2] for t in ts)
        fixed = []
        for t in ts:
            dh, dw = h - t.shape[1], w - t.shape[2]
            if dh or dw:
                t = keras.layers.ZeroPadding2D(((dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2)))(t)
            fixed.append(t)
        return keras.layers.Concatenate()(fixed)

    for layer in layers:
        srcs = [(image, 0)] if not layer.inputs else [(outs[j], stages[j]) for j in layer.inputs]
        x = cat([pooled(t, layer.stage - s) for t, s in srcs])
        x = keras.layers.Conv2D(layer.num_filters, (layer.filter_height, layer.filter_width),
                                strides=(layer.stride_height, layer.stride_width), padding="same",
                                use_bias=False, kernel_regularizer=keras.regularizers.L2(5e-5), **dt)(x)  # fmt: skip
        x = keras.layers.BatchNormalization(**dt)(x)
        outs.append(keras.layers.ReLU(**dt)(x))
        stages.append(layer.stage)
    used = {j for layer in layers for j in layer.inputs}
    final = len(pools)
    x = cat([pooled(outs[i], final - stages[i]) for i in range(len(layers)) if i not in used])
    x = keras.layers.GlobalAveragePooling2D(**dt)(x)
    logits = keras.layers.Dense(num_classes, kernel_regularizer=keras.regularizers.L2(5e-5), dtype="float32")(x)
    return keras.Model(image, logits)


def train_flops(model, batch):
    """FLOPs of one training step: 3 x forward, forward = 2 x multiply-adds of convs and dense."""
    macs = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            macs += h * w * kh * kw * cin * cout
        elif isinstance(layer, keras.layers.Dense):
            macs += int(np.prod(layer.kernel.shape))
    return 3 * 2 * macs * batch


def throughput(model, batch, steps, jit, placement):
    with placement.scope():
        convnet.compile_child(model, 0.01, jit_compile=jit, placement=placement)
    x = tf.random.uniform((batch, 32, 32, 3))
    y = tf.random.uniform((batch,), 0, 10, tf.int32)
    ds = tf.data.Dataset.from_tensors((x, y)).repeat().prefetch(4)
    model.fit(ds, steps_per_epoch=max(2, steps // 5), epochs=1, verbose=0)  # Compile, warm up.
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return batch * steps / (time.perf_counter() - start)


def child_benchmark(args):
    say("## 1. Built child vs hand-written Keras, training images/s")
    gpu = bool(tf.config.list_logical_devices("GPU"))
    specs = {
        "v1 15 layers": conv.cifar10_v1(depth=args.v1_depth),
        "v3 39 layers": conv.cifar10_v3(depth=args.v3_depth, **args.v3_overrides),
    }
    say(f"{'child':<14} {'xla':<4} {'precision':<10} {'built':>9} {'hand':>9} {'ratio':>6}  GFLOP/step")
    best = None
    for name, spec in specs.items():
        arch = random_architecture(spec, seed=1)
        layers = convnet.decode(arch, spec)
        settings = [(jit, mixed) for jit in (False, True) for mixed in (False, True)]
        for jit, mixed in settings:
            keras.backend.clear_session()
            policy = base.dtype_policy(mixed)
            where = base.Placement(tf.distribute.get_strategy(), policy)
            built = convnet.build_convnet(arch, spec, (32, 32, 3), 10, weight_decay=1e-4, dtype_policy=policy)
            hand = hand_written(layers, spec.pool_positions(arch.depth), (32, 32, 3), 10, policy)
            if built.count_params() != hand.count_params():  # Not the same network: no ratio.
                say(f"{name:<14} hand-written baseline has {hand.count_params():,} parameters, "
                    f"the built child {built.count_params():,}: the baseline does not match this "
                    "space's builder (update hand_written); skipped.")  # fmt: skip
                break  # The other settings of this child too.
            b = throughput(built, args.batch, args.steps, jit, where)
            h = throughput(hand, args.batch, args.steps, jit, where)
            flops = train_flops(built, args.batch)
            prec = policy or "float32"
            say(f"{name:<14} {'on' if jit else 'off':<4} {prec:<10} {b:9.0f} {h:9.0f} {b / h:6.3f}  {flops / 1e9:.1f}")
            tflops = b / args.batch * flops / 1e12
            if best is None or tflops > best[0]:
                best = (tflops, name, jit, prec)
    if best:
        say("## 2. Fraction of the device's peak (best setting above)")
        device = "CPU"
        if gpu:
            details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
            device = details.get("device_name", "GPU")
        peaks = next((v for k, v in PEAKS.items() if k in device), None)
        if args.peak_tflops:
            peaks = (args.peak_tflops, args.peak_tflops)
        tflops, name, jit, prec = best
        line = f"best: {name}, XLA {'on' if jit else 'off'}, {prec}: {tflops:.1f} TFLOP/s on {device}"
        if peaks:
            peak = peaks[1] if prec != "float32" else peaks[0]
            line += f" = {100 * tflops / peak:.1f}% of its {peak:g} TFLOP/s dense peak"
        say(line)


def run(cmd, env=None, timeout=300):
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        say(f"    timed out after {timeout} s (--section_timeout): {' '.join(cmd[1:3])}")
        return
    for line in (done.stdout + done.stderr).splitlines():
        if not line.startswith(("WARNING", "I0000", "W0000", "E0000")):
            say("    " + line)
    say(f"    (exit {done.returncode}, {time.perf_counter() - started:.0f} s)")


def controller_benchmark(args):
    say("## 3. Controller sampling and update, GPU vs CPU")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "controller_speed.py")
    cmd = [sys.executable, script, f"--repeats={args.controller_repeats}", f"--xla={int(not args.quick)}"]
    if args.quick:
        cmd.append("--spaces=1")
    for label, env in (("GPU", dict(os.environ)), ("CPU", dict(os.environ, CUDA_VISIBLE_DEVICES=""))):
        say(f"  {label}:")
        run(cmd, env, timeout=args.section_timeout)


def search_through_launch(args):
    say("## 4. A 4-child search through nas_tf.launch")
    out = os.path.join(os.environ.get("OUT", "/tmp"), "gpu_check_search")
    cmd = [sys.executable, "-m", "nas_tf.launch", "--workers=1", "--",
           "--flagfile=experiments/cifar_quick.flags", "--search_max_trials=4",
           f"--output_dir={out}", "--overwrite"]  # fmt: skip
    if args.quick:
        cmd += ["--search_depth=2", "--search_num_filters=2", "--child_epochs=1"]
    run(cmd, timeout=args.section_timeout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Tiny settings: checks the program runs (CPU).")
    parser.add_argument("--batch", type=int, default=128, help="Images per step.")
    parser.add_argument("--steps", type=int, default=100, help="Timed training steps per setting.")
    parser.add_argument("--peak_tflops", type=float, default=None, help="Override the device's peak.")
    parser.add_argument("--section_timeout", type=int, default=240, help="Seconds per subprocess section.")
    parser.add_argument("--skip", default="", help="Comma-separated sections to skip: child,controller,search.")
    args = parser.parse_args()
    args.v1_depth, args.v3_depth, args.v3_overrides = 15, 39, {}
    args.controller_repeats = 10
    if args.quick:
        args.batch, args.steps, args.v1_depth, args.v3_depth = 8, 3, 3, 4
        args.v3_overrides = {"pool_at": (2,)}
        args.controller_repeats = 2
    skip = set(filter(None, args.skip.split(",")))
    gpus = tf.config.list_physical_devices("GPU")
    say(f"# nas_tf GPU check, {datetime.date.today()}, TensorFlow {tf.__version__}, Keras {keras.__version__}")
    say(f"devices: {[tf.config.experimental.get_device_details(g).get('device_name', g.name) for g in gpus] or 'CPU only'}")
    started = time.perf_counter()
    if "child" not in skip:
        child_benchmark(args)
    if "controller" not in skip:
        controller_benchmark(args)
    if "search" not in skip:
        search_through_launch(args)
    say(f"total {time.perf_counter() - started:.0f} s")
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "gpu_check.txt"), "w") as f:
            f.write("\n".join(LINES) + "\n")


if __name__ == "__main__":
    main()
