"""The README's HyperModel example runs as written (on tiny random data)."""

import os

import numpy as np

_README = os.path.join(os.path.dirname(__file__), "..", "README.md")
_START = "```python\nimport keras, keras_tuner, nas_tf\n"


def test_readme_hypermodel_example_runs(tmp_path):
    text = open(_README, encoding="utf-8").read()
    assert text.count(_START) == 1, "README's HyperModel example moved: update this test."
    code = _START.split("\n", 1)[1] + text.split(_START)[1].split("```")[0]
    for old, new in (
        ("max_trials=50", "max_trials=2"),
        ("epochs=5", "epochs=1, verbose=0"),
        ('directory="runs"', f'directory="{tmp_path}"'),
    ):
        assert code.count(old) == 1, f"README's example no longer has {old!r}: update this test."
        code = code.replace(old, new)
    rng = np.random.default_rng(0)
    scope = {
        "x_train": rng.random((16, 32, 32, 3), dtype=np.float32),
        "y_train": rng.integers(0, 10, 16),
    }
    scope["x_val"], scope["y_val"] = scope["x_train"], scope["y_train"]
    exec(compile(code, "README.md", "exec"), scope)
    trials = scope["tuner"].oracle.trials.values()
    assert [t.status for t in trials] == ["COMPLETED", "COMPLETED"]
