"""Load an Azure Functions 2019 trace (PREFIXinv.csv, PREFIXrun.csv, PREFIXmem.csv) into a `Trace`.

Columns are found by name, so both the public dataset's files (minute columns `1`..`1440`) and the
vHive In-Vitro samples (`minute_1`..`minute_1440`) load. The three files are joined on HashOwner,
HashApp and HashFunction, as many of them as both files have (memory is per app). Rows repeated
for one key are merged: durations weighted by their Count, memory by its SampleCount.

A function without duration or memory data cannot be simulated (no execution time, nothing to
charge for idle memory); one never invoked contributes nothing. Those are skipped and counted in
`Trace.skipped`. Each function of a multi-function app is charged the app's memory.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mist.errors import InvalidRequest

_MINUTE = re.compile(r"(?:minute_)?(\d+)")
_KEYS = ("HashOwner", "HashApp", "HashFunction")


@dataclass(frozen=True, slots=True)
class TraceFunction:
    key: str  # HashFunction (HashOwner/HashApp/HashFunction when those differ)
    per_minute: tuple[tuple[int, int], ...]  # (minute from 0, invocations), minutes with some only
    duration_s: float
    memory_mb: float

    @property
    def invocations(self) -> int:
        return sum(c for _, c in self.per_minute)


@dataclass(frozen=True)
class Trace:
    functions: tuple[TraceFunction, ...]
    minutes: int = 1440
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> functions

    @property
    def duration_s(self) -> float:
        return self.minutes * 60.0

    def half(self, which: str) -> Trace:
        """The functions whose key hashes to half `a` or `b` (sha256, first byte even: a)."""
        if which not in ("a", "b"):
            raise InvalidRequest(f"half {which!r} is invalid: use a or b")
        kept = tuple(f for f in self.functions if half_of(f.key) == which)
        return Trace(kept, self.minutes, dict(self.skipped))


def half_of(key: str) -> str:
    return "a" if hashlib.sha256(key.encode()).digest()[0] % 2 == 0 else "b"


def load_azure2019(prefix: str | Path) -> Trace:
    paths = {name: Path(f"{prefix}{name}.csv") for name in ("inv", "run", "mem")}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise InvalidRequest(f"trace file(s) not found: {', '.join(missing)} (PREFIX is e.g. data/100_)")
    durations = _weighted(paths["run"], "Average", "Count")
    memory = _weighted(paths["mem"], "AverageAllocatedMb", "SampleCount")
    functions: list[TraceFunction] = []
    skipped = {"no duration data": 0, "no memory data": 0, "never invoked": 0}
    minutes = 0
    for row, minute_cols in _rows(paths["inv"]):
        minutes = max(minutes, len(minute_cols))
        per_minute = tuple((m, c) for m, col in minute_cols if (c := _int(row[col])) > 0)
        duration_ms = durations.get(row)
        memory_mb = memory.get(row)
        if duration_ms is None:
            skipped["no duration data"] += 1
        elif memory_mb is None:
            skipped["no memory data"] += 1
        elif not per_minute:
            skipped["never invoked"] += 1
        else:
            functions.append(TraceFunction(_name(row), per_minute, duration_ms / 1000, memory_mb))
    return Trace(tuple(functions), minutes or 1440, {k: v for k, v in skipped.items() if v})


def _rows(path: Path) -> Iterator[tuple[dict[str, str], list[tuple[int, str]]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if "HashFunction" not in header:
            raise InvalidRequest(f"{path}: no HashFunction column; is it an Azure 2019 invocations file?")
        minute_cols = sorted((int(m[1]) - 1, col) for col in header if (m := _MINUTE.fullmatch(col)))
        if not minute_cols:
            raise InvalidRequest(f"{path}: no minute columns (1..1440 or minute_1..minute_1440)")
        for row in reader:
            yield row, minute_cols


@dataclass(frozen=True)
class _Table:
    """Values of one column keyed by the hash columns its file has, repeated rows averaged."""

    keys: tuple[str, ...]
    values: dict[tuple[str, ...], float]

    def get(self, row: dict[str, str]) -> float | None:
        return self.values.get(tuple(row.get(k, "") for k in self.keys))


def _weighted(path: Path, value_col: str, weight_col: str) -> _Table:
    sums: dict[tuple[str, ...], list[float]] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if value_col not in header:
            raise InvalidRequest(f"{path}: no {value_col} column")
        keys = tuple(k for k in _KEYS if k in header)
        for row in reader:
            try:
                value = float(row[value_col])
            except (TypeError, ValueError):
                continue
            weight = max(1.0, _float(row.get(weight_col)))
            acc = sums.setdefault(tuple(row[k] for k in keys), [0.0, 0.0])
            acc[0] += value * weight
            acc[1] += weight
    return _Table(keys, {key: total / weight for key, (total, weight) in sums.items()})


def _name(row: dict[str, str]) -> str:
    parts = [row.get(k, "") for k in _KEYS]
    return parts[2] if len(set(p for p in parts if p)) <= 1 else "/".join(parts)


def _int(text: str | None) -> int:
    try:
        return int(float(text or 0))
    except ValueError:
        return 0


def _float(text: str | None) -> float:
    try:
        return float(text or 0)
    except ValueError:
        return 0.0
