"""JSON request bodies the routes read themselves: read with a size cap, parsed, and refused with
a clear 400 when they are not JSON text that mist could store and show again.

JSON may escape half of a UTF-16 surrogate pair (`"\\ud800"`): Python decodes it to a string
no UTF-8 encoder accepts, so a value holding one was stored, and then every answer showing it
failed (found by reasoning about what the API fuzzer cannot send: its requests are UTF-8).
"""

from __future__ import annotations

import json

from fastapi import Request

from mist.errors import InvalidRequest
from mist.gateway.invoke import read_body

BODY_MAX = 1024 * 1024  # configuration, not data: a megabyte is plenty
_REQUIRED = object()


def parse_json(raw: bytes | str, example: str, what: str = "the body") -> object:
    try:
        value = json.loads(raw)
    except ValueError as exc:  # the message names a position, never the text
        raise InvalidRequest(f"{what} is not JSON ({exc}); send e.g. {example}") from None
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise InvalidRequest(f"{what} holds a lone surrogate (an escape like \\ud800 without its pair), which is "
                             "not text; send valid Unicode") from None
    return value


async def json_body(request: Request, example: str, *, limit: int = BODY_MAX, empty: object = _REQUIRED) -> object:
    """The request's JSON body; `empty` for an empty body (default: refused)."""
    raw = await read_body(request, limit)
    if not raw.strip():
        if empty is _REQUIRED:
            raise InvalidRequest(f"the body is empty; send JSON, e.g. {example}")
        return empty
    return parse_json(raw, example)


async def json_object(request: Request, example: str, *, limit: int = BODY_MAX) -> dict:
    body = await json_body(request, example, limit=limit)
    if not isinstance(body, dict):
        raise InvalidRequest(f"the body must be a JSON object, e.g. {example}")
    return body
