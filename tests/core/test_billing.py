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


@pytest.mark.parametrize(
    ("init_ms", "duration_ms", "billed"),
    [
        (0.42, 11.3, 12),  # a cold start's init is billed with the execution: one rounding, not two (13)
        (0.5, 0.5, 1),
        (30.0, 0.0, 30),  # an init that takes long is billed even if the handler is instant
    ],
)
def test_a_cold_start_bills_init_and_execution_rounded_up_once(init_ms: float, duration_ms: float, billed: int) -> None:
    assert billed_ms(init_ms + duration_ms) == billed
