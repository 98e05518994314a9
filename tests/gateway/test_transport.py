"""Each response leaves in one write: CoalescingTransport (mist/gateway/transport.py)."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
import uvicorn

from mist import writeburst
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

    def is_closing(self) -> bool:
        return self.closed

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


async def test_an_answer_goes_at_once_when_nothing_else_is_in_flight() -> None:
    rec = Recorder()
    t = CoalescingTransport(rec, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write_in_burst(b"answer")
    assert rec.writes == [b"answer"]


@pytest.fixture
async def busy():  # type: ignore[no-untyped-def]
    """Other invocations in flight on this loop (the Worker counts them)."""
    burst = writeburst.for_loop(asyncio.get_running_loop())
    burst.calls = 3
    yield burst
    burst.calls = 0


async def test_answers_made_while_others_are_in_flight_leave_together_at_the_end_of_the_turn(busy) -> None:  # type: ignore[no-untyped-def]
    recs = [Recorder(), Recorder()]
    ts = [CoalescingTransport(r, asyncio.get_running_loop()) for r in recs]  # type: ignore[arg-type]
    ts[0].write_in_burst(b"one;")
    ts[1].write_in_burst(b"two")
    ts[0].write_in_burst(b"three")  # the same connection again (pipelined): after the first, one write
    assert recs[0].writes == recs[1].writes == []
    await asyncio.sleep(0)
    assert (recs[0].writes, recs[1].writes) == ([b"one;three"], [b"two"])
    await asyncio.sleep(0)
    assert len(recs[0].writes) == 1  # flushed once


async def test_an_answer_held_for_the_turn_leaves_before_the_connection_closes(busy) -> None:  # type: ignore[no-untyped-def]
    rec = Recorder()
    t = CoalescingTransport(rec, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write_in_burst(b"last answer")
    t.close()
    assert rec.writes == [b"last answer"] and rec.closed
    await asyncio.sleep(0)
    assert rec.writes == [b"last answer"]


class ClosedByPeer(Recorder):
    """uvloop's side once the client went: writing raises."""

    def write(self, data: bytes) -> None:
        if self.closed:
            raise RuntimeError("unable to perform operation: the handler is closed")
        super().write(data)


async def test_an_answer_held_for_a_client_that_went_meanwhile_is_dropped_and_the_others_still_go(busy, caplog) -> None:  # type: ignore[no-untyped-def]
    gone, stays = ClosedByPeer(), Recorder()
    ts = [CoalescingTransport(r, asyncio.get_running_loop()) for r in (gone, stays)]  # type: ignore[arg-type]
    ts[0].write_in_burst(b"for nobody")
    ts[1].write_in_burst(b"for the one still there")
    gone.closed = True  # the connection was lost before the turn ended
    await asyncio.sleep(0)
    assert (gone.writes, stays.writes) == ([], [b"for the one still there"])
    assert not [r for r in caplog.records if r.levelname == "ERROR"]  # not an error: clients go


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

    server, serving, port = await _serve(app)
    try:
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


async def _serve(app, **config):  # type: ignore[no-untyped-def]
    """uvicorn with the protocol on a free port: (server, its task, the port)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, http=HttpToolsProtocol, lifespan="off", log_level="warning", **config))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    return server, serving, sock.getsockname()[1]


async def _exchange(port: int, raw: bytes, until: int) -> bytes:
    """Send `raw` at once, read until `until` responses arrived (or the server closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    got = b""
    while got.count(b"HTTP/1.") < until or not got.endswith(b"}"):
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        if not chunk:
            break
        got += chunk
    writer.close()
    return got


@pytest.mark.parametrize("others_in_flight", [0, 3])
async def test_respond_sends_a_whole_answer_and_keeps_the_connection_as_uvicorn_would(others_in_flight: int) -> None:
    from mist.gateway.transport import CYCLE, respond

    writeburst.for_loop(asyncio.get_running_loop()).calls = others_in_flight  # 3: answers held for the turn

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        body = (await receive())["body"]
        answer = b'{"echo":' + body + b"}"
        assert respond(scope[CYCLE], 200, [(b"x-mist-invocation-id", b"abc")], answer)
        assert not respond(scope[CYCLE], 200, [], b"{}")  # once per request

    server, serving, port = await _serve(app)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            for i in range(20):  # one keep-alive connection
                r = await c.post("/", content=b"%d" % i)
                assert (r.status_code, r.json(), r.headers["x-mist-invocation-id"]) == (200, {"echo": i}, "abc")
                assert r.headers["content-length"] == str(len(r.content)) and "date" in r.headers
        req = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\n"
        pipelined = await _exchange(port, req + b"1" + req + b"2", until=2)  # two requests in one write
        assert pipelined.count(b"HTTP/1.1 200 OK") == 2 and pipelined.index(b'{"echo":1}') < pipelined.index(b'{"echo":2}')
        closing = await _exchange(port, b"POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 1\r\n\r\n3",
                                  until=1)  # fmt: skip
        assert b"connection: close\r\n" in closing and closing.endswith(b'{"echo":3}')  # then the server closed
        old = await _exchange(port, b"POST / HTTP/1.0\r\ncontent-length: 1\r\n\r\n4", until=1)
        assert b"connection: close\r\n" in old and old.endswith(b'{"echo":4}')
    finally:
        writeburst.for_loop(asyncio.get_running_loop()).calls = 0
        server.should_exit = True
        await serving


async def test_whole_body_hands_over_a_body_that_is_all_in_and_leaves_the_rest_to_receive() -> None:
    """`whole_body` takes a complete body off uvicorn's cycle as receive() would; a body still
    coming (chunked, sent in two writes) or one behind `Expect: 100-continue` is read with
    receive(), and either way the app gets every byte once."""
    from mist.gateway.transport import CYCLE, respond, whole_body

    ways = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        body = whole_body(scope[CYCLE])
        ways.append("whole" if body is not None else "receive")
        if body is None:
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
        assert whole_body(scope[CYCLE]) in (None, b"")  # taken once: nothing is handed over twice
        assert respond(scope[CYCLE], 200, [], b'{"len":%d}' % len(body))

    server, serving, port = await _serve(app)
    try:
        got = await _exchange(port, b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc", until=1)
        assert got.endswith(b'{"len":3}')
        big = b"x" * 300_000  # over uvicorn's high-water mark: reading paused, resumed by whole_body
        got = await _exchange(port, b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(big) + big
                              + b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\ny", until=2)  # fmt: skip
        assert b'{"len":300000}' in got and got.endswith(b'{"len":1}')
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"2\r\nde\r\n0\r\n\r\n")
        got = b""
        while not got.endswith(b"}"):
            got += await asyncio.wait_for(reader.read(65536), 5)
        writer.close()
        assert got.endswith(b'{"len":5}')
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            r = await c.post("/", content=b"12345678", headers={"expect": "100-continue"})
            assert r.json() == {"len": 8}
    finally:
        server.should_exit = True
        await serving
    # the big body may start its app before all of it is in: either way is right
    assert (ways[0], ways[2], ways[3:]) == ("whole", "whole", ["receive", "receive"])


async def test_respond_refuses_a_response_already_started_and_the_asgi_way_goes_on() -> None:
    from mist.gateway.transport import CYCLE, respond

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        assert not respond(scope[CYCLE], 200, [], b"xx")
        await send({"type": "http.response.body", "body": b"{}"})

    server, serving, port = await _serve(app)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            assert (await c.post("/")).json() == {}
    finally:
        server.should_exit = True
        await serving


async def test_an_idle_keep_alive_connection_is_closed_after_the_timeout_and_a_busy_one_is_not() -> None:
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        if scope["path"] == "/slow":
            await asyncio.sleep(0.6)  # longer than the keep-alive timeout: the connection is busy, not idle
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    server, serving, port = await _serve(app, timeout_keep_alive=0.3)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def get(path: str) -> bytes:
            writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
            got = b""
            while not got.endswith(b"ok"):
                chunk = await asyncio.wait_for(reader.read(4096), 5)
                assert chunk, "the server closed the connection"
                got += chunk
            return got

        for _ in range(6):  # 0.6 s in all, each gap shorter than the timeout: kept open
            assert (await get("/")).startswith(b"HTTP/1.1 200")
            await asyncio.sleep(0.1)
        assert (await get("/slow")).startswith(b"HTTP/1.1 200")  # 0.6 s busy: kept open
        assert (await get("/")).startswith(b"HTTP/1.1 200")
        t0 = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(4096), 5) == b""  # idle: closed by the server
        assert 0.25 <= asyncio.get_running_loop().time() - t0 < 1.5
        writer.close()
    finally:
        server.should_exit = True
        await serving
