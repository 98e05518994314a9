"""Fixtures for the worker's tests: a real Worker on a temporary data dir, and functions
written into temporary code dirs."""

from __future__ import annotations

import itertools
import json
import os
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from mist.worker import InvokeResult, SandboxSpec, Worker, WorkerConfig

CAN_SANDBOX = os.geteuid() == 0 and Path("/sys/fs/cgroup/memory/tasks").exists()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if CAN_SANDBOX:
        return
    skip = pytest.mark.skip(reason="real sandboxes need root and cgroup v1 memory/cpu/pids")
    for item in items:
        if "sandbox" in item.keywords and item.path.is_relative_to(Path(__file__).parent):
            item.add_marker(skip)


def worker_config(tmp_path: Path, **overrides: object) -> WorkerConfig:
    defaults: dict[str, object] = dict(
        data_dir=tmp_path / "data", prewarm=1, memory_budget_mb=2048, tmp_size_mb=16, keepalive_s=600,
    )
    defaults.update(overrides)
    return WorkerConfig(**defaults)  # type: ignore[arg-type]


@pytest.fixture
async def worker(tmp_path: Path):
    w = Worker(worker_config(tmp_path))
    await w.start()
    yield w
    await w.stop()


FunctionFactory = Callable[..., SandboxSpec]


@pytest.fixture
def function(tmp_path: Path) -> FunctionFactory:
    """function(source, handler="main.handler", files={...}, **SandboxSpec fields) -> SandboxSpec.

    Each call writes a new code dir and returns the spec of a new version of function "fn"."""
    versions = itertools.count(1)

    def make(source: str = "", *, handler: str = "main.handler", files: dict[str, str] | None = None,
             name: str = "fn", **spec: object) -> SandboxSpec:
        version = next(versions)
        code = tmp_path / f"code-{name.replace('/', '.')}-{version}"
        code.mkdir(mode=0o755)
        for rel, text in {"main.py": source, **(files or {})}.items():
            path = code / rel
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            path.write_text(textwrap.dedent(text))
            path.chmod(0o644)
        return SandboxSpec(function_name=name, version=version, code_dir=code, handler=handler, **spec)  # type: ignore[arg-type]

    return make


async def call(worker: Worker, spec: SandboxSpec, event: object = None) -> InvokeResult:
    return await worker.invoke(spec, uuid.uuid4().hex, json.dumps(event).encode())


def value(result: InvokeResult) -> object:
    assert result.ok, result.error
    return json.loads(result.payload)
