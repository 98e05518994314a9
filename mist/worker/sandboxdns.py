"""mist's resolver for sandboxes with egress: the only DNS server they can reach.

It listens on the gateway address of the instance's sandbox network, port 53 (UDP), and
answers a sandbox only about the host names its function's egress rules name: such a name is
resolved on the host (the host's resolver, `getaddrinfo`), the addresses found are added to
that sandbox's allow set *before* the answer is sent (so the connection that follows passes),
and the answer carries them as A records. Any other name gets NXDOMAIN without a single query
leaving the host, so a function cannot smuggle data out in the names it looks up; a sandbox
without network has no route to this resolver at all (it has no interface).

AAAA queries get an empty answer (sandboxes have IPv4 only); other types NOTIMP. A source
address that is not a sandbox with egress gets REFUSED.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mist.worker import dnsmsg

log = logging.getLogger("mist.worker")

IP_FREEBIND = 15
TTL_S = 30  # the answers' TTL and how long a name's addresses are cached
MAX_PENDING = 256  # lookups in flight at once (beyond: SERVFAIL)

Resolve = Callable[[str], Awaitable[list[str]]]  # host name -> IPv4 addresses
# a sandbox's address -> the ports allowed to `name` ([] = not allowed), and how to let it
# reach addresses (name, addresses, ports), or None if no sandbox with egress has that address
Lookup = Callable[[str], "Grant | None"]


@dataclass(frozen=True)
class Grant:
    ports: Callable[[str], list[tuple[int, int]]]
    allow: Callable[[list[str], list[tuple[int, int]]], None]


async def host_resolve(name: str) -> list[str]:
    """The host's own answer (its /etc/hosts, its resolver)."""
    infos = await asyncio.get_running_loop().getaddrinfo(name, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


class SandboxResolver(asyncio.DatagramProtocol):
    def __init__(self, lookup: Lookup, resolve: Resolve = host_resolve, clock=time.monotonic) -> None:
        self._lookup = lookup
        self._resolve = resolve
        self._clock = clock
        self._cache: dict[str, tuple[float, list[str]]] = {}
        self._pending = 0
        self.transport: asyncio.DatagramTransport | None = None
        self.answered = 0
        self.refused = 0  # names no rule allows, and queries from elsewhere

    @classmethod
    async def listen(cls, address: str, lookup: Lookup, resolve: Resolve = host_resolve) -> "SandboxResolver":
        """Bind `address`:53 (it need not be assigned yet: IP_FREEBIND) and serve."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            sock.bind((address, 53))
        except OSError:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(lambda: cls(lookup, resolve), sock=sock)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dnsmsg.parse_query(data)
        if query is None:
            return
        grant = self._lookup(addr[0])
        if grant is None:
            self.refused += 1
            self._send(dnsmsg.answer(query, dnsmsg.REFUSED), addr)
            return
        ports = grant.ports(query.name) if query.qclass == dnsmsg.CLASS_IN else []
        if not ports:
            self.refused += 1
            self._send(dnsmsg.answer(query, dnsmsg.NXDOMAIN), addr)
        elif query.qtype == dnsmsg.AAAA:
            self._send(dnsmsg.answer(query, dnsmsg.NOERROR), addr)
        elif query.qtype != dnsmsg.A:
            self._send(dnsmsg.answer(query, dnsmsg.NOTIMP), addr)
        elif self._pending >= MAX_PENDING:
            self._send(dnsmsg.answer(query, dnsmsg.SERVFAIL), addr)
        else:
            self._pending += 1
            asyncio.get_running_loop().create_task(self._answer(query, grant, ports, addr))

    async def _answer(self, query: dnsmsg.Query, grant: Grant, ports: list[tuple[int, int]],
                      addr: tuple[str, int]) -> None:
        try:
            addresses = await self._addresses(query.name)
            if addresses:
                grant.allow(addresses, ports)
            self.answered += 1
            rcode = dnsmsg.NOERROR if addresses else dnsmsg.NXDOMAIN
            self._send(dnsmsg.answer(query, rcode, addresses, TTL_S), addr)
        except Exception as exc:  # noqa: BLE001 - a failed lookup is the sandbox's SERVFAIL
            log.info("resolving %s for sandbox %s failed: %s", query.name, addr[0], exc)
            self._send(dnsmsg.answer(query, dnsmsg.SERVFAIL), addr)
        finally:
            self._pending -= 1

    async def _addresses(self, name: str) -> list[str]:
        now = self._clock()
        cached = self._cache.get(name)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            found = await self._resolve(name)
        except socket.gaierror:
            found = []
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[name] = (now + TTL_S, found)
        return found

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None:
            with contextlib.suppress(OSError):
                self.transport.sendto(data, addr)
