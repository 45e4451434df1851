"""NAS-Bench-201 (Dong & Yang, ICLR 2020) as a tabular search benchmark.

A NAS-Bench-201 cell is a 4-node DAG; each of its 6 edges carries one of 5
operations. The benchmark table gives the accuracy of all 5**6 = 15,625 cells,
so a search "trains" a cell by a table lookup. This module holds:

* the table loader (`load_table`), keyed by an integer cell code;
* the Keras Tuner search space (`hyperparameters`): one `hp.Choice` per edge,
  in the order of the benchmark's cell strings;
* a driver that runs any Keras Tuner oracle on the table through the Oracle
  API (`run_oracle`);
* two numpy baselines written from their descriptions: random search and
  regularized evolution (Real et al., 2019);
* `best_test_at`, the protocol's result: the test accuracy of the cell with
  the best validation accuracy among the first `budget` cells evaluated.

A budget is a number of distinct cells evaluated. A search that proposes a
cell it has already evaluated gets the known accuracy for free.
"""

import csv
import dataclasses
import math
import os
import shutil
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# (to_node, from_node) of each edge, in cell-string order.
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
EDGE_NAMES = tuple(f"edge_{i}_{j}" for i, j in EDGES)
NUM_CELLS = len(OPS) ** len(EDGES)
OBJECTIVE = "valid_top1"
_REQUIRED_COLUMNS = ("cellstr", "valid_top1", "test_top1")


# -- cells ---------------------------------------------------------------------


def encode(ops: Sequence[int]) -> int:
    """The cell code of a tuple of 6 operation indices (first edge most significant)."""
    code = 0
    for op in ops:
        code = code * len(OPS) + int(op)
    return code


def decode(code: int) -> Tuple[int, ...]:
    """The 6 operation indices of a cell code."""
    ops = []
    for _ in EDGES:
        code, op = divmod(int(code), len(OPS))
        ops.append(op)
    return tuple(reversed(ops))


def parse_cellstr(text: str) -> int:
    """Parses `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` into a cell code.

    Raises:
      ValueError: if the string is not a NAS-Bench-201 cell.
    """
    nodes = text.strip().split("+")
    if len(nodes) != 3:
        raise ValueError(f"Not a NAS-Bench-201 cell string: {text!r}")
    ops = []
    for to_node, node in enumerate(nodes, start=1):
        edges = [e for e in node.strip().split("|") if e]
        if len(edges) != to_node:
            raise ValueError(f"Node {to_node} of {text!r} must have {to_node} edges.")
        for from_node, edge in enumerate(edges):
            op, _, source = edge.partition("~")
            if op not in OPS or source != str(from_node):
                raise ValueError(f"Bad edge {edge!r} in cell string {text!r}.")
            ops.append(OPS.index(op))
    return encode(ops)


def cellstr(code: int) -> str:
    """The benchmark's cell string of a cell code."""
    ops = decode(code)
    parts, k = [], 0
    for to_node in range(1, 4):
        edges = [f"{OPS[ops[k + j]]}~{j}" for j in range(to_node)]
        parts.append("|" + "|".join(edges) + "|")
        k += to_node
    return "+".join(parts)


# -- the table -------------------------------------------------------------------


class MissingCellError(KeyError):
    """A search asked for a cell the table does not hold."""


@dataclasses.dataclass
class Table:
    """Accuracies by cell code (NaN where the table has no row).

    Attributes:
      valid: validation top-1 (%), the only value a search may see.
      test: test top-1 (%), what the protocol reports.
      path: the file it was read from.
    """

    valid: np.ndarray
    test: np.ndarray
    path: str = ""

    @property
    def num_cells(self) -> int:
        """Cells with a row in the table."""
        return int(np.sum(~np.isnan(self.valid)))

    def valid_of(self, code: int) -> float:
        """Validation accuracy of a cell; `MissingCellError` if it has no row."""
        value = self.valid[code]
        if math.isnan(value):
            raise MissingCellError(f"Cell {cellstr(code)} is not in table {self.path}.")
        return float(value)


def load_table(path: str) -> Table:
    """Reads a NAS-Bench-201 CSV (columns cellstr, valid_top1, test_top1, ...).

    Raises:
      FileNotFoundError: no file at `path`.
      ValueError: a missing column, a malformed row, or a repeated cell.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"NAS-Bench-201 table not found: {path!r}. Pass --table "
            "../shared/data/nasbench201/nb201_cifar10.csv (see its README.md)."
        )
    valid = np.full(NUM_CELLS, np.nan)
    test = np.full(NUM_CELLS, np.nan)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"Table {path} lacks column(s) {missing}.")
        for line, row in enumerate(reader, start=2):
            try:
                code = parse_cellstr(row["cellstr"])
                v, t = float(row["valid_top1"]), float(row["test_top1"])
            except (TypeError, ValueError) as e:
                raise ValueError(f"{path}, line {line}: {e}") from None
            if not (math.isfinite(v) and math.isfinite(t)):
                raise ValueError(f"{path}, line {line}: non-finite accuracy.")
            if not math.isnan(valid[code]):
                raise ValueError(f"{path}, line {line}: cell {row['cellstr']} repeated.")
            valid[code], test[code] = v, t
    if np.all(np.isnan(valid)):
        raise ValueError(f"Table {path} has no rows.")
    return Table(valid=valid, test=test, path=path)


def best_test_at(table: Table, codes: Sequence[int], budgets: Sequence[int]) -> List[float]:
    """Test accuracy of the best-by-validation cell among the first b codes, per budget.

    Ties in validation accuracy go to the cell evaluated first.
    """
    codes = np.asarray(codes, np.int64)
    valid = table.valid[codes]
    out = []
    for b in budgets:
        if b > len(codes) or b < 1:
            out.append(float("nan"))
            continue
        out.append(float(table.test[codes[int(np.argmax(valid[:b]))]]))
    return out


# -- the Keras Tuner space ---------------------------------------------------------


def hyperparameters():
    """The search space as Keras Tuner hyperparameters: one `hp.Choice` per edge."""
    import keras_tuner  # Imported here: the numpy baselines need no TensorFlow.

    hps = keras_tuner.HyperParameters()
    for name in EDGE_NAMES:
        hps.Choice(name, list(OPS), default=OPS[0])
    return hps


def values_to_code(values: Dict) -> int:
    """The cell code of a trial's hyperparameter values."""
    return encode([OPS.index(values[name]) for name in EDGE_NAMES])


# -- searches ----------------------------------------------------------------------


@dataclasses.dataclass
class SearchResult:
    """What one search did.

    Attributes:
      codes: distinct cells in the order they were first evaluated.
      proposals: cells proposed in all (repeats included).
      overhead_s: time spent inside the search method itself (for an oracle:
        create_trial + update_trial + end_trial, i.e. sampling, learning and
        saving its state), excluding table lookups.
      wall_s: wall time of the whole search.
      updates: controller updates applied (NASRLOracle only), counting those
        made from the known rewards of re-sampled cells.
    """

    codes: List[int]
    proposals: int
    overhead_s: float
    wall_s: float
    updates: Optional[int] = None


class _Evaluator:
    """Looks cells up once each and records the distinct ones in order."""

    def __init__(self, table: Table):
        self.table = table
        self.known: Dict[int, float] = {}
        self.codes: List[int] = []
        self.proposals = 0

    def __call__(self, code: int) -> float:
        self.proposals += 1
        if code not in self.known:
            self.known[code] = self.table.valid_of(code)
            self.codes.append(code)
        return self.known[code]


def random_search(table: Table, budget: int, seed: int) -> SearchResult:
    """Uniform random cells without repeats (numpy)."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    evaluate = _Evaluator(table)
    for code in rng.choice(NUM_CELLS, size=min(budget, NUM_CELLS), replace=False):
        evaluate(int(code))
    wall = time.perf_counter() - start
    return SearchResult(evaluate.codes, evaluate.proposals, wall, wall)


def _mutate(code: int, rng: np.random.Generator) -> int:
    """Changes the operation of one uniformly chosen edge to another operation."""
    ops = list(decode(code))
    edge = int(rng.integers(len(EDGES)))
    ops[edge] = (ops[edge] + int(rng.integers(1, len(OPS)))) % len(OPS)
    return encode(ops)


def regularized_evolution(
    table: Table,
    budget: int,
    seed: int,
    population_size: int = 10,
    sample_size: int = 3,
    max_proposals_factor: int = 50,
) -> SearchResult:
    """Regularized (aging) evolution, Real et al. 2019 (numpy).

    The population starts with `population_size` random cells. Each step draws
    `sample_size` members at random, mutates the one with the best validation
    accuracy (one edge gets a different operation), adds the child and removes
    the oldest member. A child already evaluated costs no budget.
    """
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    evaluate = _Evaluator(table)
    population = []  # (code, valid), oldest first
    for code in rng.choice(NUM_CELLS, size=min(population_size, budget), replace=False):
        population.append((int(code), evaluate(int(code))))
    while len(evaluate.codes) < budget and evaluate.proposals < max_proposals_factor * budget:
        picks = rng.choice(len(population), size=min(sample_size, len(population)), replace=False)
        parent = max((population[i] for i in picks), key=lambda member: member[1])
        child = _mutate(parent[0], rng)
        population.append((child, evaluate(child)))
        if len(population) > population_size:
            population.pop(0)
    wall = time.perf_counter() - start
    return SearchResult(evaluate.codes, evaluate.proposals, wall, wall)


def run_oracle(
    oracle,
    table: Table,
    budget: int,
    max_proposals: Optional[int] = None,
    directory: Optional[str] = None,
) -> SearchResult:
    """Runs a Keras Tuner oracle on the table through create/update/end_trial.

    The oracle must have been built with `hyperparameters()` and objective
    `valid_top1` (max). Its project lives in a fresh temporary directory
    (under /dev/shm when present), removed afterwards.

    Args:
      oracle: a `keras_tuner.Oracle`.
      table: the accuracy table.
      budget: distinct cells to evaluate.
      max_proposals: stop after this many trials even if fewer distinct cells
        were reached (oracles that repeat cells); default 5 * budget.
      directory: parent of the temporary project directory.

    Returns:
      A `SearchResult`; its overhead is the time in the oracle's methods.
    """
    from keras_tuner.engine import trial as trial_module

    max_proposals = max_proposals or 5 * budget
    if directory is None and os.path.isdir("/dev/shm"):
        directory = "/dev/shm"
    project = tempfile.mkdtemp(prefix="nb201_", dir=directory)
    start = time.perf_counter()
    overhead = 0.0
    evaluate = _Evaluator(table)
    try:
        oracle._set_project_dir(project, "search")
        oracle.verbose = 0
        while len(evaluate.codes) < budget and evaluate.proposals < max_proposals:
            t0 = time.perf_counter()
            trial = oracle.create_trial("tuner0")
            t1 = time.perf_counter()
            if trial.status != trial_module.TrialStatus.RUNNING:
                overhead += t1 - t0
                break
            valid = evaluate(values_to_code(trial.hyperparameters.values))
            t2 = time.perf_counter()
            oracle.update_trial(trial.trial_id, {OBJECTIVE: valid})
            trial.status = trial_module.TrialStatus.COMPLETED
            oracle.end_trial(trial)
            overhead += (t1 - t0) + (time.perf_counter() - t2)
    finally:
        shutil.rmtree(project, ignore_errors=True)
    wall = time.perf_counter() - start
    algorithm = getattr(oracle, "_algorithm", None)  # NASRLOracle's, once built.
    updates = None if algorithm is None else algorithm.num_updates
    return SearchResult(evaluate.codes, evaluate.proposals, overhead, wall, updates)


def search_space():
    """(nas_tf `Space`, fixed values) of the cells, as `NASRLOracle` sees `hyperparameters()`."""
    from nas_tf import hp_space

    return hp_space.space_from_hyperparameters(hyperparameters())


def run_algorithm(algorithm, table: Table, budget: int, fixed=None,
                  max_proposals: Optional[int] = None) -> SearchResult:
    """Runs a `nas_tf.algorithms.SearchAlgorithm` on the table, without Keras Tuner.

    The algorithm must search `search_space()`. Proposals are fed back in
    order, as `run_oracle` does through the Oracle API, so a
    `ControllerSearch` seeded as a `NASRLOracle` proposes the same cells
    (tests/test_nasbench201.py checks it), at a fraction of the overhead.

    Args:
      algorithm: the search algorithm.
      table: the accuracy table.
      budget: distinct cells to evaluate.
      fixed: the fixed values of `search_space()` (default: none).
      max_proposals: stop after this many proposals; default 5 * budget.
    """
    from nas_tf import hp_space

    max_proposals = max_proposals or 5 * budget
    space = algorithm.space
    start = time.perf_counter()
    lookups = 0.0
    evaluate = _Evaluator(table)
    while len(evaluate.codes) < budget and evaluate.proposals < max_proposals:
        key = str(evaluate.proposals)
        arch = algorithm.propose(key)
        if arch is None:
            break
        t0 = time.perf_counter()
        valid = evaluate(values_to_code(hp_space.architecture_to_values(space, arch, fixed or {})))
        lookups += time.perf_counter() - t0
        algorithm.feedback(key, arch, valid)
    wall = time.perf_counter() - start
    return SearchResult(evaluate.codes, evaluate.proposals, wall - lookups, wall,
                        algorithm.num_updates)


def oracle_options(setting: dict) -> dict:
    """`NASRLOracle` keyword arguments for a setting: overrides of a preset.

    Args:
      setting: {"preset": "default" | "paper", "reinforce": {ReinforceConfig
        fields}, "controller": {ControllerConfig fields}, "oracle":
        {NASRLOracle arguments}}, every key optional.

    Raises:
      ValueError / TypeError: for unknown keys or fields, or bad values.
    """
    from nas_tf import settings as settings_lib

    unknown = set(setting) - {"reinforce", "controller", "oracle", "preset"}
    if unknown:
        raise ValueError(f"Unknown setting keys {sorted(unknown)}.")
    preset = setting.get("preset", "default")
    try:
        base = settings_lib.resolve_preset(preset)  # No family: a benchmark's own space.
    except ValueError:
        raise ValueError(f"Unknown preset {preset!r}.") from None
    options = dict(setting.get("oracle", {}), preset=preset)
    if "reinforce" in setting:
        options["reinforce_config"] = dataclasses.replace(base["reinforce"], **setting["reinforce"])
    if "controller" in setting:
        options["controller_config"] = dataclasses.replace(
            base["controller"], **setting["controller"])
    return options


def make_oracle(method: str, seed: int, max_trials: int, **options):
    """Builds a Keras Tuner oracle over the NAS-Bench-201 space.

    Args:
      method: "nasrl" (`nas_tf.NASRLOracle`), "kt_random"
        (`RandomSearchOracle`) or "kt_bayes" (`BayesianOptimizationOracle`).
      seed: the oracle's seed; must not be 0 (Keras Tuner reads 0 as "none").
      max_trials: the oracle's trial limit.
      **options: passed to the oracle's constructor (e.g. `controller_config`,
        `reinforce_config` for "nasrl").
    """
    import keras_tuner

    if seed == 0:
        raise ValueError("Keras Tuner treats seed 0 as 'no seed'; use a nonzero seed.")
    common = dict(
        objective=keras_tuner.Objective(OBJECTIVE, "max"),
        max_trials=max_trials,
        hyperparameters=hyperparameters(),
        seed=seed,
    )
    if method == "nasrl":
        import nas_tf

        return nas_tf.NASRLOracle(**common, **options)
    if method == "kt_random":
        return keras_tuner.oracles.RandomSearchOracle(**common, **options)
    if method == "kt_bayes":
        return keras_tuner.oracles.BayesianOptimizationOracle(**common, **options)
    raise ValueError(f"Unknown oracle method {method!r}.")
