"""Uploads over the wire that do not finish: nothing becomes visible, nothing stays on disk."""

from __future__ import annotations

import socket
import time
import tracemalloc
from urllib.parse import urlsplit

import httpx
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.s3.conftest import pending


def send_part_of(endpoint, path: str, body: bytes, sent: int, *, started: bool = False) -> None:
    """A PUT signed for all of `body`, of which only `sent` bytes go out before the client vanishes."""
    request = AWSRequest(method="PUT", url=f"{endpoint.url}{path}", data=body)
    S3SigV4Auth(Credentials(endpoint.key_id, endpoint.secret), "s3", "us-east-1").add_auth(request)
    url = urlsplit(endpoint.url)
    head = f"PUT {path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Length: {len(body)}\r\n" + "".join(
        f"{k}: {v.decode() if isinstance(v, bytes) else v}\r\n" for k, v in request.headers.items()
    )
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(head.encode() + b"\r\n" + body[:sent])
        tmp = endpoint.store.root / "tmp"
        if started:  # the server has begun writing the blob before the client vanishes
            assert wait_until(lambda: any(tmp.iterdir()))
        else:
            time.sleep(0.2)


def wait_until(condition, timeout: float = 5.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def files_under(root) -> list:  # noqa: ANN001
    return [p for p in root.rglob("*") if p.is_file() and p.parent.name != "s3"]


def test_an_upload_cut_off_mid_body_leaves_nothing(endpoint, s3, bucket):
    body = bytes(range(256)) * 8192  # 2 MiB
    before = files_under(endpoint.store.root)
    send_part_of(endpoint, f"/{bucket}/cut", body, len(body) * 3 // 4, started=True)
    # the client is gone: the half-written blob must go, and nothing may appear

    assert wait_until(lambda: files_under(endpoint.store.root) == before)
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="cut")
    assert [e for e in pending(endpoint.store) if e.bucket == bucket] == []


def test_a_cut_off_overwrite_keeps_the_old_object(endpoint, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"old and whole")
    send_part_of(endpoint, f"/{bucket}/k", b"n" * (1 << 20), 1000)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"old and whole"
    assert [e.key for e in pending(endpoint.store) if e.bucket == bucket] == ["k"]


def test_large_objects_stream_through_without_being_held_in_memory(endpoint, s3, bucket):
    size, piece = 96 * 1024 * 1024, b"z" * (1 << 20)
    request = AWSRequest(method="PUT", url=f"{endpoint.url}/{bucket}/big")
    request.context["payload_signing_enabled"] = False
    auth = S3SigV4Auth(Credentials(endpoint.key_id, endpoint.secret), "s3", "us-east-1")
    auth._should_sha256_sign_payload = lambda _request: False  # UNSIGNED-PAYLOAD, as botocore sends over TLS
    auth.add_auth(request)
    assert request.headers["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
    headers = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()}
    headers["Content-Length"] = str(size)

    def body():  # noqa: ANN202
        for _ in range(size // len(piece)):
            yield piece

    tracemalloc.start()
    try:
        r = httpx.put(f"{endpoint.url}/{bucket}/big", content=body(), headers=headers, timeout=120)
        assert r.status_code == 200, r.text
        with httpx.stream("GET", s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "big"})) as got:
            received = sum(len(c) for c in got.iter_bytes())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == size
    assert peak < 24 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB object"
