"""Spend caps across a cluster, for real: two `mist up --db` processes on one fresh PostgreSQL
database. A tenant's cap reached by invocations through process A is enforced by process B
within a few seconds (B reads the tenants' month-to-date totals from the shared usage table every
2 s; A imports its usage journal every second), although B itself ran nothing."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.conftest import write_function
from tests.e2e.test_cluster_state import cli, start_both, until
from tests.e2e.test_billing import PLANS, WORK

pytestmark = pytest.mark.sandbox


def test_a_cap_reached_through_one_process_is_enforced_by_the_other_within_seconds(tmp_path, fresh_pg_url):
    (tmp_path / "plans.toml").write_text(PLANS)  # 0.20 per request, no free tier
    a, b = start_both(tmp_path, fresh_pg_url, "--plans", str(tmp_path / "plans.toml"))
    clients: list[httpx.Client] = []
    try:
        admin = next(s for s in (a, b) if (s.data_dir / "admin.key").exists()).admin_key
        auth = {"Authorization": f"Bearer {admin}"}
        ca, cb = clients = [httpx.Client(base_url=s.url, headers=auth, timeout=60) for s in (a, b)]
        deployed = cli(a, admin, "deploy", "work", str(write_function(tmp_path / "work", {"main.py": WORK})))
        assert deployed.returncode == 0, deployed.stderr
        capped = cli(a, admin, "billing", "set", "default", "--cap", "1.00")
        assert capped.returncode == 0, capped.stderr

        def cap_on(client: httpx.Client) -> str | None:
            return client.get("/v1/billing/tenants/default").json()["monthly_spend_cap"]

        until("b follows the cap", lambda: cap_on(cb) == "1.00", timeout=10)
        assert cb.post("/v1/functions/work/invocations", json={}).status_code == 200  # b serves: 0.20 spent
        until("a counts b's request", lambda: ca.get("/v1/billing/tenants/default").json()["requests"] == 1,
              timeout=8)
        served = 0
        while (r := ca.post("/v1/functions/work/invocations", json={})).status_code == 200:
            served += 1
            assert served < 10, "a never refused"
        assert r.status_code == 402 and r.json()["error"]["code"] == "SpendCapReached"
        assert served == 4, "a counted b's invocation too (4 x 0.20 + b's 0.20 + compute > 1.00)"
        reached_at = time.monotonic()

        def b_reached() -> bool:
            return cb.get("/v1/billing/tenants/default").json()["cap_reached"]

        until("b sees the cap reached", b_reached, timeout=8, every=0.05)
        lag = time.monotonic() - reached_at
        refused = cb.post("/v1/functions/work/invocations", json={})
        assert refused.status_code == 402, refused.text
        assert "reached its monthly spend cap of 1.00 USD" in refused.json()["error"]["message"]
        assert lag < 5, f"b refused {lag:.1f} s after a (bound: refresh 2 s + import 1 s + a query)"
        print(f"b enforced the cap {lag:.2f} s after a reached it")
    finally:
        for c in clients:
            c.close()
        a.stop()
        b.stop()
