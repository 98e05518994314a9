"""`mist up --db`: what an operator who gets it wrong is told, before anything starts."""

import os
import subprocess

import pytest

from tests.cluster.proxy import CuttableProxy
from tests.e2e.conftest import MIST, REPO, start_server


def up(tmp_path, *args, env=None):
    return subprocess.run(
        [MIST, "up", "--data-dir", str(tmp_path / "data"), "--port", "0", "--s3-port", "0", *args],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env={k: v for k, v in {**os.environ, **(env or {})}.items() if not k.startswith("MIST_SECRETS")},
    )  # fmt: skip


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "secrets.key"
    path.write_bytes(os.urandom(32))
    path.chmod(0o600)
    return str(path)


def test_a_cluster_without_a_shared_secrets_key_does_not_start(tmp_path):
    r = up(tmp_path, "--db", "postgresql+psycopg://postgres@127.0.0.1/test")
    assert r.returncode == 1
    assert "--secrets-key-file" in r.stderr and "same key" in r.stderr


def test_a_db_url_that_is_not_postgresql_is_refused(tmp_path, key_file):
    r = up(tmp_path, "--secrets-key-file", key_file, env={"MIST_DB_URL": f"sqlite:///{tmp_path}/x.db"})
    assert r.returncode == 1
    assert "must be a PostgreSQL URL" in r.stderr and "needs no --db" in r.stderr


def test_an_unreachable_database_is_named_without_its_password(tmp_path, key_file):
    r = up(tmp_path, "--secrets-key-file", key_file, "--db", "postgresql://mist:s3cret@127.0.0.1:1/mist")
    assert r.returncode == 1
    assert "could not be reached" in r.stderr and "127.0.0.1:1" in r.stderr and "s3cret" not in r.stderr


@pytest.mark.sandbox
def test_a_lost_database_is_a_503_that_says_so_and_service_comes_back_with_it(tmp_path, key_file, fresh_pg_url):
    proxy = CuttableProxy()  # the database, as this process reaches it, can be cut
    url = fresh_pg_url.replace("@127.0.0.1/", f"@127.0.0.1:{proxy.port}/")
    server = start_server(tmp_path / "data", "--db", url, "--secrets-key-file", key_file)
    try:
        with server.client() as c:
            assert c.get("/v1/functions").status_code == 200
            proxy.cut()
            lost = c.get("/v1/functions")
            assert lost.status_code == 503
            assert lost.json()["error"]["code"] == "CoordinationUnavailable"
            assert "state database" in lost.json()["error"]["message"]
            assert "PostgreSQL is up and reachable" in lost.json()["error"]["message"]
            proxy.heal()
            back = [c.get("/v1/functions").status_code for _ in range(3)]
            assert back[-1] == 200  # a pooled connection the cut broke may fail once more; then served
    finally:
        server.stop()
        proxy.close()
