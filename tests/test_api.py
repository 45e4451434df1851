"""The Python API: README's notebook example, settings as keywords, Architecture summaries."""

import dataclasses
import importlib.util
import json
import os

import keras
import numpy as np
import pytest

import nas_tf
from nas_tf import algorithms
from nas_tf import api
from nas_tf import summaries
from nas_tf.spaces import cell, conv

_README = os.path.join(os.path.dirname(__file__), "..", "README.md")
_START = "```python\nimport nas_tf\n\nsearch = nas_tf.Search("


def test_readme_notebook_example_runs(tmp_path):
    text = open(_README, encoding="utf-8").read()
    assert text.count(_START) == 1, "README's notebook example moved: update this test."
    code = _START.split("\n", 1)[1] + text.split(_START)[1].split("```")[0]
    assert len(code.strip().splitlines()) <= 10
    replacements = [
        ("max_trials=8", "max_trials=2, isolate_children=False, verbose=0"),
        ('"runs/notebook"', repr(str(tmp_path / "nb"))),
        ('{"depth": 4}', '{"depth": 2, "num_filters": (2, 4)}'),
        ('child={"epochs": 2}', 'child={"epochs": 2}, reinforce={"batch_size": 1}'),
    ]
    if importlib.util.find_spec("pandas") is None:
        replacements.append(("result.dataframe()", "result.records"))
    for old, new in replacements:
        assert code.count(old) == 1, f"README's example no longer has {old!r}: update this test."
        code = code.replace(old, new)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    result = scope["result"]
    records = result.records
    assert len(records) == 2 and len({r["trial_id"] for r in records}) == 2
    assert result.config["child"]["epochs"] == 2 and result.config["max_trials"] == 2
    best = max((r for r in records if r["status"] == "COMPLETED"), key=lambda r: r["reward"])
    assert result.best_reward == best["reward"]
    arch = result.best_architecture
    assert json.loads(arch.to_json()) == best["architecture"]
    assert str(arch).splitlines()[0] == "Convolutional network, 2 layers:"
    # The trained model is the best child's; the fresh one has its shape.
    model, fresh = scope["model"], scope["fresh"]
    assert isinstance(model, keras.Model) and model.count_params() == best["num_params"]
    assert fresh.count_params() == best["num_params"]
    # The report of this real search: every picture, referenced by the page.
    page = (tmp_path / "nb" / "report" / "index.html").read_text()
    for name in ("rewards.png", "controller.png", "decisions.png", "best_network.png"):
        assert (tmp_path / "nb" / "report" / name).stat().st_size > 5000, name
        assert f'src="{name}"' in page
    assert len(summaries.read_controller_log(str(tmp_path / "nb" / "search" / summaries.CONTROLLER_LOG))) == 2
    runs = sorted(os.listdir(tmp_path / "nb" / "tensorboard"))
    assert [r for r in runs if not r.startswith("events")] == sorted(
        ["controller"] + [summaries.trial_run(r["trial_id"]) for r in records]
    )
    assert "2 children trained" in repr(result)


def test_settings_as_keywords_build_the_command_lines_config(tmp_path):
    config = api.make_config(str(tmp_path), preset="paper", space="ptb_cell",
                             space_overrides={"base": 4}, dataset="text", reinforce={"batch_size": 4})
    assert config.reinforce == nas_tf.ReinforceConfig.paper(learning_rate=0.0005, batch_size=4)
    assert config.reuse_rewards is False and config.max_resamples == 0 and config.mutate_best == 0
    assert config.controller == nas_tf.ControllerConfig.paper()
    default = api.make_config(str(tmp_path), child={"epochs": 7})
    assert default.child.epochs == 7 and default.reinforce == algorithms.default_reinforce_config()
    assert default.mutate_until == 40 and default == api.make_config(str(tmp_path), child={"epochs": 7})
    with pytest.raises(TypeError, match="Unknown search setting 'epochs'"):
        api.make_config(str(tmp_path), epochs=3)
    with pytest.raises(TypeError, match="either a SearchConfig"):
        nas_tf.Search(str(tmp_path / "other"), config=default)
    assert nas_tf.Search(config=default).config is default
    with pytest.raises(FileNotFoundError, match="not the output directory"):
        nas_tf.open_search(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="writes it when it ends"):
        nas_tf.SearchResult(str(tmp_path)).best_model()


def test_architecture_summary_and_build_for_both_families():
    spec = conv.get_space("cifar10_v1", depth=3, filter_sizes=(1, 3), num_filters=(2, 4))
    values = {}
    for i, (fh, fw, n, flags) in enumerate([(1, 3, 2, ()), (3, 3, 4, (1,)), (1, 1, 2, (1, 0))]):
        p = conv.layer_prefix(i)
        values.update({p + "filter_height": fh, p + "filter_width": fw, p + "num_filters": n,
                       conv.anchor_name(i): flags})
    arch = nas_tf.Architecture(values, depth=3)
    assert str(arch).splitlines() == [
        "Convolutional network, 3 layers:",
        "  layer 0: conv 1x3, 2 filters  <- image",
        "  layer 1: conv 3x3, 4 filters  <- layer 0",
        "  layer 2: conv 1x1, 2 filters  <- layer 0",
        "  classifier <- layer 1, layer 2",
    ]
    model = arch.build(input_shape=(8, 8, 1), num_classes=3, spec=spec)
    assert model.output_shape == (None, 3)
    # Convolution weights, no biases (batch norm follows): 1*3*1*2 + 3*3*2*4 + 1*1*2*2.
    kernels = [w for w in model.weights if "kernel" in w.path and len(w.shape) == 4]
    assert sum(int(np.prod(w.shape)) for w in kernels) == 6 + 72 + 4
    paper = cell.paper_example().to_architecture()
    assert str(paper) == str(cell.paper_example())
    assert len(str(paper).splitlines()) == 1 + 3 + 2  # Title, 3 nodes, c_t and h_t.
    lm = paper.build(vocab_size=20, language_model=dataclasses.replace(
        nas_tf_lm_config(), units=8, num_layers=1))
    logits, _ = lm(np.zeros((2, 5), "int32"))
    assert logits.shape == (2, 5, 20)
    other = nas_tf.Architecture({"act": "relu", "skips": (1, 0)})
    assert str(other) == "Architecture:\n  act: relu\n  skips: [1, 0]"
    with pytest.raises(ValueError, match="HyperModel that defined its space"):
        other.build()


def nas_tf_lm_config():
    from nas_tf.children import language_model

    return language_model.LanguageModelConfig()


@pytest.mark.skipif(importlib.util.find_spec("pandas") is None, reason="pandas is optional")
def test_dataframe_has_one_row_per_child(tmp_path):
    records = [
        {"trial_id": "0", "status": "COMPLETED", "reward": 0.5, "architecture": {"depth": 2, "values": {}}},
        {"trial_id": "1", "status": "FAILED", "reason": "oom", "message": "x"},
    ]
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    frame = nas_tf.open_search(str(tmp_path)).dataframe()
    assert list(frame["trial_id"]) == ["0", "1"] and frame["depth"].iloc[0] == 2


@pytest.mark.parametrize("budget", [0, -3, 2.5, True])
def test_a_budget_that_is_not_a_positive_integer_is_refused_by_name(tmp_path, budget):
    with pytest.raises(ValueError, match=r"max_trials must be a positive integer"):
        nas_tf.Search(str(tmp_path), max_trials=budget)
