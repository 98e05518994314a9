"""A misbehaving function (fork bomb, memory bomb, /tmp filler, CPU spinner) is contained by its
own limits, and the other functions on the machine keep answering."""

from __future__ import annotations

import statistics
import threading
import time

import pytest

from tests.e2e.conftest import write_function

pytestmark = pytest.mark.sandbox

BOMBS = {
    "fork-bomb": (
        "import os, time\n"
        "def handler(event, context):\n"
        "    n = 0\n"
        "    try:\n"
        "        while True:\n"
        "            if os.fork() == 0:\n"
        "                while True:\n"
        "                    pass\n"
        "            n += 1\n"
        "    except OSError as exc:\n"
        "        time.sleep(2)\n"
        "        return {'forked': n, 'stopped_by': exc.strerror}\n"
    ),
    "memory-bomb": (
        "def handler(event, context):\n"
        "    hog = []\n"
        "    while True:\n"
        "        hog.append(bytearray(16 * 1024 * 1024))\n"
    ),
    "disk-filler": (
        "def handler(event, context):\n"
        "    chunk = b'x' * (1 << 20)\n"
        "    written = 0\n"
        "    try:\n"
        "        with open('/tmp/fill', 'wb') as f:\n"
        "            while True:\n"
        "                f.write(chunk)\n"
        "                f.flush()\n"
        "                written += 1\n"
        "    except OSError as exc:\n"
        "        return {'written_mb': written, 'error': exc.strerror}\n"
    ),
}


def latencies(client, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.post("/v1/functions/calm/invocations", content=b'{"x": 1}')
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, r.text
    return out


def test_bombs_are_contained_and_other_functions_keep_serving(server, tmp_path):
    calm = write_function(tmp_path / "calm", {"main.py": "def handler(event, context):\n    return event\n"})
    assert server.cli("deploy", "calm", str(calm)).returncode == 0
    for name, code in BOMBS.items():
        src = write_function(tmp_path / name, {"main.py": code})
        assert server.cli("deploy", name, str(src), "--timeout", "20").returncode == 0, name

    with server.client() as c:
        latencies(c, 20)  # warm up
        baseline = statistics.median(latencies(c, 100))
        results: dict[str, object] = {}

        def run(name: str) -> None:
            with server.client() as bc:
                results[name] = bc.post(f"/v1/functions/{name}/invocations", content=b"{}")

        threads = [threading.Thread(target=run, args=(n,)) for n in BOMBS]
        for t in threads:
            t.start()
        time.sleep(0.5)
        under_attack = statistics.median(latencies(c, 100))
        for t in threads:
            t.join(60)

    fork = results["fork-bomb"]
    assert fork.status_code == 200, fork.text
    assert fork.json()["stopped_by"] == "Resource temporarily unavailable"
    assert fork.json()["forked"] < 100  # the pids limit, not the machine, stopped it
    mem = results["memory-bomb"]
    assert mem.status_code == 500 and mem.json()["errorType"] == "Runtime.OutOfMemory"
    disk = results["disk-filler"]
    assert disk.status_code in (200, 500)  # ENOSPC on the size-capped /tmp, or the memory limit first
    if disk.status_code == 200:
        assert disk.json()["error"] == "No space left on device"
    else:
        assert disk.json()["errorType"] == "Runtime.OutOfMemory"
    # Every call of the calm function succeeded (asserted in latencies); its median stays in
    # the same range (generous bound for a shared 2-core machine; bench/ measures it exactly).
    print(f"calm median: {baseline:.2f} ms alone, {under_attack:.2f} ms beside the bombs")
    assert under_attack < baseline * 5 + 5, (baseline, under_attack)
