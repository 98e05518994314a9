"""Two FunctionServices on one store, each with its own data dir — two `mist up --db` processes:
code and layers deployed through one are fetched by the other (sha256 checked), and `follow`
catches one up with deploys and deletes made through the other."""

import zipfile
from pathlib import Path

import pytest

from mist.control.blobs import MemoryBlobStore
from mist.control.functions import FunctionService
from mist.control.layers import LayerStore, layer_key
from mist.errors import NotFound, PlatformError
from mist.testing.worker import FakeWorker

REQUIREMENTS = b"tinypkg==1.0\n"


def make_zip(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


class Process:
    def __init__(self, root: Path, store, blobs) -> None:
        self.worker = FakeWorker()
        self.root = root
        self.layers = LayerStore(root / "layers")
        self.functions = FunctionService(root, store, self.layers, self.worker.retire, blobs=blobs)
        self.heard: list[tuple[str, int | None]] = []
        self.functions.on_change(lambda name, fv: self.heard.append((name, fv.version if fv else None)))


@pytest.fixture
def pair(store, tmp_path):
    blobs = MemoryBlobStore()
    return Process(tmp_path / "a", store, blobs), Process(tmp_path / "b", store, blobs), blobs


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


async def test_code_deployed_through_one_process_is_fetched_by_the_other(pair, tmp_path):
    a, b, _ = pair
    zip_path = make_zip(tmp_path / "f.zip", {"main.py": "def handler(e, c):\n    return 1\n", "data/x.txt": "x"})
    fv = await a.functions.deploy("hello", {}, zip_path)
    assert not (b.root / "code" / fv.code_sha256).exists()
    got = await b.functions.resolve("hello")
    assert got.code_sha256 == fv.code_sha256
    assert tree(b.root / "code" / fv.code_sha256) == tree(a.root / "code" / fv.code_sha256)
    assert b.functions.spec(got).code_dir == b.root / "code" / fv.code_sha256
    # and the archive itself, which the worker agents of B's control plane download by its sha
    assert (b.root / "code" / f"{fv.code_sha256}.zip").read_bytes() == zip_path.read_bytes()


async def test_a_layer_built_by_one_process_is_unpacked_by_the_other_without_pip(pair, tmp_path):
    a, b, blobs = pair
    built = a.layers.path(layer_key(REQUIREMENTS)) / "python" / "tinypkg"
    built.mkdir(parents=True)
    (built / "__init__.py").write_text("VERSION = '1.0'\n")  # as if pip had installed it here
    zip_path = make_zip(tmp_path / "f.zip", {"main.py": "def handler(e, c):\n    return 1\n",
                                             "requirements.txt": REQUIREMENTS.decode()})
    fv = await a.functions.deploy("deps", {}, zip_path)
    assert blobs.has_blob("layer", fv.layer_sha256)
    await b.functions.resolve("deps")
    fetched = b.layers.path(fv.layer_sha256) / "python" / "tinypkg" / "__init__.py"
    assert fetched.read_text() == "VERSION = '1.0'\n"
    assert not fetched.stat().st_mode & 0o222  # read-only, like a layer pip built here


async def test_code_missing_from_the_database_is_a_clear_error_not_a_broken_sandbox(pair, tmp_path):
    a, b, blobs = pair
    fv = await a.functions.deploy("hello", {}, make_zip(tmp_path / "f.zip", {"main.py": "def handler(e, c): pass\n"}))
    blobs.blobs.clear()
    with pytest.raises(PlatformError, match="deploy the function again"):
        await b.functions.resolve("hello")
    assert not (b.root / "code" / fv.code_sha256).exists()


async def test_follow_catches_up_with_deploys_and_deletes_made_elsewhere(pair, tmp_path):
    a, b, _ = pair
    await a.functions.deploy("hello", {}, make_zip(tmp_path / "1.zip", {"main.py": "def handler(e, c): return 1\n"}))
    assert await b.functions.follow() == []  # the first call is the baseline
    assert (await b.functions.resolve("hello")).version == 1  # now cached in b
    await a.functions.deploy("hello", {}, make_zip(tmp_path / "2.zip", {"main.py": "def handler(e, c): return 2\n"}))
    assert (await b.functions.resolve("hello")).version == 1  # b serves from memory...
    assert await b.functions.follow() == ["hello"]  # ...until it follows
    assert b.heard == [("hello", 2)]
    assert (await b.functions.resolve("hello")).version == 2
    assert await b.functions.follow() == []
    await a.functions.delete("hello")
    assert await b.functions.follow() == ["hello"]
    assert b.heard[-1] == ("hello", None)
    with pytest.raises(NotFound):
        await b.functions.resolve("hello")
    assert [p for p in (b.root / "code").iterdir() if not p.name.startswith(".")] == []  # unused code removed


async def test_a_process_following_its_own_deploy_does_nothing_twice(pair, tmp_path):
    a, _, _ = pair
    await a.functions.follow()
    await a.functions.deploy("hello", {}, make_zip(tmp_path / "1.zip", {"main.py": "def handler(e, c): return 1\n"}))
    assert await a.functions.follow() == []
    assert a.heard == [("hello", 1)]


async def test_each_process_knows_the_provisioned_functions_from_memory_as_they_change_elsewhere(pair, tmp_path):
    a, b, _ = pair
    code = {"main.py": "def handler(e, c): return 1\n"}
    await a.functions.deploy("warm", {"min_instances": 2}, make_zip(tmp_path / "1.zip", code))
    await a.functions.deploy("cold", {}, make_zip(tmp_path / "2.zip", code))
    await b.functions.follow()
    await b.functions.provision_all()  # a process starting: what exists now
    assert [(s.function_name, s.version, s.min_instances) for s in b.functions.provisioned()] == [("warm", 1, 2)]
    await a.functions.update_config("cold", {"min_instances": 1})
    await a.functions.update_config("warm", {"min_instances": 0})
    assert await b.functions.follow() == ["cold", "warm"]
    for process in (a, b):
        assert [(s.function_name, s.version) for s in process.functions.provisioned()] == [("cold", 2)]
    await a.functions.delete("cold")
    await b.functions.follow()
    assert a.functions.provisioned() == [] and b.functions.provisioned() == []
