r"""Benchmark: the controller's sampling and REINFORCE step: unrolled or looped, XLA or not.

For a few spaces (NAS-Bench-201's 6 edges, the paper's CIFAR-10 v1 and v3),
times the start as a search sees it (controller built, the training step
warming up in a background thread, then the first batched sample: what the
first child waits for; then the first update, which waits for the warm-up),
in wall and CPU seconds; a second search's controller over the same space
(first sample and update, s: the graphs are shared within a process); then
one batched sample of m architectures and one REINFORCE update on them (ms),
side by side in one run, for the rollout unrolled over the decisions
(`unroll_steps` large) and as a `tf.while_loop` (`unroll_steps=0`), with
`jit_compile` off and (with --xla) on. The default (`unroll_steps=16`) unrolls
NAS-Bench-201 and loops the CIFAR-10 spaces.

With --reference (alone: --reference --spaces 2 --modes none), it also
times the readable reference policy (`nas_tf.policy.ReferencePolicy`: Keras
layers, eager, one architecture at a time) beside the fast path at its
default settings: one batched sample and one paper REINFORCE update of m
architectures, and their ratio.

  python experiments/controller_speed.py --batch_size=8 --repeats=20
  python experiments/controller_speed.py --modes none --reference 1 --spaces 2
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _spaces():
    from nas_tf import space as space_lib
    from nas_tf.spaces import conv

    ops = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    nb201 = space_lib.Space(
        tuple(space_lib.Categorical(f"edge_{i}", ops, kind="op") for i in range(6)), name="nb201"
    )
    return [nb201, conv.cifar10_v1().space, conv.cifar10_v3().space]


def _time(fn, repeats):
    fn()  # Trace (and compile) first.
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=8, help="m, architectures per batch.")
    parser.add_argument("--repeats", type=int, default=20, help="Timed repetitions.")
    parser.add_argument("--spaces", type=int, default=3, help="How many of nb201, v1, v3 to time.")
    parser.add_argument("--xla", type=int, default=1, help="Also time with XLA (slow to compile).")
    parser.add_argument("--modes", default="unrolled,loop",
                        help="Rollouts to time: unrolled (every decision in the graph), loop.")
    parser.add_argument("--reference", type=int, default=0,
                        help="Also time the reference policy beside the fast path.")
    parser.add_argument("--warm_up", type=int, default=1,
                        help="Warm the training step up in the background, as the oracle does.")
    args = parser.parse_args()

    import tensorflow as tf

    # A new space's graphs trace once each: not the retracing TensorFlow warns about.
    tf.get_logger().setLevel("ERROR")

    from nas_tf.controller import Controller, ControllerConfig
    from nas_tf.reinforce import Reinforce, ReinforceConfig

    device = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
    print(f"device: {device}, m = {args.batch_size}, mean of {args.repeats} calls (ms)")
    print(f"{'space':>12} {'decisions':>9} {'rollout':>9} {'xla':>5} {'sample':>9} {'update':>9} "
          f"{'1st sample':>9} {'cpu s':>7} {'1st update':>9} {'cpu s':>7} {'2nd search':>9}")
    unroll = {"unrolled": 10**9, "loop": 0}
    # TensorFlow's one-time start-up (graph optimizer, kernels) would land on
    # whichever row is timed first: pay it on a one-decision space.
    from nas_tf import space as space_lib

    tiny = space_lib.Space((space_lib.Categorical("x", (0, 1)),), name="warm_up")
    for mode in unroll.values():
        warm = Controller(tiny, ControllerConfig(unroll_steps=mode), seed=0)
        archs, log_q = warm.sample_with_log_prob(2)
        Reinforce(warm, ReinforceConfig(batch_size=2)).update(archs, [0.0, 1.0], log_q)
    for space in _spaces()[: args.spaces]:
        modes = [m for m in args.modes.split(",") if m in unroll]
        for mode, jit in [(m, j) for m in modes for j in (False, True)[: 1 + args.xla]]:
            config = ControllerConfig(jit_compile=jit, unroll_steps=unroll[mode])
            # As the oracle starts: build, the training step warming up in the
            # background, the first sample (what the search waits for), then
            # the first update (which waits for the warm-up).
            start, start_cpu = time.perf_counter(), time.process_time()
            controller = Controller(space, config, seed=0)
            learner = Reinforce(controller, ReinforceConfig(batch_size=args.batch_size))
            if args.warm_up:
                learner.warm_up(background=True)
            archs, log_q = controller.sample_with_log_prob(args.batch_size)
            first_sample = (time.perf_counter() - start, time.process_time() - start_cpu)
            learner.update(archs, [float(i) for i in range(len(archs))], log_q)
            first = (time.perf_counter() - start, time.process_time() - start_cpu)
            # A second search over the same space in this process (another
            # seed): the traced graphs are shared, so it starts at once.
            start = time.perf_counter()
            other = Reinforce(Controller(space, config, seed=1), ReinforceConfig(batch_size=args.batch_size))
            other_archs, other_q = other.controller.sample_with_log_prob(args.batch_size)
            other.update(other_archs, [float(i) for i in range(len(other_archs))], other_q)
            second = time.perf_counter() - start
            sample_ms = _time(lambda: controller.sample(args.batch_size), args.repeats)
            update_ms = _time(lambda: learner.update(archs, [1.0] * len(archs), log_q), args.repeats)
            print(
                f"{space.name:>12} {len(space.decisions):9d} {mode:>9} {str(jit):>5} "
                f"{sample_ms:9.2f} {update_ms:9.2f} {first_sample[0]:9.1f} {first_sample[1]:7.1f} "
                f"{first[0]:9.1f} {first[1]:7.1f} {second:9.2f}"
            , flush=True)
    if args.reference:
        _compare_reference(_spaces()[: args.spaces], args)


def _compare_reference(spaces, args):
    """Reference policy vs fast path (default settings): sample and update of m, in ms."""
    from nas_tf.controller import Controller, ControllerConfig
    from nas_tf.policy import ReferencePolicy
    from nas_tf.reinforce import Reinforce, ReinforceConfig

    m = args.batch_size
    # The reference costs seconds a call on long spaces: fewer repetitions.
    ref_repeats = max(1, args.repeats // 5)
    print(f"\nreference policy vs fast path, m = {m} (ms per call; reference: mean of "
          f"{ref_repeats})")
    print(f"{'space':>12} {'decisions':>9} {'sample':>9} {'ref':>9} {'x':>6} "
          f"{'update':>9} {'ref':>9} {'x':>6}")
    for space in spaces:
        config = ControllerConfig()
        fast = Controller(space, config, seed=0)
        learner = Reinforce(fast, ReinforceConfig.paper())
        reference = ReferencePolicy(space, config, seed=0)
        reference.set_weights(fast.get_weights())
        archs, log_q = fast.sample_with_log_prob(m)
        rewards = [float(i) for i in range(m)]
        fast_sample = _time(lambda: fast.sample(m), args.repeats)
        fast_update = _time(lambda: learner.update(archs, rewards, log_q), args.repeats)
        ref_sample = _time(lambda: reference.sample(m), ref_repeats)
        ref_update = _time(lambda: reference.update(archs, rewards), ref_repeats)
        print(f"{space.name:>12} {len(space.decisions):9d} {fast_sample:9.2f} {ref_sample:9.1f} "
              f"{ref_sample / fast_sample:6.0f} {fast_update:9.2f} {ref_update:9.1f} "
              f"{ref_update / fast_update:6.0f}", flush=True)


if __name__ == "__main__":
    main()
