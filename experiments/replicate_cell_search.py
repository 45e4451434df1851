"""Benchmark: the paper's recurrent-cell claim, end to end, against its baselines.

Zoph & Le 2017 (sec. 4.2, Table 2) report that the cell their controller
found beats LSTM language models of the same size. This program replays the
whole pipeline at a size chosen by flags, from one command, on one or more
datasets (`--data=text,text_char`: word and character level):

1. Search. The `ptb_cell` space (base 4 by default, 8 as in the paper;
   `--cell_functions=extended` adds max and sin, the paper's control
   experiment 1), children = small 2-layer language models trained a few
   batches, reward 80 / (validation perplexity)^2 (`nas_tf.tasks.CellTask`,
   the search's own child). Four methods, the same child settings and seeds;
   the three multi-trial ones with the same budget of children:
     controller  `nas_tf.search.run` with the library defaults (the
                 `default` preset: `ControllerConfig()`, `ReinforceConfig()`,
                 re-use of known rewards);
     paper       the same search with the controller's `paper` preset (Zoph
                 & Le's method where it is specified: plain REINFORCE, Adam
                 0.0005 for cells, every sample trained, nothing mutated);
                 against random search this is the paper's control
                 experiment 2;
     random      uniform random cells without repeats (numpy), as
                 experiments/nasbench201.py runs random search, each trained
                 by the same `CellTask`;
     shared      the weight-sharing search (ENAS; `nas_tf.search.run` with
                 `weight_sharing`, experiments/ptb_shared.flags' controller):
                 one supernet of --child_units trained --shared_epochs x
                 --shared_steps_per_epoch steps, its best cell the derived
                 one (`best_architecture.json`).
2. Final training (`nas_tf.train_lm.run`). The best cell of every search,
   `keras.layers.LSTM`, the hand-written LSTM-like cell (`lstm_like()`) and
   the paper's cell (experiments/paper/ptb_cell_base8.json), each as a full
   language model with the same parameter count (the width of each is
   solved so that it lands within 2 % of the LSTM's at --final_units), the
   same recipe (--final_optimizer, --final_learning_rate, --final_init_scale,
   --final_dropout: the one experiments/lm_recipe.py chooses; with
   --final_init_scales each model's weight range is chosen on one epoch of
   validation) and --final_seeds training seeds. Then milliseconds per step,
   measured on fresh copies of every model in alternating rounds
   (`cell_vs_lstm.step_times`), so that load from other processes weighs on
   all alike.
3. Report: `<output_dir>/report.md`: per dataset the tables (test perplexity,
   or bits per character at character level), a verdict computed from them
   (each comparison's difference of means against the larger sample
   standard deviation), the settings and compute time; the command and its
   wall time; and a plot per dataset (test figure per model with error bars;
   the best reward over children, per multi-trial method). With one dataset
   everything is in <output_dir> as it has always been; with several, each
   dataset's searches and final models are in <output_dir>/<data>/.

Nothing finished is redone: a search resumes (the controller's and the
weight-sharing search from their own state, random search from its
`history.jsonl`), a finished search writes `summary.json` and is skipped,
every final model writes `results.json` and is skipped, and the timing
writes `timing.json`. Run the same command again after a kill. A larger
--budget extends finished multi-trial searches (the controller continues its
policy; random search draws the same sequence further), and a final model
whose best cell or settings changed is trained again.

Usage:
    python experiments/replicate_cell_search.py --quick          # a few minutes
    python experiments/replicate_cell_search.py --data=text,text_char   # the laptop run
    python experiments/replicate_cell_search.py --cell_base=8 --budget=300 \\
        --child_units=64 --child_epochs=2 --child_max_train_batches= ...   # see docs
"""

import argparse
import copy
import dataclasses
import json
import math
import os
import shlex
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, ".."))

from nas_tf import durable  # noqa: E402
from nas_tf import history  # noqa: E402
from nas_tf import space as space_lib  # noqa: E402
from nas_tf.spaces import cell as cell_space  # noqa: E402 (plain Python, no TensorFlow)

PAPER_CELL = os.path.join(_HERE, "paper", "ptb_cell_base8.json")
DATASETS = ("text", "text_char", "ptb", "ptb_char")
# Multi-trial searches (a budget of trained children) -> the controller preset (None: random).
MULTI_TRIAL = {"controller": "default", "paper": "paper", "random": None}
SHARED = "shared"  # The weight-sharing search.
METHODS = tuple(MULTI_TRIAL) + (SHARED,)
# What the tables call the final models of each search method.
SEARCHED = {
    "controller": "controller's best cell",
    "paper": "paper preset's best cell",
    "random": "random search's best cell",
    SHARED: "weight-sharing search's derived cell",
}
# Final models that are not a search's: group -> what the tables call them.
BASELINES = {
    "lstm": "keras.layers.LSTM",
    "lstm_like": "LSTM-like cell (lstm_like)",
    "paper_cell": "paper's cell (base 8)",
}
# The verdict's comparisons: (group, group it is compared with, how the sentence names each).
COMPARISONS = (
    ("controller", "random", "Controller's cells", "random search's"),
    ("controller", "lstm", "Controller's cells", "keras.layers.LSTM's"),
    ("paper", "random", "The paper preset's cells", "random search's"),
    ("shared", "random", "The weight-sharing search's cells", "random search's"),
    ("paper_cell", "lstm", "The paper's cell", "keras.layers.LSTM's"),
)
TOLERANCE = 0.02  # Final models' parameter counts may differ from the target by 2 %.
SUMMARY = "summary.json"
OPTIMIZERS = ("sgd", "adam")
# The weight-sharing search's controller: experiments/ptb_shared.flags' (ENAS's PTB
# controller: logits 2.5 tanh, entropy bonus 1e-3).
SHARED_TANH_CONSTANT = 2.5
SHARED_ENTROPY_WEIGHT = 1e-3


# -- settings ------------------------------------------------------------------


def parse_args(argv=None):
    """Command-line flags (--quick replaces the sizes by a few-minute run's)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", default="runs/replicate_cell_search",
                   help="Where searches, final models and the report go (resumed from); with "
                   "several --data, each dataset's in <output_dir>/<data>/.")
    p.add_argument("--quick", action="store_true", help="Tiny sizes: the whole pipeline in a "
                   "few minutes (for tests); overrides the size flags.")
    p.add_argument("--data", default="text",
                   help="Comma-separated datasets, each run through the whole pipeline: the "
                   "embedded corpus (text, text_char) or a prepared Penn Treebank (ptb, "
                   "ptb_char, with --data_dir).")
    p.add_argument("--data_dir", help="TFDS directory with a prepared Penn Treebank.")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"Comma-separated search methods: {', '.join(METHODS)}.")
    p.add_argument("--seeds", type=int, default=3, help="Searches per method (seeds 1..n).")
    p.add_argument("--only_seed", type=int, default=0, help="Run only the searches of this "
                   "seed (0: all); with --searches_only, to spread searches over processes.")
    p.add_argument("--searches_only", action="store_true", help="Stop after the searches "
                   "(no final training, no report): run the searches of each method or seed "
                   "as separate processes or machines sharing --output_dir, then the whole "
                   "command, which finds them done.")
    p.add_argument("--final_shard", default="", help="K/N: train only the final runs K, "
                   "K+N, K+2N, ... (each a model and a training seed, counted from 1) of each "
                   "dataset, then stop without the report: after the searches, N processes "
                   "sharing --output_dir split the final training, then the whole command finds "
                   "it done and writes the report.")
    p.add_argument("--budget", type=int, default=60, help="Children per multi-trial search "
                   "(distinct ones, except the paper preset's, which trains repeats too).")
    p.add_argument("--cell_base", type=int, default=4, help="Leaves of the searched cell "
                   "(paper: 8).")
    p.add_argument("--cell_functions", default=cell_space.PAPER,
                   choices=list(cell_space.FUNCTIONS), help="The nodes' functions: 'paper' "
                   "(add, elem_mult; identity, tanh, sigmoid, relu) or 'extended' (max and "
                   "sin added: the paper's control experiment 1).")
    p.add_argument("--child_units", type=int, default=32, help="Width of every child (and "
                   "of the weight-sharing supernet).")
    p.add_argument("--child_epochs", type=int, default=1, help="Epochs per child (paper: 35).")
    p.add_argument("--child_max_train_batches", type=int, default=60,
                   help="Batches per child epoch (0: the whole training split).")
    p.add_argument("--child_max_eval_batches", type=int, default=20,
                   help="Validation batches per child (0: the whole split).")
    p.add_argument("--child_optimizer", default="sgd", choices=OPTIMIZERS,
                   help="Children's optimizer (sgd: Zaremba et al.'s).")
    p.add_argument("--child_learning_rate", type=float, default=1.0,
                   help="Children's learning rate (SGD 1.0; Adam e.g. 0.002).")
    p.add_argument("--child_init_scale", type=float, default=0.05,
                   help="Children's (and the supernet's) weights start in [-s, s].")
    p.add_argument("--isolate_children", type=int, choices=(0, 1), default=1,
                   help="1: children train in a recycled worker process (the search's "
                   "default); 0: in this process.")
    p.add_argument("--shared_epochs", type=int, default=10,
                   help="Weight-sharing search: epochs (each: shared-weight steps, then the "
                   "controller's samples; the first quarter draws uniformly).")
    p.add_argument("--shared_steps_per_epoch", type=int, default=100,
                   help="Weight-sharing search: shared-weight steps per epoch.")
    p.add_argument("--shared_learning_rate", type=float, default=0.05,
                   help="Weight-sharing search: the shared weights' SGD (Nesterov 0.9, cosine "
                   "to 0.0005, clip 5) starts here (ENAS: 0.05; experiments/ptb_shared.flags' "
                   "0.25 diverged at 32 units on the embedded corpus).")
    p.add_argument("--shared_batch_size", type=int, default=20,
                   help="Weight-sharing search: windows of 35 tokens per step.")
    p.add_argument("--shared_controller_samples", type=int, default=50,
                   help="Weight-sharing search: controller samples per epoch, each rewarded "
                   "on one validation minibatch.")
    p.add_argument("--shared_derive_samples", type=int, default=30,
                   help="Weight-sharing search: cells drawn from the final policy and ranked "
                   "on the whole validation split; the best is the search's cell.")
    p.add_argument("--final_seeds", type=int, default=3, help="Training seeds per final model.")
    p.add_argument("--final_units", type=int, default=128, help="Width of the LSTM; its "
                   "parameter count is every final model's target.")
    p.add_argument("--final_epochs", type=int, default=6, help="Epochs of every final model.")
    p.add_argument("--final_max_train_batches", type=int, default=0,
                   help="Batches per final epoch (0: the whole training split).")
    p.add_argument("--final_max_eval_batches", type=int, default=0,
                   help="Validation and test batches of final models (0: whole splits).")
    p.add_argument("--final_lr_decay_after", type=int, default=4,
                   help="Final models: epochs at the full learning rate, then x0.8 per epoch.")
    p.add_argument("--final_optimizer", default="sgd", choices=OPTIMIZERS,
                   help="Final models' optimizer (sgd: Zaremba et al.'s).")
    p.add_argument("--final_learning_rate", type=float, default=1.0,
                   help="Final models' learning rate (SGD 1.0; Adam e.g. 0.002).")
    p.add_argument("--final_init_scale", type=float, default=0.05,
                   help="Final models' weights start in [-s, s] (Zaremba et al.: 0.05).")
    p.add_argument("--final_init_scales", default="", help="Comma-separated weight ranges: "
                   "each final model takes the one with the lowest validation perplexity after "
                   "one epoch at training seed 0 (the paper tuned each final model's range; one "
                   "range does not suit every cell and width); empty: --final_init_scale for all.")
    p.add_argument("--final_dropout", type=float, default=None,
                   help="Final models' input and output dropout (default: --dropout).")
    p.add_argument("--dropout", type=float, default=0.5,
                   help="Input and output dropout of children (and the supernet) and, unless "
                   "--final_dropout, of final models.")
    p.add_argument("--recipes", default="", help="Comma-separated recipe.json files of "
                   "experiments/lm_recipe.py: for the dataset each was measured on, its chosen "
                   "optimizer, learning rate, weight range and dropout replace the children's and "
                   "final models' flags, and its units, epochs and decay epoch the final models' "
                   "(so that one command runs word and character level, each on its own recipe).")
    p.add_argument("--timing_rounds", type=int, default=3, help="Alternating timing rounds.")
    p.add_argument("--timing_steps", type=int, default=10, help="Steps per model and round.")
    p.add_argument("--plot", default="", help="Where the plot goes (default: "
                   "cell_search_replication.png in each dataset's directory; with several "
                   "datasets a given path gets _<data> before its extension).")
    p.add_argument("--verbose", type=int, choices=(0, 1), default=1,
                   help="1: a line per child and per final model.")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.budget, args.final_seeds = 2, 3, 2
        args.child_units, args.child_epochs = 8, 1
        args.child_max_train_batches, args.child_max_eval_batches = 3, 2
        args.shared_epochs, args.shared_steps_per_epoch, args.shared_batch_size = 2, 3, 4
        args.shared_controller_samples, args.shared_derive_samples = 3, 3
        args.final_units, args.final_epochs = 48, 1  # 48: base 8 within 2 % at both levels.
        args.final_max_train_batches, args.final_max_eval_batches = 4, 2
        args.timing_rounds, args.timing_steps = 1, 2
        args.isolate_children = 0
    args.datasets = [d.strip() for d in args.data.split(",") if d.strip()]
    bad = [d for d in args.datasets if d not in DATASETS]
    if bad or not args.datasets or len(set(args.datasets)) != len(args.datasets):
        p.error(f"--data: give distinct names from {list(DATASETS)}, got {args.data!r}.")
    args.data = args.datasets[0]
    try:
        args.recipes = read_recipes(args.recipes, args.datasets)
    except ValueError as e:
        p.error(f"--recipes: {e}")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in args.methods if m not in METHODS]
    if bad or not args.methods:
        p.error(f"--methods: unknown {bad}; choose from {list(METHODS)}.")
    for name in ("seeds", "budget", "child_units", "child_epochs", "final_seeds",
                 "final_units", "final_epochs", "timing_rounds", "timing_steps",
                 "shared_epochs", "shared_steps_per_epoch", "shared_batch_size",
                 "shared_controller_samples", "shared_derive_samples"):  # fmt: skip
        if getattr(args, name) < 1:
            p.error(f"--{name} must be positive, got {getattr(args, name)}.")
    for name in ("child_max_train_batches", "child_max_eval_batches",
                 "final_max_train_batches", "final_max_eval_batches"):  # fmt: skip
        if getattr(args, name) < 0:
            p.error(f"--{name} must be 0 (all) or positive, got {getattr(args, name)}.")
    for name in ("child_learning_rate", "child_init_scale", "final_learning_rate",
                 "final_init_scale", "shared_learning_rate"):  # fmt: skip
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            p.error(f"--{name} must be positive, got {value}.")
    if not 0 <= args.only_seed <= args.seeds:
        p.error(f"--only_seed must be 0 (all) or in 1..{args.seeds}, got {args.only_seed}.")
    if args.only_seed and not args.searches_only:
        p.error("--only_seed runs part of the searches; give --searches_only with it.")
    try:
        args.final_shard = parse_shard(args.final_shard)
    except ValueError as e:
        p.error(f"--final_shard: {e}")
    if args.final_shard and args.searches_only:
        p.error("--final_shard trains after the searches; --searches_only stops before.")
    if args.cell_base < 2 or args.cell_base & (args.cell_base - 1):
        p.error(f"--cell_base must be a power of two >= 2, got {args.cell_base}.")
    if args.final_dropout is None:
        args.final_dropout = args.dropout
    try:
        args.final_init_scales = [float(v) for v in args.final_init_scales.split(",") if v.strip()]
    except ValueError:
        p.error(f"--final_init_scales: give comma-separated numbers, got {args.final_init_scales!r}.")
    if not all(math.isfinite(v) and v > 0 for v in args.final_init_scales):
        p.error(f"--final_init_scales must be positive, got {args.final_init_scales}.")
    for name in ("dropout", "final_dropout"):
        if not 0 <= getattr(args, name) < 1:
            p.error(f"--{name} must be in [0, 1), got {getattr(args, name)}.")
    args.root_dir, args.plot_flag = args.output_dir, args.plot
    args.plot = args.plot or os.path.join(args.output_dir, "cell_search_replication.png")
    return args


def parse_shard(text: str):
    """(k, n) of a --final_shard "K/N" with 1 <= K <= N, or None for ""."""
    if not text:
        return None
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"give K/N, e.g. 1/2, got {text!r}.") from None
    if not 1 <= k <= n:
        raise ValueError(f"K/N needs 1 <= K <= N, got {text!r}.")
    return k, n


def shard(runs: Sequence, final_shard) -> list:
    """The runs of shard (k, n): every n-th from the k-th (all runs for None)."""
    if final_shard is None:
        return list(runs)
    k, n = final_shard
    return list(runs)[k - 1::n]


def read_recipes(paths: str, datasets: Sequence[str]) -> Dict[str, dict]:
    """{dataset: recipe.json of experiments/lm_recipe.py} for comma-separated `paths`.

    Raises:
      ValueError: a file that is missing or not a recipe, one for a dataset
        outside `datasets`, or two for one dataset.
    """
    out: Dict[str, dict] = {}
    for path in (p.strip() for p in paths.split(",") if p.strip()):
        try:
            with open(path, encoding="utf-8") as f:
                recipe = json.load(f)
            name = recipe["args"]["data"]
            missing = [k for k in ("optimizer", "learning_rate", "init_scale", "dropout")
                       if k not in recipe["chosen"]]  # fmt: skip
            missing += [k for k in ("units", "epochs", "lr_decay_after") if k not in recipe["args"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path} is not a recipe.json of experiments/lm_recipe.py ({e}).")
        if missing:
            raise ValueError(f"{path} is not a recipe.json of experiments/lm_recipe.py "
                             f"(no {', '.join(missing)}).")  # fmt: skip
        if name not in datasets or name in out:
            raise ValueError(f"{path} is for {name!r}: give one recipe per dataset of --data.")
        out[name] = recipe
    return out


def apply_recipe(args, recipe: dict) -> None:
    """Puts a recipe.json's chosen point into `args` (children and final models alike)."""
    chosen, measured = recipe["chosen"], recipe["args"]
    args.child_optimizer = args.final_optimizer = chosen["optimizer"]
    args.child_learning_rate = args.final_learning_rate = chosen["learning_rate"]
    args.child_init_scale = args.final_init_scale = chosen["init_scale"]
    args.dropout = args.final_dropout = chosen["dropout"]
    args.final_units, args.final_epochs = measured["units"], measured["epochs"]
    args.final_lr_decay_after = measured["lr_decay_after"]


def for_dataset(args, name: str):
    """`args` for one dataset: its --data, output directory, plot and recipe.

    With one dataset, the output directory is --output_dir itself (as it has
    always been); with several, <output_dir>/<name>.
    """
    out = copy.copy(args)
    out.data = name
    if name in args.recipes:
        apply_recipe(out, args.recipes[name])
    several = len(args.datasets) > 1
    out.output_dir = os.path.join(args.root_dir, name) if several else args.root_dir
    if args.plot_flag and several:
        stem, ext = os.path.splitext(args.plot_flag)
        out.plot = f"{stem}_{name}{ext or '.png'}"
    else:
        out.plot = args.plot_flag or os.path.join(out.output_dir, "cell_search_replication.png")
    return out


def _batches(n: int) -> Optional[int]:
    return n or None


def space_overrides(args) -> dict:
    """The searches' `space_overrides` (the function set only when not the paper's, so that
    searches started before --cell_functions existed resume unchanged)."""
    overrides = {"base": args.cell_base}
    if args.cell_functions != cell_space.PAPER:
        overrides["functions"] = args.cell_functions
    return overrides


def child_configs(args, seed: int):
    """(LanguageModelConfig, TrainConfig) of every child of the searches of `seed`."""
    from nas_tf.children import language_model as lm
    from nas_tf.children import lm_trainer

    model = lm.LanguageModelConfig(
        units=args.child_units, input_dropout=args.dropout, output_dropout=args.dropout,
        init_scale=args.child_init_scale,
    )  # fmt: skip
    train = lm_trainer.TrainConfig(
        epochs=args.child_epochs,
        max_train_batches=_batches(args.child_max_train_batches),
        max_eval_batches=_batches(args.child_max_eval_batches),
        seed=seed,
        learning_rate=args.child_learning_rate,
        optimizer=args.child_optimizer,
    )
    return model, train


def final_train_config(args, seed: int):
    """The `TrainConfig` every final model trains with (Zaremba et al.'s schedule and
    clipping, with the recipe's optimizer and learning rate)."""
    from nas_tf.children import lm_trainer

    return lm_trainer.TrainConfig(
        epochs=args.final_epochs,
        lr_decay_after=args.final_lr_decay_after,
        max_train_batches=_batches(args.final_max_train_batches),
        max_eval_batches=_batches(args.final_max_eval_batches),
        seed=seed,
        learning_rate=args.final_learning_rate,
        optimizer=args.final_optimizer,
    )


def final_model_config(args, model: "FinalModel", init_scale: Optional[float] = None):
    """The `LanguageModelConfig` of one final model (the recipe's dropout and weight range,
    or `init_scale`)."""
    from nas_tf.children import language_model as lm

    return lm.LanguageModelConfig(
        units=model.units,
        input_dropout=args.final_dropout,
        output_dropout=args.final_dropout,
        init_scale=args.final_init_scale if init_scale is None else init_scale,
        cell="lstm" if model.description is None else "nas",
    )
# -- searches -----------------------------------------------------------------


def _read_json(path: str) -> Optional[dict]:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_json(path: str, value) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    durable.atomic_write_text(path, json.dumps(value, indent=1, sort_keys=True) + "\n")


def random_architectures(space: space_lib.Space, seed: int):
    """Uniform random architectures of a space of categorical decisions, never one twice.

    The sequence depends on `seed` only, so a resumed random search draws the
    same children as an uninterrupted one.
    """
    rng = np.random.default_rng(seed)
    seen = set()
    while True:
        values = {d.name: d.values[int(rng.integers(d.num_choices))] for d in space.decisions}
        arch = space.validate(space_lib.Architecture(values))
        key = arch.to_json()
        if key not in seen:
            seen.add(key)
            yield arch


def random_search(
    space: space_lib.Space,
    train_child: Callable,
    budget: int,
    seed: int,
    output_dir: str,
    on_child: Optional[Callable[[dict], None]] = None,
) -> List[dict]:
    """Random search over `space`: `budget` distinct children, resumable.

    Args:
      space: a space of categorical decisions (such as `ptb_cell`).
      train_child: called with (architecture JSON, "") for each child; returns
        a record with "reward" (`nas_tf.tasks.CellTask` or a
        `nas_tf.children.worker.WorkerPool` of it). A child's own failure
        (`nas_tf.search.CHILD_FAILURES`: divergence, out of memory, a crashed
        worker) fails the child; it counts against the budget, as a failed
        trial does in the controller's search.
      budget: children in all.
      seed: the draws' seed.
      output_dir: `history.jsonl` (one line per child, appended durably) is
        read back on a resume: the children it holds are not trained again.
      on_child: called with each new record.

    Returns:
      The records, in order: {"trial_id", "architecture", "status", "reward", ...}.
    """
    from nas_tf.search import CHILD_FAILURES

    path = history.path(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    done = history.read(output_dir)  # By trial id; a line torn by a kill is left out.
    draws = random_architectures(space, seed)
    for index in range(budget):
        arch = next(draws)
        architecture = json.loads(arch.to_json())
        if index < len(done):
            if done[index]["architecture"] != architecture:
                raise ValueError(
                    f"{path}, child {index}: not the architecture seed {seed} draws; the file "
                    "belongs to another search. Use another --output_dir."
                )
            continue
        record = {"trial_id": str(index), "architecture": architecture}
        try:
            record.update(status="COMPLETED", **train_child((arch.to_json(), "")))
        except CHILD_FAILURES as e:
            reason = getattr(e, "reason", None) or "oom"
            record.update(status="FAILED", reward=None, reason=reason, message=str(e)[:500])
        history.append(path, record)
        done.append(record)
        if on_child is not None:
            on_child(record)
    return done[:budget]


def child_line(record: dict, seed: int, budget: int) -> str:
    """Random search's progress line for one child record."""
    if record["status"] != "COMPLETED":
        what = f"FAILED ({record['reason']})"
    elif record.get("diverged"):  # CellTask: a diverged child is completed with reward 0.
        what = f"reward {record['reward']:.4f} (diverged)"
    else:
        what = f"reward {record['reward']:.4f} val_ppl {record['best_val_perplexity']:.2f}"
    return f"[random seed {seed}] child {int(record['trial_id']) + 1}/{budget} {what}"


def best_so_far(rewards: Sequence[Optional[float]]) -> List[float]:
    """The best finite reward among the first k children, for every k (NaN before any)."""
    out, best = [], -math.inf
    for r in rewards:
        if r is not None and math.isfinite(r):
            best = max(best, r)
        out.append(best if best > -math.inf else math.nan)
    return out


def _summarize_search(records: List[dict], method: str, seed: int, seconds: float) -> dict:
    rewards = [r.get("reward") if r["status"] == "COMPLETED" else None for r in records]
    finite = [(r, i) for i, r in enumerate(rewards) if r is not None and math.isfinite(r)]
    if not finite:
        raise RuntimeError(f"The {method} search of seed {seed} trained no child successfully.")
    best_reward, best_index = max(finite, key=lambda t: (t[0], -t[1]))
    best = records[best_index]
    return {
        "method": method,
        "seed": seed,
        "children": len(records),
        "failed": sum(r["status"] != "COMPLETED" for r in records),
        "distinct": len({json.dumps(r["architecture"], sort_keys=True) for r in records}),
        "rewards": rewards,
        "best_so_far": best_so_far(rewards),
        "best_reward": best_reward,
        "best_child": best_index,
        "best_val_perplexity": best.get("best_val_perplexity"),
        "best_architecture": best["architecture"],
        "seconds": seconds,
    }


class SearchNotDoneError(RuntimeError):
    """A --final_shard process met an unfinished search (N shards would all run it)."""


def _refuse_in_shard(args, out: str) -> None:
    if args.final_shard:
        raise SearchNotDoneError(
            f"--final_shard: the search in {out} is not finished; run the searches first "
            "(--searches_only), so that no two shard processes write one search.")


def run_search(args, method: str, seed: int, data) -> dict:
    """One search (resumed if started, skipped if finished); returns its summary."""
    if method == SHARED:
        return run_shared_search(args, seed, data)
    from nas_tf import search, settings, tasks
    from nas_tf.children import worker

    out = os.path.join(args.output_dir, "searches", f"{method}_seed{seed}")
    summary = _read_json(os.path.join(out, SUMMARY))
    if summary is not None and summary["children"] >= args.budget:
        return summary  # A larger --budget extends it (every method resumes exactly).
    _refuse_in_shard(args, out)
    model, train = child_configs(args, seed)
    start = time.time()
    say = print if args.verbose else (lambda *a, **k: None)
    say(f"[{method} seed {seed}] {args.budget} children -> {out}", flush=True)
    if MULTI_TRIAL[method] is not None:
        # The controller with a preset of the library: "default" (SearchConfig's own
        # controller, REINFORCE and rules) or "paper" (with the cell family's override).
        config = settings.search_config(
            out,
            preset=MULTI_TRIAL[method],
            space="ptb_cell",
            space_overrides=space_overrides(args),
            dataset=args.data,
            data_dir=args.data_dir,
            max_trials=args.budget,
            seed=seed,
            lm_model=model,
            lm_train=train,
            isolate_children=bool(args.isolate_children),
            verbose=args.verbose,
        )
        search.run(config, data=data)
        records = search.read_history(out)
    else:
        task = tasks.make_task("ptb_cell", space_overrides(args), data,
                               lm_model=model, lm_train=train)  # fmt: skip
        pool = worker.WorkerPool(task) if args.isolate_children else task

        def on_child(r):
            say(child_line(r, seed, args.budget), flush=True)

        try:
            records = random_search(task.space, pool, args.budget, seed, out, on_child)
        finally:
            if pool is not task:
                pool.close()
    earlier = summary["seconds"] if summary is not None else 0.0  # Extended: add its time.
    summary = _summarize_search(records, method, seed, earlier + time.time() - start)
    _write_json(os.path.join(out, SUMMARY), summary)
    return summary


def shared_settings(args) -> dict:
    """The weight-sharing search's `SharedSearchConfig` fields (`settings.search_config`'s
    `weight_sharing`), recorded in its summary."""
    return {
        "method": "controller",
        "epochs": args.shared_epochs,
        "steps_per_epoch": args.shared_steps_per_epoch,
        "batch_size": args.shared_batch_size,
        "controller_samples": args.shared_controller_samples,
        "derive_samples": args.shared_derive_samples,
        "training": {"learning_rate": args.shared_learning_rate},
    }


def run_shared_search(args, seed: int, data) -> dict:
    """The weight-sharing search of `seed` (resumed if started, skipped if finished).

    Its supernet has the children's width, dropout, weight range and window
    length; its controller is experiments/ptb_shared.flags' (the `enas`
    preset, logits 2.5 tanh, entropy bonus 1e-3), its shared weights' SGD
    starts at --shared_learning_rate. Its cell is the derived best
    (`best_architecture.json`): no child is trained alone, so its summary has
    no per-child rewards; it has the shared-weight steps and the derived
    cells' validation perplexity on the shared weights.
    """
    from nas_tf import search, settings
    from nas_tf.supernets import search as shared_search

    out = os.path.join(args.output_dir, "searches", f"{SHARED}_seed{seed}")
    wanted = json.loads(json.dumps(shared_settings(args)))
    summary = _read_json(os.path.join(out, SUMMARY))
    if summary is not None and summary.get("settings") == wanted:
        return summary  # Other sizes: search.run refuses to mix them (ConfigChangedError).
    _refuse_in_shard(args, out)
    model, train = child_configs(args, seed)
    start = time.time()
    if args.verbose:
        print(f"[{SHARED} seed {seed}] {args.shared_epochs} x {args.shared_steps_per_epoch} "
              f"shared-weight steps -> {out}", flush=True)  # fmt: skip
    config = settings.search_config(
        out,
        space="ptb_cell",
        space_overrides=space_overrides(args),
        dataset=args.data,
        data_dir=args.data_dir,
        seed=seed,
        lm_model=model,
        lm_train=train,
        weight_sharing=shared_settings(args),
        controller={"tanh_constant": SHARED_TANH_CONSTANT},
        reinforce={"entropy_weight": SHARED_ENTROPY_WEIGHT},
        verbose=args.verbose,
    )
    search.run(config, data=data)
    derived = history.read(out)  # Best first.
    with open(os.path.join(out, shared_search.LOG), encoding="utf-8") as f:
        log = [json.loads(line) for line in f if line.strip()]
    summary = _summarize_shared(derived, log, seed, time.time() - start, wanted)
    if not math.isfinite(summary["best_val_perplexity"] or math.nan):
        raise RuntimeError(
            f"The {SHARED} search of seed {seed} diverged: its shared weights give no finite "
            f"validation perplexity (loss per epoch: {[r.get('train_loss') for r in log]}), so "
            f"its derived cell means nothing. Remove {out} and run again with a lower "
            "--shared_learning_rate."
        )
    _write_json(os.path.join(out, SUMMARY), summary)
    return summary


def _summarize_shared(derived: List[dict], log: List[dict], seed: int, seconds: float,
                      settings: dict) -> dict:  # fmt: skip
    """A weight-sharing search's summary: steps, the derived cells and the best one."""
    if not derived:
        raise RuntimeError(f"The {SHARED} search of seed {seed} derived no cell.")
    best = derived[0]
    return {
        "method": SHARED,
        "kind": SHARED,
        "seed": seed,
        "settings": settings,
        "steps": max((r.get("step", 0) for r in log), default=0),
        "controller_updates": max((r.get("controller_updates", 0) for r in log), default=0),
        "derived": len(derived),
        "derived_val_perplexities": [r.get("val_perplexity") for r in derived],
        "best_val_perplexity": best.get("val_perplexity"),
        "best_architecture": best["architecture"],
        "seconds": seconds,
    }


def is_shared(search: dict) -> bool:
    return search.get("kind") == SHARED


# -- final training --------------------------------------------------------------


def solve_units(count: Callable[[int], int], target: int, max_units: int = 1 << 16) -> int:
    """The width whose parameter count `count(units)` (increasing) is nearest `target`."""
    lo, hi = 1, max_units
    while lo < hi:  # Smallest width with count >= target.
        mid = (lo + hi) // 2
        if count(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    candidates = [u for u in (lo - 1, lo) if u >= 1]
    return min(candidates, key=lambda u: (abs(count(u) - target), u))


@dataclasses.dataclass(frozen=True)
class FinalModel:
    """One model of the final comparison.

    Attributes:
      name: directory name, e.g. "controller_seed1", "lstm" or "paper" (the
        paper's cell).
      group: a search method of `METHODS`, or a key of `BASELINES`.
      description: the cell; None for the LSTM.
      units: the width that gives the target parameter count.
      parameters: that count (`count_parameters`).
    """

    name: str
    group: str
    description: object
    units: int
    parameters: int


def final_models(args, searches: List[dict], vocab_size: int) -> List[FinalModel]:
    """Every final model at the LSTM's parameter count (each within `TOLERANCE`).

    Raises:
      ValueError: if some model cannot come within the tolerance (tiny widths).
    """
    from nas_tf import train_lm
    from nas_tf.children import language_model as lm

    def count(base, cell, use_bias):
        return lambda u: lm.count_parameters(base, u, vocab_size, cell=cell, use_bias=use_bias)

    target = count(lm.LSTM_BASE, "lstm", True)(args.final_units)
    space = cell_space.ptb_cell(args.cell_base, args.cell_functions)
    cells = []
    for s in searches:
        arch = space_lib.Architecture.from_json(json.dumps(s["best_architecture"]))
        description = cell_space.CellDescription.from_architecture(space.validate(arch), space)
        cells.append((_name(s), s["method"], description))
    cells.append(("lstm_like", "lstm_like", cell_space.lstm_like()))
    cells.append(("paper", "paper_cell", train_lm.load_architecture(PAPER_CELL, 8)))
    models = [FinalModel("lstm", "lstm", None, args.final_units, target)]
    for name, group, description in cells:
        n = count(description.base, "nas", False)
        units = solve_units(n, target)
        models.append(FinalModel(name, group, description, units, n(units)))
    for m in models:
        if abs(m.parameters - target) > TOLERANCE * target:
            raise ValueError(
                f"{m.name}: no width gives {target:,} parameters within {TOLERANCE:.0%} "
                f"({m.units} units give {m.parameters:,}); raise --final_units."
            )
    return models


def choose_init_scale(args, model: FinalModel, data) -> dict:
    """{"init_scale": the model's weight range, "seconds": the choice's training}.

    With --final_init_scales, one epoch per range at training seed 0 (each run
    kept in final/<model>/init_<range>/, resumed like any final run); the
    lowest validation perplexity wins, a diverged range never does.
    """
    if not args.final_init_scales:
        return {"init_scale": args.final_init_scale, "seconds": 0.0}
    probe = copy.copy(args)
    probe.final_epochs = 1
    scores, seconds = {}, 0.0
    for scale in args.final_init_scales:
        run_dir = os.path.join(args.output_dir, "final", model.name, f"init_{scale:g}")
        r = train_final(probe, model, 0, data, init_scale=scale, run_dir=run_dir)
        value = r["best_val_perplexity"]
        scores[scale] = value if math.isfinite(value) else math.inf
        seconds += r["seconds"]
    return {"init_scale": min(args.final_init_scales, key=lambda v: scores[v]), "seconds": seconds}


def train_final(args, model: FinalModel, seed: int, data, init_scale: Optional[float] = None,
                run_dir: Optional[str] = None) -> dict:
    """Trains one final model with one seed (skipped if its results.json exists), in
    `run_dir` (default final/<model>/seed<seed>) at `init_scale` (default the recipe's).

    A run that diverges is a result too: its results.json holds "failed" and
    NaN perplexities, and the tables count it apart from the means.
    """
    import keras

    from nas_tf import train_lm
    from nas_tf.children.base import ChildTrainingError

    out = run_dir or os.path.join(args.output_dir, "final", model.name, f"seed{seed}")
    config = train_lm.RunConfig(
        output_dir=out,
        data_name=args.data,
        data_dir=args.data_dir,
        description=model.description,
        model=final_model_config(args, model, init_scale),
        train=final_train_config(args, seed),
        verbose=0,
    )
    done = _read_json(os.path.join(out, "results.json"))
    if done is not None and _same_run(done["config"], config.to_dict()):
        return done
    keras.backend.clear_session()  # Not done, or done for another cell or schedule.
    start = time.time()
    try:
        results = train_lm.run(config, data=data)
    except ChildTrainingError as e:  # Diverged: a result of the cell, recorded as such.
        results = {
            "failed": e.reason, "message": str(e), "num_parameters": model.parameters,
            "units": model.units, "best_val_perplexity": math.nan, "test_perplexity": math.nan,
            "seconds": time.time() - start, "config": config.to_dict(),
        }  # fmt: skip
        _write_json(os.path.join(out, "results.json"), results)
        if args.verbose:
            print(f"[final {model.name} seed {seed}] FAILED: {e}", flush=True)
        return results
    if args.verbose:
        print(f"[final {model.name} seed {seed}] {results['num_parameters']:,} parameters, "
              f"{model.units} units: val {results['best_val_perplexity']:.2f}, test "
              f"{results['test_perplexity']:.2f} ({results['seconds']:.0f} s)", flush=True)  # fmt: skip
    return results


def _same_run(old: dict, new: dict) -> bool:
    """Whether two `RunConfig.to_dict()`s train the same model the same way.

    A field that `old` lacks (written before the field existed, such as
    `TrainConfig.optimizer`) counts as its dataclass default: such a run
    trained with it.
    """
    from nas_tf.children import language_model as lm
    from nas_tf.children import lm_trainer

    keys = ("data_name", "cell", "model", "train")
    old = json.loads(json.dumps({k: old.get(k) for k in keys}))
    new = json.loads(json.dumps({k: new.get(k) for k in keys}))
    for key, config in (("model", lm.LanguageModelConfig), ("train", lm_trainer.TrainConfig)):
        if isinstance(old.get(key), dict):
            defaults = json.loads(json.dumps(dataclasses.asdict(config())))
            old[key] = {**defaults, **old[key]}
    return old == new


def time_models(args, models: List[FinalModel], data) -> Dict[str, float]:
    """ms per training step of every final model, alternating rounds (cached in timing.json,
    with the seconds the timing took)."""
    import keras

    path = os.path.join(args.output_dir, "timing.json")
    signature = {m.name: [m.units, None if m.description is None else m.description.to_config()]
                 for m in models}  # fmt: skip
    cached = _read_json(path)
    if (cached is not None and cached.get("models") == json.loads(json.dumps(signature))
            and cached.get("optimizer", "sgd") == args.final_optimizer):  # fmt: skip
        return cached["ms_per_step"]
    sys.path.insert(0, _HERE)
    try:
        import cell_vs_lstm
    finally:
        sys.path.remove(_HERE)
    keras.backend.clear_session()
    start = time.time()
    configs = {m.name: (m.description, final_model_config(args, m)) for m in models}
    timed = cell_vs_lstm.step_times(configs, data, final_train_config(args, 0),
                                    args.timing_rounds, args.timing_steps)  # fmt: skip
    _write_json(path, {"models": signature, "ms_per_step": timed, "optimizer": args.final_optimizer,
                       "seconds": time.time() - start})  # fmt: skip
    return timed


def timing_seconds(args) -> float:
    """Seconds the cached timing took (0 if not recorded)."""
    cached = _read_json(os.path.join(args.output_dir, "timing.json")) or {}
    return float(cached.get("seconds", 0.0))


# -- report -----------------------------------------------------------------------


def spread(values: Sequence[float], digits: int = 2) -> str:
    """"mean ± sample standard deviation" of the finite values (just the value for one)."""
    values = [float(v) for v in values if math.isfinite(v)]
    if not values:
        return "—"
    mean = float(np.mean(values))
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {float(np.std(values, ddof=1)):.{digits}f}"


def figure_of(char: bool) -> Callable[[float], float]:
    """Perplexity -> the tables' figure: itself, or bits per character (log2) at char level."""
    if not char:
        return float

    def bits(ppl):
        ppl = float(ppl)
        return math.log2(ppl) if ppl > 0 and not math.isnan(ppl) else math.nan

    return bits


def _label(group: str) -> str:
    return SEARCHED.get(group) or BASELINES.get(group, group)


def _groups(models: List[FinalModel]) -> Dict[str, List[FinalModel]]:
    groups: Dict[str, List[FinalModel]] = {}
    for m in models:
        groups.setdefault(m.group, []).append(m)
    return groups


def group_values(members: List[FinalModel], results: Dict[str, List[dict]], key: str,
                 fig: Callable[[float], float] = float) -> List[float]:  # fmt: skip
    """A group's figures for its mean and spread: per search (the mean over its training
    seeds) when the group has several searches, else per training seed."""
    if len(members) > 1:
        return [_mean([fig(r[key]) for r in results[m.name]]) for m in members]
    return [fig(r[key]) for m in members for r in results[m.name]]


def tables(searches: List[dict], models: List[FinalModel], results: Dict[str, List[dict]],
           timing: Dict[str, float], char: bool = False) -> str:  # fmt: skip
    """The report's Markdown tables: final models per group, then per search.

    At character level (`char`) every perplexity is shown as bits per
    character, log2(perplexity), averaged as such.
    """
    fig = figure_of(char)
    what_fig = "bpc" if char else "ppl"
    digits = 3 if char else 2
    lines = [
        f"| model | runs | parameters | units | best val {what_fig} | test {what_fig} "
        "| ms / step |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for group, members in _groups(models).items():
        runs = [r for m in members for r in results[m.name]]
        val = group_values(members, results, "best_val_perplexity", fig)
        test = group_values(members, results, "test_perplexity", fig)
        if len(members) > 1:  # One figure per search (the mean over its training seeds).
            what = f"{len(members)} searches x {len(results[members[0].name])} seeds"
        else:
            what = f"{len(runs)} seed{'s' if len(runs) != 1 else ''}"
        failed = sum("failed" in r for r in runs)
        if failed:
            what += f" ({failed} diverged)"
        params = sorted({r["num_parameters"] for r in runs})
        units = sorted({m.units for m in members})
        ms = [timing[m.name] for m in members]
        lines.append(
            f"| {_label(group)} | {what} | {', '.join(f'{p:,}' for p in params)} | "
            f"{', '.join(map(str, units))} | {spread(val, digits)} | {spread(test, digits)} | "
            f"{spread(ms)} |"
        )
    fmt = (lambda v: f"{v:.3f}") if char else (lambda v: f"{v:.1f}")
    lines += [
        "",
        f"| search | children (failed) | children's median val {what_fig}: first half, second "
        f"half | best reward | its child's val {what_fig} | best cell: final val {what_fig} "
        f"| final test {what_fig} |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in searches:
        runs = results[_name(s)]
        final = (f"{spread([fig(r['best_val_perplexity']) for r in runs], digits)} | "
                 f"{spread([fig(r['test_perplexity']) for r in runs], digits)} |")  # fmt: skip
        if is_shared(s):
            lines.append(
                f"| {s['method']} seed {s['seed']} | {s['steps']:,} shared-weight steps; best "
                f"of {s['derived']} derived | — | — | {fmt(fig(s['best_val_perplexity']))} "
                f"(shared weights) | {final}"
            )
            continue
        first, second = half_medians(s["rewards"])
        lines.append(
            f"| {s['method']} seed {s['seed']} | {s['children']} ({s['failed']}) | "
            f"{fmt(fig(first))}, {fmt(fig(second))} | "
            f"{s['best_reward']:.3g} | {fmt(fig(s['best_val_perplexity']))} | {final}"
        )
    for method in METHODS:
        mine = [s for s in searches if s["method"] == method]
        if len(mine) < 2:
            continue
        if method == SHARED:
            halves = "—, —"
        else:
            h = np.array([[fig(x) for x in half_medians(s["rewards"])] for s in mine])
            halves = f"{spread(h[:, 0], digits)}, {spread(h[:, 1], digits)}"
        tests = [_mean([fig(r["test_perplexity"]) for r in results[_name(s)]]) for s in mine]
        lines.append(
            f"| **{method}, mean ± sd** | | {halves} | | "
            f"{spread([fig(s['best_val_perplexity']) for s in mine], digits)} | | "
            f"{spread(tests, digits)} |"
        )
    return "\n".join(lines)


def compare(subject: str, values: Sequence[float], other: str, others: Sequence[float],
            digits: int = 1) -> str:  # fmt: skip
    """One sentence of the verdict: two groups' means (lower is better), their difference,
    and whether it exceeds the larger of the two sample standard deviations."""
    a = [float(v) for v in values if math.isfinite(v)]
    b = [float(v) for v in others if math.isfinite(v)]
    if not a or not b:
        return f"{subject} vs {other}: no finite result to compare (every run diverged)."
    ma, mb = float(np.mean(a)), float(np.mean(b))
    sds = [float(np.std(v, ddof=1)) for v in (a, b) if len(v) > 1]
    diff = mb - ma

    def show(mean, v):
        return f"{mean:.{digits}f}" + (f" ± {np.std(v, ddof=1):.{digits}f}" if len(v) > 1 else "")

    if round(abs(diff), digits) == 0:
        how = f"the same to {digits} decimal{'s' if digits != 1 else ''}"
    else:
        how = f"{'better' if diff > 0 else 'worse'} by {abs(diff):.{digits}f}"
    if not sds:
        where = "no spread to compare (one run each)"
    elif abs(diff) > max(sds):
        where = f"exceeds the spread (larger sd {max(sds):.{digits}f})"
    else:
        where = f"within the spread (larger sd {max(sds):.{digits}f})"
    return f"{subject}: {show(ma, a)} vs {other} {show(mb, b)}: {how}, {where}."


def verdict(models: List[FinalModel], results: Dict[str, List[dict]], char: bool = False) -> str:
    """The comparisons of `COMPARISONS` between the groups that ran, in words."""
    fig = figure_of(char)
    groups = _groups(models)
    what = "test bits per character" if char else "test perplexity"
    lines = [
        f"**Verdict** ({what}, lower is better; mean ± sample sd, over searches for a search "
        "method's cells and over training seeds otherwise; a difference exceeds the spread "
        "when it is larger than the larger of the two sds):",
        "",
    ]
    for group, other, subject, object_ in COMPARISONS:
        if group in groups and other in groups:
            a = group_values(groups[group], results, "test_perplexity", fig)
            b = group_values(groups[other], results, "test_perplexity", fig)
            lines.append("- " + compare(subject, a, object_, b, 3 if char else 1))
    return "\n".join(lines) if len(lines) > 2 else ""


def _mean(values) -> float:
    """Mean of the finite values (runs that diverged left out); NaN if none."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _name(search: dict) -> str:
    return f"{search['method']}_seed{search['seed']}"


def half_medians(rewards: Sequence[Optional[float]]):
    """Median validation perplexity of the first and the second half of a search's children.

    A reward is 80 / ppl^2, so ppl = sqrt(80 / reward); a failed child counts
    as infinitely bad. Where the second half's median is lower, the method
    proposed better children as it went (random search cannot, on average).
    """
    ppl = [math.sqrt(80.0 / r) if r else math.inf for r in rewards]
    half = len(ppl) // 2
    return float(np.median(ppl[:half])), float(np.median(ppl[half:]))


COLOURS = {"controller": "tab:blue", "paper": "tab:purple", "random": "tab:orange",
           SHARED: "tab:cyan", "lstm": "tab:gray", "lstm_like": "tab:green",
           "paper_cell": "tab:red"}  # fmt: skip


def plot(path: str, searches: List[dict], models: List[FinalModel],
         results: Dict[str, List[dict]], char: bool = False) -> None:  # fmt: skip
    """Test figure per model (error bars); best reward and the children's validation figure
    over the search, per multi-trial method (the weight-sharing search trains no children
    alone, so it has no such curves)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig = figure_of(char)
    unit = "bits per character" if char else "perplexity"
    figure, (left, right, third) = plt.subplots(1, 3, figsize=(16, 4.4))
    names = [m.name for m in models]
    finite = [[fig(r["test_perplexity"]) for r in results[n]] for n in names]
    finite = [[v for v in vals if math.isfinite(v)] for vals in finite]  # Diverged: left out.
    means = [np.mean(v) if v else 0.0 for v in finite]
    errors = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in finite]
    y = np.arange(len(names))
    left.barh(y, means, xerr=errors, color=[COLOURS.get(m.group, "k") for m in models],
              capsize=3)  # fmt: skip
    left.set_yticks(y, names)
    left.invert_yaxis()
    left.set_xlabel(f"test {unit} (mean ± sd over training seeds; lower is better)")
    left.set_xlim(0, max(means) * 1.05 + max(errors))
    for method in MULTI_TRIAL:
        curves = np.array([s["best_so_far"] for s in searches if s["method"] == method])
        if not len(curves):
            continue
        x = np.arange(1, curves.shape[1] + 1)
        for c in curves:
            right.plot(x, c, color=COLOURS[method], alpha=0.3, lw=0.8)
        right.plot(x, np.nanmean(curves, axis=0), color=COLOURS[method], lw=2,
                   label=f"{method} (mean of {len(curves)} seeds)")  # fmt: skip
    right.set_xlabel("children trained")
    right.set_ylabel("best reward so far (80 / val ppl²)")
    right.legend()
    window = 8
    cap = fig(2000.0)
    for method in MULTI_TRIAL:
        mine = [s for s in searches if s["method"] == method]
        if not mine:
            continue
        rolled = []
        for s in mine:  # A failed child counts as the worst figure (plotted at the top).
            val = [fig(math.sqrt(80.0 / r)) if r else math.inf for r in s["rewards"]]
            rolled.append([np.median(val[max(0, k + 1 - window): k + 1]) for k in range(len(val))])
        rolled = np.minimum(np.array(rolled), cap)
        x = np.arange(1, rolled.shape[1] + 1)
        third.plot(x, np.mean(rolled, axis=0), color=COLOURS[method], lw=2,
                   label=f"{method} (mean of {len(mine)} seeds)")  # fmt: skip
    if not char:
        third.set_yscale("log")
    third.set_xlabel("children trained")
    third.set_ylabel(f"children's val {'bpc' if char else 'ppl'}, running median of {window}")
    third.legend()
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def settings_text(args, data) -> str:
    """What ran, in words."""
    weight_range = (f"±{args.final_init_scale:g}" if not args.final_init_scales else
                    "the range chosen per model (below)")  # fmt: skip
    child_batches = args.child_max_train_batches or "all"
    final_batches = args.final_max_train_batches or "all"
    multi = [m for m in args.methods if m in MULTI_TRIAL]
    text = (
        f"Data: {data.name} ({data.vocab_size:,} tokens, {len(data.train):,} training ids). "
        f"Search: ptb_cell base {args.cell_base} ({args.cell_functions} functions), seeds "
        f"{', '.join(map(str, range(1, args.seeds + 1)))} for {', '.join(args.methods)}"
    )
    if multi:
        text += (
            f"; {args.budget} children per multi-trial search; children: 2 layers x "
            f"{args.child_units} units, {args.child_epochs} epoch(s) of {child_batches} batches "
            f"of 20 x 35, {args.child_optimizer.upper()} {args.child_learning_rate:g}, weights "
            f"in ±{args.child_init_scale:g}, validation on {args.child_max_eval_batches or 'all'}"
            f" batches, dropout {args.dropout}, reward 80 / ppl²"
        )
    if SHARED in args.methods:
        text += (
            f"; weight sharing: a 1-layer supernet of {args.child_units} units, "
            f"{args.shared_epochs} epochs x {args.shared_steps_per_epoch} steps of "
            f"{args.shared_batch_size} x 35 tokens (SGD from {args.shared_learning_rate:g}, "
            "cosine), "
            f"{args.shared_controller_samples} controller samples per epoch, the best of "
            f"{args.shared_derive_samples} derived cells"
        )
    return text + (
        f". Final models: the parameter count of a {args.final_units}-unit LSTM "
        f"(each width solved to within {TOLERANCE:.0%}), {args.final_epochs} epoch(s) of "
        f"{final_batches} batches, {args.final_optimizer.upper()} {args.final_learning_rate:g} "
        f"x0.8 per epoch after {args.final_lr_decay_after}, clip 5, weights in "
        f"{weight_range}, dropout {args.final_dropout}, seeds "
        f"0..{args.final_seeds - 1}; test on {args.final_max_eval_batches or 'all'} batches "
        "with the best validation epoch's weights."
    )


def ranges_text(args, models: List[FinalModel], chosen: Dict[str, dict]) -> str:
    """The weight range each final model took (nothing without --final_init_scales)."""
    if not args.final_init_scales:
        return ""
    picks = ", ".join(f"{m.name} ±{chosen[m.name]['init_scale']:g}" for m in models)
    options = ", ".join(f"{v:g}" for v in args.final_init_scales)
    return (f"Weight ranges, each final model's chosen from {options} by validation "
            f"perplexity after one epoch at training seed 0: {picks}.")


def run_dataset(args, data) -> dict:
    """The whole pipeline on one dataset: {"text": its report block, "seconds": compute}
    (None after --searches_only or --final_shard)."""
    seeds = [args.only_seed] if args.only_seed else range(1, args.seeds + 1)
    searches = [run_search(args, method, seed, data) for method in args.methods for seed in seeds]
    if args.searches_only:
        for s in searches:
            size = (f"{s['steps']} shared-weight steps" if is_shared(s) else
                    f"{s['children']} children, best reward {s['best_reward']:.5f}")  # fmt: skip
            print(f"{args.data}: {s['method']} seed {s['seed']}: {size} ({s['seconds']:.0f} s)")
        return None
    models = final_models(args, searches, data.vocab_size)
    if args.final_shard:
        for m in shard(models, args.final_shard):  # Its share of the range choices first,
            choose_init_scale(args, m, data)  # so that shards rarely train one twice.
        runs = shard([(m, t) for m in models for t in range(args.final_seeds)], args.final_shard)
        for m, t in runs:
            train_final(args, m, t, data, choose_init_scale(args, m, data)["init_scale"])
        print(f"{args.data}: final shard {'/'.join(map(str, args.final_shard))}: "
              f"{len(runs)} runs done.")
        return None
    chosen = {m.name: choose_init_scale(args, m, data) for m in models}
    results = {m.name: [train_final(args, m, t, data, chosen[m.name]["init_scale"])
                        for t in range(args.final_seeds)] for m in models}  # fmt: skip
    timing = time_models(args, models, data)
    char = data.level == "char"
    plot(args.plot, searches, models, results, char)
    compute = (sum(s["seconds"] for s in searches) + timing_seconds(args)
               + sum(r["seconds"] for runs in results.values() for r in runs)
               + sum(c["seconds"] for c in chosen.values()))  # fmt: skip
    figure = "bits per character (log2 of perplexity)" if char else "perplexity"
    block = "\n\n".join(filter(None, [
        f"## {args.data}: {data.level} level, test {figure}",
        settings_text(args, data),
        tables(searches, models, results, timing, char),
        verdict(models, results, char),
        ranges_text(args, models, chosen),
        f"Searches, final trainings and step timing of {args.data}, summed over the "
        f"invocations that ran them: {compute:.0f} s (a search resumed after a kill counts "
        f"from its resume). Plot: {args.plot}.",
    ]))  # fmt: skip
    durable.atomic_write_text(os.path.join(args.output_dir, "report.md"), block + "\n")
    return {"text": block, "seconds": compute}


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    from nas_tf import data as data_lib
    from nas_tf import train_lm

    try:
        datas = {name: train_lm.load_data(name, args.data_dir) for name in args.datasets}
    except data_lib.DataNotPreparedError as e:
        print(f"replicate_cell_search: {e}", file=sys.stderr)
        return 2
    blocks = []
    for name in args.datasets:
        dataset_args = for_dataset(args, name)
        os.makedirs(dataset_args.output_dir, exist_ok=True)
        try:
            blocks.append(run_dataset(dataset_args, datas[name]))
        except SearchNotDoneError as e:
            print(f"replicate_cell_search: {e}", file=sys.stderr)
            return 2
    if args.searches_only or args.final_shard:
        return 0
    command = "python experiments/replicate_cell_search.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    compute = sum(b["seconds"] for b in blocks)
    report = "\n\n".join(
        ["# Cell search replication", f"```\n{command.strip()}\n```"]
        + [b["text"] for b in blocks]
        + [
            f"Wall time of this invocation: {time.time() - start:.0f} s. Searches, final "
            f"trainings and step timings of {' and '.join(args.datasets)}, summed over the "
            f"invocations that ran them: {compute:.0f} s."
        ]
    )  # fmt: skip
    durable.atomic_write_text(os.path.join(args.root_dir, "report.md"), report + "\n")
    print()
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
