r"""Prepares Penn Treebank for nas_tf from a local copy of the standard files.

  python -m nas_tf.prepare_ptb --manual_dir=/data/simple-examples/data \
      --data_dir=$HOME/tensorflow_datasets

writes the word-level and character-level TFDS datasets that
`python -m nas_tf.train --data_name=ptb|ptb_char --data_dir=...` reads. Without
--manual_dir the standard archive is downloaded (needs network access).
"""

import os
import sys

from absl import app
from absl import flags

from nas_tf import cli

# This entry point's own flag registry (the convention of `nas_tf.cli`).
FLAGS = flags.FlagValues()
define = cli.definer(FLAGS)
define.string("manual_dir", None, "Directory holding ptb.train.txt, ptb.valid.txt and "
              "ptb.test.txt (and optionally ptb.char.*.txt); unset downloads them.")
define.string("data_dir", None, "TensorFlow Datasets directory to write (unset: TFDS's "
              "default, ~/tensorflow_datasets).")
define.list("levels", ["word", "char"], "Which datasets to prepare: word, char.")

def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    bad = [level for level in FLAGS.levels if level not in ("word", "char")]
    if bad:
        raise app.UsageError(f"--levels must be word and/or char, got {bad}.")
    if FLAGS.manual_dir is not None and not os.path.isdir(FLAGS.manual_dir):
        raise app.UsageError(f"--manual_dir {FLAGS.manual_dir} is not a directory.")
    cli.quiet_tensorflow()
    from nas_tf.data import ptb

    for level in FLAGS.levels:
        try:
            builder = ptb.prepare(level, FLAGS.data_dir, FLAGS.manual_dir)
        except (FileNotFoundError, ValueError) as e:
            print(f"nas_tf: cannot prepare Penn Treebank ({level}): {e}", file=sys.stderr)
            return 2
        print(f"Penn Treebank ({level}) prepared in {builder.data_dir}")
    return 0


if __name__ == "__main__":
    cli.run(main, FLAGS, __doc__)
