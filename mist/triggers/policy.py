"""Trigger policy, pure: when a batch is complete, how many consumers, what to retry, what failed.

No I/O and no clock: every function takes `now` (seconds, any monotonic origin) and a snapshot.
The connectors (`mist.triggers.connectors`) gather the inputs and apply the decisions.

Batching. A batch starts with its first message and is complete when it holds `batch_size`
messages or `batch_window_s` has passed since the first one arrived; a window of 0 means "what
is there now": one read from the broker, whatever it returns.

Consumer scaling. Each consumer takes a batch at a time; with `backlog` messages waiting,
    wanted = clamp(ceil(backlog / (batch_size x batches_per_consumer)), 1, max_consumers).
Scaling up is immediate. Scaling down waits until fewer have been wanted for
`scale_down_delay_s` without a break, then goes to the most wanted in that period, so a
backlog that drains in waves does not make consumers come and go.

    >>> p = ScalingPolicy(max_consumers=8, batch_size=10)
    >>> n, s = scale_consumers(p, backlog=45, current=1, state=ScaleState(), now=0.0)
    >>> n
    5
    >>> n, s = scale_consumers(p, backlog=0, current=5, state=s, now=1.0)   # wants 1; waits
    >>> n
    5
    >>> n, s = scale_consumers(p, backlog=12, current=5, state=s, now=20.0)  # wants 2; still waiting
    >>> n
    5
    >>> n, s = scale_consumers(p, backlog=0, current=5, state=s, now=31.0)  # 30 s of fewer: most wanted
    >>> n
    2

Settling a batch. A message the function did not fail is acknowledged. A failed one is retried
while it has attempts left (`delivery_count < max_attempts`) and dead-lettered on its last.

batchItemFailures. A function may return `{"batchItemFailures": [{"itemIdentifier": id}, ...]}`
to fail only some messages; the rules are Lambda's (SQS "Reporting batch item failures"):
success when the response is null, not an object, or has a null or empty list; the whole batch
failed when the list or an entry is malformed, an itemIdentifier is empty or null, or names a
message that is not in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from mist.errors import InvalidRequest

BATCH_ITEM_FAILURES = "batchItemFailures"
ITEM_IDENTIFIER = "itemIdentifier"


# --- batching ------------------------------------------------------------------------------


def batch_wait_s(count: int, first_at: float, now: float, batch_size: int, window_s: float) -> float:
    """Seconds to keep collecting before the batch is delivered; 0.0 = deliver now."""
    if count >= batch_size or window_s <= 0:
        return 0.0
    return max(0.0, first_at + window_s - now)


# --- consumer scaling ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    max_consumers: int = 4
    batch_size: int = 10
    batches_per_consumer: float = 1.0  # backlog one consumer is expected to take on
    scale_down_delay_s: float = 30.0  # fewer must be wanted this long before consumers stop

    def validate(self) -> ScalingPolicy:
        for key, value, ok, rule in (
            ("max_consumers", self.max_consumers, self.max_consumers >= 1, "must be >= 1"),
            ("batch_size", self.batch_size, self.batch_size >= 1, "must be >= 1"),
            ("batches_per_consumer", self.batches_per_consumer, self.batches_per_consumer > 0, "must be > 0"),
            ("scale_down_delay_s", self.scale_down_delay_s, self.scale_down_delay_s >= 0, "must be >= 0"),
        ):
            if not ok:
                raise InvalidRequest(f"scaling: {key} {rule}, got {value!r}")
        return self


@dataclass(frozen=True, slots=True)
class ScaleState:
    fewer_since: float | None = None  # when fewer consumers than running started being wanted
    most_wanted: int = 0  # the most wanted since then


def wanted_consumers(policy: ScalingPolicy, backlog: int) -> int:
    per_consumer = policy.batch_size * policy.batches_per_consumer
    return min(policy.max_consumers, max(1, math.ceil(backlog / per_consumer)))


def scale_consumers(
    policy: ScalingPolicy, backlog: int | None, current: int, state: ScaleState, now: float
) -> tuple[int, ScaleState]:
    """(consumers to run, new state). An unknown backlog (None) keeps the current count."""
    current = min(policy.max_consumers, max(1, current))
    if backlog is None:
        return current, state
    wanted = wanted_consumers(policy, backlog)
    if wanted >= current:
        return wanted, ScaleState()
    if state.fewer_since is None:
        return current, ScaleState(now, wanted)
    most = max(state.most_wanted, wanted)
    if now - state.fewer_since >= policy.scale_down_delay_s:
        return most, ScaleState()
    return current, ScaleState(state.fewer_since, most)


# --- settling a batch ----------------------------------------------------------------------


class Delivered(Protocol):
    """What settle() needs of a message (mist.triggers.connectors.base.Message has it)."""

    @property
    def id(self) -> str: ...
    @property
    def delivery_count(self) -> int: ...


M = TypeVar("M", bound=Delivered)


@dataclass(frozen=True, slots=True)
class Settlement(Generic[M]):
    ack: tuple[M, ...]  # the function succeeded with these
    retry: tuple[M, ...]  # failed, attempts left: hand back for redelivery after a delay
    dead: tuple[M, ...]  # failed on their last attempt: dead-letter, then acknowledge


def settle(batch: Iterable[M], failed: Collection[str], max_attempts: int) -> Settlement[M]:
    ack: list[M] = []
    retry: list[M] = []
    dead: list[M] = []
    for message in batch:
        if message.id not in failed:
            ack.append(message)
        elif message.delivery_count >= max_attempts:
            dead.append(message)
        else:
            retry.append(message)
    return Settlement(tuple(ack), tuple(retry), tuple(dead))


# --- batchItemFailures ---------------------------------------------------------------------


def parse_batch_item_failures(response: Any, batch_ids: Collection[str]) -> set[str]:
    """The ids of the batch that failed, from the function's return value (already JSON-decoded)."""
    if not isinstance(response, Mapping):
        return set()
    items = response.get(BATCH_ITEM_FAILURES)
    if items is None:
        return set()
    if not isinstance(items, list):
        return set(batch_ids)
    failed: set[str] = set()
    for item in items:
        if not isinstance(item, Mapping):
            return set(batch_ids)
        ident = item.get(ITEM_IDENTIFIER)
        if not isinstance(ident, str) or not ident or ident not in batch_ids:
            return set(batch_ids)
        failed.add(ident)
    return failed
