"""The paper's published architectures in experiments/paper/ and the final-LM flag file.

The Penn Treebank cell is checked against a numpy implementation written from
its published equations (as TensorFlow's NASCell states them), not from
`nas_tf.children.cell`: the same weights must give the same h_t and c_t.
"""

import os

import keras
import numpy as np
import pytest

from nas_tf import train_lm
from nas_tf.children import cell as cell_layer
from nas_tf.children import language_model as lm
from nas_tf.spaces import cell as cell_space

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER = os.path.join(ROOT, "experiments", "paper")
PTB_CELL = os.path.join(PAPER, "ptb_cell_base8.json")
PTB_VOCAB = 10_000


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _relu(v):
    return np.maximum(v, 0.0)


def published_nas_cell(x, h, c, kernel, recurrent_kernel):
    """One step of the Penn Treebank cell, from its equations (float64 numpy).

    kernel: [input, 8 * units]; recurrent_kernel: [units, 8 * units]; block k
    of each is W_k, U_k.
    """
    wx = np.split(x @ kernel, 8, axis=-1)
    uh = np.split(h @ recurrent_kernel, 8, axis=-1)
    tanh = np.tanh
    l1 = [
        _sigmoid(wx[0] + uh[0]),
        _relu(wx[1] + uh[1]),
        _sigmoid(wx[2] + uh[2]),
        _relu(wx[3] * uh[3]),
        tanh(wx[4] + uh[4]),
        _sigmoid(wx[5] + uh[5]),
        tanh(wx[6] + uh[6]),
        _sigmoid(wx[7] + uh[7]),
    ]
    l2_0 = tanh(l1[0] * l1[1])
    l2_1 = tanh(l1[2] + l1[3])
    l2_2 = tanh(l1[4] * l1[5])
    l2_3 = _sigmoid(l1[6] + l1[7])
    l2_0 = tanh(l2_0 + c)  # The cell inject.
    new_c = l2_0 * l2_1
    l3_1 = tanh(l2_2 + l2_3)
    new_h = tanh(new_c * l3_1)
    return new_h, new_c


def test_the_ptb_cell_file_loads_in_its_space():
    description = train_lm.load_architecture(PTB_CELL)  # Base inferred: 8.
    assert description.base == 8
    assert description == train_lm.load_architecture(PTB_CELL, 8)
    assert description.inject == ("add", "tanh") and description.inject_node == 8
    assert description.memory_node == 12
    with open(PTB_CELL) as f:
        arch = cell_space.ptb_cell(8).architecture_from_json(f.read())
    assert arch == description.to_architecture()


def test_the_ptb_cell_computes_its_published_equations():
    description = train_lm.load_architecture(PTB_CELL)
    units, inputs, batch = 5, 3, 4
    layer = cell_layer.NASCell(units, description)
    layer.build((batch, inputs))
    rng = np.random.default_rng(0)
    for weight in layer.weights:
        weight.assign(rng.uniform(-0.8, 0.8, weight.shape).astype("float32"))
    kernel = np.asarray(layer.kernel, np.float64)
    recurrent = np.asarray(layer.recurrent_kernel, np.float64)
    h = rng.normal(size=(batch, units)) * 0.5
    c = rng.normal(size=(batch, units)) * 0.5
    h_ours, c_ours = h.astype("float32"), c.astype("float32")
    for _ in range(4):  # A few steps, each from the previous state.
        x = rng.normal(size=(batch, inputs))
        h, c = published_nas_cell(x, h, c, kernel, recurrent)
        out, (h_ours, c_ours) = layer(x.astype("float32"), [h_ours, c_ours])
        np.testing.assert_allclose(np.asarray(out), h, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(h_ours), h, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(c_ours), c, rtol=1e-5, atol=1e-5)
    # 2 x 8 x units x width weights, no biases (sec. 3.4).
    assert layer.count_params() == 8 * units * (inputs + units)


@pytest.mark.parametrize(
    "budget, tied, width",
    [(32_000_000, False, 735), (25_000_000, True, 741), (54_000_000, True, 1152)],
)
def test_the_papers_ptb_sizes_imply_these_widths(budget, tied, width):
    # Table 2: 32M (untied), 25M and 54M (shared embeddings); 2 layers, 10,000 words.
    assert lm.units_for_budget(8, PTB_VOCAB, budget, 2, tied) == width
    size = lm.count_parameters(8, width, PTB_VOCAB, 2, tied)
    assert size == PTB_VOCAB * width + 2 * 16 * width**2 + (0 if tied else width * PTB_VOCAB) + PTB_VOCAB
    assert abs(size - budget) / budget < 0.001


def test_the_ptb_cell_builds_a_language_model_that_round_trips(tmp_path):
    description = train_lm.load_architecture(PTB_CELL)
    config = lm.LanguageModelConfig(units=6)
    model = lm.build_model(description, vocab_size=11, config=config, seed=1)
    tokens = np.random.default_rng(1).integers(0, 11, (2, 4))
    logits, _ = model(tokens)
    assert model.count_params() == lm.count_parameters(8, 6, 11)
    path = str(tmp_path / "m.keras")
    model.save(path)
    again, _ = keras.models.load_model(path)(tokens)
    np.testing.assert_allclose(np.asarray(again), np.asarray(logits), rtol=1e-5, atol=1e-6)


def test_ptb_final_flags_give_the_papers_32m_model():
    train_lm.FLAGS.unparse_flags()
    try:
        cwd = os.getcwd()
        os.chdir(ROOT)  # The flag file names experiments/paper/... relative to the root.
        try:
            train_lm.FLAGS(["train_lm", "--flagfile=experiments/ptb_final.flags"])
            config = train_lm.config_from_flags()
        finally:
            os.chdir(cwd)
    finally:
        train_lm.FLAGS.unparse_flags()
    assert config.description == train_lm.load_architecture(PTB_CELL)
    assert config.data_name == "ptb" and config.model.num_layers == 2
    assert config.model.parameter_budget == 32_000_000 and not config.model.tie_embeddings
    assert config.model.use_bias is False
    units = lm.units_for_budget(8, PTB_VOCAB, config.model.parameter_budget)
    assert units == 735
