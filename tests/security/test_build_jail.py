"""A package's own build code (an sdist's setup.py) runs when a requirements.txt is installed:
it must not get mist's host privileges. A hostile sdist tries to read mist's data dir and keys,
reach the host's services, write outside its build, and see mist's environment; it reports
what it got into the installed module, which the deployed function returns."""

from __future__ import annotations

import io
import json
import secrets
import shutil
import tarfile
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import start_server

pytestmark = [pytest.mark.sandbox, pytest.mark.network]

SETUP = '''
import json, os, socket
from setuptools import setup
report = {"uid": os.getuid(), "env": sorted(os.environ)}
def attempt(name, fn):
    try:
        report[name] = "ok: " + str(fn())[:80]
    except Exception as exc:
        report[name] = "blocked: " + type(exc).__name__
DATA = %(data)r
for name in ("admin.key", "mist.db", "secrets.key"):
    attempt("read " + name, lambda n=name: open(os.path.join(DATA, n), "rb").read(8))
attempt("list data dir", lambda: os.listdir(DATA))
attempt("write data dir", lambda: open(os.path.join(DATA, "pwned"), "w").write("x"))
attempt("list mist config", lambda: os.listdir(os.path.expanduser("~root/.config/mist")))
attempt("read /etc/shadow", lambda: open("/etc/shadow").read(8))
def connect(host, port):
    socket.create_connection((host, port), timeout=2).close()
    return "connected"
for port in (%(port)d, 5432, 6379):
    attempt("connect 127.0.0.1:%%d" %% port, lambda p=port: connect("127.0.0.1", p))
with open("evil_report.py", "w") as f:
    f.write("REPORT = " + repr(report) + chr(10))
setup(name="evil", version="0.1", py_modules=["evil_report"])
'''
HANDLER = "import evil_report\n\ndef handler(event, context):\n    return evil_report.REPORT\n"


def test_a_hostile_sdist_builds_as_nobody_in_particular_and_reaches_nothing_of_mists(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("jail") / "data")
    where = Path("/var/tmp") / f"mist-evil-{secrets.token_hex(4)}"  # outside /tmp: the jail replaces /tmp
    try:
        where.mkdir(mode=0o755)
        source = SETUP % {"data": str(server.data_dir.resolve()), "port": urlsplit(server.url).port}
        sdist = where / "evil-0.1.tar.gz"
        with tarfile.open(sdist, "w:gz") as tar:
            data = source.encode()
            info = tarfile.TarInfo("evil-0.1/setup.py")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        sdist.chmod(0o644)
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as z:
            z.writestr("main.py", HANDLER)
            z.writestr("requirements.txt", f"{sdist}\n")
        with server.client() as c:
            r = c.post("/v1/functions/evil/versions", files={"code": ("c.zip", code.getvalue(), "application/zip")},
                       data={"config": "{}"}, timeout=600)
            assert r.status_code == 201, r.text
            report = c.post("/v1/functions/evil/invocations", json={}).json()
        assert report["uid"] != 0
        assert not [k for k in report["env"] if k.startswith("MIST_")]
        got = {k: v for k, v in report.items() if k not in ("uid", "env")}
        assert got and all(v.startswith("blocked") for v in got.values()), json.dumps(got, indent=1)
        assert not (server.data_dir / "pwned").exists()
        with server.client() as c:  # and mist serves on
            assert c.get("/v1/functions").status_code == 200
    finally:
        server.stop()
        shutil.rmtree(where, ignore_errors=True)
