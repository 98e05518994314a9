"""Several schedulers sharing the shards, for real: two `mist up --db --cluster-listen` processes on
one fresh PostgreSQL database and one worker agent (loopback), shard leases with a 2 s TTL.

What a user would notice: invocations through either process succeed, each process places only
the invocations of the shards the map gives it (the others are forwarded to their owner); a
graceful move of a shard loses no request; a scheduler paused past its lease places nothing for
the shards it lost when it wakes; one killed with SIGKILL under load has its shards taken over by
the survivor about a TTL later, after which every invocation through the survivor succeeds; and
(two more processes, balancing every second) a hot shard is split live and cold neighbours are
merged while it is called through both, with no failed request.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mist.cluster import wire
from mist.cluster.sqlleases import PgLeaseStore
from mist.cluster.sqlshardmap import PgShardMapStore
from mist.core.sharding import Move, ShardMap
from mist.testing.worker import remove_worker_leftovers
from mist.worker.types import SandboxSpec
from tests.e2e.conftest import MIST, REPO, Server, shared_secrets_key, start_server, write_function
from tests.e2e.test_cluster import stop

pytestmark = pytest.mark.sandbox

TOKEN = "test-shards-token-" + secrets.token_hex(8)
TTL = 2.0  # --shard-lease-ttl


@dataclass
class Shards:
    a: Server
    b: Server
    worker: subprocess.Popen
    pg_url: str
    names: dict[str, str]  # "a" / "b" -> a function whose shard that process owns
    holders: dict[str, str]  # "a" / "b" -> its holder id

    def map(self) -> ShardMap:
        store = PgShardMapStore(self.pg_url)
        try:
            stored = store.read()
            assert stored is not None
            return ShardMap.from_json(stored.body, stored.version)
        finally:
            store.close()

    def stats(self, s: Server) -> dict:
        r = httpx.get(s.url + "/v1/statistics", headers=s.auth, timeout=10)
        r.raise_for_status()
        return r.json()["Scheduler"]


def _holders(pg_url: str, servers: dict[str, Server]) -> dict[str, tuple[str, str]]:
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT holder, address FROM cluster_schedulers")).all()
    finally:
        engine.dispose()
    out = {}
    for key, s in servers.items():
        for holder, address in rows:
            if f":{s.proc.pid}:" in holder:
                out[key] = (holder, address)
    return out


def until(what: str, check, timeout: float = 20, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(every)
    return got


@contextmanager
def running(root: Path, balance_s: float, functions: Callable[[ShardMap, dict[str, str]], dict[str, str]], *,
            early: bool = False):
    """Two `mist up --db` schedulers on a fresh schema and one worker; `functions(map, holders)`
    names the functions to deploy ("a" / "b" / ... -> name), once each owns half the shards.
    `early` (for tests that never stop a, and choose functions by shard range only, not owner):
    the worker joins through a only, and the functions, chosen on a uniform map, are deployed
    through a, both while b starts (seconds saved)."""
    from tests.conftest import pg_schema

    key_file = shared_secrets_key(root)
    src = write_function(root / "fn", {"main.py": (
        "import os, time\n"
        "def handler(event, context):\n"
        "    time.sleep(event.get('sleep', 0))\n"
        "    return {'n': event.get('n'), 'fn': context.function_name}\n")})  # fmt: skip
    servers: dict[str, Server] = {}
    worker = None

    def start_worker(join: str) -> subprocess.Popen:
        with open(root / "worker.log", "ab") as out:
            return subprocess.Popen(
                [MIST, "worker", "--join", join, "--listen", "127.0.0.1:0", "--data-dir",
                 str(root / "w"), "--id", "w0", "--memory", "2048", "--prewarm", "1"],
                stdout=out, stderr=out, cwd=REPO, env={**os.environ, "MIST_CLUSTER_TOKEN": TOKEN})  # fmt: skip

    with pg_schema("mist_shards") as pg_url, cf.ThreadPoolExecutor(4) as pool:
        try:
            opts = ("--db", pg_url, "--secrets-key-file", str(key_file), "--cluster-listen", "127.0.0.1:0",
                    "--cluster-token", TOKEN, "--no-embedded-worker", "--shard-lease-ttl", str(TTL),
                    "--shard-balance", str(balance_s), "--worker-timeout", "3")
            servers["a"] = start_server(root / "a", *opts)
            names: dict[str, str] = {}
            deploying: list[cf.Future] = []
            if early:
                worker = start_worker(until("a reports", lambda: _holders(pg_url, servers).get("a"))[1])
                names = functions(ShardMap.uniform(16, ["a"]), {})
                deploying = [pool.submit(deploy, servers["a"], name, src) for name in names.values()]
            servers["b"] = start_server(root / "b", *opts)
            holders = until("both schedulers report", lambda: (h := _holders(pg_url, servers)) and len(h) == 2 and h)
            if not early:
                worker = start_worker(f"{holders['a'][1]},{holders['b'][1]}")
            admin = next(s for s in servers.values() if (s.data_dir / "admin.key").exists()).admin_key
            for s in servers.values():
                if not (s.data_dir / "admin.key").exists():
                    (s.data_dir / "admin.key").write_text(admin)
            probe = Shards(servers["a"], servers["b"], worker, pg_url, names, {k: h for k, (h, _) in holders.items()})
            until("each scheduler owns half the shards", lambda: sorted(
                len(v) for v in probe.map().owned().values()) == [8, 8])
            if not early:
                probe.names = functions(probe.map(), probe.holders)
                deploying = [pool.submit(deploy, servers["a"], name, src) for name in probe.names.values()]
            for done in deploying:
                done.result()
            until("the worker joined both schedulers' view", lambda: all(
                probe.stats(s)["healthy"] == 1 for s in servers.values()), timeout=30)
            yield probe
        finally:
            if worker is not None:
                stop(worker)
                remove_worker_leftovers(root / "w")
            for s in servers.values():
                s.stop()


def _two_per_scheduler(smap: ShardMap, holders: dict[str, str]) -> dict[str, str]:
    """Two functions in two different shards of each scheduler: "a", "a2", "b", "b2"."""
    names: dict[str, str] = {}
    for i in range(200):
        route = smap.route(f"fn{i}")
        key = next(k for k, h in holders.items() if h == route.owner)
        if key not in names:
            names[key] = f"fn{i}"
        elif key + "2" not in names and smap.route(names[key]).shard != route.shard:
            names[key + "2"] = f"fn{i}"
        if len(names) == 4:
            break
    return names


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    with running(tmp_path_factory.mktemp("shards"), 0, _two_per_scheduler) as probe:
        yield probe


def deploy(s: Server, name: str, src: Path) -> None:
    env = {**os.environ, "MIST_URL": s.url, "MIST_API_KEY": s.admin_key, "NO_COLOR": "1"}
    done = subprocess.run([MIST, "deploy", name, str(src), "--concurrency", "8"], capture_output=True, text=True,
                          env=env, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr


def call(s: Server, fn: str, n: int, sleep: float = 0.0) -> httpx.Response:
    return httpx.post(f"{s.url}/v1/functions/{fn}/invocations", json={"n": n, "sleep": sleep}, headers=s.auth,
                      timeout=60)


def _three_in_one_shard(smap: ShardMap, holders: dict[str, str]) -> dict[str, str]:
    """Three functions in one shard: none carries half of it, so the manager may split it."""
    by_shard: dict[int, list[str]] = {}
    for i in range(5000):
        same = by_shard.setdefault(smap.route(f"hot{i}").shard, [])
        same.append(f"hot{i}")
        if len(same) == 3:
            return {f"h{k}": fn for k, fn in enumerate(same)}
    raise AssertionError("no three functions in one shard")


def _live_shard_leases(pg_url: str) -> dict[str, str]:
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(sa.text(
                "SELECT name, holder FROM cluster_leases WHERE name LIKE 'shard/%' AND expires_at > now()")).all())
    finally:
        engine.dispose()


def test_a_hot_shard_is_split_live_and_cold_neighbours_merged_without_a_failed_request(tmp_path):
    """First in this file: its own two schedulers (balancing every second) are gone before the
    module's fixture starts the next two."""
    with running(tmp_path, 1.0, _three_in_one_shard, early=True) as c:
        before = c.map()
        hot = list(c.names.values())
        start = before.route(hot[0]).shard
        end = before.end(before.index(start))
        answers: list[httpx.Response] = []
        seen = [before]
        done = threading.Event()

        def load(s: Server) -> None:
            n = 0
            while not done.is_set():
                answers.append(call(s, hot[n % 3], n))
                n += 1

        def split_and_merged() -> bool:
            seen.append(c.map())
            split = any(start < p < end for p in seen[-1].starts)
            merged = set().union(*(m.starts for m in seen)) - set(seen[-1].starts)  # only merges remove starts
            return split and bool(merged)

        with cf.ThreadPoolExecutor(4) as pool:
            runs = [pool.submit(load, s) for s in (c.a, c.b, c.a, c.b)]
            try:
                until("the hot shard split and cold neighbours merged", split_and_merged, timeout=30, every=0.2)
                time.sleep(TTL)  # and the leases handed over since, under load
            finally:
                done.set()
                cf.wait(runs)
        made = [c.stats(s) for s in (c.a, c.b)]  # as the manager counts them (GET /v1/statistics)
        assert sum(m["shard_splits"] for m in made) >= 1 and sum(m["shard_merges"] for m in made) >= 1
        assert len(answers) > 30 and [r.status_code for r in answers] == [200] * len(answers), \
            [r.text for r in answers if r.status_code != 200]
        # every shard of the final map is held by its owner, and no lease outlives its shard
        until("each shard's lease is held by its owner, none other", lambda: _live_shard_leases(c.pg_url) == {
            f"shard/{s.start}": s.owner for s in c.map().shards()}, timeout=4 * TTL)


def test_invocations_through_either_scheduler_are_placed_by_their_shards_owner(shards):
    before = {k: shards.stats(s) for k, s in (("a", shards.a), ("b", shards.b))}
    jobs = [(s, shards.names[k], n) for n in range(10) for s in (shards.a, shards.b) for k in ("a", "b")]
    with cf.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda j: call(*j), jobs))
    assert [r.status_code for r in answers] == [200] * len(jobs), [r.text for r in answers if r.status_code != 200]
    assert [r.json()["fn"] for r in answers] == [fn for _, fn, _ in jobs]
    smap = shards.map()
    after = {k: shards.stats(s) for k, s in (("a", shards.a), ("b", shards.b))}
    for key in ("a", "b"):
        owned = {f"shard/{smap.starts[i]}" for i in smap.owned()[shards.holders[key]]}
        placed = after[key]["placed_by_shard"]
        assert placed and set(placed) <= owned, (key, placed, owned)  # only its own shards
        # 10 calls of its own function through each process: 20 placed here, 10 of them forwarded to it
        assert sum(placed.values()) - sum((before[key]["placed_by_shard"] or {}).values()) == 20
        assert after[key]["forwarded_in"] - before[key]["forwarded_in"] == 10
        assert after[key]["forwarded_out"] - before[key]["forwarded_out"] == 10


def test_a_graceful_move_of_a_shard_loses_no_request(shards):
    fn = shards.names["a2"]
    smap = shards.map()
    start = smap.route(fn).shard
    released_before = shards.stats(shards.a)["leases_released"]
    answers: list[httpx.Response] = []
    stop = time.monotonic() + 4.0

    def load(s: Server) -> None:
        n = 0
        while time.monotonic() < stop:
            answers.append(call(s, fn, n, 0.02))
            n += 1

    with cf.ThreadPoolExecutor(4) as pool:
        runs = [pool.submit(load, s) for s in (shards.a, shards.b, shards.a, shards.b)]
        time.sleep(1.0)
        store = PgShardMapStore(shards.pg_url)
        try:  # the shard of A's function moves to B, as the shard manager would move it
            moved = smap.apply([Move(start, shards.holders["b"])])
            assert store.compare_and_set(smap.version, moved.to_json()) is not None
        finally:
            store.close()
        cf.wait(runs)
    assert len(answers) > 20 and [r.status_code for r in answers] == [200] * len(answers), \
        [r.text for r in answers if r.status_code != 200]
    assert shards.stats(shards.a)["leases_released"] > released_before  # A handed the lease over
    until("B places for the moved shard", lambda: shards.stats(shards.b)["placed_by_shard"].get(f"shard/{start}"))


def test_a_scheduler_paused_past_its_lease_places_nothing_for_the_shards_it_lost(shards):
    fn = shards.names["a"]
    shard = f"shard/{shards.map().route(fn).shard}"  # A's
    assert call(shards.a, fn, 0).status_code == 200
    placed_before = shards.stats(shards.a)["placed_by_shard"][shard]
    leases = PgLeaseStore(shards.pg_url)
    old = leases.current(shard)
    leases.close()
    assert old is not None and old.holder == shards.holders["a"]
    os.kill(shards.a.proc.pid, signal.SIGSTOP)
    paused = time.monotonic()
    try:
        with cf.ThreadPoolExecutor(1) as pool:
            # forwarded to the paused A (still reporting a moment ago): it must not hang for the call's
            # timeout; answered once A stops reporting (WorkerLost: it may have run) or placed by B
            during = pool.submit(call, shards.b, fn, 2)
            until("B takes the paused scheduler's shards", lambda: set(shards.map().owners) == {shards.holders["b"]},
                  timeout=4 * TTL)
            answered = during.result(timeout=3 * TTL)
            assert time.monotonic() - paused < 3 * TTL
            assert answered.status_code == 200 or answered.json()["error"]["code"] == "WorkerLost", answered.text
    finally:
        os.kill(shards.a.proc.pid, signal.SIGCONT)
    # A wakes with stamps past their deadline; it must not place for the shards it lost
    r = call(shards.a, fn, 1)
    assert r.status_code == 200, r.text
    a_after = shards.stats(shards.a)
    assert a_after["placed_by_shard"][shard] == placed_before  # forwarded to B, the shard's owner now
    assert a_after["forwarded_out"] > 0
    # an order A had stamped before its pause, arriving now, is refused by the worker: B placed
    # the call above with a newer epoch of that shard's lease
    import sqlalchemy as sa

    engine = sa.create_engine(shards.pg_url)
    with engine.connect() as conn:
        worker_url = conn.execute(sa.text("SELECT address FROM cluster_workers WHERE id = 'w0'")).scalar_one()
    engine.dispose()
    fv = httpx.get(f"{shards.b.url}/v1/functions/{fn}", headers=shards.b.auth, timeout=10).json()["latest"]
    spec = SandboxSpec(fn, fv["version"], Path("/code") / fv["code_sha256"], fv["handler"])
    order = wire.encode_order(wire.Order(shard, old.epoch, "a-stale-order", spec), b"{}")
    refused = httpx.post(worker_url + "/v1/agent/invoke", content=order, headers={"Authorization": wire.bearer(TOKEN)},
                         timeout=10)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "StaleEpoch", refused.text
    # the manager gives the woken A a share again (it reports, so it is live: a newcomer)
    until("A owns shards again", lambda: shards.holders["a"] in shards.map().owners, timeout=4 * TTL)


def test_a_scheduler_killed_under_load_has_its_shards_taken_over_within_about_a_ttl(shards):
    until("A owns shards again", lambda: shards.holders["a"] in shards.map().owners, timeout=4 * TTL)
    smap = shards.map()
    name = next(f"fn{i}" for i in range(1000) if smap.route(f"fn{i}").owner == shards.holders["a"])
    src = write_function(shards.a.data_dir.parent / "fn", {})
    deploy(shards.b, name, src)
    until("A places its shards", lambda: call(shards.b, name, 0).status_code == 200)
    assert shards.stats(shards.a)["placed_by_shard"][f"shard/{smap.route(name).shard}"] >= 1
    outcomes: list[tuple[float, int]] = []
    stop = time.monotonic() + 3 * TTL + 2

    def load() -> None:
        n = 0
        while time.monotonic() < stop:
            started = time.monotonic()
            outcomes.append((started, call(shards.b, name, n, 0.05).status_code))
            n += 1

    with cf.ThreadPoolExecutor(4) as pool:
        runs = [pool.submit(load) for _ in range(4)]
        time.sleep(1.0)
        shards.a.proc.kill()  # SIGKILL: no release, no leave
        killed = time.monotonic()
        cf.wait(runs)
    after_ttl = [code for started, code in outcomes if started > killed + TTL + 1.0]
    assert after_ttl and set(after_ttl) == {200}, outcomes
    failed = [code for started, code in outcomes if code != 200]
    assert len(failed) <= 4, outcomes  # at most the calls A was placing when it died
    assert set(shards.map().owners) == {shards.holders["b"]}
