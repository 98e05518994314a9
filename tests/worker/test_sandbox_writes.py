"""When the Worker's frames leave for a sandbox (mist/worker/sandbox.py, mist/writeburst.py):
a lone cold start's ASSIGN and INVOKE at once, in one write; under load, with the loop turn's
other writes. No real sandbox: the sandbox's end of the socketpair is read directly."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import pytest

from mist import writeburst
from mist.worker import protocol
from mist.worker.lifecycle import State
from mist.worker.sandbox import Sandbox, _Channel
from mist.worker.types import SandboxSpec


@pytest.fixture
async def sandbox():  # type: ignore[no-untyped-def]
    """A Sandbox object on one end of a socketpair (state: in the pool), and the other end."""
    sb = Sandbox("s-test", 60000, None, None, network=False, max_log_lines=10)  # type: ignore[arg-type]
    ours, theirs = socket.socketpair()
    _, channel = await asyncio.get_running_loop().create_unix_connection(lambda: _Channel(sb), sock=ours)
    sb._channel = channel
    sb.state = State.PREWARMED
    theirs.setblocking(False)
    yield sb, theirs
    channel.transport.close()
    theirs.close()
    writeburst.for_loop(asyncio.get_running_loop()).calls = 0


def _frames(sock: socket.socket) -> list[int]:
    """The kinds of the frames waiting on the sandbox's end, read in one recv."""
    try:
        data = sock.recv(1 << 16)
    except BlockingIOError:
        return []
    return [f.kind for f in protocol.FrameDecoder().feed(data)]


SPEC = SandboxSpec(function_name="fn", version=1, code_dir=Path("/nonexistent"), handler="main.handler")


@pytest.mark.parametrize("others_in_flight", [0, 2])
async def test_a_cold_starts_assign_and_invoke_leave_in_one_write(sandbox, others_in_flight: int) -> None:  # type: ignore[no-untyped-def]
    sb, theirs = sandbox
    writeburst.for_loop(asyncio.get_running_loop()).calls = 1 + others_in_flight  # its own, and the others

    async def cold_start() -> None:  # as Worker.invoke does: assign, then invoke, in one step
        sb.assign(SPEC, "stream")
        await sb.invoke("request-1", b"{}", init_timeout_s=10.0)

    call = asyncio.ensure_future(cold_start())
    await asyncio.sleep(0)  # the call ran up to its wait for the result; the loop's turn is not over
    try:
        if others_in_flight:
            assert _frames(theirs) == []  # held for the end of the turn, with the others' writes
            await asyncio.sleep(0)
        # alone: at once, so the sandbox (often on this CPU) can run as soon as the gateway waits
        assert _frames(theirs) == [protocol.ASSIGN, protocol.INVOKE]
    finally:
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
