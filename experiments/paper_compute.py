"""Benchmark: what each row of the paper's tables costs, from a measured child step.

For each CIFAR-10 row (v1, v2, v3, v3 + 40 filters) it builds a full-depth
network of the paper's space (sampled by an untrained controller with a fixed
seed: a typical point, not the paper's network), counts its parameters and
the multiply-adds of one forward pass analytically, and times training steps
(batch 64, 32x32x3, SGD, float32) on this machine. The measured step gives
this machine's sustained FLOP/s on such a network; the search and the final
training are then priced in FLOPs (training = 3 x forward) and converted to
time at this machine's rate and at an assumed rate for one modern GPU
(--gpu_tflops, sustained, not peak). The Penn Treebank rows are priced from
the language model's FLOPs per token (2 x the weights a token passes through,
x 3 for training) at the same GPU rate.

Usage:
    python experiments/paper_compute.py --steps=5 --gpu_tflops=40
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import nas_tf  # noqa: E402
from nas_tf import retrain  # noqa: E402
from nas_tf.children import convnet  # noqa: E402
from nas_tf.children import language_model as lm  # noqa: E402
from nas_tf.spaces import conv  # noqa: E402

# Zoph & Le 2017, sec. 4.1: 12,800 children of 50 epochs on 45,000 images.
SEARCH_CHILDREN, CHILD_EPOCHS, TRAIN_IMAGES, FULL_IMAGES = 12_800, 50, 45_000, 50_000
# nas_tf.retrain's defaults: a 16-point grid of 50 epochs, then 300 epochs on 50,000.
GRID_POINTS, GRID_EPOCHS, FINAL_EPOCHS = 16, 50, 300
# Sec. 4.2: up to 15,000 cells, children trained 35 epochs; PTB's training split.
PTB_CHILDREN, PTB_EPOCHS, PTB_TRAIN_TOKENS, PTB_VOCAB = 15_000, 35, 929_589, 10_000
# The character-level row (experiments/ptb_char_final.flags): about 5.0M training
# characters, 50 symbols; a 16-point grid of 4 epochs, then 30 epochs.
PTB_CHAR_TOKENS, PTB_CHAR_VOCAB, PTB_CHAR_EPOCHS = 5_017_000, 50, 16 * 4 + 30

ROWS = [  # (row, space, more filters, the paper's depth / parameters / error)
    ("v1", "cifar10_v1", 0, "15 / 4.2M / 5.50%"),
    ("v2", "cifar10_v2", 0, "20 / 2.5M / 6.01%"),
    ("v3", "cifar10_v3", 0, "39 / 7.1M / 4.47%"),
    ("v3 + 40 filters", "cifar10_v3", 40, "39 / 37.4M / 3.65%"),
]


def forward_flops(model) -> int:
    """2 x multiply-adds of one image's forward pass (convolutions and the classifier)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            h, w, cout = layer.output.shape[1:]
            kh, kw, cin, _ = layer.kernel.shape
            total += 2 * h * w * kh * kw * cin * cout
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * int(np.prod(layer.kernel.shape))
    return int(total)


def step_seconds(model, steps: int, batch: int = 64) -> float:
    """Median seconds of one SGD training step on random 32x32x3 images."""
    convnet.compile_child(model, 0.01, jit_compile=False)
    x = np.random.default_rng(0).normal(size=(batch, 32, 32, 3)).astype("float32")
    y = np.zeros((batch,), "int32")
    model.train_on_batch(x, y)  # Traces.
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="Timed training steps per network.")
    parser.add_argument("--gpu_tflops", type=float, default=40.0, help="Assumed sustained "
                        "training throughput of one modern GPU on these networks, TFLOP/s.")
    parser.add_argument("--seed", type=int, default=1, help="Controller seed of the networks.")
    args = parser.parse_args()
    gpu = args.gpu_tflops * 1e12
    rows = []
    for name, space, more, paper in ROWS:
        spec = conv.get_space(space)
        (arch,) = nas_tf.Controller(spec.space, seed=args.seed).sample(1, depth=spec.depth)
        arch, spec = retrain.widen(arch, spec, more)
        model = convnet.build_convnet(arch, spec, (32, 32, 3), 10)
        flops = forward_flops(model)
        seconds = step_seconds(model, args.steps)
        rate = 3 * flops * 64 / seconds  # This machine's sustained training FLOP/s.
        per_image = 3 * flops
        search = SEARCH_CHILDREN * CHILD_EPOCHS * TRAIN_IMAGES * per_image
        final = (GRID_POINTS * GRID_EPOCHS * TRAIN_IMAGES + FINAL_EPOCHS * FULL_IMAGES) * per_image
        rows.append({
            "row": name, "paper": paper, "depth": retrain.count_convolutions(model),
            "parameters": int(model.count_params()), "forward_gflops": flops / 1e9,
            "cpu_step_seconds": seconds, "cpu_gflops": rate / 1e9,
            "search_gpu_days": search / gpu / 86400, "final_gpu_hours": final / gpu / 3600,
            "search_cpu_years": search / rate / 86400 / 365,
        })
        print(json.dumps(rows[-1]), flush=True)
    for name, budget, tied in (("PTB 32M", 32e6, False), ("PTB 25M shared", 25e6, True),
                               ("PTB 54M shared", 54e6, True)):  # fmt: skip
        units = lm.units_for_budget(8, PTB_VOCAB, int(budget), 2, tied)
        per_token = 3 * 2 * (2 * 16 * units * units + units * PTB_VOCAB)  # Cells + softmax.
        child_units = lm.units_for_budget(8, PTB_VOCAB, lm.MEDIUM_PARAMETERS)
        child = 3 * 2 * (2 * 16 * child_units**2 + child_units * PTB_VOCAB)
        search = PTB_CHILDREN * PTB_EPOCHS * PTB_TRAIN_TOKENS * child
        final = 39 * PTB_TRAIN_TOKENS * per_token  # experiments/ptb_final.flags: 39 epochs.
        rows.append({"row": name, "units": units, "train_gflops_per_token": per_token / 1e9,
                     "search_gpu_days": search / gpu / 86400,
                     "final_gpu_hours": final / gpu / 3600})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    units = lm.units_for_budget(8, PTB_CHAR_VOCAB, 16_000_000, 2, False)
    per_token = 3 * 2 * (2 * 16 * units * units + units * PTB_CHAR_VOCAB)
    final = PTB_CHAR_EPOCHS * PTB_CHAR_TOKENS * per_token
    rows.append({"row": "PTB char 16M", "units": units, "train_gflops_per_token": per_token / 1e9,
                 "final_gpu_hours": final / gpu / 3600})  # fmt: skip
    print(json.dumps(rows[-1]), flush=True)
    print("\n| row | paper (depth / params / error) | ours: depth | params | forward GFLOP "
          "| CPU step (s) | search, GPU-days | final, GPU-hours |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows[: len(ROWS)]:
        print(f"| {r['row']} | {r['paper']} | {r['depth']} | {r['parameters'] / 1e6:.1f}M | "
              f"{r['forward_gflops']:.2f} | {r['cpu_step_seconds']:.2f} | "
              f"{r['search_gpu_days']:,.0f} | {r['final_gpu_hours']:,.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
