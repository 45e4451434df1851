"""A JSON state saved in O(1) amortized bytes: snapshots plus an append-only journal.

Keras Tuner rewrites an oracle's whole state (every trial id, every tried
hash) after every trial: O(n) bytes per trial, O(n^2) over a search. A
`JournaledState` instead appends what changed since the last save (lists that
grew give their new tail, dicts their changed keys, sets their added and
removed members) to `<name>.journal.jsonl`, and rewrites the full snapshot
`<name>` only once the journal has grown as large as the snapshot: the bytes
written per save are then constant on average.

A dict or set that grows with the search (trial ids to hashes, tried
hashes, known rewards) is kept as a `TrackedDict` / `TrackedSet`, which
logs the keys changed since the last save: the journal writes those without
comparing or copying the container, so a save costs O(changes), not O(n).

Every write goes through `nas_tf.durable` (fsynced; the snapshot atomically).
The snapshot records the sequence number of the last save it holds; loading
folds in the journal entries after it, so a kill between writing a snapshot
and emptying the journal loses nothing and applies nothing twice. A journal
line torn by a kill is the last one and was never a completed save: it is
dropped, with a warning. Any other damage raises `CorruptStateError` naming
the file and line.
"""

import json
import os
import warnings
from typing import Any, Dict, Iterable, Optional

from nas_tf import durable
from nas_tf import jsonl

SEQ = "journal_seq"


class CorruptStateError(RuntimeError):
    """A saved state file cannot be read; the message says which and what to do."""


class TrackedDict(dict):
    """A dict that logs which keys were set or deleted since the last save.

    Args:
      default: a factory for missing keys, as `collections.defaultdict`'s
        (Keras Tuner's `_run_times` and `_id_to_hash` are defaultdicts).
    """

    def __init__(self, *args, default=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.default = default
        self._changed, self._dropped = set(), set()

    def __missing__(self, key):
        if self.default is None:
            raise KeyError(key)
        self[key] = value = self.default()
        return value

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self._changed.add(key)
        self._dropped.discard(key)

    def __delitem__(self, key):
        super().__delitem__(key)
        self._changed.discard(key)
        self._dropped.add(key)

    _MISSING = object()

    def pop(self, key, default=_MISSING):
        if key in self:
            value = super().pop(key)
            self._changed.discard(key)
            self._dropped.add(key)
            return value
        if default is TrackedDict._MISSING:
            raise KeyError(key)
        return default

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args, **kwargs):
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def clear(self):
        self._dropped |= set(self)
        self._changed.clear()
        super().clear()

    def popitem(self):
        key, value = super().popitem()
        self._changed.discard(key)
        self._dropped.add(key)
        return key, value

    def changes(self) -> Optional[dict]:
        """The changes since the last `forget_changes` as a `diff` op (None if none)."""
        if not self._changed and not self._dropped:
            return None
        return {"keys": {k: {"set": _copy(self[k])} for k in self._changed},
                "drop": sorted(self._dropped, key=str)}

    def take_changes(self) -> Optional[dict]:
        """`changes()`, then forgets them."""
        op = self.changes()
        self.forget_changes()
        return op

    def forget_changes(self):
        self._changed, self._dropped = set(), set()


class TrackedSet(set):
    """A set that logs members added or removed since the last save (saved as a sorted list)."""

    def __init__(self, *args):
        super().__init__(*args)
        self._added, self._removed = set(), set()

    def add(self, member):
        super().add(member)
        self._added.add(member)
        self._removed.discard(member)

    def discard(self, member):
        if member in self:
            self.remove(member)

    def remove(self, member):
        super().remove(member)
        self._added.discard(member)
        self._removed.add(member)

    def pop(self):
        member = super().pop()
        self._added.discard(member)
        self._removed.add(member)
        return member

    def update(self, *others):
        for other in others:
            for member in other:
                self.add(member)

    def clear(self):
        self._removed |= set(self)
        self._added.clear()
        super().clear()

    def changes(self) -> Optional[dict]:
        """Members added and removed since the last `forget_changes` (None if none)."""
        if not self._added and not self._removed:
            return None
        return {"add": sorted(self._added, key=str), "remove": sorted(self._removed, key=str)}

    def take_changes(self) -> Optional[dict]:
        """`changes()`, then forgets them."""
        op = self.changes()
        self.forget_changes()
        return op

    def forget_changes(self):
        self._added, self._removed = set(), set()


_TRACKED = (TrackedDict, TrackedSet)


def _forget_tracked_changes(state):
    """Clears the change logs of the tracked containers in `state` (walking plain dicts only)."""
    for value in state.values():
        if isinstance(value, _TRACKED):
            value.forget_changes()
        elif isinstance(value, dict):
            _forget_tracked_changes(value)


def _to_json(value):
    """`json.dumps` default: sets as sorted lists, datetimes as ISO strings."""
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value) -> str:
    """Compact JSON of a state that may hold tracked containers and datetimes."""
    return json.dumps(value, separators=(",", ":"), default=_to_json)


def _copy(value):
    """A copy deep enough that later in-place changes of the live state do not show.

    Tracked containers are kept by reference: their own change log says what
    changed, and `diff` recognises them by identity.
    """
    if isinstance(value, _TRACKED):
        return value
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        if all(isinstance(v, (str, int, float, bool, type(None))) for v in value):
            return list(value)  # Flat (hashes, ids): a shallow copy is a full one.
        return [_copy(v) for v in value]
    return value


def diff(old, new, unordered: Iterable[str] = ()) -> Optional[dict]:
    """The change from `old` to `new` as a small JSON op, or None if equal.

    Ops: {"set": v}, {"extend": tail} (a list that grew at its end), {"add":
    [...], "remove": [...]} (keys named in `unordered`: lists whose order does
    not matter), {"keys": {k: op}, "drop": [k, ...]} (dicts). A tracked
    container that is the same object as before gives its change log; a new
    one is set whole.
    """
    return _diff_copy(old, new, frozenset(unordered), "")[0]


def _diff_copy(old, new, unordered, key):
    """(`diff` op or None, a private copy of `new` for the next diff).

    The copy shares every part of `old` that did not change (`old` is itself
    such a copy, which nothing else changes), so a save copies only what
    changed; unchanged lists and leaves are compared at C speed (`==`).
    Plain dicts are walked, since they may hold tracked containers; lists
    never do.
    """
    if isinstance(new, _TRACKED):
        if new is old:
            return new.changes(), new  # Forgotten once the save is on disk.
        return {"set": sorted(new, key=str) if isinstance(new, set) else dict(new)}, new
    if key in unordered and isinstance(old, list) and isinstance(new, list):
        old_set, new_set = set(old), set(new)
        if old_set == new_set:
            return None, old
        return {"add": sorted(new_set - old_set), "remove": sorted(old_set - new_set)}, list(new)
    if isinstance(old, dict) and isinstance(new, dict):
        ops, copy = {}, {}
        for k, v in new.items():
            if k not in old:
                ops[k], copy[k] = {"set": v}, _copy(v)
                continue
            op, copy[k] = _diff_copy(old[k], v, unordered, f"{key}/{k}" if key else k)
            if op is not None:
                ops[k] = op
        drop = [k for k in old if k not in new]
        if not ops and not drop:
            return None, old  # Every value is old's own (or the same tracked container).
        return {"keys": ops, "drop": drop}, copy
    if isinstance(old, list) and isinstance(new, list) and len(new) >= len(old):
        if new[: len(old)] == old:
            if len(new) == len(old):
                return None, old
            tail = _copy(new[len(old) :])
            return {"extend": tail}, old + tail
    if type(old) is type(new) and old == new:
        return None, old
    return {"set": new}, _copy(new)


def apply(value, op):
    """Applies a `diff` op to `value` (in place where it can) and returns the result."""
    if "set" in op:
        return _copy(op["set"])
    if "extend" in op:
        value.extend(_copy(op["extend"]))
        return value
    if "add" in op:
        # Kept a set while loading (many ops on one large set); `_sets_to_lists` ends it.
        members = value if isinstance(value, set) else set(value or ())
        members.update(op["add"])
        members.difference_update(op["remove"])
        return members
    for k in op["drop"]:
        value.pop(k, None)
    for k, sub in op["keys"].items():
        value[k] = apply(value.get(k), sub)
    return value


def _sets_to_lists(state):
    for key, value in state.items():
        if isinstance(value, set):
            state[key] = sorted(value, key=str)
        elif isinstance(value, dict):
            _sets_to_lists(value)


class JournaledState:
    """Saves and loads one JSON state dict at `path` (+ `path.journal.jsonl`).

    Args:
      path: the snapshot file.
      unordered: "/"-joined key paths of lists kept as sets (e.g.
        "tried_so_far"), diffed by membership.
      min_snapshot_bytes: the journal may grow to at least this many bytes
        before a snapshot replaces it.
      appendable: "/"-joined key paths of lists that only grow at their end
        (logs): each save writes their new tail in O(1). A list that shrank
        or whose last saved element changed is saved whole instead.
    """

    def __init__(self, path: str, unordered: Iterable[str] = (), min_snapshot_bytes: int = 1 << 16,
                 appendable: Iterable[str] = ()):
        self.path = path
        self.journal_path = path + ".journal.jsonl"
        self.unordered = frozenset(unordered)
        # "/"-joined paths of lists that only ever grow at their end: saved by
        # their new tail in O(1), without comparing or copying their prefix.
        self.appendable = tuple(tuple(p.split("/")) for p in appendable)
        self._lengths = {}
        self.min_snapshot_bytes = min_snapshot_bytes
        self._last: Optional[Dict[str, Any]] = None
        self._seq = 0
        self._snapshot_bytes = 0
        self._journal_bytes = 0
        self.bytes_written = 0

    def save(self, state: Dict[str, Any]) -> None:
        """Records `state`: a journal line, or a new snapshot when the journal is large.

        A save is all or nothing: if a write fails (a full disk), the error
        propagates and nothing in memory changes, so the next save writes
        the same changes again and the files stay a valid history.
        """
        if self._last is not None and self._journal_bytes < max(
            self._snapshot_bytes, self.min_snapshot_bytes
        ):
            rest, tails, lengths = self._split(state)
            op, copy = _diff_copy(self._last, rest, self.unordered, "")
            if tails:
                op = op or {"keys": {}, "drop": []}
                op["tails"] = tails
            if op is None:
                return
            line = dumps({"seq": self._seq + 1, "op": op})
            durable.append_line(self.journal_path, line)
            self._journal_bytes += len(line) + 1
            self.bytes_written += len(line) + 1
        else:
            text = dumps(dict(state, **{SEQ: self._seq + 1}))
            durable.atomic_write_text(self.path, text)
            self._snapshot_bytes, self._journal_bytes = len(text), 0
            self.bytes_written += len(text)
            rest, _, lengths = self._split(state, record_only=True)
            copy = _copy(rest)
        self._seq += 1
        self._lengths, self._last = lengths, copy
        _forget_tracked_changes(state)  # Whatever they logged is now on disk.
        if self._journal_bytes == 0:
            durable.fault_point("oracle_save_snapshot")
            # Entries up to _seq are in the snapshot; the journal restarts empty.
            # (Should this fail, the next line, numbered after the snapshot, still loads.)
            durable.atomic_write_text(self.journal_path, "")

    def _split(self, state, record_only=False):
        """(state without the appendable lists, [[path, start, tail], ...], their lengths).

        The lengths (with each list's last element) are what the next save
        compares against, once this one is on disk; with `record_only` no
        tails are computed (after a snapshot, which holds them whole).
        """
        rest = dict(state)
        tails, lengths = [], dict(self._lengths)
        for path in self.appendable:
            parent, holder = state, rest
            for key in path[:-1]:
                if not isinstance(parent.get(key), dict):
                    parent = None
                    break
                parent = parent[key]
                holder[key] = holder = dict(holder[key])
            if parent is None or not isinstance(parent.get(path[-1]), list):
                continue
            value = holder.pop(path[-1])
            seen = path in self._lengths
            known, last = self._lengths.get(path, (0, None))
            unchanged = len(value) >= known and (known == 0 or value[known - 1] == last)
            if not record_only:
                start = known if unchanged else 0
                # A list seen for the first time is written even when empty:
                # the key must exist in the loaded state.
                if len(value) > start or not unchanged or not seen:
                    tails.append(["/".join(path), start, value[start:]])
            lengths[path] = (len(value), _copy(value[-1]) if value else None)
        return rest, tails, lengths

    def load(self) -> Optional[Dict[str, Any]]:
        """The last saved state, or None if there is none."""
        if not os.path.exists(self.path):
            return None
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
            state = json.loads(text)
            if not isinstance(state, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise CorruptStateError(
                f"Search state {self.path} is unreadable ({e}). It is written atomically, so "
                "something outside nas_tf damaged it: restore it from a backup, or start "
                "afresh with --overwrite (finished children stay in history.jsonl)."
            ) from e
        seq = int(state.pop(SEQ, 0))
        self._snapshot_bytes = len(text)
        self._journal_bytes = 0
        for number, entry, size in self._journal_entries():
            self._journal_bytes += size
            if entry["seq"] <= seq:
                continue  # Already in the snapshot (a kill before the journal was emptied).
            if entry["seq"] != seq + 1:
                raise CorruptStateError(
                    f"{self.journal_path}, line {number}: save {entry['seq']} follows save "
                    f"{seq}; the journal does not belong to {self.path}. Restore both files "
                    "together, or start afresh with --overwrite."
                )
            state = apply(state, entry["op"])
            for path, start, tail in entry["op"].get("tails", []):
                *parents, key = path.split("/")
                holder = state
                for p in parents:
                    holder = holder.setdefault(p, {})
                holder[key] = holder.get(key, [])[:start] + tail
            seq = entry["seq"]
        _sets_to_lists(state)
        self._seq = seq
        rest, _, self._lengths = self._split(state, record_only=True)
        self._last = _copy(rest)
        return state

    def _journal_entries(self):
        if not os.path.exists(self.journal_path):
            return
        lines, torn = jsonl.read(
            self.journal_path, _entry_problem, error=CorruptStateError,
            hint="Lines other than the last are only ever written whole, so the file was "
                 "damaged: restore it, or start afresh with --overwrite.")
        if torn:
            warnings.warn(
                f"{self.journal_path}: dropping an incomplete last line (a save interrupted "
                "by a kill; the search resumes from the save before it)."
            )
        for line in lines:
            yield line.number, line.value, line.size


def _entry_problem(entry) -> Optional[str]:
    """What makes a journal line no {seq, op} record, or None."""
    if (isinstance(entry, dict) and isinstance(entry.get("seq"), int)
            and isinstance(entry.get("op"), dict)):
        return None
    return "not a {seq, op} record"
