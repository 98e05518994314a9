"""How the CLI finds its API key without being told: the environment, its config file, or, for
a `mist up` on this machine, that server's DATA_DIR/admin.key.

A running `mist up` registers its URL, data dir and pid in `CONFIG_DIR/servers/HOST_PORT` (and
removes the entry when it stops; entries of servers that were killed are removed by the next
`mist up` to register), so `mist` pointed at that URL (MIST_URL) reads the admin key
from that data dir, if the user may read it (mode 0600: the user who ran mist up, or root).

Order: MIST_API_KEY; the config file (`CONFIG_DIR/config.json`, written by `mist login`) when
its URL is the one in use; the local server's admin key. CONFIG_DIR is $MIST_CONFIG_DIR, else
$XDG_CONFIG_HOME/mist, else ~/.config/mist.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit

from mist.tenancy.service import ADMIN_KEY_FILE

_LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"}


def config_dir() -> Path:
    if os.environ.get("MIST_CONFIG_DIR"):
        return Path(os.environ["MIST_CONFIG_DIR"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mist"


def _entry(url: str) -> Path | None:
    parts = urlsplit(url)
    if not parts.hostname or parts.port is None:
        return None
    host = "127.0.0.1" if parts.hostname in ("localhost", "0.0.0.0") else parts.hostname
    return config_dir() / "servers" / f"{host.replace(':', '_')}_{parts.port}"


def register(url: str, data_dir: Path) -> None:
    entry = _entry(url)
    if entry is None:
        return
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        _prune(entry.parent)
        tmp = entry.with_name(entry.name + f".{os.getpid()}")
        tmp.write_text(f"{data_dir.resolve()}\n{os.getpid()}\n")
        os.replace(tmp, entry)
    except OSError:
        pass  # not fatal: the key can still be given by MIST_API_KEY or `mist login`


def _prune(servers: Path) -> None:
    """Remove the entries of servers that are gone: their process died (killed, so never
    unregistered) or their data dir was deleted."""
    for entry in servers.iterdir():
        try:
            lines = entry.read_text().splitlines()
            if entry.name.rpartition(".")[2].isdigit() or not lines:
                continue  # another process's entry being written, or unreadable: not ours to judge
            gone = not Path(lines[0]).is_dir()
            if not gone and len(lines) > 1 and lines[1].isdigit():
                gone = not _alive(int(lines[1]))
            if gone:
                entry.unlink()
        except OSError:
            continue


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def unregister(url: str, data_dir: Path) -> None:
    entry = _entry(url)
    try:
        if entry is not None and entry.read_text().splitlines()[:1] == [str(data_dir.resolve())]:
            entry.unlink()
    except OSError:
        pass


def local_admin_key(url: str) -> str | None:
    """The admin key of the `mist up` registered at `url` on this machine, if readable."""
    parts = urlsplit(url)
    if parts.hostname not in _LOOPBACK:
        return None
    entry = _entry(url)
    try:
        lines = entry.read_text().splitlines() if entry is not None else []
        data_dir = Path(lines[0].strip()) if lines and lines[0].strip() else None
        return (data_dir / ADMIN_KEY_FILE).read_text().strip() if data_dir else None
    except OSError:
        return None


def read_config() -> dict[str, str]:
    try:
        data = json.loads((config_dir() / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def write_config(url: str, api_key: str) -> Path:
    path = config_dir() / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name("config.json.tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "api_key": api_key}, f)
    os.replace(path.with_name("config.json.tmp"), path)
    return path


def api_key_for(url: str) -> str | None:
    if os.environ.get("MIST_API_KEY"):
        return os.environ["MIST_API_KEY"].strip()
    config = read_config()
    if config.get("api_key") and config.get("url", "").rstrip("/") == url.rstrip("/"):
        return config["api_key"]
    return local_admin_key(url)
