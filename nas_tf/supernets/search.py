"""The weight-sharing search: shared weights and the controller trained in turn (ENAS).

One epoch (Pham et al. 2018, sec. 2.2 and their code's `main.py`):

1. **shared weights**: `steps_per_epoch` SGD steps, each on a fresh
   architecture drawn by the search algorithm (`SearchAlgorithm.sample`:
   the controller's policy, or uniform draws for random search). For the
   first `warmup_epochs` every architecture is drawn uniformly, so that the
   weights of every operation learn before the controller judges them
   (TuNAS, Bender et al. 2020, keeps its controller frozen for the first 25%).
2. **controller**: `controller_samples` proposals (`propose` / `feedback`),
   each rewarded by its accuracy (or perplexity reward) on one validation
   minibatch, in turn through the validation split.

Then **derive**: `derive_samples` architectures drawn from the final policy
(or uniformly), each ranked by its figure on the whole validation split with
the shared weights; the best is written as `best_architecture.json` with the
search's `config.json` beside it, which `nas_tf.retrain` (images) and
`nas_tf.train_lm` (text) read unchanged.

Nothing finished is lost to a kill. After the training phase and after the
controller phase of every epoch (and every `checkpoint_steps` steps), the
shared weights, their optimizer's slots and step (one `tf.train.Checkpoint`),
the controller's arrays (`.npz`) and the loop's position are written, then
`shared_state.json`, which names them, replaces the previous one atomically.
A kill before that rename leaves the previous checkpoint whole; the steps
since it are done again, on the same batches and architectures (both are
functions of the saved position), so a resumed search equals an
uninterrupted one.
"""

import dataclasses
import json
import math
import os
import time
from typing import Callable, List, Optional

import numpy as np
import tensorflow as tf

from nas_tf import durable
from nas_tf import jsonl
from nas_tf import space as space_lib
from nas_tf.algorithms import base as algorithms_base
from nas_tf.supernets import trainer as trainer_lib
from nas_tf.supernets.config import STATE, SharedSearchConfig

LOG = "shared_log.jsonl"
DERIVE = "derive.jsonl"
BEST_ARCHITECTURE = "best_architecture.json"
CHECKPOINTS = "shared"


class SharedSearch:
    """Runs (or resumes) one weight-sharing search in `output_dir`.

    Args:
      supernet: the `Supernet` over the algorithm's space.
      batches: its data (`ImageBatches` or `TextBatches`): `train(step)`,
        `steps_per_epoch`, `valid(i)`, `num_valid`.
      algorithm: a `SearchAlgorithm` over `supernet.space` (a
        `ControllerSearch` for method "controller").
      config: a `SharedSearchConfig`.
      output_dir: where checkpoints, logs and the result go.
      on_epoch: called with each epoch's log record (progress, summaries).
    """

    def __init__(self, supernet, batches, algorithm, config: SharedSearchConfig, output_dir: str,
                 on_epoch: Optional[Callable[[dict], None]] = None):
        self.supernet, self.batches, self.algorithm = supernet, batches, algorithm
        self.config, self.output_dir, self.on_epoch = config, output_dir, on_epoch
        self.steps_per_epoch = config.steps_per_epoch or batches.steps_per_epoch
        total = config.epochs * self.steps_per_epoch
        training = dataclasses.replace(config.training, total_steps=total)
        self.weights = trainer_lib.SharedWeights(supernet, training)
        self._checkpoint = tf.train.Checkpoint(shared=self.weights)
        self.position = {"epoch": 0, "phase": "train", "step": 0, "valid_index": 0,
                         "fed": 0, "checkpoint": 0, "loss_sum": 0.0, "loss_count": 0}
        self._queue: List[str] = []  # Architectures (JSON) drawn for the next training steps.
        self._rewards: List[float] = []  # The current controller phase's rewards.
        self._logged = None  # The last epoch's log record (saved; see `_log`).
        os.makedirs(os.path.join(output_dir, CHECKPOINTS), exist_ok=True)
        self.resumed = self._restore()

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> dict:
        """Trains to the end, derives, and returns the result (see `derive`)."""
        c, pos = self.config, self.position
        while pos["epoch"] < c.epochs:
            started = time.perf_counter()
            if pos["phase"] == "train":
                self._train_phase()
                pos["phase"] = "controller" if self._learns() else "done"
                self._save()
            if pos["phase"] == "controller":
                self._controller_phase()
                pos["phase"] = "done"
                self._save()
            record = self._epoch_record(time.perf_counter() - started)
            pos.update(epoch=pos["epoch"] + 1, phase="train", fed=0, loss_sum=0.0, loss_count=0)
            self._rewards = []
            self._logged = record  # Saved with the position: a kill before the log line keeps it.
            self._save()
            self._log(record)
            if self.on_epoch is not None:
                self.on_epoch(record)
        return self.derive()

    def _log(self, record) -> None:
        """Appends the epoch's log line unless the log has it already (a resume)."""
        path = os.path.join(self.output_dir, LOG)
        if os.path.exists(path):
            lines = list(jsonl.records(path))
            if lines and lines[-1].get("epoch", 0) >= record["epoch"]:
                return
        durable.append_line(path, json.dumps(record))

    def _learns(self) -> bool:
        return self.config.method == "controller" and self.position["epoch"] >= self.config.warmup

    def _train_phase(self) -> None:
        pos = self.position
        end = (pos["epoch"] + 1) * self.steps_per_epoch
        every = self.config.checkpoint_steps
        while pos["step"] < end:
            if not self._queue:
                self._queue = [a.to_json() for a in self._draw(min(20, end - pos["step"]))]
            arch = self.supernet.space.architecture_from_json(self._queue.pop(0))
            x, y = self.batches.train(pos["step"])
            loss, norm = self.weights.train_step(x, y, self.supernet.encode(arch))
            if math.isfinite(loss) and math.isfinite(norm):
                pos["loss_sum"] = pos.get("loss_sum", 0.0) + loss
                pos["loss_count"] = pos.get("loss_count", 0) + 1
            else:  # Not applied (`SharedWeights.train_step`): that network overflowed.
                pos["skipped"] = pos.get("skipped", 0) + 1
            pos["step"] += 1
            durable.fault_point("shared_after_step")
            if every and pos["step"] % every == 0 and pos["step"] < end:
                self._save()

    def _draw(self, n: int) -> List[space_lib.Architecture]:
        """Architectures for the next training steps: uniform in warm-up, else the algorithm's."""
        if self.config.method == "controller" and self.position["epoch"] < self.config.warmup:
            rng = np.random.default_rng([self.algorithm.seed, self.position["step"], 3])
            return [algorithms_base.random_architecture(self.supernet.space, rng) for _ in range(n)]
        return self.algorithm.sample(n)

    def _controller_phase(self) -> None:
        pos = self.position
        while pos["fed"] < self.config.controller_samples:
            key = f"{pos['epoch']}-{pos['fed']}"
            arch = self.algorithm.propose(key)
            if arch is None:
                break
            x, y = self.batches.valid(pos["valid_index"])
            score = self.weights.evaluate([(x, y)], self.supernet.encode(arch))
            reward = self.supernet.reward(score)
            self.algorithm.feedback(key, arch, reward)
            self._rewards.append(reward)
            pos["valid_index"] += 1
            pos["fed"] += 1
            durable.fault_point("shared_after_feedback")

    def _epoch_record(self, seconds) -> dict:
        pos = self.position
        count = pos.get("loss_count", 0)
        return {
            "epoch": pos["epoch"] + 1,
            "step": pos["step"],
            "train_loss": pos["loss_sum"] / count if count else None,
            "skipped_steps": pos.get("skipped", 0),
            "learning_rate": float(self.weights.learning_rate(pos["step"])),
            "controller_updates": self.algorithm.num_updates,
            "mean_reward": float(np.mean(self._rewards)) if self._rewards else None,
            "traces": dict(self.weights.traces),
            "seconds": seconds,
        }

    # -- the result -------------------------------------------------------------------

    def derive(self) -> dict:
        """Ranks `derive_samples` architectures on the whole validation split; writes the best.

        Returns:
          {"architecture": best `Architecture`, "score": its figure,
           "candidates": [(arch JSON, score), ...] best first}.
        """
        path = os.path.join(self.output_dir, DERIVE)
        if self.config.method == "controller":
            archs = self.algorithm.sample(self.config.derive_samples)
        else:
            rng = np.random.default_rng([self.algorithm.seed, 4])
            archs = [algorithms_base.random_architecture(self.supernet.space, rng)
                     for _ in range(self.config.derive_samples)]
        valid = [self.batches.valid(i) for i in range(self.batches.num_valid)]
        scored = {}
        for arch in archs:
            key = arch.to_json()
            if key not in scored:
                scored[key] = self.weights.evaluate(valid, self.supernet.encode(arch))
        sign = 1.0 if self.supernet.higher_is_better else -1.0
        ranked = sorted(scored.items(), key=lambda kv: -sign * kv[1])
        lines = [json.dumps({"architecture": json.loads(a), self.supernet.score_name: s})
                 for a, s in ranked]
        durable.atomic_write_text(path, "".join(line + "\n" for line in lines))
        best = self.supernet.space.architecture_from_json(ranked[0][0])
        durable.atomic_write_text(os.path.join(self.output_dir, BEST_ARCHITECTURE),
                                  best.to_json() + "\n")
        return {"architecture": best, "score": ranked[0][1], "candidates": ranked}

    # -- checkpoints ------------------------------------------------------------------

    def _save(self) -> None:
        """Writes the weights, the controller and the position; the pointer last (atomic)."""
        pos = self.position
        number = pos["checkpoint"] + 1
        directory = os.path.join(self.output_dir, CHECKPOINTS)
        prefix = os.path.join(directory, f"weights-{number:06d}")
        self._checkpoint.write(prefix)
        self.algorithm.forget()  # Its checkpoint below includes every feed.
        arrays, feeds = self.algorithm.checkpoint() or ({}, 0)
        arrays = dict(arrays)
        learner_state = arrays.pop("learner_state", None)
        controller = os.path.join(directory, f"controller-{number:06d}.npz")
        durable.atomic_write(controller, lambda f: np.savez(f, **arrays))
        durable.fault_point("shared_before_state")
        state = {"position": dict(pos, checkpoint=number), "queue": self._queue,
                 "rewards": self._rewards, "logged": self._logged,
                 "algorithm": self.algorithm.state(),
                 "learner_state": learner_state, "feeds": feeds}
        durable.atomic_write_text(os.path.join(self.output_dir, STATE), json.dumps(state))
        pos["checkpoint"] = number
        durable.fault_point("shared_after_state")
        self._remove_older(number)

    def _remove_older(self, number: int) -> None:
        directory = os.path.join(self.output_dir, CHECKPOINTS)
        for name in os.listdir(directory):
            stem = name.split(".")[0]
            if "-" in stem and stem.rsplit("-", 1)[1].isdigit():
                if int(stem.rsplit("-", 1)[1]) < number:
                    os.remove(os.path.join(directory, name))

    def _restore(self) -> bool:
        path = os.path.join(self.output_dir, STATE)
        if not os.path.exists(path):
            return False
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        number = state["position"]["checkpoint"]
        directory = os.path.join(self.output_dir, CHECKPOINTS)
        self._checkpoint.read(os.path.join(directory, f"weights-{number:06d}")).assert_consumed()
        checkpoint = None
        if state.get("learner_state") is not None:
            with np.load(os.path.join(directory, f"controller-{number:06d}.npz")) as z:
                arrays = {k: z[k] for k in z.files}
            checkpoint = (dict(arrays, learner_state=state["learner_state"]), state["feeds"])
        self.algorithm.restore(state["algorithm"], checkpoint)
        self.position = dict(state["position"])
        self._queue = list(state["queue"])
        self._rewards = list(state["rewards"])
        self._logged = state.get("logged")
        if self._logged is not None:
            self._log(self._logged)
        return True
