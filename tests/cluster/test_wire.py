from pathlib import Path

import pytest

from mist.cluster import wire
from mist.errors import NoCapacity, PlatformError, StaleEpoch
from mist.worker.types import InvokeResult, LogLine, SandboxSpec

SHA, LAYER = "c" * 64, "d" * 64


def test_an_order_names_code_and_layer_by_sha_and_carries_the_event_bytes_untouched():
    spec = SandboxSpec("acme/f", 3, Path("/data/code") / SHA, "main.handler", memory_mb=256, concurrency=4,
                       env=(("A", "1"), ("B", "x\ny")), layer_dir=Path("/data/layers") / LAYER / "python",
                       egress=("0.0.0.0/0:443",), min_instances=1, tenant="acme", revision=7)
    payload = b'{"line": "a\\nb"}\n\x00raw'
    head, body = wire.unframe(wire.encode_order(wire.Order("shard/0", 12, "inv-1", spec), payload))
    assert body == payload
    assert (head["shard"], head["epoch"], head["invocation_id"]) == ("shard/0", 12, "inv-1")
    assert head["spec"]["code"] == SHA and head["spec"]["layer"] == LAYER
    again = wire.spec_from_json(head["spec"], Path("/w/code") / SHA, Path("/w/layers") / LAYER / "python")
    assert again == SandboxSpec(**{**spec.__dict__, "code_dir": Path("/w/code") / SHA,
                                   "layer_dir": Path("/w/layers") / LAYER / "python"})


def test_a_result_comes_back_whole():
    result = InvokeResult(ok=False, payload=b"null", error={"errorType": "E", "errorMessage": "m", "stackTrace": []},
                          cold_start=True, init_ms=3.5, duration_ms=1.25, max_memory_used_mb=40, started_at=1.0,
                          ended_at=2.0, instance_id="sb-1", logs=[LogLine(1.5, "stdout", "hi")],
                          init_steps={"fork": 1.0})
    assert wire.decode_result(wire.encode_result(result)) == result


@pytest.mark.parametrize("exc", [StaleEpoch("shard/0", 3, 5), NoCapacity("full", retry_after=2.0, queue_full=True),
                                 PlatformError("broken", code="SandboxFailed")])
def test_a_workers_error_is_raised_again_on_the_control_plane(exc):
    with pytest.raises(type(exc)) as raised:
        wire.raise_error(wire.error_json(exc), "w1")
    assert raised.value.code == exc.code
    if isinstance(exc, StaleEpoch):
        assert (raised.value.epoch, raised.value.floor) == (3, 5) and wire.error_status(exc) == 409
    if isinstance(exc, NoCapacity):
        assert raised.value.queue_full and raised.value.retry_after == 2.0 and "worker w1" in raised.value.message


def test_the_token_check_wants_the_exact_bearer_token():
    assert wire.token_ok("Bearer s3cret-token", "s3cret-token")
    assert not wire.token_ok("Bearer s3cret-tokem", "s3cret-token")
    assert not wire.token_ok("s3cret-token", "s3cret-token")
    assert not wire.token_ok(None, "s3cret-token")
