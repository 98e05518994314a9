import pytest

from mist.core.billing import billed_ms


@pytest.mark.parametrize(
    ("duration_ms", "billed"),
    [
        (0.0, 1),  # nothing measured still bills the minimum
        (0.08, 1),  # a sub-millisecond run bills 1 ms
        (1.0, 1),
        (1.001, 2),  # one microsecond over bills the next millisecond
        (12.0, 12),
        (12.0000000001, 12),  # float noise from a clock difference is not billed
        (999.2, 1000),
        (30000.0, 30000),
    ],
)
def test_duration_is_rounded_up_to_the_next_millisecond(duration_ms: float, billed: int) -> None:
    assert billed_ms(duration_ms) == billed
