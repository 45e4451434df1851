"""The NAS-Bench-201 cell as a supernet: one weight set per edge and operation.

NAS-Bench-201 (Dong & Yang, ICLR 2020) searches one cell, a 4-node DAG whose 6
edges each carry one of `OPS`; node j is the sum of its incoming edges. The
network is the benchmark's macro skeleton, scaled down by its arguments:

    stem (3x3 conv + BN) -> N cells -> residual reduction (stride 2, 2C) ->
    N cells -> residual reduction (4C) -> N cells -> BN-ReLU -> global pool -> dense

Every cell of the network uses the sampled cell; each cell position has its
own weights for every (edge, operation) pair, as in the benchmark's own
weight-sharing baselines. `nor_conv_kxk` is ReLU -> kxk conv -> BN, `avg_pool_3x3`
pools with stride 1 (padding excluded from the average), `skip_connect` is the
identity and `none` gives zeros.

Each edge is one `tf.switch_case` over its 5 operations, so only the sampled
operation runs. BatchNorm has its own scale and offset per (edge, operation)
and always normalises with the batch's statistics, in training and in
evaluation: moving averages accumulated over many sub-networks describe none
of them (keras-team/keras#8794), and the benchmark's search baselines do the
same (BN without running statistics).

With a fixed code and fresh weights this is the stand-alone network of that
cell (the unused weights are never touched), which is how
`experiments/weight_sharing.py` trains cells on their own.
"""

import functools
import math
from typing import Sequence, Tuple

import numpy as np
import tensorflow as tf

from nas_tf import space as space_lib
from nas_tf.supernets import base

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# (to_node, from_node) of each edge, in the benchmark's cell-string order.
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
EDGE_NAMES = tuple(f"edge_{i}_{j}" for i, j in EDGES)
PARAMETER_FREE = ("none", "skip_connect", "avg_pool_3x3")
BN_EPSILON = 1e-5


def nb201_space() -> space_lib.Space:
    """The cell's space: one categorical decision per edge, values `OPS`."""
    return space_lib.Space(
        tuple(space_lib.Categorical(name, OPS) for name in EDGE_NAMES), name="nb201_cell"
    )


def cellstr(ops: Sequence[str]) -> str:
    """The benchmark's string of a cell, e.g. `|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|`."""
    by_edge = dict(zip(EDGES, ops))
    nodes = []
    for to_node in (1, 2, 3):
        nodes.append("|" + "|".join(f"{by_edge[(to_node, j)]}~{j}" for j in range(to_node)) + "|")
    return "+".join(nodes)


def cell_ops(arch: space_lib.Architecture) -> Tuple[str, ...]:
    """The operation of each edge of `arch`, in `EDGE_NAMES` order."""
    return tuple(arch.values[name] for name in EDGE_NAMES)


def is_parameter_free(ops: Sequence[str]) -> bool:
    """Whether a cell has no convolution (ENAS's collapse on the benchmark is such a cell)."""
    return all(op in PARAMETER_FREE for op in ops)


def _glorot(rng: np.random.Generator, shape) -> tf.Variable:
    fan_in = float(np.prod(shape[:-1]))
    fan_out = float(np.prod(shape[:-2]) * shape[-1])
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return tf.Variable(rng.uniform(-limit, limit, shape).astype(np.float32))


def batch_norm(x, gamma, beta):
    """BatchNorm with the batch's own statistics (see the module docstring)."""
    mean, variance = tf.nn.moments(x, axes=[0, 1, 2])
    return tf.nn.batch_normalization(x, mean, variance, beta, gamma, BN_EPSILON)


class _ConvBN(tf.Module):
    """k x k convolution then batch-statistics BN (with ReLU first if `relu_first`)."""

    def __init__(self, rng, size, c_in, c_out, stride=1, relu_first=True, name=None):
        super().__init__(name=name)
        self.kernel = _glorot(rng, (size, size, c_in, c_out))
        self.gamma = tf.Variable(tf.ones([c_out]))
        self.beta = tf.Variable(tf.zeros([c_out]))
        self.stride, self.relu_first = stride, relu_first

    def __call__(self, x):
        if self.relu_first:
            x = tf.nn.relu(x)
        x = tf.nn.conv2d(x, self.kernel, self.stride, "SAME")
        return batch_norm(x, self.gamma, self.beta)

    def l2(self):
        return tf.reduce_sum(tf.square(self.kernel))


class _Reduction(tf.Module):
    """The benchmark's residual reduction block: two 3x3 convs (stride 2, 1) + pooled 1x1 shortcut."""

    def __init__(self, rng, c_in, c_out, name=None):
        super().__init__(name=name)
        self.a = _ConvBN(rng, 3, c_in, c_out, stride=2)
        self.b = _ConvBN(rng, 3, c_out, c_out)
        self.shortcut = _glorot(rng, (1, 1, c_in, c_out))

    def __call__(self, x):
        short = tf.nn.avg_pool2d(x, 2, 2, "SAME")
        short = tf.nn.conv2d(short, self.shortcut, 1, "SAME")
        return self.b(self.a(x)) + short

    def l2(self):
        return self.a.l2() + self.b.l2() + tf.reduce_sum(tf.square(self.shortcut))


class _PoolReduction(tf.Module):
    """A reduction with no 3x3 convolution: 2x2 average pool, then 1x1 conv + BN to 2C.

    The benchmark's residual block adds two 3x3 convolutions per reduction;
    on a tiny network and easy data they carry the accuracy whatever the cell,
    which is then hard to rank (docs/weight_sharing.md).
    """

    def __init__(self, rng, c_in, c_out, name=None):
        super().__init__(name=name)
        self.conv = _ConvBN(rng, 1, c_in, c_out, relu_first=True)

    def __call__(self, x):
        return self.conv(tf.nn.avg_pool2d(x, 2, 2, "SAME"))

    def l2(self):
        return self.conv.l2()


REDUCTIONS = {"residual": _Reduction, "pool": _PoolReduction}


class NB201Supernet(base.ImageClassifier):
    """The NAS-Bench-201 search network over `nb201_space()` (see the module docstring).

    Args:
      input_shape: (height, width, channels) of the images.
      num_classes: classes of the classifier.
      channels: C, the first stage's width (the benchmark's 16).
      cells_per_stage: N (the benchmark's 5).
      weight_decay: L2 weight of the kernels the sampled network uses.
      reduction: "residual" (the benchmark's block) or "pool" (`_PoolReduction`).
      instrument: count each (cell, edge, operation) branch's runs.
      seed: seeds the initial weights.
    """

    def __init__(self, input_shape=(8, 8, 1), num_classes=10, channels=8, cells_per_stage=1,
                 weight_decay=5e-4, reduction="residual", instrument=False, seed=0):
        super().__init__(nb201_space(), instrument=instrument, name="nb201_supernet")
        self.image_shape = tuple(int(d) for d in input_shape)
        self.num_classes = int(num_classes)
        self.weight_decay = float(weight_decay)
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {sorted(REDUCTIONS)}, got {reduction!r}.")
        rng = np.random.default_rng(seed)
        self.stem = _ConvBN(rng, 3, self.image_shape[-1], channels, relu_first=False)
        self.cells, self.reductions = [], []
        width, names = channels, []
        for stage in range(3):
            if stage:
                self.reductions.append(REDUCTIONS[reduction](rng, width, 2 * width))
                width *= 2
            for _ in range(cells_per_stage):
                cell = len(self.cells)
                self.cells.append([
                    {"nor_conv_1x1": _ConvBN(rng, 1, width, width),
                     "nor_conv_3x3": _ConvBN(rng, 3, width, width)}
                    for _ in EDGES
                ])
                names += [f"cell_{cell}/{e}={op}" for e in EDGE_NAMES for op in OPS]
        self.last_gamma = tf.Variable(tf.ones([width]))
        self.last_beta = tf.Variable(tf.zeros([width]))
        self.dense = _glorot(rng, (width, self.num_classes))
        self.bias = tf.Variable(tf.zeros([self.num_classes]))
        self.declare_branches(names)

    @property
    def code_length(self) -> int:
        return len(EDGES)

    def encode(self, arch: space_lib.Architecture) -> np.ndarray:
        arch = self.space.validate(arch)
        return np.asarray(base.choice_codes(self.space, arch, EDGE_NAMES), np.int32)

    @property
    def input_signature(self):
        return (tf.TensorSpec((None,) + self.image_shape, tf.float32),
                tf.TensorSpec([None], tf.int32))

    # -- the network ------------------------------------------------------------------

    def _op(self, cell: int, edge: int, op: str, x):
        """One operation of one edge: (output, L2 of the kernel it used)."""
        self.mark(self.branch_id(f"cell_{cell}/{EDGE_NAMES[edge]}={op}"))
        zero = tf.constant(0.0)
        if op == "none":
            return tf.zeros_like(x), zero
        if op == "skip_connect":
            return tf.identity(x), zero
        if op == "avg_pool_3x3":
            return tf.nn.avg_pool2d(x, 3, 1, "SAME"), zero
        layer = self.cells[cell][edge][op]
        return layer(x), layer.l2()

    def _cell(self, cell: int, x, code):
        nodes, l2 = [x], tf.constant(0.0)
        for to_node in (1, 2, 3):
            total = None
            for edge, (i, j) in enumerate(EDGES):
                if i != to_node:
                    continue
                branches = [functools.partial(self._op, cell, edge, op, nodes[j]) for op in OPS]
                out, used = base.switch(code[edge], branches, name=f"cell_{cell}_edge_{i}_{j}")
                total = out if total is None else total + out
                l2 += used
            nodes.append(total)
        return nodes[-1], l2

    def logits_and_l2(self, x, code):
        """The sampled network's logits and the L2 of the kernels it used."""
        x = self.stem(x)
        l2 = self.stem.l2()
        per_stage = len(self.cells) // 3
        for stage in range(3):
            if stage:
                reduction = self.reductions[stage - 1]
                x, l2 = reduction(x), l2 + reduction.l2()
            for k in range(per_stage):
                x, used = self._cell(stage * per_stage + k, x, code)
                l2 += used
        x = tf.nn.relu(batch_norm(x, self.last_gamma, self.last_beta))
        x = tf.reduce_mean(x, axis=[1, 2])
        return tf.matmul(x, self.dense) + self.bias, l2 + tf.reduce_sum(tf.square(self.dense))


def build(input_shape=(8, 8, 1), num_classes=10, **kwargs) -> NB201Supernet:
    """An `NB201Supernet` (the factory the family registers)."""
    return NB201Supernet(input_shape, num_classes, **kwargs)
