"""The final language model's tuning grid: `nas_tf.lm_grid.run_grid` and `nas_tf.train_lm`'s --grid_* flags.

`run_grid` is tested with a stand-in training function (no TensorFlow
training); the flags end to end on the embedded character corpus with 4-unit
LSTMs, one epoch of two batches.
"""

import json
import os
import types

import pytest

from nas_tf import lm_grid
from nas_tf import train_lm
from nas_tf.children import lm_trainer
from nas_tf.children.base import ChildDivergedError, ChildTrainingError


def _point(lr, dropout=0.5):
    return lm_grid.GridPoint(lr, 0.05, dropout, dropout, 6)


class _FakeTraining:
    """A `train_point` whose best validation perplexity is 100 * learning rate; counts its calls."""

    def __init__(self, diverge=()):
        self.trained, self.diverge = [], set(diverge)

    def __call__(self, point):
        self.trained.append(point)
        if point.learning_rate in self.diverge:
            raise ChildDivergedError(f"Training loss is nan at lr {point.learning_rate}.")
        ppl = 100 * point.learning_rate
        return types.SimpleNamespace(val_perplexities=[2 * ppl, ppl], best_val_perplexity=ppl,
                                     best_epoch=1, model=f"model at {point.learning_rate}")  # fmt: skip


def _lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_the_lowest_validation_perplexity_is_chosen_and_each_point_recorded(tmp_path):
    path = str(tmp_path / lm_grid.GRID)
    points = [_point(1.0), _point(0.5), _point(2.0)]
    train = _FakeTraining()
    outcome = lm_grid.run_grid(points, train, path, context={"units": 4})
    assert outcome.chosen == _point(0.5) and outcome.result.model == "model at 0.5"
    assert [r["best_val_perplexity"] for r in outcome.records] == [100, 50, 200]
    lines = _lines(path)
    assert lines == outcome.records and len(lines) == 3
    assert lines[1]["settings"] == {"learning_rate": 0.5, "init_scale": 0.05, "input_dropout": 0.5,
                                    "output_dropout": 0.5, "lr_decay_after": 6}  # fmt: skip
    assert lines[1]["val_perplexities"] == [100, 50] and not lines[1]["diverged"]


def test_a_rerun_skips_finished_points_and_ignores_a_torn_line(tmp_path):
    path = str(tmp_path / lm_grid.GRID)
    points = [_point(1.0), _point(0.5), _point(2.0)]
    lm_grid.run_grid(points[:2], _FakeTraining(), path)
    with open(path, "a") as f:
        f.write('{"settings": {"learning_rate": 2.0, "init')  # A kill in mid-append.
    train = _FakeTraining()
    outcome = lm_grid.run_grid(points, train, path)
    assert train.trained == [_point(2.0)]
    # The best point was read back, not trained in this call: no result to reuse.
    assert outcome.chosen == _point(0.5) and outcome.result is None
    assert len(_lines(path)) == 3  # The torn tail was cut off before the new line.
    again = _FakeTraining()
    assert lm_grid.run_grid(points, again, path).records == outcome.records
    assert again.trained == []


def test_a_changed_context_trains_the_grid_afresh(tmp_path):
    path = str(tmp_path / lm_grid.GRID)
    points = [_point(1.0), _point(0.5)]
    lm_grid.run_grid(points, _FakeTraining(), path, context={"epochs": 2})
    train = _FakeTraining()
    lm_grid.run_grid(points, train, path, context={"epochs": 3})
    assert train.trained == points


def test_a_diverged_point_is_recorded_and_skipped(tmp_path):
    path = str(tmp_path / lm_grid.GRID)
    points = [_point(0.1), _point(0.5), _point(1.0)]
    train = _FakeTraining(diverge={0.1})
    outcome = lm_grid.run_grid(points, train, path)
    assert train.trained == points  # The grid went on after the divergence.
    assert outcome.chosen == _point(0.5)
    first = _lines(path)[0]
    assert first["diverged"] and "nan" in first["error"] and first["best_val_perplexity"] is None
    again = _FakeTraining()
    lm_grid.run_grid(points, again, path)
    assert again.trained == []  # A diverged point is finished too.


def test_a_grid_where_every_point_diverges_fails_clearly(tmp_path):
    points = [_point(5.0), _point(9.0)]
    with pytest.raises(ChildTrainingError, match="every one of the 2 grid points diverged"):
        lm_grid.run_grid(points, _FakeTraining(diverge={5.0, 9.0}), str(tmp_path / "g.jsonl"))
    assert len(_lines(tmp_path / "g.jsonl")) == 2


def test_a_damaged_line_is_named(tmp_path):
    path = tmp_path / lm_grid.GRID
    path.write_text('{"settings": {"learning_rate": -1}}\n')
    with pytest.raises(ValueError, match="line 1: not a grid point"):
        lm_grid.run_grid([_point(1.0)], _FakeTraining(), str(path))


def test_grid_points_combine_the_axes():
    points = lm_grid.grid_points([1.0, 0.5], [0.05], [0.3, (0.2, 0.4)], [4])
    assert len(points) == 4 and points[0] == lm_grid.GridPoint(1.0, 0.05, 0.3, 0.3, 4)
    assert points[1] == lm_grid.GridPoint(1.0, 0.05, 0.2, 0.4, 4)
    with pytest.raises(ValueError, match="distinct"):
        lm_grid.grid_points([1.0, 1.0], [0.05], [0.5], [6])
    with pytest.raises(ValueError, match="dropout rates must be in"):
        lm_grid.grid_points([1.0], [0.05], [1.0], [6])


# -- nas_tf.train_lm's flags --------------------------------------------------

_TINY = [
    "--cell=lstm", "--data_name=text_char", "--units=4", "--epochs=1", "--batch_size=4",
    "--bptt_steps=5", "--eval_batch_size=2", "--max_train_batches=2", "--max_eval_batches=1",
    "--verbose=0",
]  # fmt: skip


def _parse(argv):
    train_lm.FLAGS.unparse_flags()
    train_lm.FLAGS(["train_lm"] + argv)


@pytest.fixture(autouse=True)
def _restore_flags():
    yield
    train_lm.FLAGS.unparse_flags()


@pytest.fixture
def trainings(monkeypatch):
    """The learning rates `train_language_model` trains with, in order (a counting wrapper)."""
    seen, real = [], lm_trainer.train_language_model

    def counting(description, data, model_config, train_config, *args, **kwargs):
        seen.append(train_config.learning_rate)
        return real(description, data, model_config, train_config, *args, **kwargs)

    monkeypatch.setattr(lm_trainer, "train_language_model", counting)
    return seen


def _results(out):
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


def test_a_grid_of_two_trains_both_chooses_one_and_resumes(tmp_path, trainings):
    out = str(tmp_path / "grid")
    _parse(_TINY + ["--grid_learning_rates=1,0.5", f"--output_dir={out}"])
    assert train_lm.main(["train_lm"]) == 0
    assert trainings == [1.0, 0.5]  # --grid_epochs = --epochs: the chosen model is the final one.
    results = _results(out)
    best = min(results["grid"], key=lambda r: r["best_val_perplexity"])
    assert results["chosen"] == best["settings"]
    assert results["best_val_perplexity"] == best["best_val_perplexity"]
    assert len(_lines(os.path.join(out, lm_grid.GRID))) == 2
    assert results["config"]["grid"][1]["learning_rate"] == 0.5

    del trainings[:]
    assert train_lm.main(["train_lm"]) == 0  # The same command again: only the final model.
    assert trainings == [results["chosen"]["learning_rate"]]
    assert _results(out)["chosen"] == results["chosen"]


def test_shorter_grid_points_are_followed_by_a_final_run(tmp_path, trainings):
    out = str(tmp_path / "grid")
    _parse(_TINY + ["--epochs=2", "--grid_epochs=1", "--grid_learning_rates=1,0.5",
                    f"--output_dir={out}"])  # fmt: skip
    assert train_lm.main(["train_lm"]) == 0
    results = _results(out)
    assert len(trainings) == 3 and trainings[2] == results["chosen"]["learning_rate"]
    assert all(len(r["val_perplexities"]) == 1 for r in results["grid"])
    assert len(results["val_perplexities"]) == 2


def test_a_grid_of_one_point_is_a_plain_run(tmp_path, trainings):
    out = str(tmp_path / "one")
    _parse(_TINY + ["--grid_learning_rates=0.5", "--grid_dropouts=0.25", f"--output_dir={out}"])
    assert train_lm.main(["train_lm"]) == 0
    assert trainings == [0.5] and not os.path.exists(os.path.join(out, lm_grid.GRID))
    results = _results(out)
    assert results["grid"] == [] and results["chosen"]["input_dropout"] == 0.25
    assert results["config"]["model"]["output_dropout"] == 0.25


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--grid_learning_rates=1,fast"], "--grid_learning_rates: 'fast' is not a positive number"),
        (["--grid_learning_rates=0"], "--grid_learning_rates: '0' is not a positive number"),
        (["--grid_learning_rates=nan"], "--grid_learning_rates: 'nan' is not a positive number"),
        (["--grid_init_scales=-0.1"], "--grid_init_scales: '-0.1' is not a positive number"),
        (["--grid_dropouts=0.5,1"], r"--grid_dropouts: '1' is not a rate in \[0, 1\)"),
        (["--grid_dropouts=-0.2"], r"--grid_dropouts: '-0.2' is not a rate"),
        (["--grid_lr_decay_after=2.5"], "--grid_lr_decay_after: '2.5' is not a whole number"),
        (["--grid_lr_decay_after=-1"], "--grid_lr_decay_after: '-1' is not a whole number"),
        (["--grid_learning_rates=1,1.0"], "--grid_learning_rates repeats a value"),
    ],
)
def test_bad_grid_flags_name_the_flag(tmp_path, argv, message):
    _parse(_TINY + [f"--output_dir={tmp_path / 'out'}"] + argv)
    with pytest.raises(train_lm.app.UsageError, match=message):
        train_lm.main(["train_lm"])
    assert not os.path.exists(tmp_path / "out")
    with pytest.raises(train_lm.flags.IllegalFlagValueError):
        _parse(["--grid_epochs=0"])


@pytest.mark.slow
def test_a_kill_after_a_grid_point_loses_nothing(tmp_path):
    # SIGKILL right after the first point's line is written; the same command resumes.
    import signal
    import subprocess
    import sys

    out = str(tmp_path / "grid")
    argv = [sys.executable, "-m", "nas_tf.train_lm"] + _TINY + [
        "--grid_learning_rates=1,0.5,0.25", f"--output_dir={out}"]  # fmt: skip
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, NAS_TF_FAULT=f"{lm_grid.FAULT_AFTER_POINT}:1")
    killed = subprocess.run(argv, cwd=root, env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    first = _lines(os.path.join(out, lm_grid.GRID))
    assert len(first) == 1 and not os.path.exists(os.path.join(out, "results.json"))
    env.pop("NAS_TF_FAULT")
    done = subprocess.run(argv, cwd=root, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    lines = _lines(os.path.join(out, lm_grid.GRID))
    assert len(lines) == 3 and lines[0] == first[0]  # The finished point was not trained again.
    assert _results(out)["chosen"] == min(lines, key=lambda r: r["best_val_perplexity"])["settings"]
