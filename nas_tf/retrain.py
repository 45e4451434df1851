r"""The paper's final training of a found convolutional network: grid, full data, test error.

Zoph & Le 2017, sec. 4.1: after the search, the architecture with the best
validation accuracy is trained again with a small grid search over learning
rate, weight decay, batch-norm epsilon and the epoch at which the learning
rate decays; the best model of the grid is run until convergence and its test
accuracy is reported (Table 1).

This program does that for one architecture JSON of a convolutional space
(a search's `best_architecture.json`, or a file of `experiments/paper/`):

1. the grid: every combination of --grid_learning_rates, --grid_weight_decays,
   --grid_bn_epsilons and --grid_lr_decay_at trains --grid_epochs epochs on
   the training split and is scored on the held-out validation split (the
   max validation accuracy of its last 5 epochs, as the search's reward). A
   grid of one point is not trained: there is nothing to choose;
2. the final run: the best point trains --epochs epochs on the full training
   set (training + validation splits: CIFAR-10's 50,000 images);
3. the test split gives the error, printed as a row of the paper's Table 1
   (depth, parameters, error), and written to --output_dir:

  config.json        the resolved settings (a rerun with others is refused);
  grid.jsonl         one line per finished grid point;
  results.json       grid, chosen settings, per-epoch figures, test error;
  best_model.keras   the final model;
  saved_model/       the same model as a TensorFlow SavedModel (`model.export`)
                     for serving: `tf.saved_model.load(dir).serve(images)`.

  python -m nas_tf.retrain --architecture=runs/quick/best_architecture.json --data_name=digits
      # the defaults are the paper-scale schedule (16 x 50 + 300 epochs); for a
      # few minutes on a CPU add --grid_epochs=3 --epochs=10 --grid_learning_rates=0.1
  python -m nas_tf.retrain --architecture=runs/cifar10_v3/best_architecture.json \
      --data_dir=$HOME/tensorflow_datasets --more_filters=40

The space comes from the search's `config.json` beside the architecture file
(or --search_config); without one, from --space with the paper's values.
Killed at any point, the same command resumes: finished grid points are not
retrained and a run in progress continues from its last finished epoch
(weights, optimizer state and learning-rate schedule). Fault points for tests
(`NAS_TF_FAULT`, see `nas_tf.durable`): "retrain_after_epoch" (an epoch's
checkpoint was just written), "retrain_after_grid_point" (a grid point was
just recorded), "retrain_before_export" (the final model is trained and about
to be saved). Exit status: 0 done, 1 training failed, 2 data not prepared.
"""

import dataclasses
import itertools
import json
import os
import shutil
import time
from typing import Tuple

from absl import app
from absl import flags

from nas_tf import builtin_families  # noqa: F401 (registers the paper's space families)
from nas_tf import cli

cli.quiet_tensorflow()  # Before anything below imports TensorFlow.

from nas_tf import durable
from nas_tf import families
# The library part; these names stay importable from nas_tf.retrain.
from nas_tf.final_training import (  # noqa: F401
    BEST_MODEL,
    CONFIG,
    GRID,
    RESULTS,
    SAVED_MODEL,
    GridPoint,
    RetrainConfig,
    build_model,
    count_convolutions,
    full_training_set,
    load_architecture,
    read_space,
    retrainable_spaces,
    run_grid,
    table_row,
    train,
    widen,
)

# Its own registry, as every entry point (nas_tf/cli.py).
FLAGS = flags.FlagValues()
define = cli.definer(FLAGS)

define.string("architecture", None, "JSON file of the network to train: an architecture of a "
        "convolutional space, such as a search's best_architecture.json. Required.")
define.string("search_config", None, "The search's config.json, which names the space the "
        "architecture belongs to (unset: config.json beside --architecture, if there is one).")
define.enum("space", None, retrainable_spaces(), "The architecture's space with the paper's values, "
      "when no search config.json is found (unset: cifar10_v1). Overrides the search config.")
define.enum("data_name", "cifar10", ["cifar10", "digits"], "Images: 'cifar10' (a prepared "
      "TensorFlow Datasets directory, never downloaded) or 'digits' (embedded, no download).")
define.string("data_dir", None, "TensorFlow Datasets directory holding a prepared cifar10 (a "
              "local path or a URL such as gs://BUCKET/tensorflow_datasets).")
define.string("output_dir", None, "Where the results go, and where a killed run resumes from "
        "(unset: <directory of --architecture>/retrain); a URL (gs://...) is worked on in "
        "--local_dir and synced there at the end (nas_tf.remote).")
define.string("local_dir", None, "With a URL --output_dir: the local mirror the run works in "
              "(unset: ~/.cache/nas_tf/mirrors/<hash of the URL>).")
define.boolean("overwrite", False, "Delete an earlier run in --output_dir and start afresh.")
define.integer("seed", 0, "Seed of the validation split, the weights and the shuffling.",
         lower_bound=0)
define.integer("verbose", 1, "0: silent; 1: a line per grid point and per final epoch; 2: Keras "
         "progress bars too.", lower_bound=0, upper_bound=2)

define.integer("more_filters", 0, "Widen every convolution by this many filters (Zoph & Le 2017, "
         "Table 1: 40 more filters turn the 4.47% v3 network into the 3.65% one).",
         lower_bound=0)
# The paper names the grid's axes, not its values. The defaults bracket the
# search's child settings (DenseNet's: lr 0.1, weight decay 1e-4, lr / 10 at
# 50% and 75% of training) and the two batch-norm epsilons in common use
# (1e-3: Keras and TensorFlow; 1e-5: Torch, which DenseNet used).
define.list("grid_learning_rates", ["0.1", "0.05"], "Grid: initial SGD learning rates (not given "
      "in the paper; the search's children use 0.1).")
define.list("grid_weight_decays", ["1e-4", "5e-4"], "Grid: weight decays (not given in the paper; "
      "the search's children use 1e-4).")
define.list("grid_bn_epsilons", ["1e-3", "1e-5"], "Grid: batch-norm epsilons (not given in the "
      "paper; Keras's default 1e-3 and Torch's 1e-5).")
define.list("grid_lr_decay_at", ["0.5", "0.75"], "Grid: fraction of the epochs after which the "
      "learning rate is first divided by 10; it is divided again halfway from there to the "
      "end (0.5 gives DenseNet's 50% / 75%).")
define.integer("grid_epochs", 50, "Epochs of each grid point (the search's child length, sec. 4.1: "
         "50).", lower_bound=1)
define.integer("epochs", 300, "Epochs of the final run on the full training set (the paper trains "
         "'until convergence'; DenseNet's schedule: 300).", lower_bound=1)
define.integer("batch_size", 64, "Images per step (DenseNet's 64, as the search's children).",
         lower_bound=1)
define.float("momentum", 0.9, "Nesterov momentum (the search's children: 0.9).", lower_bound=0.0,
       upper_bound=0.999999)
define.enum("xla", "auto", list(cli.AUTO_ON_OFF), "XLA: auto is on with a GPU or TPU, off on CPU.")


def _check_resume(config: RetrainConfig) -> None:
    from nas_tf import search

    path = os.path.join(config.output_dir, CONFIG)
    text = json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        changes = [c for c in search.config_changes(old, json.loads(text))
                   if not c.startswith("verbose")]  # fmt: skip
        if changes:
            raise ValueError(
                f"{config.output_dir} holds a final training with other settings; resuming "
                f"would mix two. Changed: {'; '.join(changes)}. Pass --overwrite to start afresh "
                "or choose another --output_dir."
            )
    os.makedirs(config.output_dir, exist_ok=True)
    durable.atomic_write_text(path, text)


def _export(model, output_dir: str) -> Tuple[str, str]:
    """Writes the model as .keras and as a SavedModel, each atomically."""
    keras_path = os.path.join(output_dir, BEST_MODEL)
    with durable.atomic_path(keras_path) as tmp:
        model.save(tmp)
    saved = os.path.join(output_dir, SAVED_MODEL)
    tmp_dir = saved + ".tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    from absl import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.WARNING)  # TensorFlow's saver logs every asset at INFO.
    try:
        model.export(tmp_dir, verbose=False)
    finally:
        logging.set_verbosity(verbosity)
    shutil.rmtree(saved, ignore_errors=True)
    os.replace(tmp_dir, saved)
    durable.fsync_directory(output_dir)
    return keras_path, saved


def run(config: RetrainConfig, data=None) -> dict:
    """Grid, final run and test error of `config`; resumes whatever a kill left.

    Args:
      config: what to train.
      data: an `ImageData` to use instead of loading `config.data_name`.

    Returns:
      The results written to `<output_dir>/results.json`.

    Raises:
      ValueError: a changed configuration in an existing output directory, or
        an architecture outside its space.
      nas_tf.data.DataNotPreparedError: CIFAR-10 is not prepared.
      ChildTrainingError: the final run diverged (or every grid point did).
    """
    from nas_tf import search

    say = print if config.verbose else (lambda *a, **k: None)
    spec = families.spec_from_config(config.space)
    space_name = families.config_space_name(config.space)
    arch = load_architecture(config.architecture_path, spec)
    arch, spec = widen(arch, spec, config.more_filters)
    _check_resume(config)
    done = os.path.join(config.output_dir, RESULTS)
    if os.path.exists(done):  # Finished before: report, do not train again.
        with open(done, encoding="utf-8") as f:
            results = json.load(f)
        say(results["row"])
        return results
    if data is None:
        data = search.load_data(config.data_name, config.data_dir, seed=config.seed)
    if not data.num_test:
        raise ValueError(f"Dataset {data.name!r} has no test split to report an error on.")
    start = time.time()
    say(f"Final training of {config.architecture_path} ({space_name}, +{config.more_filters} "
        f"filters) on {data.name}: {len(config.grid)} grid points of {config.grid_epochs} "
        f"epochs, then {config.epochs} epochs on {data.num_train + data.num_valid:,} "
        "images.", flush=True)  # fmt: skip
    best, grid = run_grid(arch, spec, data, config, say)
    full = full_training_set(data)
    final_dir = os.path.join(config.output_dir, "final")
    model, history, resumed_at = train(arch, spec, full, best, config.epochs, final_dir, config,
                                       validate=False)  # fmt: skip
    test_loss, test_accuracy = model.evaluate(full.test_dataset(256), verbose=0)
    durable.fault_point("retrain_before_export")
    keras_path, saved = _export(model, config.output_dir)
    depth, params = count_convolutions(model), int(model.count_params())
    error = 1.0 - float(test_accuracy)
    name = os.path.basename(config.architecture_path) + (
        f" + {config.more_filters} filters" if config.more_filters else "")  # fmt: skip
    results = {
        "architecture_path": config.architecture_path,
        "space": space_name,
        "more_filters": config.more_filters,
        "depth": depth,
        "num_parameters": params,
        "test_accuracy": float(test_accuracy),
        "test_error": error,
        "test_loss": float(test_loss),
        "best_point": dataclasses.asdict(best),
        "grid": grid,
        "final_history": history,
        "final_train_images": full.num_train,
        "final_resumed_at_epoch": resumed_at,
        "seconds_this_session": time.time() - start,
        "model_path": keras_path,
        "saved_model_path": saved,
        "row": table_row(name, depth, params, error),
    }
    durable.atomic_write_text(os.path.join(config.output_dir, RESULTS),
                              json.dumps(results, indent=2, sort_keys=True) + "\n")  # fmt: skip
    shutil.rmtree(final_dir, ignore_errors=True)
    say("| model | depth | parameters | error rate (%) |")
    say("| --- | --- | --- | --- |")
    say(results["row"])
    say(f"Wrote {RESULTS}, {BEST_MODEL} and {SAVED_MODEL}/ to {config.output_dir}.", flush=True)
    return results


# -- the command line -------------------------------------------------------------


def _floats(name: str) -> Tuple[float, ...]:
    values = FLAGS[name].value or []
    try:
        out = tuple(float(v) for v in values)
    except ValueError:
        raise app.UsageError(f"--{name} must be a comma-separated list of numbers, got "
                             f"{','.join(values)!r}.") from None  # fmt: skip
    if not out:
        raise app.UsageError(f"--{name} must list at least one value.")
    if len(set(out)) != len(out):
        raise app.UsageError(f"--{name} repeats a value: {','.join(values)}.")
    return out


def config_from_flags() -> RetrainConfig:
    """The `RetrainConfig` the flags describe (flag problems raise UsageError)."""
    cli.check_finite(FLAGS)
    if FLAGS.architecture is None:
        raise app.UsageError("--architecture is required (a best_architecture.json).")
    from nas_tf import remote

    output_dir = FLAGS.output_dir or os.path.join(
        os.path.dirname(FLAGS.architecture) or ".", "retrain")
    try:
        remote.check_data_dir(FLAGS.data_dir)
        if remote.is_url(output_dir):
            remote.check_url(output_dir)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    axes = [_floats(n) for n in ("grid_learning_rates", "grid_weight_decays",
                                 "grid_bn_epsilons", "grid_lr_decay_at")]  # fmt: skip
    try:
        grid = tuple(GridPoint(*values) for values in itertools.product(*axes))
        space = read_space(FLAGS.architecture, FLAGS.search_config, FLAGS.space)
        load_architecture(FLAGS.architecture, families.spec_from_config(space))
        return RetrainConfig(
            output_dir=output_dir,
            architecture_path=FLAGS.architecture,
            space=space,
            data_name=FLAGS.data_name,
            data_dir=FLAGS.data_dir,
            grid=grid,
            grid_epochs=FLAGS.grid_epochs,
            epochs=FLAGS.epochs,
            batch_size=FLAGS.batch_size,
            momentum=FLAGS.momentum,
            more_filters=FLAGS.more_filters,
            jit_compile=cli.auto_on_off(FLAGS.xla),
            seed=FLAGS.seed,
            verbose=FLAGS.verbose,
        )
    except ValueError as e:
        raise app.UsageError(str(e))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from nas_tf import data as data_lib
    from nas_tf import dirlock, remote
    from nas_tf.children.convnet import ChildTrainingError

    config = config_from_flags()

    def work():
        # A URL is worked on in a local mirror, synced at the end (nas_tf.remote); either is
        # locked (nas_tf.dirlock) before --overwrite clears it.
        with remote.mirrored(config.output_dir, FLAGS.local_dir, config.verbose) as mirror:
            if FLAGS.overwrite:
                mirror.clear()
            run(dataclasses.replace(config, output_dir=mirror.local))

    return cli.exit_status(work, {
        data_lib.DataNotPreparedError: 2,
        remote.SyncError: 1,
        dirlock.LockedError: 1,
        ValueError: 1,
        ChildTrainingError: 1,
    })

if __name__ == "__main__":
    cli.run(main, FLAGS, __doc__)
