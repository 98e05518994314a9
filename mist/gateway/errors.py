"""The edge's one mapping from mist's exception tree to HTTP status codes and bodies.

This is the only place in mist that chooses a status code for an error.
"""

from __future__ import annotations

import json
import logging
import math

from starlette.responses import JSONResponse, Response

from mist import errors

log = logging.getLogger(__name__)

STATUS: list[tuple[type[errors.MistError], int]] = [
    (errors.PayloadTooLarge, 413),
    (errors.NotFound, 404),
    (errors.Unauthenticated, 401),
    (errors.Forbidden, 403),
    (errors.LimitExceeded, 429),
    (errors.Conflict, 409),
    (errors.SpendCapReached, 402),  # Payment Required: the month's spend cap is reached
    (errors.DeployRejected, 422),
    (errors.UserError, 400),
    (errors.NoCapacity, 503),  # 429 when the queue was full, see status_for
    (errors.StaleEpoch, 503),  # the shard moved: the caller retries and finds its new owner
    (errors.CoordinationUnavailable, 503),
    (errors.WorkerLost, 502),  # the upstream (a worker) failed mid-call: the caller may retry
    (errors.PlatformError, 500),
    (errors.MistError, 500),
]


def status_for(exc: errors.MistError) -> int:
    if isinstance(exc, errors.NoCapacity) and exc.queue_full:
        return 429
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(exc: errors.MistError) -> dict[str, object]:
    err: dict[str, object] = {"code": exc.code, "message": exc.message}
    detail = getattr(exc, "detail", None)
    if detail:
        err["detail"] = detail
    return {"error": err}


def error_headers(exc: errors.MistError) -> dict[str, str]:
    headers: dict[str, str] = {}
    if isinstance(exc, (errors.NoCapacity, errors.LimitExceeded)):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, errors.Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="mist"'
    inv = getattr(exc, "invocation_id", None)
    if inv:
        headers["X-Mist-Invocation-Id"] = inv
    return headers


def error_answer(exc: errors.MistError) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, JSON body) of an error; platform errors (5xx but no capacity) are logged."""
    status = status_for(exc)
    if status >= 500 and not isinstance(exc, errors.NoCapacity):
        log.error("platform error: %s", exc.message)
    return status, error_headers(exc), json.dumps(error_body(exc)).encode()


def error_response(exc: errors.MistError) -> Response:
    status, headers, body = error_answer(exc)
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def plain_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)
