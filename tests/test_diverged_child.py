"""A recurrent cell whose loss diverges: a finished child with reward 0 (issue 26).

`nas_tf.tasks.CellTask` turns `ChildDivergedError` into a COMPLETED record
with reward 0 (the limit of c / ppl^2 as ppl -> infinity) and "diverged":
true, strict JSON (no NaN); the search records it, feeds it to the
controller, never keeps it as the best child while a trained one exists, and
the report draws it.
"""

import json
import math
import os

import pytest

from nas_tf import families
from nas_tf import rewards
from nas_tf import search
from nas_tf import tasks
from nas_tf.algorithms import controller_search
from nas_tf.children import language_model as lm
from nas_tf.children import lm_trainer
from nas_tf.children.base import ChildDivergedError, ChildTrainingError
from nas_tf.data import ptb
from nas_tf.spaces import cell as cell_space

TRAIN = [" the cat sat on the mat ", " a dog <unk> N years ago ", " the dog sat "]
VALID = [" the cat sat on a dog "]
TEST = [" a zebra sat "]

# A base-2 cell that blows up with a huge learning rate (tests/test_ptb.py).
RELU_CELL = cell_space.CellDescription(
    nodes=(("elem_mult", "identity"),) * 3, inject=("add", "relu"), inject_node=2,
    memory_node=2,
)  # fmt: skip
TINY_MODEL = lm.LanguageModelConfig(units=4, init_scale=1.0)
BLOW_UP = lm_trainer.TrainConfig(
    epochs=1, batch_size=2, bptt_steps=4, eval_batch_size=1, learning_rate=1e30, clip_norm=None,
    max_train_batches=4, max_eval_batches=2,
)  # fmt: skip


def _data():
    return ptb.from_lines(TRAIN * 20, VALID * 5, TEST)


def _strict_json(record):
    return json.loads(json.dumps(record, allow_nan=False))


def _check_diverged(record, level):
    assert record["reward"] == 0.0 == rewards.DIVERGED_PTB_REWARD
    assert record["diverged"] is True and isinstance(record["message"], str) and record["message"]
    for key in ("val_perplexity", "best_val_perplexity", "bits_per_token", "train_loss", "num_params"):
        assert record[key] is None
    assert record["train_seconds"] >= 0 and record["level"] == level
    assert _strict_json(record) == record


def _tiny_search(out: str) -> "search.SearchConfig":
    """A 2-child base-2 cell search trained in this process (so a monkeypatch reaches it)."""
    return search.SearchConfig(
        output_dir=out,
        space="ptb_cell",
        space_overrides={"base": 2},
        dataset="text",
        max_trials=2,
        reinforce=controller_search.default_reinforce_config(batch_size=2),
        lm_model=lm.LanguageModelConfig(units=4),
        lm_train=lm_trainer.TrainConfig(
            epochs=1, batch_size=2, bptt_steps=4, eval_batch_size=1,
            max_train_batches=2, max_eval_batches=2,
        ),  # fmt: skip
        isolate_children=False,
        verbose=0,
    )


def test_a_forced_divergence_is_a_finished_child_with_reward_zero(monkeypatch, tmp_path):
    def diverge(*args, **kwargs):
        raise ChildDivergedError("Training loss is nan at epoch 0, batch 1: the cell diverged.")

    monkeypatch.setattr(lm_trainer, "train_language_model", diverge)
    task = tasks.CellTask(2, _data(), TINY_MODEL, BLOW_UP)
    model_path = str(tmp_path / "model.keras")
    record = task((RELU_CELL.to_architecture().to_json(), model_path))
    _check_diverged(record, "word")
    assert "batch 1" in record["message"]
    assert not os.path.exists(model_path)  # No model of a diverged child.
    assert task.headline(record) == "diverged"
    assert task.objective(record) == {"reward": 0.0}  # Keras Tuner: finite floats only.


def test_other_child_failures_still_fail(monkeypatch):
    def oom(*args, **kwargs):
        raise ChildTrainingError("oom", "out of memory")

    monkeypatch.setattr(lm_trainer, "train_language_model", oom)
    task = tasks.CellTask(2, _data(), TINY_MODEL, BLOW_UP)
    with pytest.raises(ChildTrainingError, match="oom"):
        task((RELU_CELL.to_architecture().to_json(), ""))


def test_a_real_divergence_is_a_finished_child_with_reward_zero():
    task = tasks.CellTask(2, _data(), TINY_MODEL, BLOW_UP)
    record = task((RELU_CELL.to_architecture().to_json(), ""))
    _check_diverged(record, "word")


def test_the_reward_is_the_limit_of_c_over_perplexity_squared():
    assert rewards.ptb_reward(1e150) < 1e-290
    assert rewards.DIVERGED_PTB_REWARD == 0.0
    with pytest.raises(ValueError):
        rewards.ptb_reward(math.inf)


def test_a_search_feeds_a_diverged_child_to_the_controller_and_reports_it(tmp_path, monkeypatch):
    from nas_tf import report
    from nas_tf.report import data as report_data

    real = lm_trainer.train_language_model
    calls = []

    def first_diverges(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ChildDivergedError("Training loss is nan at epoch 0, batch 0: the cell diverged.")
        return real(*args, **kwargs)

    monkeypatch.setattr(lm_trainer, "train_language_model", first_diverges)
    out = str(tmp_path / "ptb")
    config = _tiny_search(out)
    best = search.run(config, data=_data())

    history = search.read_history(out)
    assert [r["status"] for r in history] == ["COMPLETED", "COMPLETED"]
    diverged, trained = history
    _check_diverged(diverged, "word")
    assert not trained.get("diverged") and trained["reward"] > 0
    with open(os.path.join(out, search.HISTORY), encoding="utf-8") as f:
        for line in f:  # Strict JSON on disk: no NaN or Infinity.
            json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in history.jsonl"))
    # The controller learned from both rewards, the diverged child's 0 included.
    with open(os.path.join(out, search.PROJECT, "controller_updates.jsonl"), encoding="utf-8") as f:
        updates = [json.loads(line) for line in f]
    assert len(updates) == 1 and updates[0]["batch"] == 2
    assert updates[0]["mean_reward"] == pytest.approx((0.0 + trained["reward"]) / 2, rel=1e-5)
    # The trained child is the best one, with its model.
    assert best["trial_id"] == trained["trial_id"]
    assert os.path.exists(os.path.join(out, search.BEST_MODEL))
    text = search.summarize(out, families.make_task(config, _data()))
    assert "1 diverged" in text and "diverged" in text.splitlines()[-1]
    # The report builds, counts it and ranks it last.
    files = report_data.load(out)
    assert [r["trial_id"] for r in files.diverged] == [diverged["trial_id"]]
    assert files.best()["trial_id"] == trained["trial_id"]
    index = report.build_report(out)
    with open(index, encoding="utf-8") as f:
        page = f.read()
    assert "1 diverged" in page and "diverged</td>" in page


def test_a_diverged_child_is_the_best_only_when_no_other_finished():
    diverged = {"trial_id": "0", "status": "COMPLETED", "reward": 0.0, "diverged": True}
    tiny = {"trial_id": "1", "status": "COMPLETED", "reward": 0.0}  # exp(700) perplexity.
    assert search._best_of([diverged]) == (0.0, "0")
    assert search._best_of([diverged, tiny]) == (0.0, "1")
    assert search._best_of([tiny, dict(diverged, trial_id="2")]) == (0.0, "1")
    from nas_tf.report import data as report_data

    files = report_data.SearchFiles("x", {}, [diverged, tiny], [])
    assert files.best()["trial_id"] == "1"


def test_a_diverged_child_recorded_before_a_kill_is_reported_again_not_retrained(
    tmp_path, monkeypatch
):
    from nas_tf import durable

    real = lm_trainer.train_language_model
    calls = []

    def first_diverges(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ChildDivergedError("Training loss is nan at epoch 0, batch 0: the cell diverged.")
        return real(*args, **kwargs)

    real_fault_point = durable.fault_point
    stopped = []

    def stop_after_the_first_record(name):  # As a kill there would (in-process, cheaper).
        if name == "after_record" and not stopped:
            stopped.append(name)
            raise RuntimeError("stopped after the first record")
        real_fault_point(name)

    monkeypatch.setattr(lm_trainer, "train_language_model", first_diverges)
    monkeypatch.setattr(durable, "fault_point", stop_after_the_first_record)
    config = _tiny_search(str(tmp_path))
    with pytest.raises(search.SearchError, match="stopped after the first record"):
        search.run(config, data=_data())
    best = search.run(config, data=_data())
    assert len(calls) == 2  # The diverged child was not trained again.
    diverged, trained = search.read_history(str(tmp_path))
    _check_diverged(diverged, "word")
    assert best["trial_id"] == trained["trial_id"]
    with open(os.path.join(str(tmp_path), search.PROJECT, "controller_updates.jsonl")) as f:
        (update,) = [json.loads(line) for line in f]
    assert update["mean_reward"] == pytest.approx(trained["reward"] / 2, rel=1e-5)
