"""Cluster mode for real (issue 7): two `mist up --db` processes (own data dirs and ports, real
sandboxes) on one fresh PostgreSQL database. What a user of either sees: a function deployed
through one runs on the other (its code fetched from the database), a key revoked through one is
refused by the other within seconds, both see every record, and async work in flight on a
process killed with SIGKILL is finished by the survivor once its lease runs out."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import MIST, REPO, Server, shared_secrets_key, start_server, write_function

pytestmark = pytest.mark.sandbox

LEASE_S = 4  # --event-lease: how long the survivor waits for the dead process's events


def cli(server: Server, key: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MIST_URL": server.url, "MIST_API_KEY": key, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([MIST, *args], capture_output=True, text=True, env=env, timeout=180, cwd=REPO)


def until(what: str, check, timeout: float = 30, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(every)


def start_both(tmp_path: Path, fresh_pg_url: str, *extra: str) -> tuple[Server, Server]:
    """Both processes started at the same moment against the empty database (`extra`: more
    options of `mist up` for both)."""
    key_file = shared_secrets_key(tmp_path)
    started: dict[str, Server] = {}
    errors: list[BaseException] = []

    def start(name: str) -> None:
        try:
            started[name] = start_server(tmp_path / name, "--db", fresh_pg_url, "--secrets-key-file", str(key_file),
                                         "--event-lease", str(LEASE_S), *extra)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in started.values():
        if errors:
            s.stop()
    assert not errors, errors
    return started["a"], started["b"]


def test_two_processes_on_one_database_serve_as_one_platform(tmp_path, fresh_pg_url):
    a, b = start_both(tmp_path, fresh_pg_url)
    try:
        made = [s for s in (a, b) if (s.data_dir / "admin.key").exists()]
        assert len(made) == 1, "the cluster's first start makes the admin key, and only it"
        admin = made[0].admin_key
        auth = {"Authorization": f"Bearer {admin}"}
        ca, cb = httpx.Client(base_url=a.url, headers=auth, timeout=60), httpx.Client(base_url=b.url, headers=auth,
                                                                                        timeout=60)
        src = write_function(tmp_path / "work", {"main.py": (
            "import os, time\n"
            "def handler(event, context):\n"
            "    time.sleep(event.get('sleep', 0))\n"
            "    return {'n': event.get('n'), 'token': os.environ.get('TOKEN')}\n")})  # fmt: skip
        r = cli(a, admin, "deploy", "work", str(src), "--concurrency", "4")
        assert r.returncode == 0, r.stderr

        # deployed on A, invoked on B: B fetches the code from the database
        sync = cb.post("/v1/functions/work/invocations", json={"n": 1})
        assert sync.status_code == 200 and sync.json() == {"n": 1, "token": None}, sync.text
        assert [p.name for p in (b.data_dir / "code").iterdir() if not p.name.startswith(".")] == \
               [p.name for p in (a.data_dir / "code").iterdir() if not p.name.startswith(".")]
        queued = cb.post("/v1/functions/work/invocations", json={"n": 2}, headers={"X-Mist-Invocation-Type": "Event"})
        assert queued.status_code == 202
        done = until("the async invocation made on B", lambda: (
            ca.get(f"/v1/invocations/{queued.json()['invocation_id']}").json()["status"] == "succeeded"))
        assert done

        # records of both are seen through either
        on_a = ca.post("/v1/functions/work/invocations", json={"n": 3})
        ids = {on_a.headers["x-mist-invocation-id"], sync.headers["x-mist-invocation-id"]}
        for c in (ca, cb):
            listed = until("both records", lambda c=c: ids <= {
                r["id"] for r in c.get("/v1/functions/work/invocations").json()["invocations"]})
            assert listed

        # a new version deployed on B is what A runs next
        r = cli(b, admin, "update", "work", "--memory", "256")
        assert r.returncode == 0, r.stderr

        def version_run_on_a():
            inv = ca.post("/v1/functions/work/invocations", json={}).headers["x-mist-invocation-id"]
            return until("the record", lambda: ca.get(f"/v1/invocations/{inv}").json().get("version"))

        assert until("A runs B's new version", lambda: version_run_on_a() == 2, timeout=5, every=0.3)

        # a secret set through A (sealed with the cluster's key) is what B's instances get
        r = cli(a, admin, "secret", "set", "work", "TOKEN=shared-by-the-cluster")
        assert r.returncode == 0, r.stderr
        until("B runs with A's secret", lambda: cb.post("/v1/functions/work/invocations", json={}).json()["token"]
              == "shared-by-the-cluster", timeout=5, every=0.3)

        # a key made on A works on B; revoked on A, B refuses it within seconds
        made_key = ca.post("/v1/keys", json={"role": "developer", "name": "short-lived"}).json()
        dev = {"Authorization": f"Bearer {made_key['key']}"}
        until("B accepts A's new key", lambda: httpx.get(f"{b.url}/v1/functions", headers=dev).status_code == 200)
        revoked_at = time.monotonic()
        assert ca.delete(f"/v1/keys/{made_key['key_id']}").status_code == 200
        until("B refuses the revoked key", lambda: httpx.get(f"{b.url}/v1/functions", headers=dev).status_code == 401,
              timeout=3)
        refused_after = time.monotonic() - revoked_at

        # async work in flight on A when A is killed -9: B runs every event once A's leases run out
        events = [ca.post("/v1/functions/work/invocations", json={"n": 100 + i, "sleep": 1},
                          headers={"X-Mist-Invocation-Type": "Event"}).json()["invocation_id"] for i in range(12)]
        until("A holds events", lambda: ca.get("/v1/statistics").json()["Dispatcher"]["running"] > 0, every=0.02)
        a.proc.kill()
        a.proc.wait()
        killed = time.monotonic()

        def all_done():
            found = [cb.get(f"/v1/invocations/{i}").json() for i in events]
            return found if all(f["status"] == "succeeded" for f in found) else None

        found = until("B finishes every event A held", all_done, timeout=LEASE_S + 40, every=0.5)
        recovered_s = time.monotonic() - killed
        lost_attempts = [x for f in found for x in f["attempts"] if x["outcome"] == "lost"]
        assert lost_attempts, "at least one event was running on A when it died, and was run again by B"
        print(f"\nB refused the revoked key {refused_after:.2f} s after A revoked it; "
              f"{len(lost_attempts)} attempts lost with A, every event done by B {recovered_s:.1f} s after kill -9 "
              f"(lease {LEASE_S} s)")
        ca.close()
        cb.close()
    finally:
        a.stop()
        b.stop()
