"""UsageRecord: what one invocation attempt, or one span of provisioned instances, is billed for.

Pure rules, no I/O:

- An attempt that ran (its handler returned, raised, timed out, ran out of memory or crashed)
  is one request and `memory_mb x billed_ms` MB-ms of compute. `billed_ms` is its record's:
  the init phase (its cold start's module import; 0 when warm) plus the execution, rounded up
  once to the next whole millisecond, at least 1 (`mist.core.billing.billed_ms`, applied by
  InvocationService): Lambda has billed the init phase of on-demand functions since August
  2025, and so does mist. An attempt that never reached a sandbox (no capacity, spend cap, a
  sandbox that could not be built) is not metered: nothing ran.
- Every quantity is an integer: times in microseconds since the epoch, measured durations in
  microseconds, billed time in ms, memory in MB (formatting a float costs more than the rest
  of a record: one is journaled on every invocation).
- Provisioned (min) instances are metered from the Worker's spans: `instances x memory_mb x
  ms` MB-ms, split at hour boundaries so each record falls in one hour (and so one day and one
  month) of the reports. Their id is `p:FUNCTION:VERSION:START_MS`, unique because the spans of
  one function version never overlap.
- Each record is attributed to the UTC hour (day, month) in which it started.

Worked example: a cold start of a 512 MB function, init 0.42 ms, execution 11.3 ms: billed
ceil(11.72) = 12 ms, 512 x 12 = 6,144 MB-ms = 0.006 GB-s (1 GB-s = 1,024,000 MB-ms).

    >>> r = from_invocation(InvocationRecord("a1", "resize", 3, "api", "succeeded", None, None, True,
    ...     0.42, 11.3, 12, 512, 40, 1764000000.0, 1764000000.012), "acme")
    >>> r.billed_ms, r.mb_ms, r.requests, r.hour, r.init_us, r.duration_us
    (12, 6144, 1, 490000, 420, 11300)
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import NamedTuple

from mist.core.pricing import Usage
from mist.errors import InvalidRequest
from mist.models import InvocationRecord, split_id
from mist.worker.types import ProvisionedSpan

INVOCATION, PROVISIONED = "invocation", "provisioned"
HOUR_S = 3600
HOUR_MS = HOUR_S * 1000
HOUR_US = HOUR_MS * 1000


class UsageRecord(NamedTuple):
    """Immutable; a NamedTuple rather than a dataclass because one is made, journaled and counted
    on every invocation: it is built and JSON-encoded (as a list) several times faster."""

    id: str  # the attempt's record id (`{event_id}-{n}` for asynchronous attempts); p:... for provisioned
    kind: str  # INVOCATION | PROVISIONED
    tenant: str
    function: str
    version: int
    trigger: str  # the invocation's: "api", "http", "event", "queue", ...; "provisioned"
    started_us: int  # wall clock, microseconds since the epoch
    ended_us: int
    init_us: int  # measured; 0 when warm
    duration_us: int  # the execution, measured in the sandbox
    billed_ms: int  # init + execution rounded up to the ms; provisioned: the span's ms
    memory_mb: int  # configured
    instances: int  # provisioned instances in the span; 1 for an invocation
    cold_start: bool
    outcome: str  # "succeeded" | "failed" (a function error) | "provisioned"
    error_type: str | None = None

    @property
    def requests(self) -> int:
        return 1 if self.kind == INVOCATION else 0

    @property
    def mb_ms(self) -> int:
        return self.memory_mb * self.billed_ms * self.instances

    @property
    def hour(self) -> int:
        """The UTC hour it started in, counted from the epoch."""
        return self.started_us // HOUR_US

    def usage(self) -> Usage:
        if self.kind == PROVISIONED:
            return Usage(provisioned_mb_ms=self.mb_ms)
        return Usage(requests=1, mb_ms=self.mb_ms)

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id, "kind": self.kind, "tenant": self.tenant, "function": split_id(self.function)[1],
            "version": self.version, "trigger": self.trigger, "started_at": iso(self.started_us / 1e6),
            "ended_at": iso(self.ended_us / 1e6), "init_ms": self.init_us / 1000,
            "duration_ms": self.duration_us / 1000, "billed_ms": self.billed_ms, "memory_mb": self.memory_mb,
            "instances": self.instances, "mb_ms": self.mb_ms, "gb_s": gb_s_text(self.mb_ms),
            "cold_start": self.cold_start, "outcome": self.outcome, "error_type": self.error_type,
        }  # fmt: skip


def from_invocation(record: InvocationRecord, tenant: str) -> UsageRecord:
    """The usage of an attempt that ran (its record's status is succeeded or failed); the
    function by its name in `tenant`."""
    return invocation_usage(
        record.id, tenant, split_id(record.function)[1], record.version, record.trigger, record.started_at,
        record.ended_at, record.init_ms, record.duration_ms, record.billed_ms, record.memory_mb, record.cold_start,
        record.status, record.error_type,
    )  # fmt: skip


def invocation_usage(id: str, tenant: str, function: str, version: int, trigger: str, started_at: float,
                     ended_at: float, init_ms: float, duration_ms: float, billed_ms: int, memory_mb: int,
                     cold_start: bool, outcome: str, error_type: str | None) -> UsageRecord:
    """The usage of an attempt that ran, from its record's fields (`from_invocation`; the
    invocation path calls it before the record is made: mist/control/invocations.py)."""
    return UsageRecord(
        id, INVOCATION, tenant, function, version, trigger, round(started_at * 1_000_000),
        round(ended_at * 1_000_000), round(init_ms * 1000), round(duration_ms * 1000), billed_ms, memory_mb, 1,
        cold_start, outcome, error_type,
    )  # fmt: skip


def from_span(span: ProvisionedSpan) -> list[UsageRecord]:
    """The usage of a span of provisioned instances, one record per UTC hour it touches.

    >>> [(r.id, r.billed_ms) for r in from_span(ProvisionedSpan("f", 1, "t", 128, 2, 3_599_000, 3_601_500))]
    [('p:f:1:3599000', 1000), ('p:f:1:3600000', 1500)]
    """
    out: list[UsageRecord] = []
    start = span.start_ms
    while start < span.end_ms:
        end = min(span.end_ms, (start // HOUR_MS + 1) * HOUR_MS)
        out.append(UsageRecord(
            id=f"p:{span.function_name}:{span.version}:{start}", kind=PROVISIONED, tenant=span.tenant,
            function=split_id(span.function_name)[1], version=span.version, trigger=PROVISIONED, started_us=start * 1000,
            ended_us=end * 1000, init_us=0, duration_us=(end - start) * 1000, billed_ms=end - start,
            memory_mb=span.memory_mb, instances=span.instances, cold_start=False, outcome=PROVISIONED,
        ))  # fmt: skip
        start = end
    return out


# -- time -----------------------------------------------------------------------------------------

MONTH_RE = re.compile(r"(\d{4})-(\d{2})")


def to_us(ts: float) -> int:
    """Seconds since the epoch (a period's bound) as microseconds."""
    return round(ts * 1_000_000)


def month_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m")


def month_bounds(month: str) -> tuple[float, float]:
    """[start, end) of a UTC month "YYYY-MM" in seconds since the epoch."""
    m = MONTH_RE.fullmatch(month)
    if not m or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 1970:
        raise InvalidRequest(f"month must look like 2026-11 (YYYY-MM), got {month!r}")
    year, mon = int(m.group(1)), int(m.group(2))
    start = datetime(year, mon, 1, tzinfo=timezone.utc)
    end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=timezone.utc)
    return start.timestamp(), end.timestamp()


def parse_time(key: str, value: str) -> float:
    """An ISO 8601 date (`2026-11-01`, midnight UTC) or date-time (UTC unless it has an offset)."""
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"{key} must be an ISO 8601 date or date-time like 2026-11-01 or 2026-11-01T12:00:00Z, got {value!r}"
        ) from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


def gb_s_text(mb_ms: int) -> str:
    """MB-ms as GB-s for display, to 6 decimals (amounts are computed from the exact MB-ms)."""
    micro_gb_s = (mb_ms * 1_000_000 + 512_000) // 1_024_000  # rounded half up to 1e-6 GB-s
    return f"{micro_gb_s // 1_000_000}.{micro_gb_s % 1_000_000:06d}"
