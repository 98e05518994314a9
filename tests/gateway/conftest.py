import asyncio
import io
import socket
from pathlib import Path

import httpx
import pytest
import uvicorn

from mist.control.batching import SerialWriter
from mist.control.dispatcher import Dispatcher, DispatcherConfig
from mist.control.events import EventService
from mist.control.functions import FunctionService
from mist.control.invocations import InvocationService
from mist.control.layers import LayerStore
from mist.control.packaging import zip_directory
from mist.control.queues import QueueService
from mist.control.records import InvocationLog
from mist.core.retry import Backoff
from mist.gateway.app import build_app
from mist.gateway.services import Services
from mist.gateway.transport import HttpToolsProtocol
from mist.tenancy.service import Tenancy
from mist.testing.secrets import memory_secrets
from mist.testing.stores import MemoryStore
from mist.testing.tenancy import MemoryTenantStore
from mist.testing.worker import FakeWorker


@pytest.fixture
def worker():
    return FakeWorker()


@pytest.fixture(params=["fast-path", "fastapi", "uvicorn"])
async def client(request, tmp_path, worker):
    """The gateway's app with the invocation fast path or without it, in process; and as
    `mist up` serves it: uvicorn with mist's protocol on a real socket, where the fast path
    writes its answers on uvicorn's cycle (mist/gateway/transport.py::respond)."""
    store = MemoryStore()
    records = InvocationLog(store, flush_interval=0.01)
    await records.start()
    secrets = memory_secrets()
    await secrets.start()
    functions = FunctionService(
        tmp_path, store, LayerStore(tmp_path / "layers"), worker.retire, provision=worker.provision,
        secrets=secrets, restart=worker.restart,
    )
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    invocations = InvocationService(functions, worker, records)
    writer = SerialWriter()
    events = EventService(functions, store, store, writer)
    dispatcher = Dispatcher(store, store, events, functions, invocations, writer, DispatcherConfig(
        backoff=Backoff(base_s=0.01, cap_s=0.05), poll_s=0.05, heartbeat_s=0.1, lease_s=1.0))  # fmt: skip
    await dispatcher.start()
    tenancy = Tenancy(MemoryTenantStore())
    await tenancy.start()
    admin_key = await tenancy.bootstrap(tmp_path)
    services = Services(functions, invocations, records, uploads, tenancy, events=events,
                        queues=QueueService(store, events, functions, writer))  # fmt: skip
    app = build_app(services, fast_path=request.param != "fastapi")
    auth = {"Authorization": f"Bearer {admin_key}"}
    if request.param == "uvicorn":
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, http=HttpToolsProtocol, lifespan="off", log_level="warning",
                                               access_log=False))  # fmt: skip
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", headers=auth) as c:
                c.services = services  # type: ignore[attr-defined]
                yield c
        finally:
            server.should_exit = True
            await serving
    else:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://mist",
                                     headers=auth) as c:
            c.services = services  # type: ignore[attr-defined]
            yield c
    await tenancy.stop()
    await dispatcher.stop()
    await records.stop()
    writer.close()


def make_zip(tmp_path: Path, files: dict[str, str]) -> bytes:
    src = tmp_path / f"src-{len(list(tmp_path.iterdir()))}"
    src.mkdir()
    for rel, text in files.items():
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    buf = io.BytesIO()
    zip_directory(src, buf)
    return buf.getvalue()


HELLO = {"main.py": "def handler(event, context):\n    return {'hello': event}\n"}


async def deploy(client, tmp_path, name="hello", files=None, config="{}", stream=False):
    data = make_zip(tmp_path, files or HELLO)
    return await client.post(
        f"/v1/functions/{name}/versions" + ("?stream=true" if stream else ""),
        files={"code": ("code.zip", data, "application/zip")},
        data={"config": config},
    )
