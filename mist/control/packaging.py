"""Code packaging: zip a function's directory, and check, unpack and inspect uploaded zips safely.

Used on both sides of a deploy: `mist deploy` zips and checks the code before uploading it, and
the server validates, extracts and checks it again (never trusting the client). No network here;
the only I/O is on the paths given.

Limits (those of AWS Lambda's unzipped code): at most `MAX_FILES` files and `MAX_UNPACKED_BYTES`
bytes once unpacked. Refusals raise `DeployRejected` with a message that lists what was wrong and
says what to do; `InvalidRequest` is for a bad function name or a path that does not exist.
"""

from __future__ import annotations

import ast
import errno
import hashlib
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import traceback
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mist.errors import DeployRejected, InvalidRequest
from mist.models import NAME_RE, NAME_RULE, split_id

MAX_FILES = 10_000
MAX_UNPACKED_BYTES = 250 * 1024 * 1024
SKIPPED_DIRS = frozenset({"__pycache__", ".git", ".venv", ".mist", "node_modules"})
SKIPPED_SUFFIXES = (".pyc",)

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip can hold; same bytes for same content
_CHUNK = 1024 * 1024
_MAX_LISTED = 20  # offending paths named in a message; `detail` lists them all

ZipSource = Path | str | BinaryIO


@dataclass(frozen=True)
class PackStats:
    """What `zip_directory` wrote: `files` entries, `unpacked_bytes` of content, `zip_bytes`."""

    files: int
    unpacked_bytes: int
    zip_bytes: int
    sha256: str  # of the zip's bytes


@dataclass(frozen=True)
class ZipEntry:
    """One entry of a validated zip. `name` is a clean relative POSIX path (no trailing '/').

    kind is "file", "dir" or "symlink". A symlink's `link_target` is the path inside the root it
    finally resolves to (following other symlink entries); extraction stores a copy of that
    file or directory in its place, so no symlink is ever created on disk.
    """

    name: str
    kind: str
    size: int  # declared uncompressed size (for a symlink: the size of what it copies)
    executable: bool = False
    link_target: str | None = None


@dataclass(frozen=True)
class ExtractStats:
    path: Path
    files: int
    unpacked_bytes: int
    sha256: str  # of the zip's bytes: `code/<sha256>/` makes extracted code content-addressed


# -- names -------------------------------------------------------------------------------------


def validate_name(name: str) -> str:
    """Return `name` if it is a valid function name, else raise InvalidRequest saying the rule."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidRequest(f"invalid function name {name!r}: use {NAME_RULE}")
    return name


def validate_id(fid: str) -> str:
    """Return `fid` if it is a valid function id (`name` or `tenant/name`, see models.qualify)."""
    tenant, name = split_id(fid) if isinstance(fid, str) else ("", fid)
    if not NAME_RE.fullmatch(tenant):
        raise InvalidRequest(f"invalid tenant name {tenant!r}: use {NAME_RULE}")
    validate_name(name)
    return fid


# -- zipping a directory ------------------------------------------------------------------------


def zip_directory(path: Path, dest: BinaryIO | Path) -> PackStats:
    """Zip the function directory `path` into `dest` (a path or a writable binary file).

    Deterministic: entries sorted, timestamps fixed at 1980-01-01 and modes normalised to
    0644/0755, so the same content always gives the same bytes and the same sha256. Skipped:
    directories named in SKIPPED_DIRS (`__pycache__`, `.git`, `.venv`, `.mist`, `node_modules`)
    and `*.pyc` files. A symlink pointing inside the directory is stored as its target's
    content; one pointing outside it (or at nothing) is refused, all such paths listed.

    If `path` is a `.zip` file it is validated (`validate_zip`) and copied unchanged.
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".zip":
        entries = validate_zip(path)
        if isinstance(dest, (str, Path)) and Path(dest).resolve() == path.resolve():
            sha, size = sha256_file(path), path.stat().st_size
        else:
            with path.open("rb") as src:
                sha, size = _copy_hashing(src, dest)
        files = [e for e in entries if e.kind != "dir"]
        return PackStats(len(files), sum(e.size for e in files), size, sha)
    if not path.exists():
        raise InvalidRequest(f"{path} does not exist; pass the function's directory or a .zip of it")
    if not path.is_dir():
        raise DeployRejected(f"{path} is neither a directory nor a .zip; pass the function's directory")

    files = _collect(path)
    with tempfile.SpooledTemporaryFile(max_size=16 * _CHUNK) as spool:
        unpacked = _write_zip(files, spool)
        spool.seek(0)
        sha, size = _copy_hashing(spool, dest)
    return PackStats(len(files), unpacked, size, sha)


def _collect(root: Path) -> list[tuple[str, Path]]:
    """(archive name, real path) of every file to zip, sorted; refuses escaping symlinks."""
    real_root = root.resolve()
    files: list[tuple[str, Path]] = []
    refused: list[str] = []

    def visit(directory: Path, prefix: str, active: frozenset[Path]) -> None:
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            name = prefix + entry.name
            if entry.is_symlink():
                real = Path(os.path.realpath(entry.path))
                if not real.is_relative_to(real_root):
                    refused.append(f"{name} -> {os.readlink(entry.path)} (points outside {root})")
                    continue
                if not real.exists():
                    refused.append(f"{name} -> {os.readlink(entry.path)} (points at nothing)")
                    continue
            else:
                real = Path(entry.path)  # `directory` is a real path already
            if real.is_dir():
                if entry.name not in SKIPPED_DIRS and real not in active:
                    visit(real, name + "/", active | {real})
            elif real.is_file() and not entry.name.endswith(SKIPPED_SUFFIXES):
                files.append((name, real))

    visit(real_root, "", frozenset({real_root}))
    if refused:
        raise DeployRejected(
            f"{root} has symlinks that leave the directory: {_listing(refused)}. "
            "Copy what they point at into the directory, or remove them.",
            detail="\n".join(refused),
        )
    if not files:
        raise DeployRejected(f"{root} has no files to deploy; put your handler in {root / 'main.py'}")
    if len(files) > MAX_FILES:
        raise DeployRejected(
            f"{root} has {len(files):,} files, more than the limit of {MAX_FILES:,}; "
            "leave out data and build output, and let requirements.txt install dependencies"
        )
    return files


def _write_zip(files: list[tuple[str, Path]], out: BinaryIO) -> int:
    total = 0
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, real in files:
            st = real.stat()
            total += st.st_size
            if total > MAX_UNPACKED_BYTES:
                raise DeployRejected(
                    f"the code is larger than {_mb(MAX_UNPACKED_BYTES)} unpacked (reached at {name}); "
                    "keep large data out of the function directory"
                )
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.create_system = 3  # unix, whatever the host: the modes below mean the same
            info.external_attr = (0o100755 if st.st_mode & 0o111 else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            info.file_size = st.st_size
            with real.open("rb") as src, zf.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
    return total


def _copy_hashing(src: BinaryIO, dest: BinaryIO | Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    out = Path(dest).open("wb") if isinstance(dest, (str, Path)) else dest
    try:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    finally:
        if out is not dest:
            out.close()
    return digest.hexdigest(), size


def sha256_file(source: ZipSource) -> str:
    """The sha256 (hex) of a file's bytes; a file object is read from its start."""
    with _opened(source) as f:
        f.seek(0)
        digest = hashlib.sha256()
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# -- validating an uploaded zip ---------------------------------------------------------------


def validate_zip(zip_path: ZipSource) -> list[ZipEntry]:
    """Check every entry of a zip without extracting it; return the entries.

    Refused, with every offending entry listed: absolute paths, drive letters, `..`
    components, NUL bytes in names, duplicate or conflicting names, encrypted entries,
    symlinks whose target leaves the root (or loops, or points at nothing), more than
    MAX_FILES files, or more than MAX_UNPACKED_BYTES declared once unpacked. Backslashes are
    read as separators (zips made on Windows use them).
    """
    with _opened(zip_path) as f, _zip(f) as zf:
        return [entry for entry, _ in _scan(zf)]


def _scan(zf: zipfile.ZipFile) -> list[tuple[ZipEntry, zipfile.ZipInfo]]:
    infos = zf.infolist()
    if len(infos) > 2 * MAX_FILES:
        raise DeployRejected(f"the zip has {len(infos):,} entries; the limit is {MAX_FILES:,} files")
    bad: list[str] = []
    scanned: list[tuple[str, str, zipfile.ZipInfo]] = []  # (name, kind, info)
    kinds: dict[str, str] = {}
    for info in infos:
        raw = info.orig_filename
        name, problem = _clean_name(raw)
        mode = info.external_attr >> 16
        if raw.replace("\\", "/").endswith("/") or stat.S_ISDIR(mode):
            kind = "dir"
        else:
            kind = "symlink" if stat.S_ISLNK(mode) else "file"
        if problem is None and info.flag_bits & 0x1:
            problem = "encrypted; zip it without a password"
        if problem is None and name in kinds and not (kind == kinds[name] == "dir"):
            problem = "appears twice"
        if problem is not None:
            bad.append(f"{raw!r}: {problem}")
            continue
        if name not in kinds:
            scanned.append((name, kind, info))
        kinds[name] = kind
    for name, kind, _ in scanned:
        parent = posixpath.dirname(name)
        while parent:
            if kinds.get(parent, "dir") != "dir":
                bad.append(f"{name!r}: inside {parent!r}, which is a {kinds[parent]}, not a directory")
                break
            parent = posixpath.dirname(parent)
    links: dict[str, str] = {}
    for name, kind, info in scanned:
        if kind == "symlink":
            target, problem = _link_target(zf, name, info)
            if problem is not None:
                bad.append(f"{name!r}: {problem}")
            else:
                links[name] = target
    if bad:
        raise _unsafe(bad)
    return _entries(scanned, kinds, links)


def _clean_name(raw: str) -> tuple[str, str | None]:
    """(normalised name, problem or None) for a raw entry name."""
    if "\x00" in raw:
        return raw, "has a NUL byte in its name"
    name = raw.replace("\\", "/")
    if name.startswith("/"):
        return name, "absolute path"
    if re.match(r"[A-Za-z]:", name):
        return name, "drive letter"
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return name, "has a '..' component (would escape the code directory)"
    if not parts:
        return name, "empty name"
    return "/".join(parts), None


def _link_target(zf: zipfile.ZipFile, name: str, info: zipfile.ZipInfo) -> tuple[str, str | None]:
    if info.file_size > 4096:
        return "", "symlink target longer than 4096 bytes"
    target = _read_member(zf, info).decode("utf-8", "replace")
    if "\x00" in target or target.startswith("/") or re.match(r"[A-Za-z]:", target):
        return target, f"symlink to {target!r}, outside the code directory"
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if resolved == ".." or resolved.startswith("../"):
        return target, f"symlink to {target!r}, outside the code directory"
    return resolved, None


def _entries(
    scanned: list[tuple[str, str, zipfile.ZipInfo]], kinds: dict[str, str], links: dict[str, str]
) -> list[tuple[ZipEntry, zipfile.ZipInfo]]:
    """Resolve symlinks to what they copy, then apply the file-count and size limits."""
    sizes = {name: info.file_size for name, kind, info in scanned if kind == "file"}
    bad: list[str] = []
    out: list[tuple[ZipEntry, zipfile.ZipInfo]] = []
    files = total = 0
    for name, kind, info in scanned:
        executable = bool((info.external_attr >> 16) & 0o111)
        if kind == "dir":
            out.append((ZipEntry(name, "dir", 0), info))
            continue
        size, target = info.file_size, None
        if kind == "symlink":
            try:
                target = _resolve(links[name], links)
            except ValueError as exc:
                bad.append(f"{name!r}: {exc}")
                continue
            if target == "." or name == target or name.startswith(target + "/"):
                bad.append(f"{name!r}: symlink to a directory that contains it (a loop)")
                continue
            copied = {target: sizes[target]} if target in sizes else _under(target, sizes)
            if not copied and kinds.get(target) != "dir":
                bad.append(f"{name!r}: symlink to {links[name]!r}, which is not in the zip")
                continue
            size, files = sum(copied.values()), files + len(copied) - 1
        files, total = files + 1, total + size
        out.append((ZipEntry(name, kind, size, executable, target), info))
        if files > MAX_FILES or total > MAX_UNPACKED_BYTES:
            break  # refused below; no need to resolve the rest
    if bad:
        raise _unsafe(bad)
    if files > MAX_FILES:
        raise DeployRejected(
            f"the zip holds {files:,} files, more than the limit of {MAX_FILES:,}; "
            "leave out data and build output, and let requirements.txt install dependencies"
        )
    if total > MAX_UNPACKED_BYTES:
        raise DeployRejected(
            f"the zip would unpack to {_mb(total)}, more than the limit of {_mb(MAX_UNPACKED_BYTES)}; "
            "keep large data out of the function's code"
        )
    return out


def _resolve(path: str, links: dict[str, str]) -> str:
    """Follow symlink entries (also in leading components) until `path` names no symlink."""
    for _ in range(40):
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if prefix in links:
                path = posixpath.normpath("/".join([links[prefix], *parts[i:]]))
                break
        else:
            return path
    raise ValueError("symlinks that point at each other (a loop)")


def _under(directory: str, sizes: dict[str, int]) -> dict[str, int]:
    prefix = "" if directory == "." else directory + "/"
    return {n: s for n, s in sizes.items() if n.startswith(prefix)}


def _unsafe(bad: list[str]) -> DeployRejected:
    return DeployRejected(
        f"the zip has {len(bad)} unsafe or invalid entr{'y' if len(bad) == 1 else 'ies'}: "
        f"{_listing(bad)}. Rebuild it from the function's directory (or pass the directory to "
        "`mist deploy`, which builds a safe zip).",
        detail="\n".join(bad),
    )


# -- extracting --------------------------------------------------------------------------------


def extract_zip(zip_path: ZipSource, dest_dir: Path) -> ExtractStats:
    """Validate the zip, then extract it into `dest_dir`, atomically.

    Files are written into a temporary directory next to `dest_dir` (named `.<name>.*.tmp`),
    made read-only (files 0o444, or 0o555 if executable in the zip; directories 0o555, so the
    tree can be bind-mounted read-only) and renamed into place. Symlink entries become copies
    of what they point at. Extraction stops if the bytes actually written pass
    MAX_UNPACKED_BYTES, whatever the zip declared.

    `dest_dir` is meant to be content-addressed (`code/<sha256>/`): if it appears while we
    extract (a concurrent deploy of the same zip), the existing one is kept.
    """
    dest_dir = Path(dest_dir)
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    with _opened(zip_path) as f, _zip(f) as zf:
        entries = _scan(zf)
        sha = sha256_file(f)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".tmp", dir=dest_dir.parent))
        try:
            files, written = _extract_into(zf, entries, tmp)
            precompile(tmp)
            _make_read_only(tmp)
            try:
                tmp.rename(dest_dir)
            except OSError:
                if not dest_dir.is_dir():
                    raise
                remove_tree(tmp)
        except BaseException:
            remove_tree(tmp)
            raise
    return ExtractStats(dest_dir, files, written, sha)


def _extract_into(
    zf: zipfile.ZipFile, entries: list[tuple[ZipEntry, zipfile.ZipInfo]], root: Path
) -> tuple[int, int]:
    written = files = 0
    for entry, info in entries:
        target = root / entry.name
        if entry.kind == "dir":
            target.mkdir(parents=True, exist_ok=True)
            continue
        if entry.kind != "file":
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with zf.open(info) as src, target.open("xb") as dst:
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    if written > MAX_UNPACKED_BYTES:
                        raise DeployRejected(
                            f"the zip unpacks to more than {_mb(MAX_UNPACKED_BYTES)} (stopped at "
                            f"{entry.name}; its headers understate the sizes); rebuild the zip"
                        )
                    dst.write(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise DeployRejected(f"the zip is damaged at {entry.name}: {exc}; rebuild it") from exc
        except OSError as exc:
            if exc.errno not in (errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL):
                raise  # disk full, permissions...: mist's problem, not the zip's
            raise DeployRejected(f"cannot write {entry.name!r} ({exc.strerror}); rename it") from exc
        if entry.executable:
            target.chmod(0o755)
        files += 1
    for entry, _ in entries:  # symlinks last: what they copy is on disk by now
        if entry.kind == "symlink" and entry.link_target is not None:
            src = root / entry.link_target
            dst = root / entry.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst)
                copied = [p for p in dst.rglob("*") if p.is_file()]
            else:
                shutil.copy2(src, dst)
                copied = [dst]
            files += len(copied)
            written += sum(p.stat().st_size for p in copied)
            if written > MAX_UNPACKED_BYTES:
                raise DeployRejected(f"the zip unpacks to more than {_mb(MAX_UNPACKED_BYTES)}; rebuild it")
    return files, written


def precompile(root: Path) -> None:
    """Write `__pycache__/*.pyc` for every .py file that compiles, so a cold start imports
    bytecode instead of compiling the source (the code dir is read-only in the sandbox, so
    Python could never cache it there itself). Unchecked-hash pycs: the code is immutable
    (content-addressed), so nothing needs to stat the source to validate them. Compiling runs
    none of the user's code; files that do not compile are left to `check_code` to report."""
    import compileall
    import py_compile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SyntaxWarnings of user code are not ours to raise
        compileall.compile_dir(
            str(root), quiet=2, workers=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
        )


def _make_read_only(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            p = os.path.join(dirpath, name)
            os.chmod(p, 0o555 if os.stat(p).st_mode & 0o111 else 0o444)
        os.chmod(dirpath, 0o555)


def remove_tree(path: Path) -> None:
    """Delete a tree made read-only by `extract_zip` (plain `shutil.rmtree` fails for non-root)."""
    if not os.path.lexists(path):
        return
    for dirpath, _, _ in os.walk(path):
        os.chmod(dirpath, 0o755)
    shutil.rmtree(path, ignore_errors=True)


# -- tar archives (layers and code passed between mist's own processes) -------------------------


class UnsafeArchive(tarfile.TarError):
    """A tar member that extraction refuses (see `extract_tar`)."""


def extract_tar(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract `tar` into the directory `dest` with the rules of Python's `data` extraction
    filter (PEP 706): regular files, directories and links only; nothing written, and no link
    pointing, outside `dest`; no absolute link; no setuid/setgid/sticky bit or group/other write
    permission; owners not taken from the archive. A refused member raises a `tarfile.TarError`.

    Pythons before 3.11.4 (Debian 12's 3.11.2, which `scripts/setup` prefers) have no filter:
    there the same rules are applied here, member by member and against what is already on
    disk (a link extracted earlier counts), as the filter applies them."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
    else:
        extract_tar_checked(tar, dest)


def extract_tar_checked(tar: tarfile.TarFile, dest: Path) -> None:
    """`extract_tar` without Python's filter (public for its tests, which compare the two)."""
    root = os.path.realpath(dest)
    uid, gid = os.geteuid(), os.getegid()
    for member in tar:
        member = _checked_member(member, root)
        member.uid, member.gid, member.uname, member.gname = uid, gid, "", ""
        tar.extract(member, root, set_attrs=not member.issym(), numeric_owner=True)


def _checked_member(member: tarfile.TarInfo, root: str) -> tarfile.TarInfo:
    name = member.name.lstrip("/")  # as the filter: a leading / is dropped, not refused
    target = os.path.realpath(os.path.join(root, name))
    if not name or not _inside(target, root):
        raise UnsafeArchive(f"tar member {member.name!r} would be written outside {root}")
    mode = member.mode & 0o755  # no setuid/setgid/sticky, no group/other write
    if member.isreg() or member.islnk():
        if not mode & 0o100:
            mode &= ~0o111  # not executable by its owner: by nobody
        mode |= 0o600
    elif member.isdir():
        mode = 0o755
    elif not member.issym():
        raise UnsafeArchive(f"tar member {member.name!r} is a special file (device, fifo)")
    if member.issym() or member.islnk():
        if os.path.isabs(member.linkname):
            raise UnsafeArchive(f"tar member {member.name!r} links to an absolute path {member.linkname!r}")
        base = os.path.join(root, os.path.dirname(name)) if member.issym() else root
        if not _inside(os.path.realpath(os.path.join(base, member.linkname)), root):
            raise UnsafeArchive(f"tar member {member.name!r} links outside {root}: {member.linkname!r}")
    member.name, member.mode = name, mode
    return member


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


# -- checking the code -------------------------------------------------------------------------


def check_code(code_dir: Path, handler: str) -> None:
    """Refuse code that cannot run: a syntax error anywhere, or a handler that cannot be found.

    `handler` is `module.function` (the module may be dotted: `pkg.mod.handler` is the function
    `handler` in `pkg/mod.py` or `pkg/mod/__init__.py`). The function must be bound at the
    module's top level (def, async def, class, assignment or import, also inside top-level
    if/try/with blocks; a `from x import *` is given the benefit of the doubt).
    """
    code_dir = Path(code_dir)
    module, function = _split_handler(handler)
    sources = list(python_files(code_dir))
    errors = [err for rel in sources if (err := _compile_error(code_dir, rel)) is not None]
    if errors:
        first = errors[0]
        raise DeployRejected(
            f"syntax error in {first.filename} line {first.lineno}: {first.msg}"
            + (f" (and {len(errors) - 1} more file(s))" if len(errors) > 1 else "")
            + "; fix it and deploy again",
            detail="".join("".join(traceback.format_exception_only(err)) for err in errors),
        )
    module_file = _module_file(code_dir, module)
    if module_file is None:
        path = module.replace(".", "/")
        raise DeployRejected(
            f"handler {handler!r}: no module {module!r} in the code (looked for {path}.py and "
            f"{path}/__init__.py); Python files found: {_listing(sources) or 'none'}. "
            "Name the handler with --handler module.function, e.g. --handler main.handler"
        )
    names, star = _top_level_names(_parse(module_file))
    if function not in names and not star:
        defined = ", ".join(sorted(names)) or "nothing"
        raise DeployRejected(
            f"Handler {function!r} missing on module {module!r} ({module_file.relative_to(code_dir)} "
            f"defines at its top level: {defined}); define it, or pass --handler {module}.NAME"
        )


def find_default_handler(code_dir: Path) -> str:
    """The handler to use when none was given.

    `main.handler` if `main.py` exists. Otherwise, if exactly one top-level module (a `*.py`
    directly in `code_dir`) defines `handler`, that module's `handler` (so a directory holding
    only `app.py` with `def handler(event, context)` deploys as `app.handler`). Anything else
    raises DeployRejected explaining how to pick one with --handler.
    """
    code_dir = Path(code_dir)
    if (code_dir / "main.py").is_file():
        return "main.handler"
    modules = sorted(p for p in code_dir.glob("*.py") if p.is_file() and p.stem.isidentifier())
    defining = [p.stem for p in modules if "handler" in _names_or_empty(p)]
    if len(defining) == 1:
        return f"{defining[0]}.handler"
    found = _listing([p.name for p in modules]) or "none"
    if not defining:
        raise DeployRejected(
            f"no main.py, and no top-level module defines `handler` (Python files: {found}); "
            "add main.py with def handler(event, context), or pass --handler module.function"
        )
    raise DeployRejected(
        f"no main.py, and several modules define `handler` ({', '.join(defining)}); "
        f"choose one with --handler, e.g. --handler {defining[0]}.handler"
    )


def python_files(code_dir: Path) -> Iterator[str]:
    """Relative POSIX paths of the .py files under code_dir, sorted, skipping SKIPPED_DIRS."""
    for dirpath, dirnames, filenames in os.walk(code_dir):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        rel = Path(dirpath).relative_to(code_dir)
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield (rel / name).as_posix()


def _compile_error(code_dir: Path, rel: str) -> SyntaxError | None:
    source = (code_dir / rel).read_bytes()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarnings are the user's business
            compile(source, rel, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return exc
    except ValueError as exc:  # NUL bytes (3.11)
        return SyntaxError(str(exc), (rel, 1, 0, ""))
    return None


def _split_handler(handler: str) -> tuple[str, str]:
    parts = handler.split(".") if isinstance(handler, str) else []
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        raise DeployRejected(
            f"handler {handler!r} is not in module.function form; e.g. main.handler "
            "(the function handler in main.py) or pkg.api.handle (handle in pkg/api.py)"
        )
    return ".".join(parts[:-1]), parts[-1]


def _module_file(code_dir: Path, module: str) -> Path | None:
    base = code_dir.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _parse(path: Path) -> ast.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(path.read_bytes(), str(path))


def _names_or_empty(path: Path) -> set[str]:
    try:
        return _top_level_names(_parse(path))[0]
    except (SyntaxError, ValueError):
        return set()


def _top_level_names(tree: ast.Module) -> tuple[set[str], bool]:
    """Names bound at module level, and whether a `from x import *` may bind more."""
    names: set[str] = set()
    star = False

    def targets(node: ast.expr) -> Iterator[str]:
        if isinstance(node, ast.Name):
            yield node.id
        elif isinstance(node, (ast.Tuple, ast.List)):
            for elt in node.elts:
                yield from targets(elt)
        elif isinstance(node, ast.Starred):
            yield from targets(node.value)

    def visit(body: list[ast.stmt]) -> None:
        nonlocal star
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
                continue  # what is bound inside is not at the top level
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    names.update(targets(t))
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and (
                not isinstance(node, ast.AnnAssign) or node.value is not None
            ):
                names.update(targets(node.target))
            elif isinstance(node, ast.Import):
                names.update(a.asname or a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                star = star or any(a.name == "*" for a in node.names)
                names.update(a.asname or a.name for a in node.names if a.name != "*")
            # if / try / with / for / while / match blocks at the top level bind top-level names
            for field in ("body", "orelse", "finalbody"):
                visit(getattr(node, field, None) or [])
            for block in [*(getattr(node, "handlers", None) or []), *(getattr(node, "cases", None) or [])]:
                visit(block.body)

    visit(tree.body)
    return names, star


# -- helpers -----------------------------------------------------------------------------------


class _opened:
    """Context manager: open a path for reading, or lend a file object without closing it."""

    def __init__(self, source: ZipSource) -> None:
        self._source = source
        self._own: BinaryIO | None = None

    def __enter__(self) -> BinaryIO:
        if isinstance(self._source, (str, Path)):
            self._own = Path(self._source).open("rb")
            return self._own
        self._source.seek(0)
        return self._source

    def __exit__(self, *exc: object) -> None:
        if self._own is not None:
            self._own.close()


def _zip(f: BinaryIO) -> zipfile.ZipFile:
    f.seek(0)
    try:
        return zipfile.ZipFile(f)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise DeployRejected(
            f"the code is not a valid zip archive ({exc}); zip the function's directory, "
            "or pass the directory itself to `mist deploy`"
        ) from exc


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        return zf.read(info)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise DeployRejected(f"the zip is damaged at {info.filename}: {exc}; rebuild it") from exc


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):,.0f} MB"
