"""Every use of Keras Tuner's internals, in one place, for the tested versions only.

nas_tf's oracle relies on Keras Tuner attributes that are not public API
(the per-trial containers an oracle keeps, its lock tables, the chief's
role). They are read and patched here and nowhere else, and the installed
version is checked once, at import, against the range the tests pass with
(`setup.py` bounds `keras-tuner` the same way). `tests/test_kt_compat.py`
pins each internal this module relies on.
"""

import collections
import contextlib
import copy
import io
import os
import threading
import weakref

import keras_tuner
from keras_tuner.engine import trial as trial_module
from keras_tuner.src import utils as kt_utils
from keras_tuner.src.distribute import utils as dist_utils
from keras_tuner.src.engine import oracle as kt_oracle

from nas_tf import journal

# The Keras Tuner versions the tests pass with (both ends included).
TESTED_VERSIONS = ((1, 4, 7), (1, 4, 8))
# Set to 1 to try an untested Keras Tuner version at your own risk.
ALLOW_UNTESTED = "NAS_TF_ALLOW_UNTESTED_KERAS_TUNER"

TrialStatus = trial_module.TrialStatus
Trial = trial_module.Trial


def _version(text: str) -> tuple:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts + [0] * (3 - len(parts)))


def check_version(version: str = keras_tuner.__version__) -> None:
    """Raises ImportError for a Keras Tuner outside `TESTED_VERSIONS`."""
    low, high = TESTED_VERSIONS
    if low <= _version(version) <= high or os.environ.get(ALLOW_UNTESTED) == "1":
        return
    raise ImportError(
        f"nas_tf supports keras-tuner {'.'.join(map(str, low))} to "
        f"{'.'.join(map(str, high))}; {version} is installed. Install a supported one "
        f"(pip install 'keras-tuner>={'.'.join(map(str, low))},<={'.'.join(map(str, high))}') "
        f"or set {ALLOW_UNTESTED}=1 to try it anyway."
    )


class _WeakDefaultDict(weakref.WeakKeyDictionary):
    """A `defaultdict` whose keys do not keep their objects alive."""

    def __init__(self, factory):
        super().__init__()
        self._factory = factory

    def __getitem__(self, key):
        try:
            return super().__getitem__(key)
        except KeyError:
            value = self[key] = self._factory()
            return value


def let_oracles_be_freed() -> None:
    """Gives `@synchronized`'s per-oracle lock tables weak keys.

    Keras Tuner keys a lock per oracle in module-level defaultdicts, which
    keep every oracle ever used alive (with its trials and the controller's
    TensorFlow graphs). Weak keys give the same locking without the leak.
    """
    for name, factory in (("LOCKS", threading.Lock), ("THREADS", lambda: None)):
        table = getattr(kt_oracle, name, None)
        if isinstance(table, collections.defaultdict):
            weak = _WeakDefaultDict(factory)
            weak.update(table)
            setattr(kt_oracle, name, weak)


def is_chief() -> bool:
    """Whether this process is the chief of a distributed search."""
    return dist_utils.is_chief_oracle()


def is_worker() -> bool:
    """Whether this process is a worker of a distributed search."""
    return dist_utils.has_chief_oracle() and not dist_utils.is_chief_oracle()


def has_chief() -> bool:
    """Whether this process is part of a distributed search (chief or worker)."""
    return dist_utils.has_chief_oracle()


def oracle_stub(channel):
    """Keras Tuner's gRPC stub of the chief's oracle service on `channel`."""
    from keras_tuner.src import protos  # As Keras Tuner does: not at import time.

    return protos.get_service_grpc().OracleStub(channel)


def create_directory(dirname: str) -> None:
    """Keras Tuner's way of making a directory (works for gs://... too)."""
    kt_utils.create_directory(dirname)


def track_containers(oracle: keras_tuner.Oracle) -> None:
    """Keras Tuner's per-trial dicts and set as journal-tracked containers.

    They grow by one entry a trial; tracked, a save writes that entry
    without comparing or copying the rest (O(1) per trial, not O(n)).
    """
    oracle._run_times = journal.TrackedDict(oracle._run_times, default=int)
    oracle._id_to_hash = journal.TrackedDict(oracle._id_to_hash, default=lambda: None)
    oracle._tried_so_far = journal.TrackedSet(oracle._tried_so_far)
    oracle._display.trial_start = journal.TrackedDict(oracle._display.trial_start)
    oracle._display.trial_number = journal.TrackedDict(oracle._display.trial_number)


def oracle_state(oracle: keras_tuner.Oracle) -> dict:
    """`Oracle.get_state`'s keys, tracked containers by reference (what a save journals).

    Keras Tuner's own `get_state` copies and converts its per-trial
    containers on every call (O(n) a trial).
    """
    display = oracle._display
    return {
        "ongoing_trials": {
            tuner_id: trial.trial_id for tuner_id, trial in oracle.ongoing_trials.items()
        },
        "hyperparameters": oracle.hyperparameters.get_config(),
        "start_order": oracle.start_order,
        "end_order": oracle.end_order,
        "run_times": oracle._run_times,
        "retry_queue": oracle._retry_queue,
        "seed": oracle.seed,
        "seed_state": oracle._seed_state,
        "tried_so_far": oracle._tried_so_far,
        "id_to_hash": oracle._id_to_hash,
        "display": {
            "search_start": display.search_start and display.search_start.isoformat(),
            "trial_start": display.trial_start,  # datetimes: the journal writes ISO strings.
            "trial_number": display.trial_number,
        },
    }


class QuickCopyHyperParameters(keras_tuner.HyperParameters):
    """`keras_tuner.HyperParameters` whose `copy()` skips the serialisation round trip.

    Keras Tuner copies the oracle's hyperparameters for every trial through
    `from_config(get_config())`, which rebuilds each one through Keras's
    deserialisation. This copy makes the same plain `HyperParameters`: new
    containers, a shallow copy of each hyperparameter (they are not changed
    after they are made: conditional scopes make new ones), the values copied.
    """

    @classmethod
    def of(cls, hps: keras_tuner.HyperParameters) -> "QuickCopyHyperParameters":
        """A copy of `hps` (any `HyperParameters`) of this class."""
        out = cls()
        _copy_into(out, hps)
        return out

    def copy(self) -> keras_tuner.HyperParameters:
        out = keras_tuner.HyperParameters()
        _copy_into(out, self)
        return out


def _copy_into(out: keras_tuner.HyperParameters, hps: keras_tuner.HyperParameters):
    for p in hps.space:
        p = copy.copy(p)
        out._hps[p.name].append(p)
        out._space.append(p)
    out.values = dict(hps.values)


def is_duplicate(oracle: keras_tuner.Oracle, values: dict) -> bool:
    """Whether these hyperparameter values were tried (Keras Tuner's own record)."""
    return oracle._duplicate(values)


def check_consecutive_failures(oracle: keras_tuner.Oracle) -> None:
    """Keras Tuner's stop after `max_consecutive_failed_trials`, from the end of the log.

    Keras Tuner re-counts over every ended trial (O(n) a trial); only the
    streak at the end can be new, so counting back to the last success
    finds the same.
    """
    streak, last = 0, None
    for trial_id in reversed(oracle.end_order):
        trial = oracle.trials[trial_id]
        if trial.status != TrialStatus.FAILED:
            break
        streak, last = streak + 1, last or trial
        if streak == oracle.max_consecutive_failed_trials:
            raise RuntimeError(
                "Number of consecutive failures exceeded the limit "
                f"of {oracle.max_consecutive_failed_trials}.\n" + (last.message or "")
            )


# -- the chief's service (nas_tf.chief) ---------------------------------------------------

from keras_tuner.src.distribute import oracle_chief  # noqa: E402

OracleServicer = oracle_chief.OracleServicer


def add_oracle_servicer(servicer, server) -> None:
    """Registers Keras Tuner's oracle service on a gRPC server."""
    from keras_tuner.src import protos

    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)


def chief_may_exit(oracle) -> bool:
    """Keras Tuner's rule: no trial running and every worker told to stop."""
    return oracle_chief.exit_chief(oracle)


@keras_tuner.synchronized
def requeue_lost_trials(oracle, last_seen, since: float, now: float, lost_after: float):
    """Queues for retry each running trial not heard of for `lost_after` seconds.

    Its worker is forgotten (it no longer holds the chief), and the trial
    goes to Keras Tuner's retry queue, where the next worker that asks takes
    it. Returns the (trial id, tuner id) pairs requeued.
    """
    lost = [(tuner_id, trial) for tuner_id, trial in oracle.ongoing_trials.items()
            if now - last_seen.get(trial.trial_id, since) >= lost_after]
    for tuner_id, trial in lost:
        oracle.ongoing_trials.pop(tuner_id)
        oracle.tuner_ids.discard(tuner_id)
        last_seen.pop(trial.trial_id, None)
        if trial.trial_id not in oracle._retry_queue:
            oracle._retry_queue.append(trial.trial_id)
    if lost:
        oracle.save()
    return [(trial.trial_id, tuner_id) for tuner_id, trial in lost]


def install_chief_server(serve) -> None:
    """Makes Keras Tuner's chief run `serve(oracle)` instead of its own server."""
    oracle_chief.start_server = serve


def silence_condition_to_proto() -> None:
    """Keras Tuner 1.4's `Parent.to_proto` prints its first value on every call.

    A distributed search serialises the conditions of every trial it sends,
    so the stray print fills the logs with lone values; this runs it with
    stdout discarded.
    """
    from keras_tuner.src.engine import conditions

    original = conditions.Parent.to_proto
    if getattr(original, "_nas_tf_quiet", False):
        return

    def to_proto(self):
        with contextlib.redirect_stdout(io.StringIO()):
            return original(self)

    to_proto._nas_tf_quiet = True
    conditions.Parent.to_proto = to_proto


check_version()
let_oracles_be_freed()
silence_condition_to_proto()
