"""FunctionService.resolve over each store: a version number no database column can hold is a
version that does not exist (found by the API fuzzer: it was a 500)."""

from datetime import datetime, timezone

import pytest

from mist.control.functions import FunctionService
from mist.control.layers import LayerStore
from mist.control.store import NewVersion
from mist.errors import NotFound
from mist.testing.worker import FakeWorker


@pytest.mark.parametrize("version", [2**31, 2**63, 6977115671905461424132814037581824, 0, -1])
async def test_a_version_beyond_any_stored_one_is_not_found(store, tmp_path, version):
    store.create_version(NewVersion("hello", "main.handler", 128, 30.0, 1, {}, "0" * 64, 1, None),
                         datetime.now(timezone.utc))
    functions = FunctionService(tmp_path, store, LayerStore(tmp_path / "layers"), FakeWorker().retire)
    with pytest.raises(NotFound, match=f"has no version {version}"):
        await functions.resolve("hello", version)
    assert (await functions.resolve("hello", 1)).version == 1
