"""A small in-memory fake of the mist HTTP API (docs/api.md), served through httpx.MockTransport.

Deploys run the real packaging checks (as the server does); invocations run the handler in this
process. The real server is tested elsewhere: this fake exists so the CLI's tests can assert what
a user sees without starting one.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import io
import json
import re
import runpy
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from mist.cli import api
from mist.cli.main import app
from mist.control import packaging
from mist.errors import DeployRejected, InvalidRequest, MistError, NotFound
from mist.models import network_json, network_policy

_STATUS = {"InvalidRequest": 400, "NotFound": 404, "DeployRejected": 422}


class FakeMist:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.functions: dict[str, list[dict[str, Any]]] = {}  # name -> versions, oldest first
        self.invocations: list[dict[str, Any]] = []
        self.log_lines: list[dict[str, Any]] = []
        self.requests: list[httpx.Request] = []
        self.configs: list[dict[str, Any]] = []  # the `config` part of each deploy
        self.answer: httpx.Response | None = None  # answers the next request instead, once
        self.events: dict[str, dict[str, Any]] = {}  # GET /v1/invocations/{id} of async invocations
        self.keys: dict[tuple[str, str], str] = {}  # (function, idempotency key) -> invocation id
        self.dead_letters: dict[str, list[dict[str, Any]]] = {}  # function -> [{"id", "sent_at", "record"}]
        self.queues: dict[str, list[dict[str, Any]]] = {}  # queue -> [{"id", "sent_at", "receive_count", "body"}]
        self.secrets: dict[str, list[str]] = {}  # function -> secret names (GET .../secrets)
        self.interrupt_followed_logs = False  # Ctrl-C after the history of a followed log stream
        self._clock = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.answer is not None:
            answer, self.answer = self.answer, None
            return answer
        name = r"/v1/functions/(?P<name>[^/]+)"
        routes: list[tuple[str, str, Callable[..., httpx.Response]]] = [
            ("GET", "/v1/functions", self.list_functions),
            ("POST", name + "/versions", self.deploy),
            ("GET", name, self.get_function),
            ("DELETE", name, self.delete_function),
            ("PATCH", name, self.update_function),
            ("POST", name + "/invocations", self.invoke),
            ("GET", name + "/invocations", self.list_invocations),
            ("GET", name + "/logs", self.logs),
            ("GET", name + "/secrets", self.list_secrets),
            ("GET", r"/v1/invocations/(?P<inv_id>[^/]+)", self.get_invocation),
            ("GET", name + "/dlq", self.list_dead_letters),
            ("GET", name + r"/dlq/(?P<message_id>[^/]+)", self.get_dead_letter),
            ("POST", name + "/dlq/redrive", self.redrive),
            ("GET", "/v1/queues", self.list_queues),
            ("POST", r"/v1/queues/(?P<queue>[^/]+)/receive", self.receive),
            ("DELETE", r"/v1/queues/(?P<queue>[^/]+)/messages/(?P<message_id>[^/]+)", self.delete_message),
        ]
        for method, pattern, route in routes:
            match = re.fullmatch(pattern, request.url.path)
            if method == request.method and match:
                try:
                    return route(request, **match.groupdict())
                except MistError as exc:
                    return error_response(exc)
        return error_response(NotFound(f"no route {request.method} {request.url.path}"))

    # -- functions ---------------------------------------------------------------------------

    def summary(self, name: str) -> dict[str, Any]:
        versions = self._versions(name)
        return {
            "name": name, "latest_version": versions[-1]["version"], "created_at": versions[0]["created_at"],
            "updated_at": versions[-1]["created_at"], "latest": versions[-1],
        }

    def list_functions(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"functions": [self.summary(n) for n in sorted(self.functions)]})

    def list_secrets(self, request: httpx.Request, name: str) -> httpx.Response:
        self._versions(name)
        return httpx.Response(200, json={"secrets": [{"name": n, "updated_at": "2026-12-07T03:00:00+00:00"}
                                                     for n in sorted(self.secrets.get(name, []))]})

    def get_function(self, request: httpx.Request, name: str) -> httpx.Response:
        return httpx.Response(200, json=self.summary(name))

    def delete_function(self, request: httpx.Request, name: str) -> httpx.Response:
        self._versions(name)
        del self.functions[name]
        return httpx.Response(204)

    def deploy(self, request: httpx.Request, name: str) -> httpx.Response:
        packaging.validate_name(name)
        parts = multipart(request)
        config = json.loads(parts.get("config") or b"{}")
        self.configs.append(config)
        if not 64 <= config.get("memory_mb", 128) <= 10240:
            raise InvalidRequest(f"memory_mb {config['memory_mb']} is out of range: use 64-10240")
        events: list[dict[str, Any]] = [{"event": "received", "bytes": len(parts["code"])}]
        try:
            events += self._create(name, config, parts["code"])
        except MistError as exc:
            events.append({"event": "error", "status": _STATUS.get(exc.code, 500), **error_body(exc)})
        if request.url.params.get("stream") != "true":
            raise AssertionError("the CLI deploys with ?stream=true")
        lines = (json.dumps(e).encode() + b"\n" for e in events)
        return httpx.Response(200, headers={"Content-Type": "application/x-ndjson"}, content=lines)

    def _create(self, name: str, config: dict[str, Any], code: bytes) -> list[dict[str, Any]]:
        zip_path = self.root / "upload.zip"
        zip_path.parent.mkdir(parents=True, exist_ok=True)
        zip_path.write_bytes(code)
        sha = packaging.sha256_file(zip_path)
        code_dir = self.root / "code" / sha
        if not code_dir.exists():
            packaging.extract_zip(zip_path, code_dir)
        events: list[dict[str, Any]] = [{"event": "validated", "files": sum(1 for p in code_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts)}]
        handler = config.get("handler") or packaging.find_default_handler(code_dir)
        packaging.check_code(code_dir, handler)
        requirements = code_dir / "requirements.txt"
        if requirements.is_file():
            events.append({"event": "layer", "status": "installing", "sha256": "ab12cd34ef56" + "0" * 52})
            events += [{"event": "pip", "line": f"Collecting {r}"} for r in requirements.read_text().split()]
        versions = self.functions.setdefault(name, [])
        self._clock += 1
        fv = {
            "name": name, "version": len(versions) + 1, "handler": handler,
            "memory_mb": config.get("memory_mb", 128), "timeout_s": float(config.get("timeout_s", 30.0)),
            "concurrency": config.get("concurrency", 1), "env": config.get("env", {}),
            "code_sha256": sha, "code_size": len(code), "layer_sha256": None,
            "network": network_json(network_policy(config.get("network"))),
            "created_at": f"2026-11-26T04:01:{self._clock:02d}.123456+00:00",
        }
        versions.append(fv)
        return [*events, {"event": "created", "version": fv}]

    def update_function(self, request: httpx.Request, name: str) -> httpx.Response:
        versions = self._versions(name)
        config = json.loads(request.content)
        self.configs.append(config)
        self._clock += 1
        fv = {**versions[-1], "version": versions[-1]["version"] + 1,
              "created_at": f"2026-11-26T04:01:{self._clock:02d}.123456+00:00"}
        fv.update({k: v for k, v in config.items() if k in ("memory_mb", "timeout_s", "env")})
        if "network" in config:
            fv["network"] = network_json(network_policy(config["network"]))
        versions.append(fv)
        return httpx.Response(201, json=fv)

    # -- invocations -------------------------------------------------------------------------

    def invoke(self, request: httpx.Request, name: str) -> httpx.Response:
        if request.headers.get("x-mist-invocation-type") == "Event":
            return self.invoke_event(request, name)
        versions = self._versions(name)
        wanted = request.url.params.get("version")
        fv = versions[int(wanted) - 1] if wanted else versions[-1]
        event = json.loads(request.content) if request.content else None
        inv_id = f"inv-{len(self.invocations) + 1}"
        headers = {"X-Mist-Invocation-Id": inv_id, "X-Mist-Version": str(fv["version"]),
                   "X-Mist-Cold-Start": "true", "X-Mist-Duration-Ms": "1.500"}
        module, _, function = fv["handler"].rpartition(".")
        code_dir = self.root / "code" / fv["code_sha256"]
        out = io.StringIO()
        record = {"id": inv_id, "function": name, "version": fv["version"], "status": "succeeded",
                  "error_type": None, "cold_start": True, "duration_ms": 1.5,
                  "started_at": f"2026-11-26T05:00:{len(self.invocations):02d}+00:00"}
        self.invocations.insert(0, record)
        try:
            with contextlib.redirect_stdout(out):
                handler = runpy.run_path(str(code_dir / f"{module.replace('.', '/')}.py"))[function]
                result = handler(event, None)
        except Exception as exc:  # the function failed: Lambda's error shape
            record.update(status="failed", error_type=type(exc).__name__)
            frames = traceback.format_list(traceback.extract_tb(exc.__traceback__)[1:])
            body = {"errorType": type(exc).__name__, "errorMessage": str(exc), "stackTrace": frames}
            return httpx.Response(500, json=body, headers={**headers, "X-Mist-Function-Error": "Unhandled"})
        finally:
            for text in out.getvalue().splitlines():
                self.log_lines.append({"ts": "2026-11-26T05:00:00.5+00:00", "invocation_id": inv_id,
                                       "version": fv["version"], "stream": "stdout", "text": text})
        return httpx.Response(200, json=result, headers=headers)

    def invoke_event(self, request: httpx.Request, name: str) -> httpx.Response:
        self._versions(name)
        key = request.headers.get("x-mist-idempotency-key")
        if key is not None and (name, key) in self.keys:
            inv_id = self.keys[(name, key)]
            return httpx.Response(202, json={"invocation_id": inv_id},
                                  headers={"X-Mist-Invocation-Id": inv_id, "X-Mist-Idempotent-Replayed": "true"})
        inv_id = f"event-{len(self.events) + 1}"
        if key is not None:
            self.keys[(name, key)] = inv_id
        self.events[inv_id] = {
            "id": inv_id, "invocation_type": "Event", "function": name, "version": None, "trigger": "event",
            "status": "queued", "created_at": "2026-11-26T05:00:00+00:00", "next_attempt_at": None,
            "function_errors": 0, "condition": None, "destination": None, "idempotency_key": key,
            "source_event_id": None, "attempts": [], "event": json.loads(request.content or b"null"),
        }
        return httpx.Response(202, json={"invocation_id": inv_id}, headers={"X-Mist-Invocation-Id": inv_id})

    def get_invocation(self, request: httpx.Request, inv_id: str) -> httpx.Response:
        if inv_id in self.events:
            return httpx.Response(200, json=self.events[inv_id])
        for record in self.invocations:
            if record["id"] == inv_id:
                return httpx.Response(200, json={**record, "trigger": "api", "logs": []})
        raise NotFound(f"no invocation {inv_id!r}; the id is in the X-Mist-Invocation-Id header of the answer")

    # -- dead-letter queues and queues -------------------------------------------------------

    def list_dead_letters(self, request: httpx.Request, name: str) -> httpx.Response:
        entries = []
        for m in self.dead_letters.get(name, []):
            context, error = m["record"]["requestContext"], m["record"]["responsePayload"] or {}
            entries.append({"id": m["id"], "sent_at": m["sent_at"], "invocation_id": context["requestId"],
                            "condition": context["condition"], "attempts": context["approximateInvokeCount"],
                            "error_type": error.get("errorType"), "error_message": error.get("errorMessage")})
        return httpx.Response(200, json={"messages": entries})

    def get_dead_letter(self, request: httpx.Request, name: str, message_id: str) -> httpx.Response:
        for m in self.dead_letters.get(name, []):
            if m["id"] == message_id:
                return httpx.Response(200, json=m)
        raise NotFound(f"no message {message_id!r} in the dead-letter queue of {name!r}; `mist dlq ls {name}` lists them")

    def redrive(self, request: httpx.Request, name: str) -> httpx.Response:
        self._versions(name)
        wanted = json.loads(request.content or b"{}").get("ids")
        moved, kept = [], []
        for m in self.dead_letters.get(name, []):
            if wanted is None or m["id"] in wanted:
                moved.append({"message_id": m["id"], "invocation_id": f"redriven-{m['id']}"})
            else:
                kept.append(m)
        self.dead_letters[name] = kept
        return httpx.Response(200, json={"redriven": moved})

    def list_queues(self, request: httpx.Request) -> httpx.Response:
        found = [{"name": q, "messages": len(ms), "visible": len(ms)} for q, ms in sorted(self.queues.items()) if ms]
        return httpx.Response(200, json={"queues": found})

    def receive(self, request: httpx.Request, queue: str) -> httpx.Response:
        got = self.queues.get(queue, [])[: int(request.url.params.get("max", 10))]
        for m in got:
            m["receive_count"] += 1
        return httpx.Response(200, json={"messages": got})

    def delete_message(self, request: httpx.Request, queue: str, message_id: str) -> httpx.Response:
        before = self.queues.get(queue, [])
        self.queues[queue] = [m for m in before if m["id"] != message_id]
        if len(self.queues[queue]) == len(before):
            raise NotFound(f"no message {message_id!r} in queue {queue!r}")
        return httpx.Response(204)

    def list_invocations(self, request: httpx.Request, name: str) -> httpx.Response:
        self._versions(name)
        limit = int(request.url.params.get("limit", 50))
        return httpx.Response(200, json={"invocations": [i for i in self.invocations if i["function"] == name][:limit]})

    def logs(self, request: httpx.Request, name: str) -> httpx.Response:
        self._versions(name)
        params = request.url.params
        lines = [l for l in self.log_lines if params.get("invocation_id") in (None, l["invocation_id"])]
        lines = lines[-int(params.get("limit", 200)):]
        follow = params.get("follow") == "true"

        def body() -> Iterator[bytes]:
            for line in lines:
                yield json.dumps(line).encode() + b"\n"
            if follow:
                yield b"\n"  # keep-alive
            if follow and self.interrupt_followed_logs:
                raise KeyboardInterrupt

        return httpx.Response(200, headers={"Content-Type": "application/x-ndjson"}, content=body())

    def _versions(self, name: str) -> list[dict[str, Any]]:
        packaging.validate_name(name)
        if name not in self.functions:
            raise NotFound(f"function {name!r} does not exist; `mist ls` lists the deployed functions")
        return self.functions[name]


def error_body(exc: MistError) -> dict[str, Any]:
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if isinstance(exc, DeployRejected) and exc.detail:
        error["detail"] = exc.detail
    return {"error": error}


def error_response(exc: MistError) -> httpx.Response:
    return httpx.Response(_STATUS.get(exc.code, 500), json=error_body(exc))


def multipart(request: httpx.Request) -> dict[str, bytes]:
    head = b"Content-Type: " + request.headers["content-type"].encode() + b"\r\n\r\n"
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.content)
    return {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
        for part in message.iter_parts()
    }


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeMist:
    server = FakeMist(tmp_path / "server")
    transport = httpx.MockTransport(server.handle)
    monkeypatch.setattr(api, "make_client", lambda: httpx.Client(base_url="http://mist.test", transport=transport))
    return server


Run = Callable[..., Result]


@pytest.fixture
def cli() -> Run:
    """Run `mist ARGS...` as a user would; an unexpected exception fails the test with its traceback."""
    env = {"NO_COLOR": "1", "FORCE_COLOR": None, "TTY_COMPATIBLE": None, "COLUMNS": "120", "MIST_URL": None,
           "MIST_S3_PORT": None}
    runner = CliRunner(env=env)

    def run(*args: str, input: str | bytes | None = None, env: dict[str, str | None] | None = None) -> Result:
        result = runner.invoke(app, list(args), input=input, env=env)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    return run


@pytest.fixture
def hello(tmp_path: Path) -> Path:
    """A function directory: main.py greets event["name"] and prints a log line."""
    d = tmp_path / "hello"
    d.mkdir()
    (d / "main.py").write_text(
        "def handler(event, context):\n"
        "    print('greeting', (event or {}).get('name'))\n"
        "    return {'greeting': 'hello ' + str((event or {}).get('name'))}\n"
    )
    return d
