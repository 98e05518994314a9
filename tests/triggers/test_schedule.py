import doctest
from datetime import datetime, timedelta, timezone

import pytest

import mist.triggers.schedule as schedule
from mist.errors import InvalidRequest
from mist.triggers.schedule import Cron, Rate, due, next_fire, parse_cron, parse_rate, parse_schedule

UTC = timezone.utc


def t(y, mo, d, h=0, mi=0, s=0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC)


def test_the_worked_examples_in_the_docstring_hold():
    assert doctest.testmod(schedule).failed == 0


# --- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("*/5 * * * *", "*/5 * * * *"), ("  0   9 * * 1-5 ", "0 9 * * 1-5"), ("@hourly", "@hourly"),
     ("@DAILY", "@daily"), ("0 0 L * *", "0 0 L * *")],
)
def test_five_field_cron_expressions_and_aliases_are_accepted(text, expected):
    assert parse_cron(text) == Cron(expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("* * * *", "expected five fields"),
        ("0 12 * * ? 2024", "EventBridge's six-field form"),
        ("61 * * * *", "not a valid cron expression"),
        ("* 24 * * *", "not a valid cron expression"),
        ("every day", "expected five fields"),
        ("a b c d e", "not a valid cron expression"),
        ("0 0 31 2 *", "never fires"),
    ],
)
def test_bad_cron_expressions_are_refused_with_what_is_wrong(text, message):
    with pytest.raises(InvalidRequest, match=message):
        parse_cron(text)


@pytest.mark.parametrize(
    ("text", "every", "shown"),
    [
        ("5 minutes", timedelta(minutes=5), "rate(5 minutes)"),
        ("1 minute", timedelta(minutes=1), "rate(1 minute)"),
        ("rate(2 hours)", timedelta(hours=2), "rate(2 hours)"),
        ("1 day", timedelta(days=1), "rate(1 day)"),
        ("90 minutes", timedelta(minutes=90), "rate(90 minutes)"),
        ("120 minutes", timedelta(hours=2), "rate(2 hours)"),
    ],
)
def test_rates_are_eventbridge_style(text, every, shown):
    rate = parse_rate(text)
    assert rate == Rate(every) and str(rate) == shown


@pytest.mark.parametrize("text", ["0 minutes", "5 seconds", "five minutes", "-1 hours", "5", "1.5 hours"])
def test_bad_rates_are_refused(text):
    with pytest.raises(InvalidRequest, match="rate"):
        parse_rate(text)


def test_a_schedule_is_exactly_one_of_cron_and_rate():
    assert parse_schedule(rate="5 minutes") == Rate(timedelta(minutes=5))
    for kwargs in ({}, {"cron": "* * * * *", "rate": "1 minute"}):
        with pytest.raises(InvalidRequest, match="exactly one of --cron and --rate"):
            parse_schedule(**kwargs)


# --- due -----------------------------------------------------------------------------------

EVERY5 = parse_cron("*/5 * * * *")
MONTH_END = parse_cron("0 0 31 * *")  # only months with a 31st
LAST_DAY = parse_cron("0 0 L * *")
HOURLY_RATE = parse_rate("1 hour")
CREATED = t(2024, 1, 31, 11, 58)


@pytest.mark.parametrize(
    ("sched", "last", "now", "missed", "expected"),
    [
        # before the first fire after creation: nothing
        (EVERY5, None, t(2024, 1, 31, 11, 59, 59), "skip", []),
        # on the dot, and a little late (within the 60 s grace)
        (EVERY5, None, t(2024, 1, 31, 12, 0), "skip", [t(2024, 1, 31, 12, 0)]),
        (EVERY5, None, t(2024, 1, 31, 12, 0, 59), "skip", [t(2024, 1, 31, 12, 0)]),
        # already fired: no duplicate
        (EVERY5, t(2024, 1, 31, 12, 0), t(2024, 1, 31, 12, 0, 30), "skip", []),
        (EVERY5, t(2024, 1, 31, 12, 0), t(2024, 1, 31, 12, 4, 59), "once", []),
        # mist was down 12:01-12:17: skip fires nothing, once fires 12:15 (the latest missed) once
        (EVERY5, t(2024, 1, 31, 12, 0), t(2024, 1, 31, 12, 17), "skip", []),
        (EVERY5, t(2024, 1, 31, 12, 0), t(2024, 1, 31, 12, 17), "once", [t(2024, 1, 31, 12, 15)]),
        # down until just after a fire: that one is on time either way
        (EVERY5, t(2024, 1, 31, 12, 0), t(2024, 1, 31, 12, 20, 10), "skip", [t(2024, 1, 31, 12, 20)]),
        # down for months: still at most one
        (EVERY5, t(2024, 1, 31, 12, 0), t(2024, 6, 1, 8, 3), "once", [t(2024, 6, 1, 8, 0)]),
        # month ends: the 31st skips short months
        (MONTH_END, None, t(2024, 2, 29, 23, 59), "once", []),
        (MONTH_END, None, t(2024, 3, 31, 0, 0, 5), "skip", [t(2024, 3, 31)]),
        (LAST_DAY, None, t(2024, 2, 29, 0, 0, 1), "skip", [t(2024, 2, 29)]),  # leap year
        # rates count from creation
        (HOURLY_RATE, None, t(2024, 1, 31, 12, 57, 59), "skip", []),
        (HOURLY_RATE, None, t(2024, 1, 31, 12, 58), "skip", [t(2024, 1, 31, 12, 58)]),
        (HOURLY_RATE, t(2024, 1, 31, 12, 58), t(2024, 1, 31, 16, 30), "skip", []),
        (HOURLY_RATE, t(2024, 1, 31, 12, 58), t(2024, 1, 31, 16, 30), "once", [t(2024, 1, 31, 15, 58)]),
    ],
)
def test_due_fires_each_time_once_and_handles_missed_fires_by_policy(sched, last, now, missed, expected):
    assert due(sched, last, CREATED, now, missed) == expected


def test_a_time_in_another_zone_is_the_same_instant_in_utc():
    paris = timezone(timedelta(hours=1))
    now = datetime(2024, 1, 31, 13, 0, 10, tzinfo=paris)  # 12:00:10 UTC
    assert due(EVERY5, None, CREATED, now, "skip") == [t(2024, 1, 31, 12, 0)]


def test_naive_times_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        due(EVERY5, None, CREATED, datetime(2024, 1, 31, 12, 0), "skip")


def test_an_unknown_missed_policy_is_refused():
    with pytest.raises(InvalidRequest, match="missed must be one of skip, once"):
        due(EVERY5, None, CREATED, t(2024, 1, 31, 12), "all")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sched", "after", "expected"),
    [
        (EVERY5, t(2024, 1, 31, 12, 0), t(2024, 1, 31, 12, 5)),  # strictly after
        (EVERY5, t(2024, 1, 31, 23, 58), t(2024, 2, 1, 0, 0)),
        (MONTH_END, t(2024, 1, 31), t(2024, 3, 31)),
        (parse_cron("0 0 29 2 *"), t(2024, 3, 1), t(2028, 2, 29)),
        (HOURLY_RATE, t(2024, 1, 31, 12, 58), t(2024, 1, 31, 13, 58)),
        (HOURLY_RATE, t(2020, 1, 1), t(2024, 1, 31, 12, 58)),  # never before creation
    ],
)
def test_next_fire_is_the_first_time_strictly_after(sched, after, expected):
    assert next_fire(sched, after=after, created=CREATED) == expected


@pytest.mark.parametrize("missed", ["skip", "once"])
def test_a_scheduler_that_keeps_only_last_fired_fires_every_time_exactly_once(missed):
    """Tick every 13 s for 90 minutes keeping nothing but last_fired, as a store would across any
    number of restarts: every */5 time fires once, none twice, none lost."""
    last: datetime | None = None
    fired: list[datetime] = []
    now = CREATED
    while now < CREATED + timedelta(minutes=90):
        for fire in due(EVERY5, last, CREATED, now, missed):
            fired.append(fire)
            last = fire  # stored atomically with the enqueue
        now += timedelta(seconds=13)
    assert fired == [t(2024, 1, 31, 12, 0) + timedelta(minutes=5 * k) for k in range(18)]


def test_after_downtime_skip_resumes_with_the_next_fire_and_once_catches_up_once():
    def simulate(missed: str) -> list[datetime]:
        last, out, now = None, [], CREATED
        while now < t(2024, 1, 31, 13, 0):
            if not t(2024, 1, 31, 12, 11) <= now < t(2024, 1, 31, 12, 43):  # mist is down
                for fire in due(EVERY5, last, CREATED, now, missed):  # type: ignore[arg-type]
                    out.append(fire)
                    last = fire
            now += timedelta(seconds=10)
        return [f.replace(tzinfo=None).time().strftime("%H:%M") for f in out]

    assert simulate("skip") == ["12:00", "12:05", "12:10", "12:45", "12:50", "12:55"]
    assert simulate("once") == ["12:00", "12:05", "12:10", "12:40", "12:45", "12:50", "12:55"]
