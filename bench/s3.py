"""S3 endpoint throughput: PUT and GET of 4 KB and 16 MB objects through boto3, next to the local
disk's own write+fsync and read speed for files of the same sizes, measured in the same run.

Starts `mist up --s3-port` (own data dir under /tmp), creates an access key through the API,
then, with `--threads` client threads (one boto3 client each, path-style, SigV4 with the payload
hash boto3 computes over plain HTTP):

    PUT 4 KB   x --small-count      GET 4 KB   (the same objects)
    PUT 16 MB  x --large-count      GET 16 MB  (the same objects)

and the peer, with the same thread count, in a directory of the same filesystem: write + fsync +
close of new files (what the endpoint does for each object, before its metadata commit), and
read of each file back. Figures: objects/s, MB/s, per-request p50/p99.

    /work/main/.venv/bin/python bench/s3.py                     # ~1 min
    /work/main/.venv/bin/python bench/s3.py --threads 1 --small-count 500
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from _common import MistServer, Report, arg_parser, client, free_port, percentile  # noqa: E402

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

SMALL = 4 * 1024
LARGE = 16 * 1024 * 1024


def run_parallel(count: int, threads: int, op: Callable[[int, int], None]) -> tuple[float, list[float]]:
    """Run op(thread, i) for i in range(count) on `threads` threads; (wall seconds, per-op seconds)."""
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        mine = []
        try:
            for i in range(t, count, threads):
                start = time.perf_counter()
                op(t, i)
                mine.append(time.perf_counter() - start)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    start = time.perf_counter()
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    return wall, latencies


def figures(count: int, size: int, wall: float, lat: list[float]) -> dict[str, float]:
    return {
        "objects_per_s": count / wall, "mb_per_s": count * size / wall / 1e6,
        "p50_ms": percentile(lat, 50) * 1e3, "p99_ms": percentile(lat, 99) * 1e3,
    }  # fmt: skip


def fmt(f: dict[str, float]) -> str:
    return f"{f['objects_per_s']:9.1f} obj/s {f['mb_per_s']:8.1f} MB/s  (p50 {f['p50_ms']:.2f} / p99 {f['p99_ms']:.2f} ms)"


def disk_peer(root: Path, size: int, count: int, threads: int) -> tuple[dict[str, float], dict[str, float]]:
    """write+fsync then read back `count` files of `size` bytes, `threads` at a time."""
    payload = os.urandom(size)
    root.mkdir(parents=True, exist_ok=True)

    def write(_t: int, i: int) -> None:
        fd = os.open(root / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(_t: int, i: int) -> None:
        with open(root / f"f{i}", "rb", buffering=0) as f:
            while f.read(1 << 20):
                pass

    wrote = figures(count, size, *run_parallel(count, threads, write))
    read_back = figures(count, size, *run_parallel(count, threads, read))
    for i in range(count):
        (root / f"f{i}").unlink()
    return wrote, read_back


def main() -> int:
    p = arg_parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=8, help="client threads (and peer threads)")
    p.add_argument("--small-count", type=int, default=2000, help="4 KB objects to PUT then GET")
    p.add_argument("--large-count", type=int, default=24, help="16 MB objects to PUT then GET")
    args = p.parse_args()

    s3_port = free_port()
    server = MistServer(["--s3-port", str(s3_port), *args.mist_arg]).start()
    report = Report("s3 (PUT/GET through boto3 vs the local disk)")
    try:
        m = re.search(r"S3 endpoint at (http://\S+)", server.log_path.read_text())
        if m is None:
            raise RuntimeError("mist up did not print its S3 endpoint")
        endpoint = m.group(1)
        with client(server.url) as c:
            key = c.post("/v1/s3/keys").json()
        config = Config(s3={"addressing_style": "path"}, max_pool_connections=4, retries={"max_attempts": 1})
        clients = [
            boto3.session.Session().client(
                "s3", endpoint_url=endpoint, region_name="us-east-1", config=config,
                aws_access_key_id=key["access_key_id"], aws_secret_access_key=key["secret_access_key"],
            )  # fmt: skip
            for _ in range(args.threads)
        ]
        clients[0].create_bucket(Bucket="bench")
        results: dict[str, dict[str, float]] = {}
        for label, size, count in (("4 KB", SMALL, args.small_count), ("16 MB", LARGE, args.large_count)):
            body = os.urandom(size)

            def put(t: int, i: int, body: bytes = body, label: str = label) -> None:
                clients[t].put_object(Bucket="bench", Key=f"{label}/{i}", Body=body)

            def get(t: int, i: int, size: int = size, label: str = label) -> None:
                got = clients[t].get_object(Bucket="bench", Key=f"{label}/{i}")["Body"]
                n = 0
                while chunk := got.read(1 << 20):
                    n += len(chunk)
                assert n == size

            results[f"put {label}"] = figures(count, size, *run_parallel(count, args.threads, put))
            results[f"get {label}"] = figures(count, size, *run_parallel(count, args.threads, get))
            with tempfile.TemporaryDirectory(dir=server.data_dir) as scratch:  # the same filesystem
                wrote, read_back = disk_peer(Path(scratch), size, count, args.threads)
            results[f"disk write+fsync {label}"], results[f"disk read {label}"] = wrote, read_back
            report.row(f"PUT {label:>5} x{count}", fmt(results[f"put {label}"]),
                       f"disk write+fsync: {fmt(wrote)}")  # fmt: skip
            report.row(f"GET {label:>5} x{count}", fmt(results[f"get {label}"]),
                       f"disk read:        {fmt(read_back)}")  # fmt: skip
        for label in ("4 KB", "16 MB"):
            for op, peer in (("put", "disk write+fsync"), ("get", "disk read")):
                ours, theirs = results[f"{op} {label}"], results[f"{peer} {label}"]
                share = ours["mb_per_s"] / theirs["mb_per_s"] if theirs["mb_per_s"] else float("nan")
                report.check(f"{op.upper()} {label}: share of the disk's MB/s", share, "informational", None)
        report.data = {"results": results, "threads": args.threads, "client": "boto3 " + boto3.__version__}
        report.notes.append(
            f"client: boto3 {boto3.__version__}, {args.threads} threads, one client each, in this process; over plain "
            "HTTP boto3 SHA-256-hashes every PUT body to sign it and adds a CRC32, so client CPU is part of the figures"
        )
        report.notes.append(f"{os.cpu_count()} CPUs shared by the client, the server and the peer")
    finally:
        server.stop()
    report.print(as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
