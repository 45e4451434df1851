"""Tests of the NAS-Bench-201 benchmark module and program on synthetic tables."""

import csv
import os
import sys

import numpy as np
import pytest

from nas_tf.benchmarks import nasbench201 as nb

_EXPERIMENTS = os.path.join(os.path.dirname(__file__), "..", "experiments")


def _accuracy(code: int) -> float:
    """A synthetic validation accuracy: convolutions help, `none` hurts."""
    ops = nb.decode(code)
    gain = {0: -6.0, 1: 0.5, 2: 1.5, 3: 2.5, 4: 0.0}
    return 70.0 + sum(gain[op] * (1 + k % 3) for k, op in enumerate(ops)) / 2.0


def _write_table(path, codes):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["arch", "cellstr", "params", "score", "test_top1", "valid_top1"])
        for code in codes:
            valid = _accuracy(code)
            writer.writerow([code, nb.cellstr(code), 0.1, "nan", valid + 3.0, valid])
    return str(path)


@pytest.fixture(scope="module")
def full_table(tmp_path_factory):
    path = tmp_path_factory.mktemp("nb201") / "full.csv"
    return nb.load_table(_write_table(path, range(nb.NUM_CELLS)))


def test_cell_codes_round_trip():
    text = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|none~0|skip_connect~1|nor_conv_3x3~2|"
    code = nb.parse_cellstr(text)
    assert nb.cellstr(code) == text
    assert nb.decode(code) == (4, 2, 1, 0, 1, 3)
    assert nb.encode(nb.decode(12345)) == 12345


@pytest.mark.parametrize(
    "text",
    [
        "|none~0|",
        "|none~0|+|none~0|+|none~0|none~1|none~2|",
        "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",
    ],
)
def test_bad_cellstr_is_refused(text):
    with pytest.raises(ValueError):
        nb.parse_cellstr(text)


def test_loader_parses_a_small_table(tmp_path):
    codes = [0, 7, 15624]
    table = nb.load_table(_write_table(tmp_path / "small.csv", codes))
    assert table.num_cells == 3
    assert table.valid_of(7) == pytest.approx(_accuracy(7))
    assert table.test[7] == pytest.approx(_accuracy(7) + 3.0)
    with pytest.raises(nb.MissingCellError, match="not in table"):
        table.valid_of(8)


def test_bad_path_gives_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="NAS-Bench-201 table not found"):
        nb.load_table(str(tmp_path / "missing.csv"))


def test_missing_column_is_reported(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("arch,cellstr,test_top1\n0,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,1\n")
    with pytest.raises(ValueError, match="valid_top1"):
        nb.load_table(str(path))


def test_best_test_at_uses_validation_then_reports_test(full_table):
    codes = [0, 15624, 100]
    best_valid = max(codes[:2], key=full_table.valid_of)
    assert nb.best_test_at(full_table, codes, [1, 2, 4]) == [
        full_table.test[0],
        full_table.test[best_valid],
        pytest.approx(float("nan"), nan_ok=True),
    ]


def _check(result, table, budget):
    assert len(result.codes) == budget
    assert len(set(result.codes)) == budget
    assert result.proposals >= budget
    best = nb.best_test_at(table, result.codes, [budget])[0]
    assert np.nanmin(table.test) <= best <= np.nanmax(table.test)
    return best


def test_numpy_baselines(full_table):
    for search in (nb.random_search, nb.regularized_evolution):
        _check(search(full_table, 10, seed=3), full_table, 10)
    a = nb.regularized_evolution(full_table, 30, seed=5)
    b = nb.regularized_evolution(full_table, 30, seed=5)
    assert a.codes == b.codes


@pytest.mark.parametrize("method", ["nasrl", "kt_random"])
def test_oracles_through_the_oracle_api(full_table, method, tmp_path):
    oracle = nb.make_oracle(method, seed=17, max_trials=50)
    result = nb.run_oracle(oracle, full_table, 10, directory=str(tmp_path))
    _check(result, full_table, 10)
    assert result.overhead_s > 0
    assert not os.listdir(tmp_path)  # The project directory is removed.


def test_oracle_seed_zero_is_refused():
    with pytest.raises(ValueError, match="seed 0"):
        nb.make_oracle("kt_random", seed=0, max_trials=5)


def test_program_runs_every_method(full_table, capsys):
    sys.path.insert(0, _EXPERIMENTS)
    try:
        import nasbench201 as program
    finally:
        sys.path.remove(_EXPERIMENTS)
    program.main(
        [
            "--table", full_table.path, "--seeds", "1", "--budgets", "5,10",
            "--bayes_seeds", "1", "--workers", "1",
        ]
    )
    out = capsys.readouterr().out
    for method in program.ALL_METHODS:
        assert f"| {method} |" in out
    assert "| nasrl - nasrl_frozen | 1 |" in out
    assert "| nasrl_alone - nasrl_alone_frozen | 1 |" in out
    assert "total wall time" in out


def test_a_controller_search_driven_directly_proposes_what_the_oracle_does(full_table, tmp_path):
    from nas_tf import algorithms

    oracle = nb.make_oracle("nasrl", seed=17, max_trials=300)
    # 60 cells: past the end of the default's mutation phase (trial 40).
    through_oracle = nb.run_oracle(oracle, full_table, 60, directory=str(tmp_path))
    space, fixed = nb.search_space()
    direct = nb.run_algorithm(algorithms.ControllerSearch(space, 17), full_table, 60, fixed)
    assert direct.codes == through_oracle.codes
    assert direct.updates == through_oracle.updates > 0


def test_ablations_pair_with_nasrl_and_write_each_run(full_table, tmp_path, capsys):
    import json

    sys.path.insert(0, _EXPERIMENTS)
    try:
        import nasbench201 as program
    finally:
        sys.path.remove(_EXPERIMENTS)
    per_seed = tmp_path / "runs.jsonl"
    program.main(["--table", full_table.path, "--seeds", "2", "--first_seed", "4",
                  "--budgets", "10,20", "--workers", "1", "--direct",
                  "--methods", "nasrl,nasrl_frozen,mutate_uniform", "--per_seed", str(per_seed)])
    out = capsys.readouterr().out
    assert "| nasrl - nasrl_frozen | 2 |" in out
    assert "nasrl_frozen: 0 REINFORCE updates" in out
    runs = [json.loads(line) for line in per_seed.read_text().splitlines()]
    assert sorted((r["method"], r["seed"]) for r in runs) == [
        (m, s) for m in ("mutate_uniform", "nasrl", "nasrl_frozen") for s in (4, 5)]
    assert all(len(set(r["codes"])) == len(r["codes"]) == 20 for r in runs)
    # Seeded alike, the frozen twin starts from nasrl's first batch (the same initial policy).
    first = {(r["method"], r["seed"]): r["codes"][:8] for r in runs}
    assert first["nasrl", 4] == first["nasrl_frozen", 4]


def test_program_bad_table_exits_with_message(tmp_path):
    sys.path.insert(0, _EXPERIMENTS)
    try:
        import nasbench201 as program
    finally:
        sys.path.remove(_EXPERIMENTS)
    with pytest.raises(SystemExit, match="table not found"):
        program.main(["--table", str(tmp_path / "nope.csv"), "--workers", "1"])
