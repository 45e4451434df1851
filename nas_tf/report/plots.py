"""The report's charts (matplotlib, drawn off screen): rewards, controller, decisions.

Each function draws one PNG from a `SearchFiles` and returns its path, or None
when the search has nothing to draw yet (no child, no update).
"""

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from nas_tf import space as space_lib
from nas_tf.report import data as data_lib

DPI = 110


def pyplot():
    """matplotlib's pyplot on the Agg (file-only) backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Mean of the last `window` values at each point (fewer at the start)."""
    x = np.asarray(values, np.float64)
    sums = np.cumsum(np.concatenate([[0.0], x]))
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(idx - window, 0)
    return (sums[idx] - sums[lo]) / (idx - lo)


def best_so_far(values: Sequence[float]) -> np.ndarray:
    return np.maximum.accumulate(np.asarray(values, np.float64)) if len(values) else np.zeros(0)


def window_for(n: int) -> int:
    """Moving-average window: a tenth of the children, at least 3, at most 100."""
    return int(min(100, max(3, n // 10)))


def rewards(files: data_lib.SearchFiles, path: str) -> Optional[str]:
    """Reward per child (in trial order) with its moving average and the best so far.

    A distributed search's children are coloured by worker, each worker with
    its own moving average; failed children are marked on the axis.
    """
    records = [r for r in files.records if r.get("architecture") is not None or r.get("reward") is not None]
    if not records:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=DPI)
    order = {r["trial_id"]: i + 1 for i, r in enumerate(records)}
    done = files.completed
    x = np.array([order[r["trial_id"]] for r in done])
    y = np.array([r["reward"] for r in done], np.float64)
    workers = files.workers
    if len(workers) > 1:
        cmap = plt.get_cmap("tab10")
        for k, w in enumerate(workers):
            mine = [i for i, r in enumerate(done) if str(r.get("worker")) == w]
            if not mine:
                continue
            ax.scatter(x[mine], y[mine], s=14, color=cmap(k % 10), alpha=0.6, label=f"worker {w}")
            ax.plot(x[mine], moving_average(y[mine], window_for(len(mine))), color=cmap(k % 10), lw=1.2)
    elif len(y):
        ax.scatter(x, y, s=14, color="tab:blue", alpha=0.55, label="child")
    if len(y):
        window = window_for(len(y))
        ax.plot(x, moving_average(y, window), color="black", lw=1.6, label=f"moving average ({window})")
        ax.step(x, best_so_far(y), where="post", color="tab:red", lw=1.6, label="best so far")
    diverged = [i for i, r in enumerate(done) if r.get("diverged")]
    if diverged:  # Trained children too (reward 0), marked apart.
        ax.scatter(x[diverged], y[diverged], marker="v", color="tab:orange", s=22,
                   label="diverged (reward 0)")
    failed = [order[r["trial_id"]] for r in files.failed if r["trial_id"] in order]
    if failed:
        bottom = float(np.min(y)) if len(y) else 0.0
        ax.scatter(failed, [bottom] * len(failed), marker="x", color="tab:red", s=28, label="failed")
    ax.set_xlabel("child (trial order)")
    ax.set_ylabel("reward")
    diverged_note = f" ({len(diverged)} diverged)" if diverged else ""
    ax.set_title(
        f"Reward per child: {len(done)} trained{diverged_note}, {len(files.failed)} failed"
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.subplots_adjust(left=0.11, right=0.98, top=0.92, bottom=0.12)
    fig.savefig(path)
    plt.close(fig)
    return path


def controller(files: data_lib.SearchFiles, path: str) -> Optional[str]:
    """Policy entropy, baseline and batch reward, gradient norm and re-used share per update."""
    updates = files.updates
    if not updates:
        return None
    plt = pyplot()
    steps = [u["update"] for u in updates]

    def series(name):
        return [u.get(name, math.nan) for u in updates]

    fig, axes = plt.subplots(2, 2, figsize=(9, 5.6), dpi=DPI, sharex=True)
    ax = axes[0, 0]
    ax.plot(steps, series("entropy"), color="tab:purple", marker=".")
    ax.set_title("policy entropy (nats, summed over decisions)", fontsize=10)
    ax = axes[0, 1]
    ax.plot(steps, series("mean_reward"), color="tab:blue", marker=".", label="batch mean reward")
    ax.plot(steps, series("baseline"), color="black", lw=1.5, label="baseline (EMA)")
    ax.set_title("baseline and batch reward", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1, 0]
    ax.plot(steps, series("grad_norm"), color="tab:green", marker=".", label="gradient norm")
    ax.plot(steps, series("loss"), color="tab:orange", marker=".", label="loss")
    ax.set_title("loss and gradient norm (before clipping)", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    ax.plot(steps, series("reused_share"), color="tab:brown", marker=".")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("share of re-used rewards in the batch", fontsize=10)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("controller update")
    fig.subplots_adjust(left=0.07, right=0.98, top=0.94, bottom=0.09, hspace=0.25, wspace=0.2)
    fig.savefig(path)
    plt.close(fig)
    return path


def _space_of(files: data_lib.SearchFiles, archs) -> space_lib.Space:
    """The searched space from config.json, else one inferred from the architectures."""
    from nas_tf import families

    spec = families.search_spec(files.config)[1]
    if spec is not None:
        return families.space_of(spec)
    names, values = [], {}
    for a in archs:
        for name, v in a.values.items():
            if name not in values:
                names.append(name)
                values[name] = set()
            values[name].add(v)
    decisions = []
    for name in names:
        vs = values[name]
        if all(isinstance(v, tuple) for v in vs):
            width = max(len(v) for v in vs)
            decisions.append(space_lib.Anchor(name, tuple(f"source {j}" for j in range(width))))
        else:
            decisions.append(space_lib.Categorical(name, tuple(sorted(vs, key=str))))
    return _LooseSpace(decisions)


class _LooseSpace:
    """Decisions without a Space's checks (anchor sources need not be decisions)."""

    def __init__(self, decisions):
        self.decisions = tuple(decisions)


def decision_frequencies(
    space, archs: Sequence[space_lib.Architecture], columns: int
) -> List[Tuple[str, Tuple[str, ...], np.ndarray]]:
    """Per decision: (name, value labels, frequency [values x columns]).

    The children, in trial order, are cut into `columns` consecutive windows;
    each cell is the share of the window's children (those in which the
    decision is active) that chose the value; an anchor's rows are its
    sources, each the share that flagged it.
    """
    n = len(archs)
    edges = np.linspace(0, n, columns + 1).round().astype(int)
    out = []
    for d in space.decisions:
        is_anchor = isinstance(d, space_lib.Anchor)
        labels = tuple(s.split("/")[0] if is_anchor else str(s) for s in (d.sources if is_anchor else d.values))
        matrix = np.full((len(labels), columns), np.nan)
        for c in range(columns):
            window = [a.values.get(d.name) for a in archs[edges[c] : edges[c + 1]]]
            window = [v for v in window if v is not None]
            if not window:
                continue
            counts = np.zeros(len(labels))
            for v in window:
                if is_anchor:
                    counts[: len(v)] += np.asarray(v, np.float64)[: len(labels)]
                else:
                    try:
                        counts[d.index(v)] += 1
                    except space_lib.ArchitectureError:
                        pass
            matrix[:, c] = counts / len(window)
        if len(labels):
            out.append((d.name, labels, matrix))
    return out


def decisions(files: data_lib.SearchFiles, path: str, max_columns: int = 20) -> Optional[str]:
    """Heat maps, one per decision position: how often each value was chosen over the search.

    The decisions are stacked, each a band of rows (its values, or an
    anchor's sources) with its name on the left, in up to four panels side by
    side; one image per panel keeps drawing fast for hundreds of rows.
    """
    archs = [a for a in (files.architecture(r) for r in files.records) if a is not None]
    if not archs:
        return None
    space = _space_of(files, archs)
    columns = max(1, min(max_columns, len(archs)))
    table = decision_frequencies(space, archs, columns)
    if not table:
        return None
    plt = pyplot()
    total = sum(len(labels) + 1 for _, labels, _ in table)
    panels = int(min(4, max(1, math.ceil(total / 70))))
    groups, size, target = [[]], 0, total / panels
    for item in table:
        if size >= target and len(groups) < panels:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += len(item[1]) + 1
    tallest = max(sum(len(labels) + 1 for _, labels, _ in g) for g in groups)
    fig_h = 1.3 + 0.13 * tallest
    fig_w = max(8.0, 4.4 * len(groups) + 1.0)
    fig, axes = plt.subplots(1, len(groups), figsize=(fig_w, fig_h), dpi=DPI, squeeze=False)
    image = None
    for ax, group in zip(axes[0], groups):
        rows, ticks, names = [], [], []
        for name, labels, matrix in group:
            if rows:
                rows.append(np.full((1, columns), np.nan))  # A gap between decisions.
            start = sum(len(r) for r in rows)
            rows.append(matrix)
            ticks += [(start + k, str(label)) for k, label in enumerate(labels)]
            names.append((start + (len(labels) - 1) / 2, name))
        stacked = np.concatenate(rows, axis=0)
        image = ax.imshow(
            np.ma.masked_invalid(stacked), aspect="auto", cmap="viridis", vmin=0, vmax=1,
            interpolation="nearest", extent=(0, len(archs), len(stacked) - 0.5, -0.5),
        )
        ax.set_yticks([t for t, _ in ticks])
        ax.set_yticklabels([label for _, label in ticks], fontsize=5.5)
        for y, name in names:
            ax.text(-0.16, y, name, transform=ax.get_yaxis_transform(), ha="right", va="center", fontsize=6.5)
        ax.set_xlabel("child", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_facecolor("white")
    fig.suptitle(
        f"Share of children choosing each value ({len(archs)} children, {columns} windows)",
        fontsize=10,
    )
    fig.subplots_adjust(left=2.0 / fig_w, right=1 - 0.8 / fig_w, top=1 - 0.55 / fig_h,
                        bottom=0.5 / fig_h, wspace=2.3 / 4.4)
    cax = fig.add_axes((1 - 0.65 / fig_w, 0.5 / fig_h, 0.12 / fig_w, 1 - 1.05 / fig_h))
    fig.colorbar(image, cax=cax)
    fig.savefig(path)
    plt.close(fig)
    return path
