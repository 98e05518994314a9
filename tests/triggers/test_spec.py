import socket

import pytest

from mist.errors import InvalidRequest
from mist.triggers.connectors import ConnectorSpec, connector_for
from mist.triggers.connectors.mqtt import MqttConnector
from mist.triggers.connectors.nats_jetstream import NatsJetStreamConnector
from mist.triggers.connectors.rabbitmq import RabbitMQConnector
from mist.triggers.connectors.redis_streams import RedisStreamsConnector
from mist.triggers.connectors.spec import process_instance


@pytest.mark.parametrize(
    ("url", "option", "target", "kind", "source", "cls"),
    [
        ("redis://:pw@10.0.0.5/2", "stream", "orders", "redis", "redis://10.0.0.5:6379/2?stream=orders",
         RedisStreamsConnector),
        ("redis://localhost", "stream", "a b", "redis", "redis://localhost:6379/0?stream=a%20b", RedisStreamsConnector),
        ("nats://u:p@nats.internal:4333", "subject", "orders.*", "nats", "nats://nats.internal:4333?subject=orders.*",
         NatsJetStreamConnector),
        ("amqp://guest:guest@rabbit/prod", "queue", "jobs", "amqp", "amqp://rabbit:5672/prod?queue=jobs",
         RabbitMQConnector),
        ("amqps://rabbit", "queue", "jobs", "amqp", "amqps://rabbit:5671/%2F?queue=jobs", RabbitMQConnector),
        ("mqtt://broker", "topic", "sensors/+/temp", "mqtt", "mqtt://broker:1883?topic=sensors/+/temp",
         MqttConnector),
    ],
)
def test_a_source_url_and_its_target_make_a_spec_with_a_credential_free_source(url, option, target, kind, source,
                                                                                cls):
    spec = ConnectorSpec.from_options(url, **{option: target})
    assert (spec.kind, spec.target, spec.source) == (kind, target, source)
    assert (spec.batch_size, spec.batch_window_s, spec.max_attempts, spec.format) == (10, 0.0, 3, "lambda")
    assert isinstance(connector_for(spec), cls)


def test_the_default_group_is_stable_per_source_and_differs_between_sources():
    a1 = ConnectorSpec.from_options("redis://h", stream="a")
    a2 = ConnectorSpec.from_options("redis://:other-password@h", stream="a")
    b = ConnectorSpec.from_options("redis://h", stream="b")
    assert a1.group == a2.group != b.group and a1.group.startswith("mist-")
    assert ConnectorSpec.from_options("redis://h", stream="a", group="mist-fn-7").group == "mist-fn-7"


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("kafka://h", {"stream": "x"}, "unknown scheme"),
        ("redis://h", {"queue": "x"}, "--queue does not apply"),
        ("redis://h", {}, "--stream is missing"),
        ("mqtt://h", {"topic": "a", "subject": "b"}, "--subject does not apply"),
        ("redis://", {"stream": "x"}, "no host"),
        ("redis://h:99999", {"stream": "x"}, "bad port"),
        ("redis://h", {"stream": ""}, "stream must not be empty"),
        ("nats://h", {"subject": "a..b"}, "subject must be dot-separated"),
        ("nats://h", {"subject": "a.>.b"}, "'>' only as the whole last token"),
        ("nats://h", {"subject": "a.b*"}, "'*' as a whole token"),
        ("amqp://h", {"queue": "amq.gen-1"}, "reserved"),
        ("amqp://h", {"queue": "q" * 256}, "at most 255 bytes"),
        ("mqtt://h", {"topic": "a/#/b"}, "'#' only as the whole last level"),
        ("mqtt://h", {"topic": "a/b+"}, "'+' as a whole level"),
        ("redis://h", {"stream": "s", "batch_size": 0}, "batch_size must be an integer from 1 to 10000, got 0"),
        ("redis://h", {"stream": "s", "batch_size": 10001}, "batch_size"),
        ("redis://h", {"stream": "s", "batch_window_s": 301}, "batch_window_s must be from 0 to 300"),
        ("redis://h", {"stream": "s", "batch_window_s": -1}, "batch_window_s"),
        ("redis://h", {"stream": "s", "max_attempts": 0}, "max_attempts must be an integer from 1 to 1000, got 0"),
        ("redis://h", {"stream": "s", "format": "json"}, "format must be one of lambda, cloudevents, got 'json'"),
        ("redis://h", {"stream": "s", "max_consumers": 0}, "max_consumers"),
        ("redis://h", {"stream": "s", "group": "has space"}, "group must be 1-64 letters"),
        ("redis://h", {"stream": "s", "instance": "a/b"}, "instance must be 1-128 letters"),
    ],
)
def test_bad_options_are_refused_naming_the_field_and_the_rule(url, options, message):
    with pytest.raises(InvalidRequest) as info:
        ConnectorSpec.from_options(url, **options)
    assert message in info.value.message


def test_a_password_never_appears_in_a_validation_error():
    with pytest.raises(InvalidRequest) as info:
        ConnectorSpec.from_options("rediss://user:hunter2@h:99999", stream="x")
    assert "hunter2" not in info.value.message


def test_memory_sources_are_not_built_by_connector_for():
    spec = ConnectorSpec.from_options("memory://local", queue="q")
    with pytest.raises(InvalidRequest, match="MemoryConnector"):
        connector_for(spec)


def test_a_process_instance_is_the_host_name_made_safe_then_the_tag(monkeypatch):
    monkeypatch.setattr(socket, "gethostname", lambda: "db 1/eu")
    assert process_instance("ab12") == "db-1-eu.ab12"
    assert ConnectorSpec.from_options("redis://h", stream="s").instance == "db-1-eu"
