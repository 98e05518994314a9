"""A request body on its way in: decoded (aws-chunked), counted and checked against every promise
the request made about it, while it streams to its sink (a blob, or memory for small XML).

Promises checked: the signed payload hash (x-amz-content-sha256), each chunk's signature, the
declared length (Content-Length or x-amz-decoded-content-length), Content-MD5, and the
x-amz-checksum-crc32/sha1/sha256 header or trailer (crc32c and crc64nvme are accepted unchecked:
the standard library cannot compute them fast enough). The MD5 (the ETag) is computed on the way.
`feed` and `finish` do the hashing: call them off the event loop.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Callable

from mist.errors import InvalidRequest, UserError
from mist.s3 import sigv4
from mist.s3.chunked import ChunkDecoder, ChunkSigner

CHECKSUMS = ("crc32", "sha1", "sha256")
UNCHECKED = ("crc32c", "crc64nvme")


class _Crc32:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


def _hasher(algorithm: str):  # noqa: ANN202
    return _Crc32() if algorithm == "crc32" else hashlib.new(algorithm)


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{what} {value!r} is not valid base64", code="InvalidDigest") from None


class Intake:
    def __init__(
        self,
        sink: Callable[[bytes], None],
        *,
        payload: str,
        declared: int,
        headers: dict[str, str],
        signer: ChunkSigner | None = None,
    ) -> None:
        """`payload` is the x-amz-content-sha256 of the request (or UNSIGNED-PAYLOAD), `declared`
        its decoded length, `headers` its headers (lower-case names, values joined)."""
        self._sink = sink
        self.declared = declared
        self.size = 0
        self.md5 = hashlib.md5()
        self._sha256 = hashlib.sha256() if payload not in (sigv4.UNSIGNED_PAYLOAD, *sigv4.STREAMING) else None
        self._payload = payload
        self._decoder: ChunkDecoder | None = None
        if payload in sigv4.STREAMING:
            signed = payload != sigv4.STREAMING_UNSIGNED_TRAILER
            if signed and signer is None:
                raise AssertionError("a signed streaming payload needs the request's signer")
            trailer = payload != sigv4.STREAMING_SIGNED
            self._decoder = ChunkDecoder(self._take, signer if signed else None, trailer=trailer)
        md5 = headers.get("content-md5")
        self._content_md5 = _b64(md5, "Content-MD5") if md5 is not None else None
        if self._content_md5 is not None and len(self._content_md5) != 16:
            raise InvalidRequest("The Content-MD5 you specified was invalid (not 16 bytes)", code="InvalidDigest")
        self._expected: dict[str, str] = {
            a: headers[f"x-amz-checksum-{a}"] for a in CHECKSUMS if f"x-amz-checksum-{a}" in headers
        }
        self._checks = {a: _hasher(a) for a in CHECKSUMS if a in self._expected or self._trailer_may_have(headers, a)}

    @staticmethod
    def _trailer_may_have(headers: dict[str, str], algorithm: str) -> bool:
        return f"x-amz-checksum-{algorithm}" in headers.get("x-amz-trailer", "").lower()

    def _take(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.declared:
            raise InvalidRequest(
                f"the body is longer than the {self.declared} bytes its length header declares", code="IncompleteBody"
            )
        self.md5.update(data)
        if self._sha256 is not None:
            self._sha256.update(data)
        for h in self._checks.values():
            h.update(data)
        self._sink(data)

    def feed(self, raw: bytes) -> None:
        if self._decoder is not None:
            self._decoder.feed(raw)
        else:
            self._take(raw)

    def finish(self) -> str:
        """Check every promise now that the body has ended; return the MD5 (hex)."""
        if self._decoder is not None:
            self._decoder.finish()
            for name, value in self._decoder.trailers.items():
                if name.startswith("x-amz-checksum-"):
                    self._expected[name.removeprefix("x-amz-checksum-")] = value
        if self.size != self.declared:
            raise InvalidRequest(
                f"You did not provide the number of bytes specified by the length header: got {self.size} of "
                f"{self.declared}",
                code="IncompleteBody",
            )
        if self._sha256 is not None and self._sha256.hexdigest() != self._payload:
            raise InvalidRequest(
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
                code="XAmzContentSHA256Mismatch",
            )
        digest = self.md5.digest()
        if self._content_md5 is not None and self._content_md5 != digest:
            raise InvalidRequest("The Content-MD5 you specified did not match what we received.", code="BadDigest")
        for algorithm, value in self._expected.items():
            if algorithm in UNCHECKED or algorithm not in self._checks:
                continue
            if _b64(value, f"x-amz-checksum-{algorithm}") != self._checks[algorithm].digest():
                raise UserError(
                    f"The {algorithm.upper()} you specified did not match the calculated checksum.", code="BadDigest"
                )
        return digest.hex()

    def checksums(self) -> dict[str, str]:
        """The checked x-amz-checksum-* values, to echo in the response."""
        return {a: v for a, v in self._expected.items() if a in self._checks}
