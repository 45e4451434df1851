"""Main of every nas_tf py_test: pytest on the test files named as arguments.

Bazel runs this from the test's runfiles tree (the current directory), so
pytest finds pytest.ini there (the default marker selection: not slow, not
gpu) and tests/conftest.py beside the test files, as in a checkout. Extra
arguments (`-k ...`) narrow the selection. Results go to Bazel's JUnit XML.

After the run, every nas_tf module that was imported must come from the
runfiles tree: an editable install (`pip install -e .`) would otherwise import
a module that no BUILD file names straight from the source tree.
"""

import os
import sys


def _outside_runfiles(root):
    """Names and files of imported nas_tf modules that do not lie under `root`."""
    root = os.path.abspath(root) + os.sep
    found = []
    for name, module in sorted(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if (name == "nas_tf" or name.startswith("nas_tf.")) and path:
            if not os.path.abspath(path).startswith(root):
                found.append(f"{name} ({path})")
    return found


def main(argv):
    # The stub runs this file as a script, so its own directory comes first on
    # sys.path; pytest puts tests/ there itself, as in a checkout.
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]
    import pytest

    args = ["-p", "no:cacheprovider", *argv]
    if os.environ.get("XML_OUTPUT_FILE"):
        args.append("--junitxml=" + os.environ["XML_OUTPUT_FILE"])
    status = int(pytest.main(args))
    if status == pytest.ExitCode.NO_TESTS_COLLECTED:
        print(f"pytest_main: no test selected by {argv}", file=sys.stderr)
    outside = _outside_runfiles(os.environ.get("TEST_SRCDIR") or os.environ.get("RUNFILES_DIR") or os.getcwd())
    if outside:
        print("pytest_main: nas_tf modules imported from outside the runfiles "
              "(missing from the BUILD files?):\n  " + "\n  ".join(outside), file=sys.stderr)
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
