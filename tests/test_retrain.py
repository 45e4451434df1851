"""`python -m nas_tf.retrain`: the paper's grid, the full training set, test error, export, resume."""

import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from nas_tf import durable, retrain, search
from nas_tf import space as space_lib
from nas_tf.data import embedded
from nas_tf.spaces import conv

# A 2-layer network of a tiny v1 space, written as a search writes it.
_SPACE = {"depth": 2, "num_filters": [2, 4], "filter_sizes": [1, 3]}
_ARCH = space_lib.Architecture(
    {
        "layer_0/filter_height": 3, "layer_0/filter_width": 1, "layer_0/num_filters": 2,
        "layer_0/anchor": (),
        "layer_1/filter_height": 1, "layer_1/filter_width": 3, "layer_1/num_filters": 4,
        "layer_1/anchor": (1,),
    },
    depth=2,
)  # fmt: skip
_TINY = ["--data_name=digits", "--grid_epochs=2", "--epochs=1", "--batch_size=256",
         "--grid_learning_rates=0.1,0.05", "--grid_weight_decays=1e-4",
         "--grid_bn_epsilons=1e-3", "--grid_lr_decay_at=0.5", "--verbose=1"]  # fmt: skip


def _search_output(directory):
    """What a search leaves: its config.json and best_architecture.json."""
    os.makedirs(directory, exist_ok=True)
    config = search.SearchConfig(output_dir=str(directory), space="cifar10_v1",
                                 space_overrides=_SPACE)  # fmt: skip
    with open(os.path.join(directory, search.CONFIG), "w") as f:
        f.write(config.to_json())
    path = os.path.join(directory, search.BEST_ARCHITECTURE)
    with open(path, "w") as f:
        f.write(_ARCH.to_json())
    return path


def _parse(argv):
    retrain.FLAGS.unparse_flags()
    retrain.FLAGS(["retrain"] + argv)


@pytest.fixture(autouse=True)
def _restore_flags():
    yield
    retrain.FLAGS.unparse_flags()


def test_the_quick_start_command_gives_a_paper_row_and_a_servable_model(tmp_path, capsys):
    arch_path = _search_output(tmp_path / "quick")
    _parse(_TINY + [f"--architecture={arch_path}"])
    assert retrain.main(["retrain"]) == 0
    out = str(tmp_path / "quick" / "retrain")  # The default: beside the architecture.
    with open(os.path.join(out, retrain.RESULTS)) as f:
        results = json.load(f)
    assert results["space"] == "cifar10_v1" and results["depth"] == 2
    # Both grid points ran on the training split and were scored on validation.
    assert [g["point"]["learning_rate"] for g in results["grid"]] == [0.1, 0.05]
    for g in results["grid"]:
        assert len(g["history"]["val_accuracy"]) == 2
        assert g["score"] == max(g["history"]["val_accuracy"])
    best = max(results["grid"], key=lambda g: g["score"])
    assert results["best_point"] == best["point"]
    data = embedded.load_digits()
    assert results["final_train_images"] == data.num_train + data.num_valid
    assert len(results["final_history"]["loss"]) == 1

    # The saved model is the one tested: its own test accuracy is the report's.
    model = keras.models.load_model(os.path.join(out, retrain.BEST_MODEL))
    assert model.count_params() == results["num_parameters"]
    full = retrain.full_training_set(data)  # Whitened with the full set's statistics.
    images = (data.x_test.astype(np.float32) - full.mean) / full.std
    logits = model.predict(images, verbose=0)
    accuracy = float(np.mean(np.argmax(logits, -1) == data.y_test))
    assert accuracy == pytest.approx(results["test_accuracy"], abs=1e-6)
    served = tf.saved_model.load(os.path.join(out, retrain.SAVED_MODEL))
    np.testing.assert_allclose(served.serve(images).numpy(), logits, rtol=1e-4, atol=1e-4)
    row = f"| best_architecture.json | 2 | {results['num_parameters']} | {100 * (1 - accuracy):.2f} |"
    assert results["row"] == row and row in capsys.readouterr().out

    # Running again reports the finished result without training.
    _parse(_TINY + [f"--architecture={arch_path}"])
    assert retrain.main(["retrain"]) == 0
    assert row in capsys.readouterr().out


def test_more_filters_widens_every_layer_by_k():
    spec = conv.get_space("cifar10_v1", **_SPACE)
    arch, wide = retrain.widen(_ARCH, spec, 3)
    assert wide.num_filters == (5, 7)
    assert arch["layer_0/num_filters"] == 5 and arch["layer_1/num_filters"] == 7
    data = embedded.load_digits()
    point = retrain.GridPoint(0.1, 1e-4, 1e-5, 0.5)
    config = retrain.RetrainConfig("unused", "unused", spec.to_config())
    model = retrain.build_model(arch, wide, data, point, config)
    # Layer 0: 3x1 kernel on 1 channel, 5 filters, BN (4 per channel); layer 1:
    # 1x3 on 5 channels, 7 filters, BN; the classifier: 7 * 10 + 10.
    assert model.count_params() == 3 * 5 + 4 * 5 + 3 * 5 * 7 + 4 * 7 + 7 * 10 + 10
    assert {layer.epsilon for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization)} == {1e-5}  # fmt: skip
    assert retrain.count_convolutions(model) == 2


def test_a_resumed_run_continues_the_schedule_and_optimizer(tmp_path):
    spec = conv.get_space("cifar10_v1", **_SPACE)
    data = embedded.load_digits()
    point = retrain.GridPoint(0.1, 1e-4, 1e-3, 0.5)
    config = retrain.RetrainConfig(str(tmp_path), "unused", spec.to_config(), batch_size=512)
    steps = -(-data.num_train // 512)
    directory = str(tmp_path / "run")
    _, history, resumed_at = retrain.train(_ARCH, spec, data, point, 1, directory, config, False)
    assert resumed_at == 0 and len(history["loss"]) == 1
    model, history, resumed_at = retrain.train(_ARCH, spec, data, point, 2, directory, config, False)
    assert resumed_at == 1 and len(history["loss"]) == 2
    assert int(model.optimizer.iterations.numpy()) == 2 * steps  # Restored, then one more epoch.
    assert sorted(os.listdir(directory)) == ["epoch_2.weights.h5", "state.json"]


@pytest.mark.slow  # Two processes, three short trainings: about a minute on 2 cores.
def test_a_killed_retrain_resumes_without_training_anything_twice(tmp_path):
    arch_path = _search_output(tmp_path / "search")
    out = str(tmp_path / "final")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [sys.executable, "-m", "nas_tf.retrain", f"--architecture={arch_path}",
           f"--output_dir={out}"] + _TINY  # fmt: skip
    # Epoch 3 is grid point 1's first: point 0 is recorded, point 1 half done.
    killed = subprocess.run(cmd, env={**env, durable.FAULT_ENV: "retrain_after_epoch:3"},
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert len(open(os.path.join(out, retrain.GRID)).readlines()) == 1
    # Killed again once the final model is trained, before it is saved.
    killed = subprocess.run(cmd, env={**env, durable.FAULT_ENV: "retrain_before_export:1"},
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not os.path.exists(os.path.join(out, retrain.RESULTS))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(os.path.join(out, retrain.RESULTS)) as f:
        results = json.load(f)
    lines = open(os.path.join(out, retrain.GRID)).readlines()
    assert [json.loads(line)["point"]["learning_rate"] for line in lines] == [0.1, 0.05]
    assert [g["resumed_at_epoch"] for g in results["grid"]] == [0, 1]
    assert len(results["grid"][1]["history"]["loss"]) == 2
    assert results["final_resumed_at_epoch"] == 1  # Trained before the kill: not again.
    assert results["row"] in done.stdout
    assert not os.path.exists(os.path.join(out, "grid", "point_1"))  # Cleaned up.


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "--architecture is required"),
        (["--architecture=/no/such.json", "--space=cifar10_v1"], "does not exist"),
        (["--grid_learning_rates=0.1,x"], "comma-separated list of numbers"),
        (["--grid_lr_decay_at=1.5"], "lr_decay_at must be a fraction"),
        (["--grid_weight_decays=1e-4,1e-4"], "repeats a value"),
    ],
)
def test_bad_flags_give_clear_errors(tmp_path, argv, message):
    arch_path = _search_output(tmp_path / "s")
    base = [] if any(a.startswith("--architecture") for a in argv) or not argv or \
        message == "--architecture is required" else [f"--architecture={arch_path}"]  # fmt: skip
    _parse(base + argv)
    with pytest.raises(retrain.app.UsageError, match=message):
        retrain.main(["retrain"])


def test_architecture_outside_its_space_and_cell_searches_are_refused(tmp_path):
    arch_path = _search_output(tmp_path / "s")
    # The paper's v1 values do not include 2 or 4 filters.
    _parse([f"--architecture={arch_path}", f"--search_config={tmp_path / 'none.json'}"])
    with pytest.raises(retrain.app.UsageError, match="cannot be read"):
        retrain.main(["retrain"])
    other = tmp_path / "other"
    other.mkdir()
    (other / "best_architecture.json").write_text(_ARCH.to_json())
    _parse([f"--architecture={other / 'best_architecture.json'}"])
    with pytest.raises(retrain.app.UsageError, match="not a network of cifar10_v1"):
        retrain.main(["retrain"])
    (other / "config.json").write_text(json.dumps({"space": "ptb_cell", "space_overrides": {}}))
    with pytest.raises(retrain.app.UsageError, match="nas_tf.train_lm"):
        retrain.main(["retrain"])


def test_missing_cifar10_says_how_to_provide_it(tmp_path, capsys):
    arch_path = _search_output(tmp_path / "s")
    _parse([f"--architecture={arch_path}", "--data_name=cifar10", f"--data_dir={tmp_path}"])
    assert retrain.main(["retrain"]) == 2
    assert "tfds build cifar10" in capsys.readouterr().err


def test_a_changed_configuration_is_not_mixed_into_a_finished_one(tmp_path):
    spec = conv.get_space("cifar10_v1", **_SPACE)
    arch_path = _search_output(tmp_path / "s")
    config = retrain.RetrainConfig(str(tmp_path / "out"), arch_path, spec.to_config())
    retrain._check_resume(config)
    with pytest.raises(ValueError, match="epochs: 300 -> 3"):
        retrain._check_resume(retrain.RetrainConfig(str(tmp_path / "out"), arch_path,
                                                    spec.to_config(), epochs=3))  # fmt: skip
