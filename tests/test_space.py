"""The search-space language: validation, activity conditions, JSON round trip."""

import json

import pytest

from conftest import conditional_space, layered_space
from nas_tf import space as space_lib
from nas_tf.controller import Controller


def test_sampled_architectures_round_trip_through_json_exactly():
    for space in (layered_space(), conditional_space()):
        controller = Controller(space, seed=3)
        for arch in controller.sample(16, depth=3 if space.uses_depth else None):
            text = arch.to_json()
            back = space.architecture_from_json(text)
            assert back == arch
            assert back.values == arch.values
            assert back.to_json() == text


def test_json_keeps_value_types_apart():
    space = space_lib.Space((space_lib.Categorical("x", (1, 1.5, "1", True)),))
    for value in (1, 1.5, "1", True):
        arch = space.architecture_from_json(space_lib.Architecture({"x": value}).to_json())
        assert type(arch["x"]) is type(value) and arch["x"] == value


def test_space_config_round_trip_and_printing():
    for space in (layered_space(), conditional_space()):
        config = json.loads(json.dumps(space.to_config()))
        assert space_lib.Space.from_config(config) == space
        assert "anchor over" in str(space)


def test_activity_conditions():
    space = conditional_space()
    linear = space.validate(
        space_lib.Architecture({"model": "linear", "rate": 0.1, "a0": (), "a2": (1, 0)})
    )
    assert "units" not in linear.values and "a1" not in linear.values
    dense = space.validate(
        space_lib.Architecture(
            {"model": "dense", "units": 8, "rate": 0.2, "a0": (), "a1": (1,), "a2": (0, 1)}
        )
    )
    assert dense["units"] == 8
    deep = layered_space(depth=3)
    assert not deep.is_active(deep["layer_2/size"], {}, depth=2)
    assert deep.is_active(deep["layer_2/size"], {}, depth=3)


@pytest.mark.parametrize(
    "values, depth, message",
    [
        ({"model": "linear", "rate": 0.3, "a0": (), "a2": (0, 0)}, None, "'rate': value 0.3"),
        ({"model": "linear", "rate": 0.1, "a0": ()}, None, "'a2' is active but has no value"),
        ({"model": "linear", "units": 8, "rate": 0.1, "a0": (), "a2": (0, 0)}, None, "'units' is inactive"),
        ({"model": "linear", "rate": 0.1, "a0": (), "a2": (1,)}, None, "Anchor 'a2'"),
        ({"model": "linear", "rate": 0.1, "a0": (), "a2": (2, 0)}, None, "flag 2"),
        ({"model": "linear", "rate": 0.1, "a0": (), "a2": (0, 1)}, None, "source 'a1' is inactive"),
        ({"model": "linear", "rate": 0.1, "a0": (), "a2": (0, 0), "zzz": 1}, None, "no decision 'zzz'"),
        ({"model": True, "rate": 0.1, "a0": (), "a2": (0, 0)}, None, "'model': value True"),
    ],
)
def test_malformed_architectures_name_the_decision_and_value(values, depth, message):
    with pytest.raises(space_lib.ArchitectureError, match=message):
        conditional_space().validate(space_lib.Architecture(values, depth))


def test_bad_json_and_bad_depth_are_rejected():
    space = layered_space(depth=2)
    with pytest.raises(space_lib.ArchitectureError, match="not valid JSON"):
        space.architecture_from_json("{oops")
    with pytest.raises(space_lib.ArchitectureError, match="JSON object"):
        space.architecture_from_json("[1, 2]")
    with pytest.raises(space_lib.ArchitectureError, match="positive integer depth"):
        space.architecture_from_json('{"depth": null, "values": {}}')


def test_bad_spaces_are_rejected():
    with pytest.raises(ValueError, match="repeated"):
        space_lib.Space((space_lib.Categorical("a", (1,)), space_lib.Categorical("a", (2,))))
    with pytest.raises(ValueError, match="not an earlier anchor"):
        space_lib.Space((space_lib.Anchor("b", ("a",)),))
    with pytest.raises(ValueError, match="share kind"):
        space_lib.Space(
            (space_lib.Categorical("a", (1, 2), kind="k"), space_lib.Categorical("b", (1, 3), kind="k"))
        )
    with pytest.raises(ValueError, match="not an earlier categorical"):
        space_lib.Space((space_lib.Categorical("a", (1,), when=(space_lib.When("b", (1,)),)),))
    with pytest.raises(ValueError, match="repeats value"):
        space_lib.Categorical("a", (1, 1))
    with pytest.raises(ValueError, match="must be bool, int, float or str"):
        space_lib.Categorical("a", ((1, 2),))
    for depth in (-1, 1.5, True):
        with pytest.raises(ValueError, match=r"'a': min_depth must be an integer >= 0"):
            space_lib.Space((space_lib.Categorical("a", (1, 2), min_depth=depth),))
    with pytest.raises(KeyError, match="has no decision 'b'"):
        space_lib.Space((space_lib.Categorical("a", (1, 2)),))["b"]
