"""The controller: a Keras LSTM policy that writes architectures token by token.

Zoph & Le 2017, sec. 3.1-3.3. At every step a two-layer LSTM reads the
embedding of the previous token; a softmax head of the current decision's kind
turns its output into a distribution and a token is drawn. An anchor step
instead draws one independent bit per earlier anchor j with set-selection
attention,

    P(j feeds i) = sigmoid(v^T tanh(W_prev h_j + W_curr h_i)),

where h_j is the LSTM output at anchor j's step (sec. 3.3). The next input after
an anchor is the mean of the selected h_j (zeros when none is selected).

The controller only walks a `Space`; it never builds child layers. This is
the fast path: the maths reads as the paper writes it in `nas_tf.policy`
(Keras layers, one architecture at a time), and `tests/test_policy.py`
checks that both agree. Here a whole batch of architectures is sampled, or
scored (log-probability and entropy), by one `tf.function` over the decision
sequence (`rollout.BatchedPolicy`), unrolled for short spaces and a
`tf.while_loop` over a table of the decisions (`layouts.DecisionTable`) for
long ones; per-sample activity masks make inactive decisions cost nothing and
count for nothing, so one traced graph serves every depth and every branch of
a conditional space; all weights live in one flat vector
(`layouts.WeightLayout`). On NAS-Bench-201, where a trial costs milliseconds,
this is a few hundred times faster than the reference
(`experiments/controller_speed.py --reference 1`).
"""

import dataclasses
import json
import threading
import zlib
from typing import Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf

from nas_tf import layouts
from nas_tf import policy as policy_lib
from nas_tf import rollout
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


def _accelerator_present() -> bool:
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


# The fast path's parts, by the names they had here.
WeightLayout = layouts.WeightLayout
_Layout = layouts.ArchitectureEncoding
_Table = layouts.DecisionTable
_Policy = rollout.BatchedPolicy
_lstm_step = rollout.lstm_step
_uniform = rollout.stateful_uniform
_PHILOX = rollout.PHILOX
_slug = policy_lib.slug


class _Graphs:
    """The traced sampling, scoring and probability graphs of one `rollout.BatchedPolicy`."""

    def __init__(self, policy: rollout.BatchedPolicy, jit_compile: bool):
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


def _shared_graphs(key, policy: rollout.BatchedPolicy, jit_compile: bool) -> _Graphs:
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
        self._layout = layouts.ArchitectureEncoding(space)
        kinds = sorted({d.kind for d in space.decisions if not isinstance(d, space_lib.Anchor)})
        self._table = layouts.DecisionTable(space, kinds, {k: widths[k] for k in kinds})
        self.policy = rollout.BatchedPolicy(self._table, self.config, self.weight_layout)
        self.graph_key = (
            json.dumps(space.to_config(), sort_keys=True),
            tuple((k, int(widths[k])) for k in kinds),
            self.weight_layout.key(),
            dataclasses.astuple(self.config),
            self.jit_compile,
        )
        self._graphs = _shared_graphs(self.graph_key, self.policy, self.jit_compile)
        # The weights as the graphs take them (see `rollout.BatchedPolicy`): TensorFlow variables.
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

