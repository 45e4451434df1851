"""`SearchConfig`: every setting of one search, and the guard against resuming with others.

`nas_tf.settings.search_config` builds it from flags or keywords;
`check_and_write_config` writes it as the output directory's `config.json`
and refuses a resume whose settings would change what the search finds.
"""

import dataclasses
import json
import math
import os
from typing import Any, Dict, List, Optional

from nas_tf import controller as controller_lib
from nas_tf import durable
from nas_tf import history as history_lib
from nas_tf import reinforce as reinforce_lib
from nas_tf.algorithms import controller_search
from nas_tf.children import convnet, language_model, lm_trainer, worker
from nas_tf.spaces import conv
from nas_tf.supernets import config as shared_config

HISTORY = history_lib.HISTORY
BEST_ARCHITECTURE = "best_architecture.json"
BEST_MODEL = "best_model.keras"
CONFIG = "config.json"
PROJECT = "search"

# Settings a resumed search may change: they do not change what it finds.
FREE_SETTINGS = (
    "output_dir",
    "data_dir",
    "max_trials",
    "verbose",
    "overwrite",
    "top_k",
    "isolate_children",
    "children_per_worker",
    "child_timeout",
    "max_consecutive_failures",
    "allow_config_change",
)


class ConfigChangedError(ValueError):
    """A search would resume with settings other than those it started with."""


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Everything one search needs.

    Attributes:
      output_dir: where the search writes (and resumes from).
      space: a space name registered in `nas_tf.families` (the paper's:
        "cifar10_v1", "cifar10_v2", "cifar10_v3", "ptb_cell").
      space_overrides: keyword settings of that space's factory (for the
        convolutional spaces depth, filter_sizes, num_filters, strides,
        pool_at; for the cell, base).
      dataset: a name from `nas_tf.data.names()`.
      data_dir: TFDS data directory for cifar10 and ptb.
      max_trials: number of children to train in all.
      seed: seeds the controller, the data split and child shuffling.
      controller: a `ControllerConfig`.
      reinforce: a `ReinforceConfig`.
      child: a `ChildConfig` (convolutional children).
      lm_model: a `LanguageModelConfig` (cell children).
      lm_train: a `TrainConfig` (cell children).
      curriculum: a `DepthCurriculum`, or None to sample full-depth networks.
      preset: the `NASRLOracle` preset the method settings came from
        ("default" or "paper"; recorded in config.json).
      reuse_rewards: do not retrain an architecture already trained.
      max_resamples: with `reuse_rewards`, draws of trained architectures per
        trial before the oracle mutates the last one.
      mutate_best: the share of trials that mutate the best architecture
        found so far instead of drawing from the controller (`NASRLOracle`).
      mutate_until: trials after which none mutates (inf: never stops).
      isolate_children: train children in a worker process replaced every
        `children_per_worker` children, so that the search's memory stays
        flat and a crashing child fails only its trial. False trains them in
        the search's own process (simpler to debug).
      children_per_worker: children a worker trains before it is replaced.
      child_timeout: seconds one child may train in a worker before the
        worker is killed and the trial fails with reason "timeout" (None: no
        limit; applies with `isolate_children` only).
      max_consecutive_failures: this many failed children in a row stop the
        search (something is wrong with every child, not with one).
      allow_config_change: resume even though settings that change the
        search differ from `config.json`'s.
      overwrite: start afresh instead of resuming.
      weight_sharing: a `nas_tf.supernets.config.SharedSearchConfig`: search
        with one supernet whose sub-networks are the architectures (ENAS;
        docs/weight_sharing.md) instead of training every child; None: the
        paper's multi-trial search.
      top_k: how many of the best children the summary lists.
      verbose: 0 silent, 1 the progress line (`nas_tf.progress`), 2 Keras progress too.
    """

    output_dir: str
    space: str = "cifar10_v1"
    space_overrides: Dict[str, Any] = dataclasses.field(default_factory=dict)
    dataset: str = "digits"
    data_dir: Optional[str] = None
    max_trials: int = 12
    seed: int = 1
    controller: controller_lib.ControllerConfig = controller_lib.ControllerConfig()
    reinforce: reinforce_lib.ReinforceConfig = controller_search.default_reinforce_config()
    child: convnet.ChildConfig = convnet.ChildConfig()
    lm_model: language_model.LanguageModelConfig = language_model.LanguageModelConfig()
    lm_train: lm_trainer.TrainConfig = lm_trainer.TrainConfig()
    curriculum: Optional[conv.DepthCurriculum] = None
    preset: str = "default"
    reuse_rewards: bool = True
    max_resamples: int = 2
    mutate_best: float = 0.5
    mutate_until: float = 40.0
    isolate_children: bool = True
    children_per_worker: int = 20
    child_timeout: Optional[float] = worker.DAY
    max_consecutive_failures: int = 10
    allow_config_change: bool = False
    overwrite: bool = False
    weight_sharing: Optional[shared_config.SharedSearchConfig] = None
    top_k: int = 5
    verbose: int = 1

    def __post_init__(self):
        trials = self.max_trials
        if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
            # Keras Tuner would read 0 as "no limit".
            raise ValueError(f"max_trials must be a positive integer, got {trials!r}.")
        timeout = self.child_timeout
        if timeout is not None and not (isinstance(timeout, (int, float)) and 0 < timeout < math.inf):
            raise ValueError(f"child_timeout must be positive seconds or None, got {timeout!r}.")
        if not isinstance(self.max_consecutive_failures, int) or self.max_consecutive_failures < 1:
            raise ValueError(
                f"max_consecutive_failures must be a positive integer, got {self.max_consecutive_failures!r}."
            )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True, default=str)


def config_changes(old: dict, new: dict) -> List[str]:
    """The settings that differ between two `config.json` contents, as "name: old -> new".

    Settings in `FREE_SETTINGS` are not compared, nor fields that only one
    side has (written by another version of nas_tf); `space_overrides` is
    compared whole (an override given or left out changes the space).
    """
    changes = []

    def compare(a, b, name):
        if isinstance(a, dict) and isinstance(b, dict) and name != "space_overrides":
            for key in sorted(set(a) & set(b)):
                full = f"{name}.{key}" if name else key
                if full not in FREE_SETTINGS:
                    compare(a[key], b[key], full)
        elif a != b:
            changes.append(f"{name}: {json.dumps(a, sort_keys=True)} -> {json.dumps(b, sort_keys=True)}")

    compare(old, new, "")
    return changes


def check_and_write_config(config: SearchConfig) -> None:
    """Writes `config.json`, refusing a resume with changed settings.

    Raises:
      ConfigChangedError: naming each changed setting (old -> new), when
        a search was started in `output_dir` with that `config.json`, it is
        resumed (not `overwrite`) and `allow_config_change` is not set.
      ValueError: if the existing `config.json` is unreadable.
    """
    path = os.path.join(config.output_dir, CONFIG)
    text = config.to_json() + "\n"
    started = any(os.path.exists(os.path.join(config.output_dir, name))
                  for name in (HISTORY, PROJECT, shared_config.STATE))
    if os.path.exists(path) and started and not config.overwrite:
        try:
            with open(path, encoding="utf-8") as f:
                old = json.load(f)
            if not isinstance(old, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            raise ValueError(
                f"{path} is unreadable ({e}); pass --overwrite to start afresh."
            ) from None
        changes = config_changes(old, json.loads(text))
        if changes and not config.allow_config_change:
            raise ConfigChangedError(
                f"The search in {config.output_dir} was started with other settings; "
                "resuming would mix two searches. Changed: "
                + "; ".join(changes)
                + ". Pass --allow_config_change to resume anyway, or --overwrite to start afresh."
            )
        if changes and config.verbose:
            print(f"nas_tf: resuming with changed settings: {'; '.join(changes)}", flush=True)
    durable.atomic_write_text(path, text)
