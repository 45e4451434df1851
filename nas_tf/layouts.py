"""How the fast controller lays a space and its weights out as arrays.

Three layouts, each a pure function of the space (and the decision kinds'
widths): `WeightLayout`, every named weight's place in the controller's one
flat weight vector; `ArchitectureEncoding`, architectures as integer rows
(what the scoring graphs take); `DecisionTable`, the decisions as arrays
indexed by step (what the batched rollout's step reads). The readable
reference (`nas_tf.policy`) needs none of them.
"""

from typing import Dict, Sequence

import numpy as np
import tensorflow as tf

from nas_tf import space as space_lib


class WeightLayout:
    """Where each named weight of a controller lives in its one flat weight vector.

    The controller keeps every weight (LSTM cells, attention, embeddings,
    heads) in a single Keras variable, and every graph splits it into the
    named tensors as its first step. A graph then takes 2 variables (weights
    and the sampling generator's state) instead of one per weight, and the
    training step runs one clip, one Adam kernel and one read instead of one
    per weight: on NAS-Bench-201's controller (28 weights) building the
    controller and its optimizer took about 135 ms with a Keras layer per
    weight, which a 200-trial search paid once per search
    (docs/nasbench201.md, "Where the oracle's time goes").

    Args:
      entries: (name, shape) pairs in vector order; names are the Keras
        paths the weights had as layers ("lstm_0/kernel", "head_<kind>/bias"),
        which checkpoints keep.
      kinds: decision kind -> its name slug in the entries.
    """

    def __init__(self, entries, kinds: Dict[str, str]):
        self.entries = tuple((name, tuple(int(n) for n in shape)) for name, shape in entries)
        self.kinds = dict(kinds)
        self.names = [name for name, _ in self.entries]
        self.sizes = [int(np.prod(shape)) for _, shape in self.entries]
        self.offsets = dict(zip(self.names, np.cumsum([0] + self.sizes[:-1]).tolist()))
        self.shapes = dict(self.entries)
        self.size = int(sum(self.sizes))

    def key(self) -> tuple:
        return self.entries, tuple(sorted(self.kinds.items()))

    def split(self, flat: np.ndarray) -> Dict[str, np.ndarray]:
        """A flat vector as named arrays (copies)."""
        return {name: np.array(flat[self.offsets[name] : self.offsets[name] + size]
                                .reshape(self.shapes[name]))
                for name, size in zip(self.names, self.sizes)}

    def join(self, named: Dict[str, np.ndarray], into: np.ndarray) -> np.ndarray:
        """Writes named arrays into their places of `into` (a flat vector); returns it."""
        for name, value in named.items():
            into[self.offsets[name] : self.offsets[name] + value.size] = np.ravel(value)
        return into

    def unpack(self, w):
        """In a graph: the weight struct `rollout.BatchedPolicy` reads, from dict(flat, rng)."""
        pieces = tf.split(tf.convert_to_tensor(w["flat"]), self.sizes)
        named = {name: x if len(shape) == 1 else tf.reshape(x, shape)
                 for (name, shape), x in zip(self.entries, pieces)}
        cells, i = [], 0
        while f"lstm_{i}/kernel" in named:
            cells.append(tuple(named[f"lstm_{i}/{part}"]
                               for part in ("kernel", "recurrent_kernel", "bias")))
            i += 1
        return dict(
            cells=cells, go=named["go/kernel"], w_prev=named["attention_prev/kernel"],
            w_curr=named["attention_curr/kernel"], v=named["attention_v/kernel"],
            heads={k: (named[f"head_{s}/kernel"], named[f"head_{s}/bias"])
                   for k, s in self.kinds.items()},
            embeddings={k: named[f"embed_{s}/embeddings"] for k, s in self.kinds.items()},
            rng=w["rng"],
        )



class ArchitectureEncoding:
    """Where each decision's value lives in the integer encoding of a batch.

    A categorical decision takes one column (the value's index); an anchor takes
    one column per source (0/1). Inactive decisions hold zeros.
    """

    # Encoded rows kept by architecture (the top-K buffer's rows recur every
    # update); cleared when it reaches this many.
    cache_size = 4096

    def __init__(self, space: space_lib.Space):
        self.space = space
        self._rows: Dict[str, tuple] = {}  # to_json -> (row, depth), validated
        self.slot = {}
        self.position = {}
        width = 0
        for k, d in enumerate(space.decisions):
            self.slot[d.name] = width
            self.position[d.name] = k
            width += len(d.sources) if isinstance(d, space_lib.Anchor) else 1
        self.width = width

    def encode(self, archs: Sequence[space_lib.Architecture]):
        idx = np.zeros((len(archs), self.width), np.int32)
        depth = np.zeros((len(archs),), np.int32)
        for b, arch in enumerate(archs):
            idx[b], depth[b] = self._row(arch)
        return idx, depth

    def _row(self, arch: space_lib.Architecture):
        """(encoded row, depth) of one architecture, validated; cached by its JSON."""
        key = arch.to_json()
        cached = self._rows.get(key)
        if cached is not None:
            return cached
        arch = self.space.validate(arch)
        row = np.zeros((self.width,), np.int32)
        for name, value in arch.values.items():
            d = self.space[name]
            s = self.slot[name]
            if isinstance(d, space_lib.Anchor):
                row[s : s + len(value)] = value
            else:
                row[s] = d.index(value)
        if len(self._rows) >= self.cache_size:
            self._rows.clear()
        self._rows[key] = cached = (row, arch.depth or 0)
        return cached

    def decode(self, idx: np.ndarray, active: np.ndarray, depth: np.ndarray):
        archs = []
        use_depth = self.space.uses_depth
        for b in range(idx.shape[0]):
            values = {}
            for k, d in enumerate(self.space.decisions):
                if not active[b, k]:
                    continue
                s = self.slot[d.name]
                if isinstance(d, space_lib.Anchor):
                    values[d.name] = tuple(int(x) for x in idx[b, s : s + len(d.sources)])
                else:
                    values[d.name] = d.values[int(idx[b, s])]
            archs.append(
                space_lib.Architecture(values=values, depth=int(depth[b]) if use_depth else None)
            )
        return archs



class DecisionTable:
    """The space as arrays indexed by decision, for the rollout's loop body.

    Every kind's values are laid end to end (`offset` is the kind's first
    index in the concatenated heads and embeddings); anchors are numbered in
    order (`anchor_index`), and an anchor's `sources` row marks its sources
    among them. Each step's row of the rollout's record holds the chosen
    value's index (column 0) or the anchor's bit per earlier anchor;
    `columns` maps the encoding's columns (`ArchitectureEncoding`) back to (step, position).
    """

    def __init__(self, space: space_lib.Space, kinds: Sequence[str], sizes: Dict[str, int]):
        decisions = space.decisions
        anchors = [d.name for d in decisions if isinstance(d, space_lib.Anchor)]
        anchor_index = {name: i for i, name in enumerate(anchors)}
        position = {d.name: k for k, d in enumerate(decisions)}
        self.kinds = list(kinds)
        offsets, total = {}, 0
        for kind in self.kinds:
            offsets[kind], total = total, total + sizes[kind]
        self.num_steps = len(decisions)
        # The least depth a rollout is given: 1 when the space uses depth
        # (`Controller._depths`, `Space.validate`), else 0.
        self.least_depth = 1 if space.uses_depth else 0
        self.num_anchors = max(len(anchors), 1)
        self.max_conditions = max((len(d.when) for d in decisions), default=0)
        max_values = max(sizes.values(), default=1)
        self.cat_width = max(total, 1)
        self.prob_width = max(self.cat_width, self.num_anchors)
        n, k, a = self.num_steps, max(self.max_conditions, 1), self.num_anchors
        arrays = dict(
            min_depth=np.zeros(n, np.int32), is_anchor=np.zeros(n, bool),
            offset=np.zeros(n, np.int32), slot=np.zeros(n, np.int32),
            cat_mask=np.zeros((n, self.cat_width), bool), anchor_index=np.zeros(n, np.int32),
            sources=np.zeros((n, a), bool), source_cols=np.zeros((n, a), np.int32),
            cond_parent=np.zeros((n, k), np.int32), cond_used=np.zeros((n, k), bool),
            cond_allowed=np.zeros((n, k, max_values), bool),
        )
        layout = ArchitectureEncoding(space)
        columns, prob_columns, self.step_kinds = [], [], []
        for t, d in enumerate(decisions):
            arrays["min_depth"][t] = d.min_depth
            for j, cond in enumerate(d.when):
                parent = space[cond.decision]
                arrays["cond_parent"][t, j] = position[cond.decision]
                arrays["cond_used"][t, j] = True
                for value in cond.values:
                    arrays["cond_allowed"][t, j, parent.index(value)] = True
            slot = layout.slot[d.name]
            self.step_kinds.append(getattr(d, "kind", None))
            if isinstance(d, space_lib.Anchor):
                arrays["is_anchor"][t] = True
                arrays["anchor_index"][t] = anchor_index[d.name]
                for i, source in enumerate(d.sources):
                    arrays["sources"][t, anchor_index[source]] = True
                    arrays["source_cols"][t, anchor_index[source]] = slot + i
                    columns.append((t, anchor_index[source]))
                prob_columns.append([anchor_index[s] for s in d.sources])
            else:
                off = offsets[d.kind]
                arrays["offset"][t], arrays["slot"][t] = off, slot
                arrays["cat_mask"][t, off : off + d.num_choices] = True
                columns.append((t, 0))
                prob_columns.append(list(range(off, off + d.num_choices)))
        self.arrays = arrays
        self.columns = np.asarray(columns, np.int32).reshape(-1, 2)
        self.prob_columns = [np.asarray(c, np.int32) for c in prob_columns]

    def constants(self):
        """The arrays as graph constants, for the loop body to index by step."""
        return {name: tf.constant(value) for name, value in self.arrays.items()}

