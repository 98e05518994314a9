"""Message-queue connectors: one per broker, all behind the Connector protocol (base.py).

    connector = connector_for(ConnectorSpec.from_options(url, stream=..., batch_size=...))

Broker modules are imported on first use, so a mist that has no MQTT trigger never loads paho.
"""

from __future__ import annotations

import importlib

from mist.errors import InvalidRequest
from mist.triggers.connectors.base import (
    Connector,
    ConnectorState,
    ConnectorStatus,
    DeadLetter,
    Deliver,
    Message,
)
from mist.triggers.connectors.spec import ConnectorSpec, Tuning

_CLASSES = {
    "redis": ("mist.triggers.connectors.redis_streams", "RedisStreamsConnector"),
    "nats": ("mist.triggers.connectors.nats_jetstream", "NatsJetStreamConnector"),
    "amqp": ("mist.triggers.connectors.rabbitmq", "RabbitMQConnector"),
    "mqtt": ("mist.triggers.connectors.mqtt", "MqttConnector"),
}


def connector_for(spec: ConnectorSpec) -> Connector:
    """A new, not yet running connector for the spec (validated here too)."""
    spec = spec.validate()
    if spec.kind not in _CLASSES:
        raise InvalidRequest(f"source: {spec.kind}:// sources are for tests; build MemoryConnector(spec, broker)")
    module, name = _CLASSES[spec.kind]
    connector: Connector = getattr(importlib.import_module(module), name)(spec)
    return connector


__all__ = ["Connector", "ConnectorSpec", "ConnectorState", "ConnectorStatus", "DeadLetter", "Deliver", "Message",
           "Tuning", "connector_for"]
