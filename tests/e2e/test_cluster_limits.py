"""Flow control over a cluster (issue 5): two `mist up --db --limits-redis` processes count one
tenant's concurrency together, so a tenant allowed one execution at a time runs one at a time
whichever gateway its callers reach, while another tenant is not held."""

from __future__ import annotations

import io
import json
import secrets
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.test_cluster_state import start_both, until

pytestmark = pytest.mark.sandbox

SLOW = "import time\ndef handler(event, context):\n    time.sleep(0.6)\n    return 'done'\n"


def test_a_tenants_concurrency_limit_holds_across_two_gateways(tmp_path, fresh_pg_url):
    a, b = start_both(tmp_path, fresh_pg_url, "--limits-redis", "redis://127.0.0.1:6379/0")
    try:
        admin = next(s for s in (a, b) if (s.data_dir / "admin.key").exists()).admin_key
        ca, cb = (httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {admin}"}, timeout=60) for s in (a, b))
        tenant = f"one{secrets.token_hex(3)}"  # its permits' keys are its own in the shared Redis
        assert ca.post("/v1/tenants", json={"name": tenant, "limits": {"max_concurrency": 1}}).status_code == 201
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("main.py", SLOW)
        for client, who in ((ca, tenant), (ca, None)):
            r = client.post("/v1/functions/slow/versions", files={"code": ("c.zip", buf.getvalue(), "application/zip")},
                            data={"config": json.dumps({})}, headers={"X-Mist-Tenant": who} if who else {})
            assert r.status_code == 201, r.text
        headers = {"X-Mist-Tenant": tenant}
        until("B knows the tenant's limit and function",
              lambda: cb.get("/v1/functions/slow", headers=headers).status_code == 200
              and cb.get(f"/v1/tenants/{tenant}").json()["limits"]["max_concurrency"] == 1)
        for c in (ca, cb):  # warm an instance on each, so the timing below is the limit's
            assert c.post("/v1/functions/slow/invocations", json={}, headers=headers).status_code == 200

        with ThreadPoolExecutor(4) as pool:
            t0 = time.monotonic()
            limited = [pool.submit(c.post, "/v1/functions/slow/invocations", json={}, headers=headers)
                       for c in (ca, cb)]
            time.sleep(0.1)
            free = pool.submit(cb.post, "/v1/functions/slow/invocations", json={})  # the default tenant
            free_answer, free_at = free.result(), time.monotonic() - t0
            answers = [f.result() for f in limited]
            elapsed = time.monotonic() - t0
        assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
        assert elapsed >= 1.2, f"the two ran at once over two gateways ({elapsed:.2f} s)"
        assert free_answer.status_code == 200 and free_at < 1.2  # not held by the other tenant's limit
        ca.close()
        cb.close()
    finally:
        a.stop()
        b.stop()
