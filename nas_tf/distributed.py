"""A worker of a distributed search: bounded waits for the chief, and reconnection.

Keras Tuner's worker (`OracleClient`) sends each request to the chief with
gRPC's `wait_for_ready` and a one-hour deadline. A request in flight when the
chief dies fails at once with an opaque `_InactiveRpcError` (UNAVAILABLE,
"Socket closed"), and one sent while the chief is gone blocks for an hour.

`make_patient(client)` gives the client a stub that instead
* resends a request whose connection broke (UNAVAILABLE), waiting for the
  chief to come back: a chief restarted from its saved state (same directory,
  same port, `overwrite=False`) answers it, and `NASRLOracle` makes every
  request safe to receive twice (see its `end_trial` and `reload`);
* gives up after `NAS_TF_CHIEF_TIMEOUT` seconds (default 600) per request
  with `ChiefUnreachableError`, which names the chief's address and says how
  to restart; a worker restarted with the same `KERASTUNER_TUNER_ID` gets its
  unfinished trial back from the chief;
* turns any other gRPC failure (an exception in the chief's oracle) into a
  `ChiefError` carrying the chief's message.
Both errors are Keras Tuner `FatalError`s: they stop the worker's search
instead of failing the trial it is reporting.
"""

import math
import os
import time
from typing import Optional

import grpc
import keras_tuner

CHIEF_TIMEOUT_ENV = "NAS_TF_CHIEF_TIMEOUT"
DEFAULT_CHIEF_TIMEOUT = 600.0

# Reconnect to a restarted chief within about 2 s (gRPC's default backoff grows to 120 s).
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


class ChiefUnreachableError(keras_tuner.errors.FatalError):
    """The chief oracle did not answer a worker's request in time."""


class ChiefError(keras_tuner.errors.FatalError):
    """The chief oracle answered a worker's request with an error."""


def chief_timeout(value: Optional[float] = None) -> float:
    """`value`, else `NAS_TF_CHIEF_TIMEOUT`, else 600 s; positive and finite."""
    source = "chief_timeout"
    if value is None:
        value, source = os.environ.get(CHIEF_TIMEOUT_ENV), CHIEF_TIMEOUT_ENV
    if value is None:
        return DEFAULT_CHIEF_TIMEOUT
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not (0 < seconds < math.inf):
        raise ValueError(f"{source} must be a positive number of seconds, got {value!r}.")
    return seconds


class _PatientStub:
    """The chief's gRPC stub: requests resent across a chief restart, waits bounded."""

    def __init__(self, stub, address: str, timeout: float, metadata=()):
        self._stub, self._address, self._timeout = stub, address, timeout
        self._metadata = tuple(metadata)  # The chief's token, when the search has one.

    def __getattr__(self, method):
        call = getattr(self._stub, method)

        def patient(request, **kwargs):
            deadline = time.monotonic() + self._timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._unreachable(method, "no answer")
                try:
                    return call(request, **dict(kwargs, wait_for_ready=True, timeout=left,
                                                metadata=self._metadata))
                except grpc.RpcError as e:
                    code = e.code() if callable(getattr(e, "code", None)) else None
                    details = e.details() if callable(getattr(e, "details", None)) else str(e)
                    if code == grpc.StatusCode.UNAVAILABLE:
                        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
                        continue  # The connection broke: wait for the chief and resend.
                    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                        raise self._unreachable(method, f"{code.name}: {details}") from None
                    raise ChiefError(
                        f"The chief oracle at {self._address} failed to handle {method} "
                        f"({code.name if code else type(e).__name__}): {details}. See the "
                        "chief's log; this worker stopped."
                    ) from None

        return patient

    def _unreachable(self, method, why):
        return ChiefUnreachableError(
            f"The chief oracle at {self._address} did not answer {method} within "
            f"{self._timeout:g} s ({why}). If the chief died, restart it with the same "
            "directory, port and KERASTUNER_TUNER_ID, without overwrite: it resumes its "
            "saved state, and workers still waiting reconnect. Then restart this worker "
            "with the same KERASTUNER_TUNER_ID: the chief gives it back its unfinished "
            f"trial. Set {CHIEF_TIMEOUT_ENV} (seconds) to let workers wait longer."
        )


def make_patient(client, timeout: Optional[float] = None):
    """Gives Keras Tuner's `OracleClient` a patient stub (see the module doc); returns it."""
    from nas_tf import chief, kt_compat

    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    channel = grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
    stub = kt_compat.oracle_stub(channel)
    secret = chief.token()
    metadata = [(chief.TOKEN_HEADER, secret)] if secret else []
    client.stub = _PatientStub(stub, address, chief_timeout(timeout), metadata)
    return client
