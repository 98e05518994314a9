"""Memory of idle warm instances: PSS of the sandbox processes of one warm, idle hello instance,
and of N warm instances (N functions) / N.

The sandbox processes are the descendants of the `mist up` this script started whose memory
cgroup (v1, from /proc/PID/cgroup) contains `mist`, grouped by cgroup (one cgroup = one
sandbox). A sandbox is an *instance of a function* when its root has code at /var/task
(`/proc/PID/root/var/task/main.py`); the others are pre-built pool sandboxes waiting for a
function, reported apart, as is the zygote they fork from. PSS comes from
/proc/PID/smaps_rollup (shared pages are divided among the processes sharing them, so the
zygote's copy-on-write pages are charged in part to each sandbox).

Peer / limit in the same run: an idle bare `python -I -S` process (the real binary), i.e.
what one instance would cost without a zygote to share pages with. Target: <= 6 MB PSS.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from _common import (
    HELLO_RESULT,
    REAL_PYTHON,
    MistServer,
    Report,
    arg_parser,
    children_of,
    client,
    deploy,
    invoke,
    percentile,
    smaps,
    statistics,
)

KB = 1024


def uss_kb(s: dict[str, int]) -> int:
    return s.get("Private_Clean", 0) + s.get("Private_Dirty", 0)


def memory_cgroup(pid: int) -> str | None:
    try:
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, ctrls, path = line.split(":", 2)
            if "memory" in ctrls.split(","):
                return path
    except (OSError, ValueError):
        pass
    return None


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:100]
    except OSError:
        return "?"


def has_code(pid: int) -> bool:
    try:
        return any(Path(f"/proc/{pid}/root/var/task").iterdir())
    except OSError:
        return False


def classify(server_pid: int) -> dict:
    """The mist process tree: sandboxes grouped by memory cgroup, instances vs. pool, the rest."""
    pids = children_of(server_pid)
    groups: dict[str, list[int]] = {}
    others: list[int] = []
    for pid in sorted(pids):
        cg = memory_cgroup(pid)
        if pid != server_pid and cg and "mist" in cg:
            groups.setdefault(cg, []).append(pid)
        else:
            others.append(pid)
    instances = {cg: ps for cg, ps in groups.items() if any(has_code(p) for p in ps)}
    pool = {cg: ps for cg, ps in groups.items() if cg not in instances}
    return {"instances": instances, "pool": pool, "others": others}


def pss_of(pids: list[int]) -> dict[str, int]:
    tot = {"Pss": 0, "Rss": 0, "Uss": 0}
    for p in pids:
        s = smaps(p)
        tot["Pss"] += s.get("Pss", 0)
        tot["Rss"] += s.get("Rss", 0)
        tot["Uss"] += uss_kb(s)
    return tot


def idle_python_pss() -> dict[str, int]:
    p = subprocess.Popen([REAL_PYTHON, "-I", "-S", "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        time.sleep(0.5)
        s = smaps(p.pid)
        return {"Pss": s.get("Pss", 0), "Rss": s.get("Rss", 0), "Uss": uss_kb(s)}
    finally:
        p.stdin.close()  # type: ignore[union-attr]
        p.wait()


def mb(kb: float) -> str:
    return f"{kb / KB:.2f} MB"


def main() -> None:
    ap = arg_parser(__doc__.split("\n")[0])
    ap.add_argument("-N", type=int, default=20, help="functions for the many-instances figure (default 20)")
    ap.add_argument("--idle-s", type=float, default=2.0, help="idle time before measuring (default 2 s)")
    args = ap.parse_args()
    rep = Report("memory")
    peer = idle_python_pss()

    with MistServer(args.mist_arg) as srv, client(srv.url) as c:
        deploy(c, "hello")
        r = invoke(c, "hello", {"name": "bench"})
        assert r.status_code == 200 and r.json() == HELLO_RESULT, (r.status_code, r.text)
        time.sleep(args.idle_s)
        tree1 = classify(srv.pid)
        if len(tree1["instances"]) != 1:
            raise RuntimeError(f"expected 1 instance after one invocation, found {tree1}")
        (cg1, pids1), = tree1["instances"].items()
        one = pss_of(pids1)
        zygote_etc = [p for p in tree1["others"] if p != srv.pid]
        zyg = pss_of(zygote_etc)
        server_pss = pss_of([srv.pid])
        pool1 = pss_of([p for ps in tree1["pool"].values() for p in ps])
        rep.data["one"] = {"cgroup": cg1, "pids": {p: comm(p) for p in pids1}, "kB": one}

        # N instances: N functions, one warm instance each (hello is deleted first)
        r = c.delete("/v1/functions/hello")
        assert r.status_code == 204, (r.status_code, r.text)
        names = [f"hello-{i:02d}" for i in range(args.N)]
        for n in names:
            deploy(c, n)
        for n in names:
            r = invoke(c, n, {"name": "bench"})
            assert r.status_code == 200, (n, r.status_code, r.text)
        time.sleep(args.idle_s)
        treeN = classify(srv.pid)
        n_inst = len(treeN["instances"])
        allN = pss_of([p for ps in treeN["instances"].values() for p in ps])
        each = sorted(pss_of(ps)["Pss"] for ps in treeN["instances"].values())
        zygN = pss_of([p for p in treeN["others"] if p != srv.pid])
        poolN = treeN["pool"]
        rep.data["many"] = {"instances": n_inst, "kB": allN, "zygote_kB": zygN,
                            "pids": {cg: ps for cg, ps in treeN["instances"].items()}}  # fmt: skip
        rep.data["statistics"] = statistics(c)
        rep.data["processes"] = {p: comm(p) for p in sorted(children_of(srv.pid))}

    per1 = one["Pss"]
    perN = allN["Pss"] / max(n_inst, 1)
    rep.row("one warm idle hello instance", f"PSS {mb(per1)}",
            f"RSS {mb(one['Rss'])}, USS {mb(one['Uss'])}, {len(pids1)} process(es)")  # fmt: skip
    rep.row(f"{n_inst} warm idle instances / {n_inst}", f"PSS {mb(perN)}",
            f"RSS {mb(allN['Rss'] / max(n_inst, 1))}, USS {mb(allN['Uss'] / max(n_inst, 1))} each")  # fmt: skip
    if each:
        rep.row("  per instance: min / median / max", f"PSS {each[0] / KB:.2f} / {percentile(each, 50) / KB:.2f} / {each[-1] / KB:.2f} MB",
                f"{sum(1 for x in each if x / KB <= 6)} of {len(each)} at <= 6 MB")  # fmt: skip
        rep.data["many"]["each_pss_kB"] = each
    rep.row("peer: idle bare `python -I -S`", f"PSS {mb(peer['Pss'])}", f"RSS {mb(peer['Rss'])}, USS {mb(peer['Uss'])}")
    rep.row("shared: zygote + helpers (1 instance)", f"PSS {mb(zyg['Pss'])}", f"{len(zygote_etc)} process(es)")
    rep.row(f"shared: zygote + helpers ({n_inst} instances)", f"PSS {mb(zygN['Pss'])}", "")
    rep.row("pool sandboxes (not instances)", f"PSS {mb(pool1['Pss'])}", f"{len(tree1['pool'])} sandbox(es) at the 1-instance point; {len(poolN)} at N")
    rep.row("mist server process", f"PSS {mb(server_pss['Pss'])}", "gateway + control plane + worker front")
    rep.check("PSS of one idle instance, MB", per1 / KB, "<= 6", per1 / KB <= 6)
    rep.check(f"PSS of {n_inst} instances / {n_inst}, MB", perN / KB, "<= 6", perN / KB <= 6)
    if n_inst != args.N:
        rep.notes.append(f"found {n_inst} instances after invoking {args.N} functions (expected {args.N})")
    rep.print(args.json)


if __name__ == "__main__":
    main()
