"""The fast path's policy: batched, masked rollouts of a space in one traced graph.

The maths of `nas_tf.policy.ReferencePolicy` (Zoph & Le 2017, sec. 3.1-3.3),
computed for a whole batch at once on the controller's flat weight vector
(`layouts.WeightLayout`) and the space's decision table
(`layouts.DecisionTable`): per-sample activity masks stand for the
reference's skipped steps, so one graph serves every depth and every branch
of a conditional space. `tests/test_policy.py` checks that both agree.
"""

import numpy as np
import tensorflow as tf


def lstm_step(weights, x, state):
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



def stateful_uniform(state, shape, minval, maxval):
    """`tf.random.Generator.uniform` on the generator's state variable (Philox).

    The same draws and the same state afterwards as the generator's method,
    with the state an argument of the graph rather than captured by it.
    """
    u = tf.raw_ops.StatefulUniform(resource=state.handle, algorithm=PHILOX, shape=shape,
                                   dtype=tf.float32)
    return u * (maxval - minval) + minval


PHILOX = 1  # tf.random.Algorithm.PHILOX, the algorithm of Generator.from_seed.



class BatchedPolicy:
    """The policy's maths over one space's decision table, on weights given as arguments.

    It holds no weights: every graph takes the controller's weights (and its
    sampling generator's state) as arguments, `w`, a dict with "flat" (the
    weight vector, `layouts.WeightLayout`) and "rng". `rollout` splits the vector
    into a dict with "cells" [(kernel, recurrent kernel, bias)] per LSTM
    layer, "go", "w_prev", "w_curr", "v", "heads" {kind: (kernel, bias)},
    "embeddings" {kind: table} and "rng". So one traced graph serves every
    controller of the same space and configuration in a process
    (`controller._shared_graphs`).
    """

    def __init__(self, table, config, layout):
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
        (`layouts.DecisionTable`). A space of at most `config.unroll_steps` decisions is
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
        static = isinstance(t, int)
        row = self._row(t, params)
        active, always = self._activity(row, carry, depth, static)
        h, states = self._lstm(carry["inp"], carry["states"], params["w"]["cells"])
        noise = None if forced is not None else self._noise(params["w"]["rng"], h)
        args = (h, row, None if always else active, carry, params, forced, noise, static)
        if static:
            step = self._attention_step if row["is_anchor"] else self._softmax_step
            lp, ent, next_inp, record, p = step(*args)
        else:  # Both kinds of step, and the decision's own kept.
            both = zip(self._attention_step(*args), self._softmax_step(*args))
            lp, ent, next_inp, record, p = [tf.where(row["is_anchor"], a, b) for a, b in both]
        out = self._record(t, carry, record, active, p if with_probs else None)
        if not static or row["is_anchor"]:
            out.update(self._remember_anchor(h, row, active, carry, params["w"]["w_prev"]))
        if not always:  # Inactive samples keep their sums, LSTM state and input.
            lp, ent = tf.where(active, lp, 0.0), tf.where(active, ent, 0.0)
            keep = active[:, None]
            states = [tf.where(keep, n, o) for n, o in zip(states, carry["states"])]
            next_inp = tf.where(keep, next_inp, carry["inp"])
        out.update(log_prob=carry["log_prob"] + lp, entropy=carry["entropy"] + ent,
                   states=tuple(states), inp=next_inp)
        return out

    def _row(self, t, params):
        """The decision table's row of step `t` (numpy when unrolled, tensors in the loop)."""
        if isinstance(t, int):
            return dict({name: value[t] for name, value in self._table.arrays.items()}, step=t)
        return {name: tf.gather(value, t) for name, value in params["consts"].items()}

    def _activity(self, row, carry, depth, static):
        """(active [B], always): whether the decision exists, by depth and by conditions.

        `always`: unrolled, a decision with no condition that every depth has
        is known to be active, and its step leaves out the masks (and their
        gradients), about a sixth of NAS-Bench-201's training step.
        """
        table = self._table
        active = depth >= row["min_depth"]
        conditions = int(np.sum(row["cond_used"])) if static else table.max_conditions
        always = static and conditions == 0 and int(row["min_depth"]) <= table.least_depth
        for k in range(conditions):  # Each condition on an earlier value.
            parent = row["cond_parent"][k]
            if static:  # The record so far is a list of steps.
                value, parent_active = carry["rows"][parent][:, 0], carry["actives"][parent]
            else:
                value = tf.gather(carry["rows"][:, :, 0], parent, axis=1)
                parent_active = tf.gather(carry["actives"], parent, axis=1)
            ok = parent_active & tf.gather(row["cond_allowed"][k], value)
            active &= ok if static else ok | ~row["cond_used"][k]
        return active, always

    @staticmethod
    def _lstm(x, states, cells):
        """h_t and the new [h, c] of every layer, through the stacked cells (sec. 3.1)."""
        new_states = []
        for i, cell in enumerate(cells):
            x, (h_i, c_i) = lstm_step(cell, x, states[2 * i : 2 * i + 2])
            new_states += [h_i, c_i]
        return x, new_states

    def _noise(self, rng, h):
        """One uniform row per step, wide enough for either kind of step.

        Drawn whichever step is built, so unrolled and looped rollouts sample
        the same architectures.
        """
        width = self._table.cat_width + self._table.num_anchors
        return stateful_uniform(rng, [tf.shape(h)[0], width], 1e-20, 1.0)

    def _record(self, t, carry, record, active, p):
        """The carry with this step's encoding columns, activity and (p not None) probabilities."""
        out = dict(carry)
        if isinstance(t, int):  # Python lists, joined at the end.
            out["rows"] = carry["rows"] + [record]
            out["actives"] = carry["actives"] + [active]
            out["probs"] = carry["probs"] + [p] if p is not None else carry["probs"]
            return out
        here = tf.one_hot(t, self._table.num_steps, on_value=True, off_value=False, dtype=tf.bool)
        out["rows"] = tf.where(here[None, :, None], record[:, None, :], carry["rows"])
        out["actives"] = tf.where(here[None, :], active[:, None], carry["actives"])
        if p is not None:
            out["probs"] = tf.where(here[None, :, None], p[:, None, :], carry["probs"])
        return out

    def _remember_anchor(self, h, row, active, carry, w_prev):
        """An anchor joins the attention's memory: h_j, W_prev h_j, and whether it exists."""
        slot = tf.one_hot(row["anchor_index"], self._table.num_anchors, on_value=True,
                          off_value=False, dtype=tf.bool) & row["is_anchor"]
        slot = slot[None, :, None]
        proj = tf.matmul(h, w_prev)[:, None, :]
        return dict(anchor_h=tf.where(slot, h[:, None, :], carry["anchor_h"]),
                    anchor_p=tf.where(slot, proj, carry["anchor_p"]),
                    anchor_on=tf.where(slot[..., 0], active[:, None], carry["anchor_on"]))

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

