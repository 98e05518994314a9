"""Egress for sandboxes: network namespaces with a veth pair each, filtered by nftables.

    net = SandboxNetwork(layout, deny=..., prewarm=2)
    slot = await net.acquire()       a prepared namespace (eth0 up, routed, nothing allowed yet);
                                     the sandbox's intermediate enters it (spawn "netns")
    net.apply(slot, rules)           the function's egress rules: networks into its allow set,
                                     host names to mist's resolver (sandboxdns.py)
    net.release(slot)                the sandbox is gone: its namespace, veth, chain and set too
    await net.stop()                 everything this instance made, removed

Nothing is done until the first sandbox with egress is needed (`acquire` starts it): the
instance's nft table, the resolver, IPv4 forwarding for the veths (and for the uplinks, with a
guard table, see `netrules.forward_guard`), then `prewarm` namespaces kept ready so a cold
start never waits for one. Rules: `netrules.py`; the design and its limits: docs/network.md.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field

from mist.errors import SandboxFailed
from mist.worker import netrules
from mist.worker.nft import Nft
from mist.worker.sandboxdns import Grant, Resolve, SandboxResolver, host_resolve

log = logging.getLogger("mist.worker")
NETNS_DIR = "/run/netns"


@dataclass
class Slot:
    index: int
    address: str
    netns: str  # path of the namespace (a bind mount made by `ip netns add`)
    generation: int
    rules: tuple[netrules.Rule, ...] = ()
    allowed: set[str] = field(default_factory=set)  # "address|ports" added for host names


@dataclass(frozen=True)
class NetworkStatistics:
    started: bool
    network: str
    ready: int  # namespaces prepared ahead
    in_use: int
    prepared: int  # namespaces prepared since start
    last_prepare_ms: float
    dns_answered: int
    dns_refused: int


class SandboxNetwork:
    def __init__(self, layout: netrules.Layout, *, deny: tuple[str, ...] = (), prewarm: int = 2,
                 resolve: Resolve = host_resolve) -> None:
        self.layout = layout
        self._deny = deny
        self._prewarm = prewarm
        self._resolve = resolve
        self._nft: Nft | None = None
        self._dns: SandboxResolver | None = None
        self._start_lock = asyncio.Lock()
        self._started = False
        self._free = collections.deque(range(layout.slots))  # round robin: a freed slot is reused last
        self._ready: collections.deque[Slot] = collections.deque()
        self._in_use: dict[str, Slot] = {}  # address -> slot
        self._generation = int(time.time()) & 0x3FFFFFFF  # ct marks of this run differ from the last
        self._refill: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._prepared = 0
        self._last_prepare_ms = 0.0

    # -- the life of a slot ---------------------------------------------------------------------
    async def acquire(self) -> Slot:
        await self._ensure_started()
        slot = self._ready.popleft() if self._ready else await self._prepare()
        self._in_use[slot.address] = slot
        self._schedule_refill()
        return slot

    def apply(self, slot: Slot, rules: tuple[str, ...]) -> None:
        """Allow what the function's rules allow (networks at once, host names as resolved)."""
        assert self._nft is not None
        slot.rules = tuple(netrules.parse(r) for r in rules)
        slot.allowed.clear()
        self._nft.run(netrules.allow_elements(self.layout, slot.index, netrules.static_targets(list(slot.rules))))

    def release(self, slot: Slot) -> None:
        """The sandbox in `slot` is gone: forget its rules now, tear the slot down in the background."""
        if self._in_use.pop(slot.address, None) is None:
            return
        slot.rules = ()
        self._track(self._teardown(slot))

    # -- the resolver's view --------------------------------------------------------------------
    def _grant(self, address: str) -> Grant | None:
        slot = self._in_use.get(address)
        if slot is None or not slot.rules:
            return None

        def ports(name: str) -> list[tuple[int, int]]:
            return netrules.host_ports(list(slot.rules), name)

        def allow(addresses: list[str], port_ranges: list[tuple[int, int]]) -> None:
            if self._in_use.get(address) is not slot or self._nft is None:
                return
            key = {f"{a}|{p}" for a in addresses for p in port_ranges}
            new = key - slot.allowed
            if not new:
                return
            targets = [(a, p) for a in addresses for p in port_ranges if f"{a}|{p}" in new]
            self._nft.run(netrules.allow_elements(self.layout, slot.index, targets))
            slot.allowed.update(new)

        return Grant(ports, allow)

    # -- starting and stopping ------------------------------------------------------------------
    async def _ensure_started(self) -> None:
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            if shutil.which("ip") is None:
                raise SandboxFailed("egress needs iproute2's `ip` command (apt-get install iproute2)")
            try:
                self._nft = Nft()
            except OSError as exc:
                raise SandboxFailed(f"egress needs nftables: {exc}") from None
            await self.reclaim()
            await self._check_network_is_free()
            try:
                self._nft.run(netrules.base_ruleset(self.layout, self._deny))
                await self._enable_forwarding()
                self._dns = await SandboxResolver.listen(self.layout.gateway, self._grant, self._resolve)
            except OSError as exc:
                raise SandboxFailed(f"could not set up the sandbox network {self.layout.network}: {exc}") from None
            self._started = True
            log.info("sandbox network %s ready (table inet %s, resolver %s:53)", self.layout.network,
                     self.layout.table, self.layout.gateway)

    async def _check_network_is_free(self) -> None:
        out = await _run(["ip", "-j", "-4", "addr", "show"])
        for link in json.loads(out or "[]"):
            name = str(link.get("ifname", ""))
            if name.startswith(self.layout.prefix):
                continue
            for info in link.get("addr_info") or ():
                local = info.get("local")
                if local and _in(local, self.layout.network):
                    raise SandboxFailed(
                        f"the sandbox network {self.layout.network} is in use on this host ({local} on {name}); "
                        "choose another with `mist up --sandbox-network CIDR`")

    async def _enable_forwarding(self) -> None:
        """Forwarding is needed on the veths (set per slot) and on the uplinks, for the replies.
        An uplink that did not forward gets forwarding on, guarded so that only mist's traffic
        is forwarded."""
        assert self._nft is not None
        out = await _run(["ip", "-j", "-4", "route", "show", "default"])
        uplinks = sorted({str(r["dev"]) for r in json.loads(out or "[]") if r.get("dev")})
        off = [u for u in uplinks if _sysctl(f"net/ipv4/conf/{u}/forwarding") == "0"]
        if off:
            self._nft.run(netrules.forward_guard(off))
            for u in off:
                _set_sysctl(f"net/ipv4/conf/{u}/forwarding", "1")

    async def reclaim(self) -> None:
        """Remove what a previous run of this instance left (it was killed): its namespaces,
        veths and table."""
        names = [n for n in _listdir(NETNS_DIR) if n.startswith(self.layout.prefix)]
        links = [n for n in _listdir("/sys/class/net") if n.startswith(self.layout.prefix)]
        if links:
            await _run(["ip", "-force", "-batch", "-"], "".join(f"link del {n}\n" for n in links), check=False)
        if names:
            await _run(["ip", "-force", "-batch", "-"], "".join(f"netns del {n}\n" for n in names), check=False)
        if self._nft is not None:
            with contextlib.suppress(OSError):
                self._nft.run(f"table inet {self.layout.table}\ndelete table inet {self.layout.table}\n")

    async def stop(self) -> None:
        if self._refill is not None:
            self._refill.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._refill
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if not self._started:
            return
        if self._dns is not None:
            self._dns.close()
        slots = list(self._ready) + list(self._in_use.values())
        self._ready.clear()
        self._in_use.clear()
        await asyncio.gather(*(self._teardown(s, table=False) for s in slots), return_exceptions=True)
        await self.reclaim()
        assert self._nft is not None
        self._nft.close()
        self._nft = None
        self._started = False

    def statistics(self) -> NetworkStatistics:
        dns = self._dns
        return NetworkStatistics(
            started=self._started, network=str(self.layout.network), ready=len(self._ready),
            in_use=len(self._in_use), prepared=self._prepared, last_prepare_ms=round(self._last_prepare_ms, 3),
            dns_answered=dns.answered if dns else 0, dns_refused=dns.refused if dns else 0)

    # -- preparing and tearing down namespaces --------------------------------------------------
    async def _prepare(self) -> Slot:
        if not self._free:
            raise SandboxFailed(f"all {self.layout.slots} addresses of the sandbox network {self.layout.network} are in use")
        index = self._free.popleft()
        self._generation = (self._generation + 1) & 0x7FFFFFFF
        slot = Slot(index, self.layout.address(index), f"{NETNS_DIR}/{self.layout.netns(index)}", self._generation)
        t0 = time.perf_counter()
        try:
            await _run(["ip", "-batch", "-"], netrules.host_setup(self.layout, index))
            iface = self.layout.iface(index)
            _set_sysctl(f"net/ipv4/conf/{iface}/forwarding", "1")
            _set_sysctl(f"net/ipv4/conf/{iface}/rp_filter", "1")
            await _run(["ip", "-n", self.layout.netns(index), "-batch", "-"], netrules.inside_setup(self.layout, index))
            assert self._nft is not None
            self._nft.run(netrules.add_slot(self.layout, index, slot.generation))
        except (OSError, SandboxFailed) as exc:
            await self._teardown(slot)
            raise SandboxFailed(f"could not prepare a network namespace for a sandbox: {exc}") from None
        self._prepared += 1
        self._last_prepare_ms = (time.perf_counter() - t0) * 1000
        return slot

    async def _teardown(self, slot: Slot, table: bool = True) -> None:
        iface, ns = self.layout.iface(slot.index), self.layout.netns(slot.index)
        if table and self._nft is not None:
            with contextlib.suppress(OSError):
                self._nft.run(netrules.remove_slot(self.layout, slot.index))
        await _run(["ip", "-force", "-batch", "-"], f"link del {iface}\nnetns del {ns}\n", check=False)
        self._free.append(slot.index)

    def _schedule_refill(self) -> None:
        if self._prewarm and (self._refill is None or self._refill.done()):
            self._refill = asyncio.get_running_loop().create_task(self._fill(), name="mist-network-prewarm")

    async def _fill(self) -> None:
        while self._started and len(self._ready) < self._prewarm:
            try:
                slot = await self._prepare()
            except SandboxFailed as exc:
                log.error("preparing a sandbox network namespace failed: %s", exc)
                return
            self._ready.append(slot)

    def _track(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _run(cmd: list[str], stdin: str | None = None, *, check: bool = True) -> str:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if check and proc.returncode != 0:
        raise OSError(f"{' '.join(cmd)} failed: {err.decode(errors='replace').strip()}")
    return out.decode()


def _sysctl(key: str) -> str:
    try:
        with open(f"/proc/sys/{key}") as f:
            return f.read().strip()
    except OSError:
        return ""


def _set_sysctl(key: str, value: str) -> None:
    with open(f"/proc/sys/{key}", "w") as f:
        f.write(value)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _in(address: str, network: ipaddress.IPv4Network) -> bool:
    return ipaddress.IPv4Address(address) in network
