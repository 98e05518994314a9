"""How the CLI finds a local `mist up`'s admin key, and that killed servers' entries go away."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mist.tenancy import discovery
from mist.tenancy.service import ADMIN_KEY_FILE


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MIST_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("MIST_API_KEY", raising=False)
    return tmp_path / "config"


def server_dir(tmp_path: Path, name: str, key: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / ADMIN_KEY_FILE).write_text(key + "\n")
    return d


def test_the_cli_reads_the_admin_key_of_the_server_registered_at_the_url(tmp_path: Path) -> None:
    d = server_dir(tmp_path, "a", "mist_admin_a")
    discovery.register("http://127.0.0.1:8080", d)
    assert discovery.api_key_for("http://localhost:8080") == "mist_admin_a"
    assert discovery.api_key_for("http://127.0.0.1:9999") is None
    discovery.unregister("http://127.0.0.1:8080", d)
    assert discovery.api_key_for("http://127.0.0.1:8080") is None


def test_entries_of_killed_servers_and_deleted_data_dirs_are_removed_at_the_next_start(
        tmp_path: Path, config_dir: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    servers = config_dir / "servers"
    servers.mkdir(parents=True)
    kept = server_dir(tmp_path, "kept", "k")
    (servers / "127.0.0.1_1001").write_text(f"{server_dir(tmp_path, 'killed', 'x')}\n{dead.pid}\n")
    (servers / "127.0.0.1_1002").write_text(f"{tmp_path / 'deleted'}\n")  # the old format: no pid
    (servers / "127.0.0.1_1003").write_text(f"{kept}\n1\n")  # pid 1 lives
    discovery.register("http://127.0.0.1:8080", server_dir(tmp_path, "new", "n"))
    assert sorted(p.name for p in servers.iterdir()) == ["127.0.0.1_1003", "127.0.0.1_8080"]
    assert discovery.api_key_for("http://127.0.0.1:1003") == "k"


def test_an_empty_or_unreadable_entry_gives_no_key_instead_of_an_error(config_dir: Path) -> None:
    (config_dir / "servers").mkdir(parents=True)
    (config_dir / "servers" / "127.0.0.1_8080").write_text("")
    assert discovery.api_key_for("http://127.0.0.1:8080") is None
