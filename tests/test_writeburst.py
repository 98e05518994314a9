"""Writes held while other invocations are in flight go out together at the end of the turn
of the event loop (mist/writeburst.py)."""

from __future__ import annotations

import asyncio

import pytest

from mist import writeburst


class Writer:
    def __init__(self, name: str, out: list[str]) -> None:
        self.name = name
        self.out = out

    def flush(self) -> None:
        self.out.append(self.name)


@pytest.mark.parametrize(
    ("calls", "own", "busy"),
    [
        (0, 0, False),  # an answer, nothing else in flight: written at once
        (1, 1, False),  # an INVOKE frame of the only invocation in flight
        (1, 0, True),  # an answer while another invocation runs
        (2, 1, True),
        (64, 1, True),
    ],
)
async def test_held_only_while_other_invocations_are_in_flight(calls: int, own: int, busy: bool) -> None:
    burst = writeburst.for_loop(asyncio.get_running_loop())
    burst.calls = calls
    try:
        assert burst.busy(own) is busy
    finally:
        burst.calls = 0


async def test_held_writers_are_flushed_once_at_the_end_of_the_turn_in_order() -> None:
    burst = writeburst.for_loop(asyncio.get_running_loop())
    out: list[str] = []
    for name in ("a", "b", "c"):
        burst.hold(Writer(name, out))
    assert out == []  # nothing goes before the turn ends
    await asyncio.sleep(0)
    assert out == ["a", "b", "c"]
    burst.hold(Writer("d", out))  # the next turn: flushed again
    await asyncio.sleep(0)
    assert out == ["a", "b", "c", "d"]


async def test_a_writer_that_fails_does_not_keep_the_others_data_back(caplog) -> None:  # type: ignore[no-untyped-def]
    burst = writeburst.for_loop(asyncio.get_running_loop())
    out: list[str] = []

    class Broken:
        def flush(self) -> None:
            raise RuntimeError("broken")

    class Fine:
        def flush(self) -> None:
            out.append("fine")

    burst.hold(Broken())
    burst.hold(Fine())
    await asyncio.sleep(0)
    assert out == ["fine"] and "flushing" in caplog.text


async def test_each_loop_has_its_own() -> None:
    here = writeburst.for_loop(asyncio.get_running_loop())
    assert writeburst.for_loop(asyncio.get_running_loop()) is here
    other = asyncio.new_event_loop()
    try:
        assert writeburst.for_loop(other) is not here
    finally:
        other.close()
