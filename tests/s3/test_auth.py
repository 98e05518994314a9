"""Signatures as the server checks them: boto3 header auth, presigned URLs, aws-chunked bodies,
and every way a request can fail to prove who sent it."""

from __future__ import annotations

import hashlib
import io
import re
import time

import httpx
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from mist.s3 import sigv4
from tests.s3.conftest import pending, unique
from tests.s3.test_boto3 import code_of


def test_a_wrong_secret_is_signature_does_not_match(endpoint, bucket):
    wrong = endpoint.client(secret="x" * 40)
    with pytest.raises(ClientError) as exc:
        wrong.list_objects_v2(Bucket=bucket)
    assert code_of(exc) == (403, "SignatureDoesNotMatch")
    with pytest.raises(ClientError) as exc:
        wrong.put_object(Bucket=bucket, Key="k", Body=b"x" * 5000)
    assert code_of(exc) == (403, "SignatureDoesNotMatch")


def test_an_unknown_access_key_is_invalid_access_key_id(endpoint, bucket):
    with pytest.raises(ClientError) as exc:
        endpoint.client(key_id="MISTNOSUCHKEY0000000").list_buckets()
    assert code_of(exc) == (403, "InvalidAccessKeyId")


def test_a_deleted_key_stops_working_at_once(endpoint):
    key = endpoint.store.keys.create()
    client = endpoint.client(key.access_key_id, key.secret_access_key)
    client.list_buckets()
    endpoint.store.keys.delete(key.access_key_id)
    with pytest.raises(ClientError) as exc:
        client.list_buckets()
    assert code_of(exc) == (403, "InvalidAccessKeyId")


def test_anonymous_requests_are_denied(endpoint, bucket):
    r = httpx.get(f"{endpoint.url}/{bucket}")
    assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text


def _signed(endpoint, method: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> AWSRequest:
    request = AWSRequest(method=method, url=f"{endpoint.url}{path}", data=body, headers=headers or {})
    request.context["payload_signing_enabled"] = True
    S3SigV4Auth(Credentials(endpoint.key_id, endpoint.secret), "s3", "us-east-1").add_auth(request)
    return request


def _send(request: AWSRequest, *, body: bytes | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    sent = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()}
    sent.update(headers or {})
    return httpx.request(request.method, request.url, content=body if body is not None else request.body, headers=sent)


def test_a_tampered_body_is_refused_and_leaves_nothing(endpoint, bucket):
    request = _signed(endpoint, "PUT", f"/{bucket}/k", b"the signed body")
    r = _send(request, body=b"the other body!")
    assert r.status_code == 400 and "<Code>XAmzContentSHA256Mismatch</Code>" in r.text
    assert _send(_signed(endpoint, "GET", f"/{bucket}/k", b"")).status_code == 404
    assert [e for e in pending(endpoint.store) if e.bucket == bucket] == []


def test_a_tampered_signed_header_is_refused(endpoint, bucket):
    request = _signed(endpoint, "PUT", f"/{bucket}/k", b"x", {"x-amz-meta-owner": "ada"})
    r = _send(request, headers={"x-amz-meta-owner": "eve"})
    assert r.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in r.text


def test_an_unsigned_amz_header_is_refused(endpoint, bucket):
    request = _signed(endpoint, "PUT", f"/{bucket}/k", b"x")
    r = _send(request, headers={"x-amz-meta-sneaked": "in"})
    assert r.status_code == 403 and "not signed: x-amz-meta-sneaked" in r.text


def test_a_request_signed_too_long_ago_is_refused(endpoint, bucket):
    request = _signed(endpoint, "GET", f"/{bucket}", b"")
    stale = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 3600))
    request.headers.replace_header("X-Amz-Date", stale)
    request.headers.replace_header("Authorization", request.headers["Authorization"].replace(
        time.strftime("%Y%m%d", time.gmtime()), stale[:8]))  # fmt: skip
    r = _send(request)
    assert r.status_code == 403 and "<Code>RequestTimeTooSkewed</Code>" in r.text


@pytest.fixture(params=["s3v4", "s3"])
def presigner(request, endpoint):
    """A client presigning as boto3 does by default (SigV2 query form) or with s3v4."""
    return endpoint.client(signature_version=request.param)


def _longer(url: str) -> str:
    if "X-Amz-Expires=" in url:
        return url.replace("X-Amz-Expires=60", "X-Amz-Expires=600")
    expires = re.search(r"Expires=(\d+)", url).group(1)  # type: ignore[union-attr]
    return url.replace(f"Expires={expires}", f"Expires={int(expires) + 600}")


def test_presigned_urls_get_and_put_without_an_sdk(presigner, s3, bucket):
    s3.put_object(Bucket=bucket, Key="shared file.txt", Body=b"for anyone with the link")
    url = presigner.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "shared file.txt"}, ExpiresIn=60)
    got = httpx.get(url)
    assert got.status_code == 200 and got.content == b"for anyone with the link"

    put_url = presigner.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "upload"}, ExpiresIn=60)
    assert httpx.put(put_url, content=b"uploaded").status_code == 200
    assert s3.get_object(Bucket=bucket, Key="upload")["Body"].read() == b"uploaded"


def test_an_expired_presigned_url_is_refused(endpoint, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    urls = [
        endpoint.client(signature_version=v).generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=1)
        for v in ("s3v4", "s3")
    ]  # fmt: skip
    time.sleep(2.1)
    for url in urls:
        r = httpx.get(url)
        assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text and "expired" in r.text


def test_a_presigned_url_works_only_for_what_it_signed(presigner, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    url = presigner.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=60)
    assert httpx.get(url).status_code == 200
    assert httpx.get(url.replace("/k?", "/other?")).status_code == 403
    assert httpx.put(url, content=b"overwrite").status_code == 403
    assert httpx.get(_longer(url)).status_code == 403
    assert httpx.get(url, headers={"x-amz-meta-x": "y"}).status_code == 403


# -- aws-chunked bodies ----------------------------------------------------------------------------


def _chunked_put(endpoint, path: str, data: bytes, chunk: int, *, tamper: bool = False) -> httpx.Response:
    """A STREAMING-AWS4-HMAC-SHA256-PAYLOAD upload, signed as the AWS documentation specifies
    (independently of the server's code: only sigv4's HMAC primitives are shared)."""
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
    frames = [data[i : i + chunk] for i in range(0, len(data), chunk)] + [b""]
    length = sum(len(f"{len(f):x};chunk-signature=".encode()) + 64 + 4 + len(f) for f in frames)
    host = endpoint.url.removeprefix("http://")
    headers = {
        "host": host, "x-amz-date": amz_date, "x-amz-content-sha256": sigv4.STREAMING_SIGNED,
        "content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data)),
        "content-length": str(length),
    }  # fmt: skip
    signed = sorted(headers)
    canonical = "\n".join([
        "PUT", path, "", "".join(f"{h}:{headers[h]}\n" for h in signed), ";".join(signed), sigv4.STREAMING_SIGNED,
    ])  # fmt: skip
    key = sigv4.signing_key(endpoint.secret, amz_date[:8], "us-east-1", "s3")
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    previous = sigv4.sign(key, to_sign)
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={endpoint.key_id}/{scope}, SignedHeaders={';'.join(signed)}, Signature={previous}"
    )
    body = io.BytesIO()
    for frame in frames:
        text = f"AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{scope}\n{previous}\n{sigv4.EMPTY_SHA256}\n{hashlib.sha256(frame).hexdigest()}"
        previous = sigv4.sign(key, text)
        body.write(f"{len(frame):x};chunk-signature={previous}\r\n".encode())
        body.write(frame.replace(b"7", b"8") if tamper and frame else frame)
        body.write(b"\r\n")
    del headers["host"]
    return httpx.put(f"{endpoint.url}{path}", content=body.getvalue(), headers=headers)


def test_a_chunk_signed_upload_is_stored_decoded(endpoint, s3, bucket):
    data = bytes(range(256)) * 1000
    r = _chunked_put(endpoint, f"/{bucket}/streamed", data, 65536)
    assert r.status_code == 200, r.text
    got = s3.get_object(Bucket=bucket, Key="streamed")
    assert got["Body"].read() == data and got["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert got.get("ContentEncoding") is None  # aws-chunked is how it travelled, not what it is


def test_a_tampered_chunk_is_refused_and_leaves_nothing(endpoint, s3, bucket):
    r = _chunked_put(endpoint, f"/{bucket}/streamed", b"0123456789" * 20000, 65536, tamper=True)
    assert r.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in r.text
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="streamed")
    assert [e for e in pending(endpoint.store) if e.bucket == bucket] == []


def test_an_unsigned_trailer_upload_as_botocore_sends_it_over_tls(endpoint, s3, bucket):
    """Over HTTPS (behind a TLS proxy) botocore sends STREAMING-UNSIGNED-PAYLOAD-TRAILER with a
    CRC32 trailer, built by its own AwsChunkedWrapper."""
    from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum

    data = b"trailing checksum " * 5000
    wrapped = AwsChunkedWrapper(io.BytesIO(data), checksum_cls=Crc32Checksum, checksum_name="x-amz-checksum-crc32")
    body = wrapped.read()
    request = AWSRequest(method="PUT", url=f"{endpoint.url}/{bucket}/trailer", data=body, headers={
        "Content-Encoding": "aws-chunked", "X-Amz-Trailer": "x-amz-checksum-crc32",
        "X-Amz-Decoded-Content-Length": str(len(data)), "X-Amz-Content-SHA256": sigv4.STREAMING_UNSIGNED_TRAILER,
    })  # fmt: skip
    request.context["checksum"] = {"request_algorithm": {"in": "trailer", "algorithm": "crc32"}}
    S3SigV4Auth(Credentials(endpoint.key_id, endpoint.secret), "s3", "us-east-1").add_auth(request)
    assert request.headers["X-Amz-Content-SHA256"] == sigv4.STREAMING_UNSIGNED_TRAILER
    r = _send(request)
    assert r.status_code == 200, r.text
    assert s3.get_object(Bucket=bucket, Key="trailer")["Body"].read() == data
    bad = body.replace(b"x-amz-checksum-crc32:", b"x-amz-checksum-crc32:AAAA")
    r = _send(request, body=bad[: len(body)] if len(bad) > len(body) else bad)
    assert r.status_code == 400


def test_a_wrong_checksum_header_is_bad_digest_and_leaves_nothing(endpoint, s3, bucket):
    for extra in ({"ContentMD5": "AAAAAAAAAAAAAAAAAAAAAA=="}, {"ChecksumCRC32": "AAAAAA=="}):
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket=bucket, Key="k", Body=b"data", **extra)
        assert code_of(exc) == (400, "BadDigest")
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="k")


def test_unique_helper_is_unique():
    assert unique() != unique()
