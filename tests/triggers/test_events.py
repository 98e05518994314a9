import base64
import json
from datetime import datetime, timezone

import pytest

from mist.triggers.connectors import ConnectorSpec, Message
from mist.triggers.events import cloudevent, encode, event_for, records_event, scheduled_event


def message(body: bytes = b'{"order": 7}', *, source: str = "redis://10.0.0.5:6379/0?stream=orders",
            attributes: dict[str, str] | None = None, headers: dict[str, str] | None = None,
            count: int = 1) -> Message:
    return Message("1706702400000-0", body, {"SentTimestamp": "1706702400000", **(attributes or {})}, source,
                   count, 1706702401.5, headers or {})


def test_records_carry_the_body_attributes_and_source_like_sqs_records():
    event = records_event([message(headers={"tenant": "acme"}, count=2)])
    assert event == {"Records": [{
        "messageId": "1706702400000-0",
        "body": '{"order": 7}',
        "attributes": {"ApproximateReceiveCount": "2", "SentTimestamp": "1706702400000"},
        "messageAttributes": {"tenant": "acme"},
        "eventSource": "mist:redis",
        "eventSourceArn": "redis://10.0.0.5:6379/0?stream=orders",
    }]}


def test_a_body_that_is_not_utf8_is_base64_with_its_encoding_named():
    raw = b"\xff\xfe\x00binary"
    record = records_event([message(raw)])["Records"][0]
    assert record["bodyEncoding"] == "base64" and base64.b64decode(record["body"]) == raw
    assert "bodyEncoding" not in records_event([message("héllo".encode())])["Records"][0]


@pytest.mark.parametrize(
    ("url", "option", "event_source"),
    [("redis://h", "stream", "mist:redis"), ("nats://h", "subject", "mist:nats"),
     ("amqp://h", "queue", "mist:rabbitmq"), ("mqtts://h", "topic", "mist:mqtt")],
)
def test_the_event_source_names_the_broker_and_the_arn_has_no_credentials(url, option, event_source):
    with_credentials = url.replace("://", "://user:s3cret@")
    spec = ConnectorSpec.from_options(with_credentials, **{option: "t"})
    record = records_event([message(source=spec.source)])["Records"][0]
    assert record["eventSource"] == event_source
    assert "s3cret" not in record["eventSourceArn"] and "user" not in record["eventSourceArn"]


def test_a_json_body_becomes_cloudevent_data_with_the_source_subject_and_delivery_count():
    ce = cloudevent(message(attributes={"subject": "orders.created"}, headers={"tenant": "acme", "Bad-Name": "x"},
                            count=3))
    assert ce == {
        "specversion": "1.0", "id": "1706702400000-0", "source": "redis://10.0.0.5:6379/0?stream=orders",
        "type": "mist.redis.message", "time": "2024-01-31T12:00:00.000Z", "deliverycount": 3,
        "subject": "orders.created", "datacontenttype": "application/json", "data": {"order": 7},
        "tenant": "acme",  # a valid extension name; "Bad-Name" is not one and is left out
    }


@pytest.mark.parametrize(
    ("body", "attributes", "content_type", "key", "data"),
    [
        (b"plain words", {}, "text/plain; charset=utf-8", "data", "plain words"),
        (b"[1, 2]", {"contentType": "text/csv"}, "text/csv", "data", "[1, 2]"),  # declared type wins
        (b'{"a": 1}', {"contentType": "application/vnd.x+json"}, "application/vnd.x+json", "data", {"a": 1}),
        (b"\x00\xff", {}, "application/octet-stream", "data_base64", "AP8="),
    ],
)
def test_cloudevent_data_follows_the_content(body, attributes, content_type, key, data):
    ce = cloudevent(message(body, attributes=attributes))
    assert ce["datacontenttype"] == content_type and ce[key] == data
    assert ({"data", "data_base64"} - {key}).isdisjoint(ce)


def test_without_a_sent_time_the_cloudevent_time_is_when_mist_received_it():
    m = Message("7", b"x", {}, "mqtt://h:1883?topic=a", 1, 1706702401.5)
    assert cloudevent(m)["time"] == "2024-01-31T12:00:01.500Z"


def test_the_format_picks_records_or_a_cloudevents_batch():
    batch = [message(), message()]
    assert list(event_for("lambda", batch)) == ["Records"]
    ce = event_for("cloudevents", batch)
    assert isinstance(ce, list) and len(ce) == 2 and ce[0]["specversion"] == "1.0"


def test_events_encode_as_compact_utf8_json():
    assert encode({"a": "é", "b": [1]}) == '{"a":"é","b":[1]}'.encode()


def test_the_scheduled_event_is_eventbridges():
    fire = datetime(2024, 1, 31, 12, 5, tzinfo=timezone.utc)
    event = scheduled_event("nightly-report", fire, region="eu-west-1", account="123456789012")
    assert event == {
        "version": "0", "id": event["id"], "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "123456789012", "time": "2024-01-31T12:05:00Z", "region": "eu-west-1",
        "resources": ["arn:aws:events:eu-west-1:123456789012:rule/nightly-report"], "detail": {},
    }
    assert json.loads(encode(event)) == event


def test_a_fire_delivered_twice_has_one_id_and_each_fire_its_own():
    fire = datetime(2024, 1, 31, 12, 5, tzinfo=timezone.utc)
    later = datetime(2024, 1, 31, 12, 10, tzinfo=timezone.utc)
    assert scheduled_event("r", fire)["id"] == scheduled_event("r", fire)["id"]
    assert len({scheduled_event("r", fire)["id"], scheduled_event("r", later)["id"],
                scheduled_event("other", fire)["id"]}) == 3
