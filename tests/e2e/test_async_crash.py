"""Issue 4's rule, tested the hard way: an event mist accepted (202) runs at least once, however
often `mist up` is killed with SIGKILL while events arrive and run."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Server, start_server, write_function
from tests.e2e.rawhttp import RawClient, get_json

pytestmark = pytest.mark.sandbox

EVENTS = 10_000
SENDERS = 32


class Target:
    """The URL of the running `mist up` (a new port after each restart); `up` is clear while it restarts."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.generation = 0
        self.up = threading.Event()
        self.up.set()

    async def connect(self, held: tuple[RawClient, int] | None) -> tuple[RawClient, int]:
        """A client of the server running now (waits while it restarts): `held` if still current."""
        while not self.up.is_set():
            await asyncio.sleep(0.02)
        if held is not None and held[1] == self.generation:
            return held
        if held is not None:
            held[0].close()
        return RawClient(self.url), self.generation


async def submit(
    target: Target, accepted: dict[int, str], stats: dict[str, int], *, function: str = "noop", events: int = EVENTS
) -> None:
    """Send events 0..events-1, each with its own idempotency key, until each is answered 202;
    a request cut by a kill is sent again (same key: if it had been stored, the first id comes back)."""
    todo = list(range(events - 1, -1, -1))

    async def sender() -> None:
        held = None
        while todo:
            n = todo.pop()
            while True:
                held = await target.connect(held)
                headers = {"X-Mist-Invocation-Type": "Event", "X-Mist-Idempotency-Key": f"crash-{n}"}
                try:
                    status, got, body = await held[0].request(
                        "POST", f"/v1/functions/{function}/invocations", json.dumps({"n": n}).encode(), headers
                    )
                except OSError:  # ConnectionError included: killed mid-request
                    stats["cut"] += 1
                    await asyncio.sleep(0.02)
                    continue
                if status == 202:
                    accepted[n] = json.loads(body)["invocation_id"]
                    stats["replayed"] += got.get("x-mist-idempotent-replayed") == "true"
                    break
                stats["refused"] += 1  # not accepted: send again
                await asyncio.sleep(0.02)
        if held is not None:
            held[0].close()

    await asyncio.gather(*(sender() for _ in range(SENDERS)))


async def statuses(url: str, ids: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    pending = list(ids)

    async def reader() -> None:
        client = RawClient(url)
        while pending:
            inv_id = pending.pop()
            out[inv_id] = await client.json("GET", f"/v1/invocations/{inv_id}")
        client.close()

    await asyncio.gather(*(reader() for _ in range(SENDERS)))
    return out


async def held(url: str) -> int:
    return int((await get_json(url, "/v1/statistics"))["Dispatcher"]["held"])


def idle(url: str, deadline: float) -> None:
    """Until the dispatcher holds no event (twice in a row), so one status read tells all."""
    calm = 0
    while calm < 2 and time.monotonic() < deadline:
        calm = calm + 1 if asyncio.run(held(url)) == 0 else 0
        time.sleep(0.2)


def kill_and_restart(server: Server, target: Target, data_dir: Path) -> Server:
    """SIGKILL `mist up` and start it again on the same data dir; clients wait meanwhile."""
    target.up.clear()
    server.proc.kill()
    server.proc.wait()
    server.proc.stdout.close()
    server = start_server(data_dir)
    target.url, target.generation = server.url, target.generation + 1
    target.up.set()
    return server


def settled(url: str, ids: list[str], done: set[str], timeout: float = 60) -> dict[str, dict]:
    """The status of each event once all are in `done` (or `timeout` passed), read while idle."""
    deadline = time.monotonic() + timeout
    while True:
        idle(url, deadline)
        found = asyncio.run(statuses(url, ids))
        if all(v["status"] in done for v in found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_no_accepted_event_is_lost_when_mist_up_is_killed_again_and_again(tmp_path):
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    src = write_function(tmp_path / "noop", {"main.py": "def handler(event, context):\n    return event\n"})
    r = server.cli("deploy", "noop", str(src), "--concurrency", "8")
    assert r.returncode == 0, r.stderr
    target = Target(server.url)
    accepted: dict[int, str] = {}
    stats = {"cut": 0, "replayed": 0, "refused": 0}
    submitter = threading.Thread(target=lambda: asyncio.run(submit(target, accepted, stats)))
    started = time.monotonic()
    submitter.start()
    kills = 0
    rng = random.Random(4)
    try:
        while True:
            submitter.join(timeout=rng.uniform(0.8, 1.5))
            # once more after the last event was accepted, while the last events run; at least 5
            # kills, so that a fast machine, done submitting early, also kills while they run
            last = not submitter.is_alive() and kills >= 4
            server = kill_and_restart(server, target, data_dir)
            kills += 1
            if last:
                break
        assert len(accepted) == EVENTS
        ids = list(accepted.values())
        assert len(set(ids)) == EVENTS  # one id per event, however often it was sent
        found = settled(server.url, ids, {"succeeded"})
        unfinished = [i for i, v in found.items() if v["status"] != "succeeded"]
    finally:
        server.stop()
    lost = [found[i] for i in unfinished]
    reruns = sum(len(v["attempts"]) - 1 for v in found.values())
    interrupted = sum(a["outcome"] == "lost" for v in found.values() for a in v["attempts"])
    print(f"\n{EVENTS} events accepted and run in {time.monotonic() - started:.1f} s across {kills} kill -9s: "
          f"{len(lost)} lost; {interrupted} attempts interrupted by a kill, {reruns} attempts beyond the first "
          f"(at most that many duplicate runs); {stats['cut']} requests cut by a kill and sent again, "
          f"{stats['replayed']} of which had been stored (the first id came back)")
    assert stats["cut"] > 0  # kills landed while events were being submitted
    assert lost == [], f"{len(lost)} accepted events did not run, e.g. {lost[:3]}"
    assert {v["function"] for v in found.values()} == {"noop"}
