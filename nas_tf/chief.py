"""The chief of a distributed search: Keras Tuner's oracle service, guarded and patient.

Keras Tuner's chief serves its oracle over gRPC and exits once every worker
was told to stop. nas_tf runs the same service (Keras Tuner's own servicer,
so workers speak the same protocol) with two additions:

* **A shared-secret token.** With `NAS_TF_CHIEF_TOKEN` set, every request
  must carry the same token (workers send it from the same variable), or it
  is refused with UNAUTHENTICATED before it reaches the oracle. The channel
  stays plaintext: the token keeps strangers who reach the port from ending
  trials with made-up rewards, but anyone who can read the traffic can read
  it too. Run a multi-host search on a private network (docs/distributed.md).
* **Lost workers.** A trial whose worker has sent nothing (no report, no
  end) for `NAS_TF_LOST_WORKER_TIMEOUT` seconds (default 24 h, as the
  child timeout) is queued for retry and its worker forgotten, so the
  chief can finish; another worker trains the trial again.

`nas_tf.kt_compat` installs `serve` in place of Keras Tuner's
`start_server` when this module is imported (`nas_tf.oracle` does).
"""

import hmac
import os
import sys
import time
from concurrent import futures
from typing import Callable, Dict, Optional

import grpc

from nas_tf import kt_compat

TOKEN_ENV = "NAS_TF_CHIEF_TOKEN"
TOKEN_HEADER = "x-nas-tf-token"
LOST_ENV = "NAS_TF_LOST_WORKER_TIMEOUT"
DEFAULT_LOST_AFTER = 24 * 3600.0
# Requests served at once; the oracle's own lock orders the calls that change it.
SERVER_THREADS = 4


def token() -> Optional[str]:
    """The shared secret of this search (`NAS_TF_CHIEF_TOKEN`), or None."""
    return os.environ.get(TOKEN_ENV) or None


def lost_after() -> float:
    """Seconds without a word from a worker before its trial is retried."""
    value = os.environ.get(LOST_ENV)
    if value is None:
        return DEFAULT_LOST_AFTER
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"{LOST_ENV} must be a positive number of seconds, got {value!r}.")
    return seconds


class TokenInterceptor(grpc.ServerInterceptor):
    """Refuses every request whose `x-nas-tf-token` is not the search's token."""

    def __init__(self, secret: str):
        self._secret = secret.encode("utf-8")

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          f"wrong or missing {TOKEN_ENV}: set the chief's token on this worker")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation, handler_call_details):
        sent = dict(handler_call_details.invocation_metadata or ()).get(TOKEN_HEADER, "")
        if hmac.compare_digest(str(sent).encode("utf-8"), self._secret):
            return continuation(handler_call_details)
        return self._deny


class _WatchingServicer(kt_compat.OracleServicer):
    """Keras Tuner's servicer, noting when each trial's worker was last heard from."""

    def __init__(self, oracle, clock: Callable[[], float]):
        super().__init__(oracle)
        self.clock = clock
        self.last_seen: Dict[str, float] = {}

    def CreateTrial(self, request, context):
        response = super().CreateTrial(request, context)
        self.last_seen[response.trial.trial_id] = self.clock()
        return response

    def UpdateTrial(self, request, context):
        self.last_seen[request.trial_id] = self.clock()
        return super().UpdateTrial(request, context)

    def EndTrial(self, request, context):
        self.last_seen.pop(request.trial.trial_id, None)
        return super().EndTrial(request, context)


def start(oracle, address: str, secret: Optional[str] = None, clock=time.monotonic):
    """Starts the service on `address`; returns (gRPC server, servicer)."""
    interceptors = [TokenInterceptor(secret)] if secret else []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=SERVER_THREADS),
                         interceptors=interceptors)
    servicer = _WatchingServicer(oracle, clock)
    kt_compat.add_oracle_servicer(servicer, server)
    server.add_insecure_port(address)
    server.start()
    return server, servicer


def wait_until_done(oracle, servicer, lost: float, clock=time.monotonic, sleep=time.sleep,
                    poll: float = 1.0) -> None:
    """Serves until the search stopped and no worker is left; retries lost workers' trials."""
    started = clock()
    while True:
        sleep(poll)
        now = clock()
        for trial_id, tuner_id in kt_compat.requeue_lost_trials(
                oracle, servicer.last_seen, started, now, lost):
            print(f"nas_tf chief: worker {tuner_id} sent nothing about trial {trial_id} for "
                  f"{lost:g} s ({LOST_ENV}); the trial is queued for another worker.",
                  file=sys.stderr, flush=True)
        if servicer.stop_triggered and kt_compat.chief_may_exit(oracle):
            return


def serve(oracle) -> None:
    """Keras Tuner's `start_server`, with the token and lost-worker handling above."""
    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    server, servicer = start(oracle, address, token())
    try:
        wait_until_done(oracle, servicer, lost_after())
    finally:
        server.stop(grace=5).wait()


kt_compat.install_chief_server(serve)
