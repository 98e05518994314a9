import doctest
from dataclasses import dataclass

import pytest

import mist.triggers.policy as policy
from mist.errors import InvalidRequest
from mist.triggers.policy import (
    ScaleState,
    ScalingPolicy,
    batch_wait_s,
    parse_batch_item_failures,
    scale_consumers,
    settle,
)


def test_the_worked_examples_in_the_docstring_hold():
    assert doctest.testmod(policy).failed == 0


# --- batching ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "first_at", "now", "size", "window", "expected"),
    [
        (10, 0.0, 0.0, 10, 5.0, 0.0),  # full: deliver now, whatever the window
        (3, 0.0, 0.0, 10, 0.0, 0.0),  # no window: what is there now
        (3, 0.0, 1.0, 10, 5.0, 4.0),  # window open: wait for the rest of it
        (3, 0.0, 5.0, 10, 5.0, 0.0),  # window elapsed
        (3, 0.0, 9.0, 10, 5.0, 0.0),  # late: never negative
        (1, 2.0, 2.5, 100, 0.5, 0.0),
    ],
)
def test_a_batch_is_complete_when_full_or_when_its_window_has_passed(count, first_at, now, size, window, expected):
    assert batch_wait_s(count, first_at, now, size, window) == pytest.approx(expected)


# --- consumer scaling ----------------------------------------------------------------------


def run(p: ScalingPolicy, ticks: list[tuple[float, int | None]], current: int = 1) -> list[int]:
    state, out = ScaleState(), []
    for now, backlog in ticks:
        current, state = scale_consumers(p, backlog, current, state, now)
        out.append(current)
    return out


@pytest.mark.parametrize(
    ("backlog", "expected"),
    [(0, 1), (1, 1), (10, 1), (11, 2), (45, 5), (80, 8), (10_000, 8)],
)
def test_consumers_follow_the_backlog_in_batches_up_to_the_maximum(backlog, expected):
    assert run(ScalingPolicy(max_consumers=8, batch_size=10), [(0.0, backlog)]) == [expected]


def test_batches_per_consumer_lets_each_consumer_take_on_more_backlog():
    p = ScalingPolicy(max_consumers=8, batch_size=10, batches_per_consumer=4)
    assert run(p, [(0.0, 45)]) == [2]


def test_scaling_down_waits_for_the_delay_then_goes_to_the_most_wanted_in_it():
    p = ScalingPolicy(max_consumers=8, batch_size=10, scale_down_delay_s=30)
    ticks = [(0, 80), (2, 0), (10, 30), (20, 0), (31, 0), (32, 0), (40, 0), (62, 0)]
    # fewer wanted from t=2; at t=32 the delay is over: 3, the most wanted since (t=10);
    # from 3, fewer are wanted again from t=40, so 1 at t=70 and not before
    assert run(p, ticks) == [8, 8, 8, 8, 8, 3, 3, 3]
    assert run(p, [*ticks, (70, 0)])[-1] == 1


def test_a_backlog_that_returns_during_the_delay_cancels_the_scale_down():
    p = ScalingPolicy(max_consumers=8, batch_size=10, scale_down_delay_s=30)
    ticks = [(0, 80), (2, 0), (20, 80), (25, 0), (40, 0), (56, 0)]
    assert run(p, ticks) == [8, 8, 8, 8, 8, 1]


def test_an_unknown_backlog_keeps_the_consumers_running():
    p = ScalingPolicy(max_consumers=8, batch_size=10)
    assert run(p, [(0, None), (5, None)], current=3) == [3, 3]
    assert run(p, [(0, None)], current=0) == [1]  # but always at least one


def test_scaling_policy_validation_names_the_key():
    with pytest.raises(InvalidRequest, match="max_consumers must be >= 1, got 0"):
        ScalingPolicy(max_consumers=0).validate()
    with pytest.raises(InvalidRequest, match="batches_per_consumer"):
        ScalingPolicy(batches_per_consumer=0).validate()


# --- settling ------------------------------------------------------------------------------


@dataclass(frozen=True)
class M:
    id: str
    delivery_count: int


def test_settle_acks_successes_retries_failures_with_attempts_left_and_dead_letters_the_last():
    batch = [M("a", 1), M("b", 1), M("c", 3), M("d", 5)]
    s = settle(batch, {"b", "c", "d"}, max_attempts=3)
    assert (s.ack, s.retry, s.dead) == ((M("a", 1),), (M("b", 1),), (M("c", 3), M("d", 5)))


def test_with_one_attempt_a_failure_is_dead_lettered_at_once():
    s = settle([M("a", 1)], {"a"}, max_attempts=1)
    assert s.dead == (M("a", 1),) and s.retry == ()


# --- batchItemFailures ---------------------------------------------------------------------

IDS = ["m1", "m2", "m3"]


@pytest.mark.parametrize(
    ("response", "failed"),
    [
        (None, set()),  # null response: success
        ({}, set()),  # empty response
        ("done", set()),  # not an object: the function returned normally
        ([1, 2], set()),
        ({"statusCode": 200}, set()),  # no batchItemFailures key
        ({"batchItemFailures": None}, set()),
        ({"batchItemFailures": []}, set()),
        ({"batchItemFailures": [{"itemIdentifier": "m2"}]}, {"m2"}),
        ({"batchItemFailures": [{"itemIdentifier": "m2"}, {"itemIdentifier": "m3"}, {"itemIdentifier": "m2"}]},
         {"m2", "m3"}),
        # malformed: the whole batch failed
        ({"batchItemFailures": "m2"}, set(IDS)),
        ({"batchItemFailures": {"itemIdentifier": "m2"}}, set(IDS)),
        ({"batchItemFailures": ["m2"]}, set(IDS)),
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, set(IDS)),  # empty id
        ({"batchItemFailures": [{"itemIdentifier": None}]}, set(IDS)),  # null id
        ({"batchItemFailures": [{"itemidentifier": "m2"}]}, set(IDS)),  # bad key name
        ({"batchItemFailures": [{"itemIdentifier": "m9"}]}, set(IDS)),  # not in the batch
        ({"batchItemFailures": [{"itemIdentifier": 2}]}, set(IDS)),
    ],
)
def test_batch_item_failures_follow_lambdas_rules(response, failed):
    assert parse_batch_item_failures(response, IDS) == failed
