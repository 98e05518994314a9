"""The jail pip runs in when it installs a function's requirements.txt.

Installing a package may run its own code (an sdist's setup.py, a build backend): code chosen by
whoever deployed the function. So pip never runs as root with mist's environment. It runs:

- as an unprivileged uid of its own (`WorkerConfig.build_uid`), no groups, NO_NEW_PRIVS;
- in a mount namespace of its own where /tmp is a fresh tmpfs (other tenants' uploads, test
  data dirs and sockets under the host's /tmp are not there), the install's work directory is
  the only part of mist's data dir it can reach (at /tmp/build), and directories it could not
  traverse anyway (root's home, mode 0700) are replaced by an empty tmpfs in which only the
  interpreter's tree is bound back, read-only (so ~/.config/mist, keys and the like are gone);
- with a minimal environment (PATH, HOME in the work dir, pip's own PIP_* settings, proxies):
  no MIST_* variable, no secrets key;
- behind nftables output rules for its uid (`network_rules`): it may reach the package index
  and the configured DNS servers, never the host's own addresses (mist's API, PostgreSQL, Redis
  on 127.0.0.1), link-local addresses (cloud metadata), the sandboxes' network, nor the
  operator's `--egress-deny` networks.

mist's data dir itself is mode 0700 (server.py), so the build uid could not read mist.db or a
key even outside the jail.

`jail_argv(...)` is the command LayerStore runs; `main()` is what that command does: it is
executed by the sandboxes' interpreter with -I -S, needs only the stdlib and
mist/worker/syscalls.py, sets the jail up as root, drops privileges and execs pip.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = str(Path(__file__).resolve().parents[2])
JAIL_WORK = "/tmp/build"  # where the work directory appears inside the jail

BOOTSTRAP = """\
import sys, types
repo = sys.argv[1]
sys.path.insert(0, repo)
for name, path in (("mist", repo + "/mist"), ("mist.control", repo + "/mist/control"),
                   ("mist.worker", repo + "/mist/worker")):
    module = types.ModuleType(name)
    module.__path__ = [path]
    sys.modules[name] = module
from mist.control import buildjail
buildjail.main(sys.argv[2:])
"""

PASSED_ENV = ("LANG", "LC_ALL", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
              "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")


def jail_env(environ: dict[str, str]) -> dict[str, str]:
    """The environment pip gets: a minimal one, pip's own settings and proxies kept."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": f"{JAIL_WORK}/home", "TMPDIR": "/tmp",
           "PYTHONUNBUFFERED": "1", "PIP_NO_COLOR": "1", "PIP_NO_INPUT": "1"}
    for key, value in environ.items():
        if (key.startswith("PIP_") or key in PASSED_ENV) and "\x00" not in value:
            env.setdefault(key, value)
    return env


def exposed_paths(python: str) -> list[str]:
    """What pip needs from the host that may sit below a directory the build uid cannot
    traverse: the interpreter's installation (a venv's base too)."""
    paths = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}
    real = os.path.realpath(python)
    paths.add(str(Path(real).parent.parent))
    return sorted(paths)


def jail_argv(python: str, work: Path, uid: int, pip_args: Sequence[str]) -> list[str]:
    expose: list[str] = []
    for path in exposed_paths(python):
        expose += ["--expose", path]
    return [os.path.realpath(python), "-I", "-S", "-c", BOOTSTRAP, REPO_ROOT,
            "--work", str(work), "--uid", str(uid), *expose, "--", python, "-m", "pip", *pip_args]


def blocked_ancestor(path: str) -> str | None:
    """The highest directory above `path` that others may not traverse (no o+x), if any."""
    parts = Path(path).parts
    for i in range(2, len(parts)):
        candidate = str(Path(*parts[:i]))
        try:
            if not os.stat(candidate).st_mode & stat.S_IXOTH:
                return candidate
        except OSError:
            return None
    return None


def network_rules(table: str, uid: int, nameservers: Sequence[str], deny: Sequence[str]) -> str:
    """nftables: what the build uid may not reach (see the module docstring).

    >>> print(network_rules("mist_build_t", 70000, ["10.255.255.53"], ["10.0.0.0/8"]).splitlines()[5])
        meta skuid != 70000 accept
    """
    v4 = [ns for ns in nameservers if ipaddress.ip_address(ns).version == 4]
    v6 = [ns for ns in nameservers if ipaddress.ip_address(ns).version == 6]
    deny4 = ["169.254.0.0/16", "100.64.0.0/10", *(d for d in deny if ipaddress.ip_network(d).version == 4)]
    lines = [
        f"table inet {table}",
        f"delete table inet {table}",
        f"table inet {table} {{",
        "  chain output {",
        "    type filter hook output priority 0; policy accept;",
        f"    meta skuid != {uid} accept",
    ]
    for family, servers in (("ip", v4), ("ip6", v6)):
        if servers:
            lines.append(f"    meta l4proto {{ tcp, udp }} th dport 53 {family} daddr {{ {', '.join(servers)} }} accept")
    lines += [
        '    oifname "lo" drop',
        "    fib daddr type local drop",
        f"    ip daddr {{ {', '.join(deny4)} }} drop",
        "    ip6 daddr fe80::/10 drop",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def nameservers(resolv_conf: str = "/etc/resolv.conf") -> list[str]:
    out = []
    try:
        for line in Path(resolv_conf).read_text().splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0] == "nameserver":
                try:
                    out.append(str(ipaddress.ip_address(fields[1].split("%")[0])))
                except ValueError:
                    continue
    except OSError:
        pass
    return out


# -- in the jail's process (root until the exec) ---------------------------------------------------

def main(argv: list[str]) -> None:
    from mist.worker import syscalls as sc

    split = argv.index("--")
    opts, command = argv[:split], argv[split + 1:]
    work = opts[opts.index("--work") + 1]
    uid = int(opts[opts.index("--uid") + 1])
    expose = [opts[i + 1] for i, a in enumerate(opts) if a == "--expose"]

    sc.unshare(sc.CLONE_NEWNS)
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    covered: dict[str, list[tuple[int, str]]] = {}
    for path in expose:
        top = blocked_ancestor(path)
        if top is not None:
            covered.setdefault(top, []).append((sc.clone_tree_readonly(path), path))
    for top, trees in covered.items():  # an empty tmpfs over it, then only what pip needs
        sc.mount("tmpfs", top, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=0755,size=1m")
        for fd, path in trees:
            os.makedirs(path, exist_ok=True)
            sc.move_mount_to(fd, path)
            os.close(fd)
    work_tree = sc.clone_tree_readonly(work, writable=True)  # detached before /tmp is covered (it may be there)
    sc.mount("tmpfs", "/tmp", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=1777")
    os.makedirs(JAIL_WORK)
    sc.move_mount_to(work_tree, JAIL_WORK)
    os.close(work_tree)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    os.chdir(JAIL_WORK)
    os.execve(command[0], command, jail_env(dict(os.environ)))
