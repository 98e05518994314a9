"""The few DNS messages mist's sandbox resolver reads and writes (RFC 1035), pure.

A query is accepted only in its plain form: one question, no compression in it, opcode QUERY.
The answer echoes the question and carries A records (name by pointer to the question, class
IN, the given TTL); anything else gets an empty answer with a response code.

    >>> q = parse_query(query_bytes(0x1234, "pypi.org", A))
    >>> (q.id, q.name, q.qtype)
    (4660, 'pypi.org', 1)
    >>> answer(q, NOERROR, ["203.0.113.80"], ttl=30)[:4].hex()
    '12348180'
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass

A, AAAA = 1, 28
CLASS_IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
_HEADER = struct.Struct("!HHHHHH")
_QR, _OPCODE_MASK, _RD, _RA = 0x8000, 0x7800, 0x0100, 0x0080


@dataclass(frozen=True)
class Query:
    id: int
    name: str  # lowercase, no trailing dot ("" for the root)
    qtype: int
    qclass: int
    flags: int
    question: bytes  # the question section as received (echoed in the answer)


def parse_query(data: bytes) -> Query | None:
    """The query in `data`, or None if it is not one mist answers (then it is dropped)."""
    if len(data) < _HEADER.size + 5:
        return None
    qid, flags, qdcount, ancount, nscount, _arcount = _HEADER.unpack_from(data)
    if flags & _QR or flags & _OPCODE_MASK or qdcount != 1 or ancount or nscount:
        return None
    labels = []
    pos = _HEADER.size
    while True:
        if pos >= len(data):
            return None
        length = data[pos]
        pos += 1
        if length == 0:
            break
        if length > 63 or pos + length > len(data):
            return None  # a pointer (compression) or a truncated label
        labels.append(data[pos:pos + length])
        pos += length
    if pos + 4 > len(data) or sum(len(label) + 1 for label in labels) > 254:
        return None
    qtype, qclass = struct.unpack_from("!HH", data, pos)
    try:
        name = b".".join(labels).decode("ascii").lower()
    except UnicodeDecodeError:
        return None
    return Query(qid, name, qtype, qclass, flags, data[_HEADER.size:pos + 4])


def answer(query: Query, rcode: int, addresses: Sequence[str] = (), ttl: int = 30) -> bytes:
    """The response to `query`: `rcode`, and (NOERROR) an A record per IPv4 address."""
    flags = _QR | (query.flags & _RD) | _RA | (rcode & 0xF)
    records = b"".join(
        struct.pack("!HHHIH", 0xC000 | _HEADER.size, A, CLASS_IN, ttl, 4) + socket.inet_aton(addr)
        for addr in (addresses if rcode == NOERROR else ())
    )
    count = len(records) // 16
    return _HEADER.pack(query.id, flags, 1, count, 0, 0) + query.question + records


def query_bytes(qid: int, name: str, qtype: int = A) -> bytes:
    """A standard query (for tests and examples)."""
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"
    return _HEADER.pack(qid, _RD, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, CLASS_IN)
