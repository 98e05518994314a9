import json

import pytest

from mist.control.asyncpolicy import (
    Decision,
    Progress,
    RetryPolicy,
    Route,
    async_slots,
    decide,
    destination_record,
    expired,
    function_arn,
    route,
)
from mist.core.retry import Backoff

P = RetryPolicy(retries=2, max_event_age_s=3600, backoff=Backoff(base_s=1.0, factor=2.0, cap_s=300.0))
T0 = 1000.0


@pytest.mark.parametrize(
    ("name", "progress", "outcome", "now", "draw", "retry_after", "expected"),
    [
        ("success finishes with condition Success",
         Progress(T0, 1, 0), "succeeded", T0 + 1, 0.0, 0.0, Decision("succeed", None, 0, "Success")),
        ("a success after failures keeps their count",
         Progress(T0, 3, 2), "succeeded", T0 + 5, 0.0, 0.0, Decision("succeed", None, 2, "Success")),
        ("the first function error is retried after the first backoff (0.5-1 s)",
         Progress(T0, 1, 0), "failed", T0 + 1, 0.0, 0.0, Decision("retry", T0 + 1.5, 1, None)),
        ("the jitter draws within the backoff",
         Progress(T0, 1, 0), "failed", T0 + 1, 0.5, 0.0, Decision("retry", T0 + 1.75, 1, None)),
        ("the second function error waits the second backoff (1-2 s)",
         Progress(T0, 2, 1), "failed", T0 + 3, 0.0, 0.0, Decision("retry", T0 + 4, 2, None)),
        ("a function error with no retry left is RetriesExhausted",
         Progress(T0, 3, 2), "failed", T0 + 6, 0.0, 0.0, Decision("fail", None, 3, "RetriesExhausted")),
        ("a platform error is retried without using up a retry",
         Progress(T0, 3, 2), "error", T0 + 6, 0.0, 0.0, Decision("retry", T0 + 6.5, 2, None)),
        ("platform errors back off by their own count",
         Progress(T0, 3, 0), "error", T0 + 6, 0.0, 0.0, Decision("retry", T0 + 8, 0, None)),
        ("a platform error waits at least its Retry-After",
         Progress(T0, 1, 0), "error", T0 + 1, 0.0, 30.0, Decision("retry", T0 + 31, 0, None)),
        ("a retry that would start past the maximum age is EventAgeExceeded",
         Progress(T0, 1, 0), "failed", T0 + 3599.6, 0.0, 0.0, Decision("fail", None, 1, "EventAgeExceeded")),
        ("platform errors are retried only until the maximum age",
         Progress(T0, 40, 0), "error", T0 + 3500, 0.0, 120.0, Decision("fail", None, 0, "EventAgeExceeded")),
        ("a function that is gone finishes at once",
         Progress(T0, 1, 0), "missing", T0 + 1, 0.0, 0.0, Decision("fail", None, 0, "RetriesExhausted")),
    ],
)
def test_decide(name, progress, outcome, now, draw, retry_after, expected):
    assert decide(P, progress, outcome, now, draw=draw, retry_after=retry_after) == expected, name


def test_zero_retries_means_the_first_function_error_is_final():
    policy = RetryPolicy(retries=0)
    assert decide(policy, Progress(T0, 1, 0), "failed", T0, draw=0.0).condition == "RetriesExhausted"


def test_an_unknown_outcome_is_a_bug_not_a_retry():
    with pytest.raises(ValueError, match="unknown outcome"):
        decide(P, Progress(T0, 1, 0), "maybe", T0, draw=0.0)


@pytest.mark.parametrize(
    ("age", "is_expired"), [(0, False), (3599.9, False), (3600, True), (10_000, True)]
)
def test_an_event_is_expired_from_its_maximum_age_on(age, is_expired):
    assert expired(P, T0, T0 + age) is is_expired


@pytest.mark.parametrize(
    ("action", "on_success", "on_failure", "expected"),
    [
        ("succeed", None, "queue:x", Route("succeeded", None, None, None)),
        ("succeed", "function:next", None, Route("succeeded", "function:next", "function", "next")),
        ("succeed", "queue:done", None, Route("succeeded", "queue:done", "queue", "done")),
        ("fail", None, None, Route("dead-lettered", "dlq", "queue", "dlq:hello")),
        ("fail", "queue:done", "queue:errors", Route("failed", "queue:errors", "queue", "errors")),
        ("fail", None, "function:alert", Route("failed", "function:alert", "function", "alert")),
    ],
)
def test_route_sends_failures_to_the_dead_letter_queue_unless_told_otherwise(action, on_success, on_failure,
                                                                               expected):
    decision = Decision(action, None, 0, "Success" if action == "succeed" else "RetriesExhausted")
    assert route(decision, "hello", on_success, on_failure) == expected


@pytest.mark.parametrize(
    ("concurrency", "max_instances", "instances", "slots"),
    [(1, None, 4, 4), (8, None, 4, 32), (8, 2, 4, 16), (1, 1, 4, 1), (3, 10, 4, 12)],
)
def test_async_slots_honour_max_instances(concurrency, max_instances, instances, slots):
    assert async_slots(concurrency, max_instances, instances) == slots


def test_destination_record_has_lambdas_shape():
    body = destination_record(
        request_id="abc", function_arn=function_arn("hello", None), condition="RetriesExhausted",
        invoke_count=3, request_payload=b'{"n": 1}', executed_version=4,
        response_payload=b'{"errorType": "ValueError", "errorMessage": "bad"}', function_error=True,
        now=1_764_129_600.25,
    )
    assert json.loads(body) == {
        "version": "1.0",
        "timestamp": "2025-11-26T04:00:00.250Z",
        "requestContext": {"requestId": "abc",
                           "functionArn": "arn:mist:lambda:local:default:function:hello:$LATEST",
                           "condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "requestPayload": {"n": 1},
        "responseContext": {"statusCode": 200, "executedVersion": "4", "functionError": "Unhandled"},
        "responsePayload": {"errorType": "ValueError", "errorMessage": "bad"},
    }


def test_a_record_of_an_event_that_never_ran_has_no_response():
    body = json.loads(destination_record(
        request_id="abc", function_arn=function_arn("hello", 2), condition="EventAgeExceeded", invoke_count=0,
        request_payload=b"null", executed_version=None, response_payload=None, function_error=False, now=0.0,
    ))  # fmt: skip
    assert body["requestContext"]["functionArn"].endswith(":function:hello:2")
    assert body["responseContext"] == {"statusCode": None, "executedVersion": None, "functionError": None}
    assert body["requestPayload"] is None and body["responsePayload"] is None
