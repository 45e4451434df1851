r"""Runs an architecture search from the command line.

With no flags: a short, real search on the embedded handwritten-digits data
(ships with scikit-learn, no download), finishing in a few minutes on a laptop
CPU. The paper's searches are flag files:

  python -m nas_tf.train                                  # quick embedded search
  python -m nas_tf.train --flagfile=experiments/cifar.flags
  python -m nas_tf.train --flagfile=experiments/cifar_v3.flags --output_dir=runs/v3
  python -m nas_tf.train --flagfile=experiments/ptb_quick.flags   # recurrent cells

Running the same command again resumes the search in --output_dir (a larger
--search_max_trials extends it; changing settings that alter the search is
refused unless --allow_config_change); pass --overwrite to start afresh.
Exit status: 0 done, 1 the search stopped on an error (the message says why;
run again to resume), 2 the dataset is not prepared. Library defaults are the paper's values; the
flag defaults here are the quick run's, and experiments/*.flags restore the
paper's.
"""

import dataclasses

from absl import app
from absl import flags

from nas_tf import cli

cli.quiet_tensorflow()  # Before anything below imports TensorFlow.

from nas_tf import builtin_families  # noqa: F401 (registers the paper's space families)
from nas_tf import data as data_lib
from nas_tf import families
from nas_tf import settings as settings_lib
from nas_tf.spaces import cell as cell_space

# This entry point's own flag registry (the convention of `nas_tf.cli`).
FLAGS = flags.FlagValues()
define = cli.definer(FLAGS)

# Zoph & Le 2017 values are noted where a flag's paper value differs from the quick default.
define.string("output_dir", "runs/quick", "Directory the search writes to and resumes from: "
              "a local path, or a URL such as gs://BUCKET/runs/x (worked on in --local_dir "
              "and synced there after every child; docs/distributed.md, 'Cloud storage').")
define.string("local_dir", None, "With a URL --output_dir: the local mirror the search runs "
              "in (unset: ~/.cache/nas_tf/mirrors/<hash of the URL>).")
define.boolean("overwrite", False, "Delete an existing search in --output_dir and start afresh.")
define.boolean("allow_config_change", False, "Resume a search in --output_dir even though "
               "settings that change the search differ from its config.json.")
define.integer("seed", 1, "Seed of the controller, the validation split and child shuffling.", lower_bound=1)
define.integer("verbose", 1, "0: silent; 1: a progress line (rewritten in place on a terminal, "
               "one line per child otherwise); 2: Keras progress bars too.", lower_bound=0,
               upper_bound=2)

define.enum("search_space", "cifar10_v1", list(families.space_names()),
            "The paper's convolutional spaces: v1 (no strides, no pooling), v2 (strides "
            "searched), v3 (max pooling at fixed depths); or its recurrent cell (ptb_cell).")
define.integer("search_cell_base", 8, "ptb_cell: leaves of the cell's tree, a power of two "
               "(paper: 8).", lower_bound=2)
define.enum("search_cell_functions", None, list(cell_space.FUNCTIONS), "ptb_cell: the "
            "functions of the cell's nodes (unset: 'paper': add, elem_mult; identity, tanh, "
            "sigmoid, relu). 'extended' adds max and sin, the paper's control experiment 1.")
define.integer("search_nb201_channels", None, "nb201_cell: channels of the first stage "
               "(the benchmark's 16).", lower_bound=1)
define.integer("search_nb201_cells", None, "nb201_cell: cells per stage (the benchmark's 5).",
               lower_bound=1)
define.integer("search_depth", 6, "Maximum number of convolutional layers (paper: its curriculum reaches 20 "
               "for v1 and v2, whose found networks have 15 and 20 layers; 39 for v3).", lower_bound=1, upper_bound=200)
define.list("search_filter_sizes", None, "Filter heights/widths to choose from (paper: 1,3,5,7).")
define.list("search_num_filters", ["8", "16", "24"], "Numbers of filters to choose from "
            "(paper: 24,36,48,64).")
define.list("search_strides", None, "Strides to choose from in v2 (paper: 1,2,3).")
define.list("search_pool_at", None, "Layers after which v3 max-pools (paper: 13,24 of 39).")
define.integer("search_max_trials", 10, "Children to train in all (paper: 12,800).", lower_bound=1)
define.integer("search_max_resamples", None, "With reuse: draws of already-trained "
               "architectures per trial before the oracle mutates the last one (preset "
               "default: 2).", lower_bound=0)
define.float("search_mutate_best", None, "Share of trials that mutate the best architecture "
             "found so far instead of drawing from the controller (unset: the preset's; "
             "default 0.5, paper 0).", lower_bound=0.0, upper_bound=1.0)
define.float("search_mutate_until", None, "Trials after which no more mutate the best "
             "architecture: the controller alone proposes (unset: the preset's; default 40, "
             "paper: never mutates).", lower_bound=0.0)
define.boolean("search_reuse_rewards", None, "Never retrain an architecture already trained "
               "(unset: the preset's; paper: retrain). Otherwise: "
               "its recorded reward is fed to the controller again instead.")
define.integer("search_curriculum_start", None, "Depth curriculum: first depth (paper: 6); "
               "unset samples full-depth networks.", lower_bound=1)
define.integer("search_curriculum_step", 2, "Depth curriculum: layers added per stage (paper: 2).",
               lower_bound=0)
define.integer("search_curriculum_every", 1600, "Depth curriculum: architectures per stage "
               "(paper: 1,600).", lower_bound=1)
define.integer("search_max_consecutive_failures", 10, "Stop the search when this many "
               "children in a row fail (out of memory, NaN loss, crash, timeout).",
               lower_bound=1)
define.integer("search_top_k", 5, "Children listed in the final summary.", lower_bound=1)

define.enum("data_name", "digits", list(data_lib.names()),
            "Dataset. Images: 'digits' (embedded, no download) or 'cifar10'. Text for "
            "ptb_cell: 'text' / 'text_char' (embedded corpus, no download) or 'ptb' / "
            "'ptb_char' (Penn Treebank). cifar10 and ptb read a prepared TensorFlow "
            "Datasets directory and never download.")
define.string("data_dir", None, "TensorFlow Datasets directory holding prepared cifar10 or "
              "ptb: a local path or a URL (gs://BUCKET/tensorflow_datasets).")

define.integer("controller_units", None, "LSTM units per controller layer (unset: the "
               "preset's; paper: 35).", lower_bound=1)
define.integer("controller_layers", None, "Controller LSTM layers (unset: the preset's; "
               "paper: 2).", lower_bound=1)
define.float("controller_init_range", None, "Controller weights start uniform in "
             "[-r, r] (unset: the preset's; paper: 0.08).", lower_bound=1e-6)
define.enum("controller_preset", None, ["default", "paper", "enas"],
            "Search method (unset: 'default', or 'enas' with --weight_sharing). 'paper': Zoph & Le 2017 where the paper specifies it (plain REINFORCE, Adam "
            "0.0006, or 0.0005 for ptb_cell; duplicates retrained; no mutation, clipping "
            "or logit bounding). 'default': what measured best at hundreds of trials "
            "(docs/search_brain.md). 'enas': ENAS's controller, for --weight_sharing "
            "(docs/weight_sharing.md). The controller_* and search_reuse_rewards / "
            "search_max_resamples / search_mutate_best flags override the preset's values.")
define.float("controller_learning_rate", None, "Controller Adam learning rate (paper: "
             "0.0006 for CIFAR-10, 0.0005 for the PTB cell).", lower_bound=1e-8)
define.integer("controller_batch_size", None, "Rewards per update, m (paper: 8).",
               lower_bound=1)
define.float("controller_baseline_decay", None, "Decay of the moving-average reward "
             "baseline (not given in the paper).", lower_bound=0.0, upper_bound=0.999999)
define.enum("controller_advantage", None, ["baseline", "normalized", "rank"],
            "Advantage: R - b (paper), (R - b) / batch std, or centred batch ranks.")
define.float("controller_ratio_clip", None, "PPO clip of the importance ratio pi/q "
             "(0: none, plain REINFORCE as in the paper).", lower_bound=0.0)
define.integer("controller_update_epochs", None, "Gradient steps per batch (paper: 1; "
               "more needs --controller_ratio_clip).", lower_bound=1)
define.float("controller_risk_seeking", None, "Train on the top share of each batch, "
             "baseline = its quantile (0: off, as in the paper).", lower_bound=0.0,
             upper_bound=1.0)
define.integer("controller_topk_size", None, "Best distinct architectures kept for the "
               "maximum-likelihood term (0: off, as in the paper).", lower_bound=0)
define.float("controller_topk_weight", None, "Weight of that term.", lower_bound=0.0)
define.float("controller_clip_norm", None, "Global gradient-norm clip (0: off, as in the "
             "paper).", lower_bound=0.0)
define.float("controller_entropy_weight", None, "Entropy bonus weight (paper: 0).",
             lower_bound=0.0)
define.float("controller_temperature", None, "Softmax temperature (unset: none, as in the "
             "paper).", lower_bound=1e-6)
define.float("controller_tanh_constant", None, "Bound logits to C*tanh(logits) (0: off, "
             "as in the paper).", lower_bound=0.0)

define.integer("child_epochs", 3, "Epochs per child (paper: 50).", lower_bound=1)
define.integer("child_batch_size", None, "Child batch size (unset: 64 images, or 20 "
               "text rows as in Zaremba et al.).", lower_bound=1)
define.float("child_learning_rate", None, "Child SGD learning rate (unset: 0.1 for images "
             "as in the paper's setup, 1.0 for language models as in Zaremba et al.).",
             lower_bound=1e-8)
define.float("child_momentum", 0.9, "Child Nesterov momentum (paper setup: 0.9).",
             lower_bound=0.0, upper_bound=0.999999)
define.float("child_weight_decay", 1e-4, "Child L2 weight decay (paper setup: 1e-4).",
             lower_bound=0.0)
define.integer("child_reward_epochs", 5, "Reward = max validation accuracy over this many "
               "last epochs, cubed (paper: 5).", lower_bound=1)
define.float("child_reward_power", 3.0, "Reward = that accuracy to this power (paper: 3). 1 "
             "makes the reward the accuracy, so the controller's moving-average baseline "
             "averages previous accuracies, as the paper's sec. 3.2 words it.", lower_bound=1e-6)
define.enum("child_xla", "auto", list(cli.AUTO_ON_OFF), "XLA for children: auto is on with "
            "a GPU or TPU and off on CPU.")
define.enum("child_distribution", "default", ["default", "mirrored", "tpu"],
            "Where each child trains: the default device (a GPU if present), all local "
            "GPUs (mirrored), or a Cloud TPU (tpu; see --tpu).")
define.string("tpu", None, "With --child_distribution=tpu: the TPU name or grpc address "
              "(unset: the TPU VM's own).")
define.integer("child_steps_per_execution", 1, "Images: training steps per compiled call "
               "(fewer host round trips on a GPU or TPU). 1 is Keras's default; larger values "
               "are unmeasured here (docs/distributed.md).", lower_bound=1)
define.boolean("child_mixed_precision", False, "Mixed-precision child training: float16 "
               "with loss scaling on a GPU, bfloat16 on a TPU (and on a CPU).")
define.integer("child_bptt_steps", 35, "Language models: unrolled steps per batch "
               "(Zaremba et al.: 35).", lower_bound=1)
define.integer("child_max_train_batches", None, "Language models: batches per epoch "
               "(unset: the whole training split).", lower_bound=1)
define.integer("child_max_eval_batches", None, "Language models: validation batches "
               "(unset: the whole validation split).", lower_bound=1)
define.boolean("child_isolate", True, "Train children in a worker process replaced every "
               "--child_per_worker children: the search's memory stays flat and a crash "
               "fails only its child.")
define.integer("child_per_worker", 20, "Children a worker process trains before it is "
               "replaced.", lower_bound=1)
define.float("child_timeout", 24 * 3600.0, "Seconds a child may train in its worker "
             "process before the worker is killed and the child fails with reason "
             "'timeout' (with --child_isolate).", lower_bound=1e-3)

define.integer("lm_units", None, "Language models: width of the cell (unset: the width "
               "that gives about 20M parameters, the paper's medium size).", lower_bound=1)
define.boolean("lm_tie_embeddings", False, "Language models: share the embedding with the "
               "softmax weights (the paper's 'shared embeddings').")
define.float("lm_input_dropout", 0.5, "Language models: dropout on the embeddings.",
             lower_bound=0.0, upper_bound=0.99)
define.float("lm_output_dropout", 0.5, "Language models: dropout between layers and "
             "before the softmax.", lower_bound=0.0, upper_bound=0.99)
define.float("lm_recurrent_dropout", 0.0, "Language models: dropout on h(t-1), one mask "
             "per sequence.", lower_bound=0.0, upper_bound=0.99)
define.boolean("lm_variational", False, "Language models: one dropout mask per sequence "
               "for input and output dropout.")


define.boolean("weight_sharing", False, "Search with one supernet whose sub-networks are the "
               "architectures (ENAS-style; docs/weight_sharing.md) instead of training every "
               "child: hours instead of GPU-years. The shared_* flags set it up.")
define.enum("shared_method", "controller", ["controller", "random"], "With --weight_sharing: "
            "the controller draws and learns, or random search with weight sharing.")
define.integer("shared_epochs", 10, "Epochs of shared-weight training, each followed by "
               "controller training (ENAS: 310 for its macro space).", lower_bound=1)
define.integer("shared_steps_per_epoch", None, "Shared-weight steps per epoch (unset: one "
               "pass over the training split).", lower_bound=1)
define.integer("shared_warmup_epochs", None, "Epochs of uniformly drawn architectures before "
               "the controller draws and learns (unset: a quarter of --shared_epochs).",
               lower_bound=0)
define.integer("shared_controller_samples", 100, "Architectures per epoch the controller "
               "learns from, each rewarded on one validation minibatch.", lower_bound=1)
define.integer("shared_derive_samples", 100, "Architectures drawn at the end and ranked on "
               "the whole validation split; the best is the result.", lower_bound=1)
define.integer("shared_batch_size", 64, "Images (or text windows) per shared-weight step.",
               lower_bound=1)
define.float("shared_learning_rate", 0.05, "Shared weights: cosine schedule's start (ENAS: "
             "0.05).", lower_bound=1e-8)
define.float("shared_min_learning_rate", 0.0005, "Shared weights: its end (ENAS: 0.0005).",
             lower_bound=0.0)
define.integer("shared_checkpoint_steps", None, "Also checkpoint every this many steps "
               "(unset: after each phase of each epoch).", lower_bound=1)
define.enum("shared_xla", "auto", list(cli.AUTO_ON_OFF), "XLA for the shared-weight steps: "
            "auto is off (XLA did not compile them; docs/weight_sharing.md, 'Devices').")


def _ints(name):
    """A list flag as a tuple of positive integers (None if unset)."""
    values = FLAGS[name].value
    if values is None:
        return None
    try:
        out = tuple(int(v.strip()) for v in values)
    except ValueError:
        raise app.UsageError(
            f"--{name} must be a comma-separated list of integers, got {','.join(values)!r}."
        ) from None
    if not out:
        raise app.UsageError(f"--{name} must list at least one integer.")
    if any(v < 1 for v in out):
        raise app.UsageError(f"--{name} must hold positive integers, got {','.join(values)!r}.")
    return out


# Flag -> the `SearchConfig` setting(s) it sets, "field" or "field.subfield"
# (`nas_tf.settings.search_config`). An unset flag (None) sets nothing, so the
# preset's or the dataclass's default holds; the space's family adds its own
# flags (`Family.flags`: the space's settings, for instance).
_SETTINGS = {
    "search_space": "space",
    "data_name": "dataset",
    "data_dir": "data_dir",
    "search_max_trials": "max_trials",
    "seed": "seed",
    "controller_preset": "preset",
    "controller_units": "controller.units",
    "controller_layers": "controller.num_layers",
    "controller_init_range": "controller.init_range",
    "controller_temperature": "controller.temperature",
    "controller_tanh_constant": "controller.tanh_constant",
    "controller_learning_rate": "reinforce.learning_rate",
    "controller_batch_size": "reinforce.batch_size",
    "controller_baseline_decay": "reinforce.baseline_decay",
    "controller_advantage": "reinforce.advantage",
    "controller_ratio_clip": "reinforce.ratio_clip",
    "controller_update_epochs": "reinforce.update_epochs",
    "controller_risk_seeking": "reinforce.risk_seeking",
    "controller_topk_size": "reinforce.topk_size",
    "controller_topk_weight": "reinforce.topk_weight",
    "controller_clip_norm": "reinforce.clip_norm",
    "controller_entropy_weight": "reinforce.entropy_weight",
    "child_epochs": ("child.epochs", "lm_train.epochs"),
    "child_batch_size": ("child.batch_size", "lm_train.batch_size"),
    "child_learning_rate": ("child.learning_rate", "lm_train.learning_rate"),
    "child_momentum": "child.momentum",
    "child_weight_decay": "child.weight_decay",
    "child_reward_epochs": "child.reward_epochs",
    "child_reward_power": "child.reward_power",
    "child_xla": ("child.jit_compile", "lm_train.jit_compile"),
    "child_mixed_precision": ("child.mixed_precision", "lm_train.mixed_precision"),
    "child_distribution": "child.distribution",
    "tpu": "child.tpu",
    "child_steps_per_execution": "child.steps_per_execution",
    "child_bptt_steps": "lm_train.bptt_steps",
    "child_max_train_batches": "lm_train.max_train_batches",
    "child_max_eval_batches": "lm_train.max_eval_batches",
    "child_isolate": "isolate_children",
    "child_per_worker": "children_per_worker",
    "child_timeout": "child_timeout",
    "lm_units": "lm_model.units",
    "lm_tie_embeddings": "lm_model.tie_embeddings",
    "lm_input_dropout": "lm_model.input_dropout",
    "lm_output_dropout": "lm_model.output_dropout",
    "lm_recurrent_dropout": "lm_model.recurrent_dropout",
    "lm_variational": "lm_model.variational",
    "search_reuse_rewards": "reuse_rewards",
    "search_max_resamples": "max_resamples",
    "search_mutate_best": "mutate_best",
    "search_mutate_until": "mutate_until",
    "search_max_consecutive_failures": "max_consecutive_failures",
    "search_top_k": "top_k",
    "allow_config_change": "allow_config_change",
    "overwrite": "overwrite",
    "verbose": "verbose",
    "shared_method": "weight_sharing.method",
    "shared_epochs": "weight_sharing.epochs",
    "shared_steps_per_epoch": "weight_sharing.steps_per_epoch",
    "shared_warmup_epochs": "weight_sharing.warmup_epochs",
    "shared_controller_samples": "weight_sharing.controller_samples",
    "shared_derive_samples": "weight_sharing.derive_samples",
    "shared_batch_size": "weight_sharing.batch_size",
    "shared_learning_rate": "weight_sharing.training.learning_rate",
    "shared_min_learning_rate": "weight_sharing.training.min_learning_rate",
    "shared_checkpoint_steps": "weight_sharing.checkpoint_steps",
    "shared_xla": "weight_sharing.training.jit_compile",
}
# Flags whose 0 means "off" (None in the config).
_ZERO_IS_NONE = ("controller_tanh_constant", "controller_ratio_clip", "controller_risk_seeking",
                 "controller_clip_norm")


def _flag_value(name):
    """A given flag's value as its setting takes it (lists as integer tuples, auto/on/off as None/bool)."""
    value = FLAGS[name].value
    if isinstance(value, list):
        return _ints(name)
    if name in ("child_xla", "shared_xla"):
        return cli.auto_on_off(value)
    if name in _ZERO_IS_NONE and value == 0:
        return None
    return value


def settings_from_flags() -> dict:
    """The settings the flags give (`nas_tf.settings.search_config` takes them).

    Raises:
      UsageError: for a flag of a space other than --search_space's, or a
        list flag that is not a list of positive integers.
    """
    family = families.for_space(FLAGS.search_space)
    for fam in families.names():
        for flag, spaces in families.get(fam).space_flags.items():
            if flag in FLAGS and FLAGS[flag].value is not None and FLAGS.search_space not in spaces:
                raise app.UsageError(
                    f"--{flag} applies to --search_space={' / '.join(spaces)} only."
                )
    table = dict(_SETTINGS)
    for flag, path in family.flags.items():  # The family's own flags add to the common ones.
        table[flag] = tuple(_paths(table.get(flag))) + (path,)
    settings = {}
    for flag, paths in table.items():
        if flag not in FLAGS or FLAGS[flag].value is None:  # A family may name flags of others.
            continue
        value = _flag_value(flag)
        for path in _paths(paths):
            settings_lib.set_setting(settings, path, value)
    if not FLAGS.weight_sharing:
        settings.pop("weight_sharing", None)  # The multi-trial search (the shared_* flags unused).
    if (settings.get("curriculum") or {}).get("start") is None:
        settings.pop("curriculum", None)  # A curriculum needs its first depth.
    return settings


def _paths(paths):
    if paths is None:
        return ()
    return (paths,) if isinstance(paths, str) else tuple(paths)


def _space_error(error: ValueError, family) -> app.UsageError:
    """A space setting's error, naming the flag that set it."""
    message = str(error)
    inner = message.split("}: ", 1)[-1]  # A factory's error names the settings given first.
    named = [
        f"--{flag}" for flag, path in family.flags.items()
        if path.startswith("space_overrides.") and path.split(".", 1)[1] in inner
    ]
    return app.UsageError(f"{' / '.join(named) or '--search_*'}: {message}")


def config_from_flags():
    """The `SearchConfig` the flags describe (flag problems raise UsageError)."""
    cli.check_finite(FLAGS)
    try:
        return settings_lib.search_config(FLAGS.output_dir, **settings_from_flags())
    except ValueError as e:
        raise app.UsageError(str(e))


def check_config(config):
    """Checks the space, the dataset and --data_dir before anything is written (UsageError)."""
    family = families.for_space(config.space)
    try:
        families.space_spec(config.space, config.space_overrides)
    except ValueError as e:
        raise _space_error(e, family) from None
    kind = family.data_kind
    if data_lib.get(config.dataset).kind != kind:
        what = "a text" if kind == data_lib.TEXT else "an image"
        raise app.UsageError(
            f"--search_space={config.space} needs {what} --data_name "
            f"({', '.join(data_lib.names(kind))})."
        )
    from nas_tf import remote

    try:
        remote.check_data_dir(config.data_dir)
        if remote.is_url(config.output_dir):
            remote.check_url(config.output_dir)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    from nas_tf.children import base

    try:  # A TPU nobody can reach fails here, before any child starts.
        base.check_distribution(config.child.distribution, config.child.tpu)
    except ValueError as e:
        raise app.UsageError(str(e)) from None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from nas_tf import data, dirlock, journal, jsonl, remote, search

    config = config_from_flags()
    check_config(config)
    if remote.is_url(config.output_dir) and search.role() != "single":
        raise app.UsageError(
            f"--output_dir {config.output_dir}: a URL works for a single process or under "
            "`python -m nas_tf.launch` (which mirrors it for its chief and workers); a chief or "
            "worker started by hand needs a directory they all see (a mounted bucket)."
        )
    def work():
        # A URL is worked on in a local mirror, synced after every child (nas_tf.remote).
        # Locked (nas_tf.dirlock) before the restore; a worker works in its chief's directory.
        lock = search.role() != "worker"
        with remote.mirrored(config.output_dir, FLAGS.local_dir, config.verbose, lock=lock) as mirror:
            local = dataclasses.replace(config, output_dir=mirror.local)
            search.run(local, after_child=mirror.sync_or_warn)  # Writes config.json.

    return cli.exit_status(work, {
        data.DataNotPreparedError: 2,
        search.ConfigChangedError: 1, search.SearchError: 1,
        jsonl.CorruptLineError: 1,  # A damaged history or controller log (file and line named).
        journal.CorruptStateError: 1,  # A damaged oracle state (the message says what to do).
        remote.SyncError: 1, dirlock.LockedError: 1,
    })


if __name__ == "__main__":
    cli.run(main, FLAGS, __doc__)
