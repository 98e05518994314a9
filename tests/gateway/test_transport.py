"""Each response leaves in one write: CoalescingTransport (mist/gateway/transport.py)."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
import uvicorn

from mist.gateway.transport import CoalescingTransport, HttpToolsProtocol


class Recorder:
    """The real transport's side: what was written, in which calls."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 5)}.get(name, default)


async def test_headers_and_body_written_in_the_same_tick_leave_in_one_write() -> None:
    rec = Recorder()
    t = CoalescingTransport(rec, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    t.write(memoryview(b"{}"))
    assert rec.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    await asyncio.sleep(0)
    assert len(rec.writes) == 1  # nothing left to flush


async def test_a_lone_write_goes_out_at_the_next_turn_of_the_loop() -> None:
    rec = Recorder()
    t = CoalescingTransport(rec, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert rec.writes == [] and t.get_write_buffer_size() == 25
    await asyncio.sleep(0)
    assert rec.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]


@pytest.mark.parametrize("n", [1, 2, 3, 5])
async def test_a_stream_of_writes_keeps_every_byte_in_order(n: int) -> None:
    rec = Recorder()
    t = CoalescingTransport(rec, asyncio.get_running_loop())  # type: ignore[arg-type]
    chunks = [f"chunk{i};".encode() for i in range(n)]
    for c in chunks:
        t.write(c)
    await asyncio.sleep(0)
    assert b"".join(rec.writes) == b"".join(chunks)
    assert len(rec.writes) == (n + 1) // 2


async def test_close_sends_what_was_held_before_closing() -> None:
    rec = Recorder()
    t = CoalescingTransport(rec, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"bye")
    t.close()
    assert rec.writes == [b"bye"] and rec.closed
    assert t.get_extra_info("peername") == ("127.0.0.1", 5)  # the rest is the real transport's


async def test_uvicorn_with_the_protocol_serves_keep_alive_streaming_and_close() -> None:
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for i in range(3):
                await send({"type": "http.response.body", "body": b"part%d;" % i, "more_body": True})
                await asyncio.sleep(0)
            await send({"type": "http.response.body", "body": b"end"})
            return
        body = b'{"hello":"world"}'
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, http=HttpToolsProtocol, lifespan="off", log_level="warning"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            for _ in range(20):  # one keep-alive connection
                r = await c.get("/")
                assert r.status_code == 200 and r.json() == {"hello": "world"}
            r = await c.get("/stream")
            assert r.text == "part0;part1;part2;end"
            r = await c.get("/", headers={"connection": "close"})
            assert r.json() == {"hello": "world"}
    finally:
        server.should_exit = True
        await serving
