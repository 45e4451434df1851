"""Tests of experiments/replicate_cell_search.py: the cell-search replication benchmark.

The fast tests check the program's pieces without training a network: the
width solver, random search (its draws, failures and resume after a kill,
with a stand-in child), the best-so-far curve, the equal-size final models
and the tables. The slow test runs the whole `--quick` pipeline twice and
checks that the second run redoes nothing.
"""

import json
import math
import os
import sys

import numpy as np
import pytest

from nas_tf.children import language_model as lm
from nas_tf.children.base import ChildDivergedError
from nas_tf.spaces import cell as cell_space

_EXPERIMENTS = os.path.join(os.path.dirname(__file__), "..", "experiments")
sys.path.insert(0, _EXPERIMENTS)
try:
    import replicate_cell_search as rcs
finally:
    sys.path.remove(_EXPERIMENTS)


class _Killed(Exception):
    """Stands for a kill of the benchmark in the middle of a search."""


class _Child:
    """A stand-in child: reward from the architecture, counts calls, can fail or 'die'."""

    def __init__(self, kill_at=None, diverge=()):
        self.calls, self.kill_at, self.diverge = [], kill_at, set(diverge)

    def __call__(self, request):
        arch_json, model_path = request
        assert model_path == ""
        if self.kill_at is not None and len(self.calls) == self.kill_at:
            raise _Killed()
        self.calls.append(arch_json)
        if len(self.calls) - 1 in self.diverge:
            raise ChildDivergedError("Training loss is nan.")
        values = json.loads(arch_json)["values"]
        ppl = 100.0 + 10 * values["cell_index_out"] + (values["node_0_combine"] == "add")
        return {"reward": 80.0 / ppl**2, "best_val_perplexity": ppl}


def test_solve_units_is_the_nearest_width():
    assert rcs.solve_units(lambda u: 10 * u, 1234) == 123  # 1230 is nearer than 1240.
    assert rcs.solve_units(lambda u: 10 * u, 1236) == 124
    assert rcs.solve_units(lambda u: 10 * u, 3) == 1  # Width 1 at least.
    for base in (2, 4, 8):

        def count(u, base=base):
            return lm.count_parameters(base, u, 2888)

        target = lm.count_parameters(4, 64, 2888, cell="lstm", use_bias=True)
        u = rcs.solve_units(count, target)
        assert all(abs(count(u) - target) <= abs(count(v) - target) for v in (u - 1, u + 1))
    # A base-4 cell weighs as an LSTM without its 4 * units biases per layer.
    assert rcs.solve_units(
        lambda u: lm.count_parameters(4, u, 2888), lm.count_parameters(4, 64, 2888)
    ) == 64


def test_random_architectures_are_distinct_valid_and_seeded():
    space = cell_space.ptb_cell(2)  # 3 nodes: 8^3 * 8 * 9 = 36,864 cells.
    first = [a.to_json() for a, _ in zip(rcs.random_architectures(space, 1), range(200))]
    again = [a.to_json() for a, _ in zip(rcs.random_architectures(space, 1), range(200))]
    other = [a.to_json() for a, _ in zip(rcs.random_architectures(space, 2), range(200))]
    assert first == again and first != other
    assert len(set(first)) == 200
    for text in first[:20]:
        space.validate(space.architecture_from_json(text))
    # Uniform: every activation of node 0 is drawn (200 draws of 4 values).
    drawn = {json.loads(t)["values"]["node_0_activation"] for t in first}
    assert drawn == set(cell_space.ACTIVATIONS)


def test_random_search_records_failures_and_resumes_after_a_kill(tmp_path):
    space = cell_space.ptb_cell(2)
    whole = _Child(diverge=[2])
    expected = rcs.random_search(space, whole, 6, seed=3, output_dir=str(tmp_path / "whole"))
    assert len(whole.calls) == 6 and [r["trial_id"] for r in expected] == list("012345")
    assert expected[2]["status"] == "FAILED" and expected[2]["reason"] == "nan"
    assert expected[2]["reward"] is None
    assert all(r["status"] == "COMPLETED" for i, r in enumerate(expected) if i != 2)

    out = str(tmp_path / "killed")
    with pytest.raises(_Killed):
        rcs.random_search(space, _Child(kill_at=4, diverge=[2]), 6, seed=3, output_dir=out)
    with open(os.path.join(out, "history.jsonl"), "a") as f:
        f.write('{"trial_id": "4", "arch')  # A line torn by the kill.
    rest = _Child()
    resumed = rcs.random_search(space, rest, 6, seed=3, output_dir=out)
    assert len(rest.calls) == 2  # Children 4 and 5 only.
    assert resumed == expected
    # Finished: nothing is trained again.
    assert rcs.random_search(space, _Child(kill_at=0), 6, seed=3, output_dir=out) == expected
    # A larger budget extends the search with the draws an uninterrupted one makes.
    more = _Child()
    extended = rcs.random_search(space, more, 8, seed=3, output_dir=out)
    assert len(more.calls) == 2 and extended[:6] == expected
    assert extended == rcs.random_search(space, _Child(diverge=[2]), 8, 3, str(tmp_path / "8"))
    # Another seed's history is refused, not mixed in.
    with pytest.raises(ValueError, match="another search"):
        rcs.random_search(space, _Child(), 6, seed=4, output_dir=out)


def test_best_so_far_and_summary():
    assert rcs.best_so_far([None, 0.2, 0.1, float("nan"), 0.3])[1:] == [0.2, 0.2, 0.2, 0.3]
    assert math.isnan(rcs.best_so_far([None])[0])
    records = [
        {"status": "COMPLETED", "reward": 0.1, "architecture": {"a": 1}},
        {"status": "FAILED", "architecture": {"a": 2}},
        {"status": "COMPLETED", "reward": 0.3, "architecture": {"a": 3}, "best_val_perplexity": 9},
        {"status": "COMPLETED", "reward": 0.3, "architecture": {"a": 4}},
    ]
    s = rcs._summarize_search(records, "random", 2, 5.0)
    assert (s["best_child"], s["best_reward"], s["failed"], s["distinct"]) == (2, 0.3, 1, 4)
    assert s["best_architecture"] == {"a": 3} and s["best_val_perplexity"] == 9
    assert s["best_so_far"] == [0.1, 0.1, 0.3, 0.3]
    with pytest.raises(RuntimeError, match="no child"):
        rcs._summarize_search(records[1:2], "random", 2, 5.0)


def _searches():
    arch = json.loads(cell_space.lstm_like().to_architecture().to_json())
    return [
        {"method": m, "seed": s, "best_architecture": arch, "children": 4, "failed": 0,
         "best_reward": 1e-3, "best_val_perplexity": 280.0, "best_so_far": [1e-4, 1e-3],
         "rewards": [80.0, 80.0]}
        for m in rcs.METHODS for s in (1, 2)
    ]  # fmt: skip


def test_final_models_have_the_lstms_parameter_count():
    args = rcs.parse_args(["--final_units", "64"])
    models = rcs.final_models(args, _searches(), vocab_size=2888)
    assert [m.name for m in models] == [
        "lstm", "controller_seed1", "controller_seed2", "random_seed1", "random_seed2",
        "lstm_like", "paper",
    ]  # fmt: skip
    target = lm.count_parameters(4, 64, 2888, cell="lstm", use_bias=True)
    for m in models:
        assert abs(m.parameters - target) <= 0.02 * target
        if m.description is not None:  # The count the built model will have.
            assert m.parameters == lm.count_parameters(m.description.base, m.units, 2888)
    paper = models[-1]
    assert paper.description.base == 8 and paper.units < 64  # Twice the recurrent weights.
    # With 10 tokens the recurrent weights dominate: a base-8 width step is too coarse.
    with pytest.raises(ValueError, match="no width .* raise --final_units"):
        rcs.final_models(rcs.parse_args(["--final_units", "4"]), _searches(), 10)


def test_a_final_model_is_retrained_only_when_its_run_changes():
    from nas_tf import train_lm
    from nas_tf.children import lm_trainer

    def run(units=64, cell=cell_space.lstm_like(), epochs=6, out="a"):
        model = lm.LanguageModelConfig(units=units)
        train = lm_trainer.TrainConfig(epochs=epochs)
        return train_lm.RunConfig(out, "text", description=cell, model=model, train=train).to_dict()

    old = json.loads(json.dumps(run()))  # As read back from results.json.
    assert rcs._same_run(old, run(out="elsewhere"))
    assert not rcs._same_run(old, run(units=65))
    assert not rcs._same_run(old, run(cell=cell_space.paper_example()))
    assert not rcs._same_run(old, run(epochs=7))


def test_tables_give_mean_and_spread():
    searches = _searches()
    models = rcs.final_models(rcs.parse_args(["--final_units", "64"]), searches, 2888)
    results, timing = {}, {}
    for k, m in enumerate(models):
        results[m.name] = [
            {"best_val_perplexity": 100.0 + k + t, "test_perplexity": 90.0 + k + 2 * t,
             "num_parameters": m.parameters}
            for t in (0, 1, 2)
        ]  # fmt: skip
        timing[m.name] = 10.0 + k
    text = rcs.tables(searches, models, results, timing)
    # The LSTM (k = 0): test 90, 92, 94 -> mean 92, sample sd 2.
    assert "| keras.layers.LSTM | 3 seeds |" in text and "| 92.00 ± 2.00 | 10.00 |" in text
    # Controller: per-search means 93 (k = 1) and 94 (k = 2) -> 93.50 ± 0.71.
    row = next(line for line in text.splitlines() if line.startswith("| controller's"))
    assert "2 searches x 3 seeds" in row and "93.50 ± 0.71" in row
    # A diverged run is counted apart and left out of the means (paper, k = 6: 96, 98).
    results["paper"][2].update(failed="nan", test_perplexity=math.nan,
                               best_val_perplexity=math.nan)  # fmt: skip
    row = next(line for line in rcs.tables(searches, models, results, timing).splitlines()
               if line.startswith("| paper's cell"))  # fmt: skip
    assert "| 3 seeds (1 diverged) |" in row and "| 97.00 ± 1.41 |" in row
    assert "| random seed 2 | 4 (0) | 1.0, 1.0 | 0.001 | 280.0 |" in text
    # Best val ppl of the searches: 280 each; final test: per-search means 95, 96.
    assert "| **random, mean ± sd** | | 1.00 ± 0.00, 1.00 ± 0.00 | | 280.00 ± 0.00 | | 95.50 ± 0.71 |" in text


def test_half_medians():
    # ppl = sqrt(80 / reward): rewards 80/100^2 -> 100; a failure (None) is infinitely bad.
    first, second = rcs.half_medians([80 / 100**2, 80 / 300**2, None, 80 / 200**2, 80 / 50**2])
    assert (first, second) == (200.0, 200.0)
    assert rcs.half_medians([None, None, 80 / 10**2, 80 / 20**2]) == (math.inf, 15.0)


def test_bad_flags_are_refused(capsys):
    with pytest.raises(SystemExit):
        rcs.parse_args(["--methods", "controller,evolution"])
    assert "evolution" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        rcs.parse_args(["--cell_base", "6"])
    assert rcs.parse_args(["--quick"]).budget == 3
    with pytest.raises(SystemExit):
        rcs.parse_args(["--only_seed", "2"])  # Part of the searches, then finals: refused.
    assert "--searches_only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        rcs.parse_args(["--only_seed", "4", "--searches_only"])
    assert "1..3" in capsys.readouterr().err


def test_searches_only_stops_before_final_training(tmp_path, monkeypatch, capsys):
    ran = []

    def fake_search(args, method, seed, data):
        ran.append((method, seed))
        return {"method": method, "seed": seed, "children": 3, "best_reward": 0.001,
                "seconds": 1.0}  # fmt: skip

    def no_finals(*a, **k):
        raise AssertionError("final training must not start with --searches_only")

    monkeypatch.setattr(rcs, "run_search", fake_search)
    monkeypatch.setattr(rcs, "final_models", no_finals)
    monkeypatch.setattr("nas_tf.train_lm.load_data", lambda *a: None)
    argv = ["--searches_only", "--only_seed", "2", "--methods", "random,controller"]
    assert rcs.main(argv + ["--output_dir", str(tmp_path)]) == 0
    assert ran == [("random", 2), ("controller", 2)]
    assert "controller seed 2: 3 children" in capsys.readouterr().out


@pytest.mark.slow
def test_quick_pipeline_end_to_end_and_resume(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "run")
    log = tmp_path / "trainings.log"
    monkeypatch.setenv("NAS_TF_TRAINING_LOG", str(log))
    assert rcs.main(["--quick", "--output_dir", out, "--verbose", "0"]) == 0
    report = open(os.path.join(out, "report.md"), encoding="utf-8").read()
    for label in ("keras.layers.LSTM", "controller's best cell", "random search's best cell",
                  "LSTM-like cell", "paper's cell", "controller seed 2", "random seed 1"):  # fmt: skip
        assert label in report
    assert os.path.getsize(os.path.join(out, "cell_search_replication.png")) > 10_000
    for method in rcs.METHODS:
        for seed in (1, 2):
            summary = json.load(open(os.path.join(out, "searches", f"{method}_seed{seed}",
                                                  rcs.SUMMARY)))  # fmt: skip
            assert summary["children"] == 3 and summary["distinct"] == 3
            assert summary["best_reward"] == max(r for r in summary["rewards"] if r is not None)
    target = lm.count_parameters(4, 40, 2888, cell="lstm", use_bias=True)
    finals = sorted(os.listdir(os.path.join(out, "final")))
    assert len(finals) == 7
    for name in finals:
        for seed in (0, 1):
            r = json.load(open(os.path.join(out, "final", name, f"seed{seed}", "results.json")))
            assert abs(r["num_parameters"] - target) <= 0.02 * target
            assert np.isfinite(r["test_perplexity"])
    # The controller's children go through the search's training log; the
    # random search trains in this process (isolation off in --quick) too.
    trained = log.read_text().count("\n")
    stamp = {n: os.path.getmtime(os.path.join(out, "final", n, "seed0", "results.json"))
             for n in finals}  # fmt: skip
    assert rcs.main(["--quick", "--output_dir", out, "--verbose", "0"]) == 0
    assert log.read_text().count("\n") == trained  # No child trained again.
    assert stamp == {n: os.path.getmtime(os.path.join(out, "final", n, "seed0", "results.json"))
                     for n in finals}  # fmt: skip
    assert "| controller's best cell | 2 searches x 2 seeds |" in capsys.readouterr().out
