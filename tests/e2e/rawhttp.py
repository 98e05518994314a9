"""A minimal HTTP/1.1 keep-alive client on asyncio streams, for tests that send thousands of
requests: httpx costs ~1 ms of CPU per request and its pool slows down under many concurrent
requests, which on a 2-CPU machine starves the server under test. Only what mist's JSON routes
need: Content-Length bodies, one request at a time per connection."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

from mist.tenancy.discovery import api_key_for


class RawClient:
    """Requests carry the admin key of the `mist up` at `url` (found as the CLI finds it)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        key = api_key_for(url)
        self._auth = f"Authorization: Bearer {key}\r\n" if key else ""

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, lower-cased headers, body). ConnectionError/OSError if the server went away."""
        if self._conn is None:
            self._conn = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._conn
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n{self._auth}"
        head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        try:
            writer.write(head.encode("latin-1") + b"\r\n" + body)
            raw = await reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            got = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            data = await reader.readexactly(int(got.get("content-length", "0")))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self.close()
            raise ConnectionError(f"the connection broke: {exc!r}") from None
        except OSError:
            self.close()
            raise
        return status, got, data

    async def json(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
        status, _, data = await self.request(method, path, body, headers)
        if status >= 400:
            raise AssertionError(f"{method} {path}: {status} {data[:300]!r}")
        return json.loads(data)

    def close(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None


async def get_json(url: str, path: str) -> Any:
    """One GET on a connection of its own."""
    client = RawClient(url)
    try:
        return await client.json("GET", path)
    finally:
        client.close()
