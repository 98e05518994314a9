"""What the control plane and a worker agent send each other over HTTP (no I/O here).

An **order** to run an invocation is one body: a JSON header line, `\\n`, then the event's raw
bytes (nobody decodes the event on the way; JSON escapes every newline, so the first `\\n` ends
the header). The header names the shard and the lease epoch the order is stamped with, the
invocation id and the function's spec — its code and layer by sha, not by path: each worker
keeps its own copies (mist/cluster/codecache.py). The answer is framed the same way: the
result's JSON header, `\\n`, the handler's JSON-encoded return value.

Errors travel as `{"error": {"code", "message", ...}}` with the fields each needs to be raised
again on the other side (`raise_error`), so the control plane's callers see the same exception
tree as with the embedded worker.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mist.errors import MistError, NoCapacity, PlatformError, SandboxFailed, StaleEpoch, Unauthenticated
from mist.worker.types import InvokeResult, LogLine, SandboxSpec

TOKEN_HEADER = "authorization"


@dataclass(frozen=True)
class Order:
    shard: str  # the lease name, e.g. "shard/0"
    epoch: int
    invocation_id: str
    spec: SandboxSpec


def spec_json(spec: SandboxSpec) -> dict[str, Any]:
    """The spec with its code and layer named by sha (the last parts of their paths)."""
    return {
        "function_name": spec.function_name, "version": spec.version, "code": spec.code_dir.name,
        "layer": spec.layer_dir.parent.name if spec.layer_dir is not None else None,
        "handler": spec.handler, "memory_mb": spec.memory_mb, "timeout_s": spec.timeout_s,
        "concurrency": spec.concurrency, "env": [list(kv) for kv in spec.env], "egress": list(spec.egress),
        "min_instances": spec.min_instances, "max_instances": spec.max_instances, "tenant": spec.tenant,
        "revision": spec.revision,
    }


def spec_from_json(d: dict[str, Any], code_dir: Path, layer_dir: Path | None) -> SandboxSpec:
    return SandboxSpec(
        function_name=d["function_name"], version=d["version"], code_dir=code_dir, handler=d["handler"],
        memory_mb=d["memory_mb"], timeout_s=d["timeout_s"], concurrency=d["concurrency"],
        env=tuple((k, v) for k, v in d["env"]), layer_dir=layer_dir, egress=tuple(d["egress"]),
        min_instances=d["min_instances"], max_instances=d["max_instances"], tenant=d["tenant"],
        revision=d["revision"],
    )


def frame(header: dict[str, Any], body: bytes) -> bytes:
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + body


def unframe(data: bytes) -> tuple[dict[str, Any], bytes]:
    cut = data.find(b"\n")
    if cut < 0:
        raise ValueError("no header line")
    return json.loads(data[:cut]), data[cut + 1:]


def encode_order(order: Order, payload: bytes) -> bytes:
    head = {"shard": order.shard, "epoch": order.epoch, "invocation_id": order.invocation_id,
            "spec": spec_json(order.spec)}
    return frame(head, payload)


def encode_result(result: InvokeResult) -> bytes:
    head = {
        "ok": result.ok, "error": result.error, "cold_start": result.cold_start, "init_ms": result.init_ms,
        "duration_ms": result.duration_ms, "max_memory_used_mb": result.max_memory_used_mb,
        "started_at": result.started_at, "ended_at": result.ended_at, "instance_id": result.instance_id,
        "logs": [[line.ts, line.stream, line.text] for line in result.logs], "init_steps": result.init_steps,
    }
    return frame(head, result.payload)


def decode_result(data: bytes) -> InvokeResult:
    head, payload = unframe(data)
    logs = [LogLine(ts, stream, text) for ts, stream, text in head.pop("logs")]
    return InvokeResult(payload=payload, logs=logs, **head)


def error_json(exc: MistError) -> dict[str, Any]:
    err: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if isinstance(exc, StaleEpoch):
        err.update(name=exc.name, epoch=exc.epoch, floor=exc.floor)
    if isinstance(exc, NoCapacity):
        err.update(retry_after=exc.retry_after, queue_full=exc.queue_full)
    return {"error": err}


def error_status(exc: MistError) -> int:
    if isinstance(exc, Unauthenticated):
        return 401
    if isinstance(exc, StaleEpoch):
        return 409
    if isinstance(exc, NoCapacity):
        return 503
    return 500


def raise_error(body: dict[str, Any], worker: str) -> None:
    """Raise again the error a worker answered with (a PlatformError, named after the worker)."""
    err = body.get("error") or {}
    code, message = str(err.get("code", "PlatformError")), str(err.get("message", "no detail"))
    if code == "StaleEpoch":
        raise StaleEpoch(err["name"], int(err["epoch"]), int(err["floor"]))
    if code == "NoCapacity":
        raise NoCapacity(f"worker {worker}: {message}", retry_after=float(err.get("retry_after", 1.0)),
                         queue_full=bool(err.get("queue_full")))
    if code == "SandboxFailed":
        raise SandboxFailed(f"worker {worker}: {message}")
    raise PlatformError(f"worker {worker}: {message}", code=code)


def bearer(token: str) -> str:
    return f"Bearer {token}"


def token_ok(header: str | None, token: str) -> bool:
    """Constant-time check of an `Authorization: Bearer <token>` header."""
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].encode(), token.encode())
