"""The one reader of nas_tf's line-per-record JSON files (`*.jsonl`).

Every such file (the search history, the controller's update log, the
retraining grid, the oracle's journal) is written by
`nas_tf.durable.append_line`, one whole line per append, or atomically whole.
So one rule reads them all:

* the bytes after the last newline are a line torn by a kill in the middle of
  an append: never a record, so ignored (`append_line` cuts them off before
  the next record goes in);
* blank lines are skipped;
* any other line that is not JSON, or that the caller's `check` refuses, was
  damaged after it was written: an error naming the file and the line, since
  skipping it would lose a record without a word.
"""

import dataclasses
import json
from typing import Any, Callable, List, Optional, Tuple


class CorruptLineError(ValueError):
    """A line other than the last is not a record (its file and line named).

    Attributes:
      path: the file.
      line: the line number, from 1.
    """

    def __init__(self, message: str, path: Optional[str] = None, line: Optional[int] = None):
        super().__init__(message)
        self.path, self.line = path, line


@dataclasses.dataclass(frozen=True)
class Line:
    """One whole line of a file.

    Attributes:
      number: its line number, from 1.
      value: the parsed JSON value.
      size: its length in bytes, newline included.
    """

    number: int
    value: Any
    size: int


def read(
    path: str,
    check: Optional[Callable[[Any], Optional[str]]] = None,
    *,
    error: Callable[..., Exception] = CorruptLineError,
    hint: str = "",
) -> Tuple[List[Line], bytes]:
    """Reads the whole lines of a JSON-lines file.

    Args:
      path: the file.
      check: optional; returns what is wrong with a parsed value, or None if
        it is a record.
      error: the exception type raised for a corrupt line; it is called with
        the message (and `path=`, `line=` if it is a `CorruptLineError`).
      hint: a sentence added to the message: what the user can do.

    Returns:
      (lines, torn): the whole, non-blank lines in file order, and the torn
      last line's bytes (b"" if the file ends with a newline).

    Raises:
      error: naming `path` and the line, for a whole line that is not UTF-8
        JSON or that `check` refuses.
    """
    with open(path, "rb") as f:
        content = f.read()
    raws = content.split(b"\n")
    torn = raws.pop()  # After the last newline: empty, or cut short by a kill.
    lines = []
    for number, raw in enumerate(raws, 1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw.decode("utf-8"))
            problem = None if check is None else check(value)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            problem = f"not a JSON record ({type(e).__name__}: {str(e)[:200]})"
        if problem is not None:
            message = f"{path}, line {number}: {problem}." + (f" {hint}" if hint else "")
            if isinstance(error, type) and issubclass(error, CorruptLineError):
                raise error(message, path=path, line=number)
            raise error(message)
        lines.append(Line(number, value, len(raw) + 1))
    return lines, torn


def records(path: str, check: Optional[Callable[[Any], Optional[str]]] = None, **kwargs) -> list:
    """The parsed values of `read(path, check, **kwargs)`, in file order."""
    return [line.value for line in read(path, check, **kwargs)[0]]
