"""The README and the guides: links that resolve, a README that stays a front door.

Every command in the README is tested:

* the install and the quick start's `pip install -e .`: tools/test.sh and
  .ci/run install the package the same way before running the tests;
* the quick start's `python -m nas_tf.train`: `test_quick_start_runs_as_written`
  below (slow: the search with its defaults, about a minute); the same command
  line on tiny settings is tests/test_train.py's
  `test_cli_writes_what_a_user_gets_and_resumes`;
* `bash tools/test.sh`: what CI runs first (.ci/run);
* the weight-sharing quick search: tests/test_shared_search.py's
  `test_readme_weight_sharing_command_runs` (slow) runs it as written;
* the HyperModel example: tests/test_readme.py runs it as written;
* the `nas_tf.Search` example: tests/test_api.py's
  `test_readme_notebook_example_runs` runs it as written.
"""

import json
import os
import re
import subprocess
import sys

import pytest

# Under Bazel the runfiles tree holds links to the checkout's files; the
# checkout itself has every file a link may name.
ROOT = os.path.dirname(os.path.realpath(os.path.join(os.path.dirname(__file__), "..", "README.md")))

_FENCE = re.compile(r"^\s*(```|~~~)")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_CODE_SPAN = re.compile(r"`[^`]*`")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")

# The README's shell commands, each covered by a test named in the docstring.
_README_COMMANDS = {
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e .",
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && python -m nas_tf.train",
    "bash tools/test.sh",
    "python -m nas_tf.train --flagfile=experiments/cifar_shared_quick.flags",
}


def _markdown_files():
    """README.md and every Markdown file under docs/, relative to the root."""
    files = ["README.md"]
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, "docs")):
        dirnames.sort()
        files += sorted(os.path.relpath(os.path.join(dirpath, f), ROOT) for f in filenames if f.endswith(".md"))
    return files


def _prose_lines(path):
    """(line number, line) outside fenced code blocks."""
    inside = False
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if _FENCE.match(line):
                inside = not inside
                continue
            if not inside:
                yield number, line


def _code_blocks(path, language="bash"):
    """The text of each fenced block of `language`."""
    blocks, current = [], None
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        for line in f:
            if current is None and line.strip() == "```" + language:
                current = []
            elif current is not None and line.strip() == "```":
                blocks.append("".join(current))
                current = None
            elif current is not None:
                current.append(line)
    return blocks


def _slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = _CODE_SPAN.sub(lambda m: m.group(0)[1:-1], heading).lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path):
    seen, anchors = {}, set()
    for _, line in _prose_lines(path):
        match = _HEADING.match(line)
        if match:
            slug = _slug(match.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _links(path):
    """(line number, target) of every link in the file's prose."""
    for number, line in _prose_lines(path):
        for target in _LINK.findall(_CODE_SPAN.sub("", line)):
            yield number, target


@pytest.mark.parametrize("path", _markdown_files())
def test_every_relative_link_resolves(path):
    broken = []
    for number, target in _links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(ROOT, os.path.dirname(path), file_part)) if file_part else os.path.join(ROOT, path)
        if not os.path.exists(resolved):
            broken.append(f"{path}:{number}: {target} (no such file)")
        elif anchor and resolved.endswith(".md") and anchor not in _anchors(os.path.relpath(resolved, ROOT)):
            broken.append(f"{path}:{number}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_readme_is_a_front_door_to_every_guide():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert len(text.split()) <= 1100, "README.md is meant to stay about 1,000 words: move details to a guide."
    linked = {os.path.normpath(t.partition("#")[0]) for _, t in _links("README.md")}
    guides = sorted(f"docs/{name}" for name in os.listdir(os.path.join(ROOT, "docs")) if name.endswith(".md"))
    missing = [g for g in guides if g not in linked]
    assert not missing, f"Guides the README's map does not link: {missing}"
    # Every history page is reachable from the history index.
    history = os.path.join(ROOT, "docs", "history")
    indexed = {os.path.normpath(t) for _, t in _links("docs/history/README.md")}
    pages = sorted(n for n in os.listdir(history) if n.endswith(".md") and n != "README.md")
    assert [p for p in pages if p not in indexed] == []


def test_readme_commands_are_the_tested_ones():
    commands = set()
    for block in _code_blocks("README.md"):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line:
                commands.add(line)
    assert commands == _README_COMMANDS, (
        "The README's commands changed: make sure a test runs each new one, name it in "
        "this file's docstring, then update _README_COMMANDS."
    )


def test_files_named_in_commands_exist():
    """Flag files, scripts and programs that the README's and guides' commands name."""
    named = re.compile(r"(?<![\w./-])((?:experiments|tools|tests|nas_tf)/[\w./-]*\.(?:flags|py|sh|json))")
    missing = []
    for path in _markdown_files():
        if path.startswith(os.path.join("docs", "history")):
            continue  # Commands as they were run then.
        for block in _code_blocks(path):
            for name in named.findall(block):
                if not os.path.exists(os.path.join(ROOT, name)):
                    missing.append(f"{path}: {name}")
    assert not missing, "\n".join(missing)


@pytest.mark.slow
def test_quick_start_runs_as_written(tmp_path):
    """`python -m nas_tf.train` with its defaults, in a fresh directory."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, "-m", "nas_tf.train"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "runs" / "quick"
    for name in ("config.json", "history.jsonl", "best_architecture.json", "best_model.keras"):
        assert (out / name).exists(), name
    records = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines() if line.strip()]
    assert len(records) == json.loads((out / "config.json").read_text())["max_trials"]
