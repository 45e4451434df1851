"""A live progress line for long work: children of a search, epochs of a training.

Written in the style of Keras's progress bar (`keras.utils.Progbar`):

    12/50 [=======>....................] - 3m 10s - ETA 10m 2s - best 0.7312 - failed 1

On a terminal the line is rewritten in place (a carriage return, no new line)
after each step, and what a step has to say (a child's result) scrolls above
it; when the output is not a terminal (a CI log, a file) each step prints one
whole line without the bar, as Keras does, what the step says included:

    [child 11] 12/50 - 3m 10s - ETA 10m 2s - best 0.7312 - failed 1 - reward 0.5120 ...

`verbose=0` prints nothing.

The clock is injectable (`clock=`), so tests check exact lines without
depending on wall-clock time. The ETA uses only the steps done since this
`Progress` started: a resumed search does not count the children it found
already done as instantly finished.

Used by `nas_tf.search` (children), `nas_tf.train_lm` (epochs) and, for the
final training of one architecture, `nas_tf.retrain` (epochs).
"""

import sys
import time
from typing import Callable, Mapping, Optional, TextIO

BAR_WIDTH = 30


def format_duration(seconds: float) -> str:
    """Seconds as Keras-like text: "45s", "3m 10s", "2h 5m", "1d 3h"."""
    seconds = max(0, int(round(seconds)))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def format_value(value) -> str:
    """A value for the line: floats with 4 significant decimals, the rest as text."""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.4g}"
    return str(value)


def format_line(
    done: int,
    total: int,
    elapsed: float,
    eta: Optional[float] = None,
    values: Optional[Mapping[str, object]] = None,
    width: int = BAR_WIDTH,
    bar: bool = True,
) -> str:
    """One progress line (no carriage return or newline).

    Args:
      done: steps finished.
      total: steps in all (the bar is full at `total`).
      elapsed: seconds since the start.
      eta: estimated seconds left, or None (not known yet; left out).
      values: named figures shown after the times, in order (None values are
        left out).
      width: characters inside the bar's brackets.
      bar: draw the bar (False: "3/10 - 12s - ...", Keras's non-interactive form).

    Returns:
      e.g. "3/10 [========>.....................] - 12s - ETA 28s - best 0.5000".
    """
    total = max(int(total), 1)
    digits = len(str(total))
    filled = int(width * min(done, total) / total)
    if 0 < filled < width:
        drawn = "=" * (filled - 1) + ">" + "." * (width - filled)
    else:
        drawn = "=" * filled + "." * (width - filled)
    count = f"{done:>{digits}}/{total} [{drawn}]" if bar else f"{done}/{total}"
    parts = [count, format_duration(elapsed)]
    if eta is not None and done < total:
        parts.append(f"ETA {format_duration(eta)}")
    for name, value in (values or {}).items():
        if value is not None:
            parts.append(f"{name} {format_value(value)}")
    return " - ".join(parts)


class Progress:
    """A progress line over `total` steps.

    Args:
      total: steps in all.
      done: steps already finished before this line started (a resume).
      verbose: 0 prints nothing; 1 or more prints the line.
      stream: where to print (default: sys.stdout at each call).
      interactive: rewrite the line in place; default: whether `stream` is a
        terminal.
      clock: a function returning seconds (default `time.monotonic`).
      label: names the steps at the line's start ("epoch" gives "epoch 3/10 ...").
    """

    def __init__(
        self,
        total: int,
        done: int = 0,
        verbose: int = 1,
        stream: Optional[TextIO] = None,
        interactive: Optional[bool] = None,
        clock: Callable[[], float] = time.monotonic,
        label: str = "",
    ):
        if total < 0 or done < 0:
            raise ValueError(f"Progress needs total >= 0 and done >= 0, got {total} and {done}.")
        self.total, self.done, self.verbose = total, done, verbose
        self._stream, self._interactive, self._clock = stream, interactive, clock
        self._start = clock()
        self._start_done = done
        self.label = label
        self._open = False  # A line is on the terminal without its newline.

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    @property
    def interactive(self) -> bool:
        if self._interactive is not None:
            return self._interactive
        isatty = getattr(self.stream, "isatty", None)
        try:
            return bool(isatty and isatty())
        except ValueError:  # A closed stream.
            return False

    def eta(self) -> Optional[float]:
        """Seconds left at the average pace of the steps done since the start (None: unknown)."""
        steps = self.done - self._start_done
        if steps <= 0:
            return None
        return (self._clock() - self._start) / steps * max(self.total - self.done, 0)

    def line(self, values: Optional[Mapping[str, object]] = None, bar: bool = True) -> str:
        text = format_line(
            self.done, self.total, self._clock() - self._start, self.eta(), values, bar=bar
        )
        return f"{self.label} {text.lstrip()}" if self.label else text

    def update(
        self,
        done: Optional[int] = None,
        values: Optional[Mapping[str, object]] = None,
        prefix: str = "",
        note: str = "",
    ):
        """Sets the steps done (default: one more) and shows the line.

        Args:
          done: steps finished (default: one more than before).
          values: figures for the line (see `format_line`).
          prefix: names the step ("[child 11]").
          note: what the step has to say (a child's result).
        """
        self.done = self.done + 1 if done is None else done
        if not self.verbose:
            return
        if self.interactive:
            if prefix or note:
                self.message(" ".join(x for x in (prefix, note) if x))
            # Clear the rest of a longer previous line, stay on this line.
            self.stream.write("\r" + self.line(values) + "\x1b[K")
            self._open = True
        else:
            text = self.line(values, bar=False) + (f" - {note}" if note else "")
            self.stream.write((f"{prefix} " if prefix else "") + text + "\n")
        self.stream.flush()

    def message(self, text: str):
        """Prints a line of its own above the progress line (which the next update redraws)."""
        if not self.verbose:
            return
        if self._open:
            self.stream.write("\r\x1b[K")  # Clear the progress line; the text takes its place.
            self._open = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self):
        """Ends the in-place line with its newline (call once the work is done)."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def keras_callback(line: Progress, names=("loss", "accuracy", "val_loss", "val_accuracy")):
    """A Keras callback that moves `line` to each finished epoch, with the epoch's figures.

    For `model.fit` runs that want the progress line instead of Keras's own
    bar (`nas_tf.retrain`); a resumed fit (`initial_epoch`) continues the
    count. Close the line after `fit`.

    Args:
      line: the `Progress`, its total the epochs of the run.
      names: the `logs` entries to show, in order, when present.
    """
    import keras

    class EpochProgress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            line.update(epoch + 1, values={k: float(logs[k]) for k in names if k in logs})

    return EpochProgress()
