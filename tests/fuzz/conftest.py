"""A real `mist up` for the API fuzzer, with something to fuzz and something that must survive it."""

from __future__ import annotations

import io
import socket

import httpx
import pytest

from mist.control.packaging import zip_directory
from tests.e2e.conftest import Server, start_server, write_function

TARGET = """\
def handler(event, context):
    print("event:", event)
    return event
"""
CANARY = """\
import os

def handler(event, context):
    return {"alive": True, "secret_set": os.environ.get("CANARY_TOKEN") == "canary-token-42"}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def zipped(root, name: str, source: str) -> bytes:
    buf = io.BytesIO()
    zip_directory(write_function(root / name, {"main.py": source}), buf)
    return buf.getvalue()


@pytest.fixture(autouse=True)
def _no_fixed_s3_port(monkeypatch):
    monkeypatch.delenv("MIST_S3_PORT", raising=False)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    """mist up (S3 endpoint on: its key routes are fuzzed too) holding:
    - `hello` in the default tenant and in `acme`: the fuzz target, the name the OpenAPI
      document gives as example (returns its event), with a secret, a trigger and a queue message;
    - `canary` in tenant `keep`, with a secret: no fuzzed request can name it (the fuzzer sends
      no X-Mist-Tenant), and it must still answer afterwards;
    - a developer key of `acme`, for the run as a non-admin of another tenant."""
    root = tmp_path_factory.mktemp("fuzz")
    server = start_server(root / "data", "--s3-port", str(free_port()))
    with server.client() as c:
        for tenant in ("keep", "acme"):
            assert c.post("/v1/tenants", json={"name": tenant}).status_code == 201
        for tenant, name, source, secret in (("default", "hello", TARGET, {"DB_PASSWORD": "fuzz-target-pw"}),
                                             ("acme", "hello", TARGET, {"DB_PASSWORD": "fuzz-target-pw"}),
                                             ("keep", "canary", CANARY, {"CANARY_TOKEN": "canary-token-42"})):
            h = {"X-Mist-Tenant": tenant}
            r = c.post(f"/v1/functions/{name}/versions", headers=h,
                       files={"code": ("c.zip", zipped(root, f"{tenant}-{name}", source))})
            assert r.status_code == 201, r.text
            assert c.patch(f"/v1/functions/{name}/secrets", headers=h, json=secret).status_code == 200
        assert c.post("/v1/functions/hello/triggers", json={"kind": "cron", "rate": "1 day"}).status_code == 201
        assert c.post("/v1/functions/hello/invocations", json={"n": 1}).status_code == 200
        server.acme_key = c.post("/v1/keys", json={"role": "developer"}, headers={"X-Mist-Tenant": "acme"}).json()["key"]
    assert canary_answers(server)
    yield server
    server.stop()


def canary_answers(server: Server) -> bool:
    with httpx.Client(base_url=server.url, headers={**server.auth, "X-Mist-Tenant": "keep"}, timeout=30) as c:
        r = c.post("/v1/functions/canary/invocations", json={})
    return r.status_code == 200 and r.json() == {"alive": True, "secret_set": True}
