"""A sandbox's lifecycle as an explicit state machine (pure: no I/O, no clock).

    SPAWNING --READY--> PREWARMED --ASSIGN--> INITIALIZING --INIT_DONE--> BUSY <--ACQUIRE-- IDLE
        |                                ^          |                      |  --DRAIN-->   |
        +-------------ASSIGN-------------+          +------ACQUIRE---------+               |
    any state --DIE--> DEAD   (killed, crashed, timed out, reclaimed, retired, worker stopping)

SPAWNING: forked by the zygote, building its generic root. PREWARMED: generic, in the pool,
waiting for a function. INITIALIZING: assigned, importing the handler's module (the cold
invocation is queued behind it; more may queue with concurrency > 1). BUSY: at least one
invocation in flight. IDLE: loaded, nothing in flight (the keep-alive clock runs). DEAD: gone.
A sandbox built on the full path is assigned while still SPAWNING.
"""

from __future__ import annotations

import enum


class State(enum.Enum):
    SPAWNING = "spawning"
    PREWARMED = "prewarmed"
    INITIALIZING = "initializing"
    IDLE = "idle"
    BUSY = "busy"
    DEAD = "dead"


class Event(enum.Enum):
    READY = "ready"  # generic setup done
    ASSIGN = "assign"  # a function was given to the sandbox
    INIT_DONE = "init_done"  # the handler's module was imported (or failed to)
    ACQUIRE = "acquire"  # an invocation was sent
    DRAIN = "drain"  # the last invocation in flight finished
    DIE = "die"  # the process is gone or being killed


class InvalidTransition(ValueError):
    def __init__(self, state: State, event: Event) -> None:
        super().__init__(f"event {event.value!r} is not allowed in state {state.value!r}")
        self.state = state
        self.event = event


_TABLE: dict[tuple[State, Event], State] = {
    (State.SPAWNING, Event.READY): State.PREWARMED,
    (State.SPAWNING, Event.ASSIGN): State.INITIALIZING,
    (State.PREWARMED, Event.ASSIGN): State.INITIALIZING,
    (State.INITIALIZING, Event.READY): State.INITIALIZING,  # full path: READY arrives after ASSIGN
    (State.INITIALIZING, Event.ACQUIRE): State.INITIALIZING,
    (State.INITIALIZING, Event.INIT_DONE): State.BUSY,
    (State.IDLE, Event.ACQUIRE): State.BUSY,
    (State.BUSY, Event.ACQUIRE): State.BUSY,
    (State.BUSY, Event.DRAIN): State.IDLE,
}

LIVE_FUNCTION_STATES = frozenset({State.INITIALIZING, State.IDLE, State.BUSY})


def transition(state: State, event: Event) -> State:
    """The next state, or InvalidTransition. DIE is allowed from every state (DEAD stays DEAD)."""
    if event is Event.DIE:
        return State.DEAD
    try:
        return _TABLE[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event) from None
