"""Penn Treebank data (TFDS builder on small local files), the embedded corpus,
and the language-model child: training, reward, divergence, `.keras` round trip."""

import math

import keras
import numpy as np
import pytest

from nas_tf import rewards as reinforce
from nas_tf.children import language_model as lm
from nas_tf.children import lm_trainer
from nas_tf.children.convnet import ChildTrainingError
from nas_tf.data import ptb, text_corpus
from nas_tf.data.cifar10 import DataNotPreparedError
from nas_tf.spaces import cell as cell_space

TRAIN = [" the cat sat on the mat ", " a dog <unk> N years ago ", " the dog sat "]
VALID = [" the cat sat on a dog "]
TEST = [" a zebra sat "]


@pytest.fixture(scope="module")
def ptb_files(tmp_path_factory):
    """PTB-style files in a local directory (the manual_dir); no network."""
    root = tmp_path_factory.mktemp("ptb_source")
    for split, lines in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        (root / f"ptb.{split}.txt").write_text("".join(line + "\n" for line in lines))
    return root


def test_vocabulary_and_encoding():
    data = ptb.from_lines(TRAIN, VALID, TEST)
    vocab = data.vocab
    # Most frequent first, ties by text; <eos> ends each of the 3 lines.
    assert vocab.tokens[:3] == ("<eos>", "the", "dog")
    assert len(vocab) == len(set(" ".join(TRAIN).split())) + 1
    assert vocab.decode(data.test) == ["a", "<unk>", "sat", "<eos>"]
    assert len(data.train) == sum(len(line.split()) + 1 for line in TRAIN)
    capped = ptb.Vocabulary.build([line.split() for line in TRAIN], max_size=4)
    assert len(capped) == 4 and "<unk>" in capped.tokens


def test_batchify_keeps_rows_contiguous_and_windows_shift_by_one():
    ids = np.arange(23)
    rows = ptb.batchify(ids, 4)
    np.testing.assert_array_equal(rows, np.arange(20).reshape(4, 5))
    windows = list(ptb.bptt_windows(rows, 3))
    assert [x.shape[1] for x, _ in windows] == [3, 1]
    for x, y in windows:
        np.testing.assert_array_equal(y, x + 1)
    assert len(list(ptb.bptt_windows(rows, 3, drop_remainder=True))) == 1
    assert ptb.num_windows(rows, 3) == 2 and ptb.num_windows(rows, 3, True) == 1
    with pytest.raises(ValueError):
        ptb.batchify(np.arange(5), 4)


def test_tfds_builder_prepares_word_and_char_level_from_local_files(ptb_files, tmp_path):
    data_dir = str(tmp_path / "tfds")
    with pytest.raises(DataNotPreparedError, match="manual_dir"):
        ptb.load("word", data_dir)
    ptb.prepare("word", data_dir, manual_dir=str(ptb_files))
    words = ptb.load("word", data_dir)
    assert words.level == "word" and words.name == "ptb_word"
    # Lines come back in file order.
    assert words.vocab.decode(words.train) == " <eos> ".join(TRAIN).split() + ["<eos>"]
    assert words.vocab.decode(words.valid)[:3] == ["the", "cat", "sat"]

    # No ptb.char.*.txt here: the char config derives them from the word files.
    ptb.prepare("char", data_dir, manual_dir=str(ptb_files))
    chars = ptb.load("char", data_dir)
    seen = set("".join(TRAIN).replace(" ", "_"))
    expected = [ch if ch in seen else "<unk>" for ch in "a_zebra_sat"] + ["<eos>"]
    assert chars.vocab.decode(chars.test) == expected  # z and b are not in train.
    assert chars.level == "char"


def test_char_files_are_preferred_and_missing_files_are_named(ptb_files, tmp_path):
    source = tmp_path / "src"
    (source / "simple-examples" / "data").mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (source / "simple-examples" / "data" / f"ptb.char.{split}.txt").write_text("a b\n")
    files = ptb.find_source_files(str(source), "char")
    assert files["test"].endswith("simple-examples/data/ptb.char.test.txt")
    with pytest.raises(FileNotFoundError, match="ptb.train.txt"):
        ptb.find_source_files(str(source), "word")


def test_embedded_corpus_is_real_text_split_by_a_fixed_rule():
    lines = text_corpus.lines()
    train, valid, test = text_corpus.split_lines()
    assert sorted(train + valid + test) == sorted(lines)
    # Blocks of 5 lines, interleaved: block 8 of every 10 validates, block 9 tests.
    assert valid[:5] == lines[40:45] and test[:5] == lines[45:50] and train[40:45] == lines[50:55]
    old = text_corpus.split_lines("contiguous")
    assert old[0] == lines[: int(0.8 * len(lines))] and old[2] == lines[int(0.9 * len(lines)) :]
    with pytest.raises(ValueError, match="split must be one of"):
        text_corpus.split_lines("random")
    data = text_corpus.load("word")
    counts = np.bincount(data.train, minlength=data.vocab_size)
    unk = data.vocab.tokens.index("<unk>")
    assert counts[unk] > 0 and np.delete(counts, unk).min() >= text_corpus.MIN_COUNT
    assert text_corpus.load("word", split="contiguous").name.endswith("_contiguous")
    assert 50_000 < len(data.train) and 5_000 < len(data.valid) and 5_000 < len(data.test)
    assert {"the", "statement", "<eos>", "<unk>", "N"} <= set(data.vocab.tokens)
    assert text_corpus.load("word") is not data  # Fresh arrays, same content.
    np.testing.assert_array_equal(text_corpus.load("word").valid, data.valid)
    chars = text_corpus.load("char")
    assert chars.vocab_size < 120 and "_" in chars.vocab.tokens


TINY_MODEL = lm.LanguageModelConfig(units=8, input_dropout=0.2, output_dropout=0.2)
TINY_TRAIN = lm_trainer.TrainConfig(
    epochs=2, batch_size=4, bptt_steps=5, eval_batch_size=2, max_train_batches=6,
    max_eval_batches=4, learning_rate=1.0, jit_compile=True,
)  # fmt: skip


def test_child_trains_and_reward_is_c_over_perplexity_squared():
    data = text_corpus.load("word")
    seen = []
    result = lm_trainer.train_language_model(
        cell_space.lstm_like(), data, TINY_MODEL, TINY_TRAIN,
        on_epoch_end=lambda epoch, ppl: seen.append((epoch, ppl)),
    )  # fmt: skip
    assert [e for e, _ in seen] == [0, 1]
    assert result.val_perplexities == [p for _, p in seen]
    assert result.best_val_perplexity == min(result.val_perplexities)
    # Training from uniform logits: the loss starts near log(V) and falls.
    assert result.train_losses[0] < math.log(data.vocab_size) + 0.5
    assert result.train_losses[1] < result.train_losses[0]
    assert result.best_val_perplexity < data.vocab_size
    assert not hasattr(result, "reward")  # Children report metrics; rewards.py rewards.
    assert result.bits_per_token == pytest.approx(math.log2(result.best_val_perplexity))
    assert result.num_params == lm.count_parameters(4, 8, data.vocab_size)
    assert result.num_params == result.model.count_params()


def test_reward_values():
    assert reinforce.ptb_reward(80.0) == pytest.approx(80.0 / 6400)
    assert reinforce.ptb_reward(62.4) == pytest.approx(80.0 / 62.4**2)
    with pytest.raises(ValueError):
        reinforce.ptb_reward(float("nan"))


def test_units_for_budget_matches_the_medium_baseline_size():
    units = lm.units_for_budget(8, 10000)
    assert lm.count_parameters(8, units, 10000) <= lm.MEDIUM_PARAMETERS
    assert lm.count_parameters(8, units + 1, 10000) > lm.MEDIUM_PARAMETERS
    tied = lm.units_for_budget(8, 10000, tie_embeddings=True)
    assert tied > units


def test_divergence_raises_a_clear_error():
    data = ptb.from_lines(TRAIN * 20, VALID * 5, TEST)
    blow_up = lm_trainer.TrainConfig(
        epochs=1, batch_size=2, bptt_steps=4, eval_batch_size=1, learning_rate=1e30,
        clip_norm=None,
    )  # fmt: skip
    relu_cell = cell_space.CellDescription(
        nodes=(("elem_mult", "identity"),) * 3, inject=("add", "relu"), inject_node=2,
        memory_node=2,
    )  # fmt: skip
    with pytest.raises(ChildTrainingError, match="nan failure") as error:
        lm_trainer.train_language_model(
            relu_cell, data, lm.LanguageModelConfig(units=4, init_scale=1.0), blow_up
        )
    assert isinstance(error.value, lm_trainer.ChildDivergedError) and error.value.reason == "nan"


@pytest.mark.parametrize("tie", [False, True])
def test_keras_round_trip_of_a_tiny_model(tmp_path, tie):
    data = ptb.from_lines(TRAIN, VALID, TEST)
    config = lm.LanguageModelConfig(
        units=6, tie_embeddings=tie, recurrent_dropout=0.1, variational=True
    )
    model = lm.build_model(cell_space.paper_example(), data.vocab_size, config, seed=2)
    tokens = ptb.batchify(data.train, 2)[:, :5]
    logits, states = model(tokens)
    assert logits.shape == (2, 5, data.vocab_size)
    path = str(tmp_path / "child.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, lm.CellLanguageModel)
    assert loaded.description == model.description
    logits2, states2 = loaded(tokens, states)
    logits1, _ = model(tokens, states)
    np.testing.assert_allclose(logits2.numpy(), logits1.numpy(), atol=1e-6)
    assert len(loaded.trainable_variables) == len(model.trainable_variables)
