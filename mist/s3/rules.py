"""S3's request rules, pure: bucket and key names, Range, conditional headers, metadata headers.

    parse_range("bytes=0-9", 100)   -> (0, 9)       parse_range("bytes=-10", 100) -> (90, 99)
    parse_range("bytes=200-", 100)  -> InvalidRange (416)   parse_range("items=1-2", 100) -> None (ignored)
    check_preconditions({"if-none-match": '"abc"'}, "abc", t) -> 304
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.utils import formatdate, parsedate_to_datetime

from mist.errors import InvalidRequest, NotFound, PayloadTooLarge, UserError

MAX_KEY_BYTES = 1024
MAX_METADATA_BYTES = 2048
MAX_OBJECT_SIZE = 5 * 1024**4  # 5 TiB
MAX_PUT_SIZE = 5 * 1024**3  # 5 GiB in one PutObject, UploadPart or CopyObject
MIN_PART_SIZE = 5 * 1024**2  # every part but the last
MAX_PARTS = 10_000
STORED_HEADERS = ("cache-control", "content-disposition", "content-encoding", "content-language", "expires")

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP = re.compile(r"\d+\.\d+\.\d+\.\d+")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def validate_bucket_name(name: str) -> None:
    if not _BUCKET.fullmatch(name) or ".." in name or ".-" in name or "-." in name or _IP.fullmatch(name):
        raise InvalidRequest(
            f"the bucket name {name!r} is not valid: use 3-63 characters of lower-case letters, digits, "
            "dots and hyphens, starting and ending with a letter or digit, not shaped like an IP address",
            code="InvalidBucketName",
        )


def validate_key(key: str) -> None:
    """Keys are any UTF-8 up to 1024 bytes, as in S3, except NUL (refused, as S3 refuses it)."""
    if not key:
        raise InvalidRequest("the object key is empty", code="InvalidArgument")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidRequest(
            f"Your key is too long: keys are at most {MAX_KEY_BYTES} bytes of UTF-8", code="KeyTooLongError"
        )
    if "\x00" in key:
        raise InvalidRequest("the object key contains a NUL character, which S3 keys cannot", code="InvalidArgument")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in key):
        raise InvalidRequest("the object key is not valid UTF-8", code="InvalidArgument")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range a Range header asks for, or None for the whole object.

    As S3: a header that is not one `bytes=` range is ignored; a range starting at or past the
    end is unsatisfiable (InvalidRange, 416); an end past the end is clipped."""
    if not header:
        return None
    m = _RANGE.fullmatch(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:  # the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise _unsatisfiable(header, size)
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # not a valid range: ignored, as S3 does
    if start >= size:
        raise _unsatisfiable(header, size)
    return start, min(end, size - 1)


def _unsatisfiable(header: str, size: int) -> UserError:
    return UserError(f"The requested range {header!r} is not satisfiable (the object has {size} bytes)", code="InvalidRange")


def http_date(ts: float) -> str:
    return formatdate(int(ts), usegmt=True)


def _parse_http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None  # S3 ignores a date it cannot read


def _etag_matches(header: str, etag: str) -> bool:
    candidates = [c.strip().removeprefix("W/").strip('"') for c in header.split(",")]
    return "*" in candidates or etag in candidates


def check_preconditions(headers: dict[str, str], etag: str, last_modified: float, *, prefix: str = "if-") -> int | None:
    """RFC 7232 as S3 applies it: None to go on, 304 (Not Modified) or 412 (Precondition Failed).

    `prefix="x-amz-copy-source-if-"` checks CopyObject's conditions on the source (412 only)."""
    modified = int(last_modified)  # HTTP dates have whole seconds
    if_match = headers.get(prefix + "match")
    if_unmodified = _parse_http_date(headers.get(prefix + "unmodified-since"))
    if_none_match = headers.get(prefix + "none-match")
    if_modified = _parse_http_date(headers.get(prefix + "modified-since"))
    if if_match is not None:
        if not _etag_matches(if_match, etag):
            return 412
    elif if_unmodified is not None and modified > if_unmodified:
        return 412
    not_modified = 412 if prefix != "if-" else 304
    if if_none_match is not None:
        if _etag_matches(if_none_match, etag):
            return not_modified
    elif if_modified is not None and modified <= if_modified:
        return not_modified
    return None


Precondition = Callable[[str | None], None]  # given the current ETag (None: no object), raises to refuse


def write_precondition(headers: dict[str, str]) -> Precondition | None:
    """A conditional write (PutObject, CompleteMultipartUpload): `If-None-Match: *` creates only,
    `If-Match: "etag"` replaces only that version. None when the request sets neither."""
    if_match, if_none_match = headers.get("if-match"), headers.get("if-none-match")
    if if_match is None and if_none_match is None:
        return None
    if if_none_match is not None and if_none_match.strip() != "*":
        raise UserError("If-None-Match on a write accepts only '*' (create if absent)", code="NotImplemented")

    def check(current: str | None) -> None:
        if if_none_match is not None and current is not None:
            raise UserError("At least one of the pre-conditions you specified did not hold: the object exists",
                            code="PreconditionFailed")  # fmt: skip
        if if_match is not None:
            if current is None:
                raise NotFound("The specified key does not exist (If-Match needs an object to match)", code="NoSuchKey")
            if not _etag_matches(if_match, current):
                raise UserError("At least one of the pre-conditions you specified did not hold: the ETag differs",
                                code="PreconditionFailed")  # fmt: skip

    return check


def user_metadata(headers: list[tuple[str, str]]) -> dict[str, str]:
    """x-amz-meta-* headers (names lower-cased, prefix dropped), at most 2 KB in all as in S3."""
    meta: dict[str, str] = {}
    for name, value in headers:
        if name.startswith("x-amz-meta-"):
            short = name[len("x-amz-meta-") :]
            meta[short] = f"{meta[short]},{value}" if short in meta else value
    size = sum(len(k) + len(v) for k, v in meta.items())
    if size > MAX_METADATA_BYTES:
        raise PayloadTooLarge(
            f"Your metadata headers exceed the maximum allowed metadata size: {size} bytes of x-amz-meta-* "
            f"(names and values), at most {MAX_METADATA_BYTES}",
            code="MetadataTooLarge",
        )
    return meta


def stored_headers(headers: dict[str, str]) -> dict[str, str]:
    """The standard headers S3 keeps with an object and returns on GET/HEAD."""
    return {name: headers[name] for name in STORED_HEADERS if name in headers}
