"""A weight-sharing search from a `SearchConfig`: what `nas_tf.train --weight_sharing` runs.

It builds the space family's supernet and batches (`Family.supernet`), the
search algorithm (`ControllerSearch` with the config's controller and
REINFORCE settings, or `RandomSearch` for random search with weight
sharing), runs `nas_tf.supernets.search.SharedSearch` in `output_dir`
(resuming it when its state is there), and writes what the multi-trial
search writes for the tools that follow:

* `config.json` (the space, which `nas_tf.retrain` and `nas_tf.train_lm`
  read beside `best_architecture.json`);
* `best_architecture.json`, the best derived architecture;
* `history.jsonl`: one record per derived architecture (its shared-weight
  validation figure, its reward), so `nas_tf.report` and `nas_tf.Search`
  read a weight-sharing search as they read any other;
* `search/controller_updates.jsonl` and TensorBoard runs under
  `tensorboard/` (the controller's updates; `shared` for the per-epoch
  loss, learning rate and mean reward).
"""

import json
import os
import shutil
import sys
from typing import Optional

from nas_tf import data as data_lib
from nas_tf import families
from nas_tf import history as history_lib
from nas_tf import progress as progress_lib
from nas_tf import summaries
from nas_tf.algorithms import base as algorithms_base
from nas_tf.algorithms import controller_search
from nas_tf.children import base as children_base
from nas_tf.search_config import BEST_ARCHITECTURE, CONFIG, HISTORY, PROJECT, check_and_write_config
from nas_tf.supernets import config as shared_config
from nas_tf.supernets import search as search_lib

# What a weight-sharing search writes (removed by --overwrite).
OUTPUTS = (HISTORY, BEST_ARCHITECTURE, shared_config.STATE, search_lib.LOG, search_lib.DERIVE,
           search_lib.CHECKPOINTS, PROJECT, summaries.TENSORBOARD)


class UnsupportedSpaceError(ValueError):
    """A space (or dataset) that weight sharing cannot search (`nas_tf.search.run` raises
    it as a `SearchError`, which `nas_tf.train` prints as one line)."""


def make_algorithm(config, space, on_update=None):
    """The search algorithm of `config.weight_sharing.method` over `space`."""
    if config.weight_sharing.method == "random":
        return algorithms_base.RandomSearch(space, config.seed)
    return controller_search.ControllerSearch(
        space, config.seed, controller_config=config.controller,
        reinforce_config=config.reinforce, reuse_rewards=False, max_resamples=0,
        mutate_best=0.0, mutate_until=config.mutate_until, preset=config.preset,
        on_update=on_update)


def run(config, data=None) -> Optional[dict]:
    """Runs (or resumes) the weight-sharing search `config` describes (lock held by the caller).

    Returns:
      {"trial_id", "reward", "architecture"} of the best derived architecture.

    Raises:
      UnsupportedSpaceError (a ValueError): for a space without a supernet (or
        whose supernet refuses it, e.g. cifar10_v3), or data of the wrong kind.
      ConfigChangedError: when resuming with changed settings.
    """
    family = families.for_space(config.space)
    if family.supernet is None:
        with_supernet = [s for s in families.space_names()
                         if families.for_space(s).supernet is not None]
        raise UnsupportedSpaceError(f"Space {config.space!r} has no supernet for weight "
                                    f"sharing; spaces with one: {with_supernet}.")
    if config.child.distribution != "default":
        raise ValueError(
            f"--child_distribution={config.child.distribution} is not supported with weight "
            "sharing yet: the supernet trains on the default device (a GPU when there is one).")
    out = config.output_dir
    os.makedirs(out, exist_ok=True)
    if config.overwrite:
        for name in OUTPUTS:
            path = os.path.join(out, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    check_and_write_config(config)
    if data is None:
        data = data_lib.load(config.dataset, config.data_dir, seed=config.seed)
    spec = families.space_spec(config.space, config.space_overrides)
    try:
        supernet, batches = family.supernet(spec, data, config)
    except ValueError as e:  # e.g. cifar10_v3 (no supernet for its dense blocks), text data.
        raise UnsupportedSpaceError(f"--weight_sharing: {e}") from None
    logdir = os.path.join(out, summaries.TENSORBOARD)
    os.makedirs(os.path.join(out, PROJECT), exist_ok=True)
    controller_log = summaries.ControllerSummaries(
        os.path.join(out, PROJECT, summaries.CONTROLLER_LOG), logdir)

    def on_update(stats, batch):
        controller_log.write(algorithm.num_updates, stats, supernet.space, batch)

    algorithm = make_algorithm(config, supernet.space, on_update)
    shared = config.weight_sharing
    line = progress_lib.Progress(shared.epochs, verbose=config.verbose, label="epoch")
    writer = _EpochSummaries(logdir)

    def on_epoch(record):
        writer.write(record)
        reward = record["mean_reward"]
        line.update(done=record["epoch"], values={
            "loss": record["train_loss"], "mean reward": reward,
            "updates": record["controller_updates"]})

    searcher = search_lib.SharedSearch(supernet, batches, algorithm, shared, out, on_epoch)
    line.done = line._start_done = searcher.position["epoch"]
    if config.verbose:
        print(f"nas_tf: weight-sharing search ({shared.method}) of {config.space} "
              f"({len(supernet.space.decisions)} decisions) on {config.dataset}, training on "
              f"{children_base.devices_in_words()}; {shared.epochs} epochs of "
              f"{searcher.steps_per_epoch} steps, {searcher.position['epoch']} done; "
              f"output in {out}", flush=True)
    result = searcher.run()
    line.close()
    best = _write_history(out, supernet, result)
    if config.verbose:
        name = supernet.score_name
        print(f"{len(result['candidates'])} architectures ranked on the shared weights; best "
              f"validation {name} {result['score']:.4f} ({os.path.join(out, BEST_ARCHITECTURE)}):")
        with open(os.path.join(out, CONFIG), encoding="utf-8") as f:
            from nas_tf import describe

            print(describe.summary(result["architecture"], config=json.load(f)))
        sys.stdout.flush()
    return best


def _write_history(out: str, supernet, result) -> dict:
    """The derived architectures as history records (best first, trial ids from 1)."""
    metric = "val_" + supernet.score_name
    records = []
    for i, (arch_json, score) in enumerate(result["candidates"]):
        records.append({
            "trial_id": str(i + 1), "status": "COMPLETED", "architecture": json.loads(arch_json),
            "reward": supernet.reward(score), metric: score, "num_params": None,
            "train_seconds": 0.0, "source": "weight_sharing",
        })
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    from nas_tf import durable

    durable.atomic_write_text(history_lib.path(out), text)
    first = records[0]
    return {"trial_id": first["trial_id"], "reward": first["reward"],
            "architecture": result["architecture"]}


class _EpochSummaries:
    """Per-epoch scalars of the shared weights, in TensorBoard's run `shared`."""

    def __init__(self, logdir: str):
        self.logdir, self._writer = os.path.join(logdir, "shared"), None

    def write(self, record: dict) -> None:
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.logdir)
        with self._writer.as_default():
            for key in ("train_loss", "learning_rate", "mean_reward", "controller_updates"):
                if record.get(key) is not None:
                    tf.summary.scalar(f"shared/{key}", float(record[key]), step=record["epoch"])
        self._writer.flush()
