"""The flag-registry convention every entry point follows, and shared flag checks.

Each entry point (`nas_tf.train`, `nas_tf.train_lm`, `nas_tf.prepare_ptb`,
`nas_tf.launch`) keeps its flags in its own module-level registry, so that
any of them can be imported beside the others (tests do; the launcher parses
`nas_tf.train`'s flags to check them before it starts any process) without
clashing flag names such as --output_dir:

    FLAGS = flags.FlagValues()
    define = cli.definer(FLAGS)
    define.string("output_dir", "runs/x", "Where ... (a full sentence).")
    ...
    def main(argv): ...              # rejects stray arguments, builds a config, calls run(config)
    if __name__ == "__main__":
        cli.run(main, FLAGS, __doc__)

`cli.run` parses the command line (flag files included) into that registry
and prints the module doc and the flags on --help / --helpfull.

An entry point that loads TensorFlow calls `cli.quiet_tensorflow()` before
anything imports it, so that a CPU-only machine prints no start-up log (such
as "E0000 ... failed call to cuInit"); the user's own TF_CPP_MIN_LOG_LEVEL
still decides.
"""

import contextlib
import math
import os
import re
import sys
import tempfile
import types

from absl import app
from absl import flags
from absl import logging


AUTO_ON_OFF = ("auto", "on", "off")


def auto_on_off(value: str):
    """Maps an "auto" | "on" | "off" flag to None | True | False."""
    return {"auto": None, "on": True, "off": False}[value]


def check_finite(flag_values: flags.FlagValues) -> None:
    """Raises UsageError naming the first float flag set to NaN or infinity.

    absl parses "nan" and "inf" as floats, and NaN passes every bound.
    """
    for name in sorted(flag_values):
        flag = flag_values[name]
        if flag.flag_type() == "float" and flag.value is not None and not math.isfinite(flag.value):
            raise app.UsageError(f"--{name} must be a finite number, got {flag.value}.")


def flags_parser(flag_values: flags.FlagValues, doc: str):
    """An `app.run(flags_parser=...)` that parses into `flag_values`.

    Args:
      flag_values: the entry point's own registry.
      doc: text printed before the flags' help on --help.
    """

    def parse(argv):
        if any(a in ("-h", "-?", "--help", "--helpshort", "--helpfull") for a in argv[1:]):
            print(doc)
            print(flag_values.get_help())
            sys.exit(0)
        try:
            rest = flag_values(argv)
        except flags.Error as e:
            print(f"FATAL Flags parsing error: {e}\nPass --help to see help on flags.", file=sys.stderr)
            sys.exit(1)
        flags.FLAGS(argv[:1])  # absl's own flags (app.run reads them) keep their defaults.
        return rest

    return parse


def definer(flag_values: flags.FlagValues) -> types.SimpleNamespace:
    """`define.string(...)`, `.integer`, `.float`, `.boolean`, `.enum`, `.list`, `.multi_string`:
    absl's DEFINE_* functions bound to the registry `flag_values`."""

    def bind(define):
        def defined(*args, **kwargs):
            return define(*args, flag_values=flag_values, **kwargs)

        return defined

    return types.SimpleNamespace(
        string=bind(flags.DEFINE_string),
        integer=bind(flags.DEFINE_integer),
        float=bind(flags.DEFINE_float),
        boolean=bind(flags.DEFINE_boolean),
        enum=bind(flags.DEFINE_enum),
        list=bind(flags.DEFINE_list),
        multi_string=bind(flags.DEFINE_multi_string),
    )


def run(main, flag_values: flags.FlagValues, doc: str) -> None:
    """`app.run(main)` with the command line parsed into `flag_values` (see the module doc)."""
    app.run(main, flags_parser=flags_parser(flag_values, doc))


def parse(flag_values: flags.FlagValues, argv) -> list:
    """Parses `argv` (program name first) into `flag_values` afresh; returns the rest.

    For tests and for programs that check another entry point's flags (the
    launcher): earlier values are forgotten first.
    """
    unparse(flag_values)
    return flag_values(list(argv))


def unparse(flag_values: flags.FlagValues) -> None:
    """`flag_values.unparse_flags()` without the INFO line absl logs for it."""
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.WARNING)
    try:
        flag_values.unparse_flags()
    finally:
        logging.set_verbosity(verbosity)


def exit_status(work, statuses) -> int:
    """Runs `work()`; an expected failure is one line on stderr and an exit status.

    Args:
      work: the entry point's work, a function of no arguments.
      statuses: {exception type: exit status} of the failures a user can
        fix (bad input, data to prepare, a sync to retry), printed as
        "nas_tf: <error>" without a traceback; the first matching type wins.
        Anything else propagates with its traceback.

    Returns:
      0 when `work` returned, else the failure's status.
    """
    try:
        work()
    except tuple(statuses) as e:
        status = next(code for kind, code in statuses.items() if isinstance(e, kind))
        print(f"nas_tf: {e}", file=sys.stderr, flush=True)
        return status
    return 0


# TensorFlow's C++ log: 0 everything, 1 no INFO, 2 no WARNING, 3 no ERROR (FATAL only).
LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
_LOG_LINE = re.compile(rb"^([IWEF])\d{4} ")
_SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}
_PRE_INIT = b"WARNING: All log messages before absl::InitializeLog() is called"
_CONTINUATION = b"To enable the following instructions"  # cpu_feature_guard's second line.


def _has_gpu_driver() -> bool:
    return os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/kfd")


def log_level() -> int:
    """Sets `TF_CPP_MIN_LOG_LEVEL` unless the user has; returns it (0 if unreadable).

    3 without a GPU driver (TensorFlow's failed CUDA probe logs an ERROR that
    is no error there), 2 with one (its CUDA errors then matter). Errors still
    reach Python as exceptions.
    """
    level = os.environ.setdefault(LOG_LEVEL_ENV, "2" if _has_gpu_driver() else "3")
    try:
        return int(level)
    except ValueError:
        return 0


@contextlib.contextmanager
def tensorflow_log_filtered():
    """Holds back stderr in the block, then writes it without TensorFlow's log below `log_level()`.

    TensorFlow's libraries log a few lines as they load, before the level
    applies: a block that may import TensorFlow runs in this. Other output
    to stderr passes, once the block ends.
    """
    min_level = log_level()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        saved = None
    if min_level <= 0 or saved is None:
        if saved is not None:
            os.close(saved)
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = _below_level(held.read(), min_level)
            if kept:
                os.write(2, kept)


def quiet_tensorflow() -> None:
    """Imports TensorFlow without its start-up log (`tensorflow_log_filtered`).

    Does nothing if TensorFlow is loaded already.
    """
    if "tensorflow" not in sys.modules:
        with tensorflow_log_filtered():
            import tensorflow  # noqa: F401
        # A checkpoint write logs its "Sharding callback duration" through absl, at INFO.
        import logging

        logging.getLogger("absl").addFilter(
            lambda record: not str(record.msg).startswith("Sharding callback duration"))


def _below_level(text: bytes, min_level: int) -> bytes:
    """`text` without the log lines below `min_level` (a known second line goes with its first)."""
    kept, dropped = [], False
    for line in text.splitlines(keepends=True):
        match = _LOG_LINE.match(line)
        if match or line.startswith(_PRE_INIT):
            dropped = (_SEVERITY[match.group(1)] if match else 1) < min_level
        elif not (dropped and line.startswith(_CONTINUATION)):
            dropped = False
        if not dropped:
            kept.append(line)
    return b"".join(kept)
