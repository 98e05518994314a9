"""requirements.txt: installed once into a shared layer; Lambda libraries (Mangum) work unchanged."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import write_function

pytestmark = [pytest.mark.sandbox, pytest.mark.network]

ASGI_APP = '''
from mangum import Mangum


async def app(scope, receive, send):
    assert scope["type"] == "http"
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    payload = {"method": scope["method"], "path": scope["path"], "query": scope["query_string"].decode(),
               "body_len": len(body)}
    await send({"type": "http.response.start", "status": 207,
                "headers": [(b"content-type", b"application/json"), (b"x-asgi", b"yes")]})
    await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


import json
handler = Mangum(app, lifespan="off")
'''


def test_requirements_are_installed_once_into_a_shared_layer_and_mangum_works(server, tmp_path):
    reqs = "mangum==0.19.0\n"
    a = write_function(tmp_path / "asgi-a", {"main.py": ASGI_APP, "requirements.txt": reqs})
    b = write_function(tmp_path / "asgi-b", {"main.py": ASGI_APP, "requirements.txt": reqs})
    first = server.cli("deploy", "asgi-a", str(a))
    assert first.returncode == 0, first.stderr + first.stdout
    second = server.cli("deploy", "asgi-b", str(b), "--json")
    assert second.returncode == 0, second.stderr
    with server.client() as c:
        la = c.get("/v1/functions/asgi-a").json()["latest"]["layer_sha256"]
        lb = json.loads(second.stdout)["layer_sha256"]
        assert la and la == lb
        layers = [p for p in (server.data_dir / "layers").iterdir() if not p.name.startswith(".")]
        assert len(layers) == 1
        r = c.post("/fn/asgi-b/items/9?x=1", content=b"12345")
    assert r.status_code == 207 and r.headers["x-asgi"] == "yes"
    assert r.json() == {"method": "POST", "path": "/items/9", "query": "x=1", "body_len": 5}


def test_a_bad_requirement_fails_the_deploy_with_pips_message(server, tmp_path):
    src = write_function(tmp_path / "badreq", {
        "main.py": "def handler(e, c):\n    return 1\n",
        "requirements.txt": "this-package-does-not-exist-mist==9.9.9\n"})  # fmt: skip
    r = server.cli("deploy", "badreq", str(src))
    assert r.returncode != 0
    assert "pip could not install requirements.txt" in r.stderr
    assert "this-package-does-not-exist-mist" in r.stderr
