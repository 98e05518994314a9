"""Frames between the Worker and one sandbox, over a Unix socketpair (stdlib only).

A frame is a 9-byte prefix, a JSON header and raw payload bytes:

    +------+--------------+---------------+-------------+--------------+
    | kind | header_len   | payload_len   | header JSON | payload      |
    | u8   | u32 big end. | u32 big end.  | (utf-8)     | (raw bytes)  |
    +------+--------------+---------------+-------------+--------------+

The event and the result travel as raw payload bytes (already JSON): nobody decodes them on the
way, only the handler's side does, once.

Worker -> sandbox: ASSIGN (the function to load), INVOKE (one event).
Sandbox -> Worker: READY (generic sandbox built), FAILED (setup failed before user code ran),
INIT (module imported, or the init error), LOG (one line of output), RESULT (one invocation's end).

Example: `encode(INVOKE, {"id": "r1", "t": 3000}, b'{"x": 1}')` is
`b"\\x02\\x00\\x00\\x00\\x17\\x00\\x00\\x00\\x08" + b'{"id":"r1","t":3000}' ... + b'{"x": 1}'`.
"""

from __future__ import annotations

import array
import json
import json.encoder
import json.scanner
import socket
import struct
from typing import NamedTuple

ASSIGN = 1
INVOKE = 2
READY = 10
FAILED = 11
INIT = 12
LOG = 13
RESULT = 14

PREFIX = struct.Struct("!BII")
MAX_FRAME = 64 * 1024 * 1024  # a frame larger than this is a protocol violation

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_quote = json.encoder.c_encode_basestring or json.encoder.py_encode_basestring  # type: ignore[attr-defined]
_scan = json.scanner.make_scanner(json.JSONDecoder())


class ProtocolError(Exception):
    """The peer sent something that is not a frame."""


class Frame(NamedTuple):
    kind: int
    header: dict
    payload: bytes


def encode(kind: int, header: dict, payload: bytes = b"") -> bytes:
    head = _dumps(header).encode()
    return b"".join((PREFIX.pack(kind, len(head), len(payload)), head, payload))


def encode_invoke(cid: str, rid: str, timeout_ms: int, payload: bytes) -> bytes:
    """`encode(INVOKE, {"id": cid, "rid": rid, "t": timeout_ms}, payload)`, without the generic
    encoder (the warm path's frame)."""
    head = ('{"id":%s,"rid":%s,"t":%d}' % (_quote(cid), _quote(rid), timeout_ms)).encode()
    return b"".join((PREFIX.pack(INVOKE, len(head), len(payload)), head, payload))


def decode_header(raw: bytes | bytearray) -> dict:
    """A frame header (a JSON object); ProtocolError if it is not one."""
    try:
        text = raw.decode()
        try:
            header, end = _scan(text, 0)  # the C scanner, without json.loads' wrappers
            if end != len(text):
                raise ValueError
        except (StopIteration, ValueError):
            header = json.loads(text)  # whitespace around the object, or the error message
    except ValueError as exc:
        raise ProtocolError(f"frame header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"frame header is not a JSON object: {type(header).__name__}")
    return header


class FrameDecoder:
    """Feed bytes as they arrive; get whole frames back. Pure: no I/O."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        if buf:
            buf += data
            data = buf  # type: ignore[assignment]
        frames: list[Frame] = []
        pos = 0
        size = PREFIX.size
        total = len(data)
        while total - pos >= size:
            kind, hlen, plen = PREFIX.unpack_from(data, pos)
            if hlen + plen > self._max:
                raise ProtocolError(f"frame of {hlen + plen} bytes is over the {self._max} limit")
            end = pos + size + hlen + plen
            if total < end:
                break
            start = pos + size
            header = decode_header(data[start : start + hlen]) if hlen else {}
            frames.append(Frame(kind, header, bytes(data[start + hlen : end])))
            pos = end
        if buf:
            if pos:
                del buf[:pos]
        elif pos < total:
            buf += data[pos:]  # a partial frame: keep it for the next feed
        return frames

    @property
    def pending(self) -> int:
        return len(self._buf)


# -- control messages (Worker <-> zygote, SOCK_SEQPACKET: one JSON message per packet) -------

def recv_control(sock: socket.socket, max_fds: int = 4) -> tuple[dict | None, list[int]]:
    """One message and the fds passed with it; (None, fds) at EOF."""
    fds = array.array("i")
    data, ancdata, _flags, _addr = sock.recvmsg(65536, socket.CMSG_SPACE(max_fds * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    if not data:
        return None, list(fds)
    return json.loads(data), list(fds)


def send_control(sock: socket.socket, message: dict, fds: list[int] | tuple[int, ...] = ()) -> None:
    data = json.dumps(message).encode()
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.send(data)
