"""The history's files and their one reading rule (`nas_tf.history`, `nas_tf.jsonl`)."""

import json

import pytest

from nas_tf import history
from nas_tf import jsonl
from nas_tf.report import data as report_data


def _done(trial_id, reward, **extra):
    return {"trial_id": trial_id, "status": "COMPLETED", "reward": reward, **extra}


def _write(path, records, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def test_a_worker_file_wins_over_the_merge_after_a_resume(tmp_path):
    # A distributed search ended (merged), then resumed: worker 1 recorded trial 1 again.
    _write(tmp_path / "history.tuner0.jsonl", [_done("0", 0.5, worker="tuner0")])
    _write(tmp_path / "history.tuner1.jsonl", [_done("1", 0.2, worker="tuner1")])
    history.merge(str(tmp_path))
    with open(tmp_path / "history.tuner1.jsonl", "a") as f:
        f.write(json.dumps(_done("1", 0.9, worker="tuner1")) + "\n")
        f.write(json.dumps(_done("2", 0.1, worker="tuner1")) + "\n")

    records = history.read(str(tmp_path))
    assert [(r["trial_id"], r["reward"]) for r in records] == [("0", 0.5), ("1", 0.9), ("2", 0.1)]
    # The report and the next merge follow the same rule.
    files = report_data.load(str(tmp_path))
    assert [(r["trial_id"], r["reward"], r["worker"]) for r in files.records] == [
        ("0", 0.5, "tuner0"), ("1", 0.9, "tuner1"), ("2", 0.1, "tuner1")
    ]
    assert history.merge(str(tmp_path)) == records
    assert history.read_file(str(tmp_path / "history.jsonl"))["1"]["reward"] == 0.9


def test_files_order_and_the_worker_named_by_the_file(tmp_path):
    _write(tmp_path / "history.jsonl", [_done("0", 0.1)])
    _write(tmp_path / "history.b.jsonl", [_done("1", 0.2)])
    _write(tmp_path / "history.a.jsonl", [_done("2", 0.3)])
    (tmp_path / ".tmp_host_1_0_history.jsonl").write_text("")
    names = [p.rsplit("/", 1)[1] for p in history.files(str(tmp_path))]
    assert names == ["history.jsonl", "history.a.jsonl", "history.b.jsonl"]
    assert [r.get("worker") for r in history.read(str(tmp_path))] == [None, "b", "a"]
    assert history.path(str(tmp_path), "a") == str(tmp_path / "history.a.jsonl")
    assert history.read(str(tmp_path / "missing")) == []


def test_a_torn_last_line_is_ignored_and_the_next_append_cuts_it(tmp_path):
    path = tmp_path / history.HISTORY
    _write(path, [_done("0", 0.1)], tail='{"trial_id": "1", "sta')
    assert [r["trial_id"] for r in history.read(str(tmp_path))] == ["0"]
    history.append(str(path), _done("1", 0.2))
    assert [r["reward"] for r in history.read(str(tmp_path))] == [0.1, 0.2]
    assert path.read_text().count("\n") == 2


@pytest.mark.parametrize(
    "bad, problem",
    [
        ('{"trial_id": "1", "sta', "not a JSON record"),
        ('{"trial_id": "1", "status": "DONE"}', "'status' must be one of"),
        ("[1, 2]", "a record is a JSON object"),
    ],
)
def test_a_corrupt_middle_line_names_the_file_and_line(tmp_path, bad, problem):
    path = tmp_path / "history.w0.jsonl"
    path.write_text(json.dumps(_done("0", 0.1)) + "\n" + bad + "\n" + json.dumps(_done("2", 0.3)) + "\n")
    for read in (history.read, report_data.load):
        with pytest.raises(history.HistoryError, match="line 2") as info:
            read(str(tmp_path))
        assert str(path) in str(info.value) and problem in str(info.value)
        assert (info.value.path, info.value.line) == (str(path), 2)


def test_jsonl_rule_for_any_file(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"a": 2}\n{"a": 3')
    lines, torn = jsonl.read(str(path))
    assert [(line.number, line.value, line.size) for line in lines] == [
        (1, {"a": 1}, 9), (3, {"a": 2}, 9)
    ]
    assert torn == b'{"a": 3'
    path.write_bytes(b'{"a": 1}\n\xff\n{"a": 3}\n')
    with pytest.raises(jsonl.CorruptLineError, match=r"log\.jsonl, line 2: not a JSON record"):
        jsonl.records(str(path))

    class StateError(Exception):
        pass

    path.write_bytes(b'{"a": 1}\n{"b": 2}\n')
    check = lambda v: None if "a" in v else "no 'a'"  # noqa: E731
    with pytest.raises(StateError, match="line 2: no 'a'. Restore it."):
        jsonl.records(str(path), check, error=StateError, hint="Restore it.")
