"""The paper's convolutional spaces as a weight-sharing supernet (ENAS's "macro" search).

Zoph & Le 2017 (sec. 3.3, 4.1) train every sampled CIFAR-10 child from
scratch; ENAS (Pham et al. 2018, sec. 2.3 "designing convolutional networks")
shares one weight set among all of them. This supernet covers `cifar10_v1`
and `cifar10_v2` (strides searched) at the space's full depth, and computes
exactly the stand-alone child of `nas_tf.children.convnet` (conv + BN + ReLU
per layer; rule 1: a layer with no input takes the image; rule 2: dangling
layers go to global average pooling and the classifier; rule 3: inputs of
different spatial size are zero-padded, centred, to the largest), with the
differences said below (BN statistics, weight decay).

Weights, per layer i:

* a kernel per *source* s (the image, or an earlier layer j) of the largest
  filter size, whose centred `[fh, fw]` part a filter-size choice uses
  (`kernel_sharing="nested"`, the default), or one kernel per (filter height,
  filter width) choice and source (`"separate"`), of shape
  `[fh, fw, c_s, max(num_filters)]`.
  A layer's input is the concatenation of its selected sources, and the
  convolution of a concatenation is the sum of the per-source convolutions,
  so the layer computes `sum_s conv(x_s, K[fh, fw][s][:, :, :n_s, :n])`, each
  term inside a `tf.cond` on the source's anchor bit (an unselected source
  costs nothing). Filter counts share by slicing the widest kernel: n filters
  are its first n output channels (ENAS's channel sharing);
* BatchNorm gamma/beta per (filter size) choice, of the widest layer, sliced
  to n. BN always normalises with the batch's own moments, in training and
  in evaluation; there are no moving averages: statistics accumulated over
  many sub-networks describe none of them (keras-team/keras#8794; ENAS and
  NAS-Bench-201's search baselines do the same). The stand-alone child run in
  training mode (batch statistics) gives the same logits.

The classifier holds one `[max(num_filters), classes]` block per layer and a
bias: `logits = sum_j GAP(x_j) @ W_j[:n_j] + b` over the dangling layers j,
which is the child's Dense over their concatenation. Which layers dangle is
computed in the graph from the anchor bits. Under v2 the spatial sizes are
tensors too: every selected input is padded to the largest selected one
inside its branch, and the average pool divides by the largest dangling area
(the mean of the child's zero-padded concatenation).

Choices enter as an int32 code (`encode`), in the space's decision order;
per layer i: `[filter_height, filter_width, (stride_height, stride_width),
num_filters, anchor bit over layers 0..i-1]` (choice indices, then 0/1
flags). The filter size is one `tf.switch_case` over the (height, width)
pairs, which picks that choice's kernels and BN parameters; the stride one
switch over the (height, width) pairs around each source's convolution (a
convolution's strides are static); the number of filters a dynamic slice.
Branch functions are bound with `functools.partial`, never closures over a
loop variable (ENAS's late-binding bug).

Weight decay: `weight_decay * sum of squares` of the kernel slices and
classifier blocks the sampled network used (the convention of
`nas_tf.supernets.nb201`; the Keras child applies `L2(weight_decay / 2)`).
Unused weights get no decay and no gradient.

Not covered: `cifar10_v3` (dense blocks, `block_size` 3) and max pooling
(`pool_at`): the constructor rejects them.
"""

import functools
import math
from typing import Dict, List

import numpy as np
import tensorflow as tf

from nas_tf import space as space_lib
from nas_tf.spaces import conv as conv_space
from nas_tf.supernets import base

# "nested": one kernel of the largest size per (layer, source); a filter-size choice
# uses its centred part (as Once-for-All's kernel sharing, Cai et al. 2020), so every
# network trains every layer's kernel. "separate": one kernel per size choice (ENAS's
# branches); on the digits it did not learn at all in 150 steps of uniform networks
# (loss 2.33, chance 2.30), where "nested" does (docs/weight_sharing.md).
KERNEL_SHARING = ("nested", "separate")
BN_EPSILON = 1e-3  # Keras BatchNormalization's, so the child's BN computes the same.


def _glorot(rng: np.random.Generator, shape, name: str) -> tf.Variable:
    """Glorot-uniform variable (Keras's Conv2D/Dense default), drawn from `rng`."""
    fan_in = float(np.prod(shape[:-1]))
    fan_out = float(np.prod(shape[:-2]) * shape[-1])
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return tf.Variable(rng.uniform(-limit, limit, shape).astype(np.float32), name=name)


def _keep(*tensors):
    """The false branch of a per-source `tf.cond`: the running sums unchanged."""
    return tensors


def _centre_pad(x, height, width):
    """Rule 3: zero-pads `x` to (height, width), centred, the odd pixel bottom/right."""
    dh, dw = height - tf.shape(x)[1], width - tf.shape(x)[2]
    pads = [[0, 0], [dh // 2, dh - dh // 2], [dw // 2, dw - dw // 2], [0, 0]]
    return tf.pad(x, pads)


class ConvSupernet(base.ImageClassifier):
    """The supernet of a `ConvSpaceSpec` (v1 or v2; see the module docstring).

    Args:
      spec: the space; every sampled network has `spec.depth` layers.
      input_shape: HWC shape of the images.
      num_classes: classifier width.
      weight_decay: coefficient of the sum of squares of the used kernels.
      instrument: count branch runs (`runs()`), for tests.
      seed: seed of the weights' initialisation.

    Attributes (weights, for tests and checkpoints):
      kernels: `kernels[i][k][s]`, layer i, filter-size choice k (= height
        index * len(filter_sizes) + width index), source s (0: the image,
        s >= 1: layer s - 1), shape `[fh, fw, c_s, max(num_filters)]`.
      gammas, betas: `gammas[i][k]`, shape `[max(num_filters)]`.
      classifier_kernels: `classifier_kernels[j]`, `[max(num_filters), classes]`.
      classifier_bias: `[classes]`.

    Raises:
      ValueError: for a space with dense blocks (v3) or pooling.
    """

    def __init__(self, spec: conv_space.ConvSpaceSpec, input_shape=(8, 8, 1), num_classes=10,
                 weight_decay=1e-4, instrument=False, seed=0, kernel_sharing="nested",
                 name="conv_supernet"):
        if spec.block_size != 1:
            raise ValueError(
                f"ConvSupernet covers cifar10_v1 and cifar10_v2 only: space {spec.name!r} has "
                f"block_size {spec.block_size} (v3's dense blocks are not supported)."
            )
        if spec.pool_at:
            raise ValueError(
                f"ConvSupernet does not support pooling: space {spec.name!r} "
                f"has pool_at {spec.pool_at}."
            )
        super().__init__(spec.space, instrument=instrument, name=name)
        self.spec = spec
        self.image_shape = tuple(int(d) for d in input_shape)
        if len(self.image_shape) != 3:
            raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}.")
        self.num_classes = int(num_classes)
        self.weight_decay = float(weight_decay)
        self.depth = spec.depth
        self.sizes = tuple(spec.filter_sizes)
        self.filter_pairs = tuple((h, w) for h in self.sizes for w in self.sizes)
        self.strides = tuple(spec.strides) if spec.strides is not None else None
        self.stride_pairs = (
            tuple((h, w) for h in self.strides for w in self.strides) if self.strides else ((1, 1),)
        )
        self.max_filters = max(spec.num_filters)
        if kernel_sharing not in KERNEL_SHARING:
            raise ValueError(f"kernel_sharing must be one of {KERNEL_SHARING}, "
                             f"got {kernel_sharing!r}.")
        self.kernel_sharing = kernel_sharing
        self._layout()

        rng = np.random.default_rng(seed)
        width, channels = self.max_filters, self.image_shape[2]
        self.kernels, self.gammas, self.betas = [], [], []
        for i in range(self.depth):
            per_size = []
            pairs = self.filter_pairs
            if kernel_sharing == "nested":
                pairs = ((max(self.sizes), max(self.sizes)),)
            for fh, fw in pairs:
                per_size.append([
                    _glorot(rng, (fh, fw, channels if s == 0 else width, width),
                            f"layer_{i}/filter_{fh}x{fw}/{self._source_name(s)}")
                    for s in range(i + 1)
                ])
            self.kernels.append(per_size)
            self.gammas.append([tf.Variable(tf.ones([width]), name=f"layer_{i}/gamma_{fh}x{fw}")
                                for fh, fw in self.filter_pairs])
            self.betas.append([tf.Variable(tf.zeros([width]), name=f"layer_{i}/beta_{fh}x{fw}")
                               for fh, fw in self.filter_pairs])
        self.classifier_kernels = [
            _glorot(rng, (width, self.num_classes), f"classifier/layer_{j}")
            for j in range(self.depth)
        ]
        self.classifier_bias = tf.Variable(tf.zeros([self.num_classes]), name="classifier/bias")

        names = []
        for i in range(self.depth):
            names += [f"layer_{i}/filter={fh}x{fw}" for fh, fw in self.filter_pairs]
            names += [f"layer_{i}/source={self._source_name(s)}" for s in range(i + 1)]
            if self.strides:
                names += [f"layer_{i}/stride={sh}x{sw}" for sh, sw in self.stride_pairs]
        names += [f"classifier/layer_{j}" for j in range(self.depth)]
        self.declare_branches(names)

    # -- the code -----------------------------------------------------------------------

    @staticmethod
    def _source_name(s: int) -> str:
        return "image" if s == 0 else f"layer_{s - 1}"

    def _layout(self) -> None:
        """Offsets in the code of each layer's fields (the space's decision order)."""
        kinds = ["filter_height", "filter_width"]
        if self.strides:
            kinds += ["stride_height", "stride_width"]
        kinds.append("num_filters")
        self._categorical: List[str] = []
        self._offsets: List[Dict[str, int]] = []
        offset = 0
        for i in range(self.depth):
            fields = {}
            for kind in kinds:
                fields[kind] = offset
                self._categorical.append(conv_space.layer_prefix(i) + kind)
                offset += 1
            fields["anchor"] = offset
            offset += i
            self._offsets.append(fields)
        self._code_length = offset

    @property
    def code_length(self) -> int:
        return self._code_length

    def encode(self, arch: space_lib.Architecture) -> np.ndarray:
        """The int32 code of `arch` (layout in the module docstring).

        Raises:
          ArchitectureError: if `arch` is outside the space or its depth is not
            the space's full depth (the only depth this supernet computes).
        """
        if arch.depth != self.depth:
            raise space_lib.ArchitectureError(
                f"ConvSupernet of space {self.spec.name!r} computes networks of depth "
                f"{self.depth} only (the space's full depth); the architecture has depth "
                f"{arch.depth!r}. Sample at full depth (no depth curriculum)."
            )
        arch = self.space.validate(arch)
        codes = dict(zip(self._categorical, base.choice_codes(self.space, arch, self._categorical)))
        out = []
        for i in range(self.depth):
            p = conv_space.layer_prefix(i)
            out += [codes[n] for n in self._categorical if n.startswith(p)]
            out += [int(b) for b in arch[conv_space.anchor_name(i)]]
        return np.asarray(out, np.int32)

    @property
    def input_signature(self):
        return (tf.TensorSpec((None,) + self.image_shape, tf.float32),
                tf.TensorSpec([None], tf.int32))

    def kernel_part(self, i: int, k: int, s: int):
        """(variable, rows, columns) of the kernel that filter-size choice k of layer i uses
        for source s (`filter_pairs[k]`; rows and columns are slices)."""
        fh, fw = self.filter_pairs[k]
        if self.kernel_sharing == "nested":
            top, left = (max(self.sizes) - fh) // 2, (max(self.sizes) - fw) // 2
            return self.kernels[i][0][s], slice(top, top + fh), slice(left, left + fw)
        return self.kernels[i][k][s], slice(None), slice(None)

    # -- branches -----------------------------------------------------------------------

    def _filter_branch(self, i: int, k: int):
        """Filter-size choice k of layer i: its per-source kernels, gamma and beta."""
        fh, fw = self.filter_pairs[k]
        self.mark(self.branch_id(f"layer_{i}/filter={fh}x{fw}"))
        parts = (self.kernel_part(i, k, s) for s in range(i + 1))
        kernels = tuple(v[rows, cols] for v, rows, cols in parts)  # Nested: the centred part.
        return kernels + (self.gammas[i][k].read_value(), self.betas[i][k].read_value())

    def _strided_conv(self, i: int, pair: int, x, kernel):
        sh, sw = self.stride_pairs[pair]
        if self.strides:
            self.mark(self.branch_id(f"layer_{i}/stride={sh}x{sw}"))
        return tf.nn.conv2d(x, kernel, (1, sh, sw, 1), "SAME")

    def _source_term(self, i, s, x, channels, target, kernel, n, stride_pair, acc, l2):
        """Adds source s's convolution to layer i's sum (runs only when s is selected)."""
        self.mark(self.branch_id(f"layer_{i}/source={self._source_name(s)}"))
        if target is not None:  # v2: rule 3, pad to the largest selected input.
            x = _centre_pad(x, *target)
        kernel = kernel[:, :, :channels, :n]
        y = base.switch(stride_pair, [
            functools.partial(self._strided_conv, i, p, x, kernel)
            for p in range(len(self.stride_pairs))
        ])
        return acc + y, l2 + tf.reduce_sum(tf.square(kernel))

    def _classifier_term(self, j, x, channels, area, logits, l2):
        """Adds dangling layer j's pooled features times its classifier block."""
        self.mark(self.branch_id(f"classifier/layer_{j}"))
        pooled = tf.reduce_sum(x, axis=[1, 2]) / area
        w = self.classifier_kernels[j][:channels]
        return logits + tf.matmul(pooled, w), l2 + tf.reduce_sum(tf.square(w))

    # -- the network --------------------------------------------------------------------

    def logits_and_l2(self, x, code):
        """The sampled network's logits and the sum of squares of the kernels it used."""
        x = tf.convert_to_tensor(x, tf.float32)
        code = tf.convert_to_tensor(code, tf.int32)
        batch = tf.shape(x)[0]
        height, width, channels = self.image_shape
        num_filters = tf.constant(self.spec.num_filters, tf.int32)
        strides = tf.constant(self.strides or (1,), tf.int32)
        l2 = tf.zeros([])
        outputs, widths, sizes, used = [], [], [], []  # Per layer; sizes: (h, w) tensors.
        for i in range(self.depth):
            f = self._offsets[i]
            bits = [tf.not_equal(code[f["anchor"] + j], 0) for j in range(i)]
            for j, bit in enumerate(bits):
                used[j] = tf.logical_or(used[j], bit)
            # Rule 1: the image is a source exactly when no earlier layer is.
            take_image = tf.logical_not(tf.reduce_any(tf.stack(bits))) if bits else None
            sources = [(x, channels, (height, width), take_image)]
            sources += [(outputs[j], widths[j], sizes[j], bits[j]) for j in range(i)]
            n = tf.gather(num_filters, code[f["num_filters"]])
            k = code[f["filter_height"]] * len(self.sizes) + code[f["filter_width"]]
            params = base.switch(k, [functools.partial(self._filter_branch, i, c)
                                     for c in range(len(self.filter_pairs))])
            kernels, gamma, beta = params[:-2], params[-2], params[-1]
            if self.strides:
                sh_i, sw_i = code[f["stride_height"]], code[f["stride_width"]]
                pair = sh_i * len(self.strides) + sw_i
                # Rule 3: the largest (height, width) among the selected inputs.
                target = tuple(tf.reduce_max(tf.stack([
                    sz[a] if sel is None else tf.where(sel, sz[a], 0) for *_, sz, sel in sources
                ])) for a in range(2))
                sh, sw = tf.gather(strides, sh_i), tf.gather(strides, sw_i)
                out_size = ((target[0] + sh - 1) // sh, (target[1] + sw - 1) // sw)
            else:
                pair, target, out_size = tf.constant(0), None, (height, width)
            acc = tf.zeros(tf.stack([batch, out_size[0], out_size[1], n]))
            for s, (src, c, _, selected) in enumerate(sources):
                term = functools.partial(self._source_term, i, s, src, c, target, kernels[s], n,
                                         pair, acc, l2)
                if selected is None:  # Layer 0 always takes the image.
                    acc, l2 = term()
                else:
                    acc, l2 = tf.cond(selected, term, functools.partial(_keep, acc, l2))
            mean, variance = tf.nn.moments(acc, axes=[0, 1, 2])
            y = tf.nn.batch_normalization(acc, mean, variance, beta[:n], gamma[:n], BN_EPSILON)
            outputs.append(tf.nn.relu(y))
            widths.append(n)
            sizes.append(out_size)
            used.append(tf.constant(False))

        # Rule 2: every layer no later layer selects goes to the classifier.
        dangling = [tf.logical_not(u) for u in used[:-1]] + [None]  # The last always dangles.
        if self.strides:
            area = [tf.reduce_max(tf.stack([
                sizes[-1][a], *[tf.where(d, sz[a], 0) for d, sz in zip(dangling[:-1], sizes)]
            ])) for a in range(2)]
            area = tf.cast(area[0] * area[1], tf.float32)
        else:
            area = float(height * width)
        logits = tf.zeros(tf.stack([batch, self.num_classes])) + self.classifier_bias
        for j in range(self.depth):
            term = functools.partial(self._classifier_term, j, outputs[j], widths[j], area,
                                     logits, l2)
            if dangling[j] is None:
                logits, l2 = term()
            else:
                logits, l2 = tf.cond(dangling[j], term, functools.partial(_keep, logits, l2))
        return logits, l2

    def __call__(self, x, code):
        """The sampled network's logits (BN with batch statistics)."""
        return self.logits_and_l2(x, code)[0]


def build(spec: conv_space.ConvSpaceSpec, input_shape=(8, 8, 1), num_classes=10,
          **kwargs) -> ConvSupernet:
    """A `ConvSupernet` of `spec` (the factory a family registers)."""
    return ConvSupernet(spec, input_shape, num_classes, **kwargs)
