"""Access keys through mist's HTTP API and `mist s3 keys`, on the real gateway app and store."""

from __future__ import annotations

import json

import httpx
import pytest
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from mist.cli.main import app as cli_app
from mist.control.functions import FunctionService
from mist.control.invocations import InvocationService
from mist.control.layers import LayerStore
from mist.control.records import InvocationLog
from mist.gateway.app import build_app
from mist.gateway.services import Services
from mist.testing.stores import MemoryStore
from mist.testing.tenancy import bootstrapped
from mist.testing.worker import FakeWorker
from tests.s3.conftest import AppServer


def gateway(tmp_path, objects) -> tuple[object, str]:  # noqa: ANN001
    """The app and its admin key."""
    store, worker = MemoryStore(), FakeWorker()
    tenancy, admin_key = bootstrapped(tmp_path)
    records = InvocationLog(store)
    functions = FunctionService(tmp_path, store, LayerStore(tmp_path / "layers"), worker.retire)
    uploads = tmp_path / "uploads"
    uploads.mkdir(exist_ok=True)
    app = build_app(
        Services(functions, InvocationService(functions, worker, records), records, uploads, tenancy, objects=objects),
        fast_path=False,
    )
    return app, admin_key


@pytest.fixture
def mist_api(tmp_path, endpoint, monkeypatch):
    """The gateway app serving the endpoint's store, on a free port; the CLI talks to it (MIST_URL)."""
    app, admin_key = gateway(tmp_path, endpoint.store)
    server = AppServer(app)
    monkeypatch.setenv("MIST_URL", server.url)
    monkeypatch.setenv("MIST_API_KEY", admin_key)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin_key}"}) as client:
        yield client
    server.stop()


def test_a_key_made_through_the_api_signs_s3_requests_until_deleted(mist_api, endpoint):
    made = mist_api.post("/v1/s3/keys")
    assert made.status_code == 201
    key = made.json()
    assert key["access_key_id"].startswith("MIST") and len(key["secret_access_key"]) == 40
    assert key["owner"] == "default" and key["created_at"].endswith("+00:00")

    s3 = endpoint.client(key["access_key_id"], key["secret_access_key"])
    s3.list_buckets()

    listed = mist_api.get("/v1/s3/keys").json()["keys"]
    mine = [k for k in listed if k["access_key_id"] == key["access_key_id"]]
    assert mine == [{"access_key_id": key["access_key_id"], "owner": "default", "created_at": key["created_at"]}]

    assert mist_api.delete(f"/v1/s3/keys/{key['access_key_id']}").status_code == 204
    with pytest.raises(ClientError) as exc:
        s3.list_buckets()
    assert exc.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    gone = mist_api.delete(f"/v1/s3/keys/{key['access_key_id']}")
    assert gone.status_code == 404 and "mist s3 keys ls" in gone.json()["error"]["message"]


async def test_without_object_storage_the_key_routes_say_so(tmp_path):
    app, admin_key = gateway(tmp_path, None)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mist",
                                 headers={"Authorization": f"Bearer {admin_key}"}) as client:
        r = await client.post("/v1/s3/keys")
    assert r.status_code == 500 and "--s3-port" in r.json()["error"]["message"]


def run(*args: str):  # noqa: ANN202
    result = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200"}).invoke(cli_app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_mist_s3_keys_create_ls_rm(mist_api, endpoint):
    created = run("s3", "keys", "create")
    assert created.exit_code == 0
    key_id = created.stdout.split("access key id")[1].split()[0]
    secret = created.stdout.split("secret access key")[1].split()[0]
    assert "shown only now" in created.stderr
    endpoint.client(key_id, secret).list_buckets()

    listed = run("s3", "keys", "ls")
    assert listed.exit_code == 0 and key_id in listed.stdout and secret not in listed.stdout
    as_json = json.loads(run("s3", "keys", "ls", "--json").stdout)
    assert key_id in [k["access_key_id"] for k in as_json["keys"]]

    removed = run("s3", "keys", "rm", key_id)
    assert removed.exit_code == 0 and removed.stdout.strip() == f"Deleted access key {key_id}"
    again = run("s3", "keys", "rm", key_id)
    assert again.exit_code == 2 and "no S3 access key" in again.stderr


def test_mist_s3_keys_create_json_prints_the_secret_once(mist_api):
    key = json.loads(run("s3", "keys", "create", "--json").stdout)
    assert set(key) == {"access_key_id", "secret_access_key", "owner", "created_at"}


def test_mist_s3_help_shows_examples():
    result = run("s3", "keys", "--help")
    assert result.exit_code == 0 and "mist s3 keys create" in result.stdout
