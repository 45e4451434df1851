"""Unigram and bigram levels (`nas_tf.data.ngram`): exact values on hand-counted streams."""

import math

import numpy as np
import pytest

from nas_tf.data import ngram, ptb, text_corpus


def test_unigram_is_add_alpha_counts():
    train = np.array([0, 0, 1, 2])  # counts 2, 1, 1, 0 over a vocabulary of 4
    p = ngram.unigram_probs(train, 4, alpha=1.0)
    np.testing.assert_allclose(p, [3 / 8, 2 / 8, 2 / 8, 1 / 8])
    ids = np.array([0, 3])
    assert ngram.unigram_perplexity(train, ids, 4) == pytest.approx(math.sqrt(8 / 3 * 8))
    with pytest.raises(ValueError, match="outside a vocabulary"):
        ngram.unigram_probs(np.array([5]), 4)


def test_bigram_interpolates_the_training_bigram_with_the_unigram():
    train = np.array([0, 1, 0, 1, 0, 2])  # after 0: 1 twice, 2 once; after 1: 0 twice
    uni = ngram.unigram_probs(train, 3)
    ids = np.array([0, 1, 0])  # pairs (0, 1) and (1, 0)
    lam = 0.5
    p1 = lam * 2 / 3 + (1 - lam) * uni[1]
    p2 = lam * 2 / 2 + (1 - lam) * uni[0]
    expected = math.exp(-(math.log(p1) + math.log(p2)) / 2)
    assert ngram.bigram_perplexity(train, ids, 3, lam) == pytest.approx(expected)
    # An unseen history falls back to the unigram alone.
    assert ngram.bigram_perplexity(train, np.array([2, 1]), 3, lam) == pytest.approx(1 / uni[1])
    assert ngram.bigram_perplexity(train, ids, 3, 0.0) == pytest.approx(1 / math.sqrt(uni[1] * uni[0]))
    with pytest.raises(ValueError, match="lam must be"):
        ngram.bigram_perplexity(train, ids, 3, 1.0)


def test_split_levels_of_a_predictable_stream():
    # A strict cycle: the bigram knows every next token, the unigram does not.
    cycle = np.tile(np.arange(4), 50)
    data = ptb.LMData(cycle, cycle[:40], cycle[:40], ptb.Vocabulary(("a", "b", "<eos>", "<unk>")))
    levels = ngram.split_levels(data)
    assert levels["valid"]["unigram"] == pytest.approx(4.0, rel=1e-6)
    assert levels["valid"]["bigram"] < 1.1 and levels["lambda"] == max(ngram.LAMBDAS)
    assert levels["test"]["tokens"] == 40


def test_embedded_splits_follow_the_training_distribution():
    # The interleaved rule's point: validation and test sit at about the same unigram level.
    for level in ("word", "char"):
        levels = ngram.split_levels(text_corpus.load(level))
        assert levels["valid"]["unigram"] == pytest.approx(levels["test"]["unigram"], rel=0.05)
        assert levels["valid"]["bigram"] < levels["valid"]["unigram"]


def test_shuffled_keeps_the_tokens():
    ids = np.arange(100)
    out = ngram.shuffled(ids, seed=1)
    assert sorted(out) == list(ids) and not np.array_equal(out, ids)
    np.testing.assert_array_equal(out, ngram.shuffled(ids, seed=1))
