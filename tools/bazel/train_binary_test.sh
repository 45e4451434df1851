#!/usr/bin/env bash
# `bazel run //nas_tf:train -- --flagfile=experiments/cifar_quick.flags` on a
# smaller budget (2 children of 1 epoch): the py_binary's `python -m` wrapper,
# its runfiles, the flag files (read relative to the current directory, the
# runfiles tree) and the worker process it starts.
set -euo pipefail
train="$1"
shift
out="$TEST_TMPDIR/run"
"$train" --flagfile=experiments/cifar_quick.flags --output_dir="$out" \
  --search_max_trials=2 --child_epochs=1 "$@"
for f in config.json history.jsonl best_architecture.json; do
  if [ ! -s "$out/$f" ]; then
    echo "train_binary_test: $out/$f is missing or empty" >&2
    exit 1
  fi
done
echo "train_binary_test: a 2-child search wrote $(ls "$out" | tr '\n' ' ')"
