"""Secrets with a real `mist up`: a function reads its secret from os.environ; the value shows up in
no answer, CLI output, log, audit entry or database file; rotating it gives the next invocation the
new value; a restart keeps it (and a wrong key fails clearly); another tenant can neither see nor set it."""

from __future__ import annotations

import hashlib
import io
import json

import pytest

from mist.control.packaging import zip_directory
from mist.sealing import encode_key, new_key
from tests.e2e.conftest import start_server, write_function

pytestmark = pytest.mark.sandbox

FIRST = "first-secret-Zq81xK"
SECOND = "second-secret-Pw44vL"
READS_ITS_SECRET = """\
import hashlib, os

def handler(event, context):
    token = os.environ.get("API_TOKEN")
    print("using token", token)
    if event == "fail":
        raise RuntimeError("the server refused " + str(token))
    return {"sha256": hashlib.sha256(token.encode()).hexdigest() if token else None,
            "db": os.environ.get("DB_URL")}
"""


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def leaks(server, *values: str) -> list[str]:
    """Where any of `values` shows up: API answers, CLI output, logs, the audit log, mist's own
    log, the database files."""
    found = []
    with server.client() as c:
        for path in ("/v1/functions", "/v1/functions/reader", "/v1/functions/reader/versions",
                     "/v1/functions/reader/secrets", "/v1/functions/reader/invocations",
                     "/v1/functions/reader/logs?limit=1000", "/v1/audit?limit=1000", "/v1/statistics"):
            text = c.get(path).text
            found += [f"GET {path}" for v in values if v in text]
    for args in (("show", "reader"), ("ls",), ("secret", "ls", "reader"), ("secret", "ls", "reader", "--json"),
                 ("logs", "reader"), ("audit",)):
        r = server.cli(*args)
        found += [f"mist {' '.join(args)}" for v in values if v in r.stdout + r.stderr]
    log = server.log.read_text(errors="replace")
    found += ["mist's log" for v in values if v in log]
    for db in server.data_dir.glob("mist.db*"):
        data = db.read_bytes()
        found += [db.name for v in values if v.encode() in data]
    return found


def test_a_secret_reaches_the_function_only_is_rotated_survives_a_restart_and_stays_in_its_tenant(
        tmp_path, monkeypatch):
    monkeypatch.setenv("MIST_SECRETS_KEY", encode_key(new_key()))
    server = start_server(tmp_path / "data")
    try:
        src = write_function(tmp_path / "reader", {"main.py": READS_ITS_SECRET})
        assert server.cli("deploy", "reader", str(src), "--env", "DB_URL=postgres://db").returncode == 0

        r = server.cli("secret", "set", "reader", f"API_TOKEN={FIRST}")
        assert r.returncode == 0 and "Set API_TOKEN on reader" in r.stdout and FIRST not in r.stdout + r.stderr
        with server.client() as c:
            ok = c.post("/v1/functions/reader/invocations", json={})
            assert ok.json() == {"sha256": sha(FIRST), "db": "postgres://db"}
            failed = c.post("/v1/functions/reader/invocations", json="fail")
            assert failed.status_code == 500 and failed.json()["errorMessage"] == "the server refused ***"
            record = c.get(f"/v1/invocations/{ok.headers['x-mist-invocation-id']}").json()
            assert "using token ***" in [line["text"] for line in record["logs"]]
        listed = server.cli("secret", "ls", "reader", "--json")
        assert [(s["name"], s["readable"]) for s in json.loads(listed.stdout)["secrets"]] == [("API_TOKEN", True)]

        # rotation: the next invocation gets the new value, from a file this time
        (tmp_path / "token").write_text(SECOND)
        assert server.cli("secret", "set", "reader", "--from-file", f"API_TOKEN={tmp_path / 'token'}").returncode == 0
        with server.client() as c:
            rotated = c.post("/v1/functions/reader/invocations", json={})
            assert rotated.json()["sha256"] == sha(SECOND) and rotated.headers["x-mist-cold-start"] == "true"

        # another tenant: cannot see or set it, and its own function of the same name does not get it
        with server.client() as c:
            assert c.post("/v1/tenants", json={"name": "acme"}).status_code == 201
            acme_key = c.post("/v1/keys", json={"role": "developer"}, headers={"X-Mist-Tenant": "acme"}).json()["key"]
        with server.client() as c:
            c.headers["Authorization"] = f"Bearer {acme_key}"
            assert c.get("/v1/functions/reader/secrets").status_code == 404
            assert c.patch("/v1/functions/reader/secrets", json={"API_TOKEN": "stolen"}).status_code == 404
            assert c.delete("/v1/functions/reader/secrets/API_TOKEN").status_code == 404
            buf = io.BytesIO()
            zip_directory(src, buf)
            assert c.post("/v1/functions/reader/versions", files={"code": ("c.zip", buf.getvalue())}).status_code == 201
            assert c.post("/v1/functions/reader/invocations", json={}).json() == {"sha256": None, "db": None}
        assert leaks(server, FIRST, SECOND) == []
        assert {"GET /v1/functions/reader", "mist show reader"} <= set(leaks(server, "postgres://db"))  # unlike env
    finally:
        assert server.stop() == 0

    # a restart keeps the secret (sealed in mist.db, opened with the same key)
    server = start_server(tmp_path / "data")
    try:
        with server.client() as c:
            assert c.post("/v1/functions/reader/invocations", json={}).json()["sha256"] == sha(SECOND)
    finally:
        assert server.stop() == 0

    # with another key, the function is not run, and the answer says why and what to do
    monkeypatch.setenv("MIST_SECRETS_KEY", encode_key(new_key()))
    server = start_server(tmp_path / "data")
    try:
        with server.client() as c:
            r = c.post("/v1/functions/reader/invocations", json={})
            assert r.status_code == 500 and r.json()["error"]["code"] == "SecretsUnavailable"
            assert "API_TOKEN do not open with the secrets key" in r.json()["error"]["message"]
            assert c.get("/v1/functions/reader/secrets").json()["secrets"][0]["readable"] is False
        assert "1 secrets do not open with the secrets key from MIST_SECRETS_KEY" in server.log.read_text()
        r = server.cli("secret", "rm", "reader", "API_TOKEN")
        assert r.returncode == 0 and "Removed 1 secret (API_TOKEN) from reader" in r.stdout
        with server.client() as c:
            assert c.post("/v1/functions/reader/invocations", json={}).json()["sha256"] is None
        assert leaks(server, FIRST, SECOND) == []
    finally:
        assert server.stop() == 0
