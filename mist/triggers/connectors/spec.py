"""ConnectorSpec: what one message-queue trigger reads and how, parsed from the CLI's options.

    spec = ConnectorSpec.from_options("redis://:secret@10.0.0.5:6379/0", stream="orders",
                                      batch_size=100, batch_window_s=2, group="mist-resize-7")

`url` is kept as given (it may carry credentials and is used only to connect); `source` is the
same address without credentials, with the target as a query parameter. It is stable, so it is
the eventSourceArn / CloudEvents source and is safe to show:

    >>> ConnectorSpec.from_options("amqp://guest:guest@localhost", queue="jobs").source
    'amqp://localhost:5672/%2F?queue=jobs'

`group` names mist's side at the broker and must be stable across restarts and unique per
trigger: the Redis consumer group, the JetStream durable consumer, the MQTT shared subscription
(`$share/<group>/<topic>`), the RabbitMQ connection name. Two triggers with the same group on
one source share its messages instead of each getting all of them, so the trigger manager
passes one per trigger; the processes of a cluster (`mist up --db`) share a trigger's messages
the same way, each consuming as `instance`.

`instance` names this process within the group and must be stable across its restarts and
distinct per process: the Redis consumer names `<instance>-<i>` and the MQTT client id
`<group>.<instance>` (a persistent session). What a process held when it crashed comes back to
it when it restarts under the same instance; `mist up` uses the host name and a digest of its
data dir.
"""

from __future__ import annotations

import hashlib
import re
import socket
from dataclasses import dataclass, field, replace
from typing import Literal
from urllib.parse import quote, unquote, urlsplit

from mist.core.retry import Backoff
from mist.errors import InvalidRequest

Kind = Literal["redis", "nats", "amqp", "mqtt", "memory"]
Format = Literal["lambda", "cloudevents"]

# scheme -> (kind, default port, the option that names the target)
SCHEMES: dict[str, tuple[Kind, int, str]] = {
    "redis": ("redis", 6379, "stream"),
    "rediss": ("redis", 6379, "stream"),
    "nats": ("nats", 4222, "subject"),
    "tls": ("nats", 4222, "subject"),
    "amqp": ("amqp", 5672, "queue"),
    "amqps": ("amqp", 5671, "queue"),
    "mqtt": ("mqtt", 1883, "topic"),
    "mqtts": ("mqtt", 8883, "topic"),
    "memory": ("memory", 0, "queue"),  # MemoryConnector, for tests (not through connector_for)
}
TARGET_OPTIONS = ("stream", "subject", "queue", "topic")
FORMATS: tuple[str, ...] = ("lambda", "cloudevents")
_GROUP = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_INSTANCE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def process_instance(tag: str = "") -> str:
    """This process's instance: the host name (made safe for broker names), then `tag` (mist up:
    a digest of its data dir, so two processes on one host differ)."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:100] or "host"
    return f"{host}.{tag}" if tag else host


@dataclass(frozen=True, slots=True)
class Tuning:
    """Operational knobs with production defaults; tests shrink the delays."""

    redelivery: Backoff = Backoff(base_s=1.0, factor=2.0, cap_s=60.0)  # before a failed message comes again
    reconnect: Backoff = Backoff(base_s=0.5, factor=2.0, cap_s=30.0)  # between attempts on a failed broker
    visibility_timeout_s: float = 60.0  # unacknowledged this long (and not kept alive): another consumer may take it
    poll_s: float = 1.0  # how long one read blocks before the consumer looks around
    connect_timeout_s: float = 5.0
    scale_interval_s: float = 2.0  # how often the backlog is read and consumers scaled
    scale_down_delay_s: float = 30.0
    batches_per_consumer: float = 1.0

    def validate(self) -> Tuning:
        for key, value in (("visibility_timeout_s", self.visibility_timeout_s), ("poll_s", self.poll_s),
                           ("connect_timeout_s", self.connect_timeout_s),
                           ("scale_interval_s", self.scale_interval_s),
                           ("batches_per_consumer", self.batches_per_consumer)):
            if not value > 0:
                raise InvalidRequest(f"trigger tuning: {key} must be > 0, got {value!r}")
        if self.scale_down_delay_s < 0:
            raise InvalidRequest(f"trigger tuning: scale_down_delay_s must be >= 0, got {self.scale_down_delay_s!r}")
        self.redelivery.validate()
        self.reconnect.validate()
        return self


@dataclass(frozen=True, slots=True)
class ConnectorSpec:
    url: str  # as given, with credentials: only for connecting
    kind: Kind
    target: str  # the stream / subject / queue / topic
    batch_size: int = 10
    batch_window_s: float = 0.0  # 0: deliver what is there now
    max_attempts: int = 3  # deliveries before a failing message is dead-lettered
    format: Format = "lambda"  # the event: {"Records": [...]} or a list of CloudEvents
    max_consumers: int = 4
    group: str = ""  # "" -> derived from the source (see the module docstring)
    instance: str = field(default_factory=process_instance)  # this process (see the module docstring)
    tuning: Tuning = Tuning()

    @classmethod
    def from_options(
        cls,
        source: str,
        *,
        stream: str | None = None,
        subject: str | None = None,
        queue: str | None = None,
        topic: str | None = None,
        batch_size: int = 10,
        batch_window_s: float = 0.0,
        max_attempts: int = 3,
        format: str = "lambda",
        max_consumers: int = 4,
        group: str | None = None,
        tuning: Tuning | None = None,
        instance: str | None = None,
    ) -> ConnectorSpec:
        """`mist trigger add FUNCTION --source URL --stream/--subject/--queue/--topic X ...`, validated."""
        scheme = urlsplit(source).scheme.lower()
        if scheme not in SCHEMES:
            known = ", ".join(f"{s}://" for s in SCHEMES if s != "memory")
            raise InvalidRequest(f"source: unknown scheme in {_redact(source)!r}; use one of {known}")
        kind, _, option = SCHEMES[scheme]
        given = {k: v for k, v in zip(TARGET_OPTIONS, (stream, subject, queue, topic)) if v is not None}
        if list(given) != [option]:
            wrong = ", ".join(f"--{k}" for k in given if k != option)
            detail = f"{wrong} does not apply" if wrong else f"--{option} is missing"
            raise InvalidRequest(f"{option}: a {scheme}:// source reads a {option}: {detail}; pass --{option} NAME")
        spec = cls(url=source, kind=kind, target=given[option], batch_size=batch_size,
                   batch_window_s=batch_window_s, max_attempts=max_attempts,
                   format=format,  # type: ignore[arg-type]  # checked by validate()
                   max_consumers=max_consumers, group=group or "", tuning=tuning or Tuning())
        if instance is not None:
            spec = replace(spec, instance=instance)
        return spec.validate()

    def validate(self) -> ConnectorSpec:
        """Raise InvalidRequest naming the first bad field and the rule; return the spec with its group."""
        parts = urlsplit(self.url)
        if parts.scheme.lower() not in SCHEMES or SCHEMES[parts.scheme.lower()][0] != self.kind:
            raise InvalidRequest(f"source: {_redact(self.url)!r} is not a {self.kind} URL")
        if self.kind != "memory" and not parts.hostname:
            raise InvalidRequest(f"source: no host in {_redact(self.url)!r}; e.g. {parts.scheme}://127.0.0.1")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise InvalidRequest(f"source: bad port in {_redact(self.url)!r}") from None
        checks: list[tuple[str, object, bool, str]] = [
            ("batch_size", self.batch_size, isinstance(self.batch_size, int) and 1 <= self.batch_size <= 10000,
             "must be an integer from 1 to 10000"),
            ("batch_window_s", self.batch_window_s, 0 <= self.batch_window_s <= 300,
             "must be from 0 to 300 seconds (0: deliver what is there now)"),
            ("max_attempts", self.max_attempts, isinstance(self.max_attempts, int) and 1 <= self.max_attempts <= 1000,
             "must be an integer from 1 to 1000"),
            ("format", self.format, self.format in FORMATS, f"must be one of {', '.join(FORMATS)}"),
            ("max_consumers", self.max_consumers,
             isinstance(self.max_consumers, int) and 1 <= self.max_consumers <= 256,
             "must be an integer from 1 to 256"),
            ("group", self.group, self.group == "" or bool(_GROUP.match(self.group)),
             "must be 1-64 letters, digits, '-' or '_'"),
            ("instance", self.instance, bool(_INSTANCE.match(self.instance)),
             "must be 1-128 letters, digits, '.', '-' or '_'"),
        ]
        for key, value, ok, rule in checks:
            if not ok:
                raise InvalidRequest(f"{key} {rule}, got {value!r}")
        _check_target(self.kind, self.target, SCHEMES[parts.scheme.lower()][2])
        spec = self
        if not spec.group:
            spec = replace(spec, group="mist-" + hashlib.sha256(spec.source.encode()).hexdigest()[:16])
        spec.tuning.validate()
        return spec

    @property
    def source(self) -> str:
        """The source's stable URI without credentials (eventSourceArn)."""
        parts = urlsplit(self.url)
        scheme = parts.scheme.lower()
        _, default_port, option = SCHEMES[scheme]
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        path = ""
        if self.kind == "redis":
            path = "/" + (parts.path.strip("/") or "0")
        elif self.kind == "amqp":
            path = "/" + quote(unquote(parts.path[1:]) if len(parts.path) > 1 else "/", safe="")
        address = f"{host}:{parts.port or default_port}" if self.kind != "memory" else host
        return f"{scheme}://{address}{path}?{option}={quote(self.target, safe='/+#*>')}"


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def _check_target(kind: Kind, target: str, option: str) -> None:
    problem = ""
    if not isinstance(target, str) or not target.strip():
        problem = "must not be empty"
    elif kind == "nats":
        tokens = target.split(".")
        if any(not t or any(c.isspace() for c in t) for t in tokens):
            problem = "must be dot-separated tokens without spaces (e.g. orders.created or orders.*)"
        elif any(("*" in t and t != "*") or (">" in t and t != ">") for t in tokens) or ">" in tokens[:-1]:
            problem = "may use '*' as a whole token and '>' only as the whole last token"
    elif kind == "amqp":
        if len(target.encode()) > 255:
            problem = "must be at most 255 bytes"
        elif target.startswith("amq."):
            problem = "must not start with 'amq.' (reserved by RabbitMQ)"
    elif kind == "mqtt":
        levels = target.split("/")
        if "\x00" in target:
            problem = "must not contain NUL"
        elif any(("+" in lv and lv != "+") or ("#" in lv and lv != "#") for lv in levels) or "#" in levels[:-1]:
            problem = "may use '+' as a whole level and '#' only as the whole last level (e.g. sensors/+/temp)"
    if problem:
        raise InvalidRequest(f"{option} {problem}, got {target!r}")
