"""S3 event notification records (the shape Lambda functions receive from S3), built purely.

    event_record(event_name="ObjectCreated:Put", bucket="photos", key="a b.jpg", size=3,
                 etag="acbd18db4cc2f85cedef654fccc4a4d8", sequencer=sequencer(7), event_time=0.0)
    -> {"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "1970-01-01T00:00:00.000Z", "eventName": "ObjectCreated:Put", ...,
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": "photos", "arn": "arn:aws:s3:::photos", ...},
               "object": {"key": "a+b.jpg", "size": 3, "eTag": "acbd...", "sequencer": "0000000000000007"}}}

As S3 does, the key is URL-encoded with quote_plus (slashes kept: "a/b c" -> "a/b+c"), and
removal records carry no size or eTag.
The sequencer is hex of a counter that grows with every event (the outbox row's id), so for
any one key a later event has a greater sequencer (S3's rule; compare as strings).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote_plus

CREATED_PUT = "ObjectCreated:Put"
CREATED_COPY = "ObjectCreated:Copy"
CREATED_MULTIPART = "ObjectCreated:CompleteMultipartUpload"
REMOVED_DELETE = "ObjectRemoved:Delete"
EVENT_NAMES = (CREATED_PUT, CREATED_COPY, CREATED_MULTIPART, REMOVED_DELETE)


def sequencer(counter: int) -> str:
    return f"{counter:016X}"


def iso_time(ts: float) -> str:
    """2026-11-26T04:01:02.123Z, as S3 writes times in XML and events."""
    ms = int(round(ts * 1000))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def event_record(
    *,
    event_name: str,
    bucket: str,
    key: str,
    size: int | None,
    etag: str | None,
    sequencer: str,
    event_time: float,
    region: str = "us-east-1",
    principal: str = "",
    source_ip: str = "",
    request_id: str = "",
    owner: str = "",
) -> dict[str, Any]:
    obj: dict[str, Any] = {"key": quote_plus(key, safe="/")}
    if event_name.startswith("ObjectCreated:"):
        obj["size"] = size
        obj["eTag"] = etag
    obj["sequencer"] = sequencer
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": iso_time(event_time),
        "eventName": event_name,
        "userIdentity": {"principalId": principal},
        "requestParameters": {"sourceIPAddress": source_ip},
        "responseElements": {"x-amz-request-id": request_id, "x-amz-id-2": request_id},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": owner},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
    }
