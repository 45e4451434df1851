"""The controller's policy as the paper writes it: a readable reference in Keras layers.

Zoph & Le 2017, sec. 3.1-3.3. A stacked LSTM predicts an architecture's
decisions one after another. At step t it reads x_t, the embedding of the
token chosen at step t - 1 (the first input is a learned "go" vector), and its
output h_t feeds

* for a categorical decision, a softmax head of the decision's kind (sec. 3.1):
  P(a_t = k) = softmax(W_kind h_t + b_kind)_k;
* for an anchor point (skip connections, sec. 3.3), one independent bit per
  earlier anchor j: P(j feeds i) = sigmoid(v^T tanh(W_prev h_j + W_curr h_i)),
  after which the next input is the mean of the selected h_j (zeros if none).

An architecture's log-probability is the sum over its active decisions of
log P(a_t | a_(t-1:1)) and its entropy the sum of each step's entropy (an
inactive decision, by depth or by a condition on an earlier value, takes no
step). REINFORCE (sec. 3.2) follows the gradient
(1/m) sum_k sum_t grad log P(a_t | a_(t-1:1)) (R_k - b).

`ReferencePolicy` is that, one architecture at a time, in eager Keras: its
weights are Keras layers' variables named as the fast `controller.Controller`
names them (`lstm_0/kernel`, `head_<kind>/bias`, ...), so either can load the
other's weights; `tests/test_policy.py` checks that both give the same
samples for the same uniform draws, the same log-probabilities, entropies and
REINFORCE gradients, and the same Adam step. The fast path (one flat weight
vector, batched masked rollouts in a traced graph) is what searches run;
`experiments/controller_speed.py` measures what it saves.
"""

import hashlib
import itertools
import re
from typing import Callable, Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from nas_tf import space as space_lib

# Gumbel-max needs -log(-log u) finite: u is drawn from [1e-20, 1).
MIN_UNIFORM = 1e-20


def slug(kind: str) -> str:
    """A stable, Keras-safe layer name for a decision kind."""
    digest = hashlib.sha1(kind.encode("utf-8")).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_]", "_", kind)[:40] + "_" + digest


class ReferencePolicy:
    """The controller LSTM policy of Zoph & Le 2017 over a `Space`, in Keras layers.

    Args:
      space: the `Space` whose decisions it predicts.
      config: a `controller.ControllerConfig` (units, layers, initial range,
        attention width, temperature, tanh constant; its speed settings are
        ignored).
      seed: seeds the initial weights and the sampling stream.
      learning_rate: Adam's rate for `update` (0.0006: sec. 4.1).
      baseline_decay: the EMA baseline's decay (not given in the paper).

    Attributes:
      cells: the stacked `keras.layers.LSTMCell`s (2 x 35 units: sec. 4.1).
      go: `Dense` whose kernel is the first input.
      attention_prev, attention_curr, attention_v: W_prev, W_curr and v of sec. 3.3.
      embeddings, heads: an `Embedding` and a softmax `Dense` per decision kind.
      optimizer: the `keras.optimizers.Adam` that `update` steps.
      baseline: the EMA baseline b (None before the first update).
    """

    def __init__(self, space: space_lib.Space, config, seed: int = 0,
                 learning_rate: float = 0.0006, baseline_decay: float = 0.95):
        self.space, self.config = space, config
        units, att = config.units, config.attention_units or config.units
        # Every weight, biases and embeddings included, starts in U(-0.08, 0.08) (sec. 4.1).
        seeds = itertools.count(seed * 1000)  # One initializer seed per weight.

        def init():
            return keras.initializers.RandomUniform(-config.init_range, config.init_range,
                                                    seed=next(seeds))

        # unit_forget_bias=False: the paper draws the forget bias like every other weight.
        self.cells = [keras.layers.LSTMCell(units, kernel_initializer=init(),
                                            recurrent_initializer=init(), bias_initializer=init(),
                                            unit_forget_bias=False, name=f"lstm_{i}")
                      for i in range(config.num_layers)]
        self.go = keras.layers.Dense(units, use_bias=False, kernel_initializer=init(), name="go")
        self.attention_prev = keras.layers.Dense(att, use_bias=False, kernel_initializer=init(),
                                                 name="attention_prev")
        self.attention_curr = keras.layers.Dense(att, use_bias=False, kernel_initializer=init(),
                                                 name="attention_curr")
        self.attention_v = keras.layers.Dense(1, use_bias=False, kernel_initializer=init(),
                                              name="attention_v")
        # One embedding and one softmax head per decision kind (its number of values).
        widths = {d.kind: d.num_choices for d in space.decisions
                  if not isinstance(d, space_lib.Anchor)}
        self.embeddings = {k: keras.layers.Embedding(n, units, embeddings_initializer=init(),
                                                     name=f"embed_{slug(k)}")
                           for k, n in sorted(widths.items())}
        self.heads = {k: keras.layers.Dense(n, kernel_initializer=init(), bias_initializer=init(),
                                            name=f"head_{slug(k)}")
                      for k, n in sorted(widths.items())}
        for cell in self.cells:
            cell.build((None, units))
        self.go.build((None, 1))
        for layer in (self.attention_prev, self.attention_curr, *self.heads.values()):
            layer.build((None, units))
        self.attention_v.build((None, att))
        for layer in self.embeddings.values():
            layer.build()
        # Adam (sec. 4.1), with Keras's default betas and epsilon (the paper gives none).
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.baseline: Optional[float] = None
        self.baseline_decay = baseline_decay
        self.seed_generator = keras.random.SeedGenerator(seed)

    # -- weights by name ---------------------------------------------------------

    @property
    def layers(self) -> list:
        """Every Keras layer of the policy."""
        return [*self.cells, self.go, self.attention_prev, self.attention_curr,
                self.attention_v, *self.embeddings.values(), *self.heads.values()]

    @property
    def variables(self) -> Dict[str, keras.Variable]:
        """Every weight by name: "<layer>/<variable>", e.g. "lstm_0/recurrent_kernel"."""
        return {f"{layer.name}/{v.name}": v for layer in self.layers for v in layer.weights}

    def get_weights(self) -> Dict[str, np.ndarray]:
        """Every weight by name, as numpy arrays (`Controller.set_weights` takes them)."""
        return {name: np.asarray(v.numpy()) for name, v in self.variables.items()}

    def set_weights(self, weights: Dict[str, np.ndarray]):
        """Assigns the weights of the given names (e.g. a `Controller.get_weights()`)."""
        variables = self.variables
        for name, value in weights.items():
            if name in variables:
                variables[name].assign(np.asarray(value, np.float32))

    # -- the rollout (sec. 3.1, 3.3) ---------------------------------------------

    def _logits(self, z):
        """Optional logit shaping: z / temperature, then C tanh(z) (not in the paper)."""
        if self.config.temperature is not None:
            z = z / self.config.temperature
        if self.config.tanh_constant is not None:
            z = self.config.tanh_constant * tf.tanh(z)
        return z

    def rollout(self, depth: Optional[int], choose: Callable):
        """Walks the space once, letting `choose` pick each decision's value.

        Args:
          depth: the network's depth (None for a space without depth).
          choose: choose(decision, logits, live) -> the value's index
            (categorical: logits over its values, live None) or the 0/1 bit
            of each live source (anchor: live, the sources that are active,
            and the logits of P(j feeds i) over them).

        Returns:
          (values, log_prob, entropy): the chosen values by decision name
          (anchors' bits over all their sources) and two scalar tensors.
        """
        units = self.config.units
        x = self.go(tf.ones([1, 1]))  # The first input: the "go" embedding.
        states = [[tf.zeros([1, units]), tf.zeros([1, units])] for _ in self.cells]
        values, anchor_h = {}, {}  # anchor_h: h_j of each active anchor j.
        log_prob, entropy = tf.zeros([]), tf.zeros([])
        for d in self.space.decisions:
            if not self.space.is_active(d, values, depth):
                continue  # An inactive decision takes no step.
            # h_t = LSTM(x_t, h_(t-1)), through the stacked cells.
            h = x
            for i, cell in enumerate(self.cells):
                h, states[i] = cell(h, states[i])
            if isinstance(d, space_lib.Anchor):
                live = [s for s in d.sources if s in anchor_h]  # The active sources.
                on, x = [], tf.zeros([1, units])
                if live:
                    h_j = tf.concat([anchor_h[s] for s in live], axis=0)
                    # sec. 3.3: P(j feeds i) = sigmoid(v^T tanh(W_prev h_j + W_curr h_i)).
                    z = self._logits(self.attention_v(
                        tf.tanh(self.attention_prev(h_j) + self.attention_curr(h)))[:, 0])
                    on = np.asarray(choose(d, z, live), np.float32)
                    log_on, log_off = tf.math.log_sigmoid(z), tf.math.log_sigmoid(-z)
                    log_prob += tf.reduce_sum(on * log_on + (1.0 - on) * log_off)
                    p = tf.sigmoid(z)
                    entropy -= tf.reduce_sum(p * log_on + (1.0 - p) * log_off)
                    # The next input: the mean of the selected h_j (zeros if none).
                    x = tf.reduce_sum(on[:, None] * h_j, 0, keepdims=True) / max(on.sum(), 1.0)
                bits = dict(zip(live, on))
                values[d.name] = tuple(int(bits.get(s, 0)) for s in d.sources)
                anchor_h[d.name] = h
            else:
                # sec. 3.1: a softmax head per decision kind.
                z = self._logits(self.heads[d.kind](h)[0])
                log_p = tf.nn.log_softmax(z)
                k = int(choose(d, z, None))
                log_prob += log_p[k]
                entropy -= tf.reduce_sum(tf.exp(log_p) * log_p)
                # The next input: the embedding of the chosen token.
                x = self.embeddings[d.kind](tf.constant([k]))
                values[d.name] = d.values[k]
        return values, log_prob, entropy

    def _depth(self, depth: Optional[int]) -> Optional[int]:
        """The depth a sample is drawn at: the space's maximum by default, None without depth."""
        if not self.space.uses_depth:
            return None
        return self.space.max_depth if depth is None else int(depth)

    def sample(self, num: int = 1, depth: Optional[int] = None,
               uniforms: Optional[Sequence[Dict[str, np.ndarray]]] = None):
        """Draws `num` architectures and their log-probabilities.

        Categorical values by Gumbel-max (argmax_k z_k - log(-log u_k), which
        is a draw from softmax(z)); anchor bits as u_j < P(j feeds i).

        Args:
          num: how many architectures.
          depth: the network depth (spaces with `min_depth`); default: the maximum.
          uniforms: optional, one dict per architecture of decision name ->
            the uniforms in [1e-20, 1) it uses (one per value, or one per
            source); default: fresh draws from `seed_generator`.

        Returns:
          (archs, log_probs): `Architecture`s and a float64 array.
        """
        depth = self._depth(depth)
        archs, log_probs = [], []
        for b in range(num):

            def choose(d, z, live):
                n = len(d.sources) if live is not None else d.num_choices
                if uniforms is not None:
                    u = tf.constant(uniforms[b][d.name], tf.float32)
                else:
                    u = keras.random.uniform((n,), MIN_UNIFORM, 1.0, seed=self.seed_generator)
                if live is not None:
                    u = tf.gather(u, [d.sources.index(s) for s in live])
                    return tf.cast(u < tf.sigmoid(z), tf.int32).numpy()
                return int(tf.argmax(z - tf.math.log(-tf.math.log(u))))

            values, log_prob, _ = self.rollout(depth, choose)
            archs.append(space_lib.Architecture(values, depth=depth))
            log_probs.append(float(log_prob))
        return archs, np.asarray(log_probs, np.float64)

    def log_prob_and_entropy(self, archs: Sequence[space_lib.Architecture]):
        """Log-probability and entropy of each architecture, as [n] tensors."""
        scores = [self._score(self.space.validate(a)) for a in archs]
        return tf.stack([lp for lp, _ in scores]), tf.stack([ent for _, ent in scores])

    def _score(self, arch):
        def choose(d, z, live):
            if live is not None:
                return [arch[d.name][d.sources.index(s)] for s in live]
            return d.index(arch[d.name])

        _, log_prob, entropy = self.rollout(arch.depth, choose)
        return log_prob, entropy

    # -- REINFORCE (sec. 3.2) ----------------------------------------------------

    def loss(self, archs, advantages):
        """The paper's estimator as a loss: -(1/m) sum_k (R_k - b) log P(a_k)."""
        log_prob, _ = self.log_prob_and_entropy(archs)
        return -tf.reduce_mean(tf.constant(advantages, tf.float32) * log_prob)

    def gradients(self, archs, advantages):
        """(loss, {weight name: gradient}) of `loss`."""
        variables = self.variables
        with tf.GradientTape() as tape:
            loss = self.loss(archs, advantages)
        grads = tape.gradient(loss, list(variables.values()))
        return loss, {name: (tf.zeros_like(v) if g is None else tf.convert_to_tensor(g))
                      for (name, v), g in zip(variables.items(), grads)}

    def update(self, archs: List[space_lib.Architecture], rewards) -> float:
        """One Adam step on a batch of m rewards, then the EMA baseline absorbs them.

        The first batch's baseline is its mean reward (the paper does not say).
        """
        rewards = np.asarray(rewards, np.float64)
        if self.baseline is None:
            self.baseline = float(np.mean(rewards))
        loss, grads = self.gradients(archs, rewards - self.baseline)
        variables = self.variables
        self.optimizer.apply([grads[n] for n in variables], list(variables.values()))
        for r in rewards:
            self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * r
        return float(loss)

