"""The controller's traced REINFORCE step: loss, clipped gradients and an Adam update.

`nas_tf.reinforce.Reinforce` feeds it padded batches; the loss and its
switches are described there (and in `nas_tf.policy.ReferencePolicy.loss`,
the paper's estimator alone). One step is traced per space and learner
configuration in a process, and shared by every learner over that space: the
controller's weights and Adam's state are its arguments.
"""

import dataclasses
import threading
from typing import Dict

import keras
import tensorflow as tf

from nas_tf import controller as controller_lib
from nas_tf.graph_call import FlatCall


def batch_loss(policy, config, weights, idx, depth, log_q, advantage, pg_weight, mle_weight,
          ent_weight):
    """The loss of a batch whose rows are policy-gradient or top-K rows.

    loss = - sum_k pg_weight_k * objective_k
           - sum_k mle_weight_k * log pi(a_k)
           - sum_k ent_weight_k * H_k,
    objective = A log pi (the paper) or PPO's min(rho A, clip(rho) A).
    """
    c = config
    _, _, log_prob, entropy = policy.rollout(weights, depth, idx)
    if c.ratio_clip is None:
        objective = advantage * log_prob
    else:
        ratio = tf.exp(log_prob - log_q)
        clipped = tf.clip_by_value(ratio, 1.0 - c.ratio_clip, 1.0 + c.ratio_clip)
        objective = tf.minimum(ratio * advantage, clipped * advantage)
    loss = -tf.reduce_sum(pg_weight * objective)
    loss -= tf.reduce_sum(mle_weight * log_prob)
    loss -= tf.reduce_sum(ent_weight * entropy)
    return loss, entropy


def batch_gradients(policy, config, weights, batch):
    """(loss, gradients clipped as configured, norm before clipping, entropy) of a batch.

    `batch` is (idx, depth, columns) as `Reinforce._batch` makes it: the
    per-row floats of `batch_loss` (log_q, advantage, pg_weight, mle_weight,
    ent_weight) come stacked as one [5, rows] tensor, one input instead of five.
    """
    idx, depth, columns = batch
    variables = controller_lib.trainables(weights)
    with tf.GradientTape() as tape:
        loss, entropy = batch_loss(policy, config, weights, idx, depth, *tf.unstack(columns))
    # The weights a space's graph never uses (e.g. the attention of a space
    # without anchors) get zero gradients, and Adam's step on zero slots is zero.
    grads = tape.gradient(loss, variables)
    norm = tf.linalg.global_norm(grads)
    if config.clip_norm is not None:
        grads, _ = tf.clip_by_global_norm(grads, config.clip_norm, use_norm=norm)
    return loss, grads, norm, entropy


def apply_adam(config, adam, variables, grads):
    """Keras's Adam step, one fused kernel per variable (the controller has one).

    The same update as `keras.optimizers.Adam` (alpha = lr sqrt(1 -
    beta2^t) / (1 - beta1^t); m, v moving averages; var -= alpha m /
    (sqrt(v) + eps)) on the learner's slots and step counter (`adam`: "m",
    "v", "iterations", "lr"), traced as one `ResourceApplyAdam` per variable
    instead of Keras's per-variable graph: tracing that was a third of the
    controller's start-up time.
    """
    c = config
    step = tf.cast(adam["iterations"] + 1, tf.float32)
    beta_1_power = tf.pow(tf.constant(c.adam_beta_1, tf.float32), step)
    beta_2_power = tf.pow(tf.constant(c.adam_beta_2, tf.float32), step)
    lr = tf.cast(adam["lr"], tf.float32)
    for var, m, v, g in zip(variables, adam["m"], adam["v"], grads):
        tf.raw_ops.ResourceApplyAdam(
            var=var.handle, m=m.handle, v=v.handle,
            beta1_power=beta_1_power, beta2_power=beta_2_power, lr=lr,
            beta1=tf.constant(c.adam_beta_1, tf.float32),
            beta2=tf.constant(c.adam_beta_2, tf.float32),
            epsilon=tf.constant(c.adam_epsilon, tf.float32),
            grad=tf.convert_to_tensor(g),
        )
    adam["iterations"].assign_add(1)


@dataclasses.dataclass
class AdamState:
    """Adam's state for the controller's weight vector: step counter, rate, m and v.

    Keras variables laid out like the weights (`controller.WeightLayout`);
    `Reinforce.get_slots` names them as `keras.optimizers.Adam` did
    ("controller_adam/<weight>_momentum", ...), so checkpoints keep their names.
    """

    iterations: keras.Variable
    learning_rate: keras.Variable
    m: keras.Variable
    v: keras.Variable


# Training steps by (controller graph key, learner configuration): like the
# controller's graphs, traced once per process and shared by every learner
# over the same space (weights and Adam's state are arguments).
_SHARED_STEPS: Dict[tuple, object] = {}
_SHARED_LOCK = threading.Lock()


def shared_step(controller, config):
    """The traced REINFORCE step, step(weights, adam, *batch) -> (loss, norm, entropy).

    Traced for static shapes: `Reinforce._batch` pads every batch to a fixed
    number of rows, so there is one trace, and a graph without the shape
    arithmetic of a dynamic batch dimension (broadcast gradients, reshapes),
    which was about a quarter of the step's time.
    """
    key = (controller.graph_key, dataclasses.astuple(config))
    with _SHARED_LOCK:
        if key not in _SHARED_STEPS:
            policy = controller.policy  # This space's policy, whatever the controller does later.

            def step(weights, adam, *batch):
                loss, grads, norm, entropy = batch_gradients(policy, config, weights, batch)
                apply_adam(config, adam, controller_lib.trainables(weights), grads)
                return loss, norm, entropy

            _SHARED_STEPS[key] = FlatCall(tf.function(
                step,
                jit_compile=controller.jit_compile,
                autograph=False,  # No tensor-dependent Python control flow in the step.
            ), weight_args=2)
        return _SHARED_STEPS[key]
