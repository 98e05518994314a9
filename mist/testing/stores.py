"""MemoryStore: the in-memory FunctionStore + RecordStore (passes the same contract tests)."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime

from mist.control.store import NewVersion
from mist.models import FunctionSummary, FunctionVersion, InvocationRecord, LogRecord


class MemoryStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[str, list[FunctionVersion]] = {}
        self._created: dict[str, tuple[datetime, datetime]] = {}
        self._records: dict[str, InvocationRecord] = {}
        self._logs: list[LogRecord] = []

    def create_version(self, new: NewVersion, now: datetime) -> FunctionVersion:
        with self._lock:
            existing = self._versions.setdefault(new.name, [])
            fv = FunctionVersion(
                name=new.name,
                version=len(existing) + 1 if not existing else existing[-1].version + 1,
                handler=new.handler,
                memory_mb=new.memory_mb,
                timeout_s=new.timeout_s,
                concurrency=new.concurrency,
                env=dict(new.env),
                code_sha256=new.code_sha256,
                code_size=new.code_size,
                layer_sha256=new.layer_sha256,
                created_at=now,
                min_instances=new.min_instances,
                max_instances=new.max_instances,
            )
            existing.append(fv)
            created = self._created.get(new.name, (now, now))[0]
            self._created[new.name] = (created, now)
            return fv

    def get_function(self, name: str) -> FunctionSummary | None:
        with self._lock:
            if not self._versions.get(name):
                return None
            created, updated = self._created[name]
            return FunctionSummary(name, created, updated, self._versions[name][-1])

    def list_functions(self) -> list[FunctionSummary]:
        names = sorted(n for n, v in self._versions.items() if v)
        return [s for s in (self.get_function(n) for n in names) if s is not None]

    def get_versions(self, name: str, version: int | None = None) -> list[FunctionVersion]:
        with self._lock:
            found = list(reversed(self._versions.get(name, [])))
        return [v for v in found if version is None or v.version == version]

    def delete_function(self, name: str) -> bool:
        with self._lock:
            self._created.pop(name, None)
            return bool(self._versions.pop(name, None))

    def code_in_use(self) -> set[str]:
        with self._lock:
            return {v.code_sha256 for vs in self._versions.values() for v in vs}

    def add_invocations(self, batch: list[tuple[InvocationRecord, list[LogRecord]]]) -> None:
        with self._lock:
            for rec, logs in batch:
                if rec.id in self._records:
                    continue
                self._records[rec.id] = replace(rec)
                self._logs.extend(logs)

    def get_invocation(self, invocation_id: str) -> tuple[InvocationRecord, list[LogRecord]] | None:
        with self._lock:
            rec = self._records.get(invocation_id)
            if rec is None:
                return None
            return rec, [l for l in self._logs if l.invocation_id == invocation_id]

    def list_invocations(self, function: str, limit: int) -> list[InvocationRecord]:
        with self._lock:
            found = [r for r in self._records.values() if r.function == function]
        return sorted(found, key=lambda r: r.started_at, reverse=True)[:limit]

    def list_logs(self, function: str, *, invocation_id: str | None = None, limit: int = 200) -> list[LogRecord]:
        with self._lock:
            found = [
                l
                for l in self._logs
                if l.function == function and (invocation_id is None or l.invocation_id == invocation_id)
            ]
        return found[-limit:] if limit else []
