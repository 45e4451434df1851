r"""Benchmark: resident memory of a search does not grow with the number of children.

Runs a tiny convolutional search on the embedded digits and reads the
process's resident set size (VmRSS) after every child. Prints the RSS after
child 10 and after the last, and their ratio (the target is <= 1.2).

  python experiments/search_memory.py --children=100
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def rss_mib() -> float:
    """This process's resident set size in MiB (Linux /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("VmRSS not found in /proc/self/status")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=100, help="Children to train.")
    parser.add_argument("--early", type=int, default=10, help="Child after which to take the reference.")
    parser.add_argument(
        "--in_process", action="store_true",
        help="Train children in the search's own process (no worker), to compare.",
    )  # fmt: skip
    args = parser.parse_args()

    from nas_tf import data as data_lib
    from nas_tf import search, tasks
    from nas_tf.children import convnet
    from nas_tf.spaces import conv

    readings = []

    class Measured(search.ChildSearch):
        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            readings.append(rss_mib())

    spec = conv.get_space("cifar10_v1", depth=3, num_filters=(4, 8), filter_sizes=(1, 3))
    data = data_lib.load("digits")
    with tempfile.TemporaryDirectory() as out:
        task = tasks.ConvTask(spec.to_config(), data, convnet.ChildConfig(epochs=1, batch_size=128))
        tuner = Measured(
            task, out, verbose=0, isolate_children=not args.in_process,
            max_trials=args.children, seed=1, directory=out, project_name="search",
            reuse_rewards=False,
        )  # fmt: skip
        tuner.oracle.verbose = 0
        try:
            tuner.search(verbose=0)
        finally:
            tuner.close()
    early, last = readings[args.early - 1], readings[-1]
    mode = "in the search process" if args.in_process else "children in a recycled worker"
    print(f"Search-process memory, {mode}:")
    print(f"{'children':>9} {'RSS MiB':>9}")
    for n in sorted({1, args.early, len(readings) // 2, len(readings)}):
        print(f"{n:>9} {readings[n - 1]:9.1f}")
    print(f"RSS after {len(readings)} / after {args.early}: {last / early:.3f} (target <= 1.2)")


if __name__ == "__main__":
    main()
