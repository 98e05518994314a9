import doctest
import random
from datetime import datetime, timezone

import pytest

from mist.core.billing import billed_ms
from mist.errors import InvalidRequest
from mist.metering import usage as usage_module
from mist.metering.usage import (
    INVOCATION,
    PROVISIONED,
    from_invocation,
    from_span,
    gb_s_text,
    month_bounds,
    month_of,
    parse_time,
)
from mist.models import InvocationRecord
from mist.worker.types import ProvisionedSpan

T0 = datetime(2026, 11, 26, 4, 0, tzinfo=timezone.utc).timestamp()


def record(*, cold=False, init_ms=0.0, duration_ms=1.0, memory_mb=128, status="succeeded", started=T0):
    """As InvocationService makes it: billed = init + execution rounded up once."""
    return InvocationRecord("inv-1", "resize", 3, "api", status, None if status == "succeeded" else "ValueError",
                            None, cold, init_ms, duration_ms, billed_ms(init_ms + duration_ms), memory_mb, 20, started,
                            started + (init_ms + duration_ms) / 1000)  # fmt: skip


def test_an_attempt_is_billed_its_records_time_at_its_configured_memory_in_integers():
    r = from_invocation(record(cold=True, init_ms=0.42, duration_ms=11.3, memory_mb=512, started=T0 + 0.1234567), "acme")
    assert (r.billed_ms, r.mb_ms, r.requests, r.cold_start) == (12, 512 * 12, 1, True)
    assert (r.init_us, r.duration_us, r.started_us, r.ended_us) == (420, 11_300, round(T0 * 1e6) + 123_457,
                                                                    round(T0 * 1e6) + 123_457 + 11_720)  # fmt: skip
    assert r.to_json()["duration_ms"] == 11.3 and r.to_json()["init_ms"] == 0.42


def test_a_function_error_is_billed_like_a_success_and_keeps_its_outcome():
    r = from_invocation(record(status="failed", duration_ms=7.2), "acme")
    assert (r.kind, r.outcome, r.error_type, r.billed_ms, r.requests) == (INVOCATION, "failed", "ValueError", 8, 1)


def test_the_tenant_and_attempt_id_come_from_the_caller_and_the_record():
    r = from_invocation(record(), "acme")
    assert (r.id, r.tenant, r.function, r.version, r.trigger) == ("inv-1", "acme", "resize", 3, "api")


def test_a_provisioned_span_is_split_at_hour_boundaries_into_records_that_tile_it():
    start = int(T0 * 1000) - 1_500  # 1.5 s before 04:00, for 1 h 10 s: 03:59:58.5 to 05:00:08.5
    span = ProvisionedSpan("resize", 3, "acme", 256, 2, start, start + 3_600_000 + 10_000)
    recs = from_span(span)
    assert [r.hour for r in recs] == [int(T0 // 3600) - 1, int(T0 // 3600), int(T0 // 3600) + 1]
    assert sum(r.billed_ms for r in recs) == span.end_ms - span.start_ms
    assert sum(r.mb_ms for r in recs) == 256 * 2 * (span.end_ms - span.start_ms)
    assert all(r.kind == PROVISIONED and r.requests == 0 and r.instances == 2 for r in recs)
    assert len({r.id for r in recs}) == 3  # each its own id: imported twice, stored once
    for a, b in zip(recs, recs[1:]):
        assert a.ended_us == b.started_us


def test_random_spans_keep_every_millisecond_exactly_once():
    rng = random.Random(3)
    for _ in range(200):
        start = rng.randrange(0, 10**13)
        end = start + rng.randrange(1, 10**8)
        recs = from_span(ProvisionedSpan("f", 1, "t", 128, 1, start, end))
        assert sum(r.billed_ms for r in recs) == end - start
        assert all((r.ended_us - 1) // 3_600_000_000 == r.hour for r in recs)  # within one hour


def test_an_empty_span_bills_nothing():
    assert from_span(ProvisionedSpan("f", 1, "t", 128, 1, 5_000, 5_000)) == []


@pytest.mark.parametrize(
    ("month", "start", "end"),
    [
        ("2026-11", "2026-11-01", "2026-12-01"),
        ("2026-12", "2026-12-01", "2027-01-01"),  # December ends with the year
        ("2028-02", "2028-02-01", "2028-03-01"),
    ],
)
def test_month_bounds(month, start, end):
    assert month_bounds(month) == (parse_time("from", start), parse_time("to", end))
    assert month_of(month_bounds(month)[0]) == month and month_of(month_bounds(month)[1] - 0.001) == month


@pytest.mark.parametrize("bad", ["2026-13", "2026-1", "november", "2026-00", ""])
def test_a_bad_month_is_refused_with_an_example(bad):
    with pytest.raises(InvalidRequest, match="month must look like 2026-11"):
        month_bounds(bad)


@pytest.mark.parametrize(
    ("text", "ts"),
    [
        ("2026-11-26", T0 - 4 * 3600),  # a date is midnight UTC
        ("2026-11-26T04:00:00Z", T0),
        ("2026-11-26T06:00:00+02:00", T0),
        ("2026-11-26T04:00:00", T0),  # no offset: UTC
    ],
)
def test_times_are_iso_dates_or_datetimes_in_utc(text, ts):
    assert parse_time("from", text) == ts


def test_a_bad_time_names_the_parameter():
    with pytest.raises(InvalidRequest, match="from must be an ISO 8601 date"):
        parse_time("from", "yesterday")


@pytest.mark.parametrize(("mb_ms", "text"), [(0, "0.000000"), (1_024_000, "1.000000"), (128, "0.000125"),
                                             (511, "0.000499"), (1, "0.000001"), (184_320_000_000, "180000.000000")])
def test_gb_s_are_shown_to_six_decimals(mb_ms, text):
    assert gb_s_text(mb_ms) == text


def test_worked_examples():
    assert doctest.testmod(usage_module).failed == 0
