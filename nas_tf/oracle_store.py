"""The files of a `NASRLOracle`: its journaled state, controller checkpoints and trials.

In Keras Tuner's project directory:

* `oracle.json` + `oracle.json.journal.jsonl` (`nas_tf.journal`: a snapshot
  and an append-only journal, O(1) bytes per save on average) hold Keras
  Tuner's state plus the search algorithm's (`ControllerSearch.state`);
* `nasrl_controller_<n>.npz`, written once `checkpoint_every` updates and
  `checkpoint_trials` trials have passed since the last, holds the learner
  after update n; the feeds logged since are replayed on restore, and all of
  them when the checkpoint is missing or unreadable;
* `trial_<id>/trial.json`, each written atomically.

Every write is atomic and durable (`nas_tf.durable`); a new checkpoint is
written before the state that names it and the old one removed last, so a
kill between any two writes leaves a state whose checkpoint exists.
"""

import glob
import json
import os
import shutil
import warnings
import zipfile
from typing import Optional

import numpy as np

from nas_tf import durable
from nas_tf import journal

CHECKPOINT = "nasrl_controller_{:06d}.npz"


class OracleStore:
    """Reads and writes one oracle's files in `project_dir`.

    Args:
      project_dir: Keras Tuner's project directory (exists).
      state_path: the oracle's state file (`oracle.json`).
      snapshot_min_bytes: the journal grows to at least this before a new snapshot.
      checkpoint_every, checkpoint_trials: a checkpoint once both this many
        updates and trials have passed since the last.

    Attributes:
      checkpoint: (file name or None, feeds it includes) of the checkpoint
        the saved state names; (None, 0): replay from the seed.
    """

    def __init__(self, project_dir: str, state_path: str, snapshot_min_bytes: int,
                 checkpoint_every: int, checkpoint_trials: int):
        self.project_dir = project_dir
        self.checkpoint_every = checkpoint_every
        self.checkpoint_trials = checkpoint_trials
        self.journal = journal.JournaledState(
            state_path,
            unordered=("tried_so_far",),
            appendable=("nasrl/feeds", "nasrl/rewarded", "start_order", "end_order"),
            min_snapshot_bytes=snapshot_min_bytes,
        )
        self.checkpoint = (None, 0)
        self._at_checkpoint = (0, 0)  # (updates, trials started) when it was written.
        self._superseded = None  # The checkpoint the next saved state stops naming.

    # -- state --------------------------------------------------------------------------

    def maybe_checkpoint(self, algorithm, trials_started: int) -> None:
        """Writes a controller checkpoint when one is due (before the state that names it).

        Args:
          algorithm: the `ControllerSearch`, or None before it exists.
          trials_started: trials started so far (for the checkpoint rule).
        """
        if algorithm is None or not self._checkpoint_due(algorithm, trials_started):
            return
        arrays, feeds = algorithm.checkpoint()
        updates = algorithm.num_updates
        arrays["learner_state"] = np.array(json.dumps(arrays["learner_state"]))
        name = CHECKPOINT.format(updates)
        durable.atomic_write(os.path.join(self.project_dir, name), lambda f: np.savez(f, **arrays))
        durable.fault_point("oracle_save_checkpoint")
        self._superseded = self._superseded or self.checkpoint[0]
        self.checkpoint, self._at_checkpoint = (name, feeds), (updates, trials_started)

    def save(self, state: dict) -> None:
        """Saves `state` (which names `checkpoint`), then removes the checkpoint it replaced."""
        self.journal.save(state)
        durable.fault_point("oracle_save_state")
        if self._superseded is not None and self._superseded != self.checkpoint[0]:
            self._remove(self._superseded)
        self._superseded = None

    def _checkpoint_due(self, algorithm, trials_started: int) -> bool:
        updates = algorithm.num_updates  # 0 forever for an algorithm without a model.
        since = updates if self.checkpoint[0] is None else updates - self._at_checkpoint[0]
        return (since >= self.checkpoint_every
                and trials_started - self._at_checkpoint[1] >= self.checkpoint_trials)

    def load(self) -> Optional[dict]:
        """The saved state, or None if there is none."""
        return self.journal.load()

    def read_checkpoint(self, nasrl: dict, trials_started: int):
        """The checkpoint a saved "nasrl" state names, as `ControllerSearch.restore` takes it.

        Returns:
          (arrays with "learner_state", feeds included), or None when the
          state names none or it is unreadable (with a warning): the
          controller is then rebuilt by replaying the whole feed log.
        """
        name, done = nasrl.get("checkpoint"), nasrl.get("checkpoint_feeds", 0)
        self.checkpoint = (None, 0)
        if name is None:
            return None
        path = os.path.join(self.project_dir, name)
        try:
            with np.load(path) as f:
                arrays = {k: f[k] for k in f.files}
            arrays["learner_state"] = json.loads(str(arrays["learner_state"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            warnings.warn(f"Controller checkpoint {path} unreadable ({e}); rebuilding the "
                          "controller by replaying all the rewards it was fed.")
            return None
        self.checkpoint = (name, done)
        self._at_checkpoint = (int(arrays["learner_state"]["num_updates"]), trials_started)
        return arrays, done

    def remove_stale_checkpoints(self) -> None:
        """Checkpoints other than the current one: left by a kill before a state named them."""
        for name in os.listdir(self.project_dir):
            if (name.startswith("nasrl_controller_") and name.endswith(".npz")
                    and name != self.checkpoint[0]):
                self._remove(name)

    def _remove(self, name: str) -> None:
        path = os.path.join(self.project_dir, name)
        if os.path.exists(path):
            os.remove(path)

    # -- trials -------------------------------------------------------------------------

    def write_trial(self, trial_dir: str, trial) -> None:
        durable.atomic_write_text(os.path.join(trial_dir, "trial.json"),
                                  json.dumps(trial.get_state()))

    def remove_trial(self, trial_dir: str) -> None:
        """Removes a trial's folder (a trial that never started)."""
        shutil.rmtree(trial_dir, ignore_errors=True)

    def load_trials(self, trial_class):
        """Every `trial_<id>/trial.json` of the project, loaded with `trial_class.load`."""
        trials = []
        for fname in glob.glob(os.path.join(self.project_dir, "trial_*", "trial.json")):
            try:
                trials.append(trial_class.load(fname))
            except (ValueError, KeyError, OSError) as e:
                raise journal.CorruptStateError(
                    f"Trial file {fname} is unreadable ({e}); trial files are written "
                    "atomically, so it was damaged outside nas_tf. Start afresh with "
                    "--overwrite, or restore the file from a copy (removing it would "
                    "let Keras Tuner give its id to the next trial)."
                ) from e
        return trials


def save_tuner_state(path: str, state: dict) -> None:
    """Writes a tuner's own `<tuner_id>.json` atomically (its existence makes a run reload)."""
    if "://" in path:
        with tf_io_open(path, "w") as f:
            f.write(json.dumps(state))
        return
    durable.atomic_write_text(path, json.dumps(state))


def load_tuner_state(path: str) -> dict:
    """A tuner's own state; a damaged file (written by Keras Tuner before nas_tf wrote
    it atomically) is replaced by an empty state, with a warning: Keras Tuner's tuners
    keep nothing in it."""
    try:
        if "://" in path:
            with tf_io_open(path, "r") as f:
                text = f.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        state = json.loads(text)
        if not isinstance(state, dict):
            raise ValueError("not a JSON object")
        return state
    except (ValueError, UnicodeDecodeError) as e:
        warnings.warn(f"Tuner file {path} is unreadable ({e}); it holds no search state, "
                      "so the search resumes and rewrites it.")
        return {}


def tf_io_open(path: str, mode: str):
    """A file of a URL path (gs://...) through TensorFlow's file system."""
    import tensorflow as tf

    return tf.io.gfile.GFile(path, mode)
