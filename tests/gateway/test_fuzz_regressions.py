"""Bugs the API fuzzer (tests/fuzz) found, each kept as the request that showed it and what a
user should get instead."""

from tests.gateway.conftest import deploy


async def test_a_key_expiring_after_the_year_9999_is_refused_and_the_key_list_keeps_working(client):
    # schemathesis: POST /v1/keys {"expires_at": 1.13e58} was stored, then GET /v1/keys answered 500
    # for the whole tenant (the expiry cannot be shown as a date)
    for expires_at in (1.1305964327817397e58, 253402300800, -1, "99999-01-01T00:00:00Z"):
        r = await client.post("/v1/keys", json={"role": "viewer", "expires_at": expires_at})
        assert r.status_code == 400 and "from 1970 to 9999" in r.json()["error"]["message"], expires_at
    r = await client.get("/v1/keys")
    assert r.status_code == 200 and all(k["expires_at"] is None for k in r.json()["keys"])
    assert (await client.get("/v1/audit", params={"since": "1e300"})).status_code == 400



async def test_a_lone_surrogate_in_a_body_is_refused_and_what_was_stored_still_shows(client, tmp_path):
    # JSON may escape half a surrogate pair; stored, it made every answer showing it fail with 500
    # (GET /v1/functions for a function's env, GET /v1/keys for a key's name)
    await deploy(client, tmp_path)
    for method, path, raw in [
        ("PATCH", "/v1/functions/hello", b'{"env": {"A": "\\ud800"}}'),
        ("POST", "/v1/keys", b'{"role": "viewer", "name": "x\\udfff"}'),
        ("POST", "/v1/tenants", b'{"name": "acme", "limits": {}, "\\ud800": 1}'),
        ("POST", "/v1/functions/hello/dlq/redrive", b'{"ids": ["\\ud800"]}'),
    ]:
        r = await client.request(method, path, content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "lone surrogate" in r.json()["error"]["message"], (path, r.text)
    r = await deploy(client, tmp_path, config='{"env": {"A": "\\ud800"}}')
    assert r.status_code == 400 and "the config part holds a lone surrogate" in r.json()["error"]["message"]
    for path in ("/v1/functions", "/v1/functions/hello", "/v1/keys"):
        assert (await client.get(path)).status_code == 200
    ok = await client.request("PATCH", "/v1/functions/hello", content=b'{"env": {"A": "\\ud83d\\ude00"}}')
    assert ok.status_code == 201 and ok.json()["env"] == {"A": "\U0001F600"}  # a whole pair is text


async def test_configuration_bodies_have_a_size_limit(client, tmp_path):
    await deploy(client, tmp_path)
    big = b'{"env": {"A": "' + b"x" * (2 * 1024 * 1024) + b'"}}'
    r = await client.request("PATCH", "/v1/functions/hello", content=big)
    assert r.status_code == 413 and "the limit is 1,048,576 bytes (1 MB)" in r.json()["error"]["message"]
