"""Triggers: what runs a function without a caller. Object-storage events, schedules, message queues.

    trigger = await manager.add("thumbnail", {"kind": "s3", "bucket": "photos", "events": [...]})
    await manager.list(function=None)     -> [TriggerView] with each trigger's live status
    await manager.remove(trigger_id)

Three kinds, one rule: an event mist accepted is delivered at least once.

- **s3**: every object created or removed in mist's S3 endpoint leaves an event in the object
  store's outbox, written in the same transaction as the object's metadata (mist/s3/outbox.py).
  `_s3_loop` reads the outbox, enqueues one asynchronous invocation per matching trigger
  (`EventService.enqueue`, idempotency key `s3:<outbox id>:<trigger id>`) and only then
  acknowledges the outbox rows: a crash in between enqueues again, and the key makes the
  repeat a no-op. The event is S3's notification record, `{"Records": [record]}`.
- **cron**: `--cron` or `--rate` (mist/triggers/schedule.py). `_cron_loop` asks `due()` for each
  trigger, enqueues the EventBridge scheduled event with the idempotency key `cron:<trigger
  id>:<fire time>`, then stores the fire time as the trigger's watermark. A crash between the
  two fires the same time again, which the key turns into a no-op: no duplicate across
  restarts. Missed fires while mist was down: `missed` "skip" (default) or "once".
- **queue**: Redis Streams, NATS JetStream, RabbitMQ, MQTT (mist/triggers/connectors/). One
  Connector per trigger runs inside mist; each batch is one synchronous invocation of the
  function's newest version (the message is acknowledged to the broker only after it
  succeeded), `batchItemFailures` retries just those messages, and a message that failed
  `max_attempts` times goes to the function's dead-letter queue.

Asynchronous invocations then retry on function errors and dead-letter as configured per
function (docs/events.md); a function scaled to zero is started by the activator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Protocol
from urllib.parse import urlsplit

import sqlalchemy as sa

from mist.core.retry import Backoff, backoff_s
from mist.errors import Forbidden, FunctionError, InvalidRequest, MistError, NotFound
from mist.models import DEFAULT_TENANT, split_id
from mist.triggers.connectors import connector_for
from mist.triggers.connectors.base import Connector, Message
from mist.triggers.connectors.spec import ConnectorSpec, Tuning
from mist.triggers.deliver import batch_deliverer
from mist.triggers.events import encode, event_for, scheduled_event
from mist.triggers.schedule import MISSED_POLICIES, due, next_fire, parse_schedule

log = logging.getLogger("mist.triggers")

KINDS = ("s3", "cron", "queue")
S3_EVENTS = (
    "s3:ObjectCreated:*", "s3:ObjectCreated:Put", "s3:ObjectCreated:Copy",
    "s3:ObjectCreated:CompleteMultipartUpload", "s3:ObjectRemoved:*", "s3:ObjectRemoved:Delete",
)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_QUEUE_TARGETS = ("stream", "subject", "queue", "topic")
CONNECT_WAIT_S = 5.0  # how long adding a queue trigger waits for its consumer to exist
_QUEUE_OPTIONS = ("source", *_QUEUE_TARGETS, "batch_size", "batch_window_s", "max_attempts", "format",
                  "max_consumers", "group")


# --- what a trigger is (pure) -------------------------------------------------------------------


@dataclass(frozen=True)
class Trigger:
    id: str
    function: str
    kind: str  # s3 | cron | queue
    config: dict[str, Any]  # normalized by `validate_config`; a queue's source may hold credentials
    created_at: float  # unix seconds
    last_fired: float | None = None  # cron: the watermark (the last fire time enqueued)

    def public_config(self) -> dict[str, Any]:
        """The config as shown to users: a queue source's password is never shown."""
        if self.kind != "queue":
            return dict(self.config)
        return {**self.config, "source": redact(self.config["source"])}


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def _expect(body: dict[str, Any], allowed: Sequence[str], kind: str) -> None:
    unknown = sorted(set(body) - set(allowed) - {"kind"})
    if unknown:
        raise InvalidRequest(f"a {kind} trigger has no option {unknown[0]!r}; its options are {', '.join(allowed)}")


def validate_config(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(kind, normalized config) from an API body, or InvalidRequest naming the bad field."""
    if not isinstance(body, dict):
        raise InvalidRequest("a trigger is a JSON object, e.g. {\"kind\": \"cron\", \"cron\": \"*/5 * * * *\"}")
    kind = body.get("kind")
    if kind not in KINDS:
        raise InvalidRequest(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "s3":
        _expect(body, ("bucket", "events", "prefix", "suffix"), kind)
        bucket = body.get("bucket")
        if not isinstance(bucket, str) or not _BUCKET.match(bucket):
            raise InvalidRequest(f"bucket must be an S3 bucket name (3-63 of a-z 0-9 . -), got {bucket!r}")
        events = body.get("events") or ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
        if isinstance(events, str):
            events = [e.strip() for e in events.split(",") if e.strip()]
        bad = [e for e in events if e not in S3_EVENTS]
        if bad or not events:
            raise InvalidRequest(f"events: {bad[0] if bad else 'none'!r} is not an S3 event type; use {', '.join(S3_EVENTS)}")
        config: dict[str, Any] = {"bucket": bucket, "events": sorted(set(events))}
        for key in ("prefix", "suffix"):
            value = body.get(key) or ""
            if not isinstance(value, str) or len(value.encode()) > 1024:
                raise InvalidRequest(f"{key} must be a string of at most 1024 bytes, got {value!r}")
            config[key] = value
        return kind, config
    if kind == "cron":
        _expect(body, ("cron", "rate", "missed"), kind)
        cron, rate = body.get("cron"), body.get("rate")
        if (cron is None) == (rate is None):
            raise InvalidRequest("a schedule needs exactly one of cron (e.g. \"*/5 * * * *\") or rate (e.g. \"5 minutes\")")
        parse_schedule(cron=cron, rate=rate)  # raises InvalidRequest with the reason
        missed = body.get("missed") or "skip"
        if missed not in MISSED_POLICIES:
            raise InvalidRequest(f"missed must be one of {', '.join(MISSED_POLICIES)}, got {missed!r}")
        return kind, {"cron": cron, "rate": rate, "missed": missed}
    _expect(body, _QUEUE_OPTIONS, kind)
    if not isinstance(body.get("source"), str):
        raise InvalidRequest("source is required: the broker URL, e.g. redis://127.0.0.1:6379/0")
    config = {k: body[k] for k in _QUEUE_OPTIONS if body.get(k) is not None}
    connector_spec(config)  # raises InvalidRequest naming the field
    return kind, config


def connector_spec(config: dict[str, Any], trigger_id: str | None = None, *, instance: str | None = None,
                   tuning: Tuning | None = None) -> ConnectorSpec:
    """The connector's spec. Each trigger reads through its own consumer group (durable
    consumer, MQTT shared subscription) named after it unless one is given, so two triggers on
    one stream each get every message instead of splitting them; `instance` names this process
    in the group, so a cluster's processes split a trigger's messages."""
    options = {k: config[k] for k in _QUEUE_OPTIONS if k in config and k != "source"}
    if trigger_id is not None and not options.get("group"):
        options["group"] = f"mist-{trigger_id}"
    return ConnectorSpec.from_options(config["source"], instance=instance, tuning=tuning, **options)


def broker_allowed(tenant: str, source: str, allowed: Sequence[str]) -> bool:
    """May a queue trigger of `tenant` read from the broker at `source`? mist connects to it
    from its own host, so another tenant could otherwise make mist read the host's own services
    (its Redis on 127.0.0.1, say): only the default tenant (the operator's) may name any broker;
    other tenants only those the operator allows (`mist up --trigger-broker HOST[:PORT]`).

        >>> broker_allowed("acme", "redis://10.0.0.5:6379/0", ["10.0.0.5:6379"])
        True
        >>> broker_allowed("acme", "redis://127.0.0.1:6379/0", ["10.0.0.5"])
        False
    """
    if tenant == DEFAULT_TENANT:
        return True
    parts = urlsplit(source)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        return False
    return any(a.lower() in (host, f"{host}:{port}") for a in allowed)


def s3_matches(config: dict[str, Any], bucket: str, event_name: str, key: str) -> bool:
    """Does an S3 event (bucket, "ObjectCreated:Put", key) match a trigger's filter? As S3's
    notification configuration: an event type, or its family with `*`; key prefix and suffix."""
    if bucket != config["bucket"] or not key.startswith(config["prefix"]) or not key.endswith(config["suffix"]):
        return False
    family = event_name.split(":", 1)[0]
    wanted = set(config["events"])
    return f"s3:{event_name}" in wanted or f"s3:{family}:*" in wanted


def new_trigger_id() -> str:
    return "trg-" + secrets.token_hex(8)


# --- where triggers are kept --------------------------------------------------------------------


class TriggerStore(Protocol):
    def add_trigger(self, trigger: Trigger) -> None: ...

    def list_triggers(self) -> list[Trigger]: ...

    def delete_trigger(self, trigger_id: str) -> bool: ...

    def set_last_fired(self, trigger_id: str, fired_at: float) -> None:
        """Move the watermark forward (never back)."""


class MemoryTriggerStore:
    def __init__(self) -> None:
        self._triggers: dict[str, Trigger] = {}

    def add_trigger(self, trigger: Trigger) -> None:
        self._triggers[trigger.id] = trigger

    def list_triggers(self) -> list[Trigger]:
        return sorted(self._triggers.values(), key=lambda t: (t.created_at, t.id))

    def delete_trigger(self, trigger_id: str) -> bool:
        return self._triggers.pop(trigger_id, None) is not None

    def set_last_fired(self, trigger_id: str, fired_at: float) -> None:
        t = self._triggers.get(trigger_id)
        if t is not None and (t.last_fired is None or fired_at > t.last_fired):
            self._triggers[trigger_id] = replace(t, last_fired=fired_at)


_meta = sa.MetaData()
_triggers = sa.Table(
    "triggers", _meta,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("function", sa.String(127), nullable=False, index=True),  # the function's id (tenant/name)
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_fired", sa.Float),
)


def create_tables(bind: sa.Engine | sa.Connection) -> None:
    _meta.create_all(bind)


class SqlTriggerStore:
    """Triggers in the control database (SQLite or PostgreSQL), next to the event queue."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        create_tables(engine)

    def add_trigger(self, trigger: Trigger) -> None:
        with self.engine.begin() as conn:
            conn.execute(_triggers.insert().values(
                id=trigger.id, function=trigger.function, kind=trigger.kind, config=json.dumps(trigger.config),
                created_at=trigger.created_at, last_fired=trigger.last_fired))

    def list_triggers(self) -> list[Trigger]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(_triggers).order_by(_triggers.c.created_at, _triggers.c.id)).all()
        return [Trigger(r.id, r.function, r.kind, json.loads(r.config), r.created_at, r.last_fired) for r in rows]

    def delete_trigger(self, trigger_id: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(_triggers.delete().where(_triggers.c.id == trigger_id)).rowcount > 0

    def set_last_fired(self, trigger_id: str, fired_at: float) -> None:
        c = _triggers.c
        with self.engine.begin() as conn:
            conn.execute(_triggers.update().where(c.id == trigger_id)
                         .where(sa.or_(c.last_fired.is_(None), c.last_fired < fired_at)).values(last_fired=fired_at))


# --- the live part ------------------------------------------------------------------------------


class Enqueue(Protocol):
    async def __call__(self, function: str, payload: bytes, *, trigger: str, idempotency_key: str | None = None,
                       source_event_id: str | None = None) -> str: ...


Invoke = Callable[[str, bytes], Awaitable[bytes]]  # (function, event) -> the result, or raise


def invoker(functions: Any, invocations: Any) -> Invoke:
    """A queue trigger's invocation: the function's newest version, synchronously; a function
    error raises FunctionError (the batch failed and is retried)."""

    async def invoke(function: str, payload: bytes) -> bytes:
        fv = await functions.resolve(function)
        outcome = await invocations.invoke(fv, payload, trigger="queue")
        result = outcome.result
        if not result.ok:
            error = result.error or {}
            raise FunctionError(str(error.get("errorType", "Unhandled")), str(error.get("errorMessage", "")))
        return result.payload

    return invoke
DeadLetter = Callable[[str, dict[str, Any]], Awaitable[None]]  # (function, record)


def dead_letter_queue(queues: Any) -> DeadLetter:
    """Dead letters of queue triggers into the function's dead-letter queue (`dlq:NAME`, the
    one `mist dlq ls|show|redrive` reads), through `QueueService.send` (durable on return)."""
    from mist.control.asyncpolicy import dlq_name

    async def dead_letter(function: str, record: dict[str, Any]) -> None:
        await queues.send(dlq_name(function), encode(record))

    return dead_letter


@dataclass
class TriggerView:
    trigger: Trigger
    status: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        t = self.trigger
        tenant, name = split_id(t.function)
        return {"id": t.id, "function": name, "tenant": tenant, "kind": t.kind, "config": t.public_config(),
                "created_at": _iso(t.created_at), "status": self.status}


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class _Counts:
    delivered: int = 0
    failed: int = 0
    last_error: str | None = None
    last_at: float | None = None


class TriggerManager:
    def __init__(
        self,
        store: TriggerStore,
        *,
        enqueue: Enqueue,
        invoke: Invoke,
        dead_letter: DeadLetter,
        function_exists: Callable[[str], Awaitable[None]],
        outbox: Any = None,  # mist.s3.outbox.Outbox, or None when S3 is not served
        clock: Callable[[], float] = time.time,
        brokers: Sequence[str] = (),  # brokers tenants other than the default may read (broker_allowed)
        instance: str | None = None,  # this process in each trigger's group (ConnectorSpec.instance)
        tuning: Tuning | None = None,  # the connectors' (visibility_timeout_s: how long a dead process's messages wait)
    ) -> None:
        self._brokers = tuple(brokers)
        self._instance, self._tuning = instance, tuning
        self._store = store
        self._enqueue = enqueue
        self._invoke = invoke
        self._dead_letter = dead_letter
        self._function_exists = function_exists
        self._outbox = outbox
        self._clock = clock
        self._triggers: dict[str, Trigger] = {}
        self._connectors: dict[str, tuple[Connector, asyncio.Task]] = {}
        self._counts: dict[str, _Counts] = {}
        self._tasks: list[asyncio.Task] = []
        self._cron_wake = asyncio.Event()
        self._s3_error: str | None = None

    async def start(self) -> None:
        for t in await asyncio.to_thread(self._store.list_triggers):
            self._activate(t)
        if self._outbox is not None:
            self._tasks.append(asyncio.create_task(self._s3_loop(), name="mist-triggers-s3"))
        self._tasks.append(asyncio.create_task(self._cron_loop(), name="mist-triggers-cron"))

    async def stop(self) -> None:
        tasks = self._tasks + [task for _, task in self._connectors.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._connectors.clear()

    # -- the API's side ---------------------------------------------------------------------------
    async def add(self, function: str, body: dict[str, Any]) -> TriggerView:
        kind, config = validate_config(body)
        await self._function_exists(function)  # NotFound for an unknown function
        tenant = split_id(function)[0]
        if kind == "queue" and not broker_allowed(tenant, config["source"], self._brokers):
            raise Forbidden(
                f"queue triggers of tenant {tenant!r} may read only from brokers the operator allows "
                f"(mist up --trigger-broker HOST[:PORT]); {urlsplit(config['source']).netloc or config['source']!r} "
                "is not one of them: ask an admin"
            )
        if kind == "s3" and self._outbox is None:
            raise InvalidRequest("object storage is not served here; start mist up with an --s3-port other than 0")
        trigger = Trigger(new_trigger_id(), function, kind, config, self._clock())
        await asyncio.to_thread(self._store.add_trigger, trigger)
        self._activate(trigger)
        if kind == "queue":
            await self._until_connected(trigger.id, CONNECT_WAIT_S)
        return self._view(trigger)

    async def _until_connected(self, trigger_id: str, timeout: float) -> None:
        """A new queue trigger reads the messages published from its creation on: return once
        its consumer exists on the broker, so a message sent after `mist trigger add` returned
        is never missed. A broker that is down: return after `timeout`, the status saying so."""
        running = self._connectors.get(trigger_id)
        deadline = time.monotonic() + timeout
        while running is not None and time.monotonic() < deadline:
            if str(running[0].status().state) == "connected":
                return
            await asyncio.sleep(0.02)

    async def remove(self, trigger_id: str) -> None:
        if trigger_id not in self._triggers:
            raise NotFound(f"no trigger {trigger_id!r}; `mist trigger ls` lists them")
        await asyncio.to_thread(self._store.delete_trigger, trigger_id)
        self._deactivate(trigger_id)

    async def remove_function(self, function: str) -> int:
        """The function was deleted: so are its triggers. How many."""
        ids = [t.id for t in self._triggers.values() if t.function == function]
        for trigger_id in ids:
            await self.remove(trigger_id)
        return len(ids)

    def get(self, trigger_id: str, tenant: str | None = None) -> TriggerView:
        """One trigger (of `tenant` only, when given: another tenant's is not found)."""
        t = self._triggers.get(trigger_id)
        if t is None or (tenant is not None and split_id(t.function)[0] != tenant):
            raise NotFound(f"no trigger {trigger_id!r}; `mist trigger ls` lists them")
        return self._view(t)

    def list(self, function: str | None = None, tenant: str | None = None) -> list[TriggerView]:
        return [self._view(t) for t in sorted(self._triggers.values(), key=lambda t: (t.created_at, t.id))
                if (function is None or t.function == function)
                and (tenant is None or split_id(t.function)[0] == tenant)]

    def _view(self, t: Trigger) -> TriggerView:
        counts = self._counts.setdefault(t.id, _Counts())
        status: dict[str, Any] = {"delivered": counts.delivered, "failed": counts.failed,
                                  "last_error": counts.last_error, "last_delivery": _iso(counts.last_at)}
        if t.kind == "cron":
            c = t.config
            schedule = parse_schedule(cron=c["cron"], rate=c["rate"])
            created = datetime.fromtimestamp(t.created_at, timezone.utc)
            after = datetime.fromtimestamp(max(self._clock(), t.last_fired or 0.0), timezone.utc)
            status.update(state="scheduled", last_fired=_iso(t.last_fired),
                          next_fire=next_fire(schedule, after=after, created=created).isoformat().replace("+00:00", "Z"))
        elif t.kind == "s3":
            status["state"] = "error" if self._s3_error else "active"
            if self._s3_error:
                status["last_error"] = self._s3_error
        else:
            running = self._connectors.get(t.id)
            if running is not None:
                s = running[0].status()
                status.update(state=str(s.state), since=_iso(s.since), backlog=s.backlog, consumers=s.consumers,
                              delivered=s.delivered, failed=s.failed, dead_lettered=s.dead_lettered,
                              last_error=s.last_error)
        return TriggerView(t, status)

    def statistics(self) -> dict[str, object]:
        by_kind: dict[str, int] = {}
        for t in self._triggers.values():
            by_kind[t.kind] = by_kind.get(t.kind, 0) + 1
        return {"triggers": by_kind, "delivered": sum(c.delivered for c in self._counts.values())}

    # -- activation ---------------------------------------------------------------------------------
    def _activate(self, t: Trigger) -> None:
        self._triggers[t.id] = t
        self._counts.setdefault(t.id, _Counts())
        if t.kind == "cron":
            self._cron_wake.set()
        elif t.kind == "queue":
            try:
                spec = connector_spec(t.config, t.id, instance=self._instance, tuning=self._tuning)
                connector = connector_for(spec)
            except MistError as exc:  # stored by an older version with other rules: report, don't crash
                self._counts[t.id].last_error = exc.message
                return
            deliver = batch_deliverer(lambda payload, f=t.function: self._invoke_for_queue(t.id, f, payload),
                                      spec.format)
            task = asyncio.create_task(connector.run(deliver, lambda m, e, t=t: self._dead_letter_message(t, m, e)),
                                       name=f"mist-trigger-{t.id}")
            self._connectors[t.id] = (connector, task)

    async def follow(self) -> list[str]:
        """Catch up with triggers added or removed through other processes of a cluster
        (ChangeFeed topic "triggers"): those are started or stopped here too; a schedule's
        watermark moved elsewhere is taken. A cron time fired by two processes is enqueued once
        (its idempotency key); queue triggers consume on every process, as competing consumers
        where the broker has them (docs/cluster.md). Returns the ids started or stopped."""
        stored = {t.id: t for t in await asyncio.to_thread(self._store.list_triggers)}
        changed = sorted(set(stored) ^ set(self._triggers))
        for trigger_id in changed:
            if trigger_id in stored:
                self._activate(stored[trigger_id])
            else:
                self._deactivate(trigger_id)
        for trigger_id, t in stored.items():
            held = self._triggers.get(trigger_id)
            if held is not None and (t.last_fired or 0.0) > (held.last_fired or 0.0):
                self._triggers[trigger_id] = replace(held, last_fired=t.last_fired)
        return changed

    def _deactivate(self, trigger_id: str) -> None:
        self._triggers.pop(trigger_id, None)
        self._counts.pop(trigger_id, None)
        running = self._connectors.pop(trigger_id, None)
        if running is not None:
            running[1].cancel()

    # -- queue triggers ------------------------------------------------------------------------------
    async def _invoke_for_queue(self, trigger_id: str, function: str, payload: bytes) -> bytes:
        counts = self._counts.setdefault(trigger_id, _Counts())
        counts.last_at = self._clock()
        try:
            result = await self._invoke(function, payload)
        except MistError as exc:
            counts.failed += 1
            counts.last_error = exc.message
            raise
        counts.delivered += 1
        return result

    async def _dead_letter_message(self, trigger: Trigger, message: Message, error: str) -> None:
        """Lambda's destination record for a message that failed its last attempt; its
        requestPayload is the one-message event, so `mist dlq redrive` runs it again."""
        record = {
            "version": "1.0", "timestamp": _iso(self._clock()),
            "requestContext": {"requestId": message.id, "functionArn": f"arn:mist:function:{trigger.function}",
                               "condition": "RetriesExhausted", "approximateInvokeCount": message.delivery_count},
            "requestPayload": event_for(connector_spec(trigger.config).format, [message]),
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": {"errorType": "Trigger.MessageFailed", "errorMessage": error},
            "trigger": trigger.id,
        }
        await self._dead_letter(trigger.function, record)

    # -- s3 ---------------------------------------------------------------------------------------------
    async def _s3_loop(self) -> None:
        failures = 0
        while True:
            try:
                events = await self._outbox.pending_events(500)
                if not events:
                    await self._outbox.wait_for_events(1.0)
                    continue
                await self.deliver_s3(events)
                await self._outbox.ack_events([e.id for e in events])
                failures, self._s3_error = 0, None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the store or the queue is unhappy: retry, never lose
                failures += 1
                self._s3_error = f"{type(exc).__name__}: {exc}"
                log.warning("delivering S3 events failed (%d): %s", failures, self._s3_error)
                await asyncio.sleep(backoff_s(min(failures, 10), draw=0.5, policy=Backoff(0.2, 2, 10)))

    async def deliver_s3(self, events: Sequence[Any]) -> int:
        """Enqueue each outbox event for each matching trigger; how many invocations. The
        enqueues go concurrently, so the event queue commits them together (one fsync for the
        batch, not one per event); any failure but a missing function raises, and the caller
        delivers the whole batch again (the idempotency keys make the repeats no-ops)."""
        triggers = [t for t in self._triggers.values() if t.kind == "s3"]
        work = [(ev, t) for ev in events for t in triggers
                if split_id(t.function)[0] == ev.owner and s3_matches(t.config, ev.bucket, ev.event_name, ev.key)]
        results = await asyncio.gather(*(
            self._enqueue(t.function, encode({"Records": [ev.record]}), trigger="s3",
                          idempotency_key=f"s3:{ev.id}:{t.id}", source_event_id=f"s3:{ev.id}")
            for ev, t in work), return_exceptions=True)
        n = 0
        for (_, t), result in zip(work, results):
            counts = self._counts.setdefault(t.id, _Counts())
            if isinstance(result, NotFound):  # the function is gone: nothing to deliver to
                counts.failed += 1
                counts.last_error = result.message
            elif isinstance(result, BaseException):
                raise result
            else:
                counts.delivered += 1
                counts.last_at = self._clock()
                n += 1
        return n

    # -- cron ---------------------------------------------------------------------------------------------
    async def _cron_loop(self) -> None:
        while True:
            try:
                wait = await self.fire_due()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - try again shortly; the watermark keeps it exact
                log.exception("firing schedules failed")
                wait = 5.0
            self._cron_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):  # not wait_for: it can lose stop()'s cancel (3.11)
                    await self._cron_wake.wait()

    async def fire_due(self) -> float:
        """Enqueue every due fire; seconds until the next one (at most 30)."""
        now_s = self._clock()
        now = datetime.fromtimestamp(now_s, timezone.utc)
        wait = 30.0
        for t in [t for t in self._triggers.values() if t.kind == "cron"]:
            c = t.config
            schedule = parse_schedule(cron=c["cron"], rate=c["rate"])
            created = datetime.fromtimestamp(t.created_at, timezone.utc)
            last = datetime.fromtimestamp(t.last_fired, timezone.utc) if t.last_fired is not None else None
            for fire in due(schedule, last, created, now, c["missed"]):
                counts = self._counts.setdefault(t.id, _Counts())
                try:
                    await self._enqueue(t.function, encode(scheduled_event(t.id, fire)), trigger="cron",
                                        idempotency_key=f"cron:{t.id}:{fire.isoformat()}")
                    counts.delivered += 1
                    counts.last_at = now_s
                except NotFound as exc:
                    counts.failed += 1
                    counts.last_error = exc.message
                fired = fire.timestamp()
                await asyncio.to_thread(self._store.set_last_fired, t.id, fired)
                if t.id in self._triggers:
                    self._triggers[t.id] = t = replace(t, last_fired=fired)
            after = datetime.fromtimestamp(max(now_s, t.last_fired or 0.0), timezone.utc)
            wait = min(wait, max(0.05, next_fire(schedule, after=after, created=created).timestamp() - now_s))
        return wait
