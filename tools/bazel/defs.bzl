"""Macros for nas_tf's BUILD files (docs/bazel.md)."""

def pytest_test(name, srcs, deps = [], data = [], args = [], conftest = ":conftest", **kwargs):
    """A py_test that runs pytest on `srcs`, the test files, as a checkout would.

    The tests stay plain pytest files (fixtures, marks, conftest helpers): the
    main is //tools/bazel:pytest_main.py, and pytest.ini's default selection
    applies (not slow, not gpu).

    Args:
      name: the test's name.
      srcs: the test files (`test_*.py`) that pytest runs.
      deps: what the tests import.
      data: files the tests read.
      args: more pytest arguments, e.g. `["-k", "flagfile"]` for a subset.
      conftest: the package's conftest.py target; pytest loads it for every
        test of the directory. None where there is none.
      **kwargs: py_test's other attributes (size, tags, ...).
    """
    native.py_test(
        name = name,
        srcs = srcs + ["//tools/bazel:pytest_main.py"],
        main = "//tools/bazel:pytest_main.py",
        args = ["$(rootpath %s)" % src for src in srcs] + args,
        deps = deps + ([conftest] if conftest else []) + ["//third_party:pytest"],
        data = data + ["//:pytest.ini"],
        python_version = "PY3",
        srcs_version = "PY3",
        **kwargs
    )

def _module_main_impl(ctx):
    ctx.actions.expand_template(
        template = ctx.file._template,
        output = ctx.outputs.out,
        substitutions = {"{module}": ctx.attr.module},
    )

_module_main = rule(
    implementation = _module_main_impl,
    attrs = {
        "module": attr.string(mandatory = True),
        "out": attr.output(mandatory = True),
        "_template": attr.label(
            default = "//tools/bazel:module_main.py.tpl",
            allow_single_file = True,
        ),
    },
)

def py_module_binary(name, module, deps = [], **kwargs):
    """A py_binary that runs `python -m <module>`, e.g. nas_tf.train.

    Running the module by name, not its file as a script, keeps it the one
    `nas_tf.train` module that the package's other modules import. Under
    `bazel run` it works in the directory where bazel was called, so relative
    flag-file and output paths behave as with `python -m`.

    Args:
      name: the binary's name.
      module: the module to run as __main__.
      deps: the py_library that holds the module, and anything else it needs.
      **kwargs: py_binary's other attributes.
    """
    main = "_%s_main.py" % name
    _module_main(
        name = "_%s_main" % name,
        module = module,
        out = main,
    )
    native.py_binary(
        name = name,
        srcs = [main],
        main = main,
        deps = deps,
        python_version = "PY3",
        srcs_version = "PY3",
        **kwargs
    )
