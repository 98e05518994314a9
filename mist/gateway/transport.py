"""uvicorn's HTTP/1.1 protocol with each response sent in one write, and a direct way out for
the invocation fast path.

uvicorn writes a response's status line and headers in one `transport.write` and its body in
another. Each write to a TCP socket is a system call that also runs the loopback delivery and
wakes the client, so a small response cost two of each. `HttpToolsProtocol` here holds the
first write of a tick and sends it with the next one (the body, written right after the
headers by every ASGI response), or on its own at the next turn of the event loop if nothing
follows: one write, one wake-up per response, bytes and order unchanged.

Measured under `wrk -c64` on the invocation route: the gateway's CPU per invocation fell by
about a tenth (docs/benchmarks.md, "Warm throughput").

The keep-alive timeout is kept with one timer per connection instead of one per response (see
`on_response_complete`).

`respond` is the fast path's way out (mist/gateway/fastpath.py): an invocation's whole answer,
status line, headers and body, in one write from bytes (at once, or, while other invocations
are in flight, at the end of the loop's turn with its other writes: mist/writeburst.py), with
the connection then handled as uvicorn would after an ASGI response (keep-alive, the next
pipelined request). The two ASGI messages it replaces went through uvicorn's header checks and
the audit middleware's wrapper, ~7% of the gateway's time per invocation under load. The
protocol puts each request's cycle in its scope under CYCLE; without it (another server) the
fast path answers with ASGI messages.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _UvicornHttpTools

from mist import writeburst

CYCLE = "mist.cycle"  # scope key: the request's uvicorn RequestResponseCycle


class CoalescingTransport:
    """A transport that sends two writes made in the same tick as one (see the module doc).
    Everything else goes to the real transport."""

    __slots__ = ("_transport", "_loop", "_held", "_burst")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._burst = writeburst.for_loop(loop)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._held = None
            self._transport.write(b"".join((held, data)))

    def write_in_burst(self, data: bytes) -> None:
        """Write `data` now, or, while other invocations are in flight, with the other writes
        at the end of the turn (mist/writeburst.py); after what is held, in one write."""
        held = self._held
        if held is not None:
            self._held = held + data  # already due to go at the next turn
        elif not self._burst.busy(0):
            self._transport.write(data)
        else:
            self._held = data
            self._burst.hold(self)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():  # the client may have gone meanwhile
            self._transport.write(held)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()  # what was written goes out before the FIN
        self._transport.close()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:  # get_extra_info, pause_reading, is_closing, abort, ...
        return getattr(self._transport, name)


class HttpToolsProtocol(_UvicornHttpTools):
    """uvicorn's httptools protocol writing through a `CoalescingTransport`
    (`uvicorn.Config(http=HttpToolsProtocol)`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

    # The keep-alive timeout (uvicorn's --timeout-keep-alive, 5 s): uvicorn makes a timer after
    # every response and cancels it at the next request's first bytes, ~2.5% of the gateway's
    # time under load. Here a connection has one timer at most, checked when it fires: idle
    # since long enough, it closes the connection, else it is set again for the time left.
    _keep_alive_timer: asyncio.TimerHandle | None = None
    _idle_since: float | None = None  # loop time of the last response; None while a request is on

    def _unset_keepalive_if_required(self) -> None:  # uvicorn calls it on data and at the end
        self._idle_since = None
        super()._unset_keepalive_if_required()

    def on_response_complete(self) -> None:
        # uvicorn's, with the keep-alive timer above
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self._keep_alive_timer is None:
            self._keep_alive_timer = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_due)

    def _keep_alive_due(self) -> None:
        self._keep_alive_timer = None
        since = self._idle_since
        if since is None or self.transport.is_closing():  # busy: the next response sets it again
            return
        left = since + self.timeout_keep_alive - self.loop.time()
        if left <= 0:
            self.timeout_keep_alive_handler()
        else:
            self._keep_alive_timer = self.loop.call_later(left, self._keep_alive_due)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._keep_alive_timer is not None:
            self._keep_alive_timer.cancel()
            self._keep_alive_timer = None
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # not an upgrade: this request's cycle
            self.scope[CYCLE] = cycle  # type: ignore[literal-required]


def respond(cycle: RequestResponseCycle, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
    """Send a whole response on `cycle` in one write (`write_in_burst`); False (nothing done)
    when it cannot be sent this way, and the caller must use ASGI messages. `headers` are
    mist's own (lower-case names, values without user input); content-length is added here."""
    transport = cycle.transport
    if cycle.response_started or cycle.disconnected or cycle.flow.write_paused \
            or not isinstance(transport, CoalescingTransport) or cycle.scope["method"] != "POST":
        return False
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    parts = [STATUS_LINE[status]]
    for name, value in cycle.default_headers:
        parts += (name, b": ", value, b"\r\n")
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts += (b"content-length: ", str(len(body)).encode(), b"\r\n")
    keep_alive = cycle.keep_alive
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts += (b"\r\n", body)
    transport.write_in_burst(b"".join(parts))
    cycle.response_complete = True
    cycle.message_event.set()
    if not keep_alive:
        transport.close()
    cycle.on_response()
    return True


def whole_body(cycle: RequestResponseCycle) -> bytes | None:
    """The request's body if all of it is in (what `receive()` would hand over in one message,
    without its coroutine, event and message), else None: read it with `receive()`."""
    if cycle.more_body or cycle.disconnected or cycle.response_complete or cycle.waiting_for_100_continue:
        return None
    cycle.flow.resume_reading()  # as receive() does (a body over uvicorn's high-water mark paused it)
    body = bytes(cycle.body)
    cycle.body = bytearray()
    return body
