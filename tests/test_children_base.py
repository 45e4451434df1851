"""What both child families share: placement (strategy, precision), static shapes, TPU checks."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from nas_tf import data as data_lib
from nas_tf import space as space_lib
from nas_tf.children import base, convnet, lm_trainer
from nas_tf.data import text_corpus
from nas_tf.spaces import cifar10_v1
from nas_tf.spaces import cell as cell_space


def _tiny_images(n_train=40, n_valid=13):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (n_train + n_valid, 8, 8, 3)).astype(np.uint8)
    y = rng.integers(0, 3, n_train + n_valid)
    return data_lib.from_arrays(x[:n_train], y[:n_train], x_valid=x[n_train:], y_valid=y[n_train:], name="tiny")


def _tiny_conv():
    """A 1-layer space and its 3x3, 2-filter child."""
    spec = cifar10_v1(depth=1, num_filters=(2,), filter_sizes=(3,))
    values = {"layer_0/filter_height": 3, "layer_0/filter_width": 3, "layer_0/num_filters": 2,
              "layer_0/anchor": ()}  # fmt: skip
    return spec, space_lib.Architecture(values, depth=1)


def _relu_cell():
    return cell_space.CellDescription(
        nodes=(("add", "tanh"),) * 3, inject=("add", "tanh"), inject_node=2, memory_node=2,
    )  # fmt: skip


def test_float16_child_uses_a_loss_scale_optimizer_and_trains_without_nan():
    spec, arch = _tiny_conv()
    where = base.Placement(tf.distribute.get_strategy(), "mixed_float16")
    config = convnet.ChildConfig(epochs=2, batch_size=16, lr_decay_at=(), seed=1)
    result = convnet.train_child(arch, spec, _tiny_images(), config, placement=where)
    model = result.model
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.get_layer("layer_0_conv").compute_dtype == "float16"
    assert model.get_layer("logits").compute_dtype == "float32"
    assert all(np.isfinite(result.train_loss)) and all(np.isfinite(result.val_loss))
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_float32_and_bfloat16_children_are_not_loss_scaled():
    assert not base.Placement(tf.distribute.get_strategy(), None).loss_scaled
    where = base.Placement(tf.distribute.get_strategy(), "mixed_bfloat16")
    sgd = keras.optimizers.SGD(0.1)
    assert where.optimizer(sgd) is sgd


def test_float16_language_model_is_loss_scaled_and_stays_finite():
    data = text_corpus.load("char")
    description = _relu_cell()
    from nas_tf.children import language_model as lm

    model_config = lm.LanguageModelConfig(units=8)
    train = lm_trainer.TrainConfig(epochs=1, batch_size=4, bptt_steps=5, max_train_batches=3, max_eval_batches=2)
    where = base.Placement(tf.distribute.get_strategy(), "mixed_float16")
    result = lm_trainer.train_language_model(description, data, model_config, train, placement=where)
    assert result.model.compute_dtype == "float16"
    assert all(np.isfinite(result.train_losses)) and np.isfinite(result.best_val_perplexity)
    trainer = lm_trainer._Trainer(result.model, train, where)
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)


def test_language_model_children_refuse_multi_replica_distribution_naming_the_flag():
    for kind in ("mirrored", "tpu"):
        with pytest.raises(ValueError, match=f"--child_distribution={kind}: .*pass --child_distribution=default"):
            lm_trainer.TrainConfig(distribution=kind)


def test_tpu_without_a_tpu_fails_fast_saying_what_to_pass(monkeypatch):
    monkeypatch.delenv(base.TPU_NAME_ENV, raising=False)
    monkeypatch.setattr(base, "_TPU_DEVICES", ("/nonexistent/accel0",))
    with pytest.raises(ValueError, match="Pass --tpu=NAME"):
        base.check_distribution("tpu")
    base.check_distribution("tpu", tpu="my-tpu")  # Named: left to the TPU runtime.
    monkeypatch.setenv(base.TPU_NAME_ENV, "my-tpu")
    base.check_distribution("tpu")


def test_an_unreachable_tpu_says_what_to_pass(monkeypatch):
    monkeypatch.setattr(base, "_TPU_STRATEGY", None)

    def unreachable(tpu):
        raise ValueError("Could not lookup TPU metadata")

    with pytest.raises(ValueError, match="No TPU reachable at 'far-away'.*Pass --tpu=NAME"):
        base.strategy("tpu", "far-away", connect_tpu=unreachable)


def test_the_tpu_path_builds_a_bfloat16_child_with_a_stand_in_tpu(monkeypatch):
    monkeypatch.setattr(base, "_TPU_STRATEGY", None)
    seen = []

    def connect(tpu):
        seen.append(tpu)
        return "resolver"

    def stand_in(resolver):
        assert resolver == "resolver"
        return tf.distribute.OneDeviceStrategy("/cpu:0")

    config = convnet.ChildConfig(
        epochs=1, batch_size=16, lr_decay_at=(), mixed_precision=True, distribution="tpu", tpu="v5e"
    )
    where = config.placement(connect_tpu=connect, tpu_strategy=stand_in)
    assert seen == ["v5e"] and where.policy == "mixed_bfloat16" and not where.loss_scaled
    assert config.placement(connect_tpu=connect, tpu_strategy=stand_in).strategy is where.strategy  # Once.
    spec, arch = _tiny_conv()
    result = convnet.train_child(arch, spec, _tiny_images(), config, placement=where)
    assert result.model.get_layer("layer_0_conv").compute_dtype == "bfloat16"
    assert np.isfinite(result.train_loss[0])


def test_static_batches_have_one_shape_and_padding_does_not_change_validation_accuracy():
    data = _tiny_images(n_train=40, n_valid=13)
    train = data.train_dataset(16, seed=1, static=True)
    assert train.element_spec[0].shape[0] == 16  # Known statically: one trace, one XLA compile.
    assert sum(int(x.shape[0]) for x, _ in train) == 32  # The partial batch is dropped.
    valid = data.valid_dataset(16, static=True)
    assert valid.element_spec[0].shape[0] == 16
    weights = np.concatenate([w.numpy() for _, _, w in valid])
    assert weights.tolist() == [1.0] * 13 + [0.0] * 3
    spec, arch = _tiny_conv()
    model = convnet.build_convnet(arch, spec, data.input_shape, data.num_classes)
    convnet.compile_child(model, 0.1)
    padded = model.evaluate(valid, verbose=0, return_dict=True)["accuracy"]
    plain = model.evaluate(data.valid_dataset(16), verbose=0, return_dict=True)["accuracy"]
    assert padded == pytest.approx(plain, abs=1e-7)
    logits = model.predict(data.valid_dataset(16), verbose=0)
    assert plain == pytest.approx(float(np.mean(logits.argmax(-1) == data.y_valid)), abs=1e-7)


def test_steps_per_execution_reaches_compile_and_is_checked():
    spec, arch = _tiny_conv()
    model = convnet.build_convnet(arch, spec, (8, 8, 3), 3)
    convnet.compile_child(model, 0.1, steps_per_execution=4)
    assert model.steps_per_execution == 4
    with pytest.raises(ValueError, match="steps_per_execution must be a positive integer"):
        convnet.ChildConfig(steps_per_execution=0)
