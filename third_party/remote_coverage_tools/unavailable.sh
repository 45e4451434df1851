#!/bin/sh
echo "bazel coverage is not available in nas_tf's offline build (third_party/README.md)" >&2
exit 1
