"""The controller: a Keras LSTM policy that writes architectures token by token.

Zoph & Le 2017, sec. 3.1-3.3. At every step a two-layer LSTM reads the
embedding of the previous token; a softmax head of the current decision's kind
turns its output into a distribution and a token is drawn. An anchor step
instead draws one independent bit per earlier anchor j with set-selection
attention,

    P(j feeds i) = sigmoid(v^T tanh(W_prev h_j + W_curr h_i)),

where h_j is the LSTM output at anchor j's step (sec. 3.3). The next input after
an anchor is the mean of the selected h_j (zeros when none is selected).

The controller only walks a `Space`; it never builds child layers. A whole
batch of architectures is sampled, or scored (log-probability and entropy), by
one `tf.function` over the decision sequence, unrolled for short spaces and a
`tf.while_loop` over a table of the decisions for long ones; per-sample
activity masks make inactive decisions cost nothing and count for nothing, so
one traced graph serves every depth and every branch of a conditional space.
"""

import dataclasses
import hashlib
import json
import re
import threading
import zlib
from typing import Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from nas_tf import space as space_lib
from nas_tf.graph_call import FlatCall


@dataclasses.dataclass(frozen=True)
class ControllerConfig:
    """Controller hyperparameters.

    Attributes:
      units: LSTM units per layer (35: Zoph & Le 2017, sec. 4.1).
      num_layers: stacked LSTM layers (2: sec. 4.1).
      init_range: every weight starts uniform in [-init_range, init_range]
        (0.08: sec. 4.1).
      attention_units: width of the anchor attention (W_prev, W_curr, v); the
        paper does not give it, we use the LSTM width.
      temperature: divides every logit before sampling; None keeps the paper's
        plain softmax (the paper has no temperature).
      tanh_constant: if set, logits become C * tanh(logits), bounding them
        to [-C, C] (ENAS-style clipping; not in the paper, where it is None).
        2.5 keeps a fast-learning policy from collapsing onto a few
        architectures within a few hundred trials (docs/nasbench201.md).
      unroll_steps: spaces of at most this many decisions are unrolled in the
        graphs (fastest per call; tracing grows with the length); longer ones
        run in a `tf.while_loop`, traced once whatever their length. Both
        compute the same thing (docs/search_brain.md has the measurements).
      jit_compile: compile the sampling and scoring graphs with XLA. None
        means: on when a GPU or TPU is visible, off on CPU where XLA was
        measured slower for these tiny kernels.
    """

    units: int = 35
    num_layers: int = 2
    init_range: float = 0.08
    attention_units: Optional[int] = None
    temperature: Optional[float] = None
    tanh_constant: Optional[float] = 2.5
    jit_compile: Optional[bool] = None
    unroll_steps: int = 16

    @classmethod
    def paper(cls, **overrides) -> "ControllerConfig":
        """Zoph & Le 2017: 2 x 35 LSTM, weights U(-0.08, 0.08), plain softmax."""
        values = dict(units=35, num_layers=2, init_range=0.08, temperature=None,
                      tanh_constant=None)
        values.update(overrides)
        return cls(**values)

    def __post_init__(self):
        if self.units < 1 or self.num_layers < 1:
            raise ValueError("Controller units and num_layers must be positive.")
        if self.unroll_steps < 0:
            raise ValueError(f"unroll_steps must be >= 0, got {self.unroll_steps}.")
        if self.init_range <= 0:
            raise ValueError(f"init_range must be positive, got {self.init_range}.")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}.")
        if self.tanh_constant is not None and self.tanh_constant <= 0:
            raise ValueError(f"tanh_constant must be positive, got {self.tanh_constant}.")


def _slug(kind: str) -> str:
    """A stable, Keras-safe layer name for a decision kind."""
    digest = hashlib.sha1(kind.encode("utf-8")).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_]", "_", kind)[:40] + "_" + digest


def _accelerator_present() -> bool:
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


class WeightLayout:
    """Where each named weight of a controller lives in its one flat weight vector.

    The controller keeps every weight (LSTM cells, attention, embeddings,
    heads) in a single Keras variable, and every graph splits it into the
    named tensors as its first step. A graph then takes 2 variables (weights
    and the sampling generator's state) instead of one per weight, and the
    training step runs one clip, one Adam kernel and one read instead of one
    per weight: on NAS-Bench-201's controller (28 weights) building the
    controller and its optimizer took about 135 ms with a Keras layer per
    weight, which a 200-trial search paid once per search
    (docs/nasbench201.md, "Where the oracle's time goes").

    Args:
      entries: (name, shape) pairs in vector order; names are the Keras
        paths the weights had as layers ("lstm_0/kernel", "head_<kind>/bias"),
        which checkpoints keep.
      kinds: decision kind -> its name slug in the entries.
    """

    def __init__(self, entries, kinds: Dict[str, str]):
        self.entries = tuple((name, tuple(int(n) for n in shape)) for name, shape in entries)
        self.kinds = dict(kinds)
        self.names = [name for name, _ in self.entries]
        self.sizes = [int(np.prod(shape)) for _, shape in self.entries]
        self.offsets = dict(zip(self.names, np.cumsum([0] + self.sizes[:-1]).tolist()))
        self.shapes = dict(self.entries)
        self.size = int(sum(self.sizes))

    def key(self) -> tuple:
        return self.entries, tuple(sorted(self.kinds.items()))

    def split(self, flat: np.ndarray) -> Dict[str, np.ndarray]:
        """A flat vector as named arrays (copies)."""
        return {name: np.array(flat[self.offsets[name] : self.offsets[name] + size]
                                .reshape(self.shapes[name]))
                for name, size in zip(self.names, self.sizes)}

    def join(self, named: Dict[str, np.ndarray], into: np.ndarray) -> np.ndarray:
        """Writes named arrays into their places of `into` (a flat vector); returns it."""
        for name, value in named.items():
            into[self.offsets[name] : self.offsets[name] + value.size] = np.ravel(value)
        return into

    def unpack(self, w):
        """In a graph: the weight struct the policy reads (see `_Policy`) from dict(flat, rng)."""
        pieces = tf.split(tf.convert_to_tensor(w["flat"]), self.sizes)
        named = {name: x if len(shape) == 1 else tf.reshape(x, shape)
                 for (name, shape), x in zip(self.entries, pieces)}
        cells, i = [], 0
        while f"lstm_{i}/kernel" in named:
            cells.append(tuple(named[f"lstm_{i}/{part}"]
                               for part in ("kernel", "recurrent_kernel", "bias")))
            i += 1
        return dict(
            cells=cells, go=named["go/kernel"], w_prev=named["attention_prev/kernel"],
            w_curr=named["attention_curr/kernel"], v=named["attention_v/kernel"],
            heads={k: (named[f"head_{s}/kernel"], named[f"head_{s}/bias"])
                   for k, s in self.kinds.items()},
            embeddings={k: named[f"embed_{s}/embeddings"] for k, s in self.kinds.items()},
            rng=w["rng"],
        )


def _lstm_step(weights, x, state):
    """One step of a Keras `LSTMCell`, written on its (kernel, recurrent kernel, bias).

    The same maths as `cell(x, state)` (gates i, f, c, o; sigmoid recurrent
    activation), without Keras's per-call machinery: the rollout unrolls
    hundreds of steps, and tracing them is the controller's start-up cost.
    """
    kernel, recurrent_kernel, bias = weights
    h, c = state
    z = tf.matmul(x, kernel) + tf.matmul(h, recurrent_kernel) + bias
    i, f, g, o = tf.split(z, 4, axis=1)
    c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
    h = tf.sigmoid(o) * tf.tanh(c)
    return h, [h, c]


class _Layout:
    """Where each decision's value lives in the integer encoding of a batch.

    A categorical decision takes one column (the value's index); an anchor takes
    one column per source (0/1). Inactive decisions hold zeros.
    """

    # Encoded rows kept by architecture (the top-K buffer's rows recur every
    # update); cleared when it reaches this many.
    cache_size = 4096

    def __init__(self, space: space_lib.Space):
        self.space = space
        self._rows: Dict[str, tuple] = {}  # to_json -> (row, depth), validated
        self.slot = {}
        self.position = {}
        width = 0
        for k, d in enumerate(space.decisions):
            self.slot[d.name] = width
            self.position[d.name] = k
            width += len(d.sources) if isinstance(d, space_lib.Anchor) else 1
        self.width = width

    def encode(self, archs: Sequence[space_lib.Architecture]):
        idx = np.zeros((len(archs), self.width), np.int32)
        depth = np.zeros((len(archs),), np.int32)
        for b, arch in enumerate(archs):
            idx[b], depth[b] = self._row(arch)
        return idx, depth

    def _row(self, arch: space_lib.Architecture):
        """(encoded row, depth) of one architecture, validated; cached by its JSON."""
        key = arch.to_json()
        cached = self._rows.get(key)
        if cached is not None:
            return cached
        arch = self.space.validate(arch)
        row = np.zeros((self.width,), np.int32)
        for name, value in arch.values.items():
            d = self.space[name]
            s = self.slot[name]
            if isinstance(d, space_lib.Anchor):
                row[s : s + len(value)] = value
            else:
                row[s] = d.index(value)
        if len(self._rows) >= self.cache_size:
            self._rows.clear()
        self._rows[key] = cached = (row, arch.depth or 0)
        return cached

    def decode(self, idx: np.ndarray, active: np.ndarray, depth: np.ndarray):
        archs = []
        use_depth = self.space.uses_depth
        for b in range(idx.shape[0]):
            values = {}
            for k, d in enumerate(self.space.decisions):
                if not active[b, k]:
                    continue
                s = self.slot[d.name]
                if isinstance(d, space_lib.Anchor):
                    values[d.name] = tuple(int(x) for x in idx[b, s : s + len(d.sources)])
                else:
                    values[d.name] = d.values[int(idx[b, s])]
            archs.append(
                space_lib.Architecture(values=values, depth=int(depth[b]) if use_depth else None)
            )
        return archs


class _Table:
    """The space as arrays indexed by decision, for the rollout's loop body.

    Every kind's values are laid end to end (`offset` is the kind's first
    index in the concatenated heads and embeddings); anchors are numbered in
    order (`anchor_index`), and an anchor's `sources` row marks its sources
    among them. Each step's row of the rollout's record holds the chosen
    value's index (column 0) or the anchor's bit per earlier anchor;
    `columns` maps the encoding's columns (`_Layout`) back to (step, position).
    """

    def __init__(self, space: space_lib.Space, kinds: Sequence[str], sizes: Dict[str, int]):
        decisions = space.decisions
        anchors = [d.name for d in decisions if isinstance(d, space_lib.Anchor)]
        anchor_index = {name: i for i, name in enumerate(anchors)}
        position = {d.name: k for k, d in enumerate(decisions)}
        self.kinds = list(kinds)
        offsets, total = {}, 0
        for kind in self.kinds:
            offsets[kind], total = total, total + sizes[kind]
        self.num_steps = len(decisions)
        # The least depth a rollout is given: 1 when the space uses depth
        # (`Controller._depths`, `Space.validate`), else 0.
        self.least_depth = 1 if space.uses_depth else 0
        self.num_anchors = max(len(anchors), 1)
        self.max_conditions = max((len(d.when) for d in decisions), default=0)
        max_values = max(sizes.values(), default=1)
        self.cat_width = max(total, 1)
        self.prob_width = max(self.cat_width, self.num_anchors)
        n, k, a = self.num_steps, max(self.max_conditions, 1), self.num_anchors
        arrays = dict(
            min_depth=np.zeros(n, np.int32), is_anchor=np.zeros(n, bool),
            offset=np.zeros(n, np.int32), slot=np.zeros(n, np.int32),
            cat_mask=np.zeros((n, self.cat_width), bool), anchor_index=np.zeros(n, np.int32),
            sources=np.zeros((n, a), bool), source_cols=np.zeros((n, a), np.int32),
            cond_parent=np.zeros((n, k), np.int32), cond_used=np.zeros((n, k), bool),
            cond_allowed=np.zeros((n, k, max_values), bool),
        )
        layout = _Layout(space)
        columns, prob_columns, self.step_kinds = [], [], []
        for t, d in enumerate(decisions):
            arrays["min_depth"][t] = d.min_depth
            for j, cond in enumerate(d.when):
                parent = space[cond.decision]
                arrays["cond_parent"][t, j] = position[cond.decision]
                arrays["cond_used"][t, j] = True
                for value in cond.values:
                    arrays["cond_allowed"][t, j, parent.index(value)] = True
            slot = layout.slot[d.name]
            self.step_kinds.append(getattr(d, "kind", None))
            if isinstance(d, space_lib.Anchor):
                arrays["is_anchor"][t] = True
                arrays["anchor_index"][t] = anchor_index[d.name]
                for i, source in enumerate(d.sources):
                    arrays["sources"][t, anchor_index[source]] = True
                    arrays["source_cols"][t, anchor_index[source]] = slot + i
                    columns.append((t, anchor_index[source]))
                prob_columns.append([anchor_index[s] for s in d.sources])
            else:
                off = offsets[d.kind]
                arrays["offset"][t], arrays["slot"][t] = off, slot
                arrays["cat_mask"][t, off : off + d.num_choices] = True
                columns.append((t, 0))
                prob_columns.append(list(range(off, off + d.num_choices)))
        self.arrays = arrays
        self.columns = np.asarray(columns, np.int32).reshape(-1, 2)
        self.prob_columns = [np.asarray(c, np.int32) for c in prob_columns]

    def constants(self):
        """The arrays as graph constants, for the loop body to index by step."""
        return {name: tf.constant(value) for name, value in self.arrays.items()}


def _uniform(state, shape, minval, maxval):
    """`tf.random.Generator.uniform` on the generator's state variable (Philox).

    The same draws and the same state afterwards as the generator's method,
    with the state an argument of the graph rather than captured by it.
    """
    u = tf.raw_ops.StatefulUniform(resource=state.handle, algorithm=_PHILOX, shape=shape,
                                   dtype=tf.float32)
    return u * (maxval - minval) + minval


_PHILOX = 1  # tf.random.Algorithm.PHILOX, the algorithm of Generator.from_seed.


class _Policy:
    """The policy's maths over one space's decision table, on weights given as arguments.

    It holds no weights: every graph takes the controller's weights (and its
    sampling generator's state) as arguments, `w`, a dict with "flat" (the
    weight vector, `WeightLayout`) and "rng". `rollout` splits the vector
    into a dict with "cells" [(kernel, recurrent kernel, bias)] per LSTM
    layer, "go", "w_prev", "w_curr", "v", "heads" {kind: (kernel, bias)},
    "embeddings" {kind: table} and "rng". So one traced graph serves every
    controller of the same space and configuration in a process
    (`_shared_graphs`).
    """

    def __init__(self, table, config: ControllerConfig, layout: WeightLayout):
        self._table = table
        self.config = config
        self._layout = layout

    def _shape_logits(self, logits):
        if self.config.temperature is not None:
            logits = logits / self.config.temperature
        if self.config.tanh_constant is not None:
            logits = self.config.tanh_constant * tf.tanh(logits)
        return logits

    def rollout(self, w, depth, forced, with_probs=False):
        """Samples (forced is None) or scores (forced given) a batch.

        The decisions are walked by one step function over the decision table
        (`_Table`). A space of at most `config.unroll_steps` decisions is
        unrolled: the step is traced once per decision, each building only
        what its decision needs (fastest per call). A longer one runs in a
        `tf.while_loop` whose body (a softmax over every kind's values masked
        to the decision's own, and an attention over every earlier anchor
        masked to its sources; the one the decision is kept) is traced once,
        so the graphs and the REINFORCE step's gradient through them trace in
        about the same time for 600 decisions as for 6 (docs/search_brain.md).
        Both draw the same noise and compute the same policy.

        Args:
          depth: int32 [B], the depth of each network (0 if unused).
          forced: int32 [B, width] encoded architectures, or None to sample.
          with_probs: also return each decision's probabilities.

        Returns:
          idx [B, width], active [B, num_decisions] bool, log_prob [B],
          entropy [B], and (with_probs) a list of per-decision probabilities.
        """
        table = self._table
        w = self._layout.unpack(w)
        batch = tf.shape(depth)[0]
        units = self.config.units
        num_steps, num_anchors = table.num_steps, table.num_anchors
        zeros = tf.zeros([batch, units])
        carry = dict(
            inp=tf.tile(w["go"], [batch, 1]),  # go(ones): the first input.
            states=tuple(zeros for _ in range(2 * len(w["cells"]))),
            anchor_h=tf.zeros([batch, num_anchors, units]),
            anchor_p=tf.zeros([batch, num_anchors, w["w_prev"].shape[1]]),
            anchor_on=tf.zeros([batch, num_anchors], tf.bool),
            log_prob=tf.zeros([batch]),
            entropy=tf.zeros([batch]),
        )
        if num_steps <= self.config.unroll_steps:
            # Each step's record (its encoding columns, activity, probabilities)
            # is a Python list entry; the lists are joined once at the end.
            carry.update(rows=[], actives=[], probs=[])
            for t in range(num_steps):
                carry = self._step(t, carry, dict(w=w), depth, forced, with_probs)
            if num_steps:
                idx = tf.concat(carry["rows"], axis=1)
                active = tf.stack(carry["actives"], axis=1)
            else:
                idx, active = tf.zeros([batch, 0], tf.int32), tf.zeros([batch, 0], tf.bool)
            out = (idx, active, carry["log_prob"], carry["entropy"])
            return out + (carry["probs"],) if with_probs else out
        # The record is a [B, steps, ...] tensor written one step at a time.
        carry.update(
            rows=tf.zeros([batch, num_steps, num_anchors], tf.int32),
            actives=tf.zeros([batch, num_steps], tf.bool),
            probs=tf.zeros([batch, num_steps, table.prob_width] if with_probs else []),
        )
        params = self._loop_params(w)
        _, carry = tf.while_loop(
            lambda t, _: t < num_steps,
            lambda t, c: (t + 1, self._step(t, c, params, depth, forced, with_probs)),
            (tf.constant(0), carry),
            maximum_iterations=num_steps,
        )
        # The encoding's columns, gathered from (step, position in the step's row).
        idx = tf.transpose(tf.gather_nd(tf.transpose(carry["rows"], [1, 2, 0]), table.columns))
        out = (idx, carry["actives"], carry["log_prob"], carry["entropy"])
        if with_probs:
            probs = carry["probs"]
            out += ([tf.gather(probs[:, t, :], cols, axis=1)
                     for t, cols in enumerate(table.prob_columns)],)
        return out

    def _loop_params(self, w):
        """For the loop body: every kind's head and embedding laid end to end, the table."""
        table = self._table
        if not table.kinds:  # Anchors only: a dummy head that no step uses.
            return dict(w=w, kernel=tf.zeros([self.config.units, 1]), bias=tf.zeros([1]),
                        embeddings=tf.zeros([1, self.config.units]), consts=table.constants())
        heads = [w["heads"][k] for k in table.kinds]
        return dict(
            w=w,
            kernel=tf.concat([kernel for kernel, _ in heads], axis=1),
            bias=tf.concat([bias for _, bias in heads], axis=0),
            embeddings=tf.concat([w["embeddings"][k] for k in table.kinds], axis=0),
            consts=table.constants(),
        )

    def _step(self, t, carry, params, depth, forced, with_probs):
        """One decision: its activity, the LSTM, its softmax or attention, the record.

        `t` is a Python int when unrolled (the table row is then known and
        only the decision's own kind of step is built; `params` holds the
        weights `w` only) or a tensor in the loop (`params`: the weights and
        the loop's concatenated heads and table constants).
        """
        table = self._table
        static = isinstance(t, int)
        if static:
            row = {name: value[t] for name, value in table.arrays.items()}
            row["step"] = t
        else:
            row = {name: tf.gather(value, t) for name, value in params["consts"].items()}
        # Whether the decision exists: its depth, then each condition on an earlier value.
        active = depth >= row["min_depth"]
        conditions = int(np.sum(row["cond_used"])) if static else table.max_conditions
        # Unrolled, a decision with no condition that every depth has is known
        # to be active: its step leaves out the masks (and their gradients),
        # about a sixth of NAS-Bench-201's training step.
        always = static and conditions == 0 and int(row["min_depth"]) <= table.least_depth
        for k in range(conditions):
            parent = row["cond_parent"][k]
            if static:  # The record so far is a list of steps.
                value, parent_active = carry["rows"][parent][:, 0], carry["actives"][parent]
            else:
                value = tf.gather(carry["rows"][:, :, 0], parent, axis=1)
                parent_active = tf.gather(carry["actives"], parent, axis=1)
            ok = parent_active & tf.gather(row["cond_allowed"][k], value)
            active &= ok if static else ok | ~row["cond_used"][k]
        # The LSTM.
        states = carry["states"]
        x, new_states = carry["inp"], []
        for i, cell in enumerate(params["w"]["cells"]):
            x, (h_i, c_i) = _lstm_step(cell, x, states[2 * i : 2 * i + 2])
            new_states += [h_i, c_i]
        h = x
        noise = None
        if forced is None:
            # One draw for both kinds of step, whichever is built: unrolled and
            # looped rollouts then sample the same architectures.
            width = table.cat_width + table.num_anchors
            noise = _uniform(params["w"]["rng"], [tf.shape(h)[0], width], 1e-20, 1.0)
        anchor = row["is_anchor"]
        args = (h, row, None if always else active, carry, params, forced, noise, static)
        if static:
            lp, ent, next_inp, record, p = (
                self._attention_step if anchor else self._softmax_step)(*args)
        else:
            both = zip(self._attention_step(*args), self._softmax_step(*args))
            lp, ent, next_inp, record, p = [tf.where(anchor, a, b) for a, b in both]
        out = dict(carry)
        if static:
            out["rows"] = carry["rows"] + [record]
            out["actives"] = carry["actives"] + [active]
            out["probs"] = carry["probs"] + [p] if with_probs else carry["probs"]
        else:
            here = tf.one_hot(t, table.num_steps, on_value=True, off_value=False, dtype=tf.bool)
            out["rows"] = tf.where(here[None, :, None], record[:, None, :], carry["rows"])
            out["actives"] = tf.where(here[None, :], active[:, None], carry["actives"])
            if with_probs:
                out["probs"] = tf.where(here[None, :, None], p[:, None, :], carry["probs"])
        if not static or anchor:
            # This anchor's output joins the attention's memory.
            slot = tf.one_hot(row["anchor_index"], table.num_anchors, on_value=True,
                              off_value=False, dtype=tf.bool) & anchor
            slot = slot[None, :, None]
            out["anchor_h"] = tf.where(slot, h[:, None, :], carry["anchor_h"])
            proj = tf.matmul(h, params["w"]["w_prev"])[:, None, :]
            out["anchor_p"] = tf.where(slot, proj, carry["anchor_p"])
            out["anchor_on"] = tf.where(slot[..., 0], active[:, None], carry["anchor_on"])
        if always:
            out["log_prob"] = carry["log_prob"] + lp
            out["entropy"] = carry["entropy"] + ent
            out["states"], out["inp"] = tuple(new_states), next_inp
            return out
        out["log_prob"] = carry["log_prob"] + tf.where(active, lp, 0.0)
        out["entropy"] = carry["entropy"] + tf.where(active, ent, 0.0)
        keep = active[:, None]
        out["states"] = tuple(tf.where(keep, n, o) for n, o in zip(new_states, states))
        out["inp"] = tf.where(keep, next_inp, carry["inp"])
        return out

    def _softmax_step(self, h, row, active, carry, params, forced, noise, static):
        """A value of the decision's kind.

        Unrolled, the kind's own head; in the loop, the concatenated heads
        with the other kinds' values masked out (the same distribution, and
        the same Gumbel noise on the kind's columns: the same sample).
        """
        table = self._table
        if static:
            kind = table.step_kinds[row["step"]]
            (kernel, bias), embeddings = params["w"]["heads"][kind], params["w"]["embeddings"][kind]
            off, num = int(row["offset"]), kernel.shape[1]
            logits = self._shape_logits(tf.matmul(h, kernel) + bias)
            log_p = tf.nn.log_softmax(logits)
            p = tf.exp(log_p)
            ent = -tf.reduce_sum(p * log_p, axis=1)
        else:
            off, embeddings = row["offset"], params["embeddings"]
            in_kind = row["cat_mask"][None, :]
            logits = self._shape_logits(tf.matmul(h, params["kernel"]) + params["bias"])
            logits = tf.where(in_kind, logits, -1e30)
            log_p = tf.nn.log_softmax(logits)
            p = tf.exp(log_p)
            ent = -tf.reduce_sum(tf.where(in_kind, p * log_p, 0.0), axis=1)
        if forced is None:
            u = noise[:, off : off + num] if static else noise[:, : table.cat_width]
            local = tf.argmax(logits - tf.math.log(-tf.math.log(u)), axis=1, output_type=tf.int32)
            local = local if static else local - off
        else:
            local = tf.gather(forced, row["slot"], axis=1)
        if active is not None:  # None: known to be active (see `_step`).
            local = tf.where(active, local, 0)
        pick = local if static else local + off
        # The chosen value's log-probability and embedding, through its one-hot
        # row rather than gathers: the same numbers (one term is nonzero), and
        # gradients that are products instead of sparse updates densified
        # again (about 5% of NAS-Bench-201's training step).
        chosen = tf.one_hot(pick, log_p.shape[1], dtype=log_p.dtype)
        lp = tf.reduce_sum(chosen * log_p, axis=1)
        next_inp = tf.matmul(chosen, embeddings)
        if static:
            return lp, ent, next_inp, local[:, None], p
        record = tf.one_hot(0, table.num_anchors, dtype=tf.int32) * local[:, None]
        p = tf.pad(p, [[0, 0], [0, table.prob_width - table.cat_width]])
        return lp, ent, next_inp, record, p

    def _attention_step(self, h, row, active, carry, params, forced, noise, static):
        """Set-selection attention over the earlier anchors (sec. 3.3), masked to the sources."""
        table = self._table
        query = tf.matmul(h, params["w"]["w_curr"])[:, None, :]
        v = params["w"]["v"][:, 0]
        logits = self._shape_logits(tf.reduce_sum(tf.tanh(carry["anchor_p"] + query) * v, axis=-1))
        mask = carry["anchor_on"] & row["sources"][None, :]
        if active is not None:  # None: known to be active (see `_step`).
            mask &= active[:, None]
        if forced is None:
            bits = tf.cast(noise[:, table.cat_width :] < tf.sigmoid(logits), tf.int32)
        else:
            bits = tf.gather(forced, row["source_cols"], axis=1)
        bits = tf.where(mask, bits, 0)
        on = tf.cast(bits, tf.float32)
        log_on, log_off = tf.math.log_sigmoid(logits), tf.math.log_sigmoid(-logits)
        lp = tf.reduce_sum(tf.where(mask, on * log_on + (1.0 - on) * log_off, 0.0), axis=1)
        p_on = tf.sigmoid(logits)
        ent = tf.reduce_sum(tf.where(mask, -(p_on * log_on + (1.0 - p_on) * log_off), 0.0), axis=1)
        count = tf.reduce_sum(on, axis=1, keepdims=True)
        next_inp = tf.reduce_sum(on[..., None] * carry["anchor_h"], axis=1) / tf.maximum(count, 1.0)
        if static:  # The bits and probabilities of the sources, in their order.
            sources = table.prob_columns[row["step"]]
            return lp, ent, next_inp, tf.gather(bits, sources, axis=1), tf.gather(p_on, sources, axis=1)
        p_on = tf.pad(p_on, [[0, 0], [0, table.prob_width - table.num_anchors]])
        return lp, ent, next_inp, bits, p_on


class _Graphs:
    """The traced sampling, scoring and probability graphs of one `_Policy`."""

    def __init__(self, policy: _Policy, jit_compile: bool):
        # The rollout is an explicit tf.while_loop over the decision table;
        # AutoGraph would only add tracing time. reduce_retracing: a second
        # batch size traces once more, for every size.
        graph = dict(autograph=False, reduce_retracing=True)
        self.sample = FlatCall(tf.function(
            # The generator's state after the draws comes back with them: saving
            # it after every sample then costs no extra variable read.
            lambda w, depth: policy.rollout(w, depth, None) + (w["rng"].read_value(),),
            jit_compile=jit_compile, **graph,
        ), weight_args=1)
        self.score = FlatCall(tf.function(
            lambda w, idx, depth: policy.rollout(w, depth, idx), jit_compile=jit_compile, **graph
        ), weight_args=1)
        self.probs = FlatCall(tf.function(
            lambda w, idx, depth: policy.rollout(w, depth, idx, with_probs=True), **graph
        ), weight_args=1)


# Graphs by (space, controller configuration, XLA): a process traces each once,
# whatever number of controllers (searches, seeds) it runs over them.
_SHARED_GRAPHS: Dict[tuple, _Graphs] = {}
_SHARED_LOCK = threading.Lock()


def _shared_graphs(key, policy: _Policy, jit_compile: bool) -> _Graphs:
    with _SHARED_LOCK:
        if key not in _SHARED_GRAPHS:
            _SHARED_GRAPHS[key] = _Graphs(policy, jit_compile)
        return _SHARED_GRAPHS[key]


def trainables(weights) -> list:
    """A weight struct's trainable variables: the one flat weight vector."""
    return [weights["flat"]]


class Controller:
    """The policy network over a search space.

    Args:
      space: the `Space` to sample from. It may grow later (`set_space`).
      config: a `ControllerConfig`.
      seed: seeds the weight initialisation and the sampling RNG.

    Attributes:
      space: the current search space.
      config: the configuration.
    """

    def __init__(
        self,
        space: space_lib.Space,
        config: ControllerConfig = ControllerConfig(),
        seed: int = 0,
    ):
        self.config = config
        self._seed = int(seed)
        self._flat = None  # The weights (`WeightLayout`), made by `set_space`.
        self.weight_layout = None
        self.rng = tf.random.Generator.from_seed(self._seed)
        self._rng_state = None  # numpy copy of rng.state, kept current by sampling
        self.space = None
        self.set_space(space)

    # -- construction ----------------------------------------------------------

    def _entries(self, kinds: Dict[str, int]):
        """(name, shape) of every weight, in vector order, for decision kinds -> widths.

        The names are the paths the weights had as Keras layers (an
        `LSTMCell` per layer, `Dense` "go" and attention layers, an
        `Embedding` and a `Dense` head per kind), so checkpoints keep them.
        """
        units = self.config.units
        att = self.config.attention_units or units
        entries = []
        for i in range(self.config.num_layers):
            entries += [(f"lstm_{i}/kernel", (units, 4 * units)),
                        (f"lstm_{i}/recurrent_kernel", (units, 4 * units)),
                        (f"lstm_{i}/bias", (4 * units,))]
        entries += [("go/kernel", (1, units)), ("attention_prev/kernel", (units, att)),
                    ("attention_curr/kernel", (units, att)), ("attention_v/kernel", (att, 1))]
        slugs = {k: _slug(k) for k in kinds}
        entries += [(f"embed_{slugs[k]}/embeddings", (kinds[k], units)) for k in sorted(kinds)]
        for k in sorted(kinds):
            entries += [(f"head_{slugs[k]}/kernel", (units, kinds[k])),
                        (f"head_{slugs[k]}/bias", (kinds[k],))]
        return entries, slugs

    def _initial(self, name, shape) -> np.ndarray:
        """A weight's initial value: uniform in [-init_range, init_range] (sec. 4.1).

        Drawn from a stream of its own (the seed and the weight's name), so
        a weight's start does not depend on which others exist.
        """
        r = self.config.init_range
        rng = np.random.default_rng([self._seed & 0xFFFFFFFF, zlib.crc32(name.encode("utf-8"))])
        return rng.uniform(-r, r, size=shape).astype(np.float32)

    def set_space(self, space: space_lib.Space):
        """Switches to `space`, keeping the weights of every kind already known.

        New decision kinds get fresh embeddings and heads; existing ones keep
        theirs, so a space that grows during a search (new hyperparameters, a
        deeper curriculum stage) keeps what the controller has learned.
        """
        widths = {} if self.weight_layout is None else {
            k: self.weight_layout.shapes[f"head_{s}/bias"][0]
            for k, s in self.weight_layout.kinds.items()}
        for d in space.decisions:
            if not isinstance(d, space_lib.Anchor):
                widths.setdefault(d.kind, d.num_choices)
        entries, slugs = self._entries(widths)
        layout = WeightLayout(entries, slugs)
        if self.weight_layout is None or layout.key() != self.weight_layout.key():
            old = {} if self._flat is None else self.get_weights()
            flat = np.empty(layout.size, np.float32)
            layout.join({name: old[name] if name in old else self._initial(name, shape)
                         for name, shape in layout.entries}, flat)
            self._flat = keras.Variable(flat, name="controller_weights")
            self.weight_layout = layout
        self.space = space
        self._layout = _Layout(space)
        kinds = sorted({d.kind for d in space.decisions if not isinstance(d, space_lib.Anchor)})
        self._table = _Table(space, kinds, {k: widths[k] for k in kinds})
        self.policy = _Policy(self._table, self.config, self.weight_layout)
        self.graph_key = (
            json.dumps(space.to_config(), sort_keys=True),
            tuple((k, int(widths[k])) for k in kinds),
            self.weight_layout.key(),
            dataclasses.astuple(self.config),
            self.jit_compile,
        )
        self._graphs = _shared_graphs(self.graph_key, self.policy, self.jit_compile)
        # The weights as the graphs take them (see `_Policy`): TensorFlow variables.
        self.weights = dict(flat=self._flat.value, rng=self.rng.state)

    def _sample_fn(self, depth):
        return self._graphs.sample(self.weights, depth)

    def _score_fn(self, idx, depth):
        return self._graphs.score(self.weights, idx, depth)

    def _probs_fn(self, idx, depth):
        return self._graphs.probs(self.weights, idx, depth)

    @property
    def jit_compile(self) -> bool:
        """Whether the sampling, scoring and training graphs use XLA."""
        if self.config.jit_compile is None:
            return _accelerator_present()
        return bool(self.config.jit_compile)

    @property
    def trainable_variables(self):
        """The one trainable variable: every weight, laid out by `weight_layout`."""
        return [self._flat]

    # -- public API --------------------------------------------------------------

    def _depths(self, num: int, depth: Optional[int]) -> np.ndarray:
        if self.space.uses_depth:
            depth = self.space.max_depth if depth is None else int(depth)
            if depth < 1:
                raise ValueError(f"depth must be positive, got {depth}.")
        else:
            depth = 0
        return np.full((num,), depth, np.int32)

    def sample(self, num: int = 1, depth: Optional[int] = None):
        """Draws `num` architectures at once.

        Args:
          num: batch size m.
          depth: network depth for spaces with `min_depth` decisions (the depth
            curriculum); defaults to the space's maximum depth.

        Returns:
          A list of `num` `Architecture`s.
        """
        return self.sample_with_log_prob(num, depth)[0]

    def sample_with_log_prob(self, num: int = 1, depth: Optional[int] = None):
        """Draws `num` architectures and the log-probability each was drawn with.

        The log-probability (the behaviour policy q of an importance ratio
        pi / q) comes from the same graph call as the sample, at no extra cost.

        Returns:
          (archs, log_probs): a list of `Architecture`s and a float64 array.
        """
        if num < 1:
            raise ValueError(f"num must be positive, got {num}.")
        depths = self._depths(num, depth)
        idx, active, log_prob, _, rng_state = self._sample_fn(tf.constant(depths))
        self._rng_state = rng_state.numpy()
        archs = self._layout.decode(idx.numpy(), active.numpy(), depths)
        return archs, log_prob.numpy().astype(np.float64)

    def encode(self, archs):
        """Validates and encodes architectures as (idx, depth) int32 arrays."""
        return self._layout.encode(archs)

    def log_prob_and_entropy(self, archs):
        """Log-probability and entropy of each architecture under the policy.

        Inactive decisions count for nothing in either.

        Returns:
          Two float32 numpy arrays of shape [len(archs)].
        """
        idx, depth = self.encode(archs)
        _, _, log_prob, entropy = self._score_fn(tf.constant(idx), tf.constant(depth))
        return log_prob.numpy(), entropy.numpy()

    def signature(self):
        """Input specs (idx, depth) of an encoded batch of any size."""
        return [tf.TensorSpec([None, self._layout.width], tf.int32), tf.TensorSpec([None], tf.int32)]

    def scores(self, idx, depth, weights=None):
        """Graph-mode (log_prob, entropy) of an encoded batch, for training.

        `weights`: a weight struct like `self.weights` (the graph's arguments
        when the training step is shared between controllers); default: this
        controller's.
        """
        _, _, log_prob, entropy = self.policy.rollout(
            self.weights if weights is None else weights, depth, idx)
        return log_prob, entropy

    def probabilities(self, archs) -> List[Dict[str, np.ndarray]]:
        """Each decision's distribution along each given architecture.

        Returns:
          One dict per architecture: decision name -> probabilities over its
          values (categorical) or P(source feeds this layer) per source (anchor).
          Inactive decisions are left out.
        """
        idx, depth = self.encode(archs)
        _, active, _, _, probs = self._probs_fn(tf.constant(idx), tf.constant(depth))
        active = active.numpy()
        probs = [p.numpy() for p in probs]
        return [
            {
                d.name: probs[k][b]
                for k, d in enumerate(self.space.decisions)
                if active[b, k]
            }
            for b in range(len(archs))
        ]

    # -- state -------------------------------------------------------------------

    def get_weights(self) -> Dict[str, np.ndarray]:
        """Weights by stable name (layer/variable), independent of creation order."""
        return self.weight_layout.split(self._flat.numpy())

    def set_weights(self, weights: Dict[str, np.ndarray]):
        """Restores weights saved by `get_weights` (all or some); unknown names are an error."""
        layout = self.weight_layout
        missing = sorted(set(weights) - set(layout.names))
        if missing:
            raise ValueError(f"Checkpoint has weights the controller lacks: {missing[:3]}")
        for name, value in weights.items():
            if tuple(np.shape(value)) != layout.shapes[name]:
                raise ValueError(
                    f"Checkpoint weight {name} has shape {np.shape(value)}, "
                    f"expected {layout.shapes[name]}."
                )
        self._flat.assign(layout.join(weights, self._flat.numpy().copy()))

    def get_rng_state(self) -> np.ndarray:
        """The sampling generator's state (a copy), as of the last sample or reset."""
        if self._rng_state is None:
            self._rng_state = self.rng.state.numpy()
        return self._rng_state.copy()

    def set_rng_state(self, state):
        self._rng_state = np.array(state, dtype=np.int64)
        self.rng.reset(self._rng_state)
