"""The control plane's HTTP/1.1 client for orders, against small asyncio servers on loopback."""

import asyncio
import socket
import threading
import time

import pytest

from mist.cluster.agentclient import AgentClient, Broken, Unreachable


async def server(handle):
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"


async def read_request(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    length = int([line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")][0].split(b":")[1])
    return head, await reader.readexactly(length)


async def test_answers_come_back_over_one_kept_alive_connection():
    connections, seen, ended = 0, [], asyncio.Event()

    async def handle(reader, writer):
        nonlocal connections
        connections += 1
        while True:
            try:
                head, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            seen.append((head, body))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body) + 1, body + b"!"))
        writer.close()
        ended.set()

    srv, url = await server(handle)
    client = AgentClient("tok-123")
    for n in range(3):
        assert await client.post(url, "/v1/agent/invoke", b"order %d" % n, 5) == (200, b"order %d!" % n)
    assert connections == 1
    assert b"Authorization: Bearer tok-123" in seen[0][0] and seen[2][1] == b"order 2"
    client.close()
    await asyncio.wait_for(ended.wait(), 5)  # the client's close ended the connection
    srv.close()


async def test_a_closed_port_is_unreachable_so_the_order_was_not_sent():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(Unreachable):
        await AgentClient("t").post(f"http://127.0.0.1:{port}", "/v1/agent/invoke", b"x", 5)


async def test_a_connection_cut_after_the_order_was_sent_is_broken():
    got = asyncio.Event()

    async def handle(reader, writer):
        await read_request(reader)
        got.set()
        writer.transport.abort()  # the agent dies mid-call
        writer.close()

    srv, url = await server(handle)
    with pytest.raises(Broken):
        await AgentClient("t").post(url, "/v1/agent/invoke", b"x", 5)
    assert got.is_set()
    srv.close()


async def test_no_answer_in_time_is_broken():
    async def handle(reader, writer):
        try:
            await read_request(reader)
            await asyncio.sleep(10)
        finally:
            writer.close()

    srv, url = await server(handle)
    with pytest.raises(Broken, match="no answer within 0.2 s"):
        await AgentClient("t").post(url, "/v1/agent/invoke", b"x", 0.2)
    srv.close()


async def test_an_idle_connection_the_agent_closed_is_not_reused_even_before_the_loop_saw_it():
    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    connections = []
    answered = threading.Event()

    def serve() -> None:  # a thread: its close reaches the kernel while the client's loop is blocked
        for _ in range(2):
            conn, _ = listener.accept()
            connections.append(conn)
            data = b""
            while not data.endswith(b"x"):
                data += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            answered.wait(5)
            conn.close()  # as a killed agent's kernel does: the connection ends while idle

    thread = threading.Thread(target=serve)
    thread.start()
    client = AgentClient("t")
    assert await client.post(url, "/", b"x", 5) == (200, b"ok")
    answered.set()  # the agent closes the idle connection now...
    time.sleep(0.1)  # ...while the event loop is blocked: only the kernel knows
    assert await client.post(url, "/", b"x", 5) == (200, b"ok")  # a new connection, not a broken one
    thread.join(5)
    assert len(connections) == 2
    client.close()
    listener.close()
