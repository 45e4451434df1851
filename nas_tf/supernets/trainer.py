"""Training and evaluating a supernet's shared weights: one trace per step function.

`SharedWeights` compiles two `tf.function`s with a fixed input signature,
(x, y, code), the architecture being an int32 tensor: the training step (loss,
gradients, SGD with Nesterov momentum and a cosine learning rate, global-norm
clipping) and the evaluation step (the validation figure's sums). Every
architecture of the space runs through the same two traces; `traces` counts
them (a Python side effect, which runs only while tracing) so tests and
`experiments/weight_sharing.py` can show that no architecture retraces.

The optimizer is written here rather than taken from Keras: its slots are
plain variables of this module, so `tf.train.Checkpoint` saves the weights,
the velocities and the step together and a resumed search continues exactly.
Weights a step does not use get a zero gradient (the untaken branches of a
`Case` op), so their velocity decays as with any momentum optimizer; weight
decay applies to the used weights only (`Supernet.train_loss`).
"""

import math

import tensorflow as tf

from nas_tf.supernets.config import SharedTraining


class SharedWeights(tf.Module):
    """A supernet's weights, their optimizer and its two compiled steps.

    Args:
      supernet: a `nas_tf.supernets.base.Supernet`.
      config: a `SharedTraining`.

    Attributes:
      step: training steps taken (a variable, saved with the weights); a step
        whose loss or gradient norm is not finite counts but changes nothing.
      traces: {"train": n, "eval": n}, traces of each step function so far.
    """

    def __init__(self, supernet, config: SharedTraining = SharedTraining()):
        super().__init__(name="shared_weights")
        self.supernet = supernet
        self.config = config
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.weights = list(supernet.trainable_variables)
        self.velocities = [tf.Variable(tf.zeros_like(w), trainable=False) for w in self.weights]
        self.traces = {"train": 0, "eval": 0}
        code = tf.TensorSpec([supernet.code_length], tf.int32)
        signature = list(supernet.input_signature) + [code]
        # XLA only when asked (None: off). With the batch dimension unknown, TensorFlow
        # 2.21's XLA aborts the process compiling the `Case` ops (a failed check in its
        # constant inference); with a static batch its compile did not end in minutes on a CPU.
        jit = bool(config.jit_compile)
        self._train = tf.function(self._train_step, input_signature=signature, jit_compile=jit)
        self._eval = tf.function(self._eval_step, input_signature=signature, jit_compile=jit)

    def reset(self, weights_from) -> None:
        """Starts afresh from another supernet's weights (same structure): zero velocities, step 0.

        Trains many stand-alone networks through one trace: a supernet
        trained on one fixed code is that network on its own.
        """
        for w, fresh in zip(self.weights, weights_from.trainable_variables):
            w.assign(fresh)
        for v in self.velocities:
            v.assign(tf.zeros_like(v))
        self.step.assign(0)

    def learning_rate(self, step):
        """The cosine schedule at `step` (a tensor)."""
        c = self.config
        t = tf.minimum(tf.cast(step, tf.float32) / float(c.total_steps), 1.0)
        return c.min_learning_rate + 0.5 * (c.learning_rate - c.min_learning_rate) * (
            1.0 + tf.cos(math.pi * t))

    def _train_step(self, x, y, code):
        self.traces["train"] += 1  # Runs while tracing only.
        with tf.GradientTape() as tape:
            loss = self.supernet.train_loss(x, y, code)
        grads = tape.gradient(loss, self.weights)
        grads = [tf.zeros_like(w) if g is None else tf.convert_to_tensor(g)
                 for g, w in zip(grads, self.weights)]
        norm = tf.linalg.global_norm(grads)
        if self.config.clip_norm is not None:
            grads, _ = tf.clip_by_global_norm(grads, self.config.clip_norm, use_norm=norm)
        lr, mu = self.learning_rate(self.step), self.config.momentum

        def update():
            for w, v, g in zip(self.weights, self.velocities, grads):
                v.assign(mu * v + g)
                w.assign_sub(lr * (g + mu * v))  # Nesterov.
            return tf.constant(True)

        # One sampled network whose loss or gradient overflows (a chain of products and
        # relus can, at a wide initial range) must not turn every shared weight into NaN:
        # its step changes nothing (the caller sees the non-finite loss or norm).
        tf.cond(tf.math.is_finite(loss) & tf.math.is_finite(norm), update, lambda: tf.constant(False))
        self.step.assign_add(1)
        return loss, norm

    def _eval_step(self, x, y, code):
        self.traces["eval"] += 1
        return self.supernet.eval_sums(x, y, code)

    def train_step(self, x, y, code):
        """One SGD step of the network `code`; returns (loss, gradient norm) as floats.

        When either is not finite the step was not applied.
        """
        loss, norm = self._train(x, y, tf.convert_to_tensor(code, tf.int32))
        return float(loss), float(norm)

    def evaluate(self, batches, code) -> float:
        """The network `code`'s validation figure over `batches` ((x, y) pairs) pooled."""
        total = count = 0.0
        code = tf.convert_to_tensor(code, tf.int32)
        for x, y in batches:
            s, n = self._eval(x, y, code)
            total, count = total + float(s), count + float(n)
        return self.supernet.score(total, count)
