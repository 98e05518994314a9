"""InvocationService: one invocation from resolved name to stored record.

    resolve name[/version] -> SandboxSpec -> Worker.invoke -> InvocationRecord (+ log lines)

The record is buffered in the InvocationLog before `invoke` returns (or, given an `answer`
callback, right after the answer, with no await between), so the id in the answer's
`X-Mist-Invocation-Id` can be looked up at once. A platform error (no capacity, a
sandbox that could not be built) is recorded too, with status "error", and re-raised for the
edge to map to a status code.

With a Meter (mist/metering): a tenant over its spend cap is refused before anything runs
(SpendCapReached), and the usage of an attempt that ran is in the ledger's journal before
`invoke` returns, so before any answer is sent; with `settle_usage` (asynchronous attempts) it is
returned in the Outcome instead, for the dispatcher to store with the attempt's settlement.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mist.control.admission import Admission
from mist.control.functions import FunctionService
from mist.control.records import InvocationLog
from mist.core.billing import billed_ms
from mist.errors import PlatformError
from mist.metering.meter import Meter
from mist.metering.usage import UsageRecord, invocation_usage
from mist.models import FunctionVersion, InvocationRecord, LogRecord
from mist.worker.types import InvokeResult, SandboxSpec


class Invoker(Protocol):
    async def invoke(self, spec: SandboxSpec, invocation_id: str, payload: bytes) -> InvokeResult: ...


@dataclass(frozen=True)
class Outcome:
    invocation_id: str
    version: FunctionVersion
    result: InvokeResult
    usage: UsageRecord | None = None  # with settle_usage: the attempt's usage, not stored yet


_last_micros = 0


def new_invocation_id(now_ns: int | None = None) -> str:
    """32 hex characters: 14 of microseconds since the epoch, then 72 random bits.

    Time-ordered like a UUIDv7, so ids sort by creation time and the records table's index
    grows at its end: with random ids, inserts slowed 3x as the table grew (cache misses all
    over the b-tree), which cost the gateway a tenth of its throughput under load.
    """
    global _last_micros
    with _id_lock:  # the SQL stores make ids in their threads too
        if now_ns is not None:
            micros = now_ns // 1000
        else:  # strictly increasing within the process, so ids made in one microsecond keep their order
            micros = max(time.time_ns() // 1000, _last_micros + 1)
            _last_micros = micros
        return f"{micros:014x}{_random_hex()}"


_id_lock = threading.Lock()
_RANDOM_BATCH = 9 * 455  # one getrandom(2) call per 455 ids instead of one per id
_random = memoryview(b"")


def _random_hex() -> str:
    """18 hex characters (72 bits) from the OS's CSPRNG, read in batches."""
    global _random
    if len(_random) < 9:
        _random = memoryview(os.urandom(_RANDOM_BATCH))
    chunk, _random = _random[:9], _random[9:]
    return chunk.hex()


def _forget_random() -> None:
    global _random, _id_lock
    _random = memoryview(b"")  # a forked child must not hand out its parent's next ids
    _id_lock = threading.Lock()  # nor wait for a lock a thread of its parent held


os.register_at_fork(after_in_child=_forget_random)


class InvocationService:
    def __init__(
        self,
        functions: FunctionService,
        invoker: Invoker,
        records: InvocationLog,
        *,
        admission: Admission | None = None,
        meter: Meter | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._functions = functions
        self._invoker = invoker
        self._records = records
        self._admission = admission
        self.meter = meter
        self._wall = wall

    async def invoke(
        self,
        fv: FunctionVersion,
        payload: bytes,
        *,
        trigger: str,
        invocation_id: str | None = None,
        request_id: str | None = None,
        settle_usage: bool = False,
        answer: Callable[[Outcome], None] | None = None,
    ) -> Outcome:
        """`invocation_id` names the record; `request_id` is what the function sees as
        context.aws_request_id (default: the invocation id; the attempts of an asynchronous
        invocation each have a record of their own and share the event's id, as on Lambda).

        `answer`, if given, is called with the Outcome once the attempt's usage is in the
        journal and before its record is built: the caller sends its answer there, and the
        record (and log lines) follow in the same step of the event loop, with no await
        between, so nothing else runs before the record can be read: whoever got the answer
        finds the record. Making it first cost the answer ~10-20 us on this VM."""
        meter = self.meter
        if meter is not None:
            meter.check(fv)
        inv_id = invocation_id or new_invocation_id()
        spec = self._functions.spec(fv)
        started = self._wall()
        try:
            if self._admission is None:
                result = await self._invoker.invoke(spec, request_id or inv_id, payload)
            else:
                async with self._admission.slot(fv, fv.timeout_s):  # concurrency limits, fair queue
                    result = await self._invoker.invoke(spec, request_id or inv_id, payload)
        except PlatformError as exc:
            now = self._wall()
            self._records.add(
                InvocationRecord(
                    id=inv_id, function=fv.name, version=fv.version, trigger=trigger, status="error",
                    error_type=exc.code, error_message=exc.message, cold_start=False, init_ms=0.0,
                    duration_ms=0.0, billed_ms=0, memory_mb=fv.memory_mb, max_memory_used_mb=0,
                    started_at=started, ended_at=now,
                ),
                [],
            )  # fmt: skip
            exc.invocation_id = inv_id  # type: ignore[attr-defined]
            raise
        ok = result.ok
        error = result.error or {}
        status = "succeeded" if ok else "failed"
        error_type = None if ok else str(error.get("errorType", "Unknown"))
        billed = billed_ms(result.init_ms + result.duration_ms)
        started_at = result.started_at or started
        ended_at = result.ended_at or self._wall()
        usage = None
        if meter is not None:
            usage = invocation_usage(
                inv_id, fv.tenant, fv.local_name, fv.version, trigger, started_at, ended_at, result.init_ms,
                result.duration_ms, billed, fv.memory_mb, result.cold_start, status, error_type,
            )  # fmt: skip
            if not settle_usage:
                await meter.record(usage)  # in the journal before the answer (docs/billing.md)
        outcome = Outcome(inv_id, fv, result, usage if settle_usage else None)
        try:
            if answer is not None:
                answer(outcome)
        finally:  # the record, even if answering failed; no await since the answer: see `invoke`
            self._records.add(
                InvocationRecord(
                    id=inv_id, function=fv.name, version=fv.version, trigger=trigger, status=status,
                    error_type=error_type, error_message=None if ok else str(error.get("errorMessage", "")),
                    cold_start=result.cold_start, init_ms=result.init_ms, duration_ms=result.duration_ms,
                    billed_ms=billed, memory_mb=fv.memory_mb, max_memory_used_mb=result.max_memory_used_mb,
                    started_at=started_at, ended_at=ended_at,
                ),
                [LogRecord(inv_id, fv.name, fv.version, line.ts, line.stream, line.text) for line in result.logs],
            )  # fmt: skip
        return outcome
