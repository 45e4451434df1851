"""The weight-sharing supernet of the paper's recurrent-cell space.

Zoph & Le 2017, sec. 3.4, search a recurrent cell: a complete binary tree of
`base` leaves whose every node picks a combination {add, elem_mult} and an
activation {identity, tanh, sigmoid, relu} (with `functions="extended"`,
the paper's control experiment 1, also the combination max and the
activation sin), plus a "cell inject" (combination
and activation that merge c_(t-1) into one node) and two cell indices (the
node c_(t-1) is injected into, and the node whose pre-activation value becomes
c_t). Training every sampled cell from scratch is what made their search cost
thousands of GPU-days; ENAS (Pham et al. 2018, sec. 2.2 and 3.1, their Penn
Treebank experiment) shares one set of weights among all cells of a space
instead. `CellSupernet` is that idea over
`nas_tf.spaces.cell.ptb_cell(base, functions)`.

What is shared, and by whom:

* the embedding [vocab, embedding_size] and an untied softmax
  [units, vocab] + bias (untied because `embedding_size` may differ from
  `units`);
* one input projection W_k [embedding_size, units] and one recurrent
  projection U_k [units, units] per leaf k, stored fused as W
  [embedding_size, base * units] and U [units, base * units] (the layout of
  `nas_tf.children.cell.NASCell`). They do not depend on any choice: the
  space's combinations and activations have no weights, so, as in ENAS, a
  leaf has one projection whatever the cell.

The choices are selected at every time step from an int32 code (`encode`):
per node one `tf.switch_case` over the combinations and one over the
activations; per node a `tf.cond` "is this the inject node?" whose true branch
holds the inject's two `switch_case`s; the memory node is a `tf.gather` over
the stacked pre-activation values (every node is computed anyway, so the
gather computes nothing extra). Only the taken branches run. Every branch is
a `functools.partial` of a method, never a closure over the loop variable
(ENAS's late-binding bug: `lambda: y` in a loop makes every branch the last).

The recurrence is a `tf.while_loop` over the T = `steps` time steps with state
(h, c), zero at the start of each window (stateless windows, as in ENAS's
PTB supernet training with fresh batches). A while loop rather than an
unrolled Python loop: the step holds about 4 * (2 * base - 1) control-flow ops,
so unrolling T = 35 steps would trace ~2,000 `Case`s (slow traces, large
graphs); the loop traces the step once. The input projections of all steps are
one matmul before the loop; the softmax is one matmul after it.
"""

import functools
import math
from typing import Sequence, Tuple

import numpy as np
import tensorflow as tf

from nas_tf import space as space_lib
from nas_tf.spaces import cell as cell_space
from nas_tf.supernets import base as base_lib

REWARD_C = 80.0  # ENAS's reward for a cell: 80 / validation perplexity.

# Every function of `cell_space.ALL_ACTIVATIONS` / `ALL_COMBINATIONS` (max and
# sin: the paper's control experiment 1, `functions="extended"`).
_ACTIVATIONS = {
    "identity": tf.identity,
    "tanh": tf.tanh,
    "sigmoid": tf.sigmoid,
    "relu": tf.nn.relu,
    "sin": tf.sin,
}
_COMBINATIONS = {
    "add": tf.add,
    "elem_mult": tf.multiply,
    "max": tf.maximum,
}


class CellSupernet(base_lib.Supernet):
    """A one-layer recurrent language model whose cell is any cell of `ptb_cell(base, functions)`.

    Code layout (`encode`, int32, length 2 * n + 4 with n = 2 * base - 1 nodes):
    `[node_0 combine, node_0 activation, ..., node_(n-1) combine,
    node_(n-1) activation, inject combine, inject activation, memory-out node,
    inject node]`, choice indices into the space's combinations and
    activations (`cell_space.function_set(functions)`) and node numbers.

    Instrumented branches (`branch_names`): `node_{i}_combine={c}`,
    `node_{i}_activation={a}`, `inject_combine={c}`, `inject_activation={a}`
    and `cell_index_inject={i}` (the inject taken at node i). Each runs once
    per time step when taken, so one call counts T = `steps` per branch taken.
    The memory-out index is a gather, not a branch, and has no counter.

    Args:
      base: leaves of the cell tree (a power of two; 8 in the paper).
      functions: the space's function set, "paper" or "extended" (adds max
        and sin: the paper's control experiment 1); `cell_space.FUNCTIONS`.
      vocab_size: number of tokens (10,000 for PTB).
      embedding_size: width of the embedding.
      units: width of h and c.
      dropout: training-mode dropout rate on the embeddings and on the cell's
        outputs before the softmax (Zaremba et al. 2014's placement).
      weight_decay: L2 factor on every trainable weight, added to
        `train_loss` as weight_decay * sum(w^2) (ENAS's `l2_reg`).
      instrument: count branch runs (tests).
      seed: seeds the initial weights and the dropout masks.
      steps: T, the fixed window length of `input_signature`.
      init_scale: weights start uniform in [-init_scale, init_scale].
    """

    score_name = "perplexity"
    higher_is_better = False

    def __init__(self, base: int = 8, vocab_size: int = 10000, embedding_size: int = 32,
                 units: int = 32, dropout: float = 0.0, weight_decay: float = 0.0,
                 instrument: bool = False, seed: int = 0, steps: int = 35,
                 init_scale: float = 0.05, functions: str = cell_space.PAPER, name=None):
        super().__init__(cell_space.ptb_cell(base, functions), instrument=instrument, name=name)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        if steps < 1 or units < 1 or embedding_size < 1 or vocab_size < 2:
            raise ValueError("steps, units and embedding_size must be positive, vocab_size >= 2.")
        self.base = int(base)
        self.functions = functions
        self._combinations, self._activations = cell_space.function_set(functions)
        self.num_nodes = cell_space.num_nodes(self.base)
        self.vocab_size = int(vocab_size)
        self.embedding_size = int(embedding_size)
        self.units = int(units)
        self.dropout = float(dropout)
        self.weight_decay = float(weight_decay)
        self.steps = int(steps)
        self.seed = int(seed)
        self._children = [cell_space.children(self.base, i) for i in range(self.num_nodes)]
        n = self.num_nodes
        # Code positions (see the class docstring).
        self._inject_combine_at = 2 * n
        self._inject_activation_at = 2 * n + 1
        self._memory_at = 2 * n + 2
        self._inject_node_at = 2 * n + 3
        self._decision_names = []
        for i in range(n):
            self._decision_names += list(cell_space.node_decision_names(i))
        self._decision_names += [cell_space.INJECT_COMBINE, cell_space.INJECT_ACTIVATION,
                                 cell_space.MEMORY_OUT, cell_space.MEMORY_INJECT]

        names = []
        for i in range(n):
            combine, activation = cell_space.node_decision_names(i)
            names += [f"{combine}={c}" for c in self._combinations]
            names += [f"{activation}={a}" for a in self._activations]
        names += [f"{cell_space.INJECT_COMBINE}={c}" for c in self._combinations]
        names += [f"{cell_space.INJECT_ACTIVATION}={a}" for a in self._activations]
        names += [f"{cell_space.MEMORY_INJECT}={i}" for i in range(n)]
        self.declare_branches(names)

        def init(shape, k):
            return tf.Variable(tf.random.stateless_uniform(
                shape, seed=[self.seed, k], minval=-init_scale, maxval=init_scale), name=None)

        k = self.base * self.units
        with self.name_scope:
            self.embedding = init([self.vocab_size, self.embedding_size], 0)
            self.w = init([self.embedding_size, k], 1)  # W_1 .. W_base, fused.
            self.u = init([self.units, k], 2)  # U_1 .. U_base, fused.
            self.softmax_w = init([self.units, self.vocab_size], 3)
            self.softmax_b = tf.Variable(tf.zeros([self.vocab_size]), name="softmax_b")
            self._rng = tf.random.Generator.from_seed(self.seed)

    # -- the contract -----------------------------------------------------------------

    @property
    def code_length(self) -> int:
        return 2 * self.num_nodes + 4

    def encode(self, arch: space_lib.Architecture) -> np.ndarray:
        """The code of `arch` (layout in the class docstring)."""
        arch = self.space.validate(arch)
        return np.asarray(base_lib.choice_codes(self.space, arch, self._decision_names), np.int32)

    @property
    def input_signature(self) -> Tuple[tf.TensorSpec, tf.TensorSpec]:
        spec = tf.TensorSpec([None, self.steps], tf.int32)
        return spec, spec

    def train_loss(self, x, y, code) -> tf.Tensor:
        """Mean token cross-entropy in training mode (dropout on), plus weight decay."""
        logits = self.logits(x, code, training=True)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        if self.weight_decay > 0:
            loss += self.weight_decay * tf.add_n(
                [tf.reduce_sum(tf.square(v)) for v in self.trainable_variables])
        return loss

    def eval_sums(self, x, y, code) -> Tuple[tf.Tensor, tf.Tensor]:
        """(sum of the tokens' negative log-likelihoods, number of tokens), float32."""
        logits = self.logits(x, code, training=False)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        return tf.reduce_sum(nll), tf.cast(tf.size(nll), tf.float32)

    def score(self, total: float, count: float) -> float:
        """Perplexity exp(total / count); inf when that overflows."""
        try:
            return math.exp(float(total) / max(float(count), 1.0))
        except OverflowError:
            return math.inf

    def reward(self, score: float) -> float:
        """ENAS's 80 / ppl of one validation minibatch; 0 for an infinite perplexity.

        Not the paper's c / ppl^2 (`rewards.ptb_reward`, sec. 4.2): at the
        perplexities of a supernet (hundreds) that reward is about 1e-3, and
        an entropy bonus of ENAS's size (1e-3) would outweigh it.
        """
        if not math.isfinite(float(score)) or not float(score) > 0:
            return 0.0
        return REWARD_C / float(score)

    # -- the network ------------------------------------------------------------------

    def logits(self, x, code, training: bool = False) -> tf.Tensor:
        """Logits [batch, steps, vocab] of the sampled cell on tokens `x` [batch, steps]."""
        code = tf.convert_to_tensor(code, tf.int32)
        emb = tf.gather(self.embedding, x)  # [B, T, E]
        if training and self.dropout > 0:
            emb = self._dropout(emb)
        wx = tf.einsum("bte,ek->tbk", emb, self.w)  # Every step's W_k x_t in one matmul.
        batch = tf.shape(x)[0]
        zeros = tf.zeros([batch, self.units], emb.dtype)
        inputs = tf.TensorArray(emb.dtype, size=self.steps).unstack(wx)
        outputs = tf.TensorArray(emb.dtype, size=self.steps)

        def body(t, h, c, outputs):
            h, c = self.step(inputs.read(t), tf.matmul(h, self.u), c, code)
            return t + 1, h, c, outputs.write(t, h)

        _, _, _, outputs = tf.while_loop(
            lambda t, *_: t < self.steps, body, (tf.constant(0), zeros, zeros, outputs),
            maximum_iterations=self.steps)
        hs = tf.transpose(outputs.stack(), [1, 0, 2])  # [B, T, units]
        if training and self.dropout > 0:
            hs = self._dropout(hs)
        return tf.einsum("btu,uv->btv", hs, self.softmax_w) + self.softmax_b

    def _dropout(self, v):
        seed = self._rng.make_seeds(1)[:, 0]
        return tf.nn.experimental.stateless_dropout(v, self.dropout, seed=seed)

    def step(self, x_proj, h_proj, c_prev, code) -> Tuple[tf.Tensor, tf.Tensor]:
        """One time step of the sampled cell: (h_t, c_t).

        The same arithmetic as `nas_tf.children.cell.run_cell` for the code's
        `CellDescription`.

        Args:
          x_proj: W_k x_t for every leaf: `base` tensors [batch, units], or
            their concatenation [batch, base * units].
          h_proj: U_k h_(t-1) likewise.
          c_prev: c_(t-1) [batch, units].
          code: int32 code [code_length].
        """
        wx = self._split(x_proj)
        uh = self._split(h_proj)
        code = tf.convert_to_tensor(code, tf.int32)
        outputs, values = [], []
        for i, kids in enumerate(self._children):
            left, right = (wx[i], uh[i]) if kids is None else (outputs[kids[0]], outputs[kids[1]])
            combine, activation = cell_space.node_decision_names(i)
            value = self._combine(code[2 * i], combine, left, right)
            values.append(value)
            out = self._activate(code[2 * i + 1], activation, value)
            out = tf.cond(
                tf.equal(code[self._inject_node_at], i),
                functools.partial(self._inject, i, out, c_prev, code),
                functools.partial(tf.identity, out),
            )
            outputs.append(out)
        # Sec. 3.4: c_t is the memory node's value before its activation (and inject).
        c_t = tf.gather(tf.stack(values), code[self._memory_at])
        return outputs[-1], c_t

    def _split(self, proj) -> Sequence[tf.Tensor]:
        if isinstance(proj, (list, tuple)):
            if len(proj) != self.base:
                raise ValueError(f"Expected {self.base} leaf projections, got {len(proj)}.")
            return list(proj)
        return tf.split(proj, self.base, axis=-1)

    # -- branches (each a partial of these methods: no late binding) ------------------

    def _combine(self, index, decision: str, left, right):
        branches = [
            functools.partial(self._combine_branch, self.branch_id(f"{decision}={c}"),
                              _COMBINATIONS[c], left, right)
            for c in self._combinations
        ]
        return base_lib.switch(index, branches, name=decision)

    def _activate(self, index, decision: str, value):
        branches = [
            functools.partial(self._activation_branch, self.branch_id(f"{decision}={a}"),
                              _ACTIVATIONS[a], value)
            for a in self._activations
        ]
        return base_lib.switch(index, branches, name=decision)

    def _combine_branch(self, branch: int, op, left, right):
        self.mark(branch)
        return op(left, right)

    def _activation_branch(self, branch: int, fn, value):
        self.mark(branch)
        return fn(value)

    def _inject(self, node: int, out, c_prev, code):
        """a_node <- activation(combine(a_node, c_(t-1))), the cell inject (sec. 3.4)."""
        self.mark(self.branch_id(f"{cell_space.MEMORY_INJECT}={node}"))
        merged = self._combine(code[self._inject_combine_at], cell_space.INJECT_COMBINE,
                               out, c_prev)
        return self._activate(code[self._inject_activation_at], cell_space.INJECT_ACTIVATION,
                              merged)
