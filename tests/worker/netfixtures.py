"""A "remote" host for egress tests: a network namespace of its own behind a veth pair, routed
by the host like any destination outside, with TCP servers that answer who connected."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field

SERVER = """
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(64)
    while True:
        c, a = s.accept()
        c.sendall(f"hello {a[0]}".encode()); c.close()
for port in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(port),), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""


@dataclass
class Remote:
    name: str
    host_ip: str  # the host's end
    ip: str  # the remote's address, where its servers listen
    ports: tuple[int, ...]
    procs: list[subprocess.Popen] = field(default_factory=list)

    def stop(self) -> None:
        for p in self.procs:
            if p.stdin:
                p.stdin.close()
            p.kill()
            p.wait()
            if p.stdout:
                p.stdout.close()
        subprocess.run(["ip", "link", "del", self.name], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


def start_remote(ports: tuple[int, ...] = (7001, 7002), octet: int | None = None) -> Remote:
    """A namespace at 198.18.N.2 (N random) reachable from the host through 198.18.N.1."""
    n = octet if octet is not None else secrets.randbelow(250) + 1
    name = f"mistrt{secrets.token_hex(3)}"
    remote = Remote(name, f"198.18.{n}.1", f"198.18.{n}.2", ports)
    batch = (f"netns add {name}\nlink add {name} type veth peer name eth0 netns {name}\n"
             f"addr add {remote.host_ip}/30 dev {name}\nlink set {name} up\n")
    subprocess.run(["ip", "-batch", "-"], input=batch.encode(), check=True)
    with open(f"/proc/sys/net/ipv4/conf/{name}/forwarding", "w") as f:
        f.write("1")
    inside = (f"addr add {remote.ip}/30 dev eth0\nlink set eth0 up\nlink set lo up\n"
              f"route add default via {remote.host_ip}\n")
    subprocess.run(["ip", "-n", name, "-batch", "-"], input=inside.encode(), check=True)
    proc = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-I", "-S", "-c", SERVER, *map(str, ports)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    remote.procs.append(proc)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    time.sleep(0.05)
    return remote
