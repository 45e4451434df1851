"""The shape of the package: no import circles, a plain-data space language, small modules.

The import graph is read from the source with `ast`, imports inside
functions included (a lazy import is still a dependency), so a circle that
Python tolerates at run time is caught here too. An import of `a.b.c` is an
edge to `a.b.c` (or, for a name in a module, to that module), not to the
`__init__` of its packages.
"""

import ast
import os

import pytest

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
_PACKAGE = os.path.join(_ROOT, "nas_tf")
MAX_LINES = 600


def _modules():
    """Module name -> source path, for every .py file under nas_tf/."""
    found = {}
    for directory, _, names in os.walk(_PACKAGE):
        for name in names:
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            parts = os.path.relpath(path, _ROOT)[: -len(".py")].split(os.sep)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _resolve(name, modules):
    """`name` or its nearest enclosing module that exists (an attribute import names its module)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module, path, modules):
    """The nas_tf modules that `module` imports anywhere in its source."""
    is_package = path.endswith("__init__.py")
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    out = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)):  # fmt: skip
            targets = [str(node.args[0].value)]
        for target in targets:
            if target == "nas_tf" or target.startswith("nas_tf."):
                resolved = _resolve(target, modules)
                if resolved and resolved != module:
                    out.add(resolved)
    return out


def import_graph():
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def _cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result


def test_the_import_graph_has_no_circle():
    graph = import_graph()
    assert "nas_tf.space" in graph and "nas_tf.families" in graph
    assert _cycles(graph) == []


def test_a_circle_is_found():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", ["nas_tf.space", "nas_tf.families"])
def test_the_bottom_layer_imports_nothing_above_it(module):
    """The space language and the family registry are plain data: no Keras, no families."""
    graph = import_graph()
    assert graph[module] <= {"nas_tf.space"}, graph[module]
    source = open(_modules()[module], encoding="utf-8").read()
    for heavy in ("keras", "tensorflow", "numpy"):
        assert f"import {heavy}" not in source


def test_no_module_is_over_600_lines():
    long = {}
    for path in _modules().values():
        lines = sum(1 for _ in open(path, encoding="utf-8"))
        name = os.path.relpath(path, _ROOT).replace(os.sep, "/")
        if lines > MAX_LINES:
            long[name] = lines
    assert long == {}, f"Split these modules (at most {MAX_LINES} lines each): {long}"
