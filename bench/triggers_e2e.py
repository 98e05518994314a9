"""Events through mist's triggers into a no-op function, end to end, in one `mist up`.

- S3 notification latency: PutObject returning (boto3) -> the function starting (it prints
  time.time() first thing; the sandbox shares the host's clock), one object at a time, p50/p99.
  Compared with the same function invoked asynchronously over the API (202 -> start), the
  floor of any event that goes through the durable event queue.
- Events/s: N objects uploaded by 8 boto3 threads (S3 -> outbox -> event queue -> function), and
  N messages published to each broker (Redis Streams, NATS JetStream, RabbitMQ, MQTT, batch size
  100): time from the first publish until the function has seen them all. Compared with the
  publish rate of the same client (the broker's intake, measured in the same run).

Counting is from the function's own log lines (one per event or per batch with its size).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
import httpx
from botocore.config import Config

from _common import MistServer, Report, arg_parser, auth_headers, deploy, summary

NOOP = (
    "import time\n"
    "def handler(event, context):\n"
    "    t = time.time()\n"
    "    records = event.get('Records', []) if isinstance(event, dict) else []\n"
    "    if records and 's3' in records[0]:\n"
    "        for r in records:\n"
    "            print('S3', r['s3']['object']['key'], t)\n"
    "    elif records:\n"
    "        print('BATCH', len(records), t)\n"
    "    else:\n"
    "        print('EVENT', event.get('k') if isinstance(event, dict) else '', t)\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def logs(c: httpx.Client, function: str) -> list[str]:
    r = c.get(f"/v1/functions/{function}/logs", params={"limit": 10_000})
    return [json.loads(x)["text"] for x in r.text.splitlines() if x.strip()]


def wait_lines(c: httpx.Client, function: str, prefix: str, want, timeout: float = 120.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = [x for x in logs(c, function) if x.startswith(prefix)]
        if want(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def batch_total(lines: list[str]) -> int:
    return sum(int(x.split()[1]) for x in lines)


async def publish(kind: str, target: str, n: int) -> float:
    """Publish n messages; the publish rate (messages/s)."""
    t0 = time.perf_counter()
    if kind == "redis":
        import redis.asyncio as aredis

        r = aredis.Redis()
        pipe = r.pipeline(transaction=False)
        for i in range(n):
            pipe.xadd(target, {"body": str(i)})
            if i % 500 == 499:
                await pipe.execute()
        await pipe.execute()
        await r.aclose()
    elif kind == "nats":
        import nats

        nc = await nats.connect("nats://127.0.0.1:4222")
        js = nc.jetstream()
        acks = [js.publish(target, str(i).encode()) for i in range(n)]
        for i in range(0, n, 500):
            await asyncio.gather(*acks[i:i + 500])
        await nc.close()
    elif kind == "amqp":
        import aio_pika

        conn = await aio_pika.connect_robust("amqp://guest:guest@127.0.0.1:5672/")
        ch = await conn.channel(publisher_confirms=True)
        await ch.declare_queue(target, durable=True)
        for i in range(0, n, 200):
            await asyncio.gather(*(ch.default_exchange.publish(
                aio_pika.Message(str(j).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=target)
                for j in range(i, min(n, i + 200))))
        await conn.close()
    elif kind == "mqtt":
        import aiomqtt

        async with aiomqtt.Client("127.0.0.1", 1883, identifier=f"bench-{uuid.uuid4().hex[:8]}") as client:
            for i in range(0, n, 10):  # aiomqtt keeps at most ~10 QoS 1 publishes in flight
                await asyncio.gather(*(client.publish(target, str(j).encode(), qos=1) for j in range(i, min(n, i + 10))))
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = arg_parser(__doc__.split("\n")[0])
    ap.add_argument("-N", type=int, default=2000, help="events per source for the rate (default 2000)")
    ap.add_argument("--latency-n", type=int, default=100, help="single events for the latency (default 100)")
    args = ap.parse_args()
    rep = Report("triggers end to end")
    port = free_port()
    with MistServer(["--s3-port", str(port), *args.mist_arg]) as srv, httpx.Client(base_url=srv.url, timeout=60, headers=auth_headers(srv.url)) as c:
        key = c.post("/v1/s3/keys").json()
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id=key["access_key_id"], aws_secret_access_key=key["secret_access_key"],
                          config=Config(s3={"addressing_style": "path"}, max_pool_connections=16))
        s3.create_bucket(Bucket="bench")
        for name in ("s3fn", "asyncfn", "redisfn", "natsfn", "amqpfn", "mqttfn"):
            deploy(c, name, {"main.py": NOOP}, {"concurrency": 8})
        assert c.post("/v1/functions/s3fn/triggers", json={"kind": "s3", "bucket": "bench"}).status_code == 201

        # latency: one object at a time
        lat = []
        for i in range(args.latency_n):
            k = f"lat/{i}"
            s3.put_object(Bucket="bench", Key=k, Body=b"x")
            t_put = time.time()
            lines = wait_lines(c, "s3fn", f"S3 {k} ", lambda ls: ls, timeout=10)
            if lines:
                lat.append((float(lines[0].split()[-1]) - t_put) * 1000)
        alat = []
        for i in range(args.latency_n):
            r = c.post("/v1/functions/asyncfn/invocations", json={"k": str(i)},
                       headers={"X-Mist-Invocation-Type": "Event"})
            t_acc = time.time()
            assert r.status_code == 202, r.text
            lines = wait_lines(c, "asyncfn", f"EVENT {i} ", lambda ls: ls, timeout=10)
            if lines:
                alat.append((float(lines[0].split()[-1]) - t_acc) * 1000)
        s_lat, s_alat = summary(lat), summary(alat)
        rep.row("S3 PutObject returned -> function started", f"p50 {s_lat['p50']:.1f} / p99 {s_lat['p99']:.1f} ms",
                f"async invoke 202 -> started: p50 {s_alat['p50']:.1f} / p99 {s_alat['p99']:.1f} ms")

        # S3 rate
        n = args.N
        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: s3.put_object(Bucket="bench", Key=f"rate/{i}", Body=b"x"), range(n)))
        put_rate = n / (time.perf_counter() - t0)
        lines = wait_lines(c, "s3fn", "S3 rate", lambda ls: len(ls) >= n, timeout=300)
        rate = len(lines) / (time.perf_counter() - t0)
        rep.row(f"S3 events -> function ({n} objects, 8 threads)", f"{rate:,.0f} events/s",
                f"PutObject rate {put_rate:,.0f}/s (the intake)")
        rep.data["s3"] = {"events_per_s": rate, "put_per_s": put_rate, "latency_ms": s_lat, "async_latency_ms": s_alat}

        # brokers
        for kind, fn, option, target in (
            ("redis", "redisfn", "stream", f"bench-{uuid.uuid4().hex[:6]}"),
            ("nats", "natsfn", "subject", f"bench.{uuid.uuid4().hex[:6]}"),
            ("amqp", "amqpfn", "queue", f"bench-{uuid.uuid4().hex[:6]}"),
            ("mqtt", "mqttfn", "topic", f"bench/{uuid.uuid4().hex[:6]}"),
        ):
            source = {"redis": "redis://127.0.0.1:6379/0", "nats": "nats://127.0.0.1:4222",
                      "amqp": "amqp://guest:guest@127.0.0.1:5672/", "mqtt": "mqtt://127.0.0.1:1883"}[kind]
            if kind == "nats":
                async def stream(subject: str = target) -> None:
                    import nats

                    nc = await nats.connect("nats://127.0.0.1:4222")
                    await nc.jetstream().add_stream(name=subject.replace(".", "_"), subjects=[subject])
                    await nc.close()
                asyncio.run(stream())
            body = {"kind": "queue", "source": source, option: target, "batch_size": 100}
            r = c.post(f"/v1/functions/{fn}/triggers", json=body)
            if r.status_code != 201:
                rep.row(f"{kind} -> function", "trigger refused", r.text[:100])
                continue
            t0 = time.perf_counter()
            pub_rate = asyncio.run(publish(kind, target, n))
            lines = wait_lines(c, fn, "BATCH", lambda ls: batch_total(ls) >= n, timeout=300)
            got = batch_total(lines)
            rate = got / (time.perf_counter() - t0)
            rep.row(f"{kind} messages -> function ({n}, batch 100)", f"{rate:,.0f} msgs/s",
                    f"publish rate {pub_rate:,.0f}/s; {len(lines)} invocations")
            rep.data[kind] = {"msgs_per_s": rate, "publish_per_s": pub_rate, "delivered": got, "invocations": len(lines)}
    rep.print(args.json)


if __name__ == "__main__":
    main()
