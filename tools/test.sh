#!/usr/bin/env bash
# The default test suite, as a newcomer runs it on a laptop (a few minutes on
# CPU): a virtual environment (created once, then reused), the package with its
# test extra, then pytest's default set (pytest.ini leaves out the slow and GPU
# tests). Installs no system package.
#
#   bash tools/test.sh                   # in .venv
#   NAS_TF_VENV=.venv-ci bash tools/test.sh
#   bash tools/test.sh -x tests/test_history.py   # pytest arguments replace "tests"
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${NAS_TF_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
fi
. "$venv/bin/activate"
# The install is editable: only a changed setup.py needs it again.
if ! cmp -s setup.py "$venv/.nas_tf_setup.py"; then
  python -m pip install --quiet -e ".[test]"
  cp setup.py "$venv/.nas_tf_setup.py"
fi
if [ "$#" -eq 0 ]; then
  set -- tests
fi
python -m pytest -q "$@"
