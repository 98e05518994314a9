"""The aws-chunked body encoding, decoded incrementally with no I/O (feed bytes, get data).

    10000;chunk-signature=ad80...\\r\\n <65536 bytes> \\r\\n      signed: each chunk's signature chains
    400;chunk-signature=0055...\\r\\n <1024 bytes> \\r\\n         from the previous one, the first from
    0;chunk-signature=b6c6...\\r\\n                               the request's own signature
    x-amz-checksum-crc32:sOO8/Q==\\r\\n                          trailers (the *-TRAILER forms), signed
    x-amz-trailer-signature:d81f...\\r\\n                        by the last line in the signed form
    \\r\\n

The unsigned form (STREAMING-UNSIGNED-PAYLOAD-TRAILER) has bare sizes (`400\\r\\n`). Every
chunk's signature is checked as soon as its data is complete; a bad one fails the whole body,
which the caller then discards, so data is never kept from an unverified chunk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from mist.errors import InvalidRequest
from mist.s3 import sigv4

MAX_LINE = 4096  # a chunk header or trailer line longer than this is refused
_HEADER, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkSigner:
    """Computes the expected signature of each chunk and of the trailer, chained."""

    def __init__(self, key: bytes, claim: sigv4.Claim) -> None:
        self.key = key
        self.claim = claim
        self.previous = claim.signature

    def chunk(self, sha256_hex: str) -> str:
        self.previous = sigv4.chunk_signature(self.key, self.claim, self.previous, sha256_hex)
        return self.previous

    def trailer(self, canonical: bytes) -> str:
        return sigv4.trailer_signature(self.key, self.claim, self.previous, canonical)


def _bad(message: str) -> InvalidRequest:
    return InvalidRequest(f"the aws-chunked body is malformed: {message}", code="IncompleteBody")


class ChunkDecoder:
    """Feed the raw body with `feed`; the decoded bytes go to `emit`; `finish` at the end."""

    def __init__(self, emit: Callable[[bytes], None], signer: ChunkSigner | None, *, trailer: bool) -> None:
        self._emit = emit
        self._signer = signer
        self._trailer = trailer
        self._state = _HEADER
        self._line = bytearray()
        self._remaining = 0
        self._size = 0
        self._signature = ""
        self._sha = hashlib.sha256()
        self._trailer_lines: list[bytes] = []
        self.trailers: dict[str, str] = {}
        self.decoded = 0

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            if self._state == _DATA:
                take = min(self._remaining, end - pos)
                piece = view[pos : pos + take]
                if self._signer is not None:
                    self._sha.update(piece)
                self._emit(bytes(piece))
                self.decoded += take
                self._remaining -= take
                pos += take
                if self._remaining == 0:
                    self._state = _DATA_END
                continue
            if self._state == _DONE:
                if bytes(view[pos:end]).strip(b"\r\n"):
                    raise _bad("there are bytes after the final chunk")
                return
            nl = data.find(b"\n", pos)
            stop = end if nl < 0 else nl + 1
            self._line += view[pos:stop]
            pos = stop
            if len(self._line) > MAX_LINE:
                raise _bad("a chunk header line is too long")
            if nl >= 0:
                line = bytes(self._line).rstrip(b"\r\n")
                self._line.clear()
                self._on_line(line)

    def _on_line(self, line: bytes) -> None:
        if self._state == _DATA_END:
            if line:
                raise _bad("chunk data is longer than its declared size")
            self._end_chunk()
            self._state = _HEADER
        elif self._state == _HEADER:
            self._start_chunk(line)
        elif self._state == _TRAILER:
            if line:
                self._trailer_lines.append(line)
            else:
                self._end_trailer()

    def _start_chunk(self, line: bytes) -> None:
        size_text, _, ext = line.partition(b";")
        try:
            self._size = int(size_text.strip(), 16)
        except ValueError:
            raise _bad(f"{size_text[:32]!r} is not a hex chunk size") from None
        if self._signer is not None:
            name, _, signature = ext.partition(b"=")
            if name.strip() != b"chunk-signature" or not signature:
                raise _bad("a chunk lacks its chunk-signature")
            self._signature = signature.strip().decode("latin-1")
        self._remaining = self._size
        self._sha = hashlib.sha256()
        if self._size:
            self._state = _DATA
        else:
            self._end_chunk()
            self._state = _TRAILER if self._trailer else _DONE

    def _end_chunk(self) -> None:
        if self._signer is not None and self._signer.chunk(self._sha.hexdigest()) != self._signature:
            raise sigv4.denied(
                "SignatureDoesNotMatch",
                "a chunk's signature does not match its data (the body was altered or signed with another key)",
            )

    def _end_trailer(self) -> None:
        signature = None
        canonical = b""
        for line in self._trailer_lines:
            name, sep, value = line.partition(b":")
            if not sep:
                raise _bad(f"trailer line {line[:64]!r} is not name:value")
            key = name.strip().lower().decode("latin-1")
            if key == "x-amz-trailer-signature":
                signature = value.strip().decode("latin-1")
                continue
            self.trailers[key] = value.strip().decode("latin-1")
            canonical += name.strip().lower() + b":" + value.strip() + b"\n"
        if self._signer is not None:
            if signature is None:
                raise _bad("the signed trailer lacks x-amz-trailer-signature")
            if self._signer.trailer(canonical) != signature:
                raise sigv4.denied("SignatureDoesNotMatch", "the trailer's signature does not match its headers")
        self._state = _DONE

    def finish(self) -> None:
        """The body ended; raise if it ended before the final chunk (and trailer)."""
        if self._state == _TRAILER and not self._line and self._trailer_lines:
            self._end_trailer()  # tolerate a missing final blank line
        if self._state != _DONE:
            raise _bad("the body ended before its final chunk")
