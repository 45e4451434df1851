"""Output directories in a bucket: a local mirror synced through `tf.io.gfile`.

Cloud TPU users keep everything in Cloud Storage (`gs://...`). nas_tf's
outputs cannot be written there directly: Keras Tuner writes its project with
local file calls, and `nas_tf.durable` relies on what object stores lack
(appends to `history.jsonl`, atomic renames, fsync). So an `--output_dir` that
is a URL (`scheme://...`, any scheme `tf.io.gfile` has; `ram://` in tests) is
worked on through a local mirror directory:

1. at start, the mirror is restored from the URL (files it lacks are
   downloaded), so a search resumed on a fresh VM continues where the bucket
   left it;
2. the program runs in the mirror exactly as in a local `--output_dir`
   (every local guarantee of `nas_tf.durable` holds there);
3. the mirror is synced up after every finished child and at the end, and
   after an error too: files changed since the last sync are uploaded, files
   removed locally (a child's model that is no longer the best) are removed
   from the URL.

Guarantees:

* each file is uploaded whole to a temporary name beside its target and then
  renamed over it, so a reader of the bucket sees an old or a new version of
  a file, never a torn one (on Cloud Storage a rename is a server-side copy
  plus a delete; the copy creates the object at once);
* the bucket is a consistent set of files only at sync boundaries: during a
  sync some files may already be new and others still old (the history is
  uploaded before the models it mentions only by chance), and a reader that
  wants one coherent snapshot reads after the program ends;
* a failed sync (network, permissions, a kill) loses nothing: the local
  mirror is never changed by a sync, what was uploaded is recorded only once
  it is in place, and the next sync (after the next child, at the end, or
  when the same command runs again on the same machine) uploads what is
  missing. Failures after a child are reported as warnings and the program
  goes on; a failure of the final sync is an error naming the mirror;
* a stale mirror never wins over a newer bucket: every sync that changes
  the bucket bumps a generation counter in the bucket's
  `.nas_tf_manifest.json` and in the mirror's record. A restore keeps the
  mirror's own files over the bucket's only while the bucket's generation is
  the mirror's (nobody else synced since): if the bucket is newer (the search
  was resumed on another machine meanwhile), the mirror's files are moved
  aside to `<mirror>.stale-<generation>` with a warning and the bucket is
  downloaded. A sync to a bucket that is newer than the mirror raises
  `StaleMirrorError` and uploads nothing;
* one writer at a time: two machines syncing one URL at the same moment are
  not kept apart (an object store has no lock); the generation check catches
  the second one's next sync. On one machine the mirror is locked
  (`nas_tf.dirlock`) by whoever works in it;
* a name in the bucket's listing that would leave the mirror (`..`, an
  absolute path) is refused with a `SyncError`.

Where the mirror lives: `local_dir` if given (the `--local_dir` flag), else
`$XDG_CACHE_HOME/nas_tf/mirrors/<hash of the URL>` (`~/.cache/...` by
default). What it last uploaded, and the generation it last synced, is kept
in its `.nas_tf_sync.json`.

Fault injection (tests): `NAS_TF_SYNC_FAULT=upload:n` makes the n-th upload of
the process fail with an `OSError`, as a network error would.
"""

import collections
import contextlib
import datetime
import hashlib
import json
import os
import re
import shutil
import sys
import uuid
from typing import Dict, List, Optional, Tuple

import tensorflow as tf

from nas_tf import dirlock
from nas_tf import durable

STATE = ".nas_tf_sync.json"
MANIFEST = ".nas_tf_manifest.json"  # In the bucket: its generation and who synced it last.
UPLOAD_PREFIX = ".nas_tf_upload."
SYNC_FAULT_ENV = "NAS_TF_SYNC_FAULT"
# The URL schemes TensorFlow Datasets opens a data directory on (etils.epath's
# prefixes; it has no ram://, so tests cannot stand a bucket in for TFDS data).
TFDS_SCHEMES = ("gs", "s3", "az", "hf")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_passes = collections.Counter()


class SyncError(RuntimeError):
    """The mirror could not be restored from, or synced to, its URL (the message says why)."""


class StaleMirrorError(SyncError):
    """The bucket was synced by another mirror after this one last synced: uploading would lose that work."""


def is_url(path: Optional[str]) -> bool:
    """Whether `path` is a URL (`scheme://...`) rather than a local path."""
    return bool(path) and bool(_URL.match(path))


def registered_schemes() -> List[str]:
    """The URL schemes `tf.io.gfile` can open in this process (gs, ram, ... )."""
    from tensorflow.python.lib.io import file_io

    return sorted(s for s in file_io.get_registered_schemes() if s)


def check_url(url: str, flag: str = "--output_dir") -> None:
    """Raises ValueError unless TensorFlow has a file system for `url`'s scheme.

    Checked without touching the network: a bucket that does not exist or
    cannot be read fails at the first restore or sync, with the storage's error.
    """
    match = _URL.match(url)
    if not match:
        raise ValueError(f"{flag} {url!r} is not a URL (scheme://...).")
    scheme = match.group(1)
    known = registered_schemes()
    if scheme not in known:
        extra = " (s3:// and hdfs:// need `pip install tensorflow-io`)" if scheme in ("s3", "hdfs") else ""
        raise ValueError(
            f"{flag} {url}: TensorFlow has no file system for the scheme {scheme!r}{extra}; "
            f"it can write to: {', '.join(s + '://' for s in known)}, or a local path."
        )
    if len(url) == len(match.group(0)) or not url[len(match.group(0)):].strip("/"):
        raise ValueError(f"{flag} {url}: the URL names no bucket or directory.")


def check_data_dir(path: Optional[str], flag: str = "--data_dir") -> None:
    """Raises ValueError unless `path` (local or a URL) is a readable directory.

    TensorFlow Datasets reads `gs://` data directories itself; a URL must have
    a scheme it opens (`TFDS_SCHEMES`) and is checked through `tf.io.gfile`
    (on Cloud Storage: a metadata request).
    """
    if path is None:
        return
    if is_url(path):
        scheme = _URL.match(path).group(1)
        if scheme not in TFDS_SCHEMES:
            raise ValueError(
                f"{flag} {path}: TensorFlow Datasets reads data directories on "
                f"{', '.join(s + '://' for s in TFDS_SCHEMES)} or local paths, not {scheme}://."
            )
        check_url(path, flag)
        try:
            found = tf.io.gfile.isdir(path)
        except tf.errors.OpError as e:
            raise ValueError(f"{flag} {path} cannot be read: {e.message}") from None
    else:
        found = os.path.isdir(path)
    if not found:
        raise ValueError(f"{flag} {path} is not a readable directory.")


def default_local_dir(url: str) -> str:
    """Where the mirror of `url` lives unless --local_dir says otherwise."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    digest = hashlib.sha256(url.rstrip("/").encode("utf-8")).hexdigest()[:16]
    return os.path.join(cache, "nas_tf", "mirrors", digest)


def _fault(name: str) -> None:
    """Raises OSError at the n-th pass of `name` when `NAS_TF_SYNC_FAULT` holds `name:n`."""
    _passes[name] += 1
    spec = os.environ.get(SYNC_FAULT_ENV)
    if not spec:
        return
    for item in spec.split(","):
        point, sep, count = item.strip().rpartition(":")
        if not sep or not point or not count.isdigit() or int(count) < 1:
            raise ValueError(f"{SYNC_FAULT_ENV}={spec!r}: each entry must be 'point:n' with n >= 1.")
        if point == name and _passes[name] == int(count):
            raise OSError(f"injected failure ({SYNC_FAULT_ENV}={spec})")


def _signature(path: str) -> List[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _is_temporary(name: str) -> bool:
    # durable's temporary files, our uploads in flight, our own records and the mirror's lock.
    return (name.startswith(".tmp_") or name.startswith(UPLOAD_PREFIX) or name in (STATE, MANIFEST)
            or dirlock.is_lock_file(name))  # fmt: skip


def _check_relative(rel: str, url: str) -> str:
    """`rel` if it names a file inside the mirror; SyncError for `..` or an absolute path."""
    parts = rel.replace("\\", "/").split("/")
    if not rel or os.path.isabs(rel) or any(p in ("", ".", "..") for p in parts):
        raise SyncError(
            f"{url} lists an object named {rel!r}, which would be written outside the mirror "
            "(an absolute path, '..' or an empty part); nothing was restored. Remove or rename "
            "that object in the bucket."
        )
    return rel


class Mirror:
    """A local directory that stands in for a URL (see the module doc).

    Args:
      url: the output directory's URL, or None for a local output directory
        (then `local` is it, and `restore` and `sync` do nothing).
      local: the mirror directory.
      verbose: print what a restore did.

    Attributes:
      uploads, deletions: files this object has uploaded and removed remotely.
    """

    def __init__(self, url: Optional[str], local: str, verbose: int = 1):
        self.url = url.rstrip("/") if url else None
        self.local = local
        self.verbose = verbose
        self.uploads = 0
        self.deletions = 0
        self._state_path = os.path.join(local, STATE)
        self.generation = 0  # The bucket generation this mirror last restored or synced.
        self._pending = False  # Files went up that no manifest counts yet.
        self.lock: Optional[dirlock.DirLock] = None  # Set by `mirrored`.

    def _remote(self, rel: str) -> str:
        return self.url + "/" + rel.replace(os.sep, "/")

    def _load_state(self) -> Dict[str, List[int]]:
        """Relative path -> local [size, mtime_ns] of the version the URL holds.

        Also sets `generation` and `_pending` (files went up since the last
        manifest) from the record; a record of before generations reads as 0.
        """
        self.generation, self._pending = 0, False
        try:
            with open(self._state_path, encoding="utf-8") as f:
                state = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # Unreadable: everything is uploaded again (safe, only slower).
        if not isinstance(state, dict) or state.get("url") != self.url:
            return {}  # Another URL's record (a --local_dir reused): trust nothing.
        generation = state.get("generation", 0)
        self.generation = generation if isinstance(generation, int) and generation > 0 else 0
        self._pending = state.get("pending") is True
        files = state.get("files")
        return dict(files) if isinstance(files, dict) else {}

    def _save_state(self, files: Dict[str, List[int]]) -> None:
        record = {"url": self.url, "files": files, "generation": self.generation, "pending": self._pending}
        durable.atomic_write_text(self._state_path, json.dumps(record, sort_keys=True) + "\n")

    def _read_manifest(self) -> dict:
        """The bucket's manifest ({} when it has none: a new bucket, or one synced before generations)."""
        path = self._remote(MANIFEST)
        if not tf.io.gfile.exists(path):
            return {}
        with tf.io.gfile.GFile(path, "r") as f:
            text = f.read()
        try:
            manifest = json.loads(text)
            generation = manifest["generation"]
            if not isinstance(generation, int) or generation < 0:
                raise ValueError(f"generation {generation!r}")
        except (ValueError, KeyError, TypeError) as e:
            raise SyncError(
                f"{path} is unreadable ({e}), so whether the bucket is newer than {self.local} "
                "is unknown; nothing was changed. Delete it only if no other machine works on "
                "this URL."
            ) from None
        return manifest

    def _write_manifest(self, generation: int) -> None:
        """Writes the bucket's manifest whole (temporary name, then rename)."""
        _fault("manifest")
        record = {
            "generation": generation,
            "host": dirlock.host(),
            "mirror": os.path.abspath(self.local),
            "synced": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        tmp = self._remote(f"{UPLOAD_PREFIX}{uuid.uuid4().hex}.{MANIFEST}")
        tf.io.gfile.makedirs(self.url)
        with tf.io.gfile.GFile(tmp, "w") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        tf.io.gfile.rename(tmp, self._remote(MANIFEST), overwrite=True)

    def _newer_bucket(self, manifest: dict) -> str:
        """Why the bucket is newer than the mirror ("" when it is not)."""
        generation = manifest.get("generation", 0)
        if generation <= self.generation:
            return ""
        return (f"{self.url} was synced by {manifest.get('mirror', '?')} on host "
                f"{manifest.get('host', '?')} at {manifest.get('synced', '?')} (generation "
                f"{generation}) after {self.local} last synced (generation {self.generation})")  # fmt: skip

    def _set_aside(self) -> Optional[str]:
        """Moves the mirror's files to a sibling `<mirror>.stale-<generation>`; returns it (None if none)."""
        names = [n for n in os.listdir(self.local) if not _is_temporary(n)]
        if not names:
            return None
        base = f"{os.path.abspath(self.local).rstrip(os.sep)}.stale-{self.generation}"
        aside, n = base, 1
        while os.path.exists(aside):
            aside, n = f"{base}.{n}", n + 1
        os.makedirs(aside)
        for name in names:
            os.rename(os.path.join(self.local, name), os.path.join(aside, name))
        durable.fsync_directory(self.local)
        return aside

    def _local_files(self) -> Dict[str, List[int]]:
        out = {}
        for root, dirs, names in os.walk(self.local):
            for name in names:
                if _is_temporary(name):
                    continue
                path = os.path.join(root, name)
                try:
                    out[os.path.relpath(path, self.local)] = _signature(path)
                except FileNotFoundError:
                    continue  # Removed while we walked: it is not there.
        return out

    def _remote_files(self) -> List[str]:
        if not tf.io.gfile.exists(self.url):
            return []
        out = []
        for root, _, names in tf.io.gfile.walk(self.url):
            for name in names:
                if _is_temporary(name):
                    continue
                full = root.rstrip("/") + "/" + name
                out.append(_check_relative(full[len(self.url) + 1:], self.url).replace("/", os.sep))
        return out

    def restore(self) -> int:
        """Downloads the URL's files the mirror lacks; returns how many.

        While the bucket's generation is the mirror's, files the mirror has
        are kept (it is at least as new as the URL), and so are files it
        removed since its last sync (the next sync removes them from the URL
        too). When the bucket is newer, the mirror's files are moved aside
        (with a warning) and the bucket's are downloaded: the bucket wins.

        Raises:
          SyncError: when the URL cannot be listed or read, or lists a name
            outside the mirror.
        """
        os.makedirs(self.local, exist_ok=True)
        if self.url is None:
            return 0
        state = self._load_state()
        count = 0
        changed = False
        try:
            manifest = self._read_manifest()
            listed = self._remote_files()  # Checked whole before anything changes here.
            newer = self._newer_bucket(manifest)
            if newer:
                aside = self._set_aside()
                if aside is not None:
                    print(f"nas_tf: warning: {newer}: the bucket wins. This mirror's files were "
                          f"moved to {aside}; resuming from the bucket.", file=sys.stderr, flush=True)  # fmt: skip
                state, self._pending = {}, False
                self.generation = manifest["generation"]
                changed = True
            for rel in listed:
                path = os.path.join(self.local, rel)
                if os.path.exists(path) or rel in state:
                    continue
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with durable.atomic_path(path) as tmp:
                    tf.io.gfile.copy(self._remote(rel), tmp, overwrite=True)
                state[rel] = _signature(path)
                count += 1
        except (tf.errors.OpError, OSError) as e:
            raise SyncError(
                f"Could not restore {self.local} from {self.url}: {_message(e)}. "
                "Check that the URL is readable from this machine; nothing was changed there."
            ) from e
        finally:
            if count or changed:
                self._save_state(state)
        if self.verbose and count:
            print(f"nas_tf: restored {count} files from {self.url} into {self.local}", flush=True)
        return count

    def sync(self) -> Tuple[int, int]:
        """Uploads changed files and removes deleted ones; returns (uploaded, removed).

        Raises:
          SyncError: when a file could not be uploaded or removed. What was
            done before it is recorded; the next sync does the rest.
        """
        if self.url is None:
            return 0, 0
        state = self._load_state()
        local = self._local_files()
        uploaded = removed = 0
        bumped = False
        try:
            newer = self._newer_bucket(self._read_manifest())
            if newer:
                raise StaleMirrorError(
                    f"{newer}; uploading {self.local} would overwrite that work, so nothing was "
                    "uploaded. Stop this run; running the same command again restores the "
                    "bucket's newer state (this mirror's files are kept aside)."
                )
            for rel, signature in sorted(local.items()):
                if state.get(rel) == signature:
                    continue
                self._upload(rel)
                state[rel] = signature  # The version measured before it was read.
                uploaded += 1
                self._pending = True  # The bucket is ahead of its manifest until it is written.
            for rel in sorted(set(state) - set(local)):
                remote = self._remote(rel)
                if tf.io.gfile.exists(remote):
                    tf.io.gfile.remove(remote)
                del state[rel]
                removed += 1
                self._pending = True
            if self._pending:
                self._write_manifest(self.generation + 1)
                self.generation += 1
                self._pending = False
                bumped = True
        except (tf.errors.OpError, OSError) as e:
            raise SyncError(
                f"Could not sync {self.local} to {self.url}: {_message(e)}. Nothing is lost: "
                f"every file is in {self.local}, and the next sync (after the next child, at "
                "the end, or when the same command runs again on this machine) uploads what "
                "is missing."
            ) from e
        finally:
            if uploaded or removed or bumped:
                self._save_state(state)
            self.uploads += uploaded
            self.deletions += removed
        return uploaded, removed

    def clear(self) -> None:
        """Deletes everything in the mirror (`--overwrite`); the next sync deletes it at the URL too."""
        for name in os.listdir(self.local):
            if name == STATE or dirlock.is_lock_file(name):
                continue  # What the URL holds (the next sync removes it there), and the held lock.
            path = os.path.join(self.local, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)

    def sync_or_warn(self) -> bool:
        """`sync`, reporting a failure on stderr instead of raising; True if it succeeded.

        Raises:
          StaleMirrorError: the bucket is newer: going on would waste the run's work.
        """
        try:
            self.sync()
            return True
        except StaleMirrorError:
            raise
        except SyncError as e:
            print(f"nas_tf: warning: {e}", file=sys.stderr, flush=True)
            return False

    def _upload(self, rel: str) -> None:
        """Uploads one file whole to a temporary name, then renames it over its target."""
        _fault("upload")
        target = self._remote(rel)
        parent, name = target.rsplit("/", 1)
        tmp = f"{parent}/{UPLOAD_PREFIX}{uuid.uuid4().hex}.{name}"
        tf.io.gfile.makedirs(parent)
        try:
            tf.io.gfile.copy(os.path.join(self.local, rel), tmp, overwrite=True)
            tf.io.gfile.rename(tmp, target, overwrite=True)
        except BaseException:
            with contextlib.suppress(tf.errors.OpError):
                if tf.io.gfile.exists(tmp):
                    tf.io.gfile.remove(tmp)
            raise


def _message(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error)
    return f"{type(error).__name__}: {text}"


def mirror_for(output_dir: str, local_dir: Optional[str] = None, verbose: int = 1) -> Mirror:
    """The `Mirror` of an output directory: itself when local, a mirror when a URL.

    Raises:
      ValueError: for a URL whose scheme TensorFlow cannot open.
    """
    if not is_url(output_dir):
        return Mirror(None, output_dir, verbose)
    check_url(output_dir)
    return Mirror(output_dir, local_dir or default_local_dir(output_dir), verbose)


@contextlib.contextmanager
def mirrored(output_dir: str, local_dir: Optional[str] = None, verbose: int = 1, lock: bool = True):
    """Yields the `Mirror` of `output_dir`, restored; syncs it when the block ends.

    The final sync runs after an error too (the finished work reaches the
    bucket); its own failure is then only reported, so that the first error
    is the one raised.

    Args:
      output_dir, local_dir, verbose: as `mirror_for`.
      lock: hold the directory's lock (`nas_tf.dirlock`; the mirror's for a
        URL) from before the restore until the final sync ends, as
        `mirror.lock`. False for a Keras Tuner worker, which works in its
        chief's directory.

    Raises:
      ValueError: for a URL whose scheme TensorFlow cannot open.
      SyncError: when the restore, or the final sync after success, fails.
      nas_tf.dirlock.LockedError: another process holds the directory.
    """
    mirror = mirror_for(output_dir, local_dir, verbose)
    with contextlib.ExitStack() as stack:
        if lock:
            mirror.lock = stack.enter_context(dirlock.acquire(mirror.local))
        mirror.restore()
        if mirror.url is not None and verbose:
            print(f"nas_tf: {mirror.url} is worked on in {mirror.local} and synced after every "
                  "child and at the end", flush=True)  # fmt: skip
        try:
            yield mirror
        except BaseException:
            try:
                mirror.sync_or_warn()
            except SyncError as e:  # A stale mirror: reported; the first error is raised.
                print(f"nas_tf: warning: {e}", file=sys.stderr, flush=True)
            raise
        mirror.sync()
