import hashlib
import io
import os
import stat
import struct
import warnings
import zipfile
from pathlib import Path

import pytest

from mist.control import packaging
from mist.errors import DeployRejected, InvalidRequest

# -- helpers -----------------------------------------------------------------------------------


def make_zip(entries: list[tuple[str, bytes] | tuple[str, bytes, int]]) -> bytes:
    """A zip of (name, content[, unix mode]) entries, written as given (no sanitising)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names, which we want here
        with zipfile.ZipFile(buf, "w") as zf:
            for name, content, *mode in entries:
                info = zipfile.ZipInfo(name)
                info.external_attr = (mode[0] if mode else 0o100644) << 16
                zf.writestr(info, content)
    return buf.getvalue()


def link(name: str, target: str) -> tuple[str, bytes, int]:
    return (name, target.encode(), stat.S_IFLNK | 0o777)


def declare_size(data: bytes, size: int) -> bytes:
    """Rewrite every central-directory record's uncompressed size (what zipfile trusts)."""
    out = bytearray(data)
    at = out.find(b"PK\x01\x02")
    while at != -1:
        struct.pack_into("<I", out, at + 24, size)
        at = out.find(b"PK\x01\x02", at + 4)
    return bytes(out)


def write(tmp_path: Path, data: bytes, name: str = "code.zip") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


# -- validate_name -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "hello", "hello-world", "0day", "a-", "x" * 63])
def test_valid_names_are_returned(name):
    assert packaging.validate_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", "Hello", "a_b", "a.b", "a/b", "x" * 64, "héllo", "a b"])
def test_invalid_names_are_refused_with_the_rule(name):
    with pytest.raises(InvalidRequest, match="1 to 63 characters: lowercase letters, digits and '-'"):
        packaging.validate_name(name)


# -- validate_zip: what is refused -------------------------------------------------------------

MALICIOUS = [
    ("parent_dir", [("../evil.py", b"x")], "'../evil.py': has a '..' component"),
    ("parent_dir_deep", [("a/../../evil.py", b"x")], "'a/../../evil.py': has a '..' component"),
    ("parent_dir_backslash", [("..\\evil.py", b"x")], "has a '..' component"),
    ("absolute", [("/abs/evil.py", b"x")], "'/abs/evil.py': absolute path"),
    ("drive_letter", [("C:/evil.py", b"x")], "'C:/evil.py': drive letter"),
    ("drive_letter_backslash", [("C:\\evil.py", b"x")], "drive letter"),
    ("symlink_absolute", [link("passwd", "/etc/passwd")], "'passwd': symlink to '/etc/passwd', outside"),
    ("symlink_relative", [link("a/up", "../../etc")], "'a/up': symlink to '../../etc', outside"),
    ("symlink_loop", [link("a", "b"), link("b", "a")], "a loop"),
    ("symlink_to_parent_dir", [("d/x.py", b""), link("d/self", "..")], "contains it (a loop)"),
    ("symlink_dangling", [link("a", "missing.py")], "'a': symlink to 'missing.py', which is not in the zip"),
    ("duplicate", [("a.py", b"1"), ("a.py", b"2")], "'a.py': appears twice"),
    ("file_as_dir", [("a", b"1"), ("a/b.py", b"2")], "'a/b.py': inside 'a', which is a file"),
    ("write_through_symlink", [("real/x", b""), link("lib", "real"), ("lib/y", b"")], "which is a symlink"),
]


@pytest.mark.parametrize(("entries", "expected"), [c[1:] for c in MALICIOUS], ids=[c[0] for c in MALICIOUS])
def test_unsafe_entries_are_refused_and_named(tmp_path, entries, expected):
    path = write(tmp_path, make_zip([("main.py", b"def handler(e, c): pass\n"), *entries]))

    with pytest.raises(DeployRejected) as caught:
        packaging.validate_zip(path)

    assert expected in caught.value.message
    assert "Rebuild it from the function's directory" in caught.value.message
    assert expected in caught.value.detail


def test_a_nul_byte_in_a_name_is_refused(tmp_path):
    data = make_zip([("evilX.py", b"x")]).replace(b"evilX.py", b"evil\x00.py")

    with pytest.raises(DeployRejected, match="has a NUL byte in its name"):
        packaging.validate_zip(write(tmp_path, data))


def test_every_offending_entry_is_listed(tmp_path):
    path = write(tmp_path, make_zip([("../a", b""), ("/b", b""), ("ok.py", b"")]))

    with pytest.raises(DeployRejected) as caught:
        packaging.validate_zip(path)

    assert caught.value.message.startswith("the zip has 2 unsafe or invalid entries: '../a'")
    assert caught.value.detail.splitlines() == [
        "'../a': has a '..' component (would escape the code directory)", "'/b': absolute path",
    ]


def test_a_bomb_is_refused_by_its_declared_size(tmp_path):
    data = declare_size(make_zip([("a.bin", b"0" * 10), ("b.bin", b"0" * 10)]), 200 * 1024 * 1024)

    with pytest.raises(DeployRejected, match="would unpack to 400 MB, more than the limit of 250 MB"):
        packaging.validate_zip(write(tmp_path, data))


def test_headers_that_understate_sizes_do_not_let_more_bytes_out(tmp_path):
    path = write(tmp_path, declare_size(make_zip([("a.bin", b"0" * 5000)]), 10))

    with pytest.raises(DeployRejected, match="damaged at a.bin"):
        packaging.extract_zip(path, tmp_path / "code")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["code.zip"]


def test_extraction_stops_when_the_bytes_written_pass_the_limit(tmp_path, monkeypatch):
    path = write(tmp_path, make_zip([("a.bin", b"0" * 600), ("b.bin", b"0" * 600)]))
    with zipfile.ZipFile(path) as zf:
        entries = packaging._scan(zf)  # as validated under the real limit
    monkeypatch.setattr(packaging, "_scan", lambda zf: entries)
    monkeypatch.setattr(packaging, "MAX_UNPACKED_BYTES", 1000)

    with pytest.raises(DeployRejected, match="stopped at b.bin"):
        packaging.extract_zip(path, tmp_path / "code")
    assert not (tmp_path / "code").exists()


def test_too_many_files_are_refused(tmp_path):
    path = write(tmp_path, make_zip([(f"f{i}", b"") for i in range(packaging.MAX_FILES + 1)]))

    with pytest.raises(DeployRejected, match="holds 10,001 files, more than the limit of 10,000"):
        packaging.validate_zip(path)


def test_symlink_copies_count_toward_the_limits(tmp_path, monkeypatch):
    monkeypatch.setattr(packaging, "MAX_UNPACKED_BYTES", 1000)
    path = write(tmp_path, make_zip([("big", b"0" * 600), link("copy", "big")]))

    with pytest.raises(DeployRejected, match="would unpack to"):
        packaging.validate_zip(path)


@pytest.mark.parametrize("data", [b"", b"hello", b"PK\x03\x04broken"])
def test_something_that_is_not_a_zip_is_refused(tmp_path, data):
    with pytest.raises(DeployRejected, match="not a valid zip archive"):
        packaging.validate_zip(write(tmp_path, data))


# -- validate_zip / extract_zip: what is accepted -----------------------------------------------


def test_names_are_normalised(tmp_path):
    path = write(tmp_path, make_zip([("./main.py", b""), ("pkg\\mod.py", b""), ("pkg/", b"")]))

    entries = packaging.validate_zip(path)

    assert [(e.name, e.kind) for e in entries] == [("main.py", "file"), ("pkg/mod.py", "file"), ("pkg", "dir")]


def test_extract_writes_read_only_files_and_returns_the_zip_sha256(tmp_path):
    data = make_zip([("main.py", b"print(1)\n"), ("bin/tool", b"#!/bin/sh\n", 0o100755), ("pkg/__init__.py", b"")])
    path = write(tmp_path, data)

    stats = packaging.extract_zip(path, tmp_path / "code" / "x")

    root = tmp_path / "code" / "x"
    assert stats == packaging.ExtractStats(root, 3, 19, hashlib.sha256(data).hexdigest())
    assert (root / "main.py").read_bytes() == b"print(1)\n"
    modes = {p.relative_to(root).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}
    assert modes == {".": 0o555, "main.py": 0o444, "bin": 0o555, "bin/tool": 0o555, "pkg": 0o555, "pkg/__init__.py": 0o444,
                     # precompiled at deploy: a cold start imports bytecode (the sandbox cannot write it)
                     "__pycache__": 0o555, "__pycache__/main.cpython-311.pyc": 0o444,
                     "pkg/__pycache__": 0o555, "pkg/__pycache__/__init__.cpython-311.pyc": 0o444}
    assert [p.name for p in (tmp_path / "code").iterdir()] == ["x"]  # no temporary directory left


def test_symlinks_inside_the_root_are_extracted_as_copies(tmp_path):
    path = write(tmp_path, make_zip([
        ("lib/real.py", b"X = 1\n"), link("alias.py", "lib/real.py"), link("libcopy", "lib"), link("chain.py", "libcopy/real.py"),
    ]))

    packaging.extract_zip(path, tmp_path / "code")

    for name in ("alias.py", "libcopy/real.py", "chain.py"):
        p = tmp_path / "code" / name
        assert not p.is_symlink() and p.read_bytes() == b"X = 1\n"


def test_extract_keeps_a_directory_that_appeared_meanwhile(tmp_path):
    path = write(tmp_path, make_zip([("main.py", b"new")]))
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "main.py").write_text("existing")

    packaging.extract_zip(path, tmp_path / "code")

    assert (tmp_path / "code" / "main.py").read_text() == "existing"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["code", "code.zip"]


def test_extract_accepts_an_open_file(tmp_path):
    data = make_zip([("main.py", b"")])

    stats = packaging.extract_zip(io.BytesIO(data), tmp_path / "code")

    assert stats.sha256 == hashlib.sha256(data).hexdigest() == packaging.sha256_file(io.BytesIO(data))


def test_remove_tree_deletes_read_only_code(tmp_path):
    packaging.extract_zip(write(tmp_path, make_zip([("a/b.py", b"")])), tmp_path / "code")

    packaging.remove_tree(tmp_path / "code")

    assert not (tmp_path / "code").exists()


# -- zip_directory -----------------------------------------------------------------------------


def test_zipping_is_deterministic(tmp_path):
    files = {"main.py": "def handler(e, c): pass\n", "lib/util.py": "X = 1\n", "data/a.txt": "a"}
    one, two = tree(tmp_path / "one", files), tree(tmp_path / "two", dict(reversed(list(files.items()))))
    os.utime(two / "main.py", (1_000_000, 1_000_000))

    a, b = io.BytesIO(), io.BytesIO()
    stats_a, stats_b = packaging.zip_directory(one, a), packaging.zip_directory(two, b)

    assert a.getvalue() == b.getvalue()
    assert stats_a == stats_b == packaging.PackStats(3, 31, len(a.getvalue()), hashlib.sha256(a.getvalue()).hexdigest())
    with zipfile.ZipFile(a) as zf:
        assert zf.namelist() == ["data/a.txt", "lib/util.py", "main.py"]
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_zipping_skips_caches_vcs_and_environments(tmp_path):
    root = tree(tmp_path / "fn", {
        "main.py": "", "main.pyc": "", "__pycache__/main.cpython-311.pyc": "", ".git/HEAD": "", ".venv/bin/python": "",
        ".mist/db": "", "node_modules/x/index.js": "", "pkg/__pycache__/m.pyc": "", "pkg/m.py": "", ".env": "",
    })

    out = tmp_path / "fn.zip"
    packaging.zip_directory(root, out)

    assert zipfile.ZipFile(out).namelist() == [".env", "main.py", "pkg/m.py"]


def test_zipping_keeps_the_executable_bit(tmp_path):
    root = tree(tmp_path / "fn", {"main.py": "", "tool": ""})
    (root / "tool").chmod(0o700)

    out = tmp_path / "fn.zip"
    packaging.zip_directory(root, out)

    modes = {i.filename: i.external_attr >> 16 for i in zipfile.ZipFile(out).infolist()}
    assert modes == {"main.py": 0o100644, "tool": 0o100755}


def test_symlinks_inside_are_stored_as_their_content(tmp_path):
    root = tree(tmp_path / "fn", {"main.py": "A", "lib/real.py": "B"})
    os.symlink("lib/real.py", root / "alias.py")
    os.symlink("lib", root / "libcopy")
    os.symlink(".", root / "lib" / "self")  # a loop: not followed twice

    out = tmp_path / "fn.zip"
    packaging.zip_directory(root, out)

    with zipfile.ZipFile(out) as zf:
        assert zf.namelist() == ["alias.py", "lib/real.py", "libcopy/real.py", "main.py"]
        assert zf.read("alias.py") == b"B"


def test_symlinks_leaving_the_directory_are_refused_and_listed(tmp_path):
    root = tree(tmp_path / "fn", {"main.py": "", "../secret.txt": "s"})
    os.symlink("/etc/passwd", root / "passwd")
    os.symlink("../secret.txt", root / "secret")
    os.symlink("nowhere", root / "dangling")

    with pytest.raises(DeployRejected) as caught:
        packaging.zip_directory(root, io.BytesIO())

    assert caught.value.detail.splitlines() == [
        "dangling -> nowhere (points at nothing)",
        f"passwd -> /etc/passwd (points outside {root})",
        f"secret -> ../secret.txt (points outside {root})",
    ]
    assert "Copy what they point at into the directory, or remove them." in caught.value.message


def test_a_zip_path_is_validated_and_passed_through_unchanged(tmp_path):
    data = make_zip([("main.py", b"def handler(e, c): pass\n")])
    out = io.BytesIO()

    stats = packaging.zip_directory(write(tmp_path, data), out)

    assert out.getvalue() == data and stats.sha256 == hashlib.sha256(data).hexdigest() and stats.files == 1


def test_an_unsafe_zip_path_is_refused(tmp_path):
    with pytest.raises(DeployRejected, match="'../evil'"):
        packaging.zip_directory(write(tmp_path, make_zip([("../evil", b"")])), io.BytesIO())


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda p: p, InvalidRequest, "does not exist; pass the function's directory or a .zip of it"),
        (lambda p: (p.mkdir(), p)[1], DeployRejected, "has no files to deploy"),
        (lambda p: (p.write_text("x"), p)[1], DeployRejected, "is neither a directory nor a .zip"),
    ],
    ids=["missing", "empty", "plain_file"],
)
def test_paths_that_cannot_be_zipped(tmp_path, make, error, message):
    with pytest.raises(error, match=message):
        packaging.zip_directory(make(tmp_path / "fn"), io.BytesIO())


# -- check_code --------------------------------------------------------------------------------

ACCEPTED = [
    ("def", {"main.py": "def handler(event, context):\n    return 1\n"}, "main.handler"),
    ("async_def", {"main.py": "async def handler(event, context):\n    return 1\n"}, "main.handler"),
    ("assignment", {"main.py": "def make():\n    return print\nhandler = make()\n"}, "main.handler"),
    ("annotated", {"main.py": "from typing import Any\nhandler: Any = print\n"}, "main.handler"),
    ("import_from", {"main.py": "from impl import handler\n", "impl.py": "def handler(e, c): pass\n"}, "main.handler"),
    ("import_as", {"main.py": "import json as handler\n"}, "main.handler"),
    ("star_import", {"main.py": "from impl import *\n", "impl.py": "def handler(e, c): pass\n"}, "main.handler"),
    ("in_try", {"main.py": "try:\n    import fast\nexcept ImportError:\n    def handler(e, c): pass\n"}, "main.handler"),
    ("dotted_module", {"pkg/__init__.py": "", "pkg/api.py": "def handle(e, c): pass\n"}, "pkg.api.handle"),
    ("package_init", {"pkg/__init__.py": "def handle(e, c): pass\n"}, "pkg.handle"),
    ("syntax_warning", {"main.py": "def handler(e, c):\n    return '\\d'\n"}, "main.handler"),
]


@pytest.mark.parametrize(("files", "handler"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_runnable_code_passes(tmp_path, files, handler):
    packaging.check_code(tree(tmp_path, files), handler)


REFUSED = [
    ("syntax_error", {"main.py": "def handler(e, c): pass\n", "lib/util.py": "x = (\n"}, "main.handler",
     "syntax error in lib/util.py line 1: '(' was never closed; fix it and deploy again"),
    ("not_dotted", {"main.py": ""}, "main", "handler 'main' is not in module.function form"),
    ("empty_part", {"main.py": ""}, "main.", "is not in module.function form"),
    ("not_identifier", {"main.py": ""}, "my-mod.handler", "is not in module.function form"),
    ("missing_module", {"app.py": "", "lib/x.py": ""}, "main.handler",
     "no module 'main' in the code (looked for main.py and main/__init__.py); Python files found: app.py, lib/x.py. "
     "Name the handler with --handler module.function"),
    ("missing_function", {"main.py": "def handle(e, c): pass\n"}, "main.handler",
     "Handler 'handler' missing on module 'main' (main.py defines at its top level: handle)"),
    ("nested_def", {"main.py": "class A:\n    def handler(self): pass\n"}, "main.handler",
     "Handler 'handler' missing on module 'main'"),
    ("missing_in_package", {"pkg/__init__.py": "", "pkg/api.py": "X = 1\n"}, "pkg.api.handle",
     "Handler 'handle' missing on module 'pkg.api' (pkg/api.py defines at its top level: X)"),
]


@pytest.mark.parametrize(("files", "handler", "message"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_code_that_cannot_run_is_refused(tmp_path, files, handler, message):
    with pytest.raises(DeployRejected) as caught:
        packaging.check_code(tree(tmp_path, files), handler)

    assert message in caught.value.message


def test_a_syntax_error_carries_the_traceback(tmp_path):
    with pytest.raises(DeployRejected) as caught:
        packaging.check_code(tree(tmp_path, {"main.py": "def handler(e, c)\n    pass\n"}), "main.handler")

    assert caught.value.detail.startswith('  File "main.py", line 1\n    def handler(e, c)\n')
    assert caught.value.detail.rstrip().endswith("SyntaxError: expected ':'")


def test_skipped_directories_are_not_checked(tmp_path):
    files = {"main.py": "def handler(e, c): pass\n", ".venv/lib/bad.py": "x = (\n", "node_modules/bad.py": "("}

    packaging.check_code(tree(tmp_path, files), "main.handler")


# -- find_default_handler ----------------------------------------------------------------------

DEFAULTS = [
    ("main_py", {"main.py": "", "app.py": "def handler(e, c): pass\n"}, "main.handler"),
    ("only_module_with_handler", {"app.py": "def handler(e, c): pass\n", "util.py": "X = 1\n"}, "app.handler"),
    ("ignores_packages_and_bad_files", {"app.py": "handler = print\n", "bad.py": "(", "pkg/h.py": "def handler(): pass"},
     "app.handler"),
]


@pytest.mark.parametrize(("files", "expected"), [c[1:] for c in DEFAULTS], ids=[c[0] for c in DEFAULTS])
def test_the_default_handler(tmp_path, files, expected):
    assert packaging.find_default_handler(tree(tmp_path, files)) == expected


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"util.py": "X = 1\n"}, "no main.py, and no top-level module defines `handler` (Python files: util.py)"),
        ({"a.py": "def handler(e, c): pass\n", "b.py": "handler = 1\n"},
         "several modules define `handler` (a, b); choose one with --handler, e.g. --handler a.handler"),
    ],
    ids=["none", "several"],
)
def test_no_default_handler_is_explained(tmp_path, files, message):
    with pytest.raises(DeployRejected, match=message.replace("(", r"\(").replace(")", r"\)")):
        packaging.find_default_handler(tree(tmp_path, files))


def test_windows_directory_entries_are_directories(tmp_path):
    path = write(tmp_path, make_zip([("pkg\\", b""), ("pkg\\mod.py", b"X = 1\n")]))

    packaging.extract_zip(path, tmp_path / "code")

    assert (tmp_path / "code" / "pkg" / "mod.py").read_text() == "X = 1\n"


def test_a_name_the_filesystem_cannot_hold_is_refused(tmp_path):
    path = write(tmp_path, make_zip([("x" * 300 + ".py", b"")]))

    with pytest.raises(DeployRejected, match="File name too long"):
        packaging.extract_zip(path, tmp_path / "code")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["code.zip"]


def test_deployed_code_is_precompiled_so_cold_starts_import_bytecode(tmp_path):
    import sys

    tag = sys.implementation.cache_tag
    src = tmp_path / "src"
    src.mkdir()
    (src / "main.py").write_text("def handler(e, c):\n    return 1\n")
    (src / "broken.py").write_text("def nope(:\n")
    data = tmp_path / "code.zip"
    packaging.zip_directory(src, data)
    root = tmp_path / "code" / "x"
    packaging.extract_zip(data, root)
    pyc = root / "__pycache__" / f"main.{tag}.pyc"
    assert pyc.is_file()
    flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
    assert flags == 0b01  # hash-based, unchecked: the immutable source is never stat-ed to validate it
    assert not (root / "__pycache__" / f"broken.{tag}.pyc").exists()
