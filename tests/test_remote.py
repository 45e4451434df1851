"""URL output directories (`nas_tf.remote`), with TensorFlow's in-memory `ram://`
file system standing in for a Cloud Storage bucket."""

import json
import os
import uuid

import pytest
import tensorflow as tf
from absl import app

from conftest import TINY_FLAGS
from nas_tf import cli, launch, remote, retrain, search, tasks, train, train_lm


# Children in the test's own process: no worker process to start (the mirror is the point here).
_FAST = TINY_FLAGS + ["--verbose=0", "--nochild_isolate"]


@pytest.fixture(autouse=True)
def _restore_flags():
    yield
    for flag_values in (train.FLAGS, launch.FLAGS, train_lm.FLAGS, retrain.FLAGS):
        flag_values.unparse_flags()


def _bucket():
    """A fresh ram:// directory (ram:// lives as long as the process)."""
    return f"ram://bucket-{uuid.uuid4().hex[:8]}/run"


def _remote_tree(url):
    """Relative path -> bytes of every file under `url` but the sync's manifest."""
    out = {}
    for root, _, names in tf.io.gfile.walk(url):
        for name in names:
            if name == remote.MANIFEST:
                continue
            full = root.rstrip("/") + "/" + name
            with tf.io.gfile.GFile(full, "rb") as f:
                out[full[len(url) + 1:]] = f.read()
    return out


def _local_tree(directory):
    out = {}
    for root, _, names in os.walk(directory):
        for name in names:
            if name == remote.STATE:
                continue
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory).replace(os.sep, "/")] = f.read()
    return out


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def test_urls_and_bad_schemes_give_clear_errors():
    assert remote.is_url("gs://b/runs") and remote.is_url("ram://x")
    assert not remote.is_url("runs/quick") and not remote.is_url("/abs/path") and not remote.is_url(None)
    assert {"gs", "ram"} <= set(remote.registered_schemes())
    with pytest.raises(ValueError, match=r"--output_dir zz://b/x: TensorFlow has no file system for the scheme 'zz'.*gs://"):
        remote.check_url("zz://b/x")
    with pytest.raises(ValueError, match=r"s3:// and hdfs:// need `pip install tensorflow-io`"):
        remote.check_url("s3://b/x")
    with pytest.raises(ValueError, match="names no bucket"):
        remote.check_url("gs://")
    # The entry point says the same before anything is written.
    cli.parse(train.FLAGS, ["train", "--output_dir=zz://b/x"])
    with pytest.raises(app.UsageError, match="no file system for the scheme 'zz'"):
        train.main(["train"])


def test_data_dir_may_be_a_bucket_and_a_missing_one_is_named(monkeypatch):
    # No network in tests: Cloud Storage's answer to "is it a directory?" is faked.
    buckets = {"gs://b/tfds": True, "gs://b/none": False}
    monkeypatch.setattr(remote.tf.io.gfile, "isdir", lambda path: buckets[path])
    remote.check_data_dir("gs://b/tfds")  # Accepted: TFDS reads buckets itself.
    with pytest.raises(ValueError, match="--data_dir gs://b/none is not a readable directory"):
        remote.check_data_dir("gs://b/none")
    with pytest.raises(ValueError, match="--data_dir /no/such/dir is not a readable directory"):
        remote.check_data_dir("/no/such/dir")
    # TFDS opens no ram:// (tf.io.gfile does): refused before any loading.
    with pytest.raises(ValueError, match=r"--data_dir ram://tfds: TensorFlow Datasets reads .*gs://.* not ram://"):
        remote.check_data_dir("ram://tfds")
    cli.parse(train.FLAGS, ["train", "--data_dir=gs://b/tfds"])
    train.check_config(train.config_from_flags())
    train.FLAGS.unparse_flags()
    cli.parse(train.FLAGS, ["train", "--data_dir=gs://b/none"])
    with pytest.raises(app.UsageError, match="--data_dir gs://b/none is not a readable directory"):
        train.check_config(train.config_from_flags())


def test_default_mirror_is_per_url_under_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    a, b = remote.default_local_dir("gs://b/run"), remote.default_local_dir("gs://b/other")
    assert a.startswith(str(tmp_path / "nas_tf" / "mirrors")) and a != b
    assert remote.default_local_dir("gs://b/run/") == a  # A trailing slash names the same URL.
    assert remote.mirror_for("runs/x").url is None and remote.mirror_for("runs/x").local == "runs/x"


def test_sync_uploads_changes_removes_deletions_and_a_failure_loses_nothing(tmp_path, monkeypatch):
    url, local = _bucket(), str(tmp_path / "mirror")
    mirror = remote.Mirror(url, local, verbose=0)
    mirror.restore()  # Nothing there yet.
    _write(os.path.join(local, "history.jsonl"), b'{"a": 1}\n')
    _write(os.path.join(local, "search", "trial_0", "model.keras"), b"m0" * 1000)
    _write(os.path.join(local, ".tmp_x_config.json"), b"half-written")  # durable's temporary: skipped.
    assert mirror.sync() == (2, 0)
    assert _remote_tree(url) == {"history.jsonl": b'{"a": 1}\n', "search/trial_0/model.keras": b"m0" * 1000}
    assert mirror.sync() == (0, 0)  # Nothing changed: nothing uploaded.

    # A child later: the history grows, a better model replaces the old one.
    os.remove(os.path.join(local, ".tmp_x_config.json"))
    _write(os.path.join(local, "history.jsonl"), b'{"a": 1}\n{"b": 2}\n')
    _write(os.path.join(local, "search", "trial_1", "model.keras"), b"m1" * 1000)
    os.remove(os.path.join(local, "search", "trial_0", "model.keras"))
    before = _remote_tree(url)
    # The network fails at the second upload of this sync (history.jsonl went up, the model not).
    monkeypatch.setenv(remote.SYNC_FAULT_ENV, f"upload:{remote._passes['upload'] + 2}")
    with pytest.raises(remote.SyncError, match=r"injected failure.*Nothing is lost: every file is in .*mirror"):
        mirror.sync()
    monkeypatch.delenv(remote.SYNC_FAULT_ENV)
    expected = {"history.jsonl": b'{"a": 1}\n{"b": 2}\n', "search/trial_1/model.keras": b"m1" * 1000}
    assert _local_tree(local) == expected  # The mirror is untouched.
    partial = _remote_tree(url)
    assert partial["history.jsonl"] == expected["history.jsonl"]  # Whole files only, old or new.
    assert partial["search/trial_0/model.keras"] == before["search/trial_0/model.keras"]
    assert "search/trial_1/model.keras" not in partial
    assert not [k for k in partial if remote.UPLOAD_PREFIX in k]  # No upload left half-way.

    # The next sync catches up: only what is missing goes up, the removed model goes away.
    assert mirror.sync() == (1, 1)
    assert _remote_tree(url) == expected

    # A fresh machine restores everything; a mirror's own newer file is kept over the bucket's.
    fresh = remote.Mirror(url, str(tmp_path / "fresh"), verbose=0)
    assert fresh.restore() == 2 and _local_tree(fresh.local) == expected
    assert fresh.sync() == (0, 0)  # What it downloaded is known to be in the bucket.
    _write(os.path.join(local, "history.jsonl"), b"newer, not yet synced\n")
    assert remote.Mirror(url, local, verbose=0).restore() == 0
    assert _local_tree(local)["history.jsonl"] == b"newer, not yet synced\n"


def _manifest(url):
    with tf.io.gfile.GFile(f"{url}/{remote.MANIFEST}") as f:
        return json.loads(f.read())


def test_a_stale_mirror_never_wins_over_a_newer_bucket(tmp_path, capsys):
    url = _bucket()
    # Machine A runs and syncs.
    a = remote.Mirror(url, str(tmp_path / "a"), verbose=0)
    a.restore()
    _write(os.path.join(a.local, "history.jsonl"), b"A0\n")
    _write(os.path.join(a.local, "search", "oracle.json"), b"A")
    assert a.sync() == (2, 0) and _manifest(url)["generation"] == 1
    # Machine B resumes from the bucket, goes further and syncs.
    b = remote.Mirror(url, str(tmp_path / "b"), verbose=0)
    assert b.restore() == 2
    _write(os.path.join(b.local, "history.jsonl"), b"A0\nB1\n")
    _write(os.path.join(b.local, "search", "oracle.json"), b"B")
    assert b.sync() == (2, 0) and _manifest(url)["generation"] == 2
    newer = _remote_tree(url)

    # A, still running, cannot sync over B's work: refused, nothing uploaded.
    _write(os.path.join(a.local, "history.jsonl"), b"A0\nA1\n")
    with pytest.raises(remote.StaleMirrorError, match=r"generation 2.*last synced \(generation 1\).*nothing was uploaded"):
        a.sync()
    with pytest.raises(remote.StaleMirrorError):
        a.sync_or_warn()  # Not a warning: going on would waste the run.
    assert _remote_tree(url) == newer

    # A comes back (a new process on its old mirror): the bucket wins, A's files are kept aside.
    capsys.readouterr()
    again = remote.Mirror(url, a.local, verbose=0)
    assert again.restore() == 2
    assert _local_tree(a.local) == newer
    aside = str(tmp_path / "a") + ".stale-1"
    assert _local_tree(aside) == {"history.jsonl": b"A0\nA1\n", "search/oracle.json": b"A"}
    err = capsys.readouterr().err
    assert "the bucket wins" in err and aside in err
    # From here A is the newest mirror: it syncs, and B, stale now, is refused in turn.
    _write(os.path.join(a.local, "history.jsonl"), b"A0\nB1\nA2\n")
    assert again.sync() == (1, 0) and _manifest(url)["generation"] == 3
    with pytest.raises(remote.StaleMirrorError):
        b.sync()


def test_a_bucket_name_outside_the_mirror_is_refused(tmp_path, monkeypatch):
    url = _bucket()
    mirror = remote.Mirror(url, str(tmp_path / "mirror"), verbose=0)
    _write(os.path.join(mirror.local, "history.jsonl"), b"x\n")
    mirror.sync()
    # Listings that climb out of the mirror (tmp_path/fresh) into tmp_path, or name an absolute path.
    listings = ((url, "../escaped"), (url + "/search", "../../escaped"), (url + "/" + str(tmp_path), "escaped"))
    monkeypatch.setattr(remote.tf.io.gfile, "copy", lambda src, dst, overwrite=False: open(dst, "wb").write(b"!"))
    for root, name in listings:
        monkeypatch.setattr(remote.tf.io.gfile, "walk", lambda _, r=root, n=name: [(r, [], [n])])
        with pytest.raises(remote.SyncError, match="would be written outside the mirror"):
            remote.Mirror(url, str(tmp_path / "fresh"), verbose=0).restore()
        assert not (tmp_path / "escaped").exists()
    assert not os.listdir(tmp_path / "fresh")


def test_a_mirror_and_bucket_of_before_generations_resume_as_before(tmp_path):
    url = _bucket()
    mirror = remote.Mirror(url, str(tmp_path / "mirror"), verbose=0)
    _write(os.path.join(mirror.local, "history.jsonl"), b"old\n")
    mirror.sync()
    tf.io.gfile.remove(f"{url}/{remote.MANIFEST}")  # A bucket synced by an older nas_tf...
    state = json.loads(open(os.path.join(mirror.local, remote.STATE)).read())
    with open(os.path.join(mirror.local, remote.STATE), "w") as f:  # ...and its mirror's record.
        json.dump({"url": state["url"], "files": state["files"]}, f)
    _write(os.path.join(mirror.local, "history.jsonl"), b"old\nnewer\n")
    again = remote.Mirror(url, mirror.local, verbose=0)
    assert again.restore() == 0 and _local_tree(mirror.local) == {"history.jsonl": b"old\nnewer\n"}
    assert again.sync() == (1, 0) and _manifest(url)["generation"] == 1


def test_search_on_a_url_finishes_syncs_and_resumes_on_a_fresh_mirror(tmp_path, monkeypatch, capsys):
    url = _bucket()
    log = tmp_path / "trainings.log"
    monkeypatch.setenv(tasks.TRAINING_LOG_ENV, str(log))
    # The sync after the first child fails (its second upload): a warning, and the search goes on.
    monkeypatch.setenv(remote.SYNC_FAULT_ENV, f"upload:{remote._passes['upload'] + 2}")
    first = str(tmp_path / "vm1")
    cli.parse(train.FLAGS, ["train", *_FAST, f"--output_dir={url}", f"--local_dir={first}",
                            "--search_max_trials=1"])  # fmt: skip
    assert train.main(["train"]) == 0
    assert "nas_tf: warning: Could not sync" in capsys.readouterr().err
    monkeypatch.delenv(remote.SYNC_FAULT_ENV)
    bucket = _remote_tree(url)
    assert bucket == _local_tree(first)  # The final sync caught up with everything.
    history = [json.loads(line) for line in bucket["history.jsonl"].decode().splitlines()]
    assert [r["trial_id"] for r in history] == ["0"]
    assert {"config.json", "best_architecture.json", "best_model.keras", "search/oracle.json"} <= set(bucket)
    assert json.loads(bucket["best_architecture.json"]) == history[0]["architecture"]
    assert len(log.read_text().splitlines()) == 1

    # A new VM (a fresh mirror) with a larger budget resumes from the bucket: one more child only.
    train.FLAGS.unparse_flags()
    second = str(tmp_path / "vm2")
    cli.parse(train.FLAGS, ["train", *_FAST, f"--output_dir={url}", f"--local_dir={second}",
                            "--search_max_trials=2"])  # fmt: skip
    assert train.main(["train"]) == 0
    assert len(log.read_text().splitlines()) == 2
    records = search.read_history(second)
    assert [r["trial_id"] for r in records] == ["0", "1"]
    assert [r for r in records if r["trial_id"] != "1"] == history  # Not retrained.
    assert _remote_tree(url) == _local_tree(second)


def test_launch_mirrors_a_url_only_for_its_own_processes():
    cli.parse(launch.FLAGS, ["launch", "--role=workers", "--port=8000"])
    with pytest.raises(app.UsageError, match="a URL works with --role=all only"):
        launch.main(["launch"], [*TINY_FLAGS, f"--output_dir={_bucket()}"])


def test_a_url_output_dir_refuses_a_hand_started_chief_or_worker(monkeypatch, tmp_path):
    monkeypatch.setattr(search, "role", lambda: "worker")
    cli.parse(train.FLAGS, ["train", f"--output_dir={_bucket()}"])
    with pytest.raises(app.UsageError, match="a chief or worker started by hand needs a directory"):
        train.main(["train"])


def test_train_lm_writes_its_outputs_to_a_url(tmp_path):
    url = _bucket()
    cli.parse(train_lm.FLAGS, ["train_lm", "--cell=lstm", "--data_name=text_char", "--units=4",
                               "--epochs=1", "--batch_size=4", "--bptt_steps=5", "--eval_batch_size=2",
                               "--max_train_batches=2", "--max_eval_batches=1", "--verbose=0",
                               f"--output_dir={url}", f"--local_dir={tmp_path / 'mirror'}"])  # fmt: skip
    assert train_lm.main(["train_lm"]) == 0
    bucket = _remote_tree(url)
    assert sorted(bucket) == ["config.json", "model.keras", "results.json"]
    assert json.loads(bucket["config.json"])["output_dir"] == url  # What the user asked for.
    assert bucket == _local_tree(str(tmp_path / "mirror"))


def test_retrain_and_train_lm_refuse_bad_schemes_and_missing_data_dirs():
    cli.parse(train_lm.FLAGS, ["train_lm", "--cell=lstm", "--output_dir=zz://b/x"])
    with pytest.raises(app.UsageError, match="--output_dir zz://b/x: TensorFlow has no file system"):
        train_lm.main(["train_lm"])
    train_lm.FLAGS.unparse_flags()
    cli.parse(train_lm.FLAGS, ["train_lm", "--cell=lstm", "--data_dir=/no/tfds"])
    with pytest.raises(app.UsageError, match="--data_dir /no/tfds is not a readable directory"):
        train_lm.main(["train_lm"])
    cli.parse(retrain.FLAGS, ["retrain", "--architecture=a.json", "--output_dir=zz://b/x"])
    with pytest.raises(app.UsageError, match="--output_dir zz://b/x: TensorFlow has no file system"):
        retrain.main(["retrain"])


@pytest.mark.slow
def test_launch_runs_chief_and_worker_on_a_mirror_it_syncs_to_the_url(tmp_path, monkeypatch):
    url, local = _bucket(), str(tmp_path / "mirror")
    log = tmp_path / "trainings.log"
    monkeypatch.setenv(tasks.TRAINING_LOG_ENV, str(log))
    monkeypatch.setenv("NAS_TF_CHIEF_TIMEOUT", "300")
    cli.parse(launch.FLAGS, ["launch", "--workers=1", "--max_restarts=0", "--sync_every=1"])
    status = launch.main(["launch"], [*_FAST, "--search_max_trials=2", f"--output_dir={url}",
                                      f"--local_dir={local}"])  # fmt: skip
    assert status == 0
    bucket = _remote_tree(url)
    assert bucket == _local_tree(local)  # The chief's merge and export reached the URL.
    history = [json.loads(line) for line in bucket["history.jsonl"].decode().splitlines()]
    assert sorted(r["trial_id"] for r in history) == ["0", "1"]
    assert "history.worker0.jsonl" in bucket and "best_model.keras" in bucket
    assert len(log.read_text().splitlines()) == 2


def test_a_failed_manifest_write_is_retried_by_the_next_sync(tmp_path, monkeypatch):
    url = _bucket()
    mirror = remote.Mirror(url, str(tmp_path / "mirror"), verbose=0)
    _write(os.path.join(mirror.local, "history.jsonl"), b"x\n")
    monkeypatch.setenv(remote.SYNC_FAULT_ENV, f"manifest:{remote._passes['manifest'] + 1}")
    with pytest.raises(remote.SyncError, match="injected failure"):
        mirror.sync()
    monkeypatch.delenv(remote.SYNC_FAULT_ENV)
    assert _remote_tree(url) == {"history.jsonl": b"x\n"}  # Uploaded, not yet counted.
    assert not tf.io.gfile.exists(f"{url}/{remote.MANIFEST}")
    assert mirror.sync() == (0, 0) and _manifest(url)["generation"] == 1
