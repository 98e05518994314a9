"""Presigned URLs in the older query form (Signature Version 2), pure: what boto3's
`generate_presigned_url` makes by default for S3 unless told `signature_version="s3v4"`.

    GET /bucket/key?AWSAccessKeyId=MIST...&Signature=base64(HMAC-SHA1)&Expires=1795672667

    string to sign  GET\\n<content-md5>\\n<content-type>\\n1795672667\\n[x-amz-name:value\\n...]/bucket/key[?sub-resources]

Only query authentication is accepted in this form (requests themselves are signed with V4).
The body of such a request is unsigned, as with a V4 presigned URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from mist.errors import InvalidRequest
from mist.s3.sigv4 import Headers, Query, denied

# the query parameters that are part of the signed resource (botocore's list)
SUB_RESOURCES = frozenset({
    "accelerate", "acl", "cors", "defaultObjectAcl", "location", "logging", "partNumber", "policy",
    "requestPayment", "torrent", "versioning", "versionId", "versions", "website", "uploads", "uploadId",
    "response-content-type", "response-content-language", "response-expires", "response-cache-control",
    "response-content-disposition", "response-content-encoding", "delete", "lifecycle", "tagging", "restore",
    "storageClass", "notification", "replication", "analytics", "metrics", "inventory", "select", "select-type",
    "object-lock",
})  # fmt: skip


@dataclass(frozen=True)
class QueryClaim:
    access_key_id: str
    signature: str
    expires: int  # epoch seconds


def parse_query_auth(query: Query) -> QueryClaim | None:
    params = dict(query)
    if "AWSAccessKeyId" not in params or "Signature" not in params:
        return None
    try:
        expires = int(params.get("Expires", ""))
    except ValueError:
        raise InvalidRequest("a presigned URL's Expires must be a time in epoch seconds", code="AccessDenied") from None
    return QueryClaim(params["AWSAccessKeyId"], params["Signature"], expires)


def string_to_sign(method: str, raw_path: str, query: Query, headers: Headers, expires: int) -> str:
    found: dict[str, list[str]] = {}
    for name, value in headers:
        if name.startswith("x-amz-") or name in ("content-md5", "content-type"):
            found.setdefault(name, []).append(value.strip())
    for name, value in query:  # botocore moves the headers it signed into the query
        lower = name.lower()
        if (lower.startswith("x-amz-") or lower in ("content-md5", "content-type")) and lower not in found:
            found[lower] = [value.strip()]
    amz = "".join(f"{k}:{','.join(v)}\n" for k, v in sorted(found.items()) if k.startswith("x-amz-"))
    subs = sorted((k, v) for k, v in query if k in SUB_RESOURCES)
    resource = raw_path + ("?" + "&".join(f"{k}={v}" if v else k for k, v in subs) if subs else "")
    md5 = ",".join(found.get("content-md5", []))
    ctype = ",".join(found.get("content-type", []))
    return f"{method}\n{md5}\n{ctype}\n{expires}\n{amz}{resource}"


def verify(claim: QueryClaim, secret: str, method: str, raw_path: str, query: Query, headers: Headers, now: float) -> None:
    if now > claim.expires:
        raise denied("AccessDenied", f"Request has expired (the presigned URL expired at {claim.expires})")
    text = string_to_sign(method, raw_path, query, headers, claim.expires)
    expected = base64.b64encode(hmac.new(secret.encode(), text.encode("utf-8"), hashlib.sha1).digest()).decode()
    if not hmac.compare_digest(expected, claim.signature):
        raise denied(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
        )
