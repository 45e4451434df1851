"""The live progress line (nas_tf.progress): exact text, in place or one line a step."""

import io

import pytest

from nas_tf import progress


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_durations_and_values_are_formatted_like_keras():
    assert [progress.format_duration(s) for s in (0, 45.4, 190, 7500, 97200)] == [
        "0s", "45s", "3m 10s", "2h 5m", "1d 3h"
    ]
    assert progress.format_value(0.73125) == "0.7312" and progress.format_value(3) == "3"
    line = progress.format_line(3, 10, 12, 28, {"best": 0.5, "failed": 0, "skip": None}, width=10)
    assert line == " 3/10 [==>.......] - 12s - ETA 28s - best 0.5000 - failed 0"
    assert progress.format_line(10, 10, 65, 0.0, width=4) == "10/10 [====] - 1m 5s"
    assert progress.format_line(0, 4, 0, None, width=4, bar=False) == "0/4 - 0s"


def test_one_line_per_step_when_not_a_terminal_with_eta_from_this_run_only():
    clock, out = Clock(), io.StringIO()
    line = progress.Progress(total=10, done=4, stream=out, clock=clock)  # A resume: 4 done before.
    assert line.eta() is None
    clock.now += 30
    line.update(values={"best": 0.25}, prefix="[child 4]", note="reward 0.2500")
    clock.now += 10
    line.update(values={"best": 0.5, "failed": 1}, prefix="[child 5]", note="FAILED (oom): out")
    line.close()
    # Two steps in 40 s: 20 s a step, 4 left.
    assert out.getvalue().splitlines() == [
        "[child 4] 5/10 - 30s - ETA 2m 30s - best 0.2500 - reward 0.2500",
        "[child 5] 6/10 - 40s - ETA 1m 20s - best 0.5000 - failed 1 - FAILED (oom): out",
    ]


def test_in_place_on_a_terminal_with_notes_scrolling_above():
    clock, out = Clock(), Tty()
    line = progress.Progress(total=2, stream=out, clock=clock)
    assert line.interactive
    clock.now += 5
    line.update(prefix="[epoch 1]", note="val 3.0")
    clock.now += 5
    line.update()
    line.close()
    bar1 = progress.format_line(1, 2, 5, 5)
    bar2 = progress.format_line(2, 2, 10, 0)
    assert out.getvalue() == (
        "[epoch 1] val 3.0\n" + "\r" + bar1 + "\x1b[K" + "\r" + bar2 + "\x1b[K" + "\n"
    )


def test_a_label_names_the_steps():
    clock, out = Clock(), io.StringIO()
    line = progress.Progress(total=2, stream=out, clock=clock, label="epoch")
    clock.now += 3
    line.update(note="validation perplexity 40.00")
    assert out.getvalue() == "epoch 1/2 - 3s - ETA 3s - validation perplexity 40.00\n"


def test_silent_and_bad_arguments():
    out = Tty()
    line = progress.Progress(total=3, verbose=0, stream=out)
    line.update(note="x")
    line.message("y")
    line.close()
    assert out.getvalue() == "" and line.done == 1
    with pytest.raises(ValueError, match="total >= 0"):
        progress.Progress(total=-1)


def test_keras_callback_moves_the_line_per_epoch_with_its_figures():
    import numpy as np
    import keras

    clock, out = Clock(), io.StringIO()
    line = progress.Progress(total=3, done=1, stream=out, clock=clock, label="epoch")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((4, 2), "float32")
    model.fit(x, x[:, :1], epochs=3, initial_epoch=1, verbose=0,
              callbacks=[progress.keras_callback(line)])
    lines = out.getvalue().splitlines()
    assert [l.split(" - ")[0] for l in lines] == ["epoch 2/3", "epoch 3/3"]
    assert all(l.endswith("loss 0.0000") for l in lines)  # Zero targets, zero-input model.
