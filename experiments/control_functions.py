"""Benchmark: the paper's control experiment 1 (max and sin added to the cell space).

Zoph & Le 2017 (sec. 4.2) add `max` to the combinations and `sin` to the
activations of the recurrent-cell space and search again, to see whether the
search still finds a cell of the same quality. This program runs the same
weight-sharing search (`nas_tf.train --weight_sharing`, the cell supernet)
over both function sets, `--seeds` seeds each, and compares what they found:

* the derived best cell's validation perplexity on the shared weights (the
  same supernet size and steps for both sets, so comparable between them);
* how often the extended search's derived cells use max or sin (the
  uniform rate is 1/3 of combinations and 1/5 of activations);
* the best cells themselves, as text.

Each search is a subprocess writing `<output_dir>/<functions>_seed<N>/`; a
finished one (its `best_architecture.json` exists) is not run again.

    python experiments/control_functions.py --output_dir=runs/control_functions
    python experiments/control_functions.py --quick
"""

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, List

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.join(_HERE, "..")
FUNCTION_SETS = ("paper", "extended")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", default="runs/control_functions")
    p.add_argument("--data", default="text")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--cell_base", type=int, default=4)
    p.add_argument("--units", type=int, default=32)
    p.add_argument("--epochs", type=int, default=10, help="Shared-weight epochs.")
    p.add_argument("--steps_per_epoch", type=int, default=100)
    p.add_argument("--learning_rate", type=float, default=0.05, help="Shared weights' SGD rate.")
    p.add_argument("--derive_samples", type=int, default=30)
    p.add_argument("--quick", action="store_true", help="Tiny sizes, for tests.")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.units, args.epochs, args.steps_per_epoch, args.derive_samples = 1, 8, 2, 3, 4
    if min(args.seeds, args.units, args.epochs, args.steps_per_epoch, args.derive_samples) < 1:
        p.error("--seeds, --units, --epochs, --steps_per_epoch and --derive_samples must be positive.")
    return args


def command(args, functions: str, seed: int, out: str) -> List[str]:
    """The `nas_tf.train` command of one search."""
    return [
        sys.executable, "-m", "nas_tf.train", "--flagfile=experiments/ptb_shared.flags",
        f"--output_dir={out}", f"--data_name={args.data}", f"--seed={seed}",
        f"--search_cell_base={args.cell_base}", f"--search_cell_functions={functions}",
        f"--lm_units={args.units}", f"--shared_epochs={args.epochs}",
        f"--shared_steps_per_epoch={args.steps_per_epoch}",
        f"--shared_learning_rate={args.learning_rate}",
        f"--shared_controller_samples={max(4, args.steps_per_epoch // 2)}",
        f"--shared_derive_samples={args.derive_samples}", "--verbose=0",
    ]  # fmt: skip


def uses(values: Dict[str, object]) -> Dict[str, int]:
    """How many of a cell's combinations are max and activations are sin."""
    combine = [v for k, v in values.items() if k.endswith("_combine")]
    activation = [v for k, v in values.items() if k.endswith("_activation")]
    return {"max": combine.count("max"), "sin": activation.count("sin"),
            "combinations": len(combine), "activations": len(activation)}  # fmt: skip


def summarize(out: str) -> dict:
    """The derived cells of one finished search: perplexities and their use of max / sin."""
    derived = [json.loads(line) for line in open(os.path.join(out, "derive.jsonl")) if line.strip()]
    best = min(derived, key=lambda r: r["perplexity"])
    counts = [uses(r["architecture"]["values"]) for r in derived]
    return {
        "best_perplexity": best["perplexity"],
        "best_uses": uses(best["architecture"]["values"]),
        "best_values": best["architecture"]["values"],
        "max_share": sum(c["max"] for c in counts) / sum(c["combinations"] for c in counts),
        "sin_share": sum(c["sin"] for c in counts) / sum(c["activations"] for c in counts),
    }


def describe(values: dict) -> str:
    from nas_tf import space as space_lib
    from nas_tf.spaces import cell as cell_space

    arch = space_lib.Architecture(values)
    return str(cell_space.CellDescription.from_architecture(arch))


def report(args, results: Dict[str, List[dict]], seconds: float) -> str:
    lines = ["# Control experiment 1: max and sin added to the cell space", "",
             "| functions | searches | best derived cell: shared-weight val ppl | its max / sin | "
             "max among derived combinations | sin among derived activations |",
             "| --- " * 6 + "|"]  # fmt: skip
    for functions in FUNCTION_SETS:
        rs = results[functions]
        ppl = [r["best_perplexity"] for r in rs]
        spread = f"{np.mean(ppl):.1f} ± {np.std(ppl, ddof=1):.1f}" if len(ppl) > 1 else f"{ppl[0]:.1f}"
        best = ", ".join(f"{r['best_uses']['max']}/{r['best_uses']['sin']}" for r in rs)
        lines.append(f"| {functions} | {len(rs)} | {spread} | {best} | "
                     f"{np.mean([r['max_share'] for r in rs]):.0%} | "
                     f"{np.mean([r['sin_share'] for r in rs]):.0%} |")  # fmt: skip
    lines += ["", "Uniform draws use max in 1/3 of the extended combinations and sin in 1/5 of "
              "its activations.", ""]  # fmt: skip
    for functions in FUNCTION_SETS:
        for seed, r in enumerate(results[functions], 1):
            lines += [f"{functions}, seed {seed} (val ppl {r['best_perplexity']:.1f}):", "```",
                      describe(r["best_values"]), "```"]  # fmt: skip
    lines += ["", f"Command: `python experiments/control_functions.py {' '.join(sys.argv[1:])}`; "
              f"{seconds / 60:.1f} min of searching.", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, _ROOT)
    from nas_tf import durable

    results: Dict[str, List[dict]] = {f: [] for f in FUNCTION_SETS}
    seconds = 0.0
    for seed in range(1, args.seeds + 1):
        for functions in FUNCTION_SETS:
            out = os.path.abspath(os.path.join(args.output_dir, f"{functions}_seed{seed}"))
            timing = os.path.join(out, "control_seconds.json")
            if not os.path.exists(os.path.join(out, "best_architecture.json")):
                start = time.time()
                subprocess.run(command(args, functions, seed, out), cwd=_ROOT, check=True)
                durable.atomic_write_text(timing, json.dumps({"seconds": time.time() - start}))
                print(f"[{functions} seed {seed}] searched", flush=True)
            if os.path.exists(timing):
                seconds += json.load(open(timing))["seconds"]
            results[functions].append(summarize(out))
    text = report(args, results, seconds)
    durable.atomic_write_text(os.path.join(args.output_dir, "report.md"), text)
    print(text)


if __name__ == "__main__":
    main()
