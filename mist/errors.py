"""The one exception tree of mist.

    MistError                      every error mist raises on purpose
    ├── UserError                  the caller asked for something wrong; fixable by the caller
    │   ├── InvalidRequest         malformed input (bad name, bad JSON, bad config value)
    │   ├── PayloadTooLarge        request body over the limit
    │   ├── NotFound               no such function / version / invocation (or another tenant's)
    │   ├── Unauthenticated        no API key, or a key that is unknown, revoked or expired
    │   ├── Forbidden              the key's role may not do this (in its own tenant)
    │   ├── LimitExceeded          over a rate, concurrency or queue limit (retry after a while)
    │   ├── Conflict               the resource is in a state that forbids the request
    │   ├── SpendCapReached        the tenant's monthly spend cap is reached: invocations refused
    │   └── DeployRejected         the code cannot be deployed (unsafe zip, syntax error, ...)
    │       └── DependencyInstallFailed  pip could not install requirements.txt
    ├── FunctionError              the user's function failed; reported in Lambda's error shape
    │   ├── FunctionTimeout        ran past its timeout, was killed
    │   ├── FunctionOutOfMemory    ran past its memory limit, was killed
    │   └── FunctionCrashed        the runtime exited (os._exit, signal, ...)
    └── PlatformError              mist itself could not serve the request; retry later
        ├── NoCapacity             no sandbox could be had in time (the caller may retry)
        ├── SandboxFailed          a sandbox could not be built (setup failed on the host)
        ├── StaleEpoch             an order carried a shard lease epoch that is no longer current
        ├── CoordinationUnavailable  the cluster's coordination store (PostgreSQL) cannot be reached
        │   └── NotShardOwner      a forwarded invocation reached a scheduler that no longer owns its shard
        ├── WorkerLost             the worker running the invocation died or was cut off mid-call
        └── SecretsUnavailable     a function's secrets do not open with this server's key

HTTP status codes are chosen only at the edge (`mist.gateway.errors`), never here.
Every message says what was wrong and, where it can, what to do about it.
"""

from __future__ import annotations


class MistError(Exception):
    """Base of every error mist raises on purpose."""

    code: str = "InternalError"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class UserError(MistError):
    code = "InvalidRequest"


class InvalidRequest(UserError):
    code = "InvalidRequest"


class PayloadTooLarge(UserError):
    code = "PayloadTooLarge"


class NotFound(UserError):
    code = "NotFound"


class Conflict(UserError):
    code = "Conflict"


class Unauthenticated(UserError):
    """No API key, or one mist does not accept (unknown, revoked, expired)."""

    code = "Unauthenticated"


class Forbidden(UserError):
    """The caller is known, but its role may not do this. Never used for another tenant's
    resources: those answer NotFound, so their names do not leak."""

    code = "Forbidden"


class LimitExceeded(UserError):
    """Over a limit of the tenant or the function. `retry_after` is a hint in seconds; `limit`
    names the limit (e.g. "tenant acme: 100 requests/s, burst 200")."""

    code = "LimitExceeded"

    def __init__(self, message: str, *, retry_after: float = 1.0, limit: str = "") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.limit = limit
class SpendCapReached(UserError):
    """The tenant's month-to-date bill reached its monthly spend cap (docs/billing.md)."""

    code = "SpendCapReached"


class DeployRejected(UserError):
    """The code cannot be deployed. `detail` carries a traceback or a list of offending paths."""

    code = "DeployRejected"

    def __init__(self, message: str, *, detail: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.detail = detail


class FunctionError(MistError):
    """The user's function failed. Carries Lambda's error shape."""

    code = "FunctionError"

    def __init__(
        self,
        error_type: str,
        error_message: str,
        stack_trace: list[str] | None = None,
    ) -> None:
        super().__init__(error_message, code=error_type)
        self.error_type = error_type
        self.error_message = error_message
        self.stack_trace = list(stack_trace or [])

    def to_lambda(self) -> dict[str, object]:
        return {
            "errorType": self.error_type,
            "errorMessage": self.error_message,
            "stackTrace": self.stack_trace,
        }


class FunctionTimeout(FunctionError):
    def __init__(self, timeout_s: float) -> None:
        super().__init__("Sandbox.Timedout", f"Task timed out after {timeout_s:.2f} seconds")


class FunctionOutOfMemory(FunctionError):
    def __init__(self, memory_mb: int) -> None:
        super().__init__(
            "Runtime.OutOfMemory",
            f"Runtime exited: out of memory (the function's memory limit of {memory_mb} MB "
            "was exceeded; deploy with a larger --memory)",
        )


class FunctionCrashed(FunctionError):
    def __init__(self, how: str) -> None:
        super().__init__("Runtime.ExitError", f"Runtime exited with error: {how}")


class PlatformError(MistError):
    code = "PlatformError"


class NoCapacity(PlatformError):
    """No sandbox could be had in time. `retry_after` is a hint in seconds."""

    code = "NoCapacity"

    def __init__(self, message: str, *, retry_after: float = 1.0, queue_full: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.queue_full = queue_full


class SandboxFailed(PlatformError):
    code = "SandboxFailed"


class StaleEpoch(PlatformError):
    """A worker refused an order: its lease epoch is older than one the worker knows for that
    lease (mist/cluster/leases.py::Fence). The sender has lost the lease and must stop acting."""

    code = "StaleEpoch"

    def __init__(self, name: str, epoch: int, floor: int) -> None:
        super().__init__(
            f"order refused: it carries epoch {epoch} of lease {name!r}, but epoch {floor} or newer "
            "is current; its sender no longer holds the lease and must drop it"
        )
        self.name = name
        self.epoch = epoch
        self.floor = floor


class CoordinationUnavailable(PlatformError):
    """The coordination store (PostgreSQL) could not be reached or failed; whether the operation
    took effect is unknown. A lease holder keeps acting only until its local deadline."""

    code = "CoordinationUnavailable"


class NotShardOwner(CoordinationUnavailable):
    """A scheduler process was asked to place an invocation of a shard the shard map gives to
    another (the sender's map was older): the sender reads the map again and retries."""

    code = "NotShardOwner"


class WorkerLost(PlatformError):
    """The worker an invocation was sent to died or was cut off before it answered (its
    connection broke, or it missed heartbeats for the cluster's timeout). Whether the function
    ran is unknown; a synchronous caller may retry, an asynchronous invocation is retried."""

    code = "WorkerLost"

    def __init__(self, worker: str, how: str) -> None:
        super().__init__(
            f"worker {worker} was lost while running the invocation ({how}); the function may or may "
            "not have run: retry the call (new calls go to the remaining workers)"
        )
        self.worker = worker


class SecretsUnavailable(PlatformError):
    """The function has secrets that do not open with the secrets key mist was started with
    (docs/secrets.md): it is not run without them."""

    code = "SecretsUnavailable"


class DependencyInstallFailed(DeployRejected):
    code = "DependencyInstallFailed"
