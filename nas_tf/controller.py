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
one `tf.function` over the unrolled decision sequence; per-sample activity
masks make inactive decisions cost nothing and count for nothing, so one traced
graph serves every depth and every branch of a conditional space.
"""

import dataclasses
import hashlib
import re
from typing import Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from nas_tf import space as space_lib


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


def _lstm_step(cell, x, state):
    """One step of a Keras `LSTMCell`, written on its weights.

    The same maths as `cell(x, state)` (gates i, f, c, o; sigmoid recurrent
    activation), without Keras's per-call machinery: the rollout unrolls
    hundreds of steps, and tracing them is the controller's start-up cost.
    """
    h, c = state
    z = tf.matmul(x, cell.kernel) + tf.matmul(h, cell.recurrent_kernel) + cell.bias
    i, f, g, o = tf.split(z, 4, axis=1)
    c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
    h = tf.sigmoid(o) * tf.tanh(c)
    return h, [h, c]


class _Layout:
    """Where each decision's value lives in the integer encoding of a batch.

    A categorical decision takes one column (the value's index); an anchor takes
    one column per source (0/1). Inactive decisions hold zeros.
    """

    def __init__(self, space: space_lib.Space):
        self.space = space
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
            arch = self.space.validate(arch)
            depth[b] = arch.depth or 0
            for name, value in arch.values.items():
                d = self.space[name]
                s = self.slot[name]
                if isinstance(d, space_lib.Anchor):
                    idx[b, s : s + len(value)] = value
                else:
                    idx[b, s] = d.index(value)
        return idx, depth

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
        self._layers_made = 0
        units = config.units
        self._cells = [
            keras.layers.LSTMCell(
                units,
                kernel_initializer=self._init(),
                recurrent_initializer=self._init(),
                bias_initializer=self._init(),
                unit_forget_bias=False,  # The paper draws every weight uniformly.
                name=f"lstm_{i}",
            )
            for i in range(config.num_layers)
        ]
        for cell in self._cells:
            cell.build((None, units))
        att = config.attention_units or units
        self._go = self._dense(units, "go", input_dim=1, use_bias=False)
        self._w_prev = self._dense(att, "attention_prev", use_bias=False)
        self._w_curr = self._dense(att, "attention_curr", use_bias=False)
        self._v = self._dense(1, "attention_v", input_dim=att, use_bias=False)
        self._embeddings: Dict[str, keras.layers.Layer] = {}
        self._heads: Dict[str, keras.layers.Dense] = {}
        self.rng = tf.random.Generator.from_seed(self._seed)
        self.space = None
        self.set_space(space)

    # -- construction ----------------------------------------------------------

    def _init(self):
        r = self.config.init_range
        self._layers_made += 1
        return keras.initializers.RandomUniform(-r, r, seed=self._seed * 1000 + self._layers_made)

    def _dense(self, width, name, input_dim=None, use_bias=True):
        layer = keras.layers.Dense(
            width,
            use_bias=use_bias,
            kernel_initializer=self._init(),
            bias_initializer=self._init(),
            name=name,
        )
        layer.build((None, input_dim or self.config.units))
        return layer

    def set_space(self, space: space_lib.Space):
        """Switches to `space`, keeping the weights of every kind already known.

        New decision kinds get fresh embeddings and heads; existing ones keep
        theirs, so a space that grows during a search (new hyperparameters, a
        deeper curriculum stage) keeps what the controller has learned.
        """
        for d in space.decisions:
            if isinstance(d, space_lib.Anchor) or d.kind in self._heads:
                continue
            slug = _slug(d.kind)
            emb = keras.layers.Embedding(
                d.num_choices,
                self.config.units,
                embeddings_initializer=self._init(),
                name=f"embed_{slug}",
            )
            emb.build((None,))
            self._embeddings[d.kind] = emb
            self._heads[d.kind] = self._dense(d.num_choices, f"head_{slug}")
        self.space = space
        self._layout = _Layout(space)
        # The rollout's Python control flow is all static (it walks the space),
        # so AutoGraph would only add tracing time.
        # One trace per function for any batch size: the batch dimension is None.
        graph = dict(jit_compile=self.jit_compile, autograph=False)
        depth = tf.TensorSpec([None], tf.int32)
        idx = tf.TensorSpec([None, self._layout.width], tf.int32)
        self._sample_fn = tf.function(
            lambda depth: self._rollout(depth, None), input_signature=[depth], **graph
        )
        self._score_fn = tf.function(
            lambda idx, depth: self._rollout(depth, idx), input_signature=[idx, depth], **graph
        )
        self._probs_fn = tf.function(
            lambda idx, depth: self._rollout(depth, idx, with_probs=True),
            input_signature=[idx, depth],
            autograph=False,
        )

    @property
    def jit_compile(self) -> bool:
        """Whether the sampling, scoring and training graphs use XLA."""
        if self.config.jit_compile is None:
            return _accelerator_present()
        return bool(self.config.jit_compile)

    @property
    def layers(self) -> List[keras.layers.Layer]:
        return (
            list(self._cells)
            + [self._go, self._w_prev, self._w_curr, self._v]
            + [self._embeddings[k] for k in sorted(self._embeddings)]
            + [self._heads[k] for k in sorted(self._heads)]
        )

    @property
    def trainable_variables(self):
        """Every trainable weight, in an order fixed by layer names."""
        return [v for layer in self.layers for v in layer.trainable_variables]

    # -- the rollout -------------------------------------------------------------

    def _shape_logits(self, logits):
        if self.config.temperature is not None:
            logits = logits / self.config.temperature
        if self.config.tanh_constant is not None:
            logits = self.config.tanh_constant * tf.tanh(logits)
        return logits

    def _rollout(self, depth, forced, with_probs=False):
        """Samples (forced is None) or scores (forced given) a batch.

        Args:
          depth: int32 [B], the depth of each network (0 if unused).
          forced: int32 [B, width] encoded architectures, or None to sample.
          with_probs: also return each decision's probabilities.

        Returns:
          idx [B, width], active [B, num_decisions] bool, log_prob [B],
          entropy [B], and (with_probs) a list of per-decision probabilities.
        """
        space, layout = self.space, self._layout
        batch = tf.shape(depth)[0]
        units = self.config.units
        zeros = tf.zeros([batch, units])
        states = [[zeros, zeros] for _ in self._cells]
        inp = tf.tile(self._go.kernel, [batch, 1])  # go(ones): the first input.
        log_prob = tf.zeros([batch])
        entropy = tf.zeros([batch])
        columns, actives, probs = [], {}, []
        anchors = {}  # name -> (h, W_prev h, active)
        for d in space.decisions:
            active = tf.ones([batch], tf.bool)
            if d.min_depth:
                active = depth >= d.min_depth
            for cond in d.when:
                parent = space[cond.decision]
                allowed = tf.constant([parent.index(v) for v in cond.values], tf.int32)
                value = columns[layout.slot[cond.decision]]
                hit = tf.reduce_any(tf.equal(value[:, None], allowed[None, :]), axis=1)
                active = active & actives[cond.decision] & hit
            actives[d.name] = active

            x, new_states = inp, []
            for cell, state in zip(self._cells, states):
                x, state = _lstm_step(cell, x, state)
                new_states.append(state)
            h = x

            if isinstance(d, space_lib.Anchor):
                lp, ent, next_inp, bits, p = self._anchor_step(d, h, active, anchors, forced)
                columns.extend(bits)
                anchors[d.name] = (h, tf.matmul(h, self._w_prev.kernel), active)
            else:
                head = self._heads[d.kind]
                logits = self._shape_logits(tf.matmul(h, head.kernel) + head.bias)
                log_p = tf.nn.log_softmax(logits)
                if forced is None:
                    u = self.rng.uniform(tf.shape(logits), minval=1e-20, maxval=1.0)
                    choice = tf.argmax(logits - tf.math.log(-tf.math.log(u)), axis=1)
                    choice = tf.cast(choice, tf.int32)
                else:
                    choice = forced[:, layout.slot[d.name]]
                choice = tf.where(active, choice, 0)
                lp = tf.gather(log_p, choice, batch_dims=1)
                ent = -tf.reduce_sum(tf.exp(log_p) * log_p, axis=1)
                next_inp = tf.gather(self._embeddings[d.kind].embeddings, choice)
                columns.append(choice)
                p = tf.exp(log_p)
            probs.append(p)

            log_prob += tf.where(active, lp, 0.0)
            entropy += tf.where(active, ent, 0.0)
            keep = active[:, None]
            states = [
                [tf.where(keep, n, o) for n, o in zip(new, old)]
                for new, old in zip(new_states, states)
            ]
            inp = tf.where(keep, next_inp, inp)

        idx = tf.stack(columns, axis=1) if columns else tf.zeros([batch, 0], tf.int32)
        active = tf.stack([actives[d.name] for d in space.decisions], axis=1)
        if with_probs:
            return idx, active, log_prob, entropy, probs
        return idx, active, log_prob, entropy

    def _anchor_step(self, d, h, active, anchors, forced):
        """Set-selection attention over the earlier anchors (sec. 3.3)."""
        batch = tf.shape(h)[0]
        if not d.sources:
            empty = tf.zeros([batch, 0])
            return tf.zeros([batch]), tf.zeros([batch]), tf.zeros_like(h), [], empty
        prev_h = tf.stack([anchors[s][0] for s in d.sources], axis=1)  # [B, J, U]
        prev_proj = tf.stack([anchors[s][1] for s in d.sources], axis=1)  # [B, J, A]
        src_active = tf.stack([anchors[s][2] for s in d.sources], axis=1)  # [B, J]
        query = tf.matmul(h, self._w_curr.kernel)[:, None, :]
        v = self._v.kernel[:, 0]
        logits = self._shape_logits(tf.reduce_sum(tf.tanh(prev_proj + query) * v, axis=-1))  # [B, J]
        mask = src_active & active[:, None]
        if forced is None:
            u = self.rng.uniform(tf.shape(logits), minval=0.0, maxval=1.0)
            bits = tf.cast(u < tf.sigmoid(logits), tf.int32)
        else:
            s = self._layout.slot[d.name]
            bits = forced[:, s : s + len(d.sources)]
        bits = tf.where(mask, bits, 0)
        on = tf.cast(bits, tf.float32)
        log_on, log_off = tf.math.log_sigmoid(logits), tf.math.log_sigmoid(-logits)
        lp = tf.reduce_sum(tf.where(mask, on * log_on + (1.0 - on) * log_off, 0.0), axis=1)
        p_on = tf.sigmoid(logits)
        bit_ent = -(p_on * log_on + (1.0 - p_on) * log_off)
        ent = tf.reduce_sum(tf.where(mask, bit_ent, 0.0), axis=1)
        count = tf.reduce_sum(on, axis=1, keepdims=True)
        next_inp = tf.reduce_sum(on[..., None] * prev_h, axis=1) / tf.maximum(count, 1.0)
        return lp, ent, next_inp, tf.unstack(bits, axis=1), p_on

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
        idx, active, log_prob, _ = self._sample_fn(tf.constant(depths))
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

    def scores(self, idx, depth):
        """Graph-mode (log_prob, entropy) of an encoded batch, for training."""
        _, _, log_prob, entropy = self._rollout(depth, idx)
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
        return {v.path: np.asarray(v.numpy()) for v in self.trainable_variables}

    def set_weights(self, weights: Dict[str, np.ndarray]):
        """Restores weights saved by `get_weights`; unknown names are an error."""
        mine = {v.path: v for v in self.trainable_variables}
        missing = sorted(set(weights) - set(mine))
        if missing:
            raise ValueError(f"Checkpoint has weights the controller lacks: {missing[:3]}")
        for name, value in weights.items():
            if tuple(mine[name].shape) != tuple(value.shape):
                raise ValueError(
                    f"Checkpoint weight {name} has shape {value.shape}, "
                    f"expected {tuple(mine[name].shape)}."
                )
            mine[name].assign(value)

    def get_rng_state(self) -> np.ndarray:
        return self.rng.state.numpy()

    def set_rng_state(self, state):
        self.rng.reset(np.asarray(state, dtype=np.int64))
