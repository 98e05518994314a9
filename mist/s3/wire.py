"""S3's XML: the documents the endpoint answers with, and the few it reads (pure functions).

Written by hand (not through a DOM) because listings are the hot path: `element("Key", k)`
escapes, and characters XML 1.0 cannot carry are written as character references. Clients that
ask for `encoding-type=url` (boto3 always does for listings) get keys URL-encoded instead.
Requests' XML is parsed with the standard library, which fetches no external entities; a
document with a DOCTYPE is refused outright.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from urllib.parse import quote_plus

from mist.errors import InvalidRequest
from mist.s3.events import iso_time
from mist.s3.listing import Page
from mist.s3.model import Bucket, ListEntry, Part, Upload

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
MAX_XML_BYTES = 2 * 1024 * 1024  # DeleteObjects with 1000 long keys fits
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}
_NEEDS_ESCAPE = re.compile(r'[&<>"\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]')


def _escape_char(m: re.Match[str]) -> str:
    c = m.group(0)
    return _ESCAPES.get(c) or f"&#x{ord(c):X};"


def escape(text: str) -> str:
    return _NEEDS_ESCAPE.sub(_escape_char, text)


def element(name: str, value: object) -> str:
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"<{name}>{escape(str(value))}</{name}>"


def document(root: str, parts: Iterable[str]) -> bytes:
    return (HEAD + f'<{root} xmlns="{NS}">' + "".join(parts) + f"</{root}>").encode()


def url_encoder(encoding_type: str | None):  # noqa: ANN201 - a str -> str function
    if encoding_type is None:
        return lambda s: s
    if encoding_type != "url":
        raise InvalidRequest(f"Invalid Encoding Method specified in Request: {encoding_type!r}; only 'url' is supported")
    return lambda s: quote_plus(s, safe="/")


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def error(code: str, message: str, resource: str, request_id: str) -> bytes:
    """S3's error document. Characters XML 1.0 cannot hold (a key's control characters) are
    written as Python escapes, so every client can parse the error."""
    message = _NOT_XML.sub(lambda m: f"\\x{ord(m.group(0)):02x}", message)
    return (
        HEAD + "<Error>" + element("Code", code) + element("Message", message) + element("Resource", resource)
        + element("RequestId", request_id) + "</Error>"
    ).encode()  # fmt: skip


def owner(owner_id: str) -> str:
    return "<Owner>" + element("ID", owner_id) + element("DisplayName", owner_id) + "</Owner>"


def quoted(etag: str) -> str:
    return f'"{etag}"'


def list_buckets(owner_id: str, buckets: list[Bucket]) -> bytes:
    items = "".join(
        "<Bucket>" + element("Name", b.name) + element("CreationDate", iso_time(b.created_at)) + "</Bucket>"
        for b in buckets
    )
    return document("ListAllMyBucketsResult", [owner(owner_id), "<Buckets>", items, "</Buckets>"])


def _contents(entry: ListEntry, enc, with_owner: str | None) -> str:  # noqa: ANN001
    return (
        "<Contents>" + element("Key", enc(entry.key)) + element("LastModified", iso_time(entry.last_modified))
        + element("ETag", quoted(entry.etag)) + element("Size", entry.size) + element("StorageClass", "STANDARD")
        + (owner(with_owner) if with_owner is not None else "") + "</Contents>"
    )  # fmt: skip


def list_objects(
    bucket: str, page: Page[ListEntry], *, v2: bool, prefix: str, delimiter: str, max_keys: int,
    encoding_type: str | None, owner_id: str | None, start_after: str = "", marker: str = "",
    continuation_token: str | None = None, next_token: str | None = None,
) -> bytes:
    """ListBucketResult of ListObjectsV2 (`v2`) or ListObjects (v1)."""
    enc = url_encoder(encoding_type)
    parts = [element("Name", bucket), element("Prefix", enc(prefix))]
    if v2:
        if start_after:
            parts.append(element("StartAfter", enc(start_after)))
        if continuation_token is not None:
            parts.append(element("ContinuationToken", continuation_token))
        if next_token is not None:
            parts.append(element("NextContinuationToken", next_token))
        parts.append(element("KeyCount", len(page.contents) + len(page.common_prefixes)))
    else:
        parts.append(element("Marker", enc(marker)))
        if page.truncated and page.marker is not None:
            parts.append(element("NextMarker", enc(page.marker)))
    parts.append(element("MaxKeys", max_keys))
    if delimiter:
        parts.append(element("Delimiter", enc(delimiter)))
    if encoding_type:
        parts.append(element("EncodingType", encoding_type))
    parts.append(element("IsTruncated", page.truncated))
    parts.extend(_contents(e, enc, owner_id) for e in page.contents)
    parts.extend(f"<CommonPrefixes>{element('Prefix', enc(p))}</CommonPrefixes>" for p in page.common_prefixes)
    return document("ListBucketResult", parts)


def location(region: str) -> bytes:
    value = "" if region == "us-east-1" else escape(region)
    return (HEAD + f'<LocationConstraint xmlns="{NS}">{value}</LocationConstraint>').encode()


def initiate_upload(bucket: str, key: str, upload_id: str) -> bytes:
    return document(
        "InitiateMultipartUploadResult", [element("Bucket", bucket), element("Key", key), element("UploadId", upload_id)]
    )


def complete_upload(location_url: str, bucket: str, key: str, etag: str) -> bytes:
    return document("CompleteMultipartUploadResult", [
        element("Location", location_url), element("Bucket", bucket), element("Key", key),
        element("ETag", quoted(etag)),
    ])  # fmt: skip


def list_parts(
    upload: Upload, parts: list[Part], *, owner_id: str, marker: int, max_parts: int, truncated: bool
) -> bytes:
    items = [
        element("Bucket", upload.bucket), element("Key", upload.key), element("UploadId", upload.upload_id),
        "<Initiator>" + element("ID", owner_id) + element("DisplayName", owner_id) + "</Initiator>",
        owner(owner_id), element("StorageClass", "STANDARD"), element("PartNumberMarker", marker),
        element("NextPartNumberMarker", parts[-1].part_number if parts else marker),
        element("MaxParts", max_parts), element("IsTruncated", truncated),
    ]  # fmt: skip
    items.extend(
        "<Part>" + element("PartNumber", p.part_number) + element("LastModified", iso_time(p.last_modified))
        + element("ETag", quoted(p.etag)) + element("Size", p.size) + "</Part>"
        for p in parts
    )  # fmt: skip
    return document("ListPartsResult", items)


def list_uploads(bucket: str, uploads: list[Upload], *, owner_id: str, prefix: str, max_uploads: int) -> bytes:
    items = [
        element("Bucket", bucket), element("KeyMarker", ""), element("UploadIdMarker", ""),
        element("Prefix", prefix), element("MaxUploads", max_uploads), element("IsTruncated", False),
    ]  # fmt: skip
    items.extend(
        "<Upload>" + element("Key", u.key) + element("UploadId", u.upload_id)
        + "<Initiator>" + element("ID", owner_id) + element("DisplayName", owner_id) + "</Initiator>"
        + owner(owner_id) + element("StorageClass", "STANDARD") + element("Initiated", iso_time(u.created_at))
        + "</Upload>"
        for u in uploads
    )  # fmt: skip
    return document("ListMultipartUploadsResult", items)


def copy_result(root: str, etag: str, last_modified: float) -> bytes:
    """CopyObjectResult or CopyPartResult."""
    return document(root, [element("LastModified", iso_time(last_modified)), element("ETag", quoted(etag))])


def delete_result(deleted: list[str], errors: list[tuple[str, str, str]], *, quiet: bool) -> bytes:
    items = [] if quiet else [f"<Deleted>{element('Key', k)}</Deleted>" for k in deleted]
    items.extend(
        "<Error>" + element("Key", k) + element("Code", code) + element("Message", message) + "</Error>"
        for k, code, message in errors
    )
    return document("DeleteResult", items)


# -- reading -----------------------------------------------------------------------------------


def _malformed(detail: str) -> InvalidRequest:
    return InvalidRequest(
        f"The XML you provided was not well-formed or did not validate against our published schema: {detail}",
        code="MalformedXML",
    )


def _parse(body: bytes, root: str) -> ET.Element:
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise _malformed("DOCTYPE and ENTITY declarations are not accepted")
    try:
        tree = ET.fromstring(body)
    except ET.ParseError as exc:
        raise _malformed(str(exc)) from None
    for el in tree.iter():
        el.tag = el.tag.rpartition("}")[2]  # drop the namespace, if any
    if tree.tag != root:
        raise _malformed(f"expected a <{root}> document, not <{tree.tag}>")
    return tree


def parse_complete(body: bytes) -> list[tuple[int, str]]:
    """CompleteMultipartUpload -> [(part number, ETag)] in document order."""
    parts = []
    for part in _parse(body, "CompleteMultipartUpload").findall("Part"):
        number, etag = part.findtext("PartNumber"), part.findtext("ETag")
        if number is None or etag is None or not number.strip().isdigit():
            raise _malformed("each <Part> needs a numeric <PartNumber> and an <ETag>")
        parts.append((int(number), etag))
    return parts


def parse_delete(body: bytes) -> tuple[list[str], bool]:
    """Delete -> (keys, quiet)."""
    tree = _parse(body, "Delete")
    keys = []
    for obj in tree.findall("Object"):
        key = obj.findtext("Key")
        if key is None:
            raise _malformed("each <Object> needs a <Key>")
        keys.append(key)
    if not 1 <= len(keys) <= 1000:
        raise _malformed(f"a Delete request names 1 to 1000 objects, not {len(keys)}")
    return keys, (tree.findtext("Quiet") or "").strip().lower() == "true"


def check_create_bucket(body: bytes) -> None:
    """CreateBucketConfiguration is read only to be checked: every location is this one."""
    if body.strip():
        _parse(body, "CreateBucketConfiguration")
