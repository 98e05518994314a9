"""Tar extraction of layers and code passed between mist's processes (`packaging.extract_tar`):
Python's `data` filter where the interpreter has it (3.11.4+), mist's own checks where it does not
(Debian 12's 3.11.2). Both run the same table: what they extract, and what they refuse without
writing anything outside the destination."""

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from mist.control import packaging


def _native(tar: tarfile.TarFile, dest: Path) -> None:
    tar.extractall(dest, filter="data")


EXTRACTORS = [
    pytest.param(packaging.extract_tar_checked, id="checked"),
    pytest.param(_native, id="python-filter", marks=pytest.mark.skipif(
        not hasattr(tarfile, "data_filter"), reason="this Python has no tar extraction filter (< 3.11.4)")),
]


def _member(name: str, kind: bytes = tarfile.REGTYPE, *, data: bytes = b"", mode: int = 0o644,
            link: str = "", uid: int = 0) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.uid = kind, mode, link, uid
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, (data if kind == tarfile.REGTYPE else None)


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> tarfile.TarFile:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return tarfile.open(fileobj=buf, mode="r")


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "dest"
    d.mkdir()
    return d


def _outside(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir() if p != dest)


@pytest.mark.parametrize("extract", EXTRACTORS)
def test_a_layer_tree_extracts_with_safe_modes_and_the_extractors_owner(extract, dest):
    tar = _tar(
        _member("python", tarfile.DIRTYPE, mode=0o777),
        _member("python/pkg", tarfile.DIRTYPE, mode=0o755),
        _member("python/pkg/__init__.py", data=b"x = 1\n", mode=0o666, uid=12345),
        _member("python/pkg/tool", data=b"#!/bin/sh\n", mode=0o4775),  # setuid, group-writable
        _member("python/pkg/plain", data=b"data", mode=0o011),  # x for others only
        _member("python/pkg/alias.py", tarfile.SYMTYPE, link="__init__.py"),
        _member("python/pkg/same.py", tarfile.LNKTYPE, link="python/pkg/__init__.py"),
        _member("/python/abs.txt", data=b"leading slash dropped"),
    )
    extract(tar, dest)
    pkg = dest / "python" / "pkg"
    assert (pkg / "__init__.py").read_bytes() == b"x = 1\n"
    assert (pkg / "alias.py").is_symlink() and (pkg / "alias.py").read_bytes() == b"x = 1\n"
    assert (pkg / "same.py").read_bytes() == b"x = 1\n"
    assert (dest / "python" / "abs.txt").read_bytes() == b"leading slash dropped"
    assert stat.S_IMODE((pkg / "__init__.py").stat().st_mode) == 0o644  # no group/other write
    assert stat.S_IMODE((pkg / "tool").stat().st_mode) == 0o755  # no setuid, no group write
    assert stat.S_IMODE((pkg / "plain").stat().st_mode) == 0o600  # not executable by its owner: by nobody
    assert (pkg / "__init__.py").stat().st_uid == os.geteuid()  # not the archive's uid 12345
    assert _outside(dest) == []


REFUSED = {
    "dot-dot name": [_member("../evil", data=b"x")],
    "dot-dot inside a name": [_member("python/../../evil", data=b"x")],
    "absolute symlink": [_member("python", tarfile.SYMTYPE, link="/etc")],
    "symlink up": [_member("up", tarfile.SYMTYPE, link="..")],
    "symlink escaping from a subdirectory": [_member("a", tarfile.DIRTYPE), _member("a/up", tarfile.SYMTYPE, link="../..")],
    "a name through a link to the top": [_member("here", tarfile.SYMTYPE, link="."),
                                         _member("here/../evil", data=b"x")],
    "a link through an earlier link": [_member("here", tarfile.SYMTYPE, link="."),
                                       _member("here/up", tarfile.SYMTYPE, link="../evil")],
    "hard link outside": [_member("hard", tarfile.LNKTYPE, link="../evil")],
    "character device": [_member("tty", tarfile.CHRTYPE)],
    "fifo": [_member("pipe", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("extract", EXTRACTORS)
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_an_unsafe_member_is_refused_and_nothing_lands_outside(extract, case, dest):
    (dest.parent / "evil").write_bytes(b"the host's file")  # what an escaping hard link would reach
    with pytest.raises(tarfile.TarError):
        extract(_tar(*REFUSED[case]), dest)
    assert _outside(dest) == ["evil"]
    assert (dest.parent / "evil").read_bytes() == b"the host's file"


def test_extract_tar_uses_pythons_filter_when_the_interpreter_has_it(dest, monkeypatch):
    used: list[str] = []
    monkeypatch.setattr(packaging, "extract_tar_checked", lambda tar, d: used.append("checked"))
    packaging.extract_tar(_tar(_member("f", data=b"x")), dest)
    assert used == ([] if hasattr(tarfile, "data_filter") else ["checked"])
