"""/openapi.json says what the routes take and answer (clients and the API fuzzer read it)."""

import re


async def test_every_path_parameter_is_declared(client):
    doc = (await client.get("/openapi.json")).json()
    missing = []
    for path, operations in doc["paths"].items():
        wanted = set(re.findall(r"{(\w+)}", path))
        for method, op in operations.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            if declared != wanted:
                missing.append(f"{method.upper()} {path}: {sorted(wanted - declared)}")
    assert missing == []  # the HTTP trigger reads its path itself: it used to declare none


async def test_errors_are_documented_in_mists_shape_and_never_as_fastapis_422(client):
    doc = (await client.get("/openapi.json")).json()
    assert "HTTPValidationError" not in str(doc)
    op = doc["paths"]["/v1/functions/{name}"]["patch"]
    for status in ("400", "401", "403", "404"):
        assert op["responses"][status]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert doc["paths"]["/v1/functions/{name}/versions"]["post"]["responses"]["422"]  # DeployRejected is real
    assert doc["components"]["securitySchemes"]["apiKey"] == {**doc["components"]["securitySchemes"]["apiKey"],
                                                             "type": "http", "scheme": "bearer"}
    assert doc["paths"]["/healthz"]["get"]["security"] == []


async def test_routes_that_read_their_own_input_declare_it(client):
    paths = (await client.get("/openapi.json")).json()["paths"]
    body = lambda path, method: paths[path][method]["requestBody"]["content"]["application/json"]["schema"]  # noqa: E731
    assert body("/v1/functions/{name}", "patch")["properties"]["memory_mb"] == {
        "type": "integer", "minimum": 64, "maximum": 10240}
    assert body("/v1/functions/{name}/secrets", "patch")["additionalProperties"]["anyOf"][1] == {"type": "null"}
    assert set(body("/v1/keys", "post")["properties"]) == {"role", "name", "expires_at"}
    assert body("/v1/functions/{name}/dlq/redrive", "post")["properties"]["ids"]["type"] == "array"
    invoke = paths["/v1/functions/{name}/invocations"]["post"]
    assert {p["name"] for p in invoke["parameters"]} >= {"name", "version", "X-Mist-Invocation-Type",
                                                         "X-Mist-Idempotency-Key"}
    name = next(p for p in invoke["parameters"] if p["name"] == "name")
    assert name["schema"]["pattern"] == "^[a-z0-9][a-z0-9-]{0,62}$"
    trigger = paths["/fn/{name}/{path}"]["get"]
    assert [p["name"] for p in trigger["parameters"]] == ["name", "path"]
