"""Where children train: one device, all local GPUs, or a Cloud TPU.

`strategy(kind, tpu)` returns a `tf.distribute.Strategy` to build and compile
a child under. The TPU system is initialised once per process (children train
in a worker process, which owns the TPU while it lives; the search process
never touches it).
"""

from typing import Optional

import tensorflow as tf

KINDS = ("default", "mirrored", "tpu")
_TPU_STRATEGY = None


def strategy(kind: str = "default", tpu: Optional[str] = None) -> tf.distribute.Strategy:
    """The distribution strategy for `kind`.

    Args:
      kind: "default" (the default device: a GPU if there is one, else the
        CPU), "mirrored" (data parallel over every local GPU), or "tpu".
      tpu: for "tpu": the TPU name or grpc address ("" or None: the local TPU
        of a TPU VM, or the one named by the environment).

    Raises:
      ValueError: for an unknown kind, or when no TPU can be reached.
    """
    global _TPU_STRATEGY
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "tpu":
        if _TPU_STRATEGY is None:
            try:
                resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
                tf.config.experimental_connect_to_cluster(resolver)
                tf.tpu.experimental.initialize_tpu_system(resolver)
            except (ValueError, tf.errors.OpError) as e:
                raise ValueError(f"No TPU reachable at {tpu or 'the local host'!r}: {e}") from e
            _TPU_STRATEGY = tf.distribute.TPUStrategy(resolver)
        return _TPU_STRATEGY
    raise ValueError(f"Unknown distribution {kind!r}; choose one of {list(KINDS)}.")
