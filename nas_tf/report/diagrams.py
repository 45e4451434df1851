"""Diagrams of a found architecture, drawn as the paper draws them (matplotlib).

* `conv_network`: Zoph & Le 2017, appendix Figure 7 style: the image at the
  bottom, one box per layer going up with its filter height (FH), width (FW)
  and number (N) (and stride, and the max pools of the space), the softmax on
  top; a layer fed by the one below it gets a straight arrow, every skip
  connection a curved arrow from its source; layers that feed no later layer
  go to the softmax.
* `cell`: Figure 5 style: the tree of combination and activation nodes over
  x_t and h_(t-1) (leaves at the bottom, h_t at the root), the cell inject
  (c_(t-1) merged into one node's output) and the cell index (the node whose
  value before its activation becomes c_t).
"""

from typing import Optional

import numpy as np

from nas_tf.report import plots

_LAYER = "#cfe2f3"
_POOL = "#f4cccc"
_IO = "#eeeeee"
_COMBINE = "#fff2cc"
_ACTIVATION = "#d9ead3"
_MEMORY = "#ead1dc"


def _box(ax, x, y, text, color, width=2.6, height=0.62, fontsize=8):
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch(
        (x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.02,rounding_size=0.08",
        facecolor=color, edgecolor="#333333", lw=0.8, zorder=3,
    ))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, zorder=4)


def _arrow(ax, start, end, rad=0.0, color="#333333", lw=0.9, style="-|>"):
    from matplotlib.patches import FancyArrowPatch

    ax.add_patch(FancyArrowPatch(
        start, end, arrowstyle=style, mutation_scale=9, color=color, lw=lw,
        connectionstyle=f"arc3,rad={rad}", zorder=2, shrinkA=0, shrinkB=0,
    ))


def conv_network(arch, path: str, spec, title: Optional[str] = None) -> str:
    """Draws a convolutional network (see the module docstring); returns `path`.

    Args:
      arch: the network.
      path: the PNG to write.
      spec: its `ConvSpaceSpec` (`nas_tf.conv_family.diagram` passes the
        smallest one that holds `arch` when the search's is unknown).
      title: the figure's title.
    """
    from nas_tf.children import convnet

    layers = convnet.decode(arch, spec)
    plt = plots.pyplot()
    # Rows from the bottom: image, then layers with pool rows where a stage begins.
    rows, y = {}, 1.0
    pool_rows = []
    stage = 0
    for i, layer in enumerate(layers):
        if layer.stage > stage:
            pool_rows.append(y)
            y += 1.0
            stage = layer.stage
        rows[i] = y
        y += 1.0
    top = y
    height = max(4.0, 0.55 * (top + 1))
    fig, ax = plt.subplots(figsize=(6.4, height), dpi=plots.DPI)
    half = 0.31  # Half a box's height.
    _box(ax, 0, 0, "Image", _IO)
    for y_pool in pool_rows:
        _box(ax, 0, y_pool, f"max pool {convnet.POOL_SIZE}x{convnet.POOL_SIZE}", _POOL)
    for i, layer in enumerate(layers):
        text = f"FH: {layer.filter_height}  FW: {layer.filter_width}  N: {layer.num_filters}"
        if (layer.stride_height, layer.stride_width) != (1, 1):
            text += f"\nSH: {layer.stride_height}  SW: {layer.stride_width}"
        _box(ax, 0, rows[i], text, _LAYER, height=0.62 if "\n" not in text else 0.8)
    _box(ax, 0, top, "Softmax", _IO)
    # Pool boxes pass their stage's inputs on: draw the vertical chain through them.
    for y_pool in pool_rows:
        _arrow(ax, (0, y_pool - 1 + half), (0, y_pool - half), color="#999999")
    # Skip connections (and dangling outputs into the softmax) run in lanes
    # beside the boxes: out of the source's side, up, into the target's side.
    # Lanes are assigned like intervals, so two connections never share one
    # where they overlap; even lanes go right, odd ones left.
    skips = []
    pools = set(pool_rows)

    def through_pools(y_from, y_to):
        """Whether only pooling boxes lie between two rows (the straight path)."""
        return all(y in pools for y in np.arange(y_from + 1.0, y_to - 0.5, 1.0))

    for i, layer in enumerate(layers):
        for j in layer.inputs or (-1,):
            y_from = 0.0 if j < 0 else rows[j]
            if through_pools(y_from, rows[i]):
                # Into the box below (a layer, the image, or the last pool box).
                _arrow(ax, (0, rows[i] - 1.0 + half), (0, rows[i] - half))
            else:
                skips.append((y_from, rows[i], "#1f5fa8"))
    for j in convnet.dangling(layers):
        if top - rows[j] <= 1.0 + 1e-9:
            _arrow(ax, (0, rows[j] + half), (0, top - half))
        else:
            skips.append((rows[j], top, "#a83232"))
    lane_end = []
    placed = []
    for y_from, y_to, color in sorted(skips):
        for lane, end_y in enumerate(lane_end):
            if end_y <= y_from:
                lane_end[lane] = y_to
                break
        else:
            lane_end.append(y_to)
            lane = len(lane_end) - 1
        placed.append((lane, y_from, y_to, color))
    per_side = max(1, (len(lane_end) + 1) // 2)
    gap = min(0.3, 1.7 / per_side)
    for lane, y_from, y_to, color in placed:
        side = 1 if lane % 2 == 0 else -1
        x_lane = side * (1.3 + gap * (lane // 2 + 1))
        x_edge = side * 1.3
        # Leave a little above the box's middle, arrive a little below it.
        a, b = y_from + 0.12, y_to - 0.12
        ax.plot([x_edge, x_lane, x_lane], [a, a, b], color=color, lw=0.8, zorder=1)
        _arrow(ax, (x_lane, b), (x_edge, b), color=color, lw=0.8)
    span = 1.3 + gap * (per_side + 1)
    ax.set_xlim(-max(3.2, span), max(3.2, span))
    ax.set_ylim(-0.8, top + 0.8)
    ax.axis("off")
    ax.set_title(title or f"Best convolutional network ({len(layers)} layers)", fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.45 / fig.get_figheight(), bottom=0.01)
    fig.savefig(path)
    plt.close(fig)
    return path


def _tree_positions(description):
    """(x, level) of each node: leaves spread out, a parent over its children."""
    from nas_tf.spaces import cell as cell_space

    base = description.base
    x, level = {}, {}
    for node in range(cell_space.num_nodes(base)):
        kids = description.children(node)
        if kids is None:
            x[node], level[node] = node * 3.2, 0
        else:
            x[node] = (x[kids[0]] + x[kids[1]]) / 2
            level[node] = level[kids[0]] + 1
    return x, level


def cell(arch, path: str, title: Optional[str] = None) -> str:
    """Draws a recurrent cell (see the module docstring); returns `path`."""
    from nas_tf.spaces import cell as cell_space

    description = cell_space.CellDescription.from_architecture(arch)
    x, level = _tree_positions(description)
    plt = plots.pyplot()
    step = 4.2  # Vertical distance between tree levels.
    depth = max(level.values())
    fig, ax = plt.subplots(
        figsize=(max(6.5, 1.25 * description.base + 2.5), 1.7 * (depth + 2) + 1.0), dpi=plots.DPI
    )
    bw, bh = 2.2, 0.7

    def combine_y(node):
        return 1.6 + step * level[node]

    out_y = {}  # Where each node's output leaves (after its activation, or its inject).
    for node, node_spec in enumerate(description.nodes):
        cx, cy = x[node], combine_y(node)
        _box(ax, cx, cy, node_spec.combine, _COMBINE, width=bw, height=bh)
        _box(ax, cx, cy + 1.3, node_spec.activation, _ACTIVATION, width=bw, height=bh)
        _arrow(ax, (cx, cy + bh / 2), (cx, cy + 1.3 - bh / 2))
        ax.text(cx - bw / 2 - 0.1, cy, str(node), ha="right", va="center", fontsize=7, color="#666666")
        out_y[node] = cy + 1.3 + bh / 2
        kids = description.children(node)
        if kids is None:  # A leaf combines W x_t and U h_(t-1).
            for dx, label in ((-0.6, "x$_t$"), (0.6, "h$_{t-1}$")):
                ax.text(cx + dx, cy - 1.45, label, ha="center", va="center", fontsize=8)
                _arrow(ax, (cx + dx, cy - 1.2), (cx + dx * 0.6, cy - bh / 2))
    inject = description.inject_node
    ix, iy = x[inject], combine_y(inject) + 2.6
    _box(ax, ix, iy, f"{description.inject.combine}, {description.inject.activation}", _MEMORY, width=bw, height=bh)
    _arrow(ax, (ix, out_y[inject]), (ix, iy - bh / 2))
    mx = min(x.values()) - 3.0
    _box(ax, mx, iy, "c$_{t-1}$", _IO, width=1.4, height=bh)
    _arrow(ax, (mx + 0.7, iy), (ix - bw / 2, iy), color="#a83232")
    ax.text(ix + bw / 2 + 0.1, iy, "cell inject", ha="left", va="center", fontsize=7, color="#a83232")
    out_y[inject] = iy + bh / 2
    for node in range(len(description.nodes)):
        kids = description.children(node)
        if kids is not None:
            for kid in kids:
                _arrow(ax, (x[kid], out_y[kid]), (x[node], combine_y(node) - bh / 2))
    root = description.root
    hy = max(out_y[root], combine_y(root) + 1.3 + bh / 2) + 1.1
    _box(ax, x[root], hy, "h$_t$", _IO, width=1.4, height=bh)
    _arrow(ax, (x[root], out_y[root]), (x[root], hy - bh / 2))
    # c_t leaves the memory node's combine box (its value before the activation):
    # out of its right side, down into the free band under it, then right,
    # past the tree, to c_t; the path crosses arrows but no box.
    memory = description.memory_node
    cx_out = max(x.values()) + 3.0
    my = combine_y(memory)
    lane_y = my - 0.8
    x0 = x[memory] + bw / 2
    ax.plot([x0, x0 + 0.35, x0 + 0.35, cx_out - 0.7], [my, my, lane_y, lane_y],
            color="#a83232", lw=0.9, zorder=1)
    _box(ax, cx_out, lane_y, "c$_t$", _IO, width=1.4, height=bh)
    _arrow(ax, (cx_out - 1.0, lane_y), (cx_out - 0.7, lane_y), color="#a83232")
    ax.text(cx_out, lane_y + bh / 2 + 0.15, "cell index: node "
            f"{memory}\nbefore its activation", ha="center", va="bottom", fontsize=7,
            color="#a83232")
    ax.set_xlim(mx - 1.2, cx_out + 1.2)
    ax.set_ylim(-0.6, hy + 0.9)
    ax.axis("off")
    ax.set_title(title or f"Best recurrent cell (base {description.base})", fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.45 / fig.get_figheight(), bottom=0.01)
    fig.savefig(path)
    plt.close(fig)
    return path
