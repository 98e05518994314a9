"""The object store's values: who calls, buckets, objects, uploads; and the errors S3 names."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from mist.errors import NotFound
from mist.s3.keys import DEFAULT_OWNER


@dataclass(frozen=True)
class Caller:
    """Who asks: the owner (tenant) of the access key, and what the event records."""

    owner: str = DEFAULT_OWNER
    access_key_id: str = ""
    source_ip: str = ""
    request_id: str = ""


@dataclass(frozen=True)
class Bucket:
    name: str
    owner: str
    created_at: float


@dataclass(frozen=True)
class ObjectMeta:
    content_type: str = "binary/octet-stream"
    user: dict[str, str] = field(default_factory=dict)  # x-amz-meta-* without the prefix
    headers: dict[str, str] = field(default_factory=dict)  # Cache-Control, Content-Disposition, ...

    def to_json(self) -> str:
        return json.dumps({"user": self.user, "headers": self.headers})

    @classmethod
    def from_row(cls, content_type: str, meta: str) -> ObjectMeta:
        data = json.loads(meta)
        return cls(content_type, data.get("user", {}), data.get("headers", {}))


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    etag: str  # unquoted: hex MD5, or hex MD5 of the parts' MD5s + "-N" for multipart
    last_modified: float
    meta: ObjectMeta
    segments: list[tuple[str, int]]  # (blob id, size), in order

    @property
    def parts_count(self) -> int | None:
        _, dash, count = self.etag.partition("-")
        return int(count) if dash else None


@dataclass(frozen=True)
class ListEntry:
    key: str
    size: int
    etag: str
    last_modified: float


@dataclass(frozen=True)
class Upload:
    upload_id: str
    bucket: str
    key: str
    created_at: float


@dataclass(frozen=True)
class Part:
    part_number: int
    size: int
    etag: str
    last_modified: float


def no_such_bucket(name: str) -> NotFound:
    return NotFound(f"The specified bucket does not exist: {name}", code="NoSuchBucket")


def no_such_key(key: str) -> NotFound:
    return NotFound(f"The specified key does not exist: {key}", code="NoSuchKey")
