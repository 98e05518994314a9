"""Billing math: how a measured duration becomes billed milliseconds.

Lambda bills execution time rounded up to the next whole millisecond, at least 1 ms; mist does
the same. Init time of a cold start is reported separately (`init_ms`) and not billed here.

    >>> billed_ms(0.08)
    1
    >>> billed_ms(12.0)
    12
    >>> billed_ms(12.0001)
    13
"""

from __future__ import annotations

import math


def billed_ms(duration_ms: float) -> int:
    """Duration rounded up to a whole millisecond, never below 1.

    Sub-nanosecond float noise (12.0000000001 from a clock difference) is not billed as a
    whole extra millisecond: the duration is first rounded to the microsecond.
    """
    if duration_ms <= 0:
        return 1
    return max(1, math.ceil(round(duration_ms, 3)))
