"""`nas_tf.journal`: snapshots plus a journal, with change-tracked containers."""

import datetime
import json
import os

import pytest

from nas_tf import journal


def _lines(state_file):
    with open(state_file.journal_path) as f:
        return [json.loads(line) for line in f]


def test_tracked_dict_logs_sets_and_deletes_only():
    d = journal.TrackedDict({"a": 1, "b": 2}, default=int)
    assert d.take_changes() is None  # Initial contents are not changes.
    d["c"] = 3
    d["a"] += 5
    assert d["missing"] == 0  # A defaultdict: the default is inserted, and logged.
    del d["b"]
    assert d.pop("nope", None) is None
    d.update({"e": 9})
    assert d.take_changes() == {
        "keys": {"a": {"set": 6}, "c": {"set": 3}, "missing": {"set": 0}, "e": {"set": 9}},
        "drop": ["b"],
    }
    assert d.take_changes() is None
    d["b"] = 1
    d.pop("b")
    assert d.take_changes() == {"keys": {}, "drop": ["b"]}
    with pytest.raises(KeyError):
        journal.TrackedDict()["x"]


def test_tracked_set_logs_members_added_and_removed():
    s = journal.TrackedSet({"x"})
    s.add("y")
    s.add("z")
    s.discard("z")
    s.remove("x")
    s.discard("never")
    assert s.take_changes() == {"add": ["y"], "remove": ["x", "z"]}
    assert s.take_changes() is None and s == {"y"}


def test_a_journal_line_holds_only_what_changed_in_tracked_containers(tmp_path):
    ids = journal.TrackedDict({f"t{i}": f"h{i}" for i in range(1000)})
    tried = journal.TrackedSet(f"h{i}" for i in range(1000))
    when = journal.TrackedDict()
    state = {"ids": ids, "tried": tried, "when": when, "order": list(range(1000)), "n": 0}
    f = journal.JournaledState(str(tmp_path / "s.json"), appendable=("order",))
    f.save(state)  # The snapshot.
    ids["t1000"] = "h1000"
    tried.add("h1000")
    tried.remove("h3")
    when["t1000"] = datetime.datetime(2026, 11, 30, 12, 0)
    state["order"].append(1000)
    state["n"] = 1
    f.save(state)
    (line,) = _lines(f)
    assert line["op"] == {
        "keys": {
            "ids": {"keys": {"t1000": {"set": "h1000"}}, "drop": []},
            "tried": {"add": ["h1000"], "remove": ["h3"]},
            "when": {"keys": {"t1000": {"set": "2026-11-30T12:00:00"}}, "drop": []},
            "n": {"set": 1},
        },
        "drop": [],
        "tails": [["order", 1000, [1000]]],
    }
    f.save(state)  # Nothing changed: nothing written.
    assert len(_lines(f)) == 1
    loaded = journal.JournaledState(f.path, appendable=("order",)).load()
    assert loaded == json.loads(journal.dumps(state))
    assert loaded["tried"] == sorted(tried)


def test_a_new_container_object_is_saved_whole_and_its_log_forgotten(tmp_path):
    f = journal.JournaledState(str(tmp_path / "s.json"))
    f.save({"d": journal.TrackedDict({"a": 1})})
    replaced = journal.TrackedDict({"b": 2})
    replaced["c"] = 3
    state = {"d": replaced}
    f.save(state)
    assert _lines(f)[-1]["op"]["keys"]["d"] == {"set": {"b": 2, "c": 3}}
    replaced["e"] = 4
    f.save(state)
    assert _lines(f)[-1]["op"]["keys"]["d"] == {"keys": {"e": {"set": 4}}, "drop": []}
    assert journal.JournaledState(f.path).load() == {"d": {"b": 2, "c": 3, "e": 4}}


def test_snapshots_replace_the_journal_and_loading_is_exact(tmp_path):
    f = journal.JournaledState(str(tmp_path / "s.json"), min_snapshot_bytes=200)
    tried = journal.TrackedSet()
    rewards = journal.TrackedDict()
    state = {"tried": tried, "rewards": rewards}
    snapshots = 0
    for i in range(200):
        tried.add(f"h{i % 150}")
        rewards[f"h{i % 150}"] = i / 7
        if i % 11 == 0:
            tried.discard(f"h{i // 2}")
        before = f._journal_bytes
        f.save(state)
        snapshots += f._journal_bytes == 0 and before > 0
        assert journal.JournaledState(f.path).load() == json.loads(journal.dumps(state))
    assert snapshots >= 3


def test_an_appendable_list_that_appears_empty_is_still_saved(tmp_path):
    f = journal.JournaledState(str(tmp_path / "s.json"), appendable=("sub/log",))
    state = {"n": 0}
    f.save(state)  # The snapshot, without "sub".
    state["sub"] = {"log": [], "x": 1}
    f.save(state)
    assert journal.JournaledState(f.path, appendable=("sub/log",)).load() == state
    state["sub"]["log"].append(5)
    f.save(state)
    assert journal.JournaledState(f.path, appendable=("sub/log",)).load() == state


def test_atomic_writes_replace_the_file_whole_or_leave_it_as_it_was(tmp_path):
    from nas_tf import durable

    path = str(tmp_path / "state.json")
    durable.atomic_write_text(path, "old")

    def fail(f):
        f.write(b"half of the new")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        durable.atomic_write(path, fail)
    with pytest.raises(RuntimeError):
        with durable.atomic_path(path) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("killed mid-write")
    assert open(path).read() == "old" and os.listdir(tmp_path) == ["state.json"]
    durable.atomic_write_text(path, "new")
    with durable.atomic_path(str(tmp_path / "model.keras")) as tmp:
        assert tmp.endswith("_model.keras")
        open(tmp, "w").write("weights")
    assert open(path).read() == "new" and open(tmp_path / "model.keras").read() == "weights"
    assert sorted(os.listdir(tmp_path)) == ["model.keras", "state.json"]


def test_in_place_changes_of_plain_values_are_journaled_after_unchanged_saves(tmp_path):
    """A save keeps unchanged parts of its last copy; later in-place edits still show."""
    f = journal.JournaledState(str(tmp_path / "s.json"))
    queue = {"key": [1, 0], "next": 0, "rng": [7, 8]}
    state = {"queue": queue, "config": {"space": [{"name": "a", "values": [1, 2]}]},
             "order": [1, 2], "n": 1}
    f.save(state)  # Snapshot.
    f.save(state)  # Unchanged: nothing written.
    assert os.path.getsize(f.journal_path) == 0
    queue["next"] = 3
    queue["rng"][1] = 9
    state["config"]["space"][0]["values"].append(3)
    state["order"].append(3)
    f.save(state)
    queue["key"][0] = 2  # In place again, in a list the last save kept as it was.
    state["order"][0] = 5  # Not an extension: the list is set whole.
    f.save(state)
    ops = [line["op"] for line in _lines(f)]
    assert ops[0]["keys"]["order"] == {"extend": [3]}
    assert ops[1]["keys"] == {"queue": {"keys": {"key": {"set": [2, 0]}}, "drop": []},
                              "order": {"set": [5, 2, 3]}}
    assert journal.JournaledState(f.path).load() == json.loads(journal.dumps(state))


def _failing_disk(monkeypatch, after_bytes):
    """`os.fsync` fails like a full disk once the file holds more than `after_bytes`."""
    real = os.fsync

    def fsync(fd):
        if os.fstat(fd).st_size > after_bytes:
            raise OSError(28, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_failed_append_changes_nothing_and_the_next_save_writes_it(tmp_path, monkeypatch):
    tried = journal.TrackedSet()
    state = {"order": [], "tried": tried, "n": 0}
    f = journal.JournaledState(str(tmp_path / "s.json"), appendable=("order",))
    f.save(state)  # The snapshot.
    state["order"].append(1)
    tried.add("a")
    f.save(state)
    size = os.path.getsize(f.journal_path)
    state["order"].append(2)
    tried.add("b")
    state["n"] = 2
    with monkeypatch.context() as m:
        _failing_disk(m, size)
        with pytest.raises(OSError, match="No space"):
            f.save(state)
    assert os.path.getsize(f.journal_path) == size  # The torn line was cut back.
    state["order"].append(3)
    f.save(state)  # The disk has room again: one line with both saves' changes.
    loaded = journal.JournaledState(f.path, appendable=("order",)).load()
    assert loaded == {"order": [1, 2, 3], "tried": ["a", "b"], "n": 2}
    assert [line["seq"] for line in _lines(f)] == [2, 3]


def test_a_failed_snapshot_changes_nothing(tmp_path, monkeypatch):
    f = journal.JournaledState(str(tmp_path / "s.json"), min_snapshot_bytes=0)
    state = {"log": journal.TrackedDict(), "n": 0}
    f.save(state)
    state["log"]["x"] = 1
    with monkeypatch.context() as m:
        _failing_disk(m, 0)
        with pytest.raises(OSError):
            f.save(state)
    f.save(state)
    assert journal.JournaledState(f.path).load() == {"log": {"x": 1}, "n": 0}


def test_recovery_paths_torn_last_line_sequence_gap_corrupt_middle_line(tmp_path):
    f = journal.JournaledState(str(tmp_path / "s.json"))
    state = {"n": 0}
    f.save(state)
    for n in range(1, 4):
        state["n"] = n
        f.save(state)
    with open(f.journal_path, "rb") as fh:
        lines = fh.read().split(b"\n")[:-1]
    assert len(lines) == 3

    def load_with(content):
        with open(f.journal_path, "wb") as fh:
            fh.write(content)
        return journal.JournaledState(f.path).load()

    # A kill mid-append: the torn last line is dropped, with a warning.
    with pytest.warns(UserWarning, match="incomplete last line"):
        assert load_with(b"\n".join(lines[:2]) + b"\n" + lines[2][:7]) == {"n": 2}
    # A lost line: the next one does not follow, and the error names the file and line.
    with pytest.raises(journal.CorruptStateError, match=r"line 2: save 4 follows save 2"):
        load_with(lines[0] + b"\n" + lines[2] + b"\n")
    # A damaged line that is not the last one.
    with pytest.raises(journal.CorruptStateError, match=r"line 2: not a JSON record"):
        load_with(lines[0] + b"\n" + b"{not json" + b"\n" + lines[2] + b"\n")
