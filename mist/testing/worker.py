"""FakeWorker: an in-memory stand-in for `mist.worker.Worker` (no sandboxes).

It answers each invocation with `behaviour(spec, payload)`; the default echoes the event back.
Use it to test code above the worker (gateway, control plane) without root or namespaces.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mist.worker.types import InvokeResult, LogLine, SandboxSpec

Behaviour = Callable[[SandboxSpec, bytes], InvokeResult]


def echo(spec: SandboxSpec, payload: bytes) -> InvokeResult:
    now = time.time()
    return InvokeResult(
        ok=True,
        payload=payload,
        duration_ms=0.25,
        started_at=now,
        ended_at=now,
        logs=[LogLine(now, "stdout", f"event: {payload.decode()[:80]}")],
    )


def fails(error_type: str, message: str) -> Behaviour:
    def behaviour(spec: SandboxSpec, payload: bytes) -> InvokeResult:
        return InvokeResult(ok=False, error={"errorType": error_type, "errorMessage": message, "stackTrace": []})

    return behaviour


def returns(value: object) -> Behaviour:
    def behaviour(spec: SandboxSpec, payload: bytes) -> InvokeResult:
        return InvokeResult(ok=True, payload=json.dumps(value).encode(), duration_ms=1.5)

    return behaviour


@dataclass
class FakeWorker:
    behaviour: Behaviour = echo
    calls: list[tuple[SandboxSpec, str, bytes]] = field(default_factory=list)
    retired: list[tuple[str, int | None]] = field(default_factory=list)
    provisioned: list[SandboxSpec] = field(default_factory=list)
    restarted: list[tuple[str, int]] = field(default_factory=list)  # (function, revision): secrets changed
    _warm: set[tuple[str, int]] = field(default_factory=set)
    _provisioning_from: int = 0  # orders in `provisioned` before this one were ended by stop_provisioning

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._warm.clear()

    async def invoke(self, spec: SandboxSpec, invocation_id: str, payload: bytes) -> InvokeResult:
        self.calls.append((spec, invocation_id, payload))
        result = self.behaviour(spec, payload)
        if spec.redactor is not None:  # as the Worker does: the instance's secret values masked
            spec.redactor.result(result)
        result.cold_start = spec.key not in self._warm
        self._warm.add(spec.key)
        return result

    async def provision(self, spec: SandboxSpec) -> int:
        self.provisioned.append(spec)
        return spec.min_instances

    def stop_provisioning(self) -> list[str]:
        """As Worker.stop_provisioning: the functions whose newest provisioning kept instances;
        nothing is kept afterwards."""
        newest = {spec.function_name: spec for spec in self.provisioned[self._provisioning_from:]}
        self._provisioning_from = len(self.provisioned)  # `provisioned` stays the history of orders
        return sorted(name for name, spec in newest.items() if spec.min_instances > 0)

    async def restart(self, function_name: str, revision: int) -> None:
        self.restarted.append((function_name, revision))
        self._warm = {k for k in self._warm if k[0] != function_name}

    async def retire(self, function_name: str, keep_version: int | None = None) -> None:
        self.retired.append((function_name, keep_version))
        self._warm = {k for k in self._warm if k[0] != function_name or k[1] == keep_version}

    def statistics(self) -> dict[str, int]:
        return {"calls": len(self.calls), "warm": len(self._warm)}


def remove_worker_leftovers(data_dir, *, cgroup_root=None, attempts: int = 100) -> bool:
    """Kill what a Worker killed with SIGKILL left in its data dir's cgroups and remove them (what
    the next Worker on that data dir would do at start); True when nothing is left. For tests and
    benchmarks that kill a worker and do not start it again."""
    from pathlib import Path

    from mist.worker.cgroups import CgroupTree
    from mist.worker.config import WorkerConfig

    config = WorkerConfig(data_dir=Path(data_dir))
    tree = CgroupTree(Path(cgroup_root) if cgroup_root else config.cgroup_root, config.instance_tag)
    for _ in range(attempts):
        if all([group.remove() for group in tree.leftovers()]) and tree.remove_parents():
            return True
        time.sleep(0.02)
    return False
