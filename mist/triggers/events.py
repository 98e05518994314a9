"""Event shapes, pure: what a function receives from a message-queue or schedule trigger.

`records_event(batch)` is the Lambda-like default (the shape of SQS events):

    {"Records": [{"messageId": "1712-0", "body": "{\\"order\\": 7}",
                  "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1712...", ...},
                  "messageAttributes": {"tenant": "acme"},
                  "eventSource": "mist:redis", "eventSourceArn": "redis://10.0.0.5:6379/0?stream=orders"}]}

"body" is the message as UTF-8 text, or base64 with "bodyEncoding": "base64" when it is not
valid UTF-8. "attributes" is what the broker says (ApproximateReceiveCount = the delivery
count, SentTimestamp in ms where the broker records it, subject / topic / routingKey...);
"messageAttributes" is what the publisher attached (Redis fields other than "body", NATS and
AMQP headers, MQTT 5 user properties), as plain strings.

`cloudevents(batch)` is the `--format cloudevents` alternative: a JSON array of CloudEvents 1.0
in structured mode (the "batched" format, application/cloudevents-batch+json), one per message.

`scheduled_event(...)` is EventBridge's "Scheduled Event", for cron and rate triggers.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from mist.triggers.connectors.base import Message

EVENT_SOURCES = {"redis": "redis", "rediss": "redis", "nats": "nats", "tls": "nats", "amqp": "rabbitmq",
                 "amqps": "rabbitmq", "mqtt": "mqtt", "mqtts": "mqtt", "memory": "memory"}
CLOUDEVENTS_BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
SCHEDULE_NAMESPACE = uuid.UUID("6f0c1d5e-2b7a-4c53-9b1e-6d6973742d73")  # ids of scheduled events
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
_CE_RESERVED = {"specversion", "id", "source", "type", "time", "subject", "datacontenttype", "dataschema",
                "data", "data_base64", "deliverycount"}


def event_source(message: Message) -> str:
    """"mist:redis" | "mist:nats" | "mist:rabbitmq" | "mist:mqtt", from the message's source URI."""
    return "mist:" + EVENT_SOURCES.get(urlsplit(message.source).scheme, "unknown")


def _body(body: bytes) -> dict[str, str]:
    try:
        return {"body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body": base64.b64encode(body).decode("ascii"), "bodyEncoding": "base64"}


def record(message: Message) -> dict[str, Any]:
    return {
        "messageId": message.id,
        **_body(message.body),
        "attributes": {"ApproximateReceiveCount": str(message.delivery_count), **message.attributes},
        "messageAttributes": dict(message.headers),
        "eventSource": event_source(message),
        "eventSourceArn": message.source,
    }


def records_event(batch: Sequence[Message]) -> dict[str, Any]:
    return {"Records": [record(m) for m in batch]}


def _rfc3339(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _content_type(message: Message) -> str | None:
    if message.attributes.get("contentType"):
        return message.attributes["contentType"]
    for name, value in message.headers.items():
        if name.lower() == "content-type" and value:
            return value
    return None


def cloudevent(message: Message) -> dict[str, Any]:
    """One message as a structured-mode CloudEvent 1.0.

    data: the body as a JSON value when it is JSON (declared or sniffed), as text when it is
    UTF-8, else base64 in data_base64. The publisher's headers whose names are valid extension
    names (lowercase letters and digits, at most 20) become extension attributes; others are
    left out (the Lambda format carries them all)."""
    kind = EVENT_SOURCES.get(urlsplit(message.source).scheme, "unknown")
    sent = message.attributes.get("SentTimestamp")
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": message.id,
        "source": message.source,
        "type": f"mist.{kind}.message",
        "time": _rfc3339(int(sent) / 1000 if sent else message.received_at),
        "deliverycount": message.delivery_count,
    }
    subject = next((message.attributes[k] for k in ("subject", "topic", "routingKey") if message.attributes.get(k)),
                   None)
    if subject:
        event["subject"] = subject
    declared = _content_type(message)
    try:
        text = message.body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    data: Any = None
    is_json = False
    if text is not None and (declared is None or "json" in declared.lower()):
        try:
            data, is_json = json.loads(text), True
        except ValueError:
            is_json = False
    if is_json:
        event["datacontenttype"] = declared or "application/json"
        event["data"] = data
    elif text is not None:
        event["datacontenttype"] = declared or "text/plain; charset=utf-8"
        event["data"] = text
    else:
        event["datacontenttype"] = declared or "application/octet-stream"
        event["data_base64"] = base64.b64encode(message.body).decode("ascii")
    for name, value in message.headers.items():
        if _EXTENSION_NAME.match(name) and name not in _CE_RESERVED:
            event[name] = value
    return event


def cloudevents(batch: Sequence[Message]) -> list[dict[str, Any]]:
    return [cloudevent(m) for m in batch]


def event_for(format: str, batch: Sequence[Message]) -> dict[str, Any] | list[dict[str, Any]]:
    """The event for one batch in the trigger's format ("lambda" or "cloudevents")."""
    return cloudevents(batch) if format == "cloudevents" else records_event(batch)


def encode(event: Any) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def scheduled_event(rule: str, fire_time: datetime, *, region: str = "local",
                    account: str = "000000000000") -> dict[str, Any]:
    """EventBridge's Scheduled Event for one fire of the rule (the trigger's name).

    "source" is "aws.events", as EventBridge sends it, so Lambda code that checks it (warmers,
    schedule handlers) runs unchanged. The id is derived from the rule and the fire time: a
    fire delivered twice (at least once) carries the same id, so a handler can deduplicate.
    """
    t = fire_time.astimezone(timezone.utc)
    stamp = t.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "version": "0",
        "id": str(uuid.uuid5(SCHEDULE_NAMESPACE, f"{rule}/{t.isoformat()}")),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": stamp,
        "region": region,
        "resources": [f"arn:aws:events:{region}:{account}:rule/{rule}"],
        "detail": {},
    }
