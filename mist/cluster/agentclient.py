"""The control plane's connections to worker agents for invocation orders: HTTP/1.1 keep-alive
on asyncio streams, a pool per agent.

Why not httpx on this one path: measured on this machine (loopback, uvloop), an httpx
AsyncClient request to an agent's /healthz took 2.2 ms at p50 against 0.37 ms for the same
request on a raw socket — the client, not the network or the agent, was most of a remote
invocation's hop. Both ends are mist's own (the agent answers with Starlette, always with a
Content-Length), so the client needs only that much of HTTP: one request written at once with
TCP_NODELAY, a status line, headers, a body of Content-Length bytes. The rest of the cluster's
HTTP (joining, heartbeats, code downloads, retire/restart fan-out) uses httpx.

Failures are told apart by when they happen, which decides what the scheduler may do:
`Unreachable` — the connection could not be made, so the order was not delivered (place it
elsewhere); `Broken` — the connection failed after the order was written (it may have run).
An idle connection is reused only while younger than `idle_s`, kept well under the agent's
keep-alive timeout, so the agent never closes one that a request is being written to, and only
if the kernel has nothing to read on it (a dead agent's FIN or RST, which the event loop may
not have processed yet).
"""

from __future__ import annotations

import asyncio
import select
import socket
import time
from urllib.parse import urlsplit

AGENT_KEEPALIVE_S = 60  # the agent's uvicorn timeout_keep_alive (mist/cluster/node.py)


class Unreachable(Exception):
    """No connection to the agent: the request was not sent."""


class Broken(Exception):
    """The connection failed after the request was sent: whether it ran is unknown."""


class _Conn:
    __slots__ = ("reader", "writer", "idle_since")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.idle_since = reader, writer, 0.0


def _readable(conn: _Conn) -> bool:
    """An idle connection with something to read has been closed or reset by the agent (it
    died), though the event loop may not have seen it yet: the kernel has. Reusing it would
    make an order that was never delivered look lost in flight."""
    sock = conn.writer.get_extra_info("socket")
    if sock is None:
        return False
    readable, _, _ = select.select([sock.fileno()], [], [], 0)
    return bool(readable)


class AgentClient:
    def __init__(self, token: str, *, connect_timeout_s: float = 2.0, idle_s: float = AGENT_KEEPALIVE_S / 2,
                 max_idle: int = 64) -> None:
        self._auth = f"Authorization: Bearer {token}\r\n".encode()
        self._connect_timeout = connect_timeout_s
        self._idle_s = idle_s
        self._max_idle = max_idle
        self._idle: dict[str, list[_Conn]] = {}

    async def _connect(self, address: str) -> _Conn:
        idle = self._idle.get(address)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.reader.at_eof() and now - conn.idle_since < self._idle_s and not _readable(conn):
                return conn
            conn.writer.close()
        parts = urlsplit(address)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(parts.hostname, parts.port or 80, limit=1 << 20), self._connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc}") from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Conn(reader, writer)

    async def post(self, address: str, path: str, body: bytes, timeout_s: float) -> tuple[int, bytes]:
        """(status, body) of `POST address+path`; Unreachable or Broken on failure, Broken on timeout."""
        conn = await self._connect(address)
        head = (f"POST {path} HTTP/1.1\r\nHost: {urlsplit(address).netloc}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n").encode()
        try:
            conn.writer.write(head + self._auth + b"\r\n" + body)
            status, data, keep = await asyncio.wait_for(self._response(conn.reader), timeout_s)
        except asyncio.TimeoutError as exc:
            conn.writer.close()
            raise Broken(f"no answer within {timeout_s:g} s") from exc
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            conn.writer.close()
            raise Broken(type(exc).__name__) from exc
        except BaseException:  # cancelled: the connection is mid-request, unusable
            conn.writer.close()
            raise
        if keep and len(self._idle.setdefault(address, [])) < self._max_idle:
            conn.idle_since = time.monotonic()
            self._idle[address].append(conn)
        else:
            conn.writer.close()
        return status, data

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, keep = 0, True
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                keep = False
        return status, await reader.readexactly(length), keep

    def forget(self, address: str) -> None:
        """Close the idle connections to an agent (it was lost)."""
        for conn in self._idle.pop(address, []):
            conn.writer.close()

    def close(self) -> None:
        for address in list(self._idle):
            self.forget(address)
