"""HTTP trigger mapping: an HTTP request -> API Gateway HTTP API (payload 2.0) event, and the
function's return value -> an HTTP response, as Lambda function URLs do it.

Worked example: `POST /fn/hello/items/7?x=1&x=2` with `Cookie: a=1; b=2` and a JSON body gives

    {"version": "2.0", "routeKey": "$default", "rawPath": "/items/7", "rawQueryString": "x=1&x=2",
     "cookies": ["a=1", "b=2"], "headers": {"content-type": "application/json", ...},
     "queryStringParameters": {"x": "1,2"},
     "requestContext": {"http": {"method": "POST", "path": "/items/7", ...}, ...},
     "body": "{\\"k\\": 1}", "isBase64Encoded": false}

and a return value of `{"statusCode": 201, "body": "ok"}` answers 201 with body `ok`, while a
plain `{"a": 1}` answers 200 `application/json` with body `{"a": 1}`.

The path the function sees is the part after `/fn/{name}` (each function URL has its own
domain on Lambda, so its routes start at `/`), which is what an ASGI app behind Mangum expects.
"""

from __future__ import annotations

import base64
import json
import time as _time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

TEXT_TYPES = (
    "application/json",
    "application/javascript",
    "application/xml",
    "application/x-www-form-urlencoded",
    "application/graphql",
    "application/x-ndjson",
)


def is_text_content(content_type: str | None) -> bool:
    if not content_type:
        return False
    ct = content_type.split(";", 1)[0].strip().lower()
    return ct.startswith("text/") or ct in TEXT_TYPES or ct.endswith("+json") or ct.endswith("+xml")


def build_event(
    *,
    method: str,
    path: str,
    raw_query: str,
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str,
    request_id: str,
    function_name: str,
    now: float,
    protocol: str = "HTTP/1.1",
) -> dict[str, Any]:
    """The payload-2.0 event for one request. `headers` as received (any case, repeats allowed)."""
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        merged[key] = f"{merged[key]},{value}" if key in merged else value

    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path or "/",
        "rawQueryString": raw_query,
        "headers": merged,
    }
    if cookies:
        event["cookies"] = cookies
    if raw_query:
        params: dict[str, str] = {}
        for k, v in parse_qsl(raw_query, keep_blank_values=True):
            params[k] = f"{params[k]},{v}" if k in params else v
        event["queryStringParameters"] = params
    event["requestContext"] = {
        "accountId": "anonymous",
        "apiId": function_name,
        "domainName": merged.get("host", "localhost"),
        "domainPrefix": function_name,
        "http": {
            "method": method.upper(),
            "path": path or "/",
            "protocol": protocol,
            "sourceIp": source_ip,
            "userAgent": merged.get("user-agent", ""),
        },
        "requestId": request_id,
        "routeKey": "$default",
        "stage": "$default",
        "time": _time.strftime("%d/%b/%Y:%H:%M:%S +0000", _time.gmtime(now)),
        "timeEpoch": int(now * 1000),
    }
    if body:
        text = None
        if is_text_content(merged.get("content-type")) or "content-type" not in merged:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        if text is not None:
            event["body"] = text
            event["isBase64Encoded"] = False
        else:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
    else:
        event["isBase64Encoded"] = False
    return event


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


class BadFunctionResponse(ValueError):
    """The function returned a response object that cannot be turned into HTTP."""


def map_response(value: Any, raw_json: bytes) -> HttpResponse:
    """The HTTP response for a return value. `raw_json` is the value as the sandbox encoded it."""
    if not (isinstance(value, dict) and "statusCode" in value):
        return HttpResponse(200, [("content-type", "application/json")], raw_json)

    status = value.get("statusCode")
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise BadFunctionResponse(f"statusCode must be an HTTP status from 100 to 599, got {status!r}")

    headers: list[tuple[str, str]] = []
    raw_headers = value.get("headers") or {}
    if not isinstance(raw_headers, dict):
        raise BadFunctionResponse(f"headers must be an object, got {type(raw_headers).__name__}")
    for k, v in raw_headers.items():
        headers.append((str(k).lower(), _header_value(v)))
    multi = value.get("multiValueHeaders") or {}
    if isinstance(multi, dict):
        for k, vs in multi.items():
            for v in vs if isinstance(vs, list) else [vs]:
                headers.append((str(k).lower(), _header_value(v)))
    cookies = value.get("cookies") or []
    if not isinstance(cookies, list):
        raise BadFunctionResponse("cookies must be a list of Set-Cookie strings")
    headers.extend(("set-cookie", str(c)) for c in cookies)

    body = value.get("body")
    if body is None:
        data = b""
    elif value.get("isBase64Encoded"):
        if not isinstance(body, str):
            raise BadFunctionResponse("body must be a base64 string when isBase64Encoded is true")
        try:
            data = base64.b64decode(body, validate=True)
        except ValueError as exc:
            raise BadFunctionResponse(f"body is not valid base64: {exc}") from None
    elif isinstance(body, str):
        data = body.encode("utf-8")
    else:
        data = json.dumps(body).encode("utf-8")
    if not any(k == "content-type" for k, _ in headers):
        headers.append(("content-type", "application/json"))
    return HttpResponse(status, headers, data)


def _header_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v) if not isinstance(v, (int, float)) else str(v)
    if "\n" in s or "\r" in s:
        raise BadFunctionResponse("a header value contains a line break")
    return s
