"""`python -m nas_tf.report`: plots, diagrams and the page, from a search's files."""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import nas_tf
from nas_tf import space as space_lib
from nas_tf import summaries
from nas_tf.report import __main__ as report_main
from nas_tf.report import build_report, data, plots
from nas_tf.spaces import cell, conv


def png_size(path):
    """(width, height) from a PNG's IHDR chunk."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


def _conv_arch(rng, spec, depth):
    values = {}
    for i in range(depth):
        p = conv.layer_prefix(i)
        values[p + "filter_height"] = int(rng.choice(spec.filter_sizes))
        values[p + "filter_width"] = int(rng.choice(spec.filter_sizes))
        values[p + "num_filters"] = int(rng.choice(spec.num_filters))
        values[conv.anchor_name(i)] = [int(b) for b in rng.integers(0, 2, i)]
    return {"depth": depth, "values": values}


def _write_search(directory, records, config, updates=(), worker_files=None):
    os.makedirs(directory / "search", exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    if worker_files:
        for worker, mine in worker_files.items():
            (directory / f"history.{worker}.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in mine)
            )
    else:
        # A running search: the last line is being written.
        (directory / "history.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in records) + '{"trial_id": "99", "sta'
        )
    log = directory / "search" / summaries.CONTROLLER_LOG
    log.write_text("".join(json.dumps(u) + "\n" for u in updates))


def _conv_records(n=14, depth=4):
    spec = conv.get_space("cifar10_v3", depth=depth, filter_sizes=(1, 3), num_filters=(4, 8))
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        record = {"trial_id": f"{i:02d}", "architecture": _conv_arch(rng, spec, depth)}
        if i == 5:
            record.update(status="FAILED", reason="oom", message="out of memory")
        else:
            acc = [0.1 + 0.05 * i, 0.15 + 0.05 * i]
            record.update(
                status="COMPLETED", val_accuracy=acc, reward=max(acc) ** 3,
                num_params=1000 + i, train_seconds=1.5, val_loss=[2.0, 1.9], train_loss=[2.1, 2.0],
            )
        records.append(record)
    config = {"space": "cifar10_v3", "dataset": "digits", "max_trials": 20, "preset": "default",
              "space_overrides": {"depth": depth, "filter_sizes": [1, 3], "num_filters": [4, 8]}}
    return records, config, spec


def _updates(n=4):
    return [
        {"update": k, "entropy": 3.0 - 0.5 * k, "baseline": 0.1 * k, "mean_reward": 0.1 * k + 0.05,
         "loss": 0.5, "grad_norm": 1.0 / k, "reused_share": 0.25 * (k - 1), "learning_rate": 0.03,
         "mean_advantage": 0.0, "batch": 4}
        for k in range(1, n + 1)
    ]


def test_moving_average_best_so_far_and_decision_frequencies_are_exact():
    np.testing.assert_allclose(plots.moving_average([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(plots.best_so_far([0.2, 0.1, 0.5, 0.3]), [0.2, 0.2, 0.5, 0.5])
    space = space_lib.Space(
        (space_lib.Categorical("a", ("x", "y")), space_lib.Anchor("s0"), space_lib.Anchor("s1", ("s0",)))
    )
    archs = [
        space_lib.Architecture({"a": "x", "s0": (), "s1": (1,)}),
        space_lib.Architecture({"a": "x", "s0": (), "s1": (0,)}),
        space_lib.Architecture({"a": "y", "s0": (), "s1": (1,)}),
        space_lib.Architecture({"a": "y", "s0": (), "s1": (1,)}),
    ]
    table = {name: (labels, m) for name, labels, m in plots.decision_frequencies(space, archs, 2)}
    labels, m = table["a"]
    assert labels == ("x", "y")
    np.testing.assert_allclose(m, [[1.0, 0.0], [0.0, 1.0]])
    labels, m = table["s1"]
    assert labels == ("s0",)
    np.testing.assert_allclose(m, [[0.5, 1.0]])
    assert "s0" not in table  # No sources: nothing to show.


def test_conv_report_has_every_picture_and_the_top_k_table(tmp_path):
    records, config, spec = _conv_records()
    _write_search(tmp_path, records, config, _updates())
    index = build_report(str(tmp_path), top_k=3)
    assert index == str(tmp_path / "report" / "index.html")
    html = open(index, encoding="utf-8").read()
    for name, min_size in (
        ("rewards.png", (600, 300)), ("controller.png", (600, 400)),
        ("decisions.png", (800, 400)), ("best_network.png", (400, 400)),
    ):
        path = tmp_path / "report" / name
        assert path.exists() and path.stat().st_size > 5000, name
        width, height = png_size(path)
        assert width >= min_size[0] and height >= min_size[1], (name, width, height)
        assert f'src="{name}"' in html
    # Top 3: the last three children (rewards grow with the trial number).
    table = html.split("<h2>Top 3 children</h2>")[1]
    assert [row.split("</td><td>")[1] for row in table.split("<tr><td>")[1:]] == ["13", "12", "11"]
    assert f"{records[13]['reward']:.4f}" in table and "val acc 0.8000" in table
    assert "13 trained, 1 failed, of 20 planned" in html
    # The best network's layers, with the space's pooling, as text under its diagram.
    assert "layer 0: conv" in html and "max pool 2x2" in html


def test_cell_report_draws_the_cell_and_workers_are_told_apart(tmp_path):
    description = cell.lstm_like()
    arch = json.loads(description.to_architecture().to_json())
    records = [
        {"trial_id": str(i), "status": "COMPLETED", "architecture": arch, "reward": 0.01 * i,
         "best_val_perplexity": 100.0 - i, "val_perplexity": [120.0, 100.0 - i], "num_params": 50,
         "train_seconds": 2.0}
        for i in range(6)
    ]
    _write_search(
        tmp_path, records, {"space": "ptb_cell", "space_overrides": {"base": 4}, "dataset": "text"},
        worker_files={"tuner0": records[0::2], "tuner1": records[1::2]},
    )
    files = data.load(str(tmp_path))
    assert files.workers == ["tuner0", "tuner1"]
    assert [r["worker"] for r in files.records] == ["tuner0", "tuner1"] * 3
    index = build_report(str(tmp_path))
    html = open(index, encoding="utf-8").read()
    width, height = png_size(tmp_path / "report" / "best_cell.png")
    assert width >= 600 and height >= 500
    assert 'src="best_cell.png"' in html and 'src="rewards.png"' in html
    assert "Controller per update</h2>\n<p>Nothing to draw yet." in html
    assert "workers</b></td><td>tuner0, tuner1" in html
    assert "a_6 = identity(elem_mult(a_4, a_5))" in html  # The cell as text.


def test_command_line_and_a_directory_that_is_not_a_search(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="not the output directory"):
        build_report(str(tmp_path))
    report_main.FLAGS(["report", str(tmp_path)])
    assert report_main.main(["report", str(tmp_path)]) == 1
    assert "not the output directory" in capsys.readouterr().err


def test_the_report_starts_without_tensorflow():
    # A fresh interpreter: this test process has imported TensorFlow already.
    code = ("import sys, nas_tf, nas_tf.report; "
            "assert 'tensorflow' not in sys.modules, 'TensorFlow imported'; "
            "assert 'keras' not in sys.modules, 'Keras imported'; "
            "assert nas_tf.Space.__module__ == 'nas_tf.space'")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError, match="no attribute 'Oracle'"):
        nas_tf.Oracle
