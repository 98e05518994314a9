"""Issue 6's rule, tested the hard way: after `mist up` is killed with SIGKILL again and again
under synchronous and asynchronous load, the usage ledger holds exactly the attempts that ran,
each once.

What "ran" means, and how it is known from outside (docs/billing.md#what-is-billed):
- a synchronous invocation ran if its client got its answer (200, or a function error): mist
  sends the answer only after the attempt's usage is in the journal. A request whose answer was
  cut by the kill may or may not have run (its usage is in the journal or not; the client cannot
  tell), so the ledger may also hold up to one attempt per cut request, and no more;
- an asynchronous attempt ran if its outcome is recorded as succeeded or failed
  (`GET /v1/invocations/{id}`): its usage is stored in the same transaction. An attempt cut by a
  kill ("lost") is not billed; the event runs again and that attempt is billed.
"""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

from tests.e2e.conftest import start_server, write_function
from tests.e2e.rawhttp import RawClient, get_json
from tests.e2e.test_async_crash import Target, kill_and_restart, settled, submit

pytestmark = pytest.mark.sandbox

EVENTS = 3000
CALLERS = 16
WORK = "import time\ndef handler(event, context):\n    time.sleep(0.002)\n    return event\n"
# every third event fails on each attempt: retried once, then dead-lettered (two billed attempts)
RETRY = "def handler(event, context):\n    if event['n'] % 3 == 0:\n        raise ValueError('no')\n    return event\n"


async def call(target: Target, stop: threading.Event, answered: set[str], stats: dict[str, int]) -> None:
    """Synchronous invocations from CALLERS connections until `stop`; the ids of those answered."""

    async def caller() -> None:
        held = None
        while not stop.is_set():
            held = await target.connect(held)
            try:
                status, got, _ = await held[0].request("POST", "/v1/functions/work/invocations", b'{"x": 1}')
            except OSError:  # killed mid-request: maybe it ran, maybe not
                stats["cut"] += 1
                await asyncio.sleep(0.02)
                continue
            if status == 200:
                answered.add(got["x-mist-invocation-id"])
            else:
                stats["refused"] += 1
        if held is not None:
            held[0].close()

    await asyncio.gather(*(caller() for _ in range(CALLERS)))


async def ledger(url: str) -> list[dict]:
    client, out, after = RawClient(url), [], None
    try:
        while True:
            page = await client.json("GET", "/v1/usage/records?limit=10000" + (f"&after={after}" if after else ""))
            out += page["records"]
            after = page["next"]
            if not after:
                return out
    finally:
        client.close()


def test_the_ledger_equals_the_attempts_that_ran_however_often_mist_up_is_killed(tmp_path):
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    for name, code, extra in (("work", WORK, ["--concurrency", "8"]), ("retry", RETRY, ["--retries", "1"])):
        r = server.cli("deploy", name, str(write_function(tmp_path / name, {"main.py": code})), *extra)
        assert r.returncode == 0, r.stderr
    target = Target(server.url)
    accepted: dict[int, str] = {}
    answered: set[str] = set()
    stats = {"cut": 0, "replayed": 0, "refused": 0}
    stop = threading.Event()
    submitter = threading.Thread(target=lambda: asyncio.run(submit(target, accepted, stats, function="retry",
                                                                   events=EVENTS)))  # fmt: skip
    caller = threading.Thread(target=lambda: asyncio.run(call(target, stop, answered, stats)))
    submitter.start()
    caller.start()
    kills = 0
    rng = random.Random(6)
    try:
        while True:
            submitter.join(timeout=rng.uniform(0.8, 1.5))
            last = not submitter.is_alive() and kills >= 4
            if last:
                stop.set()
                caller.join()  # the last kill with events still running, sync callers stopped
            server = kill_and_restart(server, target, data_dir)
            kills += 1
            if last:
                break
        found = settled(server.url, list(accepted.values()), {"succeeded", "dead-lettered"}, timeout=90)
        billed = asyncio.run(ledger(server.url))
        reported = int(asyncio.run(get_json(server.url, "/v1/usage"))["total"]["requests"])
    finally:
        stop.set()
        server.stop()
    ids = [r["id"] for r in billed]
    sync_billed = {r["id"] for r in billed if r["trigger"] == "api"}
    async_billed = {r["id"] for r in billed if r["trigger"] == "event"}
    ran_async = {f"{v['id']}-{a['attempt']}" for v in found.values() for a in v["attempts"]
                 if a["outcome"] in ("succeeded", "failed")}  # fmt: skip
    lost = sum(a["outcome"] == "lost" for v in found.values() for a in v["attempts"])
    extra = sync_billed - answered
    print(f"\n{kills} kill -9s; {len(answered)} synchronous answers, {stats['cut']} requests cut, "
          f"{len(extra)} cut requests that had run (billed); {len(accepted)} events, {len(ran_async)} attempts ran, "
          f"{lost} attempts lost to a kill (not billed); ledger {len(billed)} records, report {reported} requests")
    assert len(ids) == len(set(ids))  # nothing counted twice
    assert answered <= sync_billed  # every answered invocation is billed...
    assert len(extra) <= stats["cut"]  # ...and beyond them only requests whose answer a kill cut
    assert async_billed == ran_async  # exactly the asynchronous attempts that ran
    assert {v["status"] for v in found.values()} <= {"succeeded", "dead-lettered"}
    assert sum(len(v["attempts"]) for v in found.values() if v["status"] == "dead-lettered") >= 2
    assert reported == len(billed)  # the report sums the same ledger
    assert kills >= 5 and len(answered) > 300
