"""Checks that the Bazel build names every file under nas_tf/ and tests/.

    python tools/bazel/check_build_srcs.py [--bazel=bazel]

A module added under nas_tf/ (or a test file or helper under tests/) that no
BUILD file names would be missing from every Bazel target, and from a
monorepo that builds nas_tf with Bazel, while pip and pytest still see it.
This asks Bazel which source files the targets under //nas_tf/... and
//tests/... name (their srcs and data, globs expanded) and compares them with
the files in those folders (git's view: tracked and not-ignored files; every
file where there is no git). It also checks that each distribution setup.py
requires (and its `test` extra) has a //third_party target
(third_party/requirements.bzl). Exit status 1, with the list, if not.

CI runs it (.ci/run); docs/bazel.md has the design.
"""

import argparse
import ast
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECKED = ("nas_tf", "tests")
# Files that belong to the build itself, not to a target.
BUILD_FILES = re.compile(r"(^|/)(BUILD(\.bazel)?|[^/]*\.bzl)$")


def files_on_disk(root, folders):
    """Relative paths of the files under `folders`, as git would commit them."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", *folders],
            cwd=root, check=True, capture_output=True, text=True,
        ).stdout
        paths = {p for p in out.split("\0") if p}
    except (OSError, subprocess.CalledProcessError):
        paths = set()
        for folder in folders:
            for dirpath, dirnames, filenames in os.walk(os.path.join(root, folder)):
                dirnames[:] = [d for d in dirnames if d != "__pycache__"]
                for name in filenames:
                    if not name.endswith((".pyc", ".pyo")):
                        paths.add(os.path.relpath(os.path.join(dirpath, name), root))
    return {p for p in paths if os.path.isfile(os.path.join(root, p)) and not BUILD_FILES.search(p)}


def label_to_path(label):
    """`//nas_tf/data:embedded/x.gz` -> `nas_tf/data/embedded/x.gz` (main repository only)."""
    if label.startswith("@"):
        return None
    package, _, name = label.lstrip("/").partition(":")
    return f"{package}/{name}" if package else name


def files_in_build(root, folders, bazel):
    """Relative paths of the source files that targets under `folders` name as srcs or data."""
    targets = " + ".join(f"//{folder}/..." for folder in folders)
    query = f'kind("source file", labels(srcs, {targets}) + labels(data, {targets}))'
    out = subprocess.run(
        [bazel, "query", "--noshow_progress", "--output=label", query],
        cwd=root, check=True, capture_output=True, text=True,
    ).stdout
    return {p for p in (label_to_path(line.strip()) for line in out.splitlines() if line.strip()) if p}


def _normalize(dist):
    return re.sub(r"[-_.]+", "-", dist).lower()


def setup_requirements(root):
    """Distribution names in setup.py's install_requires and `test` extra."""
    tree = ast.parse(open(os.path.join(root, "setup.py"), encoding="utf-8").read())
    specs = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            specs += ast.literal_eval(node.value)
        elif isinstance(node, ast.keyword) and node.arg == "extras_require":
            specs += ast.literal_eval(node.value).get("test", [])
    return {_normalize(re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0]) for spec in specs}


def bazel_requirements(root):
    """Distribution names of //third_party's targets (third_party/requirements.bzl)."""
    tree = ast.parse(open(os.path.join(root, "third_party", "requirements.bzl"), encoding="utf-8").read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "REQUIREMENTS" for t in node.targets):
            return {_normalize(dist) for dist in ast.literal_eval(node.value).values()}
    raise ValueError("third_party/requirements.bzl defines no REQUIREMENTS")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bazel", default=os.environ.get("BAZEL", "bazel"), help="the bazel command")
    args = parser.parse_args(argv)

    problems = []
    named = {p for p in files_in_build(ROOT, CHECKED, args.bazel) if p.split("/")[0] in CHECKED}
    for path in sorted(files_on_disk(ROOT, CHECKED) - named):
        package = os.path.dirname(path)
        while package and not os.path.exists(os.path.join(ROOT, package, "BUILD")):
            package = os.path.dirname(package)
        problems.append(f"{path}: named by no target's srcs or data; add it to {package or '.'}/BUILD")
    for dist in sorted(setup_requirements(ROOT) - bazel_requirements(ROOT)):
        problems.append(f"setup.py requires {dist}, which has no target: add it to third_party/requirements.bzl")

    if problems:
        print("The Bazel build is missing files or packages (docs/bazel.md):", file=sys.stderr)
        for problem in problems:
            print("  " + problem, file=sys.stderr)
        return 1
    print(f"BUILD files name all {len(named)} files of {', '.join(f + '/' for f in CHECKED)} "
          "and every distribution setup.py requires.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
