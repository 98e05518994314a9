"""API fuzzing: schemathesis (`st run`) generates requests for every operation of a real `mist
up`'s /openapi.json — examples, boundary values (coverage), random valid and invalid data, and
stateful sequences — sent as the admin, then as a developer of another tenant. Nothing may answer
a server error (tests/fuzz/checks.py says which 5xx are the API's documented answers), the
server must not crash, and what existed before (a function with a secret, the database) must be
intact afterwards.

Deterministic: a fixed seed and no example database, so a run repeats the last one request for
request (`--generation-deterministic` was tried: it repeats too, but explores so little that it
missed both 5xx this fuzzer found). EXAMPLES bounds the run: the module takes about a minute.
A failure prints schemathesis's report, with a curl command that reproduces each failing request.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import REPO
from tests.fuzz.conftest import canary_answers

pytestmark = [pytest.mark.sandbox, pytest.mark.fuzz]

ST = str(Path(sys.executable).parent / "st")
EXAMPLES = 40  # per operation and phase
SEED = 20261126


def fuzz(server, key: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz.checks", "NO_COLOR": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [ST, "run", f"{server.url}/openapi.json", "--header", f"Authorization: Bearer {key}",
         "--checks", "mist_answers_clearly", "--max-examples", str(EXAMPLES), "--seed", str(SEED),
         "--generation-database", "none", "--request-timeout", "20", "--no-color"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip


@pytest.mark.parametrize("who", ["admin", "other-tenant-developer"])
def test_no_operation_answers_a_server_error(fuzz_server, who, tmp_path):
    r = fuzz(fuzz_server, fuzz_server.admin_key if who == "admin" else fuzz_server.acme_key, tmp_path)
    operations = len([op for ops in httpx.get(f"{fuzz_server.url}/openapi.json").json()["paths"].values()
                      for op in ops])
    assert f"{operations} selected / {operations} total" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    assert re.search(r"Tested: +" + str(operations), r.stdout), r.stdout[-3000:]  # every one, none skipped
    assert r.returncode == 0, r.stdout[-12000:] + r.stderr[-3000:]


def test_the_server_and_what_it_held_survived_the_fuzzing(fuzz_server):
    assert fuzz_server.proc.poll() is None, "mist up exited"
    assert httpx.get(f"{fuzz_server.url}/healthz").status_code == 200
    assert canary_answers(fuzz_server)
    for database in ("mist.db", "s3.db"):
        with sqlite3.connect(fuzz_server.data_dir / database) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
