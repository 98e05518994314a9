import pytest

from mist.worker.lifecycle import Event, InvalidTransition, State, transition

S, E = State, Event


@pytest.mark.parametrize(
    ("state", "event", "expected"),
    [
        (S.SPAWNING, E.READY, S.PREWARMED),
        (S.PREWARMED, E.ASSIGN, S.INITIALIZING),
        (S.SPAWNING, E.ASSIGN, S.INITIALIZING),  # full path: assigned while still building
        (S.INITIALIZING, E.READY, S.INITIALIZING),
        (S.INITIALIZING, E.ACQUIRE, S.INITIALIZING),  # concurrency > 1 queues behind the init
        (S.INITIALIZING, E.INIT_DONE, S.BUSY),
        (S.BUSY, E.ACQUIRE, S.BUSY),
        (S.BUSY, E.DRAIN, S.IDLE),
        (S.IDLE, E.ACQUIRE, S.BUSY),
    ],
)
def test_allowed_transitions(state, event, expected):
    assert transition(state, event) is expected


@pytest.mark.parametrize("state", list(State))
def test_every_state_can_die_and_dead_stays_dead(state):
    assert transition(state, E.DIE) is S.DEAD


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (S.PREWARMED, E.ACQUIRE),  # a generic sandbox has no function to run
        (S.IDLE, E.ASSIGN),  # an instance serves one function for life
        (S.BUSY, E.ASSIGN),
        (S.IDLE, E.DRAIN),
        (S.DEAD, E.ACQUIRE),
        (S.DEAD, E.READY),
        (S.PREWARMED, E.INIT_DONE),
    ],
)
def test_forbidden_transitions_raise_naming_state_and_event(state, event):
    with pytest.raises(InvalidTransition, match=f"{event.value!r}.*{state.value!r}"):
        transition(state, event)
