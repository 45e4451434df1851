"""The recurrent-cell search space of the Penn Treebank experiment.

Zoph & Le 2017, sec. 3.4 and Figure 5. A cell is a complete binary tree of
computation steps. Each of the `base` leaves combines two projections of the
inputs, W_k x_t and U_k h_(t-1); each inner node combines the outputs of its two
children. For every node the controller picks a combination method in
{add, elem_mult} and an activation in {identity, tanh, sigmoid, relu}. The root's
output is h_t.

The paper's control experiment 1 (sec. 4.2, "adding more functions in the
search space") adds `max` to the combinations and `sin` to the activations:
`ptb_cell(base, functions="extended")`. The function sets are named in
`FUNCTIONS`; the extended set appends its values after the paper's, so a
choice index means the same function in both spaces.

Two further predictions give the cell a memory, as an LSTM's memory cell does:

* "cell inject": a combination and an activation that merge c_(t-1) into the
  output of one node: a_i <- activation(combine(a_i, c_(t-1)));
* "cell indices": which node c_(t-1) is injected into, and which node's value
  *before its activation* becomes c_t.

Nodes are numbered leaves first, then level by level towards the root, as in
the paper's base-2 example (leaves 0 and 1, root 2). With base 8 there are 15
nodes, and both cell indices range over all of them, which gives
(2 * 4)^15 * (2 * 4) * 15^2 = 6.3e16 cells: the "about 6 x 10^16" of sec. 4.2.

`ptb_cell(base)` is the space (plain data); `CellDescription` is one parsed
cell, independent of decision names, for the child builder and for tests. A
description accepts every function of every set (`ALL_COMBINATIONS`,
`ALL_ACTIVATIONS`); the space it is validated against decides which it may hold.
"""

import dataclasses
from typing import Mapping, NamedTuple, Optional, Tuple

from nas_tf import space as space_lib

# Zoph & Le 2017, sec. 3.4.
COMBINATIONS = ("add", "elem_mult")
ACTIVATIONS = ("identity", "tanh", "sigmoid", "relu")


class Functions(NamedTuple):
    """A named set of the cell's functions: the values of its combine and activation decisions."""

    combinations: Tuple[str, ...]
    activations: Tuple[str, ...]


PAPER = "paper"
EXTENDED = "extended"
# Function set name -> its functions. "extended" is the paper's control
# experiment 1 (sec. 4.2): `max` (element-wise maximum) added to the
# combinations and `sin` to the activations, after the paper's values.
FUNCTIONS = {
    PAPER: Functions(COMBINATIONS, ACTIVATIONS),
    EXTENDED: Functions(COMBINATIONS + ("max",), ACTIVATIONS + ("sin",)),
}
# Every function some set holds (what a `CellDescription` may name).
ALL_COMBINATIONS = tuple(dict.fromkeys(c for f in FUNCTIONS.values() for c in f.combinations))
ALL_ACTIVATIONS = tuple(dict.fromkeys(a for f in FUNCTIONS.values() for a in f.activations))

COMBINE_KIND = "cell_combine"
ACTIVATION_KIND = "cell_activation"
INDEX_KIND = "cell_index"

INJECT_COMBINE = "inject_combine"
INJECT_ACTIVATION = "inject_activation"
# "Cell indices": the node whose pre-activation value becomes c_t, and the node
# that c_(t-1) is injected into (the first and second element in Figure 5).
MEMORY_OUT = "cell_index_out"
MEMORY_INJECT = "cell_index_inject"


def num_nodes(base: int) -> int:
    """Nodes of a complete binary tree with `base` leaves."""
    return 2 * base - 1


def check_base(base: int) -> int:
    """Returns `base` if it is a power of two >= 2, else raises ValueError."""
    if isinstance(base, bool) or not isinstance(base, int) or base < 2 or base & (base - 1):
        raise ValueError(f"Cell base must be a power of two >= 2, got {base!r}.")
    return base


def children(base: int, node: int) -> Optional[Tuple[int, int]]:
    """The two children of `node`, or None for a leaf.

    Levels are stored one after another, leaves first: with base 8, nodes 0-7
    are leaves, 8 = (0, 1), 9 = (2, 3), ..., 12 = (8, 9), 13 = (10, 11),
    14 = (12, 13) is the root.
    """
    if not 0 <= node < num_nodes(base):
        raise ValueError(f"Node {node} is outside a base-{base} tree.")
    start, width = 0, base
    while node >= start + width:
        start, width = start + width, width // 2
    if start == 0:
        return None
    left = start - 2 * width + 2 * (node - start)
    return left, left + 1


def node_decision_names(node: int) -> Tuple[str, str]:
    return f"node_{node}_combine", f"node_{node}_activation"


def function_set(name: str = PAPER) -> Functions:
    """The function set called `name` ("paper" or "extended"; ValueError naming them otherwise)."""
    if not isinstance(name, str) or name not in FUNCTIONS:
        raise ValueError(
            f"Cell functions must be one of {sorted(FUNCTIONS)}, got {name!r}."
        )
    return FUNCTIONS[name]


def ptb_cell(base: int = 8, functions: str = PAPER) -> space_lib.Space:
    """The recurrent-cell search space with `base` leaves (8 in the paper).

    The controller predicts, in order (Figure 5): combination and activation of
    every tree node, leaves first; then the cell inject combination and
    activation; then the two cell indices. Decisions of one type share a kind,
    so all nodes share the controller's softmax heads.

    Args:
      base: number of leaves, a power of two (Zoph & Le 2017, sec. 4.2: 8).
      functions: the `FUNCTIONS` set the nodes choose from: "paper" (add,
        elem_mult; identity, tanh, sigmoid, relu) or "extended" (also max and
        sin: the paper's control experiment 1).

    Returns:
      A `Space` named `ptb_cell_base{base}` ("paper") or
      `ptb_cell_base{base}_{functions}`.
    """
    check_base(base)
    combinations, activations = function_set(functions)
    n = num_nodes(base)
    decisions = []
    for node in range(n):
        combine, activation = node_decision_names(node)
        decisions.append(space_lib.Categorical(combine, combinations, kind=COMBINE_KIND))
        decisions.append(space_lib.Categorical(activation, activations, kind=ACTIVATION_KIND))
    decisions.append(space_lib.Categorical(INJECT_COMBINE, combinations, kind=COMBINE_KIND))
    decisions.append(space_lib.Categorical(INJECT_ACTIVATION, activations, kind=ACTIVATION_KIND))
    nodes = tuple(range(n))
    decisions.append(space_lib.Categorical(MEMORY_OUT, nodes, kind=INDEX_KIND))
    decisions.append(space_lib.Categorical(MEMORY_INJECT, nodes, kind=INDEX_KIND))
    name = f"ptb_cell_base{base}" + ("" if functions == PAPER else f"_{functions}")
    return space_lib.Space(tuple(decisions), name=name)


def space_size(base: int = 8, functions: str = PAPER) -> int:
    """Number of distinct cells in `ptb_cell(base, functions)`.

    6.3e16 for base 8 and the paper's functions; (3 * 5)^16 * 15^2 = 15^18
    = 1.5e21 with the extended ones.
    """
    n = num_nodes(check_base(base))
    combinations, activations = function_set(functions)
    per_node = len(combinations) * len(activations)
    return per_node**n * per_node * n * n


def smallest_functions(combinations, activations) -> Optional[str]:
    """The first (smallest) `FUNCTIONS` set holding all the given functions; None if none does."""
    try:
        used_c, used_a = set(combinations), set(activations)
    except TypeError:  # An unhashable value (a list in a JSON file) is no function.
        return None
    for name, fs in FUNCTIONS.items():
        if used_c <= set(fs.combinations) and used_a <= set(fs.activations):
            return name
    return None


class Node(NamedTuple):
    """One tree node: how it combines its two inputs, then its activation."""

    combine: str
    activation: str


@dataclasses.dataclass(frozen=True)
class CellDescription:
    """One recurrent cell, parsed from an architecture or written by hand.

    Attributes:
      nodes: (combine, activation) per node, leaves first (see `children`).
      inject: (combine, activation) that merge c_(t-1) into `inject_node`.
      inject_node: the node whose output c_(t-1) is merged into.
      memory_node: the node whose value before its activation becomes c_t.
    """

    nodes: Tuple[Node, ...]
    inject: Node
    inject_node: int
    memory_node: int

    def __post_init__(self):
        nodes = tuple(Node(*n) for n in self.nodes)
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "inject", Node(*self.inject))
        base = (len(nodes) + 1) // 2
        if len(nodes) != num_nodes(base):
            raise ValueError(f"A cell tree has 2 * base - 1 nodes; got {len(nodes)}.")
        check_base(base)
        for i, node in enumerate(nodes + (self.inject,)):
            where = f"node {i}" if i < len(nodes) else "cell inject"
            if node.combine not in ALL_COMBINATIONS:
                raise ValueError(
                    f"Cell {where}: combination {node.combine!r} is not one of {ALL_COMBINATIONS}."
                )
            if node.activation not in ALL_ACTIVATIONS:
                raise ValueError(
                    f"Cell {where}: activation {node.activation!r} is not one of {ALL_ACTIVATIONS}."
                )
        for name in ("inject_node", "memory_node"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"Cell {name} must be an int, got {value!r}.")
            if not 0 <= value < len(nodes):
                raise ValueError(f"Cell {name} {value} is outside nodes 0..{len(nodes) - 1}.")

    @property
    def base(self) -> int:
        return (len(self.nodes) + 1) // 2

    @property
    def root(self) -> int:
        return len(self.nodes) - 1

    @property
    def functions(self) -> str:
        """The smallest `FUNCTIONS` set holding this cell's functions ("paper" or "extended")."""
        nodes = self.nodes + (self.inject,)
        return smallest_functions([n.combine for n in nodes], [n.activation for n in nodes])

    def children(self, node: int) -> Optional[Tuple[int, int]]:
        return children(self.base, node)

    # -- architectures ---------------------------------------------------------

    @classmethod
    def from_architecture(
        cls, arch: space_lib.Architecture, space: Optional[space_lib.Space] = None
    ) -> "CellDescription":
        """Parses an architecture of `ptb_cell(base, functions)`.

        Args:
          arch: the architecture.
          space: the space to validate against (`ptb_cell(base, "extended")`
            for a cell of control experiment 1); by default `ptb_cell(base,
            functions)` with the base implied by the architecture's node
            decisions and the smallest function set that holds its values (a
            cell with max or sin: "extended").

        Raises:
          ArchitectureError: if `arch` is not a point of the space.
        """
        values = arch.values
        n = sum(1 for name in values if name.startswith("node_") and name.endswith("_combine"))
        base = (n + 1) // 2
        if space is None:
            try:
                space = ptb_cell(base, _functions_of_values(values))
            except ValueError:
                raise space_lib.ArchitectureError(
                    f"Architecture has {n} cell nodes; a cell tree has 2 * base - 1 "
                    "nodes with base a power of two >= 2."
                ) from None
        values = space.validate(arch).values
        nodes = tuple(
            Node(*(values[name] for name in node_decision_names(i))) for i in range(n)
        )
        return cls(
            nodes=nodes,
            inject=Node(values[INJECT_COMBINE], values[INJECT_ACTIVATION]),
            inject_node=values[MEMORY_INJECT],
            memory_node=values[MEMORY_OUT],
        )

    def to_architecture(self) -> space_lib.Architecture:
        """The architecture of `ptb_cell(self.base, self.functions)` that describes this cell."""
        values = {}
        for i, node in enumerate(self.nodes):
            combine, activation = node_decision_names(i)
            values[combine] = node.combine
            values[activation] = node.activation
        values[INJECT_COMBINE] = self.inject.combine
        values[INJECT_ACTIVATION] = self.inject.activation
        values[MEMORY_OUT] = self.memory_node
        values[MEMORY_INJECT] = self.inject_node
        return space_lib.Architecture(values=values)

    # -- plain-data config (Keras layer configs) -------------------------------

    def to_config(self) -> dict:
        return {
            "nodes": [list(n) for n in self.nodes],
            "inject": list(self.inject),
            "inject_node": self.inject_node,
            "memory_node": self.memory_node,
        }

    @classmethod
    def from_config(cls, config: Mapping) -> "CellDescription":
        return cls(
            nodes=tuple(Node(*n) for n in config["nodes"]),
            inject=Node(*config["inject"]),
            inject_node=int(config["inject_node"]),
            memory_node=int(config["memory_node"]),
        )

    def __str__(self):
        lines = [f"Cell base {self.base}:"]
        for i, node in enumerate(self.nodes):
            kids = self.children(i)
            inputs = "W x_t, U h_(t-1)" if kids is None else f"a_{kids[0]}, a_{kids[1]}"
            line = f"  a_{i} = {node.activation}({node.combine}({inputs}))"
            if i == self.inject_node:
                line += (
                    f"; a_{i} <- {self.inject.activation}"
                    f"({self.inject.combine}(a_{i}, c_(t-1)))"
                )
            lines.append(line)
        lines.append(f"  c_t = value of node {self.memory_node} before its activation")
        lines.append(f"  h_t = a_{self.root}")
        return "\n".join(lines)


def _functions_of_values(values: Mapping) -> str:
    """The smallest `FUNCTIONS` set holding an architecture's combine and activation values.

    The paper's set when none does (the space's validation then names the bad value).
    """
    ends = ("_combine", "_activation")
    names = [n for n in values if n in (INJECT_COMBINE, INJECT_ACTIVATION)
             or (n.startswith("node_") and n.endswith(ends))]
    combinations = [values[n] for n in names if n.endswith(ends[0])]
    activations = [values[n] for n in names if n.endswith(ends[1])]
    return smallest_functions(combinations, activations) or PAPER


def paper_example() -> CellDescription:
    """The base-2 cell worked through in sec. 3.4 (Figure 5) of the paper.

    a_0 = tanh(W1 x + W2 h); a_1 = relu((W3 x) * (W4 h));
    a_0 <- relu(a_0 + c_(t-1)); a_2 = sigmoid(a_0 * a_1) = h_t;
    c_t = (W3 x) * (W4 h), node 1 before its activation.
    """
    return CellDescription(
        nodes=(Node("add", "tanh"), Node("elem_mult", "relu"), Node("elem_mult", "sigmoid")),
        inject=Node("add", "relu"),
        inject_node=0,
        memory_node=1,
    )


def lstm_like() -> CellDescription:
    """A base-4 cell with an LSTM's structure (for tests and as a sanity baseline).

    f = sigmoid(.), g = tanh(.), then c_t = f * c_(t-1) + g (node 4 before its
    tanh), and h_t = tanh(c_t) * sigmoid(a_2 + a_3) with a_2 = sigmoid(.),
    a_3 = tanh(.): forget gate, candidate, memory and an output gate.
    """
    return CellDescription(
        nodes=(
            Node("add", "sigmoid"),  # 0: forget gate f, then f * c_(t-1)
            Node("add", "tanh"),  # 1: candidate g
            Node("add", "sigmoid"),  # 2
            Node("add", "tanh"),  # 3
            Node("add", "tanh"),  # 4: c_t = f * c_(t-1) + g; a_4 = tanh(c_t)
            Node("add", "sigmoid"),  # 5: output gate o = sigmoid(a_2 + a_3)
            Node("elem_mult", "identity"),  # 6: h_t = tanh(c_t) * o
        ),
        inject=Node("elem_mult", "identity"),
        inject_node=0,
        memory_node=4,
    )
