"""The report's `index.html`: one self-contained page that shows the PNGs beside it."""

import html
import math
from typing import Dict, List, Optional

from nas_tf.report import data as data_lib

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto;
       max-width: 1100px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.left, th.left { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: 8px; font-size: 12px; overflow-x: auto; }
.meta td { text-align: left; border: none; padding: 1px 12px 1px 0; }
"""


def metric(record: dict) -> str:
    """The child's headline validation figure ("diverged" for a cell whose loss diverged)."""
    if record.get("diverged"):
        return "diverged"
    if isinstance(record.get("val_accuracy"), list) and record["val_accuracy"]:
        return f"val acc {max(record['val_accuracy']):.4f}"
    if isinstance(record.get("best_val_perplexity"), (int, float)):
        if record.get("level") == "char" and isinstance(record.get("bits_per_token"), (int, float)):
            return f"val bpc {record['bits_per_token']:.3f}"
        return f"val ppl {record['best_val_perplexity']:.2f}"
    for key in ("val_accuracy", "score"):
        if isinstance(record.get(key), (int, float)):
            return f"{key} {record[key]:.4f}"
    return ""


def top_rows(files: data_lib.SearchFiles, k: int) -> List[dict]:
    """The k best children, best first (earliest on ties)."""
    done = sorted(
        enumerate(files.completed),
        key=lambda item: (-item[1]["reward"], bool(item[1].get("diverged")), item[0]),
    )
    return [r for _, r in done[:k]]


def _number(x, fmt) -> str:
    return format(x, fmt) if isinstance(x, (int, float)) and math.isfinite(x) else ""


def render(
    files: data_lib.SearchFiles,
    images: Dict[str, Optional[str]],
    best_summary: Optional[str],
    top_k: int,
) -> str:
    """The page's HTML.

    Args:
      files: the search's files.
      images: section title -> PNG file name beside the page (None: nothing
        to draw yet, said so on the page).
      best_summary: the best architecture as text (`Architecture.summary`).
      top_k: rows of the top-k table.
    """
    c = files.config
    best = files.best()
    esc = html.escape
    meta = [
        ("output directory", files.output_dir),
        ("space", f"{c.get('space', '?')} {c.get('space_overrides') or ''}"),
        ("dataset", c.get("dataset", "?")),
        ("children", f"{len(files.completed)} trained"
                     + (f" ({len(files.diverged)} diverged, reward 0)" if files.diverged else "")
                     + f", {len(files.failed)} failed"
                     + (f", of {c['max_trials']} planned" if "max_trials" in c else "")),
        ("controller updates", str(len(files.updates))),
        ("method", c.get("preset", "?")),
    ]
    if len(files.workers) > 1:
        meta.append(("workers", ", ".join(files.workers)))
    if best is not None:
        meta.append(("best", f"trial {best['trial_id']}, reward {best['reward']:.4f} ({metric(best)})"))
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"><title>nas_tf search report</title>',
        f"<style>{_STYLE}</style></head><body>",
        "<h1>nas_tf search report</h1>",
        '<table class="meta">'
        + "".join(f"<tr><td><b>{esc(k)}</b></td><td>{esc(str(v))}</td></tr>" for k, v in meta)
        + "</table>",
    ]
    for title, name in images.items():
        parts.append(f"<h2>{esc(title)}</h2>")
        if name is None:
            parts.append("<p>Nothing to draw yet.</p>")
        else:
            parts.append(f'<img src="{esc(name)}" alt="{esc(title)}">')
        if title.startswith("Best") and best_summary:
            parts.append(f"<pre>{esc(best_summary)}</pre>")
    rows = top_rows(files, top_k)
    parts.append(f"<h2>Top {len(rows)} children</h2>")
    head = ["rank", "trial", "reward", "metric", "parameters", "depth", "training time (s)"]
    if len(files.workers) > 1:
        head.append("worker")
    parts.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>")
    for rank, r in enumerate(rows, 1):
        depth = (r.get("architecture") or {}).get("depth")
        cells = [
            str(rank), esc(r["trial_id"]), _number(r["reward"], ".4f"), esc(metric(r)),
            _number(r.get("num_params"), ",d") if isinstance(r.get("num_params"), int) else "",
            "" if depth is None else str(depth), _number(r.get("train_seconds"), ".1f"),
        ]
        if len(files.workers) > 1:
            cells.append(esc(str(r.get("worker", ""))))
        parts.append("<tr>" + "".join(f"<td>{v}</td>" for v in cells) + "</tr>")
    parts.append("</table>")
    parts.append(
        "<p style='color:#777;font-size:12px'>Drawn by <code>python -m nas_tf.report</code> from "
        "config.json, history.jsonl and controller_updates.jsonl; "
        "<code>tensorboard --logdir=" + esc(files.output_dir) + "</code> shows the same search "
        "live.</p></body></html>"
    )
    return "\n".join(parts) + "\n"
