"""The OpenAPI document (`/openapi.json`): FastAPI's, corrected where mist's routes differ from
what FastAPI can see (pure post-processing, once, in `correct`).

FastAPI describes a route from its Python signature. mist's routes read much of their input
themselves (bodies checked by mist/models.py and friends, names by `Caller.fid`, the HTTP
trigger's path) and answer every error in one shape (mist/gateway/errors.py), so left alone
the document would say: no request body, any string is a name, errors are 422 with FastAPI's
shape, and no authentication. Clients and the API fuzzer (tests/fuzz) read the document, so it
must say what the server does:
  - the Bearer API key (`security`), absent on the public routes;
  - the error responses (400, 401, 403, 404) with mist's `Error` body; FastAPI's 422
    `HTTPValidationError` is never sent (mist answers 400) and is dropped;
  - the patterns of names in paths (functions, tenants, queues, secrets) and of versions.
Request bodies of routes that read their own are declared at the route (`openapi_extra`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mist.models import NAME_RE

NAME = {"type": "string", "pattern": f"^{NAME_RE.pattern}$", "maxLength": 63}
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"type": "string", "examples": ["NotFound"]},
                       "message": {"type": "string"}, "detail": {"type": "string"}},
    }},
}
_PATH_PARAMS: dict[str, dict[str, Any]] = {
    "name": {**NAME, "examples": ["hello"]},  # a function's; a tenant's under /v1/tenants
    "queue": {**NAME, "examples": ["orders"]},
    "version": {"type": "integer", "minimum": 1, "examples": [1]},
    "secret": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "maxLength": 128,
               "examples": ["DB_PASSWORD"]},
}
_TENANT = {**NAME, "examples": ["acme"]}
# the HTTP trigger's function: NAME (the default tenant) or NAME.TENANT
_TRIGGER_NAME = {"type": "string", "pattern": f"^{NAME_RE.pattern}(\\.{NAME_RE.pattern})?$", "maxLength": 127,
                 "examples": ["hello", "hello.acme"]}
_STATUS_TEXT = {"400": "Invalid request (mist's error body)", "401": "No API key, or one that is not accepted",
                "403": "The key's role does not allow this", "404": "Not found (or another tenant's)"}
PUBLIC = frozenset({"/healthz"})
_ANY_BODY = {"required": False, "content": {"application/json": {"schema": {}},
                                            "text/plain": {"schema": {"type": "string"}}}}


def install(app: Any) -> None:
    """Serve the corrected document from `app.openapi()` (FastAPI caches it; corrected once)."""
    generate: Callable[[], dict[str, Any]] = app.openapi
    corrected: list[object] = [None]

    def openapi() -> dict[str, Any]:
        doc = generate()
        if corrected[0] is not doc:
            correct(doc)
            corrected[0] = doc
        return doc

    app.openapi = openapi


def correct(doc: dict[str, Any]) -> None:
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Error"] = ERROR
    components["securitySchemes"] = {"apiKey": {
        "type": "http", "scheme": "bearer",
        "description": "An API key: `Authorization: Bearer mist_...` (DATA_DIR/admin.key, `mist key create`)"}}
    doc["security"] = [{"apiKey": []}]
    for path, operations in doc.get("paths", {}).items():
        trigger = path.startswith("/fn/")
        for method, operation in operations.items():
            _parameters(operation, path, trigger)
            if trigger and method not in ("get", "head", "options"):
                operation["requestBody"] = _ANY_BODY
            responses = operation.setdefault("responses", {})
            validation = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if validation.get("$ref", "").endswith("/HTTPValidationError"):
                del responses["422"]
            if path in PUBLIC:
                operation["security"] = []
                continue
            if trigger:  # public, or an API key of the function's tenant (mist deploy --http-auth key)
                operation["security"] = [{}, {"apiKey": []}]
            codes = ["400", "401", "403"] + (["404"] if "{" in path else [])
            for code in codes:
                responses.setdefault(code, {"description": _STATUS_TEXT[code], "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})


def _parameters(operation: dict[str, Any], path: str, trigger: bool) -> None:
    params = operation.setdefault("parameters", [])
    if trigger:  # the HTTP trigger reads its path itself: declare what it reads
        params.append({"name": "name", "in": "path", "required": True, "schema": _TRIGGER_NAME,
                       "description": "the function: NAME in the default tenant, NAME.TENANT in another"})
        if "{path}" in path:
            params.append({"name": "path", "in": "path", "required": True, "schema": {"type": "string"},
                           "description": "the rest of the path, passed to the function as rawPath"})
        return
    for param in params:
        if param.get("in") == "path" and param.get("name") in _PATH_PARAMS:
            extra = _TENANT if path.startswith("/v1/tenants/") else _PATH_PARAMS[param["name"]]
            param["schema"] = {**param.get("schema", {}), **extra}
