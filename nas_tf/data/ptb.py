"""Penn Treebank for language models: a TFDS builder, a vocabulary, batching.

TFDS has no Penn Treebank, so `PennTreebank` is a `tfds.core.GeneratorBasedBuilder`
over the standard files of Mikolov et al. (2010) that Zoph & Le 2017 (sec. 4.2)
and their baselines use: `ptb.train.txt`, `ptb.valid.txt`, `ptb.test.txt`
(word level, 10,000-word vocabulary, rare words already `<unk>`) and
`ptb.char.{train,valid,test}.txt` (character level, `_` between words). They
come from the `simple-examples.tgz` archive (`SOURCE_URL`), or from a local
directory passed as TFDS's `manual_dir`: with no network, put the files there.
If the character files are missing, the char config derives them from the word
files the same way (characters separated by spaces, `_` for a space).

Every example is one line of text. `load` turns the prepared splits into token
id arrays (`LMData`), with an `<eos>` token ending each line; `batchify` cuts
such an array into contiguous rows for truncated back-propagation through time.
"""

import collections
import dataclasses
import math
import os
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from nas_tf.data.cifar10 import DataNotPreparedError

SOURCE_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
EOS = "<eos>"
UNK = "<unk>"
LEVELS = ("word", "char")
SPLITS = {"train": "train", "validation": "valid", "test": "test"}


def _file_name(level: str, split: str) -> str:
    return f"ptb.{'char.' if level == 'char' else ''}{SPLITS[split]}.txt"


# -- vocabulary and batching ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Token <-> id. Ids follow `tokens`: most frequent first, ties by text.

    Attributes:
      tokens: every token, id order; holds `EOS` and `UNK`.
    """

    tokens: Tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "tokens", tuple(self.tokens))
        object.__setattr__(self, "_ids", {t: i for i, t in enumerate(self.tokens)})
        if len(self._ids) != len(self.tokens):
            raise ValueError("Vocabulary tokens must be unique.")

    def __len__(self):
        return len(self.tokens)

    @classmethod
    def build(
        cls, lines: Iterable[Sequence[str]], max_size: Optional[int] = None, min_count: int = 1
    ) -> "Vocabulary":
        """Counts tokens (plus one `EOS` per line); keeps the `max_size` most frequent.

        `UNK` stands for every other token, and for tokens seen fewer than
        `min_count` times: if the lines lack it, it is added last (PTB's
        files hold it already, so their vocabulary stays 10,000).
        """
        counts = collections.Counter()
        for tokens in lines:
            counts.update(tokens)
            counts[EOS] += 1
        ordered = sorted(counts, key=lambda t: (-counts[t], t))
        ordered = [t for t in ordered if counts[t] >= min_count or t in (EOS, UNK)]
        if UNK not in counts:
            ordered.append(UNK)
        if max_size is not None and len(ordered) > max_size:
            kept = [t for t in ordered if t != UNK][: max_size - 1]
            ordered = sorted(kept + [UNK], key=lambda t: (-counts[t], t))
        return cls(tuple(ordered))

    def encode_lines(self, lines: Iterable[Sequence[str]]) -> np.ndarray:
        """Ids of all lines, each followed by `EOS`, as one int32 array.

        Raises:
          KeyError: for a token outside the vocabulary when there is no `UNK`.
        """
        unk = self._ids.get(UNK)
        eos = self._ids[EOS]
        out: List[int] = []
        for tokens in lines:
            for t in tokens:
                i = self._ids.get(t, unk)
                if i is None:
                    raise KeyError(f"Token {t!r} is not in the vocabulary, which has no {UNK}.")
                out.append(i)
            out.append(eos)
        return np.asarray(out, np.int32)

    def decode(self, ids: Iterable[int]) -> List[str]:
        return [self.tokens[int(i)] for i in ids]


@dataclasses.dataclass(frozen=True)
class LMData:
    """A language-modelling corpus as token ids.

    Attributes:
      train, valid, test: 1-D int32 id arrays, lines joined with `EOS`.
      vocab: the `Vocabulary` (built from the training split).
      level: "word" or "char" (report bits per character for "char").
      name: the corpus name, for records.
    """

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    vocab: Vocabulary
    level: str = "word"
    name: str = "ptb"

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


def tokenize(line: str) -> List[str]:
    """PTB files are already tokenised: tokens are separated by white space."""
    return line.split()


def from_lines(
    train: Sequence[str],
    valid: Sequence[str],
    test: Sequence[str],
    level: str = "word",
    name: str = "ptb",
    max_vocab: Optional[int] = None,
    min_count: int = 1,
) -> LMData:
    """Builds `LMData` from text lines (vocabulary from the training lines).

    `min_count` > 1 maps training tokens rarer than that to `UNK`, so that
    the model learns a cost for unseen tokens (PTB's files come so).
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}.")
    splits = [[tokenize(line) for line in lines] for lines in (train, valid, test)]
    vocab = Vocabulary.build(splits[0], max_size=max_vocab, min_count=min_count)
    ids = [vocab.encode_lines(s) for s in splits]
    return LMData(*ids, vocab=vocab, level=level, name=name)


def batchify(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """Cuts a token stream into `batch_size` contiguous rows.

    Row b holds tokens [b * n, (b + 1) * n) with n = len(ids) // batch_size; the
    remainder is dropped. Reading the columns in order then continues every
    row's text from one batch to the next, so the recurrent state can be
    carried across batches (Zaremba et al. 2014).

    Returns:
      An int32 array [batch_size, n].

    Raises:
      ValueError: if there are fewer tokens than rows.
    """
    ids = np.asarray(ids, np.int32).reshape(-1)
    n = len(ids) // batch_size
    if batch_size < 1 or n < 2:
        raise ValueError(
            f"Cannot cut {len(ids)} tokens into {batch_size} rows of at least 2 tokens."
        )
    return ids[: n * batch_size].reshape(batch_size, n)


def bptt_windows(
    rows: np.ndarray, steps: int, drop_remainder: bool = False
) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Yields (inputs, targets) windows of `steps` columns, left to right.

    Targets are the inputs shifted by one token. The last window is shorter
    unless `drop_remainder`.
    """
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}.")
    last = rows.shape[1] - 1
    for i in range(0, last, steps):
        n = min(steps, last - i)
        if n < steps and drop_remainder:
            return
        yield rows[:, i : i + n], rows[:, i + 1 : i + 1 + n]


def num_windows(rows: np.ndarray, steps: int, drop_remainder: bool = False) -> int:
    last = rows.shape[1] - 1
    return last // steps if drop_remainder else math.ceil(last / steps)


# -- the TFDS builder ----------------------------------------------------------


def _char_line(word_line: str) -> str:
    """A word-level PTB line in the layout of Mikolov's ptb.char files."""
    return " ".join("_" if ch == " " else ch for ch in " ".join(word_line.split()))


def find_source_files(directory: str, level: str) -> Dict[str, str]:
    """Paths of the three split files for `level` under `directory`.

    Looks in `directory` and in `directory/simple-examples/data` (the archive's
    layout). For "char" the word files stand in for missing char files.

    Returns:
      split -> path; for a char split derived from a word file, the word file.

    Raises:
      FileNotFoundError: naming the missing files.
    """
    found = {}
    for split in SPLITS:
        names = [_file_name(level, split)]
        if level == "char":
            names.append(_file_name("word", split))
        for sub in ("", os.path.join("simple-examples", "data")):
            for name in names:
                path = os.path.join(directory, sub, name)
                if split not in found and os.path.isfile(path):
                    found[split] = path
    missing = [_file_name(level, s) for s in SPLITS if s not in found]
    if missing:
        raise FileNotFoundError(f"Penn Treebank files {missing} are not in {directory}.")
    return found


def _builder_class():
    """Defines the TFDS builder on first use: importing TFDS takes seconds."""
    global _BUILDER
    if _BUILDER is not None:
        return _BUILDER
    import tensorflow_datasets as tfds
    from etils import epath

    @dataclasses.dataclass
    class PennTreebankConfig(tfds.core.BuilderConfig):
        """Attributes: level: "word" or "char"."""

        level: str = "word"

    class PennTreebank(tfds.core.GeneratorBasedBuilder):
        """Penn Treebank language-modelling data (Mikolov et al. 2010), one line per example."""

        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "Word and character level, from simple-examples.tgz."}
        BUILDER_CONFIGS = [
            PennTreebankConfig(name="word", level="word", description="10k-word vocabulary."),
            PennTreebankConfig(name="char", level="char", description="Characters, '_' = space."),
        ]
        MANUAL_DOWNLOAD_INSTRUCTIONS = (
            "Put ptb.train.txt, ptb.valid.txt and ptb.test.txt (and for the char config "
            "optionally ptb.char.*.txt) in the manual directory, e.g. from "
            f"{SOURCE_URL} (its simple-examples/data folder)."
        )

        # TFDS finds a builder's source (and its checksums file) through
        # importlib_resources, which it does not install; name the file directly.
        @tfds.core.utils.classproperty
        @classmethod
        def code_path(cls):
            return epath.Path(__file__)

        def _info(self):
            return self.dataset_info_from_configs(
                features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
                # A language model reads the text in order: keep the file's line order.
                disable_shuffling=True,
                homepage="http://www.fit.vutbr.cz/~imikolov/rnnlm/",
                citation=(
                    "@inproceedings{mikolov2010recurrent, title={Recurrent neural network "
                    "based language model}, author={Mikolov, Tomas and Karafiat, Martin and "
                    "Burget, Lukas and Cernocky, Jan and Khudanpur, Sanjeev}, "
                    "booktitle={Interspeech}, year={2010}}"
                ),
            )

        def _split_generators(self, dl_manager):
            level = self.builder_config.level
            try:
                source = str(dl_manager.manual_dir)
            except (AssertionError, ValueError):  # No manual directory, or it is empty.
                source = str(dl_manager.download_and_extract(SOURCE_URL))
            files = find_source_files(source, level)
            return {split: self._generate_examples(files[split]) for split in SPLITS}

        def _generate_examples(self, path):
            derive = self.builder_config.level == "char" and ".char." not in os.path.basename(path)
            with open(path, encoding="utf-8") as f:
                for i, line in enumerate(f):
                    text = line.rstrip("\n")
                    yield i, {"text": _char_line(text) if derive else text}

    _BUILDER = PennTreebank
    return _BUILDER


_BUILDER = None


def builder(level: str = "word", data_dir: Optional[str] = None):
    """The `PennTreebank` TFDS builder for `level` ("word" or "char")."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}.")
    return _builder_class()(config=level, data_dir=data_dir)


def prepare(level: str = "word", data_dir: Optional[str] = None, manual_dir: Optional[str] = None):
    """Writes the TFDS dataset: from `manual_dir` if given, else downloads it.

    Args:
      level: "word" or "char".
      data_dir: TFDS data directory (default: TFDS's, ~/tensorflow_datasets).
      manual_dir: a directory holding the PTB text files (no network needed).

    Returns:
      The prepared builder.
    """
    import tensorflow_datasets as tfds

    b = builder(level, data_dir)
    if manual_dir is not None:
        find_source_files(manual_dir, level)  # Fail early, naming the missing files.
    b.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=manual_dir, try_download_gcs=False
        )
    )
    return b


def load(level: str = "word", data_dir: Optional[str] = None) -> LMData:
    """Reads the prepared PTB splits as `LMData` (never downloads).

    Raises:
      DataNotPreparedError: saying how to prepare the data offline.
    """
    import tensorflow_datasets as tfds

    b = builder(level, data_dir)
    if not b.is_prepared():
        raise DataNotPreparedError(
            f"Penn Treebank ({level}) is not prepared in {b.data_dir!r}. Put ptb.train.txt, "
            "ptb.valid.txt and ptb.test.txt in a directory DIR (from "
            f"{SOURCE_URL}) and run `python -m nas_tf.prepare_ptb --manual_dir=DIR "
            f"--data_dir={b.data_dir.split('/penn_treebank')[0] if b.data_dir else '...'}` once "
            f"(or call nas_tf.data.ptb.prepare({level!r}, data_dir, manual_dir=DIR))."
        )
    lines = {}
    for split in SPLITS:
        ds = b.as_dataset(split=split, shuffle_files=False)  # Written unshuffled, in order.
        lines[split] = [ex["text"].decode("utf-8") for ex in tfds.as_numpy(ds)]
    return from_lines(
        lines["train"], lines["validation"], lines["test"], level=level, name=f"ptb_{level}"
    )
