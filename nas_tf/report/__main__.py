r"""Writes the report of a search: `python -m nas_tf.report <output_dir>`.

  python -m nas_tf.report runs/quick            # runs/quick/report/index.html
  python -m nas_tf.report runs/quick --top_k=20

Works on a finished, running or resumed search (it reads only the files the
search writes). Exit status: 0 written, 1 not a search's output directory (or
its history is corrupt: the file and line are named).
"""

import sys

from absl import app
from absl import flags

from nas_tf import history

flags.DEFINE_integer("top_k", 10, "Rows of the table of the best children.", lower_bound=1)
flags.DEFINE_string("report_dir", None, "Where to write the report (default: "
                    "<output_dir>/report).")

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) != 2:
        raise app.UsageError("Give one search output directory: python -m nas_tf.report runs/quick")
    from nas_tf import cli
    from nas_tf import report

    try:
        # A convolutional search's diagrams load TensorFlow: without its start-up log.
        with cli.tensorflow_log_filtered():
            index = report.build_report(argv[1], top_k=FLAGS.top_k, report_dir=FLAGS.report_dir)
    except (FileNotFoundError, history.HistoryError) as e:
        print(f"nas_tf.report: {e}", file=sys.stderr)
        return 1
    print(f"Wrote {index}")
    return 0


if __name__ == "__main__":
    app.run(main)
