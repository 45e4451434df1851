"""The command line end to end on the embedded digits, with tiny settings."""

import json
import os
import re
import subprocess
import sys

import keras
import pytest

import nas_tf
from conftest import TINY_FLAGS, lock_held_elsewhere
from nas_tf import cli, search, train

_TINY = TINY_FLAGS + ["--verbose=0"]


def _parse(argv):
    cli.parse(train.FLAGS, ["train"] + argv)


@pytest.fixture(autouse=True)
def _restore_flags():
    yield
    train.FLAGS.unparse_flags()


def _lines(output_dir):
    with open(os.path.join(output_dir, search.HISTORY)) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_cli_writes_what_a_user_gets_and_resumes(tmp_path, capsys):
    out = str(tmp_path / "run")
    _parse(_TINY + [f"--output_dir={out}", "--search_max_trials=2"])
    assert train.main(["train"]) == 0
    config = json.loads(open(os.path.join(out, "config.json")).read())
    assert config["max_trials"] == 2 and config["space_overrides"]["depth"] == 2
    history = _lines(out)
    assert [r["trial_id"] for r in history] == ["0", "1"]
    for record in history:
        assert record["status"] == "COMPLETED"
        assert len(record["val_accuracy"]) == 1 and record["num_params"] > 0
        assert record["reward"] == pytest.approx(record["val_accuracy"][0] ** 3)
        assert record["train_seconds"] > 0
    space = nas_tf.spaces.conv.get_space("cifar10_v1", depth=2, num_filters=(2, 4), filter_sizes=(1, 3)).space
    best = space.architecture_from_json(open(os.path.join(out, search.BEST_ARCHITECTURE)).read())
    best_record = max(history, key=lambda r: r["reward"])
    assert best == space.architecture_from_json(json.dumps(best_record["architecture"]))
    model = keras.models.load_model(os.path.join(out, search.BEST_MODEL))
    assert model.output_shape == (None, 10)
    kept = [d for d in os.listdir(os.path.join(out, search.PROJECT)) if os.path.exists(os.path.join(out, search.PROJECT, d, "model.keras"))]
    assert kept == [f"trial_{best_record['trial_id']}"]  # Only the best child's model stays on disk.

    # The same command with a larger budget resumes: no child is trained twice.
    _parse(_TINY + [f"--output_dir={out}", "--search_max_trials=3"])
    assert train.main(["train"]) == 0
    assert [r["trial_id"] for r in _lines(out)] == ["0", "1", "2"]

    # --overwrite starts afresh.
    _parse(_TINY + [f"--output_dir={out}", "--search_max_trials=1", "--overwrite"])
    assert train.main(["train"]) == 0
    assert [r["trial_id"] for r in _lines(out)] == ["0"]

    # A damaged oracle state stops the resume with a message, not a traceback.
    with open(os.path.join(out, search.PROJECT, "oracle.json"), "w") as f:
        f.write("{")
    _parse(_TINY + [f"--output_dir={out}", "--search_max_trials=2"])
    assert train.main(["train"]) == 1
    assert "oracle.json is unreadable" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--search_num_filters=a,b"], "comma-separated list of integers"),
        (["--search_strides=1,2"], "cifar10_v2 only"),
        (["--search_space=cifar10_v3", "--search_depth=3", "--search_pool_at=9"], "pool_at 9 .*below 9"),
        (["--data_dir=/no/such/dir"], "not a readable directory"),
        (["--search_num_filters=4,0"], "--search_num_filters must hold positive"),
        (["--search_filter_sizes=3,3"], "--search_filter_sizes: .*filter_sizes repeats"),
        (["--search_space=ptb_cell", "--data_name=text", "--search_cell_base=6"], "--search_cell_base"),
        (["--child_learning_rate=nan"], "--child_learning_rate must be a finite number"),
        (["--controller_entropy_weight=inf"], "--controller_entropy_weight must be a finite"),
    ],
)
def test_bad_flags_give_clear_errors(tmp_path, argv, message):
    _parse([f"--output_dir={tmp_path}"] + argv)
    with pytest.raises(Exception, match=message):
        train.main(["train"])


def test_missing_cifar10_says_how_to_provide_it(tmp_path, capsys):
    _parse([f"--output_dir={tmp_path / 'o'}", "--data_name=cifar10", f"--data_dir={tmp_path}"])
    assert train.main(["train"]) == 2
    assert "tfds build cifar10" in capsys.readouterr().err


def test_a_child_that_cannot_train_fails_its_trial_and_the_search_goes_on(tmp_path, monkeypatch):
    from nas_tf.children import convnet

    real = convnet.train_child
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise convnet.ChildTrainingError("nan", "loss is nan after epoch 1.")
        return real(*args, **kwargs)

    monkeypatch.setattr(convnet, "train_child", flaky)
    config = search.SearchConfig(
        output_dir=str(tmp_path),
        space_overrides={"depth": 2, "num_filters": (2,), "filter_sizes": (1,)},
        max_trials=2,
        child=convnet.ChildConfig(epochs=1, batch_size=128),
        isolate_children=False,  # The monkeypatch lives in this process.
        verbose=0,
    )
    best = search.run(config)
    history = _lines(str(tmp_path))
    assert [r["status"] for r in history] == ["FAILED", "COMPLETED"]
    assert history[0]["reason"] == "nan" and "loss is nan" in history[0]["message"]
    assert best["trial_id"] == history[1]["trial_id"]


def _tiny_config(tmp_path, **kwargs):
    from nas_tf.children import convnet

    return search.SearchConfig(
        output_dir=str(tmp_path),
        space_overrides={"depth": 2, "num_filters": (2,), "filter_sizes": (1,)},
        child=convnet.ChildConfig(epochs=1, batch_size=128),
        isolate_children=False,  # The monkeypatches live in this process.
        verbose=0,
        **kwargs,
    )


def test_a_bug_stops_the_search_with_its_traceback_and_a_rerun_resumes(tmp_path, monkeypatch):
    from nas_tf.children import convnet

    real = convnet.train_child
    calls = []

    def buggy(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            return {}["no such key"]  # A bug of ours, not the child's failure.
        return real(*args, **kwargs)

    monkeypatch.setattr(convnet, "train_child", buggy)
    config = _tiny_config(tmp_path, max_trials=2)
    with pytest.raises(search.SearchError, match="(?s)Trial 1: KeyError.*in buggy") as info:
        search.run(config)
    assert "resumes with this trial" in str(info.value)
    assert [r["trial_id"] for r in _lines(str(tmp_path))] == ["0"]  # No FAILED record for the bug.
    monkeypatch.setattr(convnet, "train_child", real)  # "Fixed": the same command resumes.
    search.run(config)
    history = _lines(str(tmp_path))
    assert [(r["trial_id"], r["status"]) for r in history] == [("0", "COMPLETED"), ("1", "COMPLETED")]


def test_out_of_memory_fails_the_child_and_consecutive_failures_stop_the_search(tmp_path, monkeypatch):
    import tensorflow as tf

    from nas_tf.children import convnet

    def oom(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor\nmore detail")

    monkeypatch.setattr(convnet, "fit_child", oom)
    config = _tiny_config(tmp_path, max_trials=5, max_consecutive_failures=2)
    with pytest.raises(search.SearchError, match="2 children failed in a row") as info:
        search.run(config)
    assert "--search_max_consecutive_failures" in str(info.value)
    assert str(info.value).endswith("The last failure (oom): OOM when allocating tensor")
    history = _lines(str(tmp_path))
    assert [(r["status"], r["reason"]) for r in history] == [("FAILED", "oom")] * 2
    assert history[0]["message"] == "OOM when allocating tensor"  # TensorFlow's own error, first line.


def test_resuming_with_changed_settings_is_refused_unless_allowed(tmp_path):
    _parse(_TINY + [f"--output_dir={tmp_path}", "--search_max_trials=1"])
    assert train.main(["train"]) == 0
    _parse(_TINY + [f"--output_dir={tmp_path}", "--search_max_trials=2", "--child_epochs=2", "--seed=5"])
    with pytest.raises(search.ConfigChangedError) as info:
        search.run(train.config_from_flags())
    assert "child.epochs: 1 -> 2" in str(info.value) and "seed: 1 -> 5" in str(info.value)
    assert "max_trials" not in str(info.value)  # A larger budget is the same search.
    assert train.main(["train"]) == 1  # The command line says so and exits with 1.
    assert len(_lines(str(tmp_path))) == 1  # Nothing was trained...
    assert json.loads(open(os.path.join(tmp_path, search.CONFIG)).read())["child"]["epochs"] == 1
    _parse(_TINY + [f"--output_dir={tmp_path}", "--search_max_trials=1", "--child_epochs=2", "--allow_config_change"])
    assert train.main(["train"]) == 0
    assert json.loads(open(os.path.join(tmp_path, search.CONFIG)).read())["child"]["epochs"] == 2


def test_config_changes_names_what_matters():
    old = json.loads(search.SearchConfig(output_dir="a", space_overrides={"depth": 2}).to_json())
    same = search.SearchConfig(output_dir="b", max_trials=99, verbose=0, child_timeout=5, data_dir="/d",
                               space_overrides={"depth": 2}, max_consecutive_failures=1)  # fmt: skip
    assert search.config_changes(old, json.loads(same.to_json())) == []
    from nas_tf.spaces import conv

    other = search.SearchConfig(output_dir="a", space_overrides={"depth": 2, "num_filters": (2,)},
                                curriculum=conv.DepthCurriculum(2, 1, 3))  # fmt: skip
    changes = search.config_changes(old, json.loads(other.to_json()))
    assert changes[0].startswith("curriculum: null -> {")
    assert changes[1] == 'space_overrides: {"depth": 2} -> {"depth": 2, "num_filters": [2]}'
    del old["child"]["epochs"]  # Written by a version without that field: not compared.
    old["new_field"] = 1
    assert search.config_changes(old, json.loads(search.SearchConfig(output_dir="a", space_overrides={"depth": 2}).to_json())) == []


@pytest.mark.slow
def test_cell_search_on_the_embedded_corpus_end_to_end_and_resume(tmp_path):
    out = str(tmp_path / "ptb")
    tiny = [
        "--search_space=ptb_cell",
        "--search_cell_base=2",
        "--data_name=text",
        "--lm_units=8",
        "--child_epochs=1",
        "--child_max_train_batches=3",
        "--child_max_eval_batches=2",
        "--controller_batch_size=2",
        "--verbose=0",
        f"--output_dir={out}",
    ]
    _parse(tiny + ["--search_max_trials=2"])
    assert train.main(["train"]) == 0
    history = _lines(out)
    assert [r["status"] for r in history] == ["COMPLETED", "COMPLETED"]
    for r in history:
        assert r["reward"] == pytest.approx(80.0 / r["best_val_perplexity"] ** 2)
        assert len(r["val_perplexity"]) == 1 and r["num_params"] > 0
    best = json.loads(open(os.path.join(out, search.BEST_ARCHITECTURE)).read())
    cell = nas_tf.spaces.cell
    description = cell.CellDescription.from_architecture(
        cell.ptb_cell(2).architecture_from_json(json.dumps(best)), cell.ptb_cell(2)
    )
    assert len(description.nodes) == cell.num_nodes(2)
    assert description.inject[0] in cell.COMBINATIONS
    assert os.path.exists(os.path.join(out, search.BEST_MODEL))
    _parse(tiny + ["--search_max_trials=3"])
    assert train.main(["train"]) == 0
    assert [r["trial_id"] for r in _lines(out)] == ["0", "1", "2"]


def test_space_and_dataset_must_match(tmp_path):
    _parse([f"--output_dir={tmp_path}", "--search_space=ptb_cell", "--data_name=digits"])
    with pytest.raises(Exception, match="needs a text --data_name"):
        train.main(["train"])
    _parse([f"--output_dir={tmp_path}", "--data_name=text"])
    with pytest.raises(Exception, match="needs an image --data_name"):
        train.main(["train"])
    _parse([f"--output_dir={tmp_path}", "--search_space=ptb_cell", "--data_name=text", "--search_cell_base=3"])
    with pytest.raises(Exception, match="power of two"):
        train.main(["train"])


def test_children_train_under_a_mirrored_strategy(tmp_path):
    out = str(tmp_path / "mirrored")
    _parse(_TINY + [f"--output_dir={out}", "--search_max_trials=1", "--child_distribution=mirrored", "--child_isolate=false"])
    assert train.main(["train"]) == 0
    assert [r["status"] for r in _lines(out)] == ["COMPLETED"]


def test_prepare_ptb_then_search_it(tmp_path):
    from nas_tf import prepare_ptb

    source = tmp_path / "source"
    source.mkdir()
    words = "the cat sat on the mat and the dog ran to the cat".split()
    for split, n in (("train", 300), ("valid", 60), ("test", 60)):
        lines = [" ".join(words[(i + k) % len(words)] for k in range(8)) for i in range(n)]
        (source / f"ptb.{split}.txt").write_text("\n".join(lines) + "\n")
    tfds_dir = tmp_path / "tfds"
    prepare_ptb.FLAGS.unparse_flags()
    prepare_ptb.FLAGS(["prepare_ptb", f"--manual_dir={source}", f"--data_dir={tfds_dir}", "--levels=word"])
    assert prepare_ptb.main(["prepare_ptb"]) == 0
    prepare_ptb.FLAGS.unparse_flags()
    prepare_ptb.FLAGS(["prepare_ptb", f"--manual_dir={tmp_path / 'missing'}"])
    with pytest.raises(Exception, match="not a directory"):
        prepare_ptb.main(["prepare_ptb"])

    out = str(tmp_path / "ptb_search")
    _parse(
        [
            "--search_space=ptb_cell",
            "--search_cell_base=2",
            "--data_name=ptb",
            f"--data_dir={tfds_dir}",
            "--lm_units=8",
            "--child_epochs=1",
            "--child_batch_size=4",
            "--child_bptt_steps=5",
            "--child_max_train_batches=3",
            "--child_max_eval_batches=2",
            "--search_max_trials=1",
            "--child_isolate=false",
            "--verbose=0",
            f"--output_dir={out}",
        ]
    )
    assert train.main(["train"]) == 0
    assert [r["status"] for r in _lines(out)] == ["COMPLETED"]


def test_search_on_user_arrays(tmp_path):
    import numpy as np

    from nas_tf import data as data_lib
    from nas_tf.children import convnet

    rng = np.random.default_rng(0)
    data = data_lib.from_arrays(
        rng.integers(0, 255, (40, 6, 6, 3)).astype("uint8"), rng.integers(0, 3, 40), num_valid=8
    )
    config = search.SearchConfig(
        output_dir=str(tmp_path),
        space_overrides={"depth": 2, "num_filters": (2,), "filter_sizes": (1, 3)},
        max_trials=2,
        child=convnet.ChildConfig(epochs=1, batch_size=16),
        isolate_children=False,
        verbose=0,
    )
    best = search.run(config, data=data)
    assert best is not None
    model = keras.models.load_model(os.path.join(str(tmp_path), search.BEST_MODEL))
    assert model.output_shape == (None, 3) and model.input_shape == (None, 6, 6, 3)


def test_paper_flag_files_run_the_papers_method_exactly():
    import nas_tf

    _parse(["--flagfile=experiments/cifar.flags"])
    config = train.config_from_flags()
    assert config.preset == "paper" and not config.reuse_rewards and config.mutate_best == 0
    assert config.reinforce == nas_tf.ReinforceConfig.paper()
    assert config.controller == nas_tf.ControllerConfig.paper()
    _parse(["--flagfile=experiments/ptb.flags"])
    config = train.config_from_flags()
    # Sec. 4.2: Adam 0.0005 and an update per 10 gradients for the PTB controller.
    assert config.reinforce == nas_tf.ReinforceConfig.paper(learning_rate=0.0005, batch_size=10)
    _parse(["--flagfile=experiments/cifar_quick.flags", "--controller_tanh_constant=0",
            "--controller_ratio_clip=0", "--controller_update_epochs=1",
            "--controller_topk_size=3", "--controller_topk_weight=2"])
    config = train.config_from_flags()
    assert config.preset == "default" and config.reuse_rewards and config.max_resamples == 2
    assert config.mutate_best == 0.5 and config.mutate_until == 40
    _parse(["--flagfile=experiments/cifar_quick.flags", "--search_mutate_best=0.2",
            "--search_mutate_until=8"])
    changed = train.config_from_flags()
    assert (changed.mutate_best, changed.mutate_until) == (0.2, 8)
    assert config.controller.tanh_constant is None and config.reinforce.ratio_clip is None
    assert (config.reinforce.topk_size, config.reinforce.topk_weight) == (3, 2.0)


def test_reward_power_one_makes_the_reward_the_accuracy(monkeypatch):
    # The paper's baseline form (sec. 3.2): a moving average of accuracies.
    from nas_tf import space as space_lib
    from nas_tf import tasks
    from nas_tf.children import convnet
    from nas_tf.spaces import conv

    _parse(_TINY + ["--child_reward_power=1", "--child_reward_epochs=2"])
    child = train.config_from_flags().child
    assert child.reward_power == 1.0
    accuracies = [0.5, 0.8, 0.6]
    result = convnet.ChildResult(
        num_params=10, train_seconds=1.0, val_accuracy=accuracies, val_loss=[1.0] * 3,
        train_loss=[1.0] * 3, train_accuracy=[0.5] * 3, images_per_second=1.0,
    )  # fmt: skip
    monkeypatch.setattr(convnet, "train_child", lambda *a, **k: result)
    spec = conv.get_space("cifar10_v1", depth=1, num_filters=(2,), filter_sizes=(1,))
    arch = space_lib.Architecture({"layer_0/filter_height": 1, "layer_0/filter_width": 1,
                                   "layer_0/num_filters": 2, "layer_0/anchor": ()}, depth=1)
    task = tasks.ConvTask(spec.to_config(), data=None, child=child)
    assert task((arch.to_json(), None))["reward"] == 0.8  # Max of the last 2, not cubed.
    task = tasks.ConvTask(spec.to_config(), data=None, child=convnet.ChildConfig(reward_epochs=2))
    assert task((arch.to_json(), None))["reward"] == pytest.approx(0.8**3)
    _parse(["--flagfile=experiments/cifar.flags"])
    assert train.config_from_flags().child.reward_power == 3.0


def test_exit_status_prints_expected_failures_and_lets_bugs_through(capsys):
    class Bad(ValueError):
        pass

    def fail(error):
        def work():
            raise error
        return work

    statuses = {Bad: 2, ValueError: 1}
    assert cli.exit_status(lambda: None, statuses) == 0
    assert cli.exit_status(fail(Bad("no data")), statuses) == 2  # The first matching type.
    assert cli.exit_status(fail(ValueError("bad input")), statuses) == 1
    assert capsys.readouterr().err.splitlines() == ["nas_tf: no data", "nas_tf: bad input"]
    with pytest.raises(KeyError):
        cli.exit_status(fail(KeyError("a bug")), statuses)


def test_the_entry_point_and_its_child_worker_are_quiet_on_a_cpu(tmp_path):
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != cli.LOG_LEVEL_ENV}  # nas_tf's default.
    cmd = [sys.executable, "-m", "nas_tf.train", f"--output_dir={out}", "--search_max_trials=1",
           "--child_isolate=true", *TINY_FLAGS]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    noise = [line for line in done.stderr.splitlines()
             if re.match(r"[IWE]\d{4} ", line) or "cuInit" in line or "InitializeLog" in line]  # fmt: skip
    assert not noise, done.stderr[-3000:]
    assert "nas_tf: children train on " in done.stdout
    assert "Convolutional network, 2 layers:" in done.stdout  # The best child, readable.


def test_tensorflow_log_below_the_level_is_held_back():
    text = (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            b"I0000 00:00:1.5 1 cpu_feature_guard.cc:227] This binary is optimized...\n"
            b"To enable the following instructions: AVX2, in other operations, rebuild.\n"
            b"E0000 00:00:1.6 1 cuda_platform.cc:52] failed call to cuInit\n"
            b"a line of the program\n")  # fmt: skip
    assert cli._below_level(text, 3) == b"a line of the program\n"
    assert cli._below_level(text, 2) == text.split(b"\n", 3)[3]  # The ERROR line stays.
    assert cli._below_level(text, 0) == text


def test_a_search_on_a_directory_another_holds_refuses_before_deleting_anything(tmp_path, capsys, monkeypatch):
    from nas_tf import dirlock

    out = tmp_path / "run"
    (out / search.PROJECT).mkdir(parents=True)
    (out / search.HISTORY).write_text('{"trial_id": "0"}\n')
    with lock_held_elsewhere(out) as holder:
        _parse(_TINY + [f"--output_dir={out}", "--overwrite"])
        assert train.main(["train"]) == 1
        assert f"in use by pid {holder.pid} on host {dirlock.host()}" in capsys.readouterr().err
        assert (out / search.HISTORY).exists() and (out / search.PROJECT).is_dir()  # Nothing deleted.
        with pytest.raises(dirlock.LockedError, match=f"pid {holder.pid}"):  # nas_tf.Search alike.
            nas_tf.Search(str(out), max_trials=1, overwrite=True).run()
        assert (out / search.HISTORY).exists() and (out / search.PROJECT).is_dir()
        # A Keras Tuner worker of that search shares its directory: it locks its own id only.
        monkeypatch.setattr(search, "role", lambda: "worker")
        monkeypatch.setenv("KERASTUNER_TUNER_ID", "worker3")
        with search.lock_output_dir(str(out)) as lock:
            assert os.path.basename(lock.path) == ".nas_tf.worker3.lock"
