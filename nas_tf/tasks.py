"""What a search trains: a task turns an architecture into a trained child.

A task is a small, picklable value (the data and the training settings), so
it can be shipped once to a worker process (`nas_tf.children.worker`). Called
with (architecture JSON, model path), it trains one child, saves the model,
and returns a JSON-compatible record whose "reward" goes to the controller.

* `ConvTask`: the CIFAR-10 convolutional search (Zoph & Le 2017, sec. 4.1);
  reward = (max validation accuracy of the last 5 epochs)^3.
* `CellTask`: the Penn Treebank recurrent-cell search (sec. 4.2);
  reward = 80 / (validation perplexity)^2. A child whose loss diverges (NaN
  or infinite) is a finished child with reward 0, the limit of c / ppl^2 as
  the perplexity grows without bound, so that the controller learns to
  avoid such cells (`CellTask.diverged_record`).

A seeded `ConvTask` seeds each child from its seed and its architecture, so
a child trains the same way whenever and in whichever process it runs: a
search resumed after a kill gives the results of an uninterrupted one.

Every child a task starts passes `nas_tf.durable.fault_point("during_child")`
(tests kill the search there), and, when `NAS_TF_TRAINING_LOG` names a file,
every child it finishes appends one line (its model path) to that file: tests
count trainings with it, across processes.
"""

import dataclasses
import hashlib
import os
import time
import types
from typing import Any, Dict, Optional

import keras

from nas_tf import durable
from nas_tf import rewards
from nas_tf import space as space_lib
from nas_tf.children import base as children_base
from nas_tf.children import convnet
from nas_tf.children import language_model
from nas_tf.children import lm_trainer
from nas_tf.data import cifar10 as image_data
from nas_tf.data import ptb
from nas_tf.spaces import cell as cell_space
from nas_tf.spaces import conv

TRAINING_LOG_ENV = "NAS_TF_TRAINING_LOG"


def _start_child():
    durable.fault_point("during_child")


def _finished_child(model_path: str):
    """Notes a finished training in the file `NAS_TF_TRAINING_LOG` names, if set."""
    log = os.environ.get(TRAINING_LOG_ENV)
    if log:
        durable.append_line(log, model_path or "-")


def child_seed(seed: int, arch_json: str) -> int:
    """A child's own seed: from the search's seed and the architecture only."""
    digest = hashlib.sha256(f"{seed}:{arch_json}".encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclasses.dataclass(frozen=True)
class ConvTask:
    """Trains convolutional children on images.

    Attributes:
      spec: `ConvSpaceSpec.to_config()` of the searched space.
      data: the `ImageData`.
      child: the `ChildConfig`.
      verbose: Keras `fit` verbosity.
    """

    spec: Dict[str, Any]
    data: image_data.ImageData
    child: convnet.ChildConfig = convnet.ChildConfig()
    verbose: int = 0

    @property
    def space(self) -> space_lib.Space:
        return conv.ConvSpaceSpec.from_config(self.spec).space

    def __call__(self, request) -> dict:
        arch_json, model_path = request
        _start_child()
        keras.backend.clear_session()
        spec = conv.ConvSpaceSpec.from_config(self.spec)
        arch = spec.space.architecture_from_json(arch_json)
        if self.child.seed is not None:
            keras.utils.set_random_seed(child_seed(self.child.seed, arch.to_json()))
        result = convnet.train_child(arch, spec, self.data, self.child, verbose=self.verbose)
        if model_path:
            with durable.atomic_path(model_path) as tmp:
                result.model.save(tmp)
        _finished_child(model_path)
        record = result.to_dict()
        record["reward"] = rewards.cifar10_reward(
            record["val_accuracy"], last=self.child.reward_epochs, power=self.child.reward_power
        )
        return record

    @staticmethod
    def headline(record: dict) -> str:
        return f"val_acc {max(record['val_accuracy']):.4f}"

    @staticmethod
    def objective(record: dict) -> dict:
        return {"reward": record["reward"], "val_accuracy": max(record["val_accuracy"])}


@dataclasses.dataclass(frozen=True)
class CellTask:
    """Trains recurrent-cell language models on token ids.

    Attributes:
      base: leaves of the cell's tree (8: sec. 4.2).
      data: the `LMData`.
      model: the `LanguageModelConfig`.
      train: the `TrainConfig`.
      functions: the space's function set, "paper" or "extended" (max and
        sin added: the paper's control experiment 1).
    """

    base: int
    data: ptb.LMData
    model: language_model.LanguageModelConfig = language_model.LanguageModelConfig()
    train: lm_trainer.TrainConfig = lm_trainer.TrainConfig()
    functions: str = cell_space.PAPER

    @property
    def space(self) -> space_lib.Space:
        return cell_space.ptb_cell(self.base, self.functions)

    def __call__(self, request) -> dict:
        arch_json, model_path = request
        _start_child()
        keras.backend.clear_session()
        space = self.space
        arch = space.architecture_from_json(arch_json)
        description = cell_space.CellDescription.from_architecture(arch, space)
        start = time.time()
        try:
            result = lm_trainer.train_language_model(
                description, self.data, self.model, self.train, keep_model=bool(model_path)
            )
        except children_base.ChildDivergedError as e:
            # The cell's own failure: a reward (0), not a failed trial. Out of
            # memory and crashes are not the cell's fault: they still fail.
            _finished_child(model_path)
            return self.diverged_record(str(e), time.time() - start)
        if model_path:
            with durable.atomic_path(model_path) as tmp:
                result.model.save(tmp)
        _finished_child(model_path)
        return {
            "val_perplexity": result.val_perplexities,
            "best_val_perplexity": result.best_val_perplexity,
            "bits_per_token": result.bits_per_token,
            "train_loss": result.train_losses,
            "reward": rewards.ptb_reward(result.best_val_perplexity),
            "num_params": result.num_params,
            "train_seconds": result.train_seconds,
            "level": self.data.level,
        }

    def diverged_record(self, message: str, train_seconds: float) -> dict:
        """The record of a child whose training or validation loss stopped being finite.

        Its reward is `nas_tf.rewards.DIVERGED_PTB_REWARD` (0.0): the limit of
        c / ppl^2 as the perplexity goes to infinity, so the controller is
        pushed away from the cell instead of learning nothing from it. The
        record is strict JSON: the figures it has no value for (perplexities,
        losses, bits per token, parameters: the model is gone) are None,
        never NaN or infinity; "diverged" is true and "message" says where
        the loss diverged. No model is saved.
        """
        return {
            "val_perplexity": None,
            "best_val_perplexity": None,
            "bits_per_token": None,
            "train_loss": None,
            "reward": rewards.DIVERGED_PTB_REWARD,
            "diverged": True,
            "message": message,
            "num_params": None,
            "train_seconds": float(train_seconds),
            "level": self.data.level,
        }

    @staticmethod
    def headline(record: dict) -> str:
        if record.get("diverged"):
            return "diverged"
        if record.get("level") == "char":
            return f"val_bpc {record['bits_per_token']:.3f}"
        return f"val_ppl {record['best_val_perplexity']:.2f}"

    @staticmethod
    def objective(record: dict) -> dict:
        """Keras Tuner's metrics: the reward, and the best validation perplexity if any.

        A diverged child reports its reward (0.0) only: Keras Tuner's metrics
        are finite floats, and it has no perplexity.
        """
        if record.get("diverged") or record.get("best_val_perplexity") is None:
            return {"reward": record["reward"]}
        return {"reward": record["reward"], "val_perplexity": record["best_val_perplexity"]}


def make_task(
    space: str,
    overrides: Dict[str, Any],
    data,
    child: Optional[convnet.ChildConfig] = None,
    lm_model: Optional[language_model.LanguageModelConfig] = None,
    lm_train: Optional[lm_trainer.TrainConfig] = None,
    verbose: int = 0,
):
    """The task that searches the registered space `space` on `data` (`nas_tf.families`).

    Kept for scripts; a search asks `nas_tf.families.make_task(config, data)`.
    The space's family must be registered (importing `nas_tf.search` or
    `nas_tf.builtin_families` registers the paper's).

    Raises:
      ValueError: for an unknown space, bad overrides, or data of the wrong kind.
    """
    from nas_tf import families

    settings = types.SimpleNamespace(
        space=space,
        space_overrides=overrides,
        child=child or convnet.ChildConfig(),
        lm_model=lm_model or language_model.LanguageModelConfig(),
        lm_train=lm_train or lm_trainer.TrainConfig(),
        verbose=2 if verbose else 0,
    )
    return families.make_task(settings, data)
