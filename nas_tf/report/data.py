"""What a report reads: the files a search writes, read while it may still run.

* `config.json`: the settings (space, dataset, budget);
* `history.jsonl`, and the per-worker `history.<worker>.jsonl` of a
  distributed search: one record per finished child;
* `controller_updates.jsonl` (in the Keras Tuner project `search/`, or the
  output directory itself): the controller's figures per update
  (`nas_tf.summaries`).

A running search may be appending: a last line without its newline is
skipped, and so is any line that is not a record (the report shows what it
can; `python -m nas_tf.train` is the place that refuses a corrupt history).
"""

import dataclasses
import glob
import json
import math
import os
import re
from typing import List, Optional

from nas_tf import space as space_lib
from nas_tf import summaries

_WORKER_FILE = re.compile(r"^history\.(.+)\.jsonl$")


@dataclasses.dataclass
class SearchFiles:
    """A search's files, parsed.

    Attributes:
      output_dir: the search's output directory.
      config: `config.json` (empty if missing).
      records: one per child, by trial order; a record of a distributed
        search carries "worker" (its tuner id) if its file or record named one.
      updates: the controller's per-update records, by update number.
    """

    output_dir: str
    config: dict
    records: List[dict]
    updates: List[dict]

    @property
    def completed(self) -> List[dict]:
        return [r for r in self.records if r.get("status") == "COMPLETED" and _finite(r.get("reward"))]

    @property
    def failed(self) -> List[dict]:
        return [r for r in self.records if r.get("status") != "COMPLETED"]

    @property
    def workers(self) -> List[str]:
        return sorted({str(r["worker"]) for r in self.records if r.get("worker") is not None})

    def best(self) -> Optional[dict]:
        """The best child: highest reward, earliest on ties (as the search exports it)."""
        best = None
        for r in self.completed:
            if best is None or r["reward"] > best["reward"]:
                best = r
        return best

    def architecture(self, record: dict) -> Optional[space_lib.Architecture]:
        arch = record.get("architecture")
        if not isinstance(arch, dict):
            return None
        try:
            return space_lib.Architecture.from_json(json.dumps(arch))
        except space_lib.ArchitectureError:
            return None


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _order(trial_id: str):
    return (0, int(trial_id), trial_id) if trial_id.isdigit() else (1, 0, trial_id)


def read_records(path: str, worker: Optional[str] = None) -> List[dict]:
    """The whole records of a history file (torn or foreign lines skipped)."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    lines.pop()  # After the last newline: empty, or a line being written.
    out = []
    for raw in lines:
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            continue
        if isinstance(record, dict) and isinstance(record.get("trial_id"), str):
            if worker is not None:
                record.setdefault("worker", worker)
            if record.get("worker") is None and record.get("tuner_id") is not None:
                record["worker"] = record["tuner_id"]
            out.append(record)
    return out


def load(output_dir: str) -> SearchFiles:
    """Reads a search's output directory.

    Raises:
      FileNotFoundError: if `output_dir` holds no history file and no
        `config.json` (not a search's output directory), naming it.
    """
    history = os.path.join(output_dir, "history.jsonl")
    worker_files = sorted(
        p for p in glob.glob(os.path.join(output_dir, "history.*.jsonl"))
        if _WORKER_FILE.match(os.path.basename(p))
    )
    config_path = os.path.join(output_dir, "config.json")
    if not (os.path.exists(history) or worker_files or os.path.exists(config_path)):
        raise FileNotFoundError(
            f"{output_dir} holds no history.jsonl and no config.json: it is not the "
            "output directory of a nas_tf search (python -m nas_tf.train --output_dir=...)."
        )
    config = {}
    if os.path.exists(config_path):
        try:
            with open(config_path, encoding="utf-8") as f:
                config = json.load(f)
        except ValueError:
            config = {}
    by_id = {}
    for path in worker_files:
        worker = _WORKER_FILE.match(os.path.basename(path)).group(1)
        for r in read_records(path, worker):
            by_id[r["trial_id"]] = r
    if os.path.exists(history):
        for r in read_records(history):
            # The merged history of a finished distributed search: keep the worker known.
            if r.get("worker") is None and r["trial_id"] in by_id:
                r["worker"] = by_id[r["trial_id"]].get("worker")
            by_id[r["trial_id"]] = r
    records = [by_id[k] for k in sorted(by_id, key=_order)]
    updates = []
    for candidate in (
        os.path.join(output_dir, "search", summaries.CONTROLLER_LOG),
        os.path.join(output_dir, summaries.CONTROLLER_LOG),
    ):
        if os.path.exists(candidate):
            updates = summaries.read_controller_log(candidate)
            break
    return SearchFiles(output_dir, config if isinstance(config, dict) else {}, records, updates)
