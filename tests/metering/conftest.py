import itertools

import pytest

from mist.metering.usage import INVOCATION, UsageRecord

T0 = 1_796_000_000.0  # 2026-11-30T...Z
_ids = itertools.count(1)


def usage(i: int | None = None, *, tenant="acme", function="resize", memory_mb=128, billed_ms=3, started=T0,
          outcome="succeeded") -> UsageRecord:  # fmt: skip
    n = next(_ids) if i is None else i
    start_us = round(started * 1_000_000)
    return UsageRecord(f"rec-{n:06d}", INVOCATION, tenant, function, 1, "api", start_us, start_us + billed_ms * 1000,
                       0, billed_ms * 1000 - 500, billed_ms, memory_mb, 1, False, outcome)  # fmt: skip


@pytest.fixture
def make_usage():
    return usage
