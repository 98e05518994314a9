"""Retry backoff: how long to wait before attempt n+1, as a pure function.

Exponential with "equal jitter" (AWS Architecture Blog, "Exponential Backoff And Jitter"):
the n-th retry waits between half and all of min(cap, base x factor^(n-1)), the random part
drawn by the caller (`draw` in [0, 1)) so the function stays pure and table-testable. Half the
delay is always kept, so a retry is never immediate; the other half spreads retries of many
failing events (a broker or function that is down) so they do not return in lock step.

Worked example (base 1 s, factor 2, cap 300 s): retry 1 waits 0.5-1 s, retry 2 1-2 s,
retry 3 2-4 s, ..., retry 10 256-300 s... capped: from retry 10 on, 150-300 s.

    >>> backoff_s(1, draw=0.0), backoff_s(1, draw=0.999)
    (0.5, 0.9995)
    >>> backoff_s(3, draw=0.5)
    3.0
    >>> backoff_s(20, draw=1.0 - 1e-9) <= 300.0
    True
"""

from __future__ import annotations

from dataclasses import dataclass

from mist.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class Backoff:
    base_s: float = 1.0  # the first retry's full delay
    factor: float = 2.0
    cap_s: float = 300.0  # no retry waits longer than this

    def validate(self) -> Backoff:
        if self.base_s <= 0:
            raise InvalidRequest(f"backoff: base_s must be > 0, got {self.base_s!r}")
        if self.factor < 1:
            raise InvalidRequest(f"backoff: factor must be >= 1, got {self.factor!r}")
        if self.cap_s < self.base_s:
            raise InvalidRequest(f"backoff: cap_s must be >= base_s ({self.base_s}), got {self.cap_s!r}")
        return self


def backoff_s(retry: int, *, draw: float, policy: Backoff = Backoff()) -> float:
    """Seconds to wait before the `retry`-th retry (1 = the first retry, i.e. attempt 2).
    `draw` is a uniform random number in [0, 1)."""
    if retry < 1:
        raise ValueError(f"retry counts from 1, got {retry}")
    if not 0.0 <= draw < 1.0:
        raise ValueError(f"draw must be in [0, 1), got {draw}")
    exponent = min(retry - 1, 64)  # 2**64 x base is past any cap; avoids overflow
    full = min(policy.cap_s, policy.base_s * policy.factor ** exponent)
    return full / 2 + draw * full / 2
