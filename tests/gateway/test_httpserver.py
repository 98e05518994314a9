"""HttpServer (mist/httpserver.py): uvicorn's server, awake once a second while idle, and as
prompt to stop as before."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time

import httpx
import uvicorn

from mist import httpserver
from mist.httpserver import HttpServer


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def serve() -> tuple[HttpServer, asyncio.Task, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = HttpServer(uvicorn.Config(app, lifespan="off", log_level="warning"), signals=False)
    ticks: list[float] = []
    on_tick = server.on_tick

    async def counted(counter: int) -> bool:
        ticks.append(time.monotonic())
        return await on_tick(counter)

    server.on_tick = counted  # type: ignore[method-assign]
    server.ticks = ticks  # type: ignore[attr-defined]
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    return server, serving, sock.getsockname()[1]


async def test_an_idle_server_wakes_once_a_second_and_keeps_the_date_header_fresh() -> None:
    server, serving, port = await serve()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            first = (await c.get("/")).headers["date"]
            await asyncio.sleep(2.5)
            second = (await c.get("/")).headers["date"]
        assert 2 <= len(server.ticks) <= 4  # uvicorn's own loop: 25 in that time
        assert first != second  # refreshed every tick, as uvicorn does once a second
    finally:
        server.should_exit = True
        await serving


async def test_stopping_is_as_prompt_as_before_from_the_loop_a_thread_or_a_signal_handler() -> None:
    for how in ("loop", "thread", "signal"):
        server, serving, _ = await serve()
        await asyncio.sleep(0.05)  # asleep in its tick
        t0 = time.monotonic()
        if how == "loop":
            server.should_exit = True
        elif how == "thread":
            threading.Thread(target=setattr, args=(server, "should_exit", True)).start()
        else:
            server.handle_exit(signal.SIGTERM, None)  # what uvicorn's signal handler calls
        await asyncio.wait_for(serving, 2.0)
        assert time.monotonic() - t0 < 0.3 * httpserver.TICK_S, how


def test_without_signals_the_process_handlers_are_left_alone() -> None:
    async def run() -> None:
        server, serving, _ = await serve()
        assert signal.getsignal(signal.SIGTERM) is before
        server.should_exit = True
        await serving

    before = signal.getsignal(signal.SIGTERM)
    asyncio.run(run())
    assert signal.getsignal(signal.SIGTERM) is before
