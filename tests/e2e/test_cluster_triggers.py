"""Queue triggers in a cluster, for real: two `mist up --db` processes on one fresh PostgreSQL
database and real brokers (Redis Streams, NATS JetStream, RabbitMQ, MQTT). Each trigger's
messages are split between the processes: every message reaches the function once, not once per
process; and when one process is killed with SIGKILL in the middle of a stream nothing is lost —
the survivor takes what the dead one held (Redis after --event-lease idle, JetStream after
AckWait = --event-lease, RabbitMQ at once) and MQTT's share routed to the dead process's
persistent session arrives when that process (same data dir) is started again. Messages in
flight on the killed process may run twice (at-least-once): the test allows that, not a loss.

Evidence: the log lines of the invocation records in the shared database (the function prints
one line per message)."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid

import aio_pika
import httpx
import nats
import paho.mqtt.client as mqtt
import pytest
import redis
import sqlalchemy as sa

from mist.triggers.connectors.spec import process_instance
from tests.e2e.conftest import start_server, write_function
from tests.e2e.test_cluster_state import LEASE_S, cli, start_both, until

pytestmark = pytest.mark.sandbox

N = 40  # messages per broker and phase
SLOW_S = 2.0  # how long a "slow" batch runs: no ack on the killed process in its first SLOW_S

FUNCTION = (
    "import time\n"
    "def handler(event, context):\n"
    "    bodies = [r['body'] for r in event['Records']]\n"
    "    if any('-slow-' in b for b in bodies):\n"
    f"        time.sleep({SLOW_S})\n"
    "    for b in bodies:\n"
    "        print('seen', b)\n"
)


class Brokers:
    """One stream / subject / queue / topic of each broker, fresh per test, and a publisher."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.stream, self.subject, self.queue, self.topic = (f"mist-ct-{tag}", f"mistct.{tag}", f"mist-ct-{tag}",
                                                             f"mist-ct/{tag}")
        self.triggers = {
            "redis": {"source": "redis://127.0.0.1:6379/0", "stream": self.stream},
            "nats": {"source": "nats://127.0.0.1:4222", "subject": self.subject},
            "amqp": {"source": "amqp://guest:guest@127.0.0.1:5672/", "queue": self.queue},
            "mqtt": {"source": "mqtt://127.0.0.1:1883", "topic": self.topic},
        }

    def publish(self, bodies: list[str]) -> None:
        """Every body to every broker, persistently (each body gets the broker's name in front)."""
        r = redis.Redis()
        for b in bodies:
            r.xadd(self.stream, {"body": f"redis-{b}"})
        r.close()
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        pub.connect("127.0.0.1", 1883)
        pub.loop_start()
        for sent in [pub.publish(self.topic, f"mqtt-{b}", qos=1) for b in bodies]:
            sent.wait_for_publish(10)
        pub.disconnect()  # before loop_stop, which otherwise waits out the network loop's 1 s select
        pub.loop_stop()
        asyncio.run(self._publish_async(bodies))

    async def _publish_async(self, bodies: list[str]) -> None:
        nc = await nats.connect("nats://127.0.0.1:4222")
        js = nc.jetstream()
        for b in bodies:
            await js.publish(self.subject, f"nats-{b}".encode())
        await nc.close()
        conn = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
        channel = await conn.channel()
        for b in bodies:
            await channel.default_exchange.publish(
                aio_pika.Message(f"amqp-{b}".encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=self.queue)
        await conn.close()

    def cleanup(self, groups: list[str], data_dirs: list) -> None:
        r = redis.Redis()
        r.delete(self.stream)
        r.close()
        for group in groups:  # each process's persistent MQTT session ends with a clean start
            for data_dir in data_dirs:
                tag = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]
                c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{group}.{process_instance(tag)}",
                                protocol=mqtt.MQTTv5)
                c.connect("127.0.0.1", 1883, clean_start=True)
                c.loop(1)  # the CONNACK: the session is gone
                c.disconnect()

        async def drop() -> None:
            conn = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
            channel = await conn.channel()
            for q in (self.queue, f"{self.queue}.mist-retry"):
                await channel.queue_delete(q)
            await conn.close()
            nc = await nats.connect("nats://127.0.0.1:4222")
            js = nc.jetstream()
            try:
                await js.delete_stream(await js.find_stream_name_by_subject(self.subject))
            finally:
                await nc.close()

        try:
            asyncio.run(drop())
        except Exception:  # noqa: BLE001 - best effort: a fresh tag per test anyway
            pass


def seen(engine: sa.Engine) -> list[str]:
    """The bodies the function printed, from the log lines in the shared database."""
    with engine.connect() as conn:
        texts = conn.execute(sa.text("SELECT text FROM log_lines WHERE text LIKE 'seen %'")).scalars().all()
    return [t.strip().removeprefix("seen ") for t in texts]


def connected_on(server, key: str, n: int) -> bool:
    r = httpx.get(f"{server.url}/v1/triggers", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    triggers = r.json().get("triggers", []) if r.status_code == 200 else []
    return sum(t.get("status", {}).get("state") == "connected" for t in triggers) == n


def test_queue_messages_are_split_between_the_processes_and_none_lost_when_one_is_killed(tmp_path, fresh_pg_url):
    brokers = Brokers()
    a, b = start_both(tmp_path, fresh_pg_url)
    restarted = None
    groups: list[str] = []
    engine = sa.create_engine(fresh_pg_url)
    try:
        admin = next(s for s in (a, b) if (s.data_dir / "admin.key").exists()).admin_key
        src = write_function(tmp_path / "fn", {"main.py": FUNCTION})
        deployed = cli(a, admin, "deploy", "seen", str(src), "--concurrency", "16")
        assert deployed.returncode == 0, deployed.stderr
        for config in brokers.triggers.values():
            r = httpx.post(f"{a.url}/v1/functions/seen/triggers", json={"kind": "queue", **config},
                           headers={"Authorization": f"Bearer {admin}"}, timeout=30)
            assert r.status_code == 201, r.text
            groups.append(f"mist-{r.json()['id']}")
        for s in (a, b):  # b follows the triggers table within ~1 s
            until(f"the 4 triggers connected on {s.url}", lambda s=s: connected_on(s, admin, 4), timeout=15)

        # 1. both alive: each message exactly once in the cluster, and both processes took a share
        fast = [f"fast-{i}" for i in range(N)]
        brokers.publish(fast)
        expected = {f"{k}-{b}" for k in brokers.triggers for b in fast}
        until("every fast message seen", lambda: expected <= set(seen(engine)), timeout=20)
        with engine.connect() as conn:
            invocations = conn.execute(sa.text(
                "SELECT count(DISTINCT invocation_id) FROM log_lines WHERE text LIKE 'seen %-fast-%'")).scalar()
        got = [x for x in seen(engine) if "-fast-" in x]
        dupes = sorted({x for x in got if got.count(x) > 1})
        assert not dupes, f"invoked more than once with both processes alive: {dupes[:10]}"
        assert len(got) == 4 * N
        assert invocations >= 4, "batches were delivered (sanity of the evidence)"
        shares = []  # what each process's connectors acknowledged
        for s in (a, b):
            r = httpx.get(f"{s.url}/v1/triggers", headers={"Authorization": f"Bearer {admin}"}, timeout=10)
            shares.append(sum(t["status"].get("delivered") or 0 for t in r.json()["triggers"]))
        assert sum(shares) == 4 * N and min(shares) > 0, f"both processes consume: {shares}"

        # 2. a is killed while it runs slow batches: nothing is lost
        slow = [f"slow-{i}" for i in range(N)]
        published_at = time.monotonic()
        brokers.publish(slow)
        elapsed = time.monotonic() - published_at
        # killed before any slow batch a started can finish: what a acknowledged has its record
        # in the database (records are written every 50 ms), so the log lines are full evidence
        assert elapsed < SLOW_S / 2, f"publishing took {elapsed:.2f} s: the kill would come too late"
        time.sleep(SLOW_S / 2 - elapsed)
        a.proc.kill()
        a.proc.wait()
        want = {f"{k}-{b}" for k in brokers.triggers for b in slow}
        survivor = {x for x in want if not x.startswith("mqtt-")}
        until("b finishes redis, nats and amqp alone", lambda: survivor <= set(seen(engine)),
              timeout=LEASE_S + 15)
        # MQTT: a's share waits in a's persistent session until a process with a's data dir is back
        restarted = start_server(a.data_dir, "--db", fresh_pg_url, "--secrets-key-file",
                                 str(tmp_path / "secrets.key"), "--event-lease", str(LEASE_S))
        until("every slow message seen", lambda: want <= set(seen(engine)), timeout=20)
    finally:
        for s in (restarted, a, b):
            if s is not None:
                s.stop()
        engine.dispose()
        brokers.cleanup(groups, [a.data_dir, b.data_dir])
