"""Malformed input gives a clear error that names what is wrong, never a deep traceback.

Hypothesis feeds the architecture JSON loader, the command line's numeric and
list flags, and the history reader with broken input.
"""

import json

import hypothesis
import hypothesis.strategies as st
import pytest
from absl import app, flags

from nas_tf import cli, search, train
from nas_tf import space as space_lib
from nas_tf.spaces import conv

_SETTINGS = hypothesis.settings(
    max_examples=50, deadline=None, suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture]
)
_SPEC = conv.cifar10_v2(depth=3, filter_sizes=(1, 3), num_filters=(2, 4), strides=(1, 2))
_SPACE = _SPEC.space

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def _valid_values(draw, depth):
    values = {}
    for d in _SPACE.decisions:
        if d.min_depth > depth:
            continue
        if isinstance(d, space_lib.Anchor):
            values[d.name] = [draw(st.integers(0, 1)) for _ in d.sources]
        else:
            values[d.name] = draw(st.sampled_from(d.values))
    return values


def _load(text):
    """Either a valid architecture or an ArchitectureError with a short message."""
    try:
        return _SPACE.architecture_from_json(text)
    except space_lib.ArchitectureError as e:
        assert 0 < len(str(e)) < 600, str(e)
        raise


@_SETTINGS
@hypothesis.given(st.one_of(st.text(max_size=300), st.binary(max_size=100), _json_values.map(json.dumps)))
def test_any_text_loads_or_gives_an_architecture_error(text):
    try:
        arch = _load(text)
    except space_lib.ArchitectureError:
        return
    assert _SPACE.validate(arch) == arch


def test_pathological_json_gives_an_architecture_error():
    for text in ("[" * 100_000, '{"depth": 1, "values": {"x": ' + "9" * 5000 + "}}", None, 3):
        with pytest.raises(space_lib.ArchitectureError):
            _load(text)


@_SETTINGS
@hypothesis.given(st.integers(1, 3), st.data())
def test_a_broken_decision_is_named(depth, data):
    values = _valid_values(data.draw, depth)
    assert _load(json.dumps({"depth": depth, "values": values})).depth == depth
    name = data.draw(st.sampled_from(sorted(values)))
    broken = dict(values)
    how = data.draw(st.sampled_from(["replace", "remove", "rename"]))
    if how == "replace":
        broken[name] = data.draw(_json_values)
    elif how == "remove":
        del broken[name]
    else:
        broken[name + "_typo"] = broken.pop(name)
    try:
        _load(json.dumps({"depth": depth, "values": broken}))
    except space_lib.ArchitectureError as e:
        assert name in str(e)
    else:
        assert how == "replace"  # Another allowed value.


@_SETTINGS
@hypothesis.given(_json_values)
def test_a_bad_depth_is_named(depth):
    hypothesis.assume(not (isinstance(depth, int) and not isinstance(depth, bool) and 1 <= depth <= 3))
    with pytest.raises(space_lib.ArchitectureError, match="depth"):
        _load(json.dumps({"depth": depth, "values": {}}))


# -- the command line -----------------------------------------------------------

# `nas_tf.train` defines its flags in its own registry (`train.FLAGS`).
_NUMERIC = [name for name in sorted(train.FLAGS) if train.FLAGS[name].flag_type() in ("int", "float")]
_LISTS = ["search_filter_sizes", "search_num_filters", "search_strides", "search_pool_at"]


def _config(argv, tmp_path):
    """Parses argv as the command line does; returns the checked config or raises."""
    out = tmp_path / "out"
    try:
        cli.parse(train.FLAGS, ["train", f"--output_dir={out}"] + argv)
        config = train.config_from_flags()
        train.check_config(config)
        return config
    finally:
        train.FLAGS.unparse_flags()
        assert not out.exists()  # Nothing written for a bad command line.


_numbers = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e309", "", " ", "0x10", "1_000", "3.5", "-0"]),
    st.text(max_size=6),
)


def test_numeric_flags_are_found():
    assert {"search_depth", "child_epochs", "child_timeout", "controller_learning_rate"} <= set(_NUMERIC)


@_SETTINGS
@hypothesis.given(st.sampled_from(_NUMERIC), _numbers)
def test_bad_numeric_flags_name_the_flag(tmp_path, name, value):
    hypothesis.assume("\x00" not in value)
    try:
        config = _config([f"--{name}={value}"], tmp_path)
    except (flags.Error, app.UsageError) as e:
        assert f"--{name}" in str(e), str(e)
    else:  # Accepted: a number a search can run with.
        assert "NaN" not in config.to_json() and "Infinity" not in config.to_json()


@_SETTINGS
@hypothesis.given(
    st.sampled_from(_LISTS),
    st.text(alphabet="0123456789,- ax.", max_size=12),
    st.sampled_from(["cifar10_v1", "cifar10_v2", "cifar10_v3"]),
)
def test_bad_list_flags_name_the_flag(tmp_path, name, value, space):
    try:
        config = _config([f"--{name}={value}", f"--search_space={space}", "--search_depth=4"], tmp_path)
    except (flags.Error, app.UsageError) as e:
        assert f"--{name}" in str(e), str(e)
    else:
        conv.get_space(config.space, **config.space_overrides)  # A valid space indeed.


# -- the history reader ---------------------------------------------------------

_records = st.fixed_dictionaries(
    {
        "trial_id": st.sampled_from(["0", "1", "2", "10"]),
        "status": st.sampled_from(["COMPLETED", "FAILED"]),
        "reward": st.floats(0, 1),
    }
)
_bad_text = st.text(max_size=40).filter(
    lambda t: "\n" not in t and t.strip() and _not_json(t)
)
_bad_records = st.one_of(
    _json_values.filter(lambda v: not isinstance(v, dict)).map(json.dumps),
    _records.map(lambda r: {k: v for k, v in r.items() if k != "trial_id"}).map(json.dumps),
    _records.map(lambda r: dict(r, status="DONE")).map(json.dumps),
    _records.map(lambda r: dict(r, trial_id=7)).map(json.dumps),
    _records.map(lambda r: dict(r, status="COMPLETED", reward="high")).map(json.dumps),
)


def _not_json(text):
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


@_SETTINGS
@hypothesis.given(
    st.lists(st.one_of(_records.map(json.dumps), _bad_text, _bad_records), max_size=6),
    st.one_of(st.none(), st.text(max_size=30).filter(lambda t: "\n" not in t), st.just("\xff")),
)
def test_history_reader_skips_a_torn_tail_and_names_a_corrupt_line(tmp_path, lines, torn):
    path = tmp_path / search.HISTORY
    content = "".join(line + "\n" for line in lines) + (torn or "")
    path.write_bytes(content.encode("utf-8", "surrogatepass"))
    good = []
    bad = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record = json.loads(line) if not _not_json(line) else None
        ok = (
            isinstance(record, dict)
            and isinstance(record.get("trial_id"), str)
            and record.get("status") in ("COMPLETED", "FAILED")
            and (record["status"] == "FAILED" or isinstance(record.get("reward"), float))
        )
        if not ok:
            bad = number
            break
        good.append(record)
    if bad is not None:
        with pytest.raises(search.HistoryError) as info:
            search.read_history(str(tmp_path))
        assert f"{path}, line {bad}" in str(info.value)
        assert len(str(info.value)) < 600
    else:
        expected = {r["trial_id"]: r for r in good}
        got = search.read_history(str(tmp_path))
        assert sorted(r["trial_id"] for r in got) == sorted(expected)
        assert all(r == expected[r["trial_id"]] for r in got)


def test_history_reader_binary_garbage_names_the_line(tmp_path):
    ok = json.dumps({"trial_id": "0", "status": "FAILED"})
    (tmp_path / search.HISTORY).write_bytes(ok.encode() + b"\n\xff\xfe{\n" + ok.encode() + b"\n")
    with pytest.raises(search.HistoryError, match="line 2"):
        search.read_history(str(tmp_path))
