"""Cron and rate schedules: parse them, and decide which fire times are due, as pure functions.

Two kinds, as EventBridge has them: `--cron "*/5 * * * *"` (five fields: minute hour
day-of-month month day-of-week, standard cron meaning, via croniter; "@hourly"-style aliases
too) and `--rate "5 minutes"` (N minute(s) | hour(s) | day(s); fires every N units counted from
the trigger's creation, like an EventBridge rate rule). Every time is UTC: a schedule has no
time zone, so "0 9 * * *" is 09:00 UTC all year and there is no daylight-saving gap or repeat.

`due()` is the scheduler's decision. The caller keeps one watermark per trigger, `last_fired`
(the fire time of the last event it enqueued), and stores the new one in the same transaction
that enqueues the event: after a crash either both happened or neither did, so a restart never
fires the same time twice and never loses one. Missed fires (mist was down, or the loop
stalled, past `grace`) are handled by the trigger's `missed` policy:

- "skip": fire nothing for the missed period; the next fire comes on its own time.
- "once": fire the latest missed time, once, however many were missed.

Worked example (`*/5 * * * *`, created 11:58, grace 60 s):

    >>> from datetime import datetime, timezone
    >>> t = lambda hh, mm, ss=0: datetime(2024, 1, 31, hh, mm, ss, tzinfo=timezone.utc)
    >>> s = parse_schedule(cron="*/5 * * * *")
    >>> due(s, last_fired=None, created=t(11, 58), now=t(11, 59), missed="skip")
    []
    >>> due(s, last_fired=None, created=t(11, 58), now=t(12, 0, 1), missed="skip")
    [datetime.datetime(2024, 1, 31, 12, 0, tzinfo=datetime.timezone.utc)]
    >>> next_fire(s, after=t(12, 0), created=t(11, 58))
    datetime.datetime(2024, 1, 31, 12, 5, tzinfo=datetime.timezone.utc)

mist was down from 12:01 to 12:17 (12:05, 12:10 and 12:15 were missed):

    >>> due(s, last_fired=t(12, 0), created=t(11, 58), now=t(12, 17), missed="skip")
    []
    >>> due(s, last_fired=t(12, 0), created=t(11, 58), now=t(12, 17), missed="once")
    [datetime.datetime(2024, 1, 31, 12, 15, tzinfo=datetime.timezone.utc)]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

from croniter import CroniterError, croniter

from mist.errors import InvalidRequest

Missed = Literal["skip", "once"]
MISSED_POLICIES: tuple[str, ...] = ("skip", "once")
DEFAULT_GRACE = timedelta(seconds=60)  # a fire found this late is still "on time", not missed

_RATE = re.compile(r"^\s*(?:rate\(\s*)?(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)?\s*$")
_UNIT = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


@dataclass(frozen=True, slots=True)
class Cron:
    expression: str  # five fields, UTC

    def __str__(self) -> str:
        return f"cron({self.expression})"


@dataclass(frozen=True, slots=True)
class Rate:
    every: timedelta  # fires at created + k x every, k >= 1

    def __str__(self) -> str:
        minutes = int(self.every.total_seconds() // 60)
        for unit, size in (("day", 1440), ("hour", 60), ("minute", 1)):
            if minutes % size == 0:
                n = minutes // size
                return f"rate({n} {unit}{'' if n == 1 else 's'})"
        raise AssertionError("a rate is a whole number of minutes")


Schedule = Cron | Rate


def parse_cron(expression: str) -> Cron:
    """A five-field cron expression (UTC), or InvalidRequest saying what is wrong."""
    expr = " ".join(expression.split())
    fields = expr.split(" ")
    if expr.lower() in _ALIASES:
        expr = expr.lower()
    elif len(fields) != 5:
        hint = " (EventBridge's six-field form with a year and '?' is not accepted)" if len(fields) == 6 else ""
        raise InvalidRequest(
            f"cron: expected five fields 'minute hour day-of-month month day-of-week', got {len(fields)} "
            f"in {expression!r}{hint}; e.g. '*/5 * * * *' fires every five minutes")
    try:
        ok = croniter.is_valid(expr)
    except CroniterError:
        ok = False
    if not ok:
        raise InvalidRequest(
            f"cron: {expression!r} is not a valid cron expression (a field is out of range or malformed); "
            "fields are minute 0-59, hour 0-23, day-of-month 1-31, month 1-12, day-of-week 0-6")
    try:
        croniter(expr, datetime(2000, 1, 1, tzinfo=timezone.utc)).get_next(datetime)
    except CroniterError:
        raise InvalidRequest(f"cron: {expression!r} never fires (no date matches it)") from None
    return Cron(expr)


def parse_rate(text: str) -> Rate:
    """'N minute(s)|hour(s)|day(s)' (also 'rate(N minutes)'), N >= 1, or InvalidRequest."""
    m = _RATE.match(text)
    if not m:
        raise InvalidRequest(
            f"rate: {text!r} is not a rate; write 'N minutes', 'N hours' or 'N days' (e.g. '5 minutes')")
    n = int(m.group(1))
    if n < 1:
        raise InvalidRequest(f"rate: the number must be >= 1, got {n} in {text!r}")
    return Rate(n * _UNIT[m.group(2).rstrip("s")])


def parse_schedule(*, cron: str | None = None, rate: str | None = None) -> Schedule:
    """Exactly one of `cron` (`--cron`) and `rate` (`--rate`)."""
    if (cron is None) == (rate is None):
        raise InvalidRequest("schedule: give exactly one of --cron and --rate")
    return parse_cron(cron) if cron is not None else parse_rate(rate)  # type: ignore[arg-type]


def _utc(name: str, t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {t.isoformat()}")
    return t.astimezone(timezone.utc)


def latest_fire(schedule: Schedule, *, at_or_before: datetime, created: datetime) -> datetime | None:
    """The last fire time <= `at_or_before` (None if there is none after `created`)."""
    now, created = _utc("at_or_before", at_or_before), _utc("created", created)
    if isinstance(schedule, Rate):
        k = (now - created) // schedule.every
        return created + k * schedule.every if k >= 1 else None
    prev = _cron_step(schedule, now, forward=False)  # strictly before now
    following = _cron_step(schedule, prev, forward=True)
    latest = following if following <= now else prev
    return latest if latest > created else None


def next_fire(schedule: Schedule, *, after: datetime, created: datetime) -> datetime:
    """The first fire time strictly after `after` (and after `created`): sleep until then."""
    after, created = _utc("after", after), _utc("created", created)
    after = max(after, created)
    if isinstance(schedule, Rate):
        k = (after - created) // schedule.every + 1
        return created + k * schedule.every
    return _cron_step(schedule, after, forward=True)


def _cron_step(schedule: Cron, start: datetime, *, forward: bool) -> datetime:
    it = croniter(schedule.expression, start)
    t = it.get_next(datetime) if forward else it.get_prev(datetime)
    return t.astimezone(timezone.utc).replace(fold=0)  # croniter marks some results fold=1


def due(
    schedule: Schedule,
    last_fired: datetime | None,
    created: datetime,
    now: datetime,
    missed: Missed,
    *,
    grace: timedelta = DEFAULT_GRACE,
) -> list[datetime]:
    """Fire times to run now: [] or [one time]. Persist max(result) as last_fired with the enqueue.

    A fire is on time while now - fire <= grace; an older one was missed. Only the latest fire
    time after the watermark counts: earlier ones are always covered by it (never a burst of
    catch-up fires), and "skip" drops it too when it was missed.
    """
    if missed not in MISSED_POLICIES:
        raise InvalidRequest(f"schedule: missed must be one of {', '.join(MISSED_POLICIES)}, got {missed!r}")
    now = _utc("now", now)
    watermark = _utc("last_fired", last_fired) if last_fired is not None else _utc("created", created)
    if next_fire(schedule, after=watermark, created=created) > now:  # the common case, one step
        return []
    latest = latest_fire(schedule, at_or_before=now, created=created)
    if latest is None or latest <= watermark:
        return []
    if now - latest <= grace or missed == "once":
        return [latest]
    return []
