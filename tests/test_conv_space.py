"""The CIFAR-10 search spaces (Zoph & Le 2017, sec. 4.1) and the depth curriculum."""

import pytest

import nas_tf
from nas_tf import hp_space
from nas_tf import space as space_lib
from nas_tf.spaces import (
    ConvSpaceSpec,
    DepthCurriculum,
    cifar10_v1,
    cifar10_v2,
    cifar10_v3,
    get_space,
)


def _layer_kinds(spec, i):
    return [d.kind for d in spec.space.decisions if d.name.startswith(f"layer_{i}/")]


@pytest.mark.parametrize(
    "factory, depth, per_layer, pools",
    [
        (cifar10_v1, 15, ["filter_height", "filter_width", "num_filters", "anchor"], ()),
        (
            cifar10_v2,
            20,
            ["filter_height", "filter_width", "stride_height", "stride_width"]
            + ["num_filters", "anchor"],
            (),
        ),
        (cifar10_v3, 13, ["filter_height", "filter_width", "num_filters", "anchor"], (13, 24)),
    ],
)
def test_paper_spaces(factory, depth, per_layer, pools):
    spec = factory()
    space = spec.space
    assert spec.depth == depth and space.max_depth == depth
    assert spec.pool_at == pools
    v3 = factory is cifar10_v3  # 13 predicted blocks of 3 convolutions, filters 6..36.
    assert spec.num_convolutions() == (39 if v3 else depth)
    assert len(space.decisions) == depth * len(per_layer)
    for i in range(depth):
        assert _layer_kinds(spec, i) == per_layer
    for d in space.decisions:
        i = int(d.name.split("/")[0].split("_")[1])
        assert d.min_depth == i + 1
        if isinstance(d, space_lib.Anchor):
            assert d.sources == tuple(f"layer_{j}/anchor" for j in range(i))
        elif d.kind in ("filter_height", "filter_width"):
            assert d.values == (1, 3, 5, 7)
        elif d.kind == "num_filters":
            assert d.values == ((6, 12, 24, 36) if v3 else (24, 36, 48, 64))
        else:
            assert d.values == (1, 2, 3)


def test_overrides_and_registry():
    spec = get_space("cifar10_v2", depth=3, filter_sizes=(1, 3), num_filters=(2, 4), strides=(1, 2))
    assert spec == cifar10_v2(depth=3, filter_sizes=(1, 3), num_filters=(2, 4), strides=(1, 2))
    assert spec.space["layer_2/num_filters"].values == (2, 4)
    # None keeps the default (unset flags pass straight through); () turns strides off.
    assert get_space("cifar10_v2", depth=None, strides=None) == cifar10_v2()
    assert get_space("cifar10_v2", strides=()).strides is None
    assert get_space("cifar10_v1", strides=(1, 2)).space["layer_0/stride_width"].values == (1, 2)
    assert get_space("cifar10_v3", pool_at=()).pool_at == ()


def test_v3_pools_scale_with_depth():
    assert cifar10_v3().pool_at == (13, 24)
    assert cifar10_v3(depth=8, block_size=1).pool_at == (3, 5)  # 8 convolutions.
    assert cifar10_v3(depth=4).pool_at == (4, 7)  # 12 convolutions: round(13 * 12 / 39), ...
    assert cifar10_v3(depth=2, block_size=1).pool_at == (1,)
    assert cifar10_v3(depth=8, pool_at=(2,)).pool_at == (2,)
    spec = cifar10_v3()
    # Depth counts blocks; boundaries count convolutions. A boundary after the
    # last convolution is ignored: 4 blocks are 12 convolutions, 5 are 15.
    assert spec.pool_positions(4) == ()
    assert spec.pool_positions(5) == (13,)
    assert spec.pool_positions(8) == (13,)  # 24 convolutions: the boundary would end the net.
    assert spec.pool_positions(9) == (13, 24)
    assert spec.pool_positions() == (13, 24)
    with pytest.raises(ValueError, match="block_size must be a positive integer"):
        cifar10_v3(block_size=0)
    with pytest.raises(ValueError, match="no setting 'block_size'|unexpected keyword"):
        get_space("cifar10_v1", block_size=2)


@pytest.mark.parametrize(
    "name, overrides, match",
    [
        ("cifar10_v4", {}, "Unknown search space 'cifar10_v4'.*cifar10_v1"),
        ("cifar10_v1", {"layers": 3}, "no setting 'layers'"),
        ("cifar10_v1", {"depth": 0}, "depth must be a positive integer"),
        ("cifar10_v1", {"filter_sizes": (3, 0)}, "filter_sizes must hold positive"),
        ("cifar10_v1", {"num_filters": (4, 4)}, "num_filters repeats"),
        ("cifar10_v2", {"strides": (1, 2.5)}, "strides must hold positive"),
        ("cifar10_v1", {"pool_at": (15,)}, "pool_at 15 must lie between layers"),
        ("cifar10_v3", {"pool_at": (39,)}, "pool_at 39 must lie between layers, below 39"),
        ("cifar10_v1", {"num_filters": ()}, "num_filters must not be empty"),
    ],
)
def test_get_space_errors(name, overrides, match):
    with pytest.raises(ValueError, match=match):
        get_space(name, **overrides)


def test_spec_config_round_trip():
    for spec in (cifar10_v1(depth=2), cifar10_v2(depth=3), cifar10_v3()):
        again = ConvSpaceSpec.from_config(spec.to_config())
        assert again == spec
        assert again.space == spec.space
        assert space_lib.Space.from_config(spec.space.to_config()) == spec.space
    old = {k: v for k, v in cifar10_v1().to_config().items() if k != "block_size"}
    assert ConvSpaceSpec.from_config(old).block_size == 1  # Configs written before blocks.


def test_keras_tuner_round_trip():
    spec = cifar10_v2(depth=3)
    hps = hp_space.space_to_hyperparameters(spec.space)
    space, _ = hp_space.space_from_hyperparameters(hps, name=spec.name)

    def without_kind(config):  # Keras Tuner has no notion of shared kinds.
        return [{k: v for k, v in d.items() if k != "kind"} for d in config["decisions"]]

    assert without_kind(space.to_config()) == without_kind(spec.space.to_config())


def test_controller_samples_are_valid_architectures():
    spec = cifar10_v2(depth=4, num_filters=(2, 4))
    controller = nas_tf.Controller(spec.space, seed=1)
    for depth in (1, 4):
        for arch in controller.sample(3, depth=depth):
            assert arch.depth == depth
            assert spec.space.architecture_from_json(arch.to_json()) == arch
            assert sum(1 for name in arch.values if name.endswith("/anchor")) == depth


def test_depth_curriculum_paper_schedule():
    # Zoph & Le 2017, sec. 4.1: 6 layers, +2 every 1,600 architectures, 12,800 in all.
    schedule = DepthCurriculum()
    assert [schedule(n) for n in (0, 1599, 1600, 3199, 3200, 12799)] == [6, 6, 8, 8, 10, 20]
    assert DepthCurriculum(max_depth=15)(12799) == 15
    assert DepthCurriculum(start=2, step=1, every=3)(7) == 4
    with pytest.raises(ValueError):
        DepthCurriculum(every=0)
    with pytest.raises(ValueError):
        schedule(-1)


def test_depth_curriculum_drives_the_oracle(tmp_path):
    spec = cifar10_v1(depth=4, filter_sizes=(1, 3), num_filters=(2, 4))
    oracle = nas_tf.NASRLOracle(
        objective="val_accuracy",
        max_trials=5,
        space=spec.space,
        depth_schedule=DepthCurriculum(start=1, step=1, every=2),
        seed=1,
    )
    oracle._set_project_dir(str(tmp_path), "project")
    oracle.verbose = 0
    depths = []
    for i in range(5):
        trial = oracle.create_trial(f"tuner{i}")
        depths.append(trial.hyperparameters.get(nas_tf.hp_space.DEPTH))
        oracle.update_trial(trial.trial_id, {"val_accuracy": 0.5})
        oracle.end_trial(trial)
    assert depths == [1, 1, 2, 2, 3]
    # The oracle keeps the space's kinds: one softmax head per decision type.
    kinds = {d.kind for d in oracle.controller.space.decisions}
    assert kinds == {"filter_height", "filter_width", "num_filters", "anchor"}


def test_v3_quick_flags_sample_39_layer_networks_with_pooling():
    import keras
    import numpy as np

    import nas_tf
    from nas_tf import train
    from nas_tf.children import convnet

    train.FLAGS.unparse_flags()
    try:
        train.FLAGS(["train", "--flagfile=experiments/cifar_v3_quick.flags"])
        config = train.config_from_flags()
    finally:
        train.FLAGS.unparse_flags()
    spec = get_space(config.space, **config.space_overrides)
    assert (spec.depth, spec.block_size, spec.pool_at) == (13, 3, (13, 24))
    assert spec.num_filters == (2, 4) and spec.num_convolutions() == 39
    # The compressed curriculum reaches the full depth within the budget.
    depths = [min(config.curriculum(n), spec.depth) for n in range(config.max_trials)]
    assert depths == [9, 9, 11, 11, 13, 13, 13, 13]
    (arch,) = nas_tf.Controller(spec.space, seed=3).sample(1, depth=13)
    layers = convnet.decode(arch, spec)
    assert len(layers) == 39 and [layer.stage for layer in layers].count(0) == 13
    assert [layer.stage for layer in layers][24:] == [2] * 15
    for i in range(13):  # Dense blocks: convolution k sees the block's 0..k-1.
        block_inputs = layers[3 * i].inputs or (-1,)
        assert layers[3 * i + 1].inputs == block_inputs + (3 * i,)
        assert layers[3 * i + 2].inputs == block_inputs + (3 * i, 3 * i + 1)
        flags = arch[f"layer_{i}/anchor"]
        assert layers[3 * i].inputs == tuple(3 * j + 2 for j, f in enumerate(flags) if f)
    model = convnet.build_convnet(arch, spec, (8, 8, 1), num_classes=10)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 39
    assert model.get_layer("layer_12_relu").output.shape[1:3] == (8, 8)
    assert model.get_layer("layer_13_relu").output.shape[1:3] == (4, 4)
    assert model.get_layer("layer_24_relu").output.shape[1:3] == (2, 2)
    assert model.get_layer("global_pool").input.shape[1:3] == (2, 2)
    assert model(np.zeros((1, 8, 8, 1), "float32")).shape == (1, 10)


@pytest.mark.parametrize("flagfile, depth", [("cifar", 15), ("cifar_v2", 20), ("cifar_v3", 13)])
def test_paper_flag_files_reach_full_depth_within_the_papers_budget(flagfile, depth):
    from nas_tf import train

    train.FLAGS.unparse_flags()
    try:
        train.FLAGS(["train", f"--flagfile=experiments/{flagfile}.flags"])
        config = train.config_from_flags()
    finally:
        train.FLAGS.unparse_flags()
    spec = get_space(config.space, **config.space_overrides)
    assert spec.depth == depth and config.max_trials == 12_800
    assert config.preset == "paper" and not config.reuse_rewards and config.max_resamples == 0
    reached = next(n for n in range(config.max_trials) if config.curriculum(n) >= depth)
    assert reached == {15: 8000, 20: 11200, 13: 6400}[depth]
    if flagfile == "cifar_v3":
        assert (spec.num_filters, spec.pool_at, spec.num_convolutions()) == ((6, 12, 24, 36), (13, 24), 39)
