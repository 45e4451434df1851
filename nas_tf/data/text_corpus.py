"""An embedded real-text corpus for offline language-model runs and tests.

Penn Treebank must be fetched (see `nas_tf.data.ptb`); this corpus ships with
the package: the Python Language Reference help topics (CPython 3.11.7's
`pydoc_data.topics`, PSF License; 465 kB of text, 134 kB gzipped under
`nas_tf/data/embedded/`). A fixed snapshot is embedded rather than read from
the running Python so that perplexities compare across installs.

It is prepared the way PTB is: lower-cased, numbers replaced by `N`, one
example per non-empty line, `<eos>` after each line, and a vocabulary from the
training split capped at PTB's 10,000 words. The split is a fixed rule on the
line order: the first 80 % of lines train, the next 10 % validate, the last
10 % test (contiguous blocks, as PTB's sections are).
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


def split_lines() -> Tuple[List[str], List[str], List[str]]:
    """(train, valid, test) lines by the fixed 80 / 10 / 10 rule."""
    all_lines = lines()
    a = int(len(all_lines) * TRAIN_FRACTION)
    b = int(len(all_lines) * (TRAIN_FRACTION + VALID_FRACTION))
    return all_lines[:a], all_lines[a:b], all_lines[b:]


def load(level: str = "word", max_vocab: int = MAX_VOCAB) -> ptb.LMData:
    """The corpus as `LMData` (the same form as `nas_tf.data.ptb.load`).

    Args:
      level: "word" or "char".
      max_vocab: vocabulary cap; rarer training tokens become `<unk>`.
    """
    if level not in ptb.LEVELS:
        raise ValueError(f"level must be one of {ptb.LEVELS}, got {level!r}.")
    tokenize = word_tokens if level == "word" else char_tokens
    splits = [[" ".join(tokenize(line)) for line in part] for part in split_lines()]
    name = f"python_reference_{level}"
    return ptb.from_lines(*splits, level=level, name=name, max_vocab=max_vocab)
