"""Tests of experiments/lm_recipe.py, reward_correlation.py and control_functions.py.

Fast: the rank statistics against hand-computed values, the reward of a
diverged child, the recipe rule (qualifying points, the fallback), and a
trained model's perplexity on shuffled tokens rising to the unigram level
(no future token leaks through the state or the batching). Slow: both
programs' --quick runs, twice (the second trains nothing).
"""

import json
import math
import os
import sys

import numpy as np
import pytest

from nas_tf.children import language_model as lm
from nas_tf.children import lm_trainer
from nas_tf.data import ngram, ptb

_EXPERIMENTS = os.path.join(os.path.dirname(__file__), "..", "experiments")
sys.path.insert(0, _EXPERIMENTS)
try:
    import control_functions as cf
    import lm_recipe
    import reward_correlation as rc
finally:
    sys.path.remove(_EXPERIMENTS)


def test_ranks_share_ties_and_put_inf_last():
    np.testing.assert_array_equal(rc.ranks([3.0, 1.0, 3.0, math.inf]), [2.5, 1.0, 2.5, 4.0])


def test_spearman_matches_the_textbook_formula():
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    b = [2.0, 1.0, 4.0, 3.0, 5.0]
    d2 = sum((x - y) ** 2 for x, y in zip(rc.ranks(a), rc.ranks(b)))
    assert rc.spearman(a, b) == pytest.approx(1 - 6 * d2 / (5 * (25 - 1)))  # 0.8
    assert rc.spearman(a, [-x for x in a]) == pytest.approx(-1.0)
    assert math.isnan(rc.spearman(a, [1.0] * 5))
    lo, hi = rc.spearman_interval(a, b, reps=200)
    assert -1.0 <= lo <= 0.8 <= hi <= 1.0


def test_a_diverged_child_gets_the_limit_of_the_reward():
    assert rc.child_reward(80.0) == pytest.approx(80.0 / 6400)
    assert rc.child_reward(None) == 0.0 and rc.child_reward(math.inf) == 0.0


def _sweep(*ratios):
    return {str(i): {m: {"ratio": r} for m, r in zip(("a", "b"), pair)}
            for i, pair in enumerate(ratios)}


def test_recipe_rule_prefers_qualifying_points_then_the_best_geometric_mean():
    points = [{"p": 0}, {"p": 1}, {"p": 2}]
    # Point 1 has the best single model but one model on the plateau; point 2 wins.
    chosen, ok = lm_recipe.choose(points, _sweep((0.7, 0.7), (0.3, 0.9), (0.5, 0.75)), 0.8)
    assert chosen == {"p": 2} and ok
    # Nothing qualifies: the lowest worst ratio, flagged.
    chosen, ok = lm_recipe.choose(points, _sweep((0.9, 0.95), (0.3, 2.0), (0.85, 0.99)), 0.8)
    assert chosen == {"p": 0} and not ok


def test_shuffled_tokens_raise_a_trained_models_perplexity_to_the_unigram_level():
    # A stream where each token fixes the next (a cycle of 5 with a random repeat): a
    # model that learnt it is far below the unigram level, and only order can tell it.
    rng = np.random.default_rng(0)
    ids = []
    for _ in range(1500):
        start = int(rng.integers(5))
        ids += [(start + k) % 5 for k in range(int(rng.integers(2, 6)))]
    ids = np.asarray(ids, np.int32)
    vocab = ptb.Vocabulary(("a", "b", "c", "d", "<eos>", "<unk>"))
    data = ptb.LMData(ids[:4000], ids[4000:4800], ids[4800:], vocab)
    config = lm.LanguageModelConfig(units=16, input_dropout=0.0, output_dropout=0.0, cell="lstm",
                                    init_scale=0.1)
    train = lm_trainer.TrainConfig(epochs=3, batch_size=10, bptt_steps=10, optimizer="adam",
                                   learning_rate=0.03, eval_batch_size=5)
    result = lm_trainer.train_language_model(None, data, config, train)
    unigram = ngram.unigram_perplexity(data.train, data.test, data.vocab_size)
    test = math.exp(lm_trainer.evaluate(result.model, data.test, 5, 10))
    shuffled = math.exp(lm_trainer.evaluate(result.model, ngram.shuffled(data.test), 5, 10))
    assert test < 0.7 * unigram  # It learnt the order...
    assert shuffled > 0.9 * unigram  # ...which shuffling takes away.


def test_control_experiment_counts_max_and_sin(tmp_path):
    values = {"node_0_combine": "max", "node_0_activation": "sin", "node_1_combine": "add",
              "node_1_activation": "sin", "inject_combine": "max", "inject_activation": "tanh",
              "cell_index_out": 1}  # fmt: skip
    assert cf.uses(values) == {"max": 2, "sin": 2, "combinations": 3, "activations": 3}
    other = dict(values, node_0_combine="add", node_0_activation="relu")
    with open(tmp_path / "derive.jsonl", "w") as f:
        for v, ppl in ((values, 120.0), (other, 110.0)):
            f.write(json.dumps({"architecture": {"values": v}, "perplexity": ppl}) + "\n")
    summary = cf.summarize(str(tmp_path))
    assert summary["best_perplexity"] == 110.0 and summary["best_uses"]["max"] == 1
    assert summary["max_share"] == pytest.approx(3 / 6) and summary["sin_share"] == pytest.approx(3 / 6)


@pytest.mark.slow
def test_quick_runs_twice_and_redo_nothing(tmp_path, capsys):
    for module in (lm_recipe, rc):
        out = str(tmp_path / module.__name__)
        module.main(["--quick", "--output_dir", out])
        first = capsys.readouterr().out
        assert "[" in first and os.path.exists(os.path.join(out, "report.md"))
        module.main(["--quick", "--output_dir", out])
        second = capsys.readouterr().out
        trained = [line for line in second.splitlines() if line.startswith("[")]
        assert trained == [], trained
    report = open(tmp_path / "reward_correlation" / "report.md").read()
    assert "Spearman rho" in report and "shared weights" in report
    report = open(tmp_path / "lm_recipe" / "report.md").read()
    assert "shuffled test ppl" in report and "unigram ppl" in report
    out = str(tmp_path / "control")
    cf.main(["--quick", "--output_dir", out])
    report = open(os.path.join(out, "report.md")).read()
    assert "| extended | 1 |" in report and "| paper | 1 |" in report
