"""An embedded real-text corpus for offline language-model runs and tests.

Penn Treebank must be fetched (see `nas_tf.data.ptb`); this corpus ships with
the package: the Python Language Reference help topics (CPython 3.11.7's
`pydoc_data.topics`, PSF License; 465 kB of text, 134 kB gzipped under
`nas_tf/data/embedded/`). A fixed snapshot is embedded rather than read from
the running Python so that perplexities compare across installs.

It is prepared the way PTB is: lower-cased, numbers replaced by `N`, one
example per non-empty line, `<eos>` after each line, and a vocabulary from the
training split capped at PTB's 10,000 words.

The split (`SPLITS`) is a fixed rule on the line order. "interleaved", the
default: the lines are cut into blocks of 5 and block k validates when
k % 10 == 8, tests when k % 10 == 9 and trains otherwise, so every split
samples every part of the reference and validation and test follow the
training distribution; training words seen once become `<unk>` (as PTB's
rare words are), so that a model learns a cost for unseen words.
"contiguous", the rule of earlier results: the first 80 % of lines train,
the next 10 % validate, the last 10 % test, as PTB's sections are, with every
training word kept. Here that put other topics in each block (training
unigram perplexity 204 on validation, 116 on test), which measured topic
shift more than modelling (docs/lm_recipe.md has the figures of both).
"""

import functools
import gzip
import os
import re
from typing import List, Tuple

from nas_tf.data import ptb

PATH = os.path.join(os.path.dirname(__file__), "embedded", "python_reference.txt.gz")
TRAIN_FRACTION = 0.8
VALID_FRACTION = 0.1
SPLITS = ("interleaved", "contiguous")
BLOCK_LINES = 5  # Interleaved: blocks of 5 lines; of every 10 blocks one validates, one tests.
PERIOD = 10
MIN_COUNT = 2  # Interleaved: training tokens seen once become <unk>.
MAX_VOCAB = 10000  # PTB's vocabulary size (Mikolov et al. 2010).

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?|[0-9]+(?:\.[0-9]+)?|[^\sa-z0-9]")
_RULE = re.compile(r"^[\s*=\-~^]+$")  # reST heading underlines: not text.


@functools.lru_cache(maxsize=1)
def raw_text() -> str:
    """The embedded text."""
    with gzip.open(PATH, "rt", encoding="utf-8") as f:
        return f.read()


def lines() -> List[str]:
    """The non-empty text lines, in order, heading underlines dropped."""
    stripped = (line.strip() for line in raw_text().splitlines())
    return [line for line in stripped if line and not _RULE.match(line)]


def word_tokens(line: str) -> List[str]:
    """Lower-cased words, numbers as `N` (as in PTB), punctuation marks one by one."""
    return ["N" if t[0].isdigit() else t for t in _WORD.findall(line.lower())]


def char_tokens(line: str) -> List[str]:
    """Characters of the lower-cased line, `_` for a space (PTB's char layout)."""
    return ["_" if ch == " " else ch for ch in " ".join(line.lower().split())]


def split_lines(split: str = "interleaved") -> Tuple[List[str], List[str], List[str]]:
    """(train, valid, test) lines by one of the fixed rules of `SPLITS`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    if split == "contiguous":
        all_lines = lines()
        a = int(len(all_lines) * TRAIN_FRACTION)
        b = int(len(all_lines) * (TRAIN_FRACTION + VALID_FRACTION))
        return all_lines[:a], all_lines[a:b], all_lines[b:]
    all_lines = lines()
    parts = ([], [], [])
    for k, start in enumerate(range(0, len(all_lines), BLOCK_LINES)):
        part = {PERIOD - 2: 1, PERIOD - 1: 2}.get(k % PERIOD, 0)
        parts[part].extend(all_lines[start : start + BLOCK_LINES])
    return parts


def load(level: str = "word", max_vocab: int = MAX_VOCAB, split: str = "interleaved") -> ptb.LMData:
    """The corpus as `LMData` (the same form as `nas_tf.data.ptb.load`).

    Args:
      level: "word" or "char".
      max_vocab: vocabulary cap; rarer training tokens become `<unk>`.
      split: a rule of `SPLITS`; the data's name ends in "_contiguous" for
        the old rule, so results of the two never mix.
    """
    if level not in ptb.LEVELS:
        raise ValueError(f"level must be one of {ptb.LEVELS}, got {level!r}.")
    tokenize = word_tokens if level == "word" else char_tokens
    splits = [[" ".join(tokenize(line)) for line in part] for part in split_lines(split)]
    contiguous = split == "contiguous"
    name = f"python_reference_{level}" + ("_contiguous" if contiguous else "")
    return ptb.from_lines(
        *splits, level=level, name=name, max_vocab=max_vocab, min_count=1 if contiguous else MIN_COUNT
    )
