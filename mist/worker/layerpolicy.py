"""Which layer zygotes to evict: a pure decision on a snapshot (no clock, no I/O).

A layer zygote is evicted when it has been idle (no sandbox forked from it) for `idle_s`; then,
least recently used first, while there are more than `max_zygotes` (counting the `incoming`
ones about to start) or their memory adds up to more than `memory_limit_mb`. Busy zygotes
(starting, or with spawns waiting for them) are never chosen. Evicting one never touches the
sandboxes already forked from it.

Worked example, max_zygotes=2, memory_limit_mb=300, idle_s=600, now=1000:

    key  memory  last_used  busy
    a    100     100                 idle 900 s >= 600: evicted (idle)
    b    150     700
    c    120     900
    d    90      950        yes
    -> a goes (idle); b, c, d remain: 3 > 2 zygotes and 360 > 300 MB, so the least recently
       used of the rest that is not busy goes: b. c + d = 210 MB, 2 zygotes: done. ("a", "b")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ZygoteView:
    key: str
    memory_mb: float
    last_used: float
    busy: bool = False


def evictions(zygotes: Sequence[ZygoteView], now: float, *, memory_limit_mb: float, max_zygotes: int,
              idle_s: float, incoming: int = 0) -> tuple[str, ...]:
    """The keys to evict, in the order chosen."""
    chosen = [z for z in zygotes if not z.busy and now - z.last_used >= idle_s]
    rest = sorted((z for z in zygotes if z not in chosen), key=lambda z: z.last_used)
    count = len(rest) + incoming
    memory = sum(z.memory_mb for z in rest)
    for z in rest:
        if count <= max_zygotes and memory <= memory_limit_mb:
            break
        if z.busy:
            continue
        chosen.append(z)
        count -= 1
        memory -= z.memory_mb
    return tuple(z.key for z in chosen)
