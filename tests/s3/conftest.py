"""Fixtures: object stores on SQLite and the real PostgreSQL, and a real S3 server that boto3 talks to."""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
import sqlalchemy as sa
import uvicorn
from botocore.config import Config

from mist.s3 import ObjectStore, S3Server

PG_URL = "postgresql+psycopg://postgres@127.0.0.1/test"


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class PgSchema:
    """A schema of its own per test on the shared PostgreSQL, dropped afterwards."""

    def __init__(self) -> None:
        self.name = "s3test_" + uuid.uuid4().hex[:12]

    def drop(self) -> None:
        engine = sa.create_engine(PG_URL)
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE'))
        engine.dispose()


def open_store(kind: str, data_dir: Path, schema: PgSchema | None = None, **kw: object) -> ObjectStore:
    if kind == "sqlite":
        return ObjectStore(data_dir, f"sqlite:///{data_dir / 's3.db'}", **kw)  # type: ignore[arg-type]
    assert schema is not None
    return ObjectStore(data_dir, PG_URL, schema=schema.name, **kw)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., ObjectStore]]:
    """Opens stores on one data dir and database (call again to "restart"); closes them after."""
    schema = PgSchema() if request.param == "postgresql" else None
    opened: list[ObjectStore] = []

    def open_(**kw: object) -> ObjectStore:
        store = open_store(request.param, tmp_path / "data", schema, **kw)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()
    if schema is not None:
        schema.drop()


@pytest.fixture
def store(backend: Callable[..., ObjectStore]) -> ObjectStore:
    return backend()


class Looper:
    """An event loop on a thread of its own, for servers the (synchronous) tests talk to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro, timeout: float = 10):  # noqa: ANN001, ANN201
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


class AppServer(Looper):
    """Any ASGI app served by uvicorn on a free port (the gateway, for the CLI's tests)."""

    def __init__(self, app: object) -> None:
        super().__init__()
        sock = socket.create_server(("127.0.0.1", 0))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # see S3Server
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._task = self.run(self._start(sock))

    async def _start(self, sock: socket.socket) -> asyncio.Task:
        task = asyncio.create_task(self.server.serve(sockets=[sock]))
        while not self.server.started:
            await asyncio.sleep(0.01)
        return task

    def stop(self) -> None:
        self.server.should_exit = True
        self.run(self._stopped())
        self.close()

    async def _stopped(self) -> None:
        await self._task


class Endpoint(Looper):
    """A real S3 server (uvicorn on a free port) on its own event loop thread."""

    def __init__(self, store: ObjectStore) -> None:
        super().__init__()
        self.store = store
        self.server = S3Server(store, socket.create_server(("127.0.0.1", 0)))
        self.url = self.server.url
        self.run(self.server.start())
        key = store.keys.create()
        self.key_id, self.secret = key.access_key_id, key.secret_access_key or ""

    def client(self, key_id: str | None = None, secret: str | None = None, **config: object):  # noqa: ANN201
        return boto3.client(
            "s3", endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id=key_id or self.key_id, aws_secret_access_key=secret or self.secret,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config),
        )  # fmt: skip

    def stop(self) -> None:
        self.run(self.server.stop())
        self.close()


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    data = tmp_path_factory.mktemp("s3")
    store = ObjectStore(data, f"sqlite:///{data / 's3.db'}")
    ep = Endpoint(store)
    yield ep
    ep.stop()
    store.close()


@pytest.fixture(scope="module")
def s3(endpoint: Endpoint):  # noqa: ANN201
    return endpoint.client()


@pytest.fixture
def bucket(s3) -> str:  # noqa: ANN001
    name = unique("b")
    s3.create_bucket(Bucket=name)
    return name


def pending(store: ObjectStore) -> list:
    return asyncio.run(store.outbox.pending_events(10_000))
