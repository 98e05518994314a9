"""Pay-per-use through a real `mist up`: what users see from `mist usage`, `mist invoice` and
`mist billing`, spend caps refusing invocations, provisioned instances billed while they run."""

from __future__ import annotations

import json
import time
from decimal import ROUND_HALF_UP, Decimal

import pytest

from tests.e2e.conftest import start_server, write_function

pytestmark = pytest.mark.sandbox

PLANS = """
default_plan = "metered"

[plans.metered]               # no free tier and a visible price per request
per_million_requests = "200000"
per_gb_s = "0.0001"
per_provisioned_gb_s = "0.00005"
free_requests = 0
free_gb_s = 0

[plans.pro]
per_million_requests = "0.10"
"""
WORK = "import time\ndef handler(event, context):\n    time.sleep(0.02)\n    return {'ok': True}\n"
FLAKY = "def handler(event, context):\n    raise ValueError('always')\n"


def month() -> str:
    return time.strftime("%Y-%m", time.gmtime())


def all_records(client) -> list[dict]:
    out, after = [], None
    while True:
        page = client.get("/v1/usage/records", params={"limit": 1000, **({"after": after} if after else {})}).json()
        out += page["records"]
        after = page["next"]
        if not after:
            return out


def reference_total(records: list[dict]) -> int:
    """The invoice total in micro-units from the ledger's records, in Decimal (the plan above)."""
    micro = Decimal("0.000001")
    requests = sum(1 for r in records if r["kind"] == "invocation")
    mb_ms = sum(Decimal(r["memory_mb"] * r["billed_ms"]) for r in records if r["kind"] == "invocation")
    prov = sum(Decimal(r["memory_mb"] * r["instances"] * r["billed_ms"]) for r in records if r["kind"] == "provisioned")
    lines = [Decimal("0.2") * requests, Decimal("0.0001") * mb_ms / 1_024_000, Decimal("0.00005") * prov / 1_024_000]
    return int(sum(x.quantize(micro, ROUND_HALF_UP) for x in lines) / micro)


def test_usage_invoices_and_spend_caps_of_a_real_mist_up(tmp_path):
    (tmp_path / "plans.toml").write_text(PLANS)
    server = start_server(tmp_path / "data", "--plans", str(tmp_path / "plans.toml"))
    try:
        for name, code, extra in (("work", WORK, ["--memory", "256"]), ("flaky", FLAKY, ["--retries", "1"])):
            r = server.cli("deploy", name, str(write_function(tmp_path / name, {"main.py": code})), *extra)
            assert r.returncode == 0, r.stderr
        with server.client() as c:
            answered = [c.post("/v1/functions/work/invocations", json={}) for _ in range(5)]
            assert all(a.status_code == 200 for a in answered)
            event = c.post("/v1/functions/flaky/invocations", json={},
                           headers={"X-Mist-Invocation-Type": "Event"}).json()["invocation_id"]  # fmt: skip
            for _ in range(300):
                view = c.get(f"/v1/invocations/{event}").json()
                if view["status"] == "dead-lettered":
                    break
                time.sleep(0.05)
            assert [a["outcome"] for a in view["attempts"]] == ["failed", "failed"]

            report = json.loads(server.cli("usage", "--json").stdout)
            rows = {r["function"]: r for r in report["rows"]}
            assert (rows["work"]["requests"], rows["flaky"]["requests"], rows["flaky"]["failed"]) == (5, 2, 2)
            assert rows["work"]["billed_ms"] >= 5 * 20 and rows["work"]["mb_ms"] == 256 * rows["work"]["billed_ms"]
            records = all_records(c)
            assert {r["id"] for r in records} == {a.headers["x-mist-invocation-id"] for a in answered} | {
                f"{event}-1", f"{event}-2"}

            invoice = json.loads(server.cli("invoice", "default", month(), "--json").stdout)
            assert invoice["total_micros"] == reference_total(records) and invoice["plan"]["name"] == "metered"
            text = server.cli("invoice", "default", month()).stdout
            assert "requests" in text and f"{invoice['total']} USD" in text
            assert server.cli("usage", "--by", "day", "--csv").stdout.startswith("tenant,day,requests,failed")

            # 7 requests x 0.20 = 1.40 (plus a little compute): a cap of 1.00 is reached
            capped = server.cli("billing", "set", "default", "--cap", "1.00")
            assert capped.returncode == 0 and "cap reached: invocations refused" in capped.stdout
            refused = server.cli("invoke", "work")
            assert refused.returncode == 2 and "reached its monthly spend cap of 1.00 USD" in refused.stderr
            assert c.post("/v1/functions/work/invocations", json={}).status_code == 402
            assert server.cli("billing", "set", "default", "--cap", "none").returncode == 0
            assert c.post("/v1/functions/work/invocations", json={}).status_code == 200
            shown = json.loads(server.cli("billing", "show", "default", "--json").stdout)
            assert (shown["plan"], shown["monthly_spend_cap"], shown["requests"]) == ("metered", None, 8)
            plans = server.cli("billing", "plans").stdout
            assert "metered *" in plans and "pro" in plans
    finally:
        assert server.stop() == 0


def test_provisioned_instances_are_billed_while_provisioned_and_survive_a_restart(tmp_path):
    server = start_server(tmp_path / "data")
    try:
        src = write_function(tmp_path / "warm", {"main.py": "def handler(event, context):\n    return 1\n"})
        started = time.time()
        assert server.cli("deploy", "warm", str(src), "--min-instances", "1").returncode == 0
        time.sleep(5)
        assert server.cli("deploy", "warm", str(src), "--min-instances", "0").returncode == 0
        stopped_provisioning = time.time()  # at the latest: the instance is billed until that deploy retired it
        assert server.stop() == 0
        server = start_server(tmp_path / "data")
        with server.client() as c:
            report = c.get("/v1/usage").json()
            time.sleep(2.5)  # a scale tick later: nothing more is billed
            later = c.get("/v1/usage").json()
    finally:
        server.stop()
    (row,) = report["rows"]
    seconds = row["provisioned_mb_ms"] / 128 / 1000
    assert row["requests"] == 0 and 4.0 <= seconds <= stopped_provisioning - started + 0.5
    assert later["rows"] == report["rows"]


def test_a_bad_plans_file_stops_mist_up_naming_the_key_and_value(tmp_path):
    bad = tmp_path / "plans.toml"
    bad.write_text('[plans.standard]\nper_gb_s = "-0.1"\n')
    with pytest.raises(AssertionError) as err:
        start_server(tmp_path / "data", "--plans", str(bad))
    assert f"mist up: {bad}: plans.standard.per_gb_s must be a number >= 0, got '-0.1'" in str(err.value)
