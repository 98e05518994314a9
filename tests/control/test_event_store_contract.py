"""Every EventQueue / EventIndex / MessageQueues passes these: SQLite, PostgreSQL and the fake.

Time is a number passed in (seconds); nothing here sleeps.
"""

import threading
import uuid

import pytest

from mist.control.store import IDEMPOTENCY_TTL_S, Enqueued, Message, NewEvent, Settlement

T = 1_000_000.0
LEASE = 30.0


def ev(function="hello", key=None, payload=b'{"n": 1}', **kw):
    return NewEvent(id=uuid.uuid4().hex, function=function, version=kw.pop("version", None), payload=payload,
                    trigger=kw.pop("trigger", "event"), idempotency_key=key, **kw)


def settle(claimed, owner="a", *, status="succeeded", outcome="succeeded", at=T + 1, due=None, errors=0, **kw):
    return Settlement(event_id=claimed.id, owner=owner, attempt=claimed.attempt, started_at=at - 0.5, ended_at=at,
                      outcome=outcome,
                      error_type=kw.pop("error_type", None), error_message=kw.pop("error_message", None),
                      record_id=f"{claimed.id}-{claimed.attempt}", version=1, status=status, due_at=due,
                      function_errors=errors, **kw)


def test_enqueued_events_are_claimed_oldest_first_with_their_payload(store):
    first, second = ev(payload=b'"a"'), ev(payload=b'"b"')
    assert [e.created for e in store.enqueue([first], T)] == [True]
    store.enqueue([second, ev(function="other")], T + 1)
    got = store.claim("a", "hello", T + 2, limit=10, lease_s=LEASE)
    assert [(c.id, c.payload, c.attempt, c.function_errors) for c in got] == [
        (first.id, b'"a"', 1, 0), (second.id, b'"b"', 1, 0)]
    assert got[0].created_at == T and got[0].trigger == "event"
    assert store.claim("b", "hello", T + 3, limit=10, lease_s=LEASE) == []  # leased: nobody else gets them
    view = store.get_event(first.id)
    assert view.status == "running" and [a.outcome for a in view.attempts] == [None]


def test_claim_takes_at_most_limit_and_only_due_events(store):
    store.enqueue([ev() for _ in range(5)], T)
    assert len(store.claim("a", "hello", T - 1, limit=10, lease_s=LEASE)) == 0  # not due yet
    assert len(store.claim("a", "hello", T, limit=3, lease_s=LEASE)) == 3
    assert len(store.claim("a", "hello", T, limit=3, lease_s=LEASE)) == 2
    assert store.claim("a", "nope", T, limit=3, lease_s=LEASE) == []


def test_an_expired_lease_is_claimed_again_and_the_lost_attempt_is_closed(store):
    e = ev()
    store.enqueue([e], T)
    store.claim("dead", "hello", T, limit=1, lease_s=LEASE)
    assert store.claim("b", "hello", T + LEASE - 1, limit=1, lease_s=LEASE) == []
    again = store.claim("b", "hello", T + LEASE, limit=1, lease_s=LEASE)
    assert [(c.id, c.attempt) for c in again] == [(e.id, 2)]
    attempts = store.get_event(e.id).attempts
    assert [(a.attempt, a.outcome) for a in attempts] == [(1, "lost"), (2, None)]
    assert attempts[0].error_type == "Mist.AttemptLost" and "run again" in attempts[0].error_message
    # the dead owner's late settlement is refused; the new owner's is applied
    assert store.settle([settle(again[0], owner="dead")], T + 40) == [False]
    stale = again[0].__class__(**{**again[0].__dict__, "attempt": 1})
    assert store.settle([settle(stale, owner="b")], T + 40) == [False]
    assert store.settle([settle(again[0], owner="b")], T + 40) == [True]
    assert store.get_event(e.id).status == "succeeded"


def test_renew_keeps_a_lease_alive_past_its_first_end(store):
    store.enqueue([ev(), ev()], T)
    kept, other = store.claim("a", "hello", T, limit=2, lease_s=LEASE)
    assert store.renew("a", [kept.id], T + 2 * LEASE) == 1
    assert [c.id for c in store.claim("b", "hello", T + LEASE + 1, limit=2, lease_s=LEASE)] == [other.id]
    assert [c.id for c in store.claim("c", "hello", T + 2 * LEASE, limit=2, lease_s=LEASE)] == [kept.id]
    assert store.renew("a", [kept.id], T + 99) == 0  # "c" holds it now
    assert store.renew("c", [], T + 99) == 0


def test_release_makes_running_events_due_now(store):
    store.enqueue([ev(), ev()], T)
    store.claim("a", "hello", T, limit=1, lease_s=LEASE)
    store.claim("b", "hello", T, limit=1, lease_s=LEASE)
    assert store.release(T + 1, owner="a") == 1
    assert [c.attempt for c in store.claim("c", "hello", T + 1, limit=5, lease_s=LEASE)] == [2]
    assert store.release(T + 2) == 2  # every owner: a restart of the only dispatcher
    assert len(store.claim("d", "hello", T + 2, limit=5, lease_s=LEASE)) == 2


def test_a_retry_is_due_only_at_its_time_and_counts_attempts(store):
    e = ev()
    store.enqueue([e], T)
    c1 = store.claim("a", "hello", T, limit=1, lease_s=LEASE)[0]
    assert store.settle([settle(c1, status="queued", outcome="failed", due=T + 10, errors=1,
                                error_type="ValueError", error_message="bad")], T + 1) == [True]
    view = store.get_event(e.id)
    assert (view.status, view.due_at, view.function_errors) == ("queued", T + 10, 1)
    assert [(a.outcome, a.error_type, a.error_message, a.record_id) for a in view.attempts] == [
        ("failed", "ValueError", "bad", f"{e.id}-1")]
    assert store.claim("a", "hello", T + 9, limit=1, lease_s=LEASE) == []
    c2 = store.claim("a", "hello", T + 10, limit=1, lease_s=LEASE)[0]
    assert (c2.attempt, c2.function_errors) == (2, 1)


def test_settle_stores_destination_messages_and_events_with_the_outcome(store):
    e = ev()
    store.enqueue([e], T)
    c = store.claim("a", "hello", T, limit=1, lease_s=LEASE)[0]
    chained = ev(function="next", trigger="destination")
    done = settle(c, status="dead-lettered", outcome="failed", condition="RetriesExhausted", destination="dlq",
                  messages=(Message("dlq:hello", b'{"r": 1}'),), events=(chained,))
    assert store.settle([done], T + 1) == [True]
    view = store.get_event(e.id)
    assert (view.status, view.condition, view.destination, view.due_at) == (
        "dead-lettered", "RetriesExhausted", "dlq", None)
    assert [m.body for m in store.peek("dlq:hello", limit=10)] == [b'{"r": 1}']
    assert [x.payload for x in store.claim("a", "next", T + 1, limit=5, lease_s=LEASE)] == [chained.payload]
    # a refused settlement stores nothing
    assert store.settle([done], T + 2) == [False]
    assert len(store.peek("dlq:hello", limit=10)) == 1


def test_an_idempotency_key_returns_the_first_id_for_a_day(store):
    first = ev(key="order-1")
    assert store.enqueue([first], T)[0].created
    again = store.enqueue([ev(key="order-1"), ev(key="order-1", function="other")], T + 60)
    assert [(x.invocation_id, x.created) for x in again[:1]] == [(first.id, False)]
    assert again[1].created  # keys are per function
    same_batch = store.enqueue([ev(key="k2"), ev(key="k2")], T)
    assert same_batch[1].invocation_id == same_batch[0].invocation_id and not same_batch[1].created
    assert len(store.claim("a", "hello", T + 60, limit=10, lease_s=LEASE)) == 2  # order-1 and k2 once each
    later = ev(key="order-1")  # a day later, the key is free again
    assert store.enqueue([later], T + IDEMPOTENCY_TTL_S)[0] == Enqueued(later.id, True)


def test_purge_forgets_only_expired_keys(store):
    store.enqueue([ev(key="a")], T)
    store.enqueue([ev(key="b")], T + 100)
    assert store.purge(T + IDEMPOTENCY_TTL_S - 1) == 0
    assert store.purge(T + IDEMPOTENCY_TTL_S) == 1


def test_pending_names_each_function_with_its_earliest_due_time(store):
    store.enqueue([ev()], T + 5)
    store.enqueue([ev(), ev(function="other")], T + 7)
    assert store.pending() == {"hello": T + 5, "other": T + 7}
    for c in store.claim("a", "other", T + 7, limit=1, lease_s=LEASE):
        store.settle([settle(c)], T + 8)
    assert store.pending() == {"hello": T + 5}


def test_concurrent_claims_never_lease_one_event_twice(store):
    store.enqueue([ev() for _ in range(200)], T)
    got: list[str] = []
    lock = threading.Lock()

    def claimer(owner):
        while batch := store.claim(owner, "hello", T, limit=7, lease_s=LEASE):
            with lock:
                got.extend(c.id for c in batch)

    threads = [threading.Thread(target=claimer, args=(f"o{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 200 and len(set(got)) == 200


def test_an_unknown_event_is_none(store):
    assert store.get_event("0" * 32) is None


# -- mist queues -------------------------------------------------------------------------------


def _send(store, queue, *bodies):
    """Messages get into queues only as settlements' destinations."""
    for body in bodies:
        e = ev(function="sender")
        store.enqueue([e], T)
        c = store.claim("s", "sender", T, limit=1, lease_s=LEASE)[0]
        store.settle([settle(c, owner="s", messages=(Message(queue, body),))], T)


def test_receive_hides_messages_until_their_visibility_ends(store):
    _send(store, "jobs", b"1", b"2", b"3")
    assert [(q.name, q.messages, q.visible) for q in store.list_queues(T)] == [("jobs", 3, 3)]
    got = store.receive("jobs", T, limit=2, visibility_s=30)
    assert [m.body for m in got] == [b"1", b"2"] and [m.receive_count for m in got] == [1, 1]
    assert [m.body for m in store.receive("jobs", T + 1, limit=5, visibility_s=30)] == [b"3"]
    assert store.receive("jobs", T + 2, limit=5, visibility_s=30) == []
    assert store.list_queues(T + 2)[0].visible == 0
    again = store.receive("jobs", T + 30, limit=5, visibility_s=30)  # not deleted: received again
    assert [(m.body, m.receive_count) for m in again] == [(b"1", 2), (b"2", 2)]
    assert store.delete("jobs", [again[0].id, "nope"]) == 1
    assert [m.body for m in store.peek("jobs", limit=10)] == [b"2", b"3"]
    assert store.peek("jobs", limit=10, message_id=again[1].id)[0].body == b"2"
    assert store.delete("other", [again[1].id]) == 0  # the id is in another queue


def test_sent_messages_are_received_in_order_with_their_ids(store):
    ids = store.send("dlq:hello", [b"a", b"b"], T)
    assert len(set(ids)) == 2 and store.send("dlq:hello", [], T) == []
    assert [(m.id, m.body, m.sent_at) for m in store.peek("dlq:hello", limit=5)] == [(ids[0], b"a", T), (ids[1], b"b", T)]


def test_redrive_moves_a_message_into_a_new_event_once(store):
    _send(store, "dlq:hello", b'{"requestPayload": 1}')
    [m] = store.peek("dlq:hello", limit=1)
    new = ev(payload=b"1", trigger="redrive")
    assert store.redrive("dlq:hello", [(m.id, new)], T) == [new.id]
    assert store.peek("dlq:hello", limit=1) == []
    assert store.redrive("dlq:hello", [(m.id, ev())], T) == [None]
    assert [c.id for c in store.claim("a", "hello", T, limit=5, lease_s=LEASE)] == [new.id]


@pytest.mark.parametrize("limit", [0, -1])
def test_a_claim_of_nothing_is_empty(store, limit):
    store.enqueue([ev()], T)
    assert store.claim("a", "hello", T, limit=limit, lease_s=LEASE) == []
