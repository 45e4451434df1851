"""What a report reads: the files a search writes, read while it may still run.

* `config.json`: the settings (space, dataset, budget);
* `history.jsonl`, and the per-worker `history.<worker>.jsonl` of a
  distributed search: one record per finished child, read by
  `nas_tf.history` (the search's own reader and rule);
* `controller_updates.jsonl` (in the Keras Tuner project `search/`, or the
  output directory itself): the controller's figures per update
  (`nas_tf.summaries`).

A recurrent cell whose loss diverged is a completed child with reward 0,
"diverged": true and no perplexity (`nas_tf.tasks.CellTask`): it counts as
trained, and ranks below any child that trained to the same reward.

A running search may be appending: a last line without its newline is
skipped; any other line that is not a record is a `nas_tf.history.HistoryError`
naming the file and line, as it is for the search.
"""

import dataclasses
import json
import math
import os
from typing import List, Optional

from nas_tf import history as history_lib
from nas_tf import space as space_lib
from nas_tf import summaries


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
    def diverged(self) -> List[dict]:
        """Completed children whose loss diverged (reward 0, no perplexity)."""
        return [r for r in self.completed if r.get("diverged")]

    @property
    def failed(self) -> List[dict]:
        return [r for r in self.records if r.get("status") != "COMPLETED"]

    @property
    def workers(self) -> List[str]:
        return sorted({str(r["worker"]) for r in self.records if r.get("worker") is not None})

    def best(self) -> Optional[dict]:
        """The best child: highest reward, earliest on ties (as the search exports it).

        A diverged child ranks below a trained one of equal reward.
        """
        best = None
        for r in self.completed:
            if best is None or rank(r) > rank(best):
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


def rank(record: dict):
    """A completed record's rank for the best child (`nas_tf.search._rank`): the reward,
    then trained above diverged."""
    return (record["reward"], not record.get("diverged"))


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _with_worker(record: dict) -> dict:
    """The record, with "worker" taken from an older record's "tuner_id" if it has none."""
    if record.get("worker") is None and record.get("tuner_id") is not None:
        record["worker"] = record["tuner_id"]
    return record


def read_records(path: str, worker: Optional[str] = None) -> List[dict]:
    """The records of one history file, by trial order (`nas_tf.history.read_file`).

    Raises:
      nas_tf.history.HistoryError: for a line, other than a torn last one,
        that is not a record.
    """
    by_id = history_lib.read_file(path)
    records = [_with_worker(by_id[k]) for k in sorted(by_id, key=history_lib.trial_order)]
    if worker is not None:
        for r in records:
            r.setdefault("worker", worker)
    return records


def load(output_dir: str) -> SearchFiles:
    """Reads a search's output directory.

    Raises:
      FileNotFoundError: if `output_dir` holds no history file and no
        `config.json` (not a search's output directory), naming it.
      nas_tf.history.HistoryError: for a corrupt history line (file and line named).
    """
    history_files = history_lib.files(output_dir)
    config_path = os.path.join(output_dir, "config.json")
    if not (history_files or os.path.exists(config_path)):
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
    records = [_with_worker(r) for r in history_lib.read(output_dir)]
    updates = []
    for candidate in (
        os.path.join(output_dir, "search", summaries.CONTROLLER_LOG),
        os.path.join(output_dir, summaries.CONTROLLER_LOG),
    ):
        if os.path.exists(candidate):
            updates = summaries.read_controller_log(candidate)
            break
    return SearchFiles(output_dir, config if isinstance(config, dict) else {}, records, updates)
