"""The HTTP client of the CLI: every command reaches the server through `Api`, and only here.

`make_client()` builds the httpx client; tests replace it to inject a transport. Failures are
mapped at this boundary: a refused or broken connection becomes `Unreachable`, an error answer
of the API becomes `ApiError` (its `{"error": {...}}` body unpacked). Function errors of an
invocation are not exceptions here: `invoke` returns the response for the command to read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import httpx

from mist.tenancy import discovery

DEFAULT_URL = "http://127.0.0.1:8080"
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
NO_READ_TIMEOUT = httpx.Timeout(30.0, connect=5.0, read=None)  # invocations, deploys, followed logs


def base_url() -> str:
    return (os.environ.get("MIST_URL") or DEFAULT_URL).rstrip("/")


def tenant() -> str | None:
    """The tenant to act in (admin keys only): `mist --tenant T ...` or MIST_TENANT."""
    return os.environ.get("MIST_TENANT") or None


def auth_headers(url: str) -> dict[str, str]:
    """Authorization (see mist/tenancy/discovery.py for where the key comes from) and X-Mist-Tenant."""
    headers = {}
    key = discovery.api_key_for(url)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if tenant():
        headers["X-Mist-Tenant"] = str(tenant())
    return headers


def make_client() -> httpx.Client:
    """The httpx client every command uses (tests monkeypatch this to inject a transport)."""
    url = base_url()
    return httpx.Client(base_url=url, timeout=TIMEOUT, headers={"User-Agent": "mist-cli", **auth_headers(url)})


class Unreachable(Exception):
    """The server could not be reached, or the connection broke."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApiError(Exception):
    """An error answer of the API (a platform error, never a function error)."""

    def __init__(
        self, status: int, code: str, message: str, detail: str | None = None, retry_after: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.retry_after = retry_after

    @classmethod
    def from_body(cls, status: int, body: object, retry_after: str | None = None) -> ApiError:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            detail = error.get("detail")
            return cls(status, str(error.get("code", "Error")), error["message"],
                       detail if isinstance(detail, str) else None, retry_after)
        text = body if isinstance(body, str) else json.dumps(body)
        return cls(status, "Error", f"mist answered HTTP {status}: {text[:300].strip() or '(no body)'}")

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        return cls.from_body(response.status_code, parse_body(response), response.headers.get("retry-after"))


def parse_body(response: httpx.Response) -> Any:
    """The JSON body, or the text if it is not JSON, or None if empty."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


@contextmanager
def _translated(url: str) -> Iterator[None]:
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout):
        raise Unreachable(
            f"cannot reach mist at {url} — is `mist up` running? (set MIST_URL to point elsewhere)"
        ) from None
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise Unreachable(f"MIST_URL={url!r} is not a usable URL ({exc}); e.g. MIST_URL={DEFAULT_URL}") from None
    except httpx.TimeoutException:
        raise Unreachable(f"mist at {url} did not answer in time; is it overloaded?") from None
    except httpx.TransportError as exc:
        raise Unreachable(f"lost the connection to mist at {url} ({exc or type(exc).__name__})") from None


class Api:
    """The documented HTTP API, one method per call the CLI makes."""

    def __init__(self, client: httpx.Client | None = None) -> None:
        with _translated(base_url()):
            self._client = client if client is not None else make_client()
        self.url = str(self._client.base_url).rstrip("/")

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    # -- plumbing --------------------------------------------------------------------------

    def _send(self, method: str, path: str, *, stream: bool = False, **kwargs: Any) -> httpx.Response:
        with _translated(self.url):
            request = self._client.build_request(method, path, **kwargs)
            return self._client.send(request, stream=stream)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        return parse_body(response)

    def _open_stream(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._send(method, path, stream=True, **kwargs)
        if response.status_code >= 400:
            with _translated(self.url):
                response.read()
            response.close()
            raise ApiError.from_response(response)
        return response

    def ndjson(self, response: httpx.Response) -> Iterator[dict[str, Any] | str]:
        """The objects of an NDJSON answer as they arrive; blank (keep-alive) lines skipped, a line
        that is not a JSON object yielded as its text."""
        with _translated(self.url):
            for line in response.iter_lines():
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    obj = None
                yield obj if isinstance(obj, dict) else line

    # -- calls -----------------------------------------------------------------------------

    def list_functions(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/functions").get("functions", []))

    def get_function(self, name: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/functions/{name}"))

    def list_invocations(self, name: str, limit: int) -> list[dict[str, Any]]:
        body = self._json("GET", f"/v1/functions/{name}/invocations", params={"limit": limit})
        return list(body.get("invocations", []))

    def delete_function(self, name: str) -> None:
        self._json("DELETE", f"/v1/functions/{name}")

    def invoke(self, name: str, payload: bytes | None, version: int | None) -> httpx.Response:
        """The answer as is (status 200, a function error, or a platform error)."""
        params = {"version": version} if version is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else None
        return self._send(
            "POST", f"/v1/functions/{name}/invocations", params=params, content=payload or b"",
            headers=headers, timeout=NO_READ_TIMEOUT,
        )

    def invoke_event(
        self, name: str, payload: bytes | None, version: int | None, idempotency_key: str | None
    ) -> httpx.Response:
        """An asynchronous invocation: the 202 answer (ApiError for any error answer)."""
        params = {"version": version} if version is not None else None
        headers = {"X-Mist-Invocation-Type": "Event"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["X-Mist-Idempotency-Key"] = idempotency_key
        response = self._send(
            "POST", f"/v1/functions/{name}/invocations", params=params, content=payload or b"", headers=headers
        )
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        return response

    def get_invocation(self, invocation_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/invocations/{invocation_id}"))

    def dead_letters(self, name: str, limit: int) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/v1/functions/{name}/dlq", params={"limit": limit}).get("messages", []))

    def dead_letter(self, name: str, message_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/functions/{name}/dlq/{message_id}"))

    def redrive(self, name: str, ids: list[str] | None) -> list[dict[str, Any]]:
        body = {"ids": ids} if ids else {}
        return list(self._json("POST", f"/v1/functions/{name}/dlq/redrive", json=body).get("redriven", []))

    def list_queues(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/queues").get("queues", []))

    def receive(self, queue: str, max_messages: int, visibility_s: float) -> list[dict[str, Any]]:
        params = {"max": max_messages, "visibility_timeout": visibility_s}
        return list(self._json("POST", f"/v1/queues/{queue}/receive", params=params).get("messages", []))

    def delete_message(self, queue: str, message_id: str) -> None:
        self._json("DELETE", f"/v1/queues/{queue}/messages/{message_id}")

    def update_function(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """Change the configuration: a new version with the same code."""
        return dict(self._json("PATCH", f"/v1/functions/{name}", json=config))

    def start_deploy(self, name: str, config: dict[str, Any], code: BinaryIO, filename: str) -> httpx.Response:
        """Upload the code (read from `code` while sending) and return the open NDJSON answer."""
        return self._open_stream(
            "POST", f"/v1/functions/{name}/versions", params={"stream": "true"},
            data={"config": json.dumps(config)}, files={"code": (filename, code, "application/zip")},
            timeout=NO_READ_TIMEOUT,
        )

    def open_logs(
        self, name: str, *, invocation_id: str | None, limit: int | None, follow: bool
    ) -> httpx.Response:
        params: dict[str, Any] = {}
        if invocation_id is not None:
            params["invocation_id"] = invocation_id
        if limit is not None:
            params["limit"] = limit
        if follow:
            params["follow"] = "true"
        return self._open_stream("GET", f"/v1/functions/{name}/logs", params=params, timeout=NO_READ_TIMEOUT)

    # -- billing (docs/billing.md) ---------------------------------------------------------

    def _text(self, path: str, params: dict[str, Any]) -> str:
        response = self._send("GET", path, params=params)
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        return response.text

    def usage(self, params: dict[str, Any], *, csv: bool = False) -> Any:
        """The usage report (a dict), or its CSV text."""
        if csv:
            return self._text("/v1/usage", {**params, "format": "csv"})
        return dict(self._json("GET", "/v1/usage", params=params))

    def usage_records(self, params: dict[str, Any]) -> dict[str, Any]:
        return dict(self._json("GET", "/v1/usage/records", params=params))

    def invoice(self, tenant: str, month: str, *, csv: bool = False) -> Any:
        if csv:
            return self._text(f"/v1/invoices/{tenant}/{month}", {"format": "csv"})
        return dict(self._json("GET", f"/v1/invoices/{tenant}/{month}"))

    def plans(self) -> dict[str, Any]:
        return dict(self._json("GET", "/v1/plans"))

    def billing_tenants(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/billing/tenants").get("tenants", []))

    def billing_tenant(self, tenant: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/billing/tenants/{tenant}"))

    def set_billing_tenant(self, tenant: str, changes: dict[str, Any]) -> dict[str, Any]:
        return dict(self._json("PUT", f"/v1/billing/tenants/{tenant}", json=changes))
