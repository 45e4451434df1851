"""Shared command-line plumbing for entry points with their own flag registry.

`nas_tf.train` defines its flags in absl's global registry. The smaller entry
points (`train_lm`, `prepare_ptb`) keep theirs in a module-level
`flags.FlagValues()` so that they can be imported beside `nas_tf.train`
(tests do) without clashing flag names; `flags_parser` lets `app.run` parse
into such a registry.
"""

import math
import sys

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
