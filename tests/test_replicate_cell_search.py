"""Tests of experiments/replicate_cell_search.py: the cell-search replication benchmark.

The fast tests check the program's pieces without training a network: the
width solver, random search (its draws, failures and resume after a kill,
with a stand-in child), the best-so-far curve, the equal-size final models,
the tables (bits per character at character level), the verdict's wording,
the flags, each method's search settings (with a stand-in search), and one
command's report over two datasets (with stand-in searches and trainings).
The slow test runs the whole `--quick` pipeline (four methods, character
level) twice and checks that the second run redoes nothing.
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


def _searches(methods=rcs.METHODS):
    arch = json.loads(cell_space.lstm_like().to_architecture().to_json())
    out = []
    for m in methods:
        for s in (1, 2):
            if m == rcs.SHARED:
                out.append({"method": m, "kind": "shared", "seed": s, "best_architecture": arch,
                            "steps": 600, "derived": 30, "best_val_perplexity": 250.0})  # fmt: skip
            else:
                out.append({"method": m, "seed": s, "best_architecture": arch, "children": 4,
                            "failed": 0, "best_reward": 1e-3, "best_val_perplexity": 280.0,
                            "best_so_far": [1e-4, 1e-3], "rewards": [80.0, 80.0]})  # fmt: skip
    return out


def test_final_models_have_the_lstms_parameter_count():
    args = rcs.parse_args(["--final_units", "64"])
    models = rcs.final_models(args, _searches(), vocab_size=2888)
    assert [m.name for m in models] == [
        "lstm", "controller_seed1", "controller_seed2", "paper_seed1", "paper_seed2",
        "random_seed1", "random_seed2", "shared_seed1", "shared_seed2", "lstm_like", "paper",
    ]  # fmt: skip
    assert [m.group for m in models][-2:] == ["lstm_like", "paper_cell"]
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
    # A diverged run is counted apart and left out of the means (paper's cell, k = 10: 100, 102).
    results["paper"][2].update(failed="nan", test_perplexity=math.nan,
                               best_val_perplexity=math.nan)  # fmt: skip
    row = next(line for line in rcs.tables(searches, models, results, timing).splitlines()
               if line.startswith("| paper's cell"))  # fmt: skip
    assert "| 3 seeds (1 diverged) |" in row and "| 101.00 ± 1.41 |" in row
    assert "| paper preset's best cell | 2 searches x 3 seeds |" in text
    assert "| random seed 2 | 4 (0) | 1.0, 1.0 | 0.001 | 280.0 |" in text
    # Best val ppl of the searches: 280 each; final test: per-search means 97 (k = 5), 98.
    assert "| **random, mean ± sd** | | 1.00 ± 0.00, 1.00 ± 0.00 | | 280.00 ± 0.00 | | 97.50 ± 0.71 |" in text
    # The weight-sharing search: steps and the derived cell instead of children (k = 7).
    assert ("| shared seed 1 | 600 shared-weight steps; best of 30 derived | — | — | 250.0 "
            "(shared weights) | 108.00 ± 1.00 | 99.00 ± 2.00 |") in text  # fmt: skip
    assert "| **shared, mean ± sd** | | —, — | | 250.00 ± 0.00 | | 99.50 ± 0.71 |" in text
    assert "| weight-sharing search's derived cell | 2 searches x 3 seeds |" in text


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


def test_final_shards_split_the_final_runs_exactly(tmp_path, monkeypatch, capsys):
    trained = []
    searches = _searches(["controller", "random"])
    monkeypatch.setattr(rcs, "run_search", lambda args, method, seed, data: next(
        s for s in searches if (s["method"], s["seed"]) == (method, seed)))
    monkeypatch.setattr(rcs, "train_final", lambda args, m, t, data, *_: trained.append((m.name, t)))
    monkeypatch.setattr(rcs, "time_models", lambda *a: pytest.fail("a shard writes no report"))
    monkeypatch.setattr("nas_tf.train_lm.load_data", lambda *a: type("D", (), {"vocab_size": 75}))
    argv = ["--methods", "controller,random", "--seeds", "1", "--final_seeds", "3",
            "--final_units", "64", "--output_dir", str(tmp_path)]  # fmt: skip
    shards = []
    for k in (1, 2, 3):
        trained.clear()
        assert rcs.main(argv + ["--final_shard", f"{k}/3"]) == 0
        shards.append(list(trained))
    # 2 searched cells + 3 baselines, 3 seeds each: 15 runs, 5 per shard, none twice.
    every = [run for s in shards for run in s]
    assert [len(s) for s in shards] == [5, 5, 5] and len(set(every)) == 15
    assert "final shard 3/3: 5 runs done" in capsys.readouterr().out
    assert rcs.shard(range(7), (2, 3)) == [1, 4] and rcs.shard("ab", None) == ["a", "b"]


def test_a_final_shard_refuses_to_run_an_unfinished_search(tmp_path, monkeypatch, capsys):
    # No search has finished in tmp_path: every shard would start the same search.
    monkeypatch.setattr(rcs, "train_final", lambda *a: pytest.fail("no final run before searches"))
    monkeypatch.setattr("nas_tf.train_lm.load_data", lambda *a: type("D", (), {"vocab_size": 75}))
    for method in ("random", "shared"):
        argv = ["--methods", method, "--seeds", "1", "--final_shard", "1/2",
                "--output_dir", str(tmp_path)]  # fmt: skip
        assert rcs.main(argv) == 2
        err = capsys.readouterr().err
        assert f"{method}_seed1 is not finished" in err and "--searches_only" in err
        assert not os.path.exists(os.path.join(tmp_path, "searches", f"{method}_seed1"))


def test_each_final_model_takes_its_best_weight_range_on_validation(monkeypatch):
    args = rcs.parse_args(["--final_units", "64", "--final_init_scales", "0.1,0.3",
                           "--final_epochs", "6"])  # fmt: skip
    models = rcs.final_models(args, _searches(["controller"]), 75)
    # One-epoch validation perplexity per (model, range): the LSTM does best at 0.3, the
    # searched cells at 0.1; the LSTM-like cell diverges at 0.1 (never chosen).
    val = {("lstm", 0.1): 30.0, ("lstm", 0.3): 20.0, ("lstm_like", 0.1): math.nan,
           ("lstm_like", 0.3): 25.0}  # fmt: skip
    calls = []

    def fake_train(a, m, seed, data, init_scale=None, run_dir=None):
        calls.append((m.name, seed, init_scale, a.final_epochs, run_dir))
        return {"best_val_perplexity": val.get((m.name, init_scale), 100.0 * init_scale),
                "seconds": 2.0}  # fmt: skip

    monkeypatch.setattr(rcs, "train_final", fake_train)
    picks = {m.name: rcs.choose_init_scale(args, m, None) for m in models}
    assert picks["lstm"] == {"init_scale": 0.3, "seconds": 4.0}
    assert picks["lstm_like"]["init_scale"] == 0.3
    assert picks["controller_seed1"]["init_scale"] == 0.1 and picks["paper"]["init_scale"] == 0.1
    # Probes: one epoch, training seed 0, their own directories beside the seeds'.
    assert {(c[1], c[3]) for c in calls} == {(0, 1)} and len(calls) == 2 * len(models)
    assert calls[0][4].endswith(os.path.join("final", "lstm", "init_0.1"))
    assert args.final_epochs == 6  # The probe's one epoch is a copy's.
    text = rcs.ranges_text(args, models, picks)
    assert "lstm ±0.3" in text and "controller_seed1 ±0.1" in text
    plain = rcs.parse_args(["--final_init_scale", "0.2"])
    assert rcs.choose_init_scale(plain, models[0], None) == {"init_scale": 0.2, "seconds": 0.0}
    assert rcs.ranges_text(plain, models, {}) == ""
    config = rcs.final_model_config(args, models[1], 0.1)
    assert config.init_scale == 0.1 and rcs.final_model_config(args, models[1]).init_scale == 0.05
    with pytest.raises(SystemExit):
        rcs.parse_args(["--final_init_scales", "0.1,-1"])


def test_bad_final_shards_are_refused(capsys):
    for bad in ("2", "0/2", "3/2", "a/b"):
        with pytest.raises(SystemExit):
            rcs.parse_args(["--final_shard", bad])
        assert "--final_shard" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        rcs.parse_args(["--final_shard", "1/2", "--searches_only"])
    assert rcs.parse_args(["--final_shard", "2/2"]).final_shard == (2, 2)


def _hand_results(models, test_of):
    """Results whose test perplexities are `test_of(k, t)` for model k and seed t."""
    return {m.name: [{"best_val_perplexity": test_of(k, t) + 1.0, "test_perplexity": test_of(k, t),
                      "num_parameters": m.parameters} for t in (0, 1, 2)]
            for k, m in enumerate(models)}  # fmt: skip


def test_tables_at_character_level_give_bits_per_character():
    searches = _searches(["controller"])
    models = rcs.final_models(rcs.parse_args(["--final_units", "64"]), searches, 75)
    # Model k, seed t: test perplexity 2 ** (1 + k / 10 + t / 10) -> bpc 1 + k/10 + t/10.
    results = _hand_results(models, lambda k, t: 2.0 ** (1 + k / 10 + t / 10))
    text = rcs.tables(searches, models, results, {m.name: 5.0 for m in models}, char=True)
    assert "| best val bpc | test bpc |" in text and "ppl" not in text
    assert "| keras.layers.LSTM | 3 seeds | " in text and "| 1.100 ± 0.100 | 5.00 |" in text
    # Controller: per-search means 1.2 (k = 1) and 1.3 (k = 2).
    row = next(line for line in text.splitlines() if line.startswith("| controller's"))
    assert "| 1.250 ± 0.071 |" in row
    # The search rows: children's val ppl sqrt(80 / 80) = 1 -> 0 bits; the best child's 280.
    assert f"| controller seed 1 | 4 (0) | 0.000, 0.000 | 0.001 | {math.log2(280):.3f} |" in text


def test_compare_says_which_is_better_and_whether_it_exceeds_the_spread():
    compare = rcs.compare
    assert compare("Controller's cells", [92.1, 95.1, 98.1], "random search's",
                   [93.1, 97.2, 101.3]) == (
        "Controller's cells: 95.1 ± 3.0 vs random search's 97.2 ± 4.1: better by 2.1, "
        "within the spread (larger sd 4.1).")  # fmt: skip
    assert compare("The paper's cell", [97.0, 99.0, 101.0], "keras.layers.LSTM's",
                   [90.0, 91.0, 92.0]) == (
        "The paper's cell: 99.0 ± 2.0 vs keras.layers.LSTM's 91.0 ± 1.0: worse by 8.0, "
        "exceeds the spread (larger sd 2.0).")  # fmt: skip
    # Diverged runs (NaN) are left out; a single run has no spread.
    assert compare("A", [90.0, math.nan], "B's", [91.0]) == (
        "A: 90.0 vs B's 91.0: better by 1.0, no spread to compare (one run each).")
    assert compare("A", [1.2, 1.3], "B's", [1.25, 1.25], digits=3) == (
        "A: 1.250 ± 0.071 vs B's 1.250 ± 0.000: the same to 3 decimals, within the spread "
        "(larger sd 0.071).")  # fmt: skip
    assert compare("A", [math.nan], "B's", [1.0]) == (
        "A vs B's: no finite result to compare (every run diverged).")


def test_verdict_covers_the_comparisons_of_the_groups_that_ran():
    searches = _searches(["controller", "random"])
    models = rcs.final_models(rcs.parse_args(["--final_units", "64"]), searches, 2888)
    names = [m.name for m in models]
    assert names == ["lstm", "controller_seed1", "controller_seed2", "random_seed1",
                     "random_seed2", "lstm_like", "paper"]  # fmt: skip
    tests = {"lstm": 100.0, "controller_seed1": 90.0, "controller_seed2": 92.0,
             "random_seed1": 97.0, "random_seed2": 99.0, "lstm_like": 95.0, "paper": 120.0}
    results = _hand_results(models, lambda k, t: tests[names[k]] + t)  # Seeds: +0, +1, +2.
    text = rcs.verdict(models, results)
    assert text.splitlines()[2:] == [
        # Searched cells: per-search means 91, 93 (controller), 98, 100 (random).
        "- Controller's cells: 92.0 ± 1.4 vs random search's 99.0 ± 1.4: better by 7.0, "
        "exceeds the spread (larger sd 1.4).",
        "- Controller's cells: 92.0 ± 1.4 vs keras.layers.LSTM's 101.0 ± 1.0: better by 9.0, "
        "exceeds the spread (larger sd 1.4).",
        "- The paper's cell: 121.0 ± 1.0 vs keras.layers.LSTM's 101.0 ± 1.0: worse by 20.0, "
        "exceeds the spread (larger sd 1.0).",
    ]  # fmt: skip
    assert text.startswith("**Verdict** (test perplexity, lower is better;")
    assert rcs.verdict(models, results, char=True).startswith(
        "**Verdict** (test bits per character")


def test_a_final_run_from_before_the_optimizer_field_is_not_retrained():
    from nas_tf import train_lm
    from nas_tf.children import lm_trainer

    def run(**train):
        return train_lm.RunConfig("out", "text", description=cell_space.lstm_like(),
                                  model=lm.LanguageModelConfig(units=64),
                                  train=lm_trainer.TrainConfig(epochs=6, **train)).to_dict()

    old = json.loads(json.dumps(run()))
    del old["train"]["optimizer"]  # As results.json files written before it existed.
    del old["model"]["init_scale"]
    assert rcs._same_run(old, run())
    assert not rcs._same_run(old, run(optimizer="adam", learning_rate=2e-3))
    assert not rcs._same_run(old, run(learning_rate=0.5))


def test_the_recipe_flags_reach_children_and_final_models():
    args = rcs.parse_args([])
    model, train = rcs.child_configs(args, 2)
    assert (train.optimizer, train.learning_rate, model.init_scale) == ("sgd", 1.0, 0.05)
    assert (args.final_dropout, args.methods) == (0.5, ["controller", "paper", "random", "shared"])
    args = rcs.parse_args([
        "--child_optimizer=adam", "--child_learning_rate=0.002", "--child_init_scale=0.1",
        "--final_optimizer=adam", "--final_learning_rate=0.003", "--final_init_scale=0.08",
        "--final_dropout=0.3", "--dropout=0.4", "--cell_functions=extended"])  # fmt: skip
    model, train = rcs.child_configs(args, 2)
    assert (train.optimizer, train.learning_rate, train.seed) == ("adam", 0.002, 2)
    assert (model.init_scale, model.input_dropout, model.output_dropout) == (0.1, 0.4, 0.4)
    train = rcs.final_train_config(args, 1)
    assert (train.optimizer, train.learning_rate, train.seed) == ("adam", 0.003, 1)
    final = rcs.FinalModel("lstm", "lstm", None, 64, 0)
    model = rcs.final_model_config(args, final)
    assert (model.init_scale, model.input_dropout, model.output_dropout, model.cell) == (
        0.08, 0.3, 0.3, "lstm")
    assert rcs.space_overrides(args) == {"base": 4, "functions": "extended"}
    assert rcs.space_overrides(rcs.parse_args([])) == {"base": 4}  # As searches always had.


def test_an_extended_search_cell_becomes_a_final_model():
    extended = cell_space.ptb_cell(4, "extended")
    arch = dict(json.loads(cell_space.lstm_like().to_architecture().to_json()))
    arch["values"] = {**arch["values"], "node_0_combine": "max", "node_1_activation": "sin"}
    extended.validate(extended.architecture_from_json(json.dumps(arch)))
    searches = [{**_searches(["random"])[0], "best_architecture": arch}]
    args = rcs.parse_args(["--final_units", "64", "--cell_functions", "extended"])
    cell = rcs.final_models(args, searches, 2888)[1].description
    assert cell.functions == "extended" and cell.nodes[0].combine == "max"
    with pytest.raises(Exception, match="max"):  # Not a cell of the paper's functions.
        rcs.final_models(rcs.parse_args(["--final_units", "64"]), searches, 2888)


def test_datasets_get_their_own_directories_when_there_are_several():
    one = rcs.parse_args(["--output_dir", "out"])
    assert one.datasets == ["text"]
    assert one.plot == os.path.join("out", "cell_search_replication.png")
    mine = rcs.for_dataset(one, "text")
    assert (mine.output_dir, mine.plot, mine.data) == ("out", one.plot, "text")
    two = rcs.parse_args(["--output_dir", "out", "--data", "text,text_char"])
    assert two.datasets == ["text", "text_char"]
    char = rcs.for_dataset(two, "text_char")
    assert char.output_dir == os.path.join("out", "text_char") and char.data == "text_char"
    assert char.plot == os.path.join("out", "text_char", "cell_search_replication.png")
    given = rcs.parse_args(["--data", "text,text_char", "--plot", "docs/p.png"])
    assert rcs.for_dataset(given, "text").plot == "docs/p_text.png"


@pytest.mark.parametrize("argv, message", [
    (["--data", "text,wiki"], "--data"),
    (["--data", "text,text"], "--data"),
    (["--final_optimizer", "rmsprop"], "invalid choice"),
    (["--child_optimizer", "rmsprop"], "invalid choice"),
    (["--cell_functions", "more"], "invalid choice"),
    (["--child_learning_rate", "0"], "--child_learning_rate must be positive"),
    (["--final_init_scale", "-1"], "--final_init_scale must be positive"),
    (["--final_dropout", "1"], "--final_dropout must be in"),
    (["--shared_epochs", "0"], "--shared_epochs must be positive"),
    (["--shared_steps_per_epoch", "0"], "--shared_steps_per_epoch must be positive"),
    (["--shared_learning_rate", "0"], "--shared_learning_rate must be positive"),
])  # fmt: skip
def test_bad_new_flags_are_refused(capsys, argv, message):
    with pytest.raises(SystemExit):
        rcs.parse_args(argv)
    assert message in capsys.readouterr().err


def _fake_search_run(configs, derived=(300.0, 400.0)):
    """Stands for nas_tf.search.run: records the config, writes what a finished search writes."""
    from nas_tf import history

    def run(config, data=None):
        configs.append(config)
        os.makedirs(config.output_dir, exist_ok=True)
        arch = json.loads(cell_space.lstm_like().to_architecture().to_json())
        if config.weight_sharing is not None:  # Derived cells, best first; the epoch log.
            for i, ppl in enumerate(derived):
                history.append(history.path(config.output_dir), {
                    "trial_id": str(i + 1), "status": "COMPLETED", "architecture": arch,
                    "reward": 80 / ppl, "val_perplexity": ppl})  # fmt: skip
            with open(os.path.join(config.output_dir, "shared_log.jsonl"), "w") as f:
                for epoch in (1, 2):
                    f.write(json.dumps({"epoch": epoch, "step": 3 * epoch,
                                        "controller_updates": epoch - 1}) + "\n")  # fmt: skip
            return None
        for i in range(config.max_trials):
            history.append(history.path(config.output_dir), {
                "trial_id": str(i), "status": "COMPLETED", "architecture": arch,
                "reward": 80 / (200.0 + i) ** 2, "best_val_perplexity": 200.0 + i})  # fmt: skip
        return None

    return run


def test_the_search_methods_get_their_presets_and_the_function_set(tmp_path, monkeypatch):
    from nas_tf import search

    configs = []
    monkeypatch.setattr(search, "run", _fake_search_run(configs))
    args = rcs.parse_args(["--output_dir", str(tmp_path), "--budget", "3", "--verbose", "0",
                           "--cell_functions", "extended", "--shared_epochs", "2",
                           "--shared_steps_per_epoch", "3"])  # fmt: skip
    controller = rcs.run_search(args, "controller", 1, data=None)
    paper = rcs.run_search(args, "paper", 1, data=None)
    shared = rcs.run_search(args, "shared", 2, data=None)
    default, preset, sharing = configs
    assert default.preset == "default" and default.reuse_rewards and default.mutate_best == 0.5
    assert preset.preset == "paper" and not preset.reuse_rewards and preset.mutate_best == 0.0
    assert preset.reinforce.learning_rate == 0.0005  # The cell family's paper preset (sec. 4.2).
    for config in configs:
        assert config.space_overrides == {"base": 4, "functions": "extended"}
    assert default.max_trials == 3 and default.lm_train.seed == 1
    assert controller["children"] == paper["children"] == 3 and paper["method"] == "paper"
    assert controller["best_val_perplexity"] == 200.0
    ws = sharing.weight_sharing
    assert (ws.epochs, ws.steps_per_epoch, ws.method) == (2, 3, "controller")
    assert ws.training.learning_rate == 0.05 and sharing.preset == "enas"
    assert sharing.controller.tanh_constant == 2.5 and sharing.lm_model.units == 32
    assert rcs.is_shared(shared) and (shared["steps"], shared["derived"]) == (6, 2)
    assert shared["best_val_perplexity"] == 300.0 and shared["controller_updates"] == 1
    # Finished: a second call reads the summaries and runs nothing.
    for method, seed in (("controller", 1), ("paper", 1), ("shared", 2)):
        rcs.run_search(args, method, seed, data=None)
    assert len(configs) == 3


def test_a_diverged_weight_sharing_search_stops_the_command(tmp_path, monkeypatch):
    from nas_tf import search

    monkeypatch.setattr(search, "run", _fake_search_run([], derived=(math.nan, math.nan)))
    args = rcs.parse_args(["--output_dir", str(tmp_path), "--verbose", "0"])
    with pytest.raises(RuntimeError, match="diverged.*lower --shared_learning_rate"):
        rcs.run_search(args, "shared", 1, data=None)
    assert not os.path.exists(os.path.join(str(tmp_path), "searches", "shared_seed1", rcs.SUMMARY))

def test_one_command_reports_every_dataset_with_its_verdict(tmp_path, monkeypatch, capsys):
    import types

    def fake_search(args, method, seed, data):
        return {**next(s for s in _searches([method]) if s["seed"] == seed), "seconds": 10.0}

    def fake_final(args, model, seed, data, *_):
        ppl = 100.0 + seed if data.level == "word" else 2.0 ** (1.5 + seed / 10)
        return {"best_val_perplexity": ppl, "test_perplexity": ppl, "seconds": 1.0,
                "num_parameters": model.parameters}  # fmt: skip

    datas = {name: types.SimpleNamespace(name=name, level=level, vocab_size=vocab,
                                         train=[0] * 100)
             for name, level, vocab in (("text", "word", 2888), ("text_char", "char", 75))}
    monkeypatch.setattr(rcs, "run_search", fake_search)
    monkeypatch.setattr(rcs, "train_final", fake_final)
    monkeypatch.setattr(rcs, "time_models", lambda a, models, d: {m.name: 1.0 for m in models})
    monkeypatch.setattr(rcs, "plot", lambda *a, **k: None)
    monkeypatch.setattr("nas_tf.train_lm.load_data", lambda name, data_dir=None: datas[name])
    out = str(tmp_path)
    assert rcs.main(["--output_dir", out, "--data", "text,text_char", "--seeds", "2",
                     "--final_seeds", "2", "--final_units", "64"]) == 0  # fmt: skip
    report = open(os.path.join(out, "report.md"), encoding="utf-8").read()
    word, char = report.split("## text: word level")[1].split("## text_char: char level")
    assert "test ppl" in word and "Controller's cells: 100.5 ± 0.0 vs" in word
    assert "test bpc" in char and "bpc" not in word and "Controller's cells: 1.550 ± 0.000" in char
    # 4 methods x 2 seeds x 10 s + 11 models x 2 seeds x 1 s, per dataset.
    assert report.count("summed over the invocations that ran them: 102 s") == 2
    assert "Wall time of this invocation: " in report and "text and text_char" in report
    assert "summed over the invocations that ran them: 204 s." in report
    for name in ("text", "text_char"):  # Each dataset's block beside its searches, too.
        assert os.path.exists(os.path.join(out, name, "report.md"))


@pytest.mark.slow
def test_quick_pipeline_end_to_end_and_resume(tmp_path, monkeypatch, capsys):
    """--quick at character level: the four methods, the final models, bits per character."""
    from nas_tf.data import text_corpus

    out = str(tmp_path / "run")
    log = tmp_path / "trainings.log"
    monkeypatch.setenv("NAS_TF_TRAINING_LOG", str(log))
    argv = ["--quick", "--data", "text_char", "--output_dir", out, "--verbose", "0"]
    assert rcs.main(argv) == 0
    report = open(os.path.join(out, "report.md"), encoding="utf-8").read()
    for label in ("keras.layers.LSTM", "controller's best cell", "paper preset's best cell",
                  "random search's best cell", "weight-sharing search's derived cell",
                  "LSTM-like cell", "paper's cell", "controller seed 2", "paper seed 1",
                  "random seed 1", "shared seed 2", "| test bpc |", "**Verdict** (test bits",
                  "- Controller's cells: ", "- The weight-sharing search's cells: ",
                  "Wall time of this invocation: "):  # fmt: skip
        assert label in report
    assert os.path.getsize(os.path.join(out, "cell_search_replication.png")) > 10_000
    for method in rcs.METHODS:
        for seed in (1, 2):
            summary = json.load(open(os.path.join(out, "searches", f"{method}_seed{seed}",
                                                  rcs.SUMMARY)))  # fmt: skip
            if method == rcs.SHARED:
                assert summary["steps"] == 6 and summary["derived"] >= 1
                continue
            assert summary["children"] == 3
            assert summary["distinct"] == 3 or method == "paper"  # The paper preset repeats.
            assert summary["best_reward"] == max(r for r in summary["rewards"] if r is not None)
    vocab = text_corpus.load("char").vocab_size
    target = lm.count_parameters(4, 48, vocab, cell="lstm", use_bias=True)
    finals = sorted(os.listdir(os.path.join(out, "final")))
    assert len(finals) == 11
    for name in finals:
        for seed in (0, 1):
            r = json.load(open(os.path.join(out, "final", name, f"seed{seed}", "results.json")))
            assert abs(r["num_parameters"] - target) <= 0.02 * target
            assert np.isfinite(r["test_perplexity"]) and r["level"] == "char"
    # The controller's children go through the search's training log; the
    # random search trains in this process (isolation off in --quick) too.
    trained = log.read_text().count("\n")
    stamp = {n: os.path.getmtime(os.path.join(out, "final", n, "seed0", "results.json"))
             for n in finals}  # fmt: skip
    assert rcs.main(argv) == 0
    assert log.read_text().count("\n") == trained  # No child trained again.
    assert stamp == {n: os.path.getmtime(os.path.join(out, "final", n, "seed0", "results.json"))
                     for n in finals}  # fmt: skip
    assert "| controller's best cell | 2 searches x 2 seeds |" in capsys.readouterr().out


def test_random_search_line_of_a_diverged_child():
    # CellTask completes a diverged child with reward 0 and no perplexity.
    record = {"trial_id": "6", "status": "COMPLETED", "reward": 0.0, "diverged": True,
              "best_val_perplexity": None}  # fmt: skip
    assert rcs.child_line(record, 2, 16) == "[random seed 2] child 7/16 reward 0.0000 (diverged)"
    record = {"trial_id": "0", "status": "COMPLETED", "reward": 0.002, "best_val_perplexity": 200.0}
    assert rcs.child_line(record, 1, 16) == "[random seed 1] child 1/16 reward 0.0020 val_ppl 200.00"
    record = {"trial_id": "1", "status": "FAILED", "reason": "oom"}
    assert rcs.child_line(record, 1, 16) == "[random seed 1] child 2/16 FAILED (oom)"


def _write(path, text):
    path.write_text(text)
    return str(path)


def _recipe(path, data, **chosen):
    point = {"optimizer": "adam", "learning_rate": 0.002, "init_scale": 0.3, "dropout": 0.2}
    point.update(chosen)
    args = {"data": data, "units": 128, "epochs": 6, "lr_decay_after": 4}
    path.write_text(json.dumps({"chosen": point, "args": args}))
    return str(path)


def test_recipes_set_each_datasets_children_and_final_models(tmp_path):
    char = _recipe(tmp_path / "char.json", "text_char")
    args = rcs.parse_args(["--data=text,text_char", f"--recipes={char}", "--final_units=64",
                           f"--output_dir={tmp_path}"])  # fmt: skip
    word, chars = rcs.for_dataset(args, "text"), rcs.for_dataset(args, "text_char")
    assert (word.final_units, word.final_optimizer, word.dropout) == (64, "sgd", 0.5)
    assert (chars.final_units, chars.final_epochs, chars.final_lr_decay_after) == (128, 6, 4)
    for field in ("child_optimizer", "final_optimizer"):
        assert getattr(chars, field) == "adam"
    assert chars.child_init_scale == chars.final_init_scale == 0.3
    assert chars.dropout == chars.final_dropout == 0.2 and chars.final_learning_rate == 0.002


@pytest.mark.parametrize("make, message", [
    (lambda p: str(p / "missing.json"), "is not a recipe.json"),
    (lambda p: _recipe(p / "ptb.json", "ptb"), "is for 'ptb'"),
    (lambda p: _write(p / "bad.json", '{"chosen": {}, "args": {"data": "text"}}'), "no optimizer"),
])  # fmt: skip
def test_bad_recipes_are_named(tmp_path, capsys, make, message):
    with pytest.raises(SystemExit):
        rcs.parse_args(["--data=text", f"--recipes={make(tmp_path)}", f"--output_dir={tmp_path}"])
    assert message in capsys.readouterr().err
