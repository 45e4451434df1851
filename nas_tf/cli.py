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
"""

import math
import sys
import types

from absl import app
from absl import flags


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
    flag_values.unparse_flags()
    return flag_values(list(argv))


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
