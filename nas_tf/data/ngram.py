"""Unigram and bigram perplexities of a token stream: the levels a language model must beat.

A recurrent model that has learnt only how often each token occurs sits at
the unigram perplexity of the training distribution; one that uses the
previous token alone sits near the bigram's. Reporting both for every split
says where the "plateau" is and whether validation and test follow the
training distribution (their unigram levels should be close to each other).

Both models are estimated on the training ids. The unigram adds `alpha` to
every count of the vocabulary (so a token unseen in training has a finite
cost); the bigram interpolates the training bigram with that unigram,
p(w | v) = lam * c(v, w) / c(v) + (1 - lam) * p(w), with `lam` chosen on the
validation ids from a fixed grid (Jelinek and Mercer 1980).
"""

import math
from typing import Dict, Sequence

import numpy as np

LAMBDAS = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05 .. 0.95


def unigram_probs(train: np.ndarray, vocab_size: int, alpha: float = 1.0) -> np.ndarray:
    """Add-`alpha` unigram probabilities [vocab_size] of the training ids."""
    counts = np.bincount(np.asarray(train, np.int64), minlength=vocab_size).astype(np.float64)
    if len(counts) > vocab_size:
        raise ValueError(f"Token id {len(counts) - 1} is outside a vocabulary of {vocab_size}.")
    return (counts + alpha) / (counts.sum() + alpha * vocab_size)


def unigram_perplexity(train: np.ndarray, ids: np.ndarray, vocab_size: int, alpha: float = 1.0) -> float:
    """exp of the mean cost of `ids` under the training unigram."""
    p = unigram_probs(train, vocab_size, alpha)
    return float(math.exp(-np.mean(np.log(p[np.asarray(ids, np.int64)]))))


def _bigram_costs(train, ids, vocab_size, alpha):
    """(ML bigram probability, target's unigram probability, history seen) per pair of `ids`."""
    train = np.asarray(train, np.int64)
    ids = np.asarray(ids, np.int64)
    uni = unigram_probs(train, vocab_size, alpha)
    pair_keys = train[:-1] * vocab_size + train[1:]
    keys, counts = np.unique(pair_keys, return_counts=True)
    history = np.bincount(train[:-1], minlength=vocab_size).astype(np.float64)
    query = ids[:-1] * vocab_size + ids[1:]
    at = np.clip(np.searchsorted(keys, query), 0, len(keys) - 1)
    pair_count = np.where(keys[at] == query, counts[at], 0).astype(np.float64)
    seen = history[ids[:-1]]
    ml = np.divide(pair_count, seen, out=np.zeros_like(pair_count), where=seen > 0)
    return ml, uni[ids[1:]], seen > 0


def _mix(ml, uni, known, lam):
    """Interpolated probabilities; a history unseen in training falls back to the unigram."""
    return np.where(known, lam * ml + (1 - lam) * uni, uni)


def bigram_perplexity(
    train: np.ndarray, ids: np.ndarray, vocab_size: int, lam: float, alpha: float = 1.0
) -> float:
    """exp of the mean cost of ids[1:] given their predecessor, interpolated with the unigram."""
    if not 0 <= lam < 1:
        raise ValueError(f"lam must be in [0, 1), got {lam}.")
    return float(math.exp(-np.mean(np.log(_mix(*_bigram_costs(train, ids, vocab_size, alpha), lam)))))


def best_lambda(train: np.ndarray, valid: np.ndarray, vocab_size: int, alpha: float = 1.0) -> float:
    """The interpolation weight of `LAMBDAS` with the lowest validation bigram perplexity."""
    parts = _bigram_costs(train, valid, vocab_size, alpha)
    costs = [-np.mean(np.log(_mix(*parts, lam))) for lam in LAMBDAS]
    return LAMBDAS[int(np.argmin(costs))]


def split_levels(data, alpha: float = 1.0) -> Dict[str, Dict[str, float]]:
    """Unigram and bigram perplexity of each split of an `LMData`.

    Returns:
      {"train" | "valid" | "test": {"unigram": ..., "bigram": ..., "tokens": ...},
       "lambda": the bigram's interpolation weight (chosen on "valid")}.
    """
    lam = best_lambda(data.train, data.valid, data.vocab_size, alpha)
    out: Dict[str, Dict[str, float]] = {}
    for name in ("train", "valid", "test"):
        ids = getattr(data, name)
        out[name] = {
            "tokens": int(len(ids)),
            "unigram": unigram_perplexity(data.train, ids, data.vocab_size, alpha),
            "bigram": bigram_perplexity(data.train, ids, data.vocab_size, lam, alpha),
        }
    out["lambda"] = lam
    return out


def shuffled(ids: Sequence[int], seed: int = 0) -> np.ndarray:
    """The ids in a random order: a model's perplexity on them should rise to about the unigram's.

    A trained model that stays well below the unigram level on shuffled
    tokens sees something it should not (future tokens leaking through the
    recurrent state or the batching).
    """
    ids = np.array(ids, np.int32, copy=True)
    np.random.default_rng(seed).shuffle(ids)
    return ids
