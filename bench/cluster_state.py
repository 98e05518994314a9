"""Cluster state in PostgreSQL (`mist up --db`): what following other processes costs, how soon a
change made through one process holds on another, and what fetching code from the database adds.

Needs the PostgreSQL of this machine (postgresql+psycopg://postgres@127.0.0.1/test); works in a
schema of its own, dropped at the end. No mist server is started: the same components a server
composes (open_state, ChangeFeed, Tenancy, SqlBlobStore, packaging.extract_zip), in-process.

1. The change feed's poll (one SELECT of `state_revisions`), beside `SELECT 1` on the same engine
   (the floor: one round trip), per call.
2. Propagation: two "processes" (each its own engine, ChangeFeed polling every 1 s and Tenancy);
   a key revoked through A, at a random point of B's poll cycle; measured from the revoke's
   return to B refusing the key, `--trials` times. Expected: uniform over one poll (mean ~0.5 s,
   max ~1 s) plus one reload.
3. Code: a zip of `--files` files (`--mb` MB in all) put in code_blobs; fetched, sha256 checked and
   extracted into an empty dir (what another process does on its first call), beside extracting
   the same zip from local disk (what the process a deploy reached does anyway).

    .venv/bin/python bench/cluster_state.py [--trials 20 --mb 8 --files 400]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mist.control import packaging  # noqa: E402
from mist.control.state import open_state  # noqa: E402
from mist.errors import Unauthenticated  # noqa: E402
from mist.tenancy.roles import Caller, Principal, Role  # noqa: E402
from mist.tenancy.service import Tenancy  # noqa: E402
from mist.tenancy.store import SqlTenantStore  # noqa: E402

PG = "postgresql+psycopg://postgres@127.0.0.1/test"


def per_call_us(fn, n: int) -> tuple[float, float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e6)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


async def propagation(url: str, data: Path, trials: int) -> list[float]:
    a, b = open_state(data / "a", url), open_state(data / "b", url)
    ta, tb = Tenancy(SqlTenantStore(a.store.writes)), Tenancy(SqlTenantStore(b.store.writes))
    await ta.start()
    await tb.start()
    await ta.bootstrap(data / "a", shared=True)
    b.changes.on("tenancy", tb.refresh)
    await b.changes.start()
    admin = Caller(Principal("bench", "default", Role.ADMIN), "default")
    delays = []
    try:
        for _ in range(trials):
            key, secret = await ta.create_key(admin, "developer", "bench")
            while True:  # B knows the key before it is revoked
                try:
                    tb.authenticate(secret)
                    break
                except Unauthenticated:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(random.uniform(0, 1.0))  # a random point of B's poll cycle
            await ta.revoke_key(None, key.key_id)
            revoked = time.perf_counter()
            while True:
                try:
                    tb.authenticate(secret)
                except Unauthenticated:
                    break
                await asyncio.sleep(0.002)
            delays.append(time.perf_counter() - revoked)
    finally:
        await b.changes.stop()
        await ta.stop()
        await tb.stop()
        a.close()
        b.close()
    return delays


def make_zip(mb: int, files: int) -> bytes:
    buf = io.BytesIO()
    each = mb * 1024 * 1024 // files
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("main.py", "def handler(e, c):\n    return 1\n")
        for i in range(files):  # half compressible text, half random bytes
            zf.writestr(f"pkg/m{i}.txt", ("x" * (each // 2)) + os.urandom(each // 4).hex())
    return buf.getvalue()


def code_fetch(url: str, data: Path, mb: int, files: int, trials: int) -> tuple[list[float], list[float], int]:
    state = open_state(data / "c", url)
    zip_bytes = make_zip(mb, files)
    sha = hashlib.sha256(zip_bytes).hexdigest()
    state.blobs.put_blob("code", sha, zip_bytes)
    (data / "z.zip").write_bytes(zip_bytes)
    fetched, local = [], []
    for i in range(trials):
        t = time.perf_counter()
        blob = state.blobs.get_blob("code", sha)
        assert blob is not None and hashlib.sha256(blob).hexdigest() == sha
        packaging.extract_zip(io.BytesIO(blob), data / f"fetched{i}")
        fetched.append(time.perf_counter() - t)
        t = time.perf_counter()
        packaging.extract_zip(data / "z.zip", data / f"local{i}")
        local.append(time.perf_counter() - t)
    state.close()
    return fetched, local, len(zip_bytes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--mb", type=int, default=8)
    ap.add_argument("--files", type=int, default=400)
    args = ap.parse_args()
    schema = f"mist_bench_{secrets.token_hex(4)}"
    admin = sa.create_engine(PG)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = f"{PG}?options=-csearch_path%3D{schema}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp)
            for d in ("a", "b", "c"):
                (data / d).mkdir()
            state = open_state(data / "a", url)
            engine = state.store.engine
            with engine.connect() as conn:
                floor = per_call_us(lambda: conn.exec_driver_sql("SELECT 1").all(), 2000)
                conn.rollback()
            poll = per_call_us(state.changes._read, 2000)
            state.close()
            print(f"1. change feed poll: p50 {poll[0]:.0f} us, p99 {poll[1]:.0f} us per call (SELECT 1 on one "
                  f"connection, the floor: p50 {floor[0]:.0f} us, p99 {floor[1]:.0f} us); at 1 poll/s per process")
            delays = sorted(asyncio.run(propagation(url, data, args.trials)))
            print(f"2. key revoked on A -> refused on B ({args.trials} trials, poll 1 s): mean "
                  f"{statistics.mean(delays):.2f} s, p50 {statistics.median(delays):.2f} s, max {delays[-1]:.2f} s "
                  "(expected: uniform over one poll + a reload)")
            fetched, local, size = code_fetch(url, data, args.mb, args.files, max(3, args.trials // 4))
            print(f"3. code of {size / 1e6:.1f} MB zip ({args.files} files): fetched from PostgreSQL, checked and "
                  f"extracted p50 {statistics.median(fetched) * 1e3:.0f} ms; extracted from local disk "
                  f"p50 {statistics.median(local) * 1e3:.0f} ms (the floor: the deploying process pays it too)")
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


if __name__ == "__main__":
    main()
