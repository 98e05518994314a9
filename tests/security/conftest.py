"""The red-team suite's fixtures: one real `mist up` per module (with its S3 endpoint), hostile
functions deployed to it over the HTTP API, and a neighbour that must keep serving throughout.
The neighbour belongs to another tenant (`victim`) than the hostile functions (`default`)."""

from __future__ import annotations

import io
import json
import secrets
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from tests.e2e.conftest import Server, start_server
from tests.s3.test_mist_up import free_port

# A neighbour: its first invocation writes a random token to its /tmp; every later one returns
# it. The same token after an attack means the same instance kept serving, untouched.
NEIGHBOUR = '''
import os, secrets
def handler(event, context):
    path = "/tmp/token"
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(secrets.token_hex(8))
    return {"token": open(path).read(), "echo": event}
'''


VICTIM = "victim"  # the neighbour's tenant


def _in(tenant: str | None) -> dict[str, str]:
    """The admin key acts in `tenant` (None: the default tenant, the attackers')."""
    return {"X-Mist-Tenant": tenant} if tenant else {}


def zip_bytes(files: dict[str, str | bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, content in files.items():
            z.writestr(name, content)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            info.create_system = 3
            z.writestr(info, target)
    return buf.getvalue()


@dataclass
class Mist:
    server: Server
    s3_port: int
    neighbour_token: str = ""

    def client(self) -> httpx.Client:
        return self.server.client()

    def deploy(self, name: str, source: str | None = None, *, config: dict | None = None,
               zipped: bytes | None = None, tenant: str | None = None) -> httpx.Response:
        body = zipped if zipped is not None else zip_bytes({"main.py": source or ""})
        with self.client() as c:
            return c.post(f"/v1/functions/{name}/versions", files={"code": (f"{name}.zip", body, "application/zip")},
                          data={"config": json.dumps(config or {})}, headers=_in(tenant))

    def invoke(self, name: str, event: object = None, tenant: str | None = None) -> httpx.Response:
        with self.client() as c:
            return c.post(f"/v1/functions/{name}/invocations", content=json.dumps(event).encode(),
                          headers=_in(tenant))

    def assert_unaffected(self) -> None:
        """mist answers and the neighbour's instance is the same one, serving."""
        with self.client() as c:
            assert c.get("/healthz").status_code == 200
            assert c.get("/v1/functions").status_code == 200
        probe = secrets.token_hex(4)
        answer = self.invoke("neighbour", probe, VICTIM)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"token": self.neighbour_token, "echo": probe}


def start_mist(tmp_path_factory: pytest.TempPathFactory, functions: dict[str, tuple[str, dict]]) -> Mist:
    """A `mist up` with the neighbour and `functions` (name -> (source, config)) deployed."""
    port = free_port()
    server = start_server(tmp_path_factory.mktemp("redteam") / "data", "--s3-port", str(port))
    m = Mist(server, port)
    try:
        with m.client() as c:
            assert c.post("/v1/tenants", json={"name": VICTIM}).status_code == 201
        assert m.deploy("neighbour", NEIGHBOUR, tenant=VICTIM).status_code == 201
        first = m.invoke("neighbour", "first", VICTIM)
        assert first.status_code == 200, first.text
        m.neighbour_token = first.json()["token"]
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda item: (item[0], m.deploy(item[0], item[1][0], config=item[1][1])),
                                    functions.items()))
        for name, answer in answers:
            assert answer.status_code == 201, (name, answer.text)
    except BaseException:
        server.stop()
        raise
    return m
