import asyncio
import json

from tests.gateway.conftest import deploy


async def test_deploy_creates_version_one_with_documented_defaults(client, tmp_path):
    r = await deploy(client, tmp_path)
    assert r.status_code == 201, r.text
    v = r.json()
    assert (v["name"], v["version"], v["handler"], v["memory_mb"], v["timeout_s"], v["concurrency"]) == (
        "hello", 1, "main.handler", 128, 30.0, 1)
    assert len(v["code_sha256"]) == 64 and v["layer_sha256"] is None


async def test_each_deploy_is_a_new_immutable_version_and_the_name_resolves_to_the_newest(client, tmp_path, worker):
    await deploy(client, tmp_path, config='{"memory_mb": 256}')
    r = await deploy(client, tmp_path, config='{"env": {"GREETING": "hi"}}')
    assert r.json()["version"] == 2
    got = (await client.get("/v1/functions/hello")).json()
    assert got["latest_version"] == 2 and got["latest"]["env"] == {"GREETING": "hi"}
    assert got["latest"]["memory_mb"] == 128  # a deploy takes its own config, not the last one's
    v1 = (await client.get("/v1/functions/hello/versions/1")).json()
    assert v1["memory_mb"] == 256
    versions = (await client.get("/v1/functions/hello/versions")).json()["versions"]
    assert [v["version"] for v in versions] == [2, 1]
    assert worker.retired[-1] == ("hello", 2)


async def test_concurrent_deploys_of_one_name_create_both_versions(client, tmp_path):
    a, b = await asyncio.gather(deploy(client, tmp_path), deploy(client, tmp_path))
    assert {a.status_code, b.status_code} == {201}
    assert {a.json()["version"], b.json()["version"]} == {1, 2}


async def test_streamed_deploy_reports_progress_then_the_version(client, tmp_path):
    r = await deploy(client, tmp_path, stream=True)
    assert r.status_code == 200
    events = [json.loads(line) for line in r.text.splitlines() if line]
    assert [e["event"] for e in events] == ["received", "validated", "created"]
    assert events[-1]["version"]["version"] == 1


async def test_bad_name_is_refused_with_the_rule(client, tmp_path):
    r = await deploy(client, tmp_path, name="Hello_World")
    assert r.status_code == 400
    assert "lowercase letters, digits and '-'" in r.json()["error"]["message"]


async def test_syntax_error_is_shown_at_deploy_with_its_traceback(client, tmp_path):
    r = await deploy(client, tmp_path, files={"main.py": "def handler(event, context)\n    return 1\n"})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "DeployRejected"
    assert "main.py" in err["message"] and "line 1" in err["message"]
    assert "SyntaxError" in err["detail"]


async def test_missing_handler_is_refused_naming_module_and_function(client, tmp_path):
    r = await deploy(client, tmp_path, files={"main.py": "def other(e, c):\n    pass\n"})
    assert r.status_code == 422
    assert "Handler 'handler' missing on module 'main'" in r.json()["error"]["message"]


async def test_bad_config_value_is_refused_naming_the_key(client, tmp_path):
    r = await deploy(client, tmp_path, config='{"memory_mb": 20000}')
    assert r.status_code == 400
    assert "memory_mb must be from 64 to 10240, got 20000" in r.json()["error"]["message"]
    assert (await client.get("/v1/functions/hello")).status_code == 404  # nothing half-created


async def test_patch_makes_a_new_version_with_the_same_code(client, tmp_path):
    first = (await deploy(client, tmp_path)).json()
    r = await client.patch("/v1/functions/hello", json={"timeout_s": 5})
    assert r.status_code == 201
    v = r.json()
    assert v["version"] == 2 and v["timeout_s"] == 5.0 and v["code_sha256"] == first["code_sha256"]


async def test_list_show_and_delete(client, tmp_path, worker):
    await deploy(client, tmp_path, name="a")
    await deploy(client, tmp_path, name="b")
    names = [f["name"] for f in (await client.get("/v1/functions")).json()["functions"]]
    assert names == ["a", "b"]
    assert (await client.delete("/v1/functions/a")).status_code == 204
    assert ("a", None) in worker.retired
    r = await client.get("/v1/functions/a")
    assert r.status_code == 404 and "does not exist" in r.json()["error"]["message"]
    assert (await client.delete("/v1/functions/a")).status_code == 404
    assert (await client.post("/v1/functions/a/invocations", json={})).status_code == 404


async def test_openapi_document_lists_the_api(client):
    doc = (await client.get("/openapi.json")).json()
    assert "/v1/functions/{name}/invocations" in doc["paths"]
    assert "/v1/functions/{name}/versions" in doc["paths"]


async def test_unknown_routes_answer_in_the_error_shape(client):
    r = await client.get("/v2/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "NotFound"


async def test_min_instances_are_provisioned_at_deploy_and_limits_are_kept(client, tmp_path, worker):
    r = await deploy(client, tmp_path, config='{"min_instances": 2, "max_instances": 5}')
    assert r.status_code == 201
    assert (r.json()["min_instances"], r.json()["max_instances"]) == (2, 5)
    spec = worker.provisioned[-1]
    assert (spec.function_name, spec.version, spec.min_instances, spec.max_instances) == ("hello", 1, 2, 5)
    r = await client.patch("/v1/functions/hello", json={"max_instances": None})
    assert r.json()["max_instances"] is None and r.json()["min_instances"] == 2
