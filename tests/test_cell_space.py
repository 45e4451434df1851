"""The recurrent-cell search space: structure, size, descriptions, JSON round trip."""

import json

import pytest

from nas_tf import space as space_lib
from nas_tf.controller import Controller
from nas_tf.spaces import cell as cell_space


def test_base8_space_has_the_papers_decisions_and_size():
    space = cell_space.ptb_cell()
    assert space.name == "ptb_cell_base8"
    # 15 nodes x (combine, activation), cell inject x 2, cell indices x 2.
    assert len(space.decisions) == 2 * 15 + 4
    kinds = {d.kind for d in space.decisions}
    assert kinds == {"cell_combine", "cell_activation", "cell_index"}
    assert space["node_3_combine"].values == ("add", "elem_mult")
    assert space["node_14_activation"].values == ("identity", "tanh", "sigmoid", "relu")
    assert space["cell_index_out"].values == tuple(range(15))
    # Sec. 4.2: "about 6 x 10^16" cells.
    assert cell_space.space_size(8) == 8**15 * 8 * 15 * 15
    assert 5.5e16 < cell_space.space_size(8) < 6.5e16
    # Node decisions come first, in node order, then inject, then indices (Figure 5).
    assert space.names[:4] == (
        "node_0_combine", "node_0_activation", "node_1_combine", "node_1_activation"
    )  # fmt: skip
    assert space.names[-4:] == (
        "inject_combine", "inject_activation", "cell_index_out", "cell_index_inject"
    )  # fmt: skip


def test_tree_numbering():
    assert [cell_space.children(2, i) for i in range(3)] == [None, None, (0, 1)]
    assert [cell_space.children(8, i) for i in range(8, 15)] == [
        (0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11), (12, 13)
    ]  # fmt: skip
    # Every non-root node feeds exactly one parent.
    for base in (2, 4, 8, 16):
        n = cell_space.num_nodes(base)
        fed = sorted(k for i in range(n) for k in (cell_space.children(base, i) or ()))
        assert fed == list(range(n - 1))


@pytest.mark.parametrize("base", [0, 1, 3, 6, 2.0, True])
def test_bad_bases_are_refused(base):
    with pytest.raises(ValueError, match="power of two"):
        cell_space.ptb_cell(base)


def test_description_round_trips_through_architecture_json_and_config():
    for description in (cell_space.paper_example(), cell_space.lstm_like()):
        arch = description.to_architecture()
        space = cell_space.ptb_cell(description.base)
        back = space.architecture_from_json(arch.to_json())
        assert back == arch
        assert cell_space.CellDescription.from_architecture(back) == description
        config = json.loads(json.dumps(description.to_config()))
        assert cell_space.CellDescription.from_config(config) == description


def test_sampled_architectures_parse_and_round_trip():
    space = cell_space.ptb_cell(8)
    controller = Controller(space, seed=1)
    for arch in controller.sample(8):
        text = arch.to_json()
        back = space.architecture_from_json(text)
        assert back == arch and back.to_json() == text
        description = cell_space.CellDescription.from_architecture(back, space)
        assert description.base == 8
        assert description.to_architecture() == arch


def test_paper_example_reads_like_the_paper():
    text = str(cell_space.paper_example())
    assert "a_0 = tanh(add(W x_t, U h_(t-1))); a_0 <- relu(add(a_0, c_(t-1)))" in text
    assert "a_2 = sigmoid(elem_mult(a_0, a_1))" in text
    assert "c_t = value of node 1 before its activation" in text


def test_bad_descriptions_and_architectures_are_refused():
    good = cell_space.paper_example()
    with pytest.raises(ValueError, match="combination 'sub'"):
        cell_space.CellDescription((("sub", "tanh"),) * 3, good.inject, 0, 1)
    with pytest.raises(ValueError, match="activation 'elu'"):
        cell_space.CellDescription(good.nodes, ("add", "elu"), 0, 1)
    with pytest.raises(ValueError, match="memory_node 3"):
        cell_space.CellDescription(good.nodes, good.inject, 0, 3)
    with pytest.raises(ValueError, match="2 \\* base - 1"):
        cell_space.CellDescription(good.nodes[:2], good.inject, 0, 1)
    values = dict(good.to_architecture().values)
    values["cell_index_inject"] = 7
    with pytest.raises(space_lib.ArchitectureError, match="cell_index_inject"):
        cell_space.CellDescription.from_architecture(space_lib.Architecture(values))
    del values["node_2_combine"]
    with pytest.raises(space_lib.ArchitectureError):
        cell_space.CellDescription.from_architecture(space_lib.Architecture(values))


# -- control experiment 1: max and sin added (sec. 4.2) ----------------------------


def test_default_space_is_the_papers_unchanged():
    assert cell_space.COMBINATIONS == ("add", "elem_mult")
    assert cell_space.ACTIVATIONS == ("identity", "tanh", "sigmoid", "relu")
    assert cell_space.function_set() == (cell_space.COMBINATIONS, cell_space.ACTIVATIONS)
    default, paper = cell_space.ptb_cell(8), cell_space.ptb_cell(8, "paper")
    assert default.name == paper.name == "ptb_cell_base8"
    assert [(d.name, d.values, d.kind) for d in default.decisions] == [
        (d.name, d.values, d.kind) for d in paper.decisions]  # fmt: skip
    assert cell_space.space_size(8, "paper") == cell_space.space_size(8) == 8**15 * 8 * 15 * 15


def test_extended_space_appends_max_and_sin():
    space = cell_space.ptb_cell(8, "extended")
    assert space.name == "ptb_cell_base8_extended"
    assert space.names == cell_space.ptb_cell(8).names
    for d in space.decisions:
        if d.kind == cell_space.COMBINE_KIND:
            assert d.values == ("add", "elem_mult", "max")
        elif d.kind == cell_space.ACTIVATION_KIND:
            assert d.values == ("identity", "tanh", "sigmoid", "relu", "sin")
        else:
            assert d.values == tuple(range(15))
    # The paper's choices keep their indices; max and sin come last.
    paper = cell_space.ptb_cell(8)
    for d in paper.decisions:
        assert space[d.name].values[: d.num_choices] == d.values
    assert cell_space.space_size(8, "extended") == 15**15 * 15 * 15 * 15 == 15**18
    assert cell_space.space_size(2, "extended") == 15**3 * 15 * 3 * 3
    assert cell_space.ALL_COMBINATIONS == ("add", "elem_mult", "max")
    assert cell_space.ALL_ACTIVATIONS == ("identity", "tanh", "sigmoid", "relu", "sin")
    with pytest.raises(ValueError, match="Cell functions must be one of"):
        cell_space.ptb_cell(8, "more")
    with pytest.raises(ValueError, match="Cell functions must be one of"):
        cell_space.space_size(8, None)


def extended_example():
    """A base-2 cell that uses max and sin, in a node and in the cell inject."""
    return cell_space.CellDescription(
        nodes=(("max", "sin"), ("elem_mult", "relu"), ("add", "sin")),
        inject=("max", "tanh"), inject_node=1, memory_node=0)


def test_max_and_sin_round_trip_through_json_config_and_description():
    description = extended_example()
    assert description.functions == "extended"
    assert cell_space.paper_example().functions == "paper"
    assert "a_0 = sin(max(W x_t, U h_(t-1)))" in str(description)
    arch = description.to_architecture()
    space = cell_space.ptb_cell(2, "extended")
    back = space.architecture_from_json(arch.to_json())
    assert back == arch
    assert cell_space.CellDescription.from_architecture(back, space) == description
    # Without a space: the smallest function set that holds the cell.
    assert cell_space.CellDescription.from_architecture(back) == description
    config = json.loads(json.dumps(description.to_config()))
    assert cell_space.CellDescription.from_config(config) == description
    # The paper's space refuses max and sin.
    with pytest.raises(space_lib.ArchitectureError, match="'max' is not one of"):
        cell_space.CellDescription.from_architecture(arch, cell_space.ptb_cell(2))
    # Paper cells are points of the extended space too, with the same choice indices.
    paper_arch = cell_space.paper_example().to_architecture()
    assert cell_space.CellDescription.from_architecture(paper_arch, space) == (
        cell_space.paper_example())
    for name, value in paper_arch.values.items():
        assert space[name].index(value) == cell_space.ptb_cell(2)[name].index(value)


def test_extended_controller_samples_parse():
    space = cell_space.ptb_cell(2, "extended")
    controller = Controller(space, seed=2)
    seen = set()
    for arch in controller.sample(16):
        description = cell_space.CellDescription.from_architecture(arch, space)
        assert description.to_architecture() == arch
        seen |= {v for n in description.nodes + (description.inject,) for v in n}
    assert {"max", "sin"} & seen
