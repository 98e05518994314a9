"""Flow control through a real `mist up`: tenant and function rate limits answer 429 with
Retry-After and the limit's name, concurrency limits make callers wait (or refuse them past
max_queued), and another tenant is not held by any of it."""

from __future__ import annotations

import io
import json
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.sandbox

SLOW = "import time\ndef handler(event, context):\n    time.sleep(0.4)\n    return 'done'\n"


def deploy(server, name, source, config=None, tenant=None):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("main.py", source)
    with server.client() as c:
        r = c.post(f"/v1/functions/{name}/versions", files={"code": ("c.zip", buf.getvalue(), "application/zip")},
                   data={"config": json.dumps(config or {})}, headers={"X-Mist-Tenant": tenant} if tenant else {})
    assert r.status_code == 201, r.text


def invoke(server, name, tenant=None):
    with server.client() as c:
        return c.post(f"/v1/functions/{name}/invocations", json={}, headers={"X-Mist-Tenant": tenant} if tenant else {})


def test_a_tenants_rate_limit_refuses_with_retry_after_and_leaves_other_tenants_alone(server):
    with server.client() as c:
        assert c.post("/v1/tenants", json={"name": "metered", "limits": {"rate_per_s": 0.5, "burst": 2}}).status_code == 201
    deploy(server, "hello", "def handler(e, c):\n    return 1\n", tenant="metered")
    deploy(server, "hello", "def handler(e, c):\n    return 2\n")
    answers = [invoke(server, "hello", "metered") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    refused = answers[2]
    assert refused.json()["error"]["code"] == "LimitExceeded"
    assert "tenant metered" in refused.json()["error"]["message"] and "0.5 requests/s" in refused.json()["error"]["message"]
    assert int(refused.headers["retry-after"]) >= 1
    assert all(invoke(server, "hello").status_code == 200 for _ in range(5))  # the default tenant is not limited
    with server.client() as c:
        limits = c.patch("/v1/tenants/metered/limits", json={"rate_per_s": None}).json()["limits"]
    assert limits["rate_per_s"] is None
    assert invoke(server, "hello", "metered").status_code == 200


def test_reserved_concurrency_queues_callers_and_max_queued_refuses_the_rest(server):
    deploy(server, "slow", SLOW, {"reserved_concurrency": 1, "max_queued": 1})
    with ThreadPoolExecutor(3) as pool:
        t0 = time.monotonic()
        futures = [pool.submit(invoke, server, "slow") for _ in range(3)]
        answers = [f.result() for f in futures]
        elapsed = time.monotonic() - t0
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 200, 429], [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 429)
    assert "function slow: 1 queued requests" in refused.json()["error"]["message"]
    assert elapsed >= 0.8  # the second ran after the first: one at a time
    with server.client() as c:
        shown = c.get("/v1/functions/slow").json()["latest"]
    assert shown["reserved_concurrency"] == 1 and shown["max_queued"] == 1


def test_a_reservation_over_the_tenants_limit_is_refused_at_deploy(server):
    with server.client() as c:
        assert c.post("/v1/tenants", json={"name": "small", "limits": {"max_concurrency": 2}}).status_code == 201
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("main.py", "def handler(e, c):\n    return 1\n")
        r = c.post("/v1/functions/big/versions", files={"code": ("c.zip", buf.getvalue(), "application/zip")},
                   data={"config": json.dumps({"reserved_concurrency": 3})}, headers={"X-Mist-Tenant": "small"})
    assert r.status_code == 400 and "over its limit of 2" in r.json()["error"]["message"]


def test_with_limits_in_redis_concurrency_is_counted_by_shared_permits(tmp_path):
    """`mist up --limits-redis`: a function's reserved concurrency is taken as a permit in Redis
    (so every gateway sharing that Redis counts the same executions); one runs at a time."""
    import secrets as _secrets

    from tests.e2e.conftest import start_server

    server = start_server(tmp_path / "data", "--limits-redis", "redis://127.0.0.1:6379/0")
    try:
        name = f"slow{_secrets.token_hex(3)}"  # its permits' keys are its own in a shared Redis
        deploy(server, name, SLOW, {"reserved_concurrency": 1})
        with ThreadPoolExecutor(2) as pool:
            t0 = time.monotonic()
            answers = [f.result() for f in [pool.submit(invoke, server, name) for _ in range(2)]]
            elapsed = time.monotonic() - t0
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        assert elapsed >= 0.8  # one at a time
        with server.client() as c:
            permits = c.get("/v1/statistics").json()["Admission"]["permits"]
        assert permits["taken"] == 2 and permits["unreachable"] == 0
    finally:
        server.stop()
