"""A search's history: one JSON record per finished child, and its files.

The one reader and writer of the history, for the search, the API and the
report. A record holds the trial id, its status (COMPLETED or FAILED), the
architecture and the child's figures or the reason it failed.

The files, one writer each so that appends never interleave:

* `history.jsonl`: a single-process search appends its children here; at the
  end of a distributed search the chief rewrites it (atomically) with every
  worker's records, the merge;
* `history.<tuner id>.jsonl`: each worker of a distributed search appends its
  own children here, and the file stays after the merge.

The rule that reads them together (`read`): `history.jsonl` first, then the
per-worker files by name, and a trial's last record wins, within a file and
across files. So a per-worker file wins over the merge. The merge is a copy
made when a search ends; a distributed search that is merged and then resumed
appends its new records (a trial trained again after the oracle's state was
lost gets a second one) to the per-worker files, and the merge is stale until
the chief merges again, with this same rule. With the merge first, the old
copy would hide the new record and the next merge would keep it for good.
A record from a per-worker file carries "worker": its tuner id.

Each file is read by `nas_tf.jsonl`'s rule: a torn last line (a kill in the
middle of an append) is ignored; any other line that is not a record is a
`HistoryError` naming the file and the line.
"""

import json
import os
import re
from typing import Dict, List, Optional

from nas_tf import durable
from nas_tf import jsonl

HISTORY = "history.jsonl"
STATUSES = ("COMPLETED", "FAILED")
_WORKER_FILE = re.compile(r"^history\.(.+)\.jsonl$")


class HistoryError(jsonl.CorruptLineError):
    """A history file holds a line that is not a trial record (file and line named)."""


def path(output_dir: str, tuner_id: Optional[str] = None) -> str:
    """The file a process appends its finished children to.

    Args:
      output_dir: the search's output directory.
      tuner_id: a distributed search worker's tuner id; None for a
        single-process search (and for the chief's merge).
    """
    if tuner_id is None:
        return os.path.join(output_dir, HISTORY)
    return os.path.join(output_dir, f"history.{tuner_id}.jsonl")


def worker_of(file_path: str) -> Optional[str]:
    """The tuner id in a per-worker file's name, or None for `history.jsonl`."""
    name = os.path.basename(file_path)
    match = _WORKER_FILE.match(name)
    return None if name == HISTORY or match is None else match.group(1)


def files(output_dir: str) -> List[str]:
    """`history.jsonl` (if any), then every worker's `history.<tuner id>.jsonl`, by name.

    The order of the reading rule: a later file's record of a trial wins.
    """
    merged = os.path.join(output_dir, HISTORY)
    names = os.listdir(output_dir) if os.path.isdir(output_dir) else ()
    workers = sorted(os.path.join(output_dir, n) for n in names if worker_of(n) is not None)
    return ([merged] if os.path.exists(merged) else []) + workers


def record_problem(record) -> Optional[str]:
    """What makes `record` no trial record, or None if it is one."""
    if not isinstance(record, dict):
        return f"a record is a JSON object, got {type(record).__name__}"
    for field in ("trial_id", "status"):
        if field not in record:
            return f"the record has no {field!r}"
    if not isinstance(record["trial_id"], str) or not record["trial_id"]:
        return f"'trial_id' must be a non-empty string, got {record['trial_id']!r}"
    if record["status"] not in STATUSES:
        return f"'status' must be one of {list(STATUSES)}, got {record['status']!r}"
    if record["status"] == "COMPLETED":
        reward = record.get("reward")
        if not isinstance(reward, (int, float)) or isinstance(reward, bool):
            return f"a COMPLETED record needs a numeric 'reward', got {reward!r}"
    if "architecture" in record and not isinstance(record["architecture"], dict):
        return "'architecture' must be a JSON object"
    return None


def read_file(file_path: str) -> Dict[str, dict]:
    """Trial id -> last record of one history file.

    A record of a per-worker file without a "worker" gets the file's tuner id.

    Raises:
      HistoryError: naming the file and line of a whole line that is not a
        trial record (`record_problem`).
    """
    worker = worker_of(file_path)
    records = {}
    for record in jsonl.records(
        file_path,
        record_problem,
        error=HistoryError,
        hint="The history is corrupt: remove or repair that line to resume.",
    ):
        if worker is not None and record.get("worker") is None:
            record["worker"] = worker
        records[record["trial_id"]] = record
    return records


def trial_order(trial_id: str):
    """Sort key of trial ids: numbers by value, then any other id by text."""
    return (0, int(trial_id), trial_id) if trial_id.isdigit() else (1, 0, trial_id)


def read(output_dir: str) -> List[dict]:
    """The history records, one per trial, from every history file of `output_dir`.

    The files of `files`, in that order; a trial's last record wins (the
    rule in this module's docstring). A missing directory or file is an empty
    history.

    Returns:
      The records, sorted by trial id (`trial_order`).

    Raises:
      HistoryError: naming the file and line, for a whole line that is not a
        JSON object with a string "trial_id" and a "status" of COMPLETED or
        FAILED (a COMPLETED one with a numeric "reward").
    """
    records = {}
    for file_path in files(output_dir):
        records.update(read_file(file_path))
    return [records[k] for k in sorted(records, key=trial_order)]


def append(file_path: str, record: dict) -> None:
    """Appends one record durably (`nas_tf.durable.append_line`)."""
    durable.append_line(file_path, json.dumps(record, sort_keys=True))


def merge(output_dir: str) -> List[dict]:
    """Writes every history file's records (`read`) into `history.jsonl` atomically.

    The per-worker files stay: they win over the merge if the search goes on.

    Returns:
      The records written.
    """
    records = read(output_dir)
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    durable.atomic_write_text(path(output_dir), text)
    return records
