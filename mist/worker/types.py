"""Values exchanged between the gateway and the worker (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mist.secrets.redact import Redactor

from mist.models import DEFAULT_TENANT


@dataclass(frozen=True)
class SandboxSpec:
    """Everything a sandbox needs to load one FunctionVersion.

    Two specs that compare equal may share instances (a warm instance of one version serves
    the next invocation of the same version); the worker keys instances by `key`, and replaces
    the instances of an older `revision` (the function's secrets changed).
    """

    function_name: str
    version: int
    code_dir: Path  # host path of the extracted code (read-only, content-addressed); /var/task inside
    handler: str  # "module.function", module may be dotted ("pkg.mod.handler")
    memory_mb: int = 128
    timeout_s: float = 30.0
    concurrency: int = 1  # invocations one instance serves at once
    # from --env and the function's secrets, sorted; never in a repr (a spec may be logged)
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    layer_dir: Path | None = None  # host path of the dependency layer (pip --target); /opt/python inside
    egress: tuple[str, ...] = ()  # the network policy: () = none (an empty network namespace,
    # no inet sockets); else the egress allowlist (models.egress_rule; docs/network.md)
    min_instances: int = 0  # instances kept warm at all times (provisioned)
    max_instances: int | None = None  # at most this many instances at once; None: no limit
    tenant: str = DEFAULT_TENANT  # who is billed for its provisioned instances
    # the function's secrets' revision: an instance of an older one is replaced (Worker.restart)
    revision: int = 0
    # masks the secret values of `env` in what an instance of this spec prints (mist/secrets/redact.py)
    redactor: Redactor | None = field(default=None, compare=False, repr=False)

    @property
    def network(self) -> bool:
        """The sandbox gets a network namespace with egress (filtered by the host)."""
        return bool(self.egress)

    @property
    def key(self) -> tuple[str, int]:
        return (self.function_name, self.version)


@dataclass(frozen=True)
class ProvisionedSpan:
    """`instances` provisioned (min) instances of one function version were ready from
    `start_ms` to `end_ms` (wall clock, ms since the epoch): what the Worker reports for billing."""

    function_name: str
    version: int
    tenant: str
    memory_mb: int
    instances: int
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class LogLine:
    ts: float  # wall clock, seconds since the epoch
    stream: str  # "stdout" | "stderr" | "log" (logging module) | "platform"
    text: str  # one line, without its trailing newline


@dataclass
class InvokeResult:
    """What one invocation produced.

    ok=True: `payload` is the handler's return value encoded as JSON (bytes).
    ok=False: `error` is the Lambda-shaped error {"errorType", "errorMessage", "stackTrace"}.
    """

    ok: bool
    payload: bytes = b"null"
    error: dict[str, object] | None = None
    cold_start: bool = False
    init_ms: float = 0.0  # the init phase (module import) when cold, else 0
    duration_ms: float = 0.0  # the handler's run, measured in the sandbox (or until the kill)
    max_memory_used_mb: int = 0
    started_at: float = 0.0  # wall clock when the handler started
    ended_at: float = 0.0
    instance_id: str = ""
    logs: list[LogLine] = field(default_factory=list)
    # cold starts only: where the cold part's time went, in ms per step, in order (the sandbox's
    # steps from ASSIGN to the handler's module imported, and the Worker's view of it), and
    # "page_faults": the sandbox's minor page faults over those steps (a count)
    init_steps: dict[str, float] | None = None
