"""`python -m nas_tf.train_lm` end to end on the embedded corpus, and the LSTM option."""

import json
import math
import os

import keras
import numpy as np
import pytest

from nas_tf import train_lm
from nas_tf.children import language_model as lm
from nas_tf.children import lm_trainer
from nas_tf.data import text_corpus
from nas_tf.spaces import cell as cell_space

# The paper's base-2 example cell (sec. 3.4), written out by hand as the search
# writes best_architecture.json.
PAPER_CELL_JSON = {
    "depth": None,
    "values": {
        "node_0_combine": "add", "node_0_activation": "tanh",
        "node_1_combine": "elem_mult", "node_1_activation": "relu",
        "node_2_combine": "elem_mult", "node_2_activation": "sigmoid",
        "inject_combine": "add", "inject_activation": "relu",
        "cell_index_inject": 0, "cell_index_out": 1,
    },
}  # fmt: skip

_TINY = [
    "--data_name=text",
    "--units=8",
    "--epochs=2",
    "--batch_size=4",
    "--bptt_steps=5",
    "--eval_batch_size=2",
    "--max_train_batches=3",
    "--max_eval_batches=2",
    "--verbose=0",
]


def _parse(argv):
    train_lm.FLAGS.unparse_flags()
    train_lm.FLAGS(["train_lm"] + argv)


@pytest.fixture(autouse=True)
def _restore_flags():
    yield
    train_lm.FLAGS.unparse_flags()


@pytest.fixture
def arch_file(tmp_path):
    path = tmp_path / "best_architecture.json"
    path.write_text(json.dumps(PAPER_CELL_JSON))
    return str(path)


def _outputs(out):
    assert sorted(os.listdir(out)) == ["config.json", "model.keras", "results.json"]
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


def test_a_cell_json_trains_into_a_full_model(tmp_path, arch_file):
    out = str(tmp_path / "cell")
    _parse(_TINY + [f"--architecture={arch_file}", "--cell_base=2", f"--output_dir={out}"])
    assert train_lm.main(["train_lm"]) == 0
    results = _outputs(out)
    assert results["cell"] == "nas" and results["level"] == "word" and results["units"] == 8
    assert len(results["val_perplexities"]) == 2 and len(results["train_losses"]) == 2
    assert results["best_val_perplexity"] == min(results["val_perplexities"])
    assert results["test_perplexity"] > 1 and results["step_ms"] > 0
    assert results["test_bits_per_token"] == pytest.approx(math.log2(results["test_perplexity"]))
    vocab = text_corpus.load("word").vocab_size
    assert results["num_parameters"] == lm.count_parameters(2, 8, vocab)
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["architecture"] == PAPER_CELL_JSON["values"]
    assert config["model"]["cell"] == "nas" and config["train"]["epochs"] == 2
    model = keras.models.load_model(os.path.join(out, "model.keras"))
    assert model.description == cell_space.paper_example()
    logits, _ = model(np.zeros((1, 3), "int32"))
    assert logits.shape == (1, 3, vocab)


def test_the_lstm_baseline_trains_on_characters(tmp_path, capsys):
    out = str(tmp_path / "lstm")
    _parse(_TINY + ["--cell=lstm", "--data_name=text_char", "--verbose=1", f"--output_dir={out}"])
    assert train_lm.main(["train_lm"]) == 0
    results = _outputs(out)
    assert results["cell"] == "lstm" and results["level"] == "char"
    vocab = text_corpus.load("char").vocab_size
    assert results["num_parameters"] == lm.count_parameters(
        4, 8, vocab, use_bias=True, cell="lstm"
    )
    printed = capsys.readouterr().out
    assert "epoch 2/2" in printed and "bits per char" in printed and "test" in printed


@pytest.mark.parametrize(
    "contents, argv, message",
    [
        (None, ["--cell_base=2"], "does not exist"),
        ("{not json", ["--cell_base=2"], "cannot be read"),
        ('{"values": [1, 2]}', ["--cell_base=2"], "cannot be read"),
        (json.dumps(PAPER_CELL_JSON), ["--cell_base=8"], "holds a base-2 cell, but the cell base is 8"),
        (
            json.dumps({"values": {**PAPER_CELL_JSON["values"], "node_1_activation": "gelu"}}),
            ["--cell_base=2"],
            "not a base-2 cell",
        ),
    ],
)
def test_bad_architecture_files_give_clear_errors(tmp_path, contents, argv, message):
    path = tmp_path / "arch.json"
    if contents is not None:
        path.write_text(contents)
    _parse(_TINY + [f"--architecture={path}", f"--output_dir={tmp_path / 'out'}"] + argv)
    with pytest.raises(train_lm.app.UsageError, match=message):
        train_lm.main(["train_lm"])
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "--cell=nas needs --architecture"),
        (["--cell=lstm", "--architecture=x.json"], "applies to --cell=nas only"),
        (["--cell=lstm", "--data_dir=/no/such/dir"], "not a readable directory"),
    ],
)
def test_bad_flags_give_clear_errors(tmp_path, argv, message):
    _parse(_TINY + [f"--output_dir={tmp_path}"] + argv)
    with pytest.raises(train_lm.app.UsageError, match=message):
        train_lm.main(["train_lm"])


def test_stray_arguments_and_out_of_bounds_flags_are_rejected(tmp_path):
    _parse(["--cell=lstm", f"--output_dir={tmp_path}"])
    with pytest.raises(train_lm.app.UsageError, match="Unexpected arguments: extra"):
        train_lm.main(["train_lm", "extra"])
    with pytest.raises(train_lm.flags.IllegalFlagValueError):
        _parse(["--units=0"])
    with pytest.raises(train_lm.flags.IllegalFlagValueError):
        _parse(["--cell=gru"])


def test_lstm_option_builds_the_keras_lstm_and_round_trips(tmp_path):
    config = lm.LanguageModelConfig(units=6, cell="lstm", tie_embeddings=True)
    model = lm.build_model(None, vocab_size=11, config=config, seed=3)
    assert all(isinstance(rnn, keras.layers.LSTM) for rnn in model.rnns)
    assert model.use_bias  # Keras's default for an LSTM; a searched cell has none.
    params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert params == lm.count_parameters(4, 6, 11, tie_embeddings=True, use_bias=True, cell="lstm")
    # Same width, same recurrent weights as a base-4 cell (2 * 4 * units^2 per layer).
    cell_model = lm.build_model(
        cell_space.lstm_like(), 11, lm.LanguageModelConfig(units=6, tie_embeddings=True)
    )
    cell_params = sum(int(np.prod(v.shape)) for v in cell_model.trainable_variables)
    assert params - cell_params == 2 * 4 * 6  # 4 * units gate biases in each of 2 layers.

    tokens = np.random.randint(0, 11, (2, 5))
    logits, states = model(tokens)
    path = str(tmp_path / "lstm.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.cell == "lstm" and loaded.description is None
    again, again_states = loaded(tokens)
    np.testing.assert_allclose(np.asarray(again), np.asarray(logits), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(again_states[1][1]), np.asarray(states[1][1]), atol=1e-6)


def test_cell_and_description_must_agree():
    with pytest.raises(ValueError, match="cell must be one of"):
        lm.LanguageModelConfig(cell="gru")
    with pytest.raises(ValueError, match="needs a cell description"):
        lm.build_model(None, 11, lm.LanguageModelConfig(units=4))
    with pytest.raises(ValueError, match="takes no cell description"):
        lm.build_model(cell_space.lstm_like(), 11, lm.LanguageModelConfig(units=4, cell="lstm"))
    with pytest.raises(ValueError, match="takes no cell architecture"):
        train_lm.RunConfig("out", "text", description=cell_space.lstm_like(),
                           model=lm.LanguageModelConfig(cell="lstm"))  # fmt: skip


def test_load_architecture_reads_the_search_output_and_infers_the_base(tmp_path):
    arch = cell_space.lstm_like().to_architecture()
    path = tmp_path / "best.json"
    path.write_text(arch.to_json())
    assert train_lm.load_architecture(str(path)) == cell_space.lstm_like()
    text = path.read_text()
    assert cell_space.ptb_cell(4).architecture_from_json(text) == arch
    assert train_lm.load_architecture(str(path), 4) == cell_space.lstm_like()


def test_restore_best_keeps_the_best_epochs_weights():
    data = text_corpus.load("word")
    train = lm_trainer.TrainConfig(
        epochs=3, batch_size=4, bptt_steps=5, eval_batch_size=2, max_train_batches=2,
        max_eval_batches=2, learning_rate=20.0,
    )  # fmt: skip
    # A huge learning rate makes later epochs worse than the first.
    result = lm_trainer.train_language_model(
        cell_space.paper_example(), data, lm.LanguageModelConfig(units=4), train,
        restore_best=True,
    )  # fmt: skip
    best = result.best_epoch
    assert best < train.epochs - 1  # Else nothing was restored.
    assert result.val_perplexities[best] == result.best_val_perplexity
    loss = lm_trainer.evaluate(result.model, data.valid, 2, 5, 2)
    assert math.exp(loss) == pytest.approx(result.best_val_perplexity, rel=1e-4)


def _tiny_schedule(**kwargs):
    return lm_trainer.TrainConfig(
        epochs=1, batch_size=4, bptt_steps=5, eval_batch_size=2, max_train_batches=2,
        max_eval_batches=1, **kwargs,
    )  # fmt: skip


def test_adam_trains_and_differs_from_sgd():
    data = text_corpus.load("char")
    model = lm.LanguageModelConfig(units=4, cell="lstm")
    runs = {
        name: lm_trainer.train_language_model(None, data, model, _tiny_schedule(**kwargs))
        for name, kwargs in [("sgd", {}), ("adam", {"optimizer": "adam", "learning_rate": 2e-3})]
    }
    adam = runs["adam"]
    assert all(math.isfinite(x) for x in adam.train_losses + adam.val_perplexities)
    assert adam.train_losses != runs["sgd"].train_losses  # Same seed and batches: the optimizer differs.
    optimizer = _tiny_schedule(optimizer="adam", clip_norm=2.0).make_optimizer()
    assert isinstance(optimizer, keras.optimizers.Adam) and optimizer.global_clipnorm == 2.0
    assert isinstance(_tiny_schedule().make_optimizer(), keras.optimizers.SGD)


def test_an_unknown_optimizer_is_refused():
    with pytest.raises(ValueError, match="Unknown optimizer 'rmsprop'"):
        lm_trainer.TrainConfig(optimizer="rmsprop")
    with pytest.raises(train_lm.flags.IllegalFlagValueError):
        _parse(["--optimizer=rmsprop"])


def test_the_optimizer_flag_reaches_the_config(tmp_path):
    _parse(_TINY + ["--cell=lstm", "--optimizer=adam", "--learning_rate=2e-3",
                    f"--output_dir={tmp_path}"])  # fmt: skip
    config = train_lm.config_from_flags()
    assert config.train.optimizer == "adam" and config.train.learning_rate == 2e-3
    assert config.to_dict()["train"]["optimizer"] == "adam"
    _parse(_TINY + ["--cell=lstm", f"--output_dir={tmp_path}"])
    assert train_lm.config_from_flags().train.optimizer == "sgd"  # The default stays SGD.


@pytest.fixture
def extended_file(tmp_path):
    """The LSTM-like base-4 cell with max and sin: a cell of the extended function set."""
    values = dict(cell_space.lstm_like().to_architecture().values)
    values.update(node_0_combine="max", node_1_activation="sin")
    path = tmp_path / "extended.json"
    path.write_text(json.dumps({"depth": None, "values": values}))
    return str(path)


def test_cell_functions_default_to_the_smallest_set_holding_the_cell(extended_file, arch_file):
    cell = train_lm.load_architecture(extended_file)  # No flag: an extended search's file works.
    assert cell.functions == "extended" and cell.nodes[0].combine == "max"
    assert train_lm.load_architecture(extended_file, 4, "extended") == cell
    # A cell of the paper's functions belongs to the extended set too.
    assert train_lm.load_architecture(arch_file, 2, "extended") == cell_space.paper_example()
    with pytest.raises(ValueError, match="Cell functions must be one of"):
        train_lm.load_architecture(arch_file, 2, "more")


def test_a_max_or_sin_cell_under_the_paper_functions_names_the_function_set(extended_file):
    with pytest.raises(ValueError) as caught:
        train_lm.load_architecture(extended_file, 4, "paper")
    message = str(caught.value)
    assert "uses max, sin, which the 'paper' function set (--cell_functions=paper)" in message
    assert "--cell_functions=extended" in message and "base" not in message


def test_the_cell_functions_flag(tmp_path, extended_file):
    assert train_lm.FLAGS["cell_functions"].parser.enum_values == list(cell_space.FUNCTIONS)
    base = _TINY + [f"--architecture={extended_file}", "--cell_base=4", f"--output_dir={tmp_path}"]
    _parse(base)
    assert train_lm.FLAGS.cell_functions is None
    assert train_lm.config_from_flags().description.functions == "extended"
    _parse(base + ["--cell_functions=extended"])
    assert train_lm.config_from_flags().description.nodes[1].activation == "sin"
    _parse(base + ["--cell_functions=paper"])
    with pytest.raises(train_lm.app.UsageError, match="'paper' function set"):
        train_lm.config_from_flags()
    with pytest.raises(train_lm.flags.IllegalFlagValueError):
        _parse(base + ["--cell_functions=more"])
