"""Benchmark: the paper's recurrent-cell claim, end to end, against two baselines.

Zoph & Le 2017 (sec. 4.2, Table 2) report that the cell their controller
found beats LSTM language models of the same size. This program replays the
whole pipeline at a size chosen by flags, from one command:

1. Search. The `ptb_cell` space (base 4 by default, 8 as in the paper),
   children = small 2-layer language models trained a few batches, reward
   80 / (validation perplexity)^2 (`nas_tf.tasks.CellTask`, the search's own
   child). Two methods, the same budget of distinct children, the same child
   settings and seeds:
     controller  `nas_tf.search.run` with the library defaults (the
                 `default` preset: `ControllerConfig()`, `ReinforceConfig()`,
                 re-use of known rewards);
     random      uniform random cells without repeats (numpy), as
                 experiments/nasbench201.py runs random search, each trained
                 by the same `CellTask`.
2. Final training (`nas_tf.train_lm.run`). The best cell of every search,
   `keras.layers.LSTM`, the hand-written LSTM-like cell (`lstm_like()`) and
   the paper's cell (experiments/paper/ptb_cell_base8.json), each as a full
   language model with the same parameter count (the width of each is
   solved so that it lands within 2 % of the LSTM's at --final_units), the
   same schedule and --final_seeds training seeds. Then milliseconds per
   training step, measured on fresh copies of every model in alternating
   rounds (`cell_vs_lstm.step_times`), so that load from other processes
   weighs on all alike.
3. Report: `<output_dir>/report.md` (the tables, the settings, the command
   and the compute time) and a plot (test perplexity per model with error
   bars; the best reward over children, controller against random).

Nothing finished is redone: a search resumes (the controller's from its own
state, random search from its `history.jsonl`), a finished search writes
`summary.json` and is skipped, every final model writes `results.json` and
is skipped, and the timing writes `timing.json`. Run the same command again
after a kill. A larger --budget extends finished searches (the controller
continues its policy; random search draws the same sequence further), and a
final model whose best cell or settings changed is trained again.

Usage:
    python experiments/replicate_cell_search.py --quick          # a few minutes
    python experiments/replicate_cell_search.py                  # the laptop run
    python experiments/replicate_cell_search.py --cell_base=8 --budget=300 \\
        --child_units=64 --child_epochs=2 --child_max_train_batches= ...   # see docs
"""

import argparse
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

PAPER_CELL = os.path.join(_HERE, "paper", "ptb_cell_base8.json")
METHODS = ("controller", "random")
# Final models that are not a search's: name -> what the tables call them.
BASELINES = {
    "lstm": "keras.layers.LSTM",
    "lstm_like": "LSTM-like cell (lstm_like)",
    "paper": "paper's cell (base 8)",
}
TOLERANCE = 0.02  # Final models' parameter counts may differ from the target by 2 %.
SUMMARY = "summary.json"


# -- settings ------------------------------------------------------------------


def parse_args(argv=None):
    """Command-line flags (--quick replaces the sizes by a few-minute run's)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", default="runs/replicate_cell_search",
                   help="Where searches, final models and the report go (resumed from).")
    p.add_argument("--quick", action="store_true", help="Tiny sizes: the whole pipeline in a "
                   "few minutes (for tests); overrides the size flags.")
    p.add_argument("--data", default="text", choices=("text", "text_char", "ptb", "ptb_char"),
                   help="Dataset: the embedded corpus (text, text_char) or a prepared Penn "
                   "Treebank (ptb, ptb_char, with --data_dir).")
    p.add_argument("--data_dir", help="TFDS directory with a prepared Penn Treebank.")
    p.add_argument("--methods", default="controller,random",
                   help="Comma-separated search methods: controller, random.")
    p.add_argument("--seeds", type=int, default=3, help="Searches per method (seeds 1..n).")
    p.add_argument("--only_seed", type=int, default=0, help="Run only the searches of this "
                   "seed (0: all); with --searches_only, to spread searches over processes.")
    p.add_argument("--searches_only", action="store_true", help="Stop after the searches "
                   "(no final training, no report): run the searches of each method or seed "
                   "as separate processes or machines sharing --output_dir, then the whole "
                   "command, which finds them done.")
    p.add_argument("--budget", type=int, default=60, help="Distinct children per search.")
    p.add_argument("--cell_base", type=int, default=4, help="Leaves of the searched cell "
                   "(paper: 8).")
    p.add_argument("--child_units", type=int, default=32, help="Width of every child.")
    p.add_argument("--child_epochs", type=int, default=1, help="Epochs per child (paper: 35).")
    p.add_argument("--child_max_train_batches", type=int, default=60,
                   help="Batches per child epoch (0: the whole training split).")
    p.add_argument("--child_max_eval_batches", type=int, default=20,
                   help="Validation batches per child (0: the whole split).")
    p.add_argument("--isolate_children", type=int, choices=(0, 1), default=1,
                   help="1: children train in a recycled worker process (the search's "
                   "default); 0: in this process.")
    p.add_argument("--final_seeds", type=int, default=3, help="Training seeds per final model.")
    p.add_argument("--final_units", type=int, default=128, help="Width of the LSTM; its "
                   "parameter count is every final model's target.")
    p.add_argument("--final_epochs", type=int, default=6, help="Epochs of every final model.")
    p.add_argument("--final_max_train_batches", type=int, default=0,
                   help="Batches per final epoch (0: the whole training split).")
    p.add_argument("--final_max_eval_batches", type=int, default=0,
                   help="Validation and test batches of final models (0: whole splits).")
    p.add_argument("--final_lr_decay_after", type=int, default=4,
                   help="Final models: epochs at SGD 1.0, then x0.8 per epoch.")
    p.add_argument("--dropout", type=float, default=0.5,
                   help="Input and output dropout of children and final models.")
    p.add_argument("--timing_rounds", type=int, default=3, help="Alternating timing rounds.")
    p.add_argument("--timing_steps", type=int, default=10, help="Steps per model and round.")
    p.add_argument("--plot", default="", help="Where the plot goes "
                   "(default: <output_dir>/cell_search_replication.png).")
    p.add_argument("--verbose", type=int, choices=(0, 1), default=1,
                   help="1: a line per child and per final model.")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.budget, args.final_seeds = 2, 3, 2
        args.child_units, args.child_epochs = 8, 1
        args.child_max_train_batches, args.child_max_eval_batches = 3, 2
        args.final_units, args.final_epochs = 40, 1
        args.final_max_train_batches, args.final_max_eval_batches = 4, 2
        args.timing_rounds, args.timing_steps = 1, 2
        args.isolate_children = 0
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in args.methods if m not in METHODS]
    if bad or not args.methods:
        p.error(f"--methods: unknown {bad}; choose from {list(METHODS)}.")
    for name in ("seeds", "budget", "child_units", "child_epochs", "final_seeds",
                 "final_units", "final_epochs", "timing_rounds", "timing_steps"):  # fmt: skip
        if getattr(args, name) < 1:
            p.error(f"--{name} must be positive, got {getattr(args, name)}.")
    for name in ("child_max_train_batches", "child_max_eval_batches",
                 "final_max_train_batches", "final_max_eval_batches"):  # fmt: skip
        if getattr(args, name) < 0:
            p.error(f"--{name} must be 0 (all) or positive, got {getattr(args, name)}.")
    if not 0 <= args.only_seed <= args.seeds:
        p.error(f"--only_seed must be 0 (all) or in 1..{args.seeds}, got {args.only_seed}.")
    if args.only_seed and not args.searches_only:
        p.error("--only_seed runs part of the searches; give --searches_only with it.")
    if args.cell_base < 2 or args.cell_base & (args.cell_base - 1):
        p.error(f"--cell_base must be a power of two >= 2, got {args.cell_base}.")
    if not 0 <= args.dropout < 1:
        p.error(f"--dropout must be in [0, 1), got {args.dropout}.")
    args.plot = args.plot or os.path.join(args.output_dir, "cell_search_replication.png")
    return args


def _batches(n: int) -> Optional[int]:
    return n or None


def child_configs(args, seed: int):
    """(LanguageModelConfig, TrainConfig) of every child of the searches of `seed`."""
    from nas_tf.children import language_model as lm
    from nas_tf.children import lm_trainer

    model = lm.LanguageModelConfig(
        units=args.child_units, input_dropout=args.dropout, output_dropout=args.dropout
    )
    train = lm_trainer.TrainConfig(
        epochs=args.child_epochs,
        max_train_batches=_batches(args.child_max_train_batches),
        max_eval_batches=_batches(args.child_max_eval_batches),
        seed=seed,
    )
    return model, train


def final_train_config(args, seed: int):
    """The `TrainConfig` every final model trains with (Zaremba et al.'s schedule)."""
    from nas_tf.children import lm_trainer

    return lm_trainer.TrainConfig(
        epochs=args.final_epochs,
        lr_decay_after=args.final_lr_decay_after,
        max_train_batches=_batches(args.final_max_train_batches),
        max_eval_batches=_batches(args.final_max_eval_batches),
        seed=seed,
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


def run_search(args, method: str, seed: int, data) -> dict:
    """One search (resumed if started, skipped if finished); returns its summary."""
    from nas_tf import search, tasks
    from nas_tf.children import worker

    out = os.path.join(args.output_dir, "searches", f"{method}_seed{seed}")
    summary = _read_json(os.path.join(out, SUMMARY))
    if summary is not None and summary["children"] >= args.budget:
        return summary  # A larger --budget extends it (both methods resume exactly).
    model, train = child_configs(args, seed)
    start = time.time()
    say = print if args.verbose else (lambda *a, **k: None)
    say(f"[{method} seed {seed}] {args.budget} children -> {out}", flush=True)
    if method == "controller":
        # The library's defaults: SearchConfig's controller, REINFORCE and preset.
        config = search.SearchConfig(
            output_dir=out,
            space="ptb_cell",
            space_overrides={"base": args.cell_base},
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
        task = tasks.make_task("ptb_cell", {"base": args.cell_base}, data,
                               lm_model=model, lm_train=train)  # fmt: skip
        pool = worker.WorkerPool(task) if args.isolate_children else task

        def on_child(r):
            what = (f"reward {r['reward']:.4f} val_ppl {r['best_val_perplexity']:.2f}"
                    if r["status"] == "COMPLETED" else f"FAILED ({r['reason']})")  # fmt: skip
            say(f"[random seed {seed}] child {int(r['trial_id']) + 1}/{args.budget} {what}",
                flush=True)

        try:
            records = random_search(task.space, pool, args.budget, seed, out, on_child)
        finally:
            if pool is not task:
                pool.close()
    earlier = summary["seconds"] if summary is not None else 0.0  # Extended: add its time.
    summary = _summarize_search(records, method, seed, earlier + time.time() - start)
    _write_json(os.path.join(out, SUMMARY), summary)
    return summary


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
      name: directory name, e.g. "controller_seed1" or "lstm".
      group: "controller", "random", or a key of `BASELINES`.
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
    from nas_tf.spaces import cell as cell_space

    def count(base, cell, use_bias):
        return lambda u: lm.count_parameters(base, u, vocab_size, cell=cell, use_bias=use_bias)

    target = count(lm.LSTM_BASE, "lstm", True)(args.final_units)
    cells = []
    for s in searches:
        arch = space_lib.Architecture.from_json(json.dumps(s["best_architecture"]))
        space = cell_space.ptb_cell(args.cell_base)
        description = cell_space.CellDescription.from_architecture(space.validate(arch), space)
        cells.append((f"{s['method']}_seed{s['seed']}", s["method"], description))
    cells.append(("lstm_like", "lstm_like", cell_space.lstm_like()))
    cells.append(("paper", "paper", train_lm.load_architecture(PAPER_CELL, 8)))
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


def train_final(args, model: FinalModel, seed: int, data) -> dict:
    """Trains one final model with one seed (skipped if its results.json exists).

    A run that diverges is a result too: its results.json holds "failed" and
    NaN perplexities, and the tables count it apart from the means.
    """
    import keras

    from nas_tf import train_lm
    from nas_tf.children import language_model as lm
    from nas_tf.children.base import ChildTrainingError

    out = os.path.join(args.output_dir, "final", model.name, f"seed{seed}")
    config = train_lm.RunConfig(
        output_dir=out,
        data_name=args.data,
        data_dir=args.data_dir,
        description=model.description,
        model=lm.LanguageModelConfig(
            units=model.units,
            input_dropout=args.dropout,
            output_dropout=args.dropout,
            cell="lstm" if model.description is None else "nas",
        ),
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
    """Whether two `RunConfig.to_dict()`s train the same model the same way."""
    keys = ("data_name", "cell", "model", "train")
    return json.loads(json.dumps({k: old.get(k) for k in keys})) == json.loads(
        json.dumps({k: new.get(k) for k in keys})
    )


def time_models(args, models: List[FinalModel], data) -> Dict[str, float]:
    """ms per training step of every final model, alternating rounds (cached in timing.json)."""
    import keras

    from nas_tf.children import language_model as lm

    path = os.path.join(args.output_dir, "timing.json")
    signature = {m.name: [m.units, None if m.description is None else m.description.to_config()]
                 for m in models}  # fmt: skip
    cached = _read_json(path)
    if cached is not None and cached.get("models") == json.loads(json.dumps(signature)):
        return cached["ms_per_step"]
    sys.path.insert(0, _HERE)
    try:
        import cell_vs_lstm
    finally:
        sys.path.remove(_HERE)
    keras.backend.clear_session()
    configs = {
        m.name: (m.description, lm.LanguageModelConfig(
            units=m.units, input_dropout=args.dropout, output_dropout=args.dropout,
            cell="lstm" if m.description is None else "nas"))
        for m in models
    }  # fmt: skip
    timed = cell_vs_lstm.step_times(configs, data, final_train_config(args, 0),
                                    args.timing_rounds, args.timing_steps)  # fmt: skip
    _write_json(path, {"models": signature, "ms_per_step": timed})
    return timed


# -- report -----------------------------------------------------------------------


def spread(values: Sequence[float]) -> str:
    """"mean ± sample standard deviation" of the finite values (just the value for one)."""
    values = [float(v) for v in values if math.isfinite(v)]
    if not values:
        return "—"
    mean = float(np.mean(values))
    if len(values) < 2:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {float(np.std(values, ddof=1)):.2f}"


def _label(group: str) -> str:
    return {"controller": "controller's best cell", "random": "random search's best cell"}.get(
        group, BASELINES.get(group, group)
    )


def tables(searches: List[dict], models: List[FinalModel], results: Dict[str, List[dict]],
           timing: Dict[str, float]) -> str:  # fmt: skip
    """The report's Markdown tables: final models per group, then per search."""
    groups: Dict[str, List[FinalModel]] = {}
    for m in models:
        groups.setdefault(m.group, []).append(m)
    lines = [
        "| model | runs | parameters | units | best val ppl | test ppl | ms / step |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for group, members in groups.items():
        runs = [r for m in members for r in results[m.name]]
        if len(members) > 1:  # One figure per search (the mean over its training seeds).
            val = [_mean([r["best_val_perplexity"] for r in results[m.name]]) for m in members]
            test = [_mean([r["test_perplexity"] for r in results[m.name]]) for m in members]
            what = f"{len(members)} searches x {len(results[members[0].name])} seeds"
        else:
            val = [r["best_val_perplexity"] for r in runs]
            test = [r["test_perplexity"] for r in runs]
            what = f"{len(runs)} seeds"
        failed = sum("failed" in r for r in runs)
        if failed:
            what += f" ({failed} diverged)"
        params = sorted({r["num_parameters"] for r in runs})
        units = sorted({m.units for m in members})
        ms = [timing[m.name] for m in members]
        lines.append(
            f"| {_label(group)} | {what} | {', '.join(f'{p:,}' for p in params)} | "
            f"{', '.join(map(str, units))} | {spread(val)} | {spread(test)} | {spread(ms)} |"
        )
    lines += [
        "",
        "| search | children (failed) | children's median val ppl: first half, second half "
        "| best reward | its child's val ppl | best cell: final val ppl | final test ppl |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in searches:
        name = f"{s['method']}_seed{s['seed']}"
        runs = results[name]
        first, second = half_medians(s["rewards"])
        lines.append(
            f"| {s['method']} seed {s['seed']} | {s['children']} ({s['failed']}) | "
            f"{first:.1f}, {second:.1f} | "
            f"{s['best_reward']:.3g} | {s['best_val_perplexity']:.1f} | "
            f"{spread([r['best_val_perplexity'] for r in runs])} | "
            f"{spread([r['test_perplexity'] for r in runs])} |"
        )
    for method in METHODS:
        mine = [s for s in searches if s["method"] == method]
        if len(mine) < 2:
            continue
        halves = np.array([half_medians(s["rewards"]) for s in mine])
        lines.append(
            f"| **{method}, mean ± sd** | | {spread(halves[:, 0])}, {spread(halves[:, 1])} | | "
            f"{spread([s['best_val_perplexity'] for s in mine])} | | "
            f"{spread([_mean([r['test_perplexity'] for r in results[_name(s)]]) for s in mine])} |"
        )
    return "\n".join(lines)


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


def plot(path: str, searches: List[dict], models: List[FinalModel],
         results: Dict[str, List[dict]]) -> None:  # fmt: skip
    """Test perplexity per model (error bars); best reward and the children's perplexity
    over the search, per method."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (left, right, third) = plt.subplots(1, 3, figsize=(16, 4.4))
    names = [m.name for m in models]
    finite = [[r["test_perplexity"] for r in results[n] if math.isfinite(r["test_perplexity"])]
              for n in names]  # fmt: skip (diverged runs left out)
    means = [np.mean(v) if v else 0.0 for v in finite]
    errors = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in finite]
    colours = {"controller": "tab:blue", "random": "tab:orange", "lstm": "tab:gray",
               "lstm_like": "tab:green", "paper": "tab:red"}  # fmt: skip
    y = np.arange(len(names))
    left.barh(y, means, xerr=errors, color=[colours.get(m.group, "k") for m in models],
              capsize=3)  # fmt: skip
    left.set_yticks(y, names)
    left.invert_yaxis()
    left.set_xlabel("test perplexity (mean ± sd over training seeds; lower is better)")
    left.set_xlim(0, max(means) * 1.05 + max(errors))
    for method in METHODS:
        curves = np.array([s["best_so_far"] for s in searches if s["method"] == method])
        if not len(curves):
            continue
        x = np.arange(1, curves.shape[1] + 1)
        for c in curves:
            right.plot(x, c, color=colours[method], alpha=0.3, lw=0.8)
        right.plot(x, np.nanmean(curves, axis=0), color=colours[method], lw=2,
                   label=f"{method} (mean of {len(curves)} seeds)")  # fmt: skip
    right.set_xlabel("children trained")
    right.set_ylabel("best reward so far (80 / val ppl²)")
    right.legend()
    window = 8
    for method in METHODS:
        mine = [s for s in searches if s["method"] == method]
        if not mine:
            continue
        rolled = []
        for s in mine:  # A failed child counts as the worst perplexity (plotted at the top).
            ppl = [math.sqrt(80.0 / r) if r else math.inf for r in s["rewards"]]
            rolled.append([np.median(ppl[max(0, k + 1 - window): k + 1]) for k in range(len(ppl))])
        rolled = np.minimum(np.array(rolled), 2000.0)
        x = np.arange(1, rolled.shape[1] + 1)
        third.plot(x, np.mean(rolled, axis=0), color=colours[method], lw=2,
                   label=f"{method} (mean of {len(mine)} seeds)")  # fmt: skip
    third.set_yscale("log")
    third.set_xlabel("children trained")
    third.set_ylabel(f"children's val ppl, running median of {window}")
    third.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def settings_text(args, data) -> str:
    """What ran, in words."""
    child_batches = args.child_max_train_batches or "all"
    final_batches = args.final_max_train_batches or "all"
    return (
        f"Data: {data.name} ({data.vocab_size:,} tokens, {len(data.train):,} training ids). "
        f"Search: ptb_cell base {args.cell_base}, {args.budget} distinct children per search, "
        f"seeds {', '.join(map(str, range(1, args.seeds + 1)))} for {' and '.join(args.methods)}; "
        f"children: 2 layers x {args.child_units} units, {args.child_epochs} epoch(s) of "
        f"{child_batches} batches of 20 x 35, validation on "
        f"{args.child_max_eval_batches or 'all'} batches, dropout {args.dropout}, reward "
        f"80 / ppl². Final models: the parameter count of a {args.final_units}-unit LSTM "
        f"(each width solved to within {TOLERANCE:.0%}), {args.final_epochs} epochs of "
        f"{final_batches} batches, SGD 1.0 x0.8 per epoch after {args.final_lr_decay_after}, "
        f"clip 5, dropout {args.dropout}, seeds 0..{args.final_seeds - 1}; test on "
        f"{args.final_max_eval_batches or 'all'} batches with the best validation epoch's weights."
    )


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    from nas_tf import data as data_lib
    from nas_tf import train_lm

    try:
        data = train_lm.load_data(args.data, args.data_dir)
    except data_lib.DataNotPreparedError as e:
        print(f"replicate_cell_search: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.output_dir, exist_ok=True)
    seeds = [args.only_seed] if args.only_seed else range(1, args.seeds + 1)
    searches = [run_search(args, method, seed, data) for method in args.methods for seed in seeds]
    if args.searches_only:
        for s in searches:
            print(f"{s['method']} seed {s['seed']}: {s['children']} children, best reward "
                  f"{s['best_reward']:.5f} ({s['seconds']:.0f} s)")
        return 0
    models = final_models(args, searches, data.vocab_size)
    results = {m.name: [train_final(args, m, t, data) for t in range(args.final_seeds)]
               for m in models}  # fmt: skip
    timing = time_models(args, models, data)
    plot(args.plot, searches, models, results)
    compute = sum(s["seconds"] for s in searches) + sum(
        r["seconds"] for runs in results.values() for r in runs
    )
    command = "python experiments/replicate_cell_search.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    table = tables(searches, models, results, timing)
    report = "\n\n".join([
        "# Cell search replication",
        f"```\n{command.strip()}\n```",
        settings_text(args, data),
        table,
        f"This invocation: {time.time() - start:.0f} s wall. Searches and final trainings, "
        f"summed over the invocations that finished them: {compute:.0f} s (a search "
        f"resumed after a kill counts from its resume). Plot: {args.plot}.",
    ])  # fmt: skip
    durable.atomic_write_text(os.path.join(args.output_dir, "report.md"), report + "\n")
    print()
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
