"""A search's report: plots, architecture diagrams and the top-k table in one page.

`build_report(output_dir)` (and `python -m nas_tf.report <output_dir>`)
writes `<output_dir>/report/index.html` and, beside it:

* `rewards.png`: reward per child with its moving average and the best so
  far (per worker for a distributed search);
* `controller.png`: policy entropy, baseline and batch reward, loss and
  gradient norm, re-used share, per controller update;
* `decisions.png`: per decision position, a heat map of how often each value
  was chosen over the course of the search;
* `best_network.png` (convolutional search) or `best_cell.png` (cell
  search): the best architecture as the paper draws it (the family's
  `diagram` hook, `nas_tf.families`; a family without one has no drawing);

and the top-k table. Everything comes from the files the search writes
(`nas_tf.report.data`), so a finished, running or resumed search can be
reported at any time; no TensorFlow model is loaded.
"""

import os
from typing import Optional

from nas_tf import builtin_families  # noqa: F401 (registers the paper's space families)
from nas_tf import describe
from nas_tf import durable
from nas_tf.report import data as data_lib
from nas_tf.report import page, plots

REPORT = "report"


def build_report(output_dir: str, top_k: int = 10, report_dir: Optional[str] = None) -> str:
    """Writes the report of the search in `output_dir`.

    Args:
      output_dir: the search's output directory.
      top_k: rows of the top-k table.
      report_dir: where to write (default `<output_dir>/report`).

    Returns:
      The path of `index.html`.

    Raises:
      FileNotFoundError: if `output_dir` is not a search's output directory.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}.")
    files = data_lib.load(output_dir)
    out = report_dir or os.path.join(output_dir, REPORT)
    os.makedirs(out, exist_ok=True)

    def draw(fn, name, *args):
        return name if fn(*args, os.path.join(out, name)) else None

    images = {
        "Reward per child": draw(plots.rewards, "rewards.png", files),
        "Controller per update": draw(plots.controller, "controller.png", files),
        "Decisions over the search": draw(plots.decisions, "decisions.png", files),
    }
    best = files.best()
    arch = files.architecture(best) if best is not None else None
    summary = None
    if arch is not None:
        # The family's own drawing and text (`nas_tf.families`), the space's spec from config.json.
        family = describe.family_of(arch, files.config)
        spec = describe.spec_from_config(files.config)
        title = f"trial {best['trial_id']}, reward {best['reward']:.4f}"
        if family is not None and family.diagram is not None:
            images[family.diagram_title] = draw(
                lambda p: family.diagram(arch, p, spec, f"{family.diagram_title}: {title}"),
                family.diagram_file,
            )
        summary = describe.summary(arch, spec, files.config)
    index = os.path.join(out, "index.html")
    durable.atomic_write_text(index, page.render(files, images, summary, top_k))
    os.chmod(index, 0o644)  # Written through a private temporary file.
    return index
