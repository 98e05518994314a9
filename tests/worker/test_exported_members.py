import mist.worker


def test_public_api_is_exported():
    exported = set(mist.worker.__all__)
    assert {"Worker", "WorkerConfig", "WorkerStatistics", "SandboxSpec", "InvokeResult", "LogLine"} <= exported
    for name in exported:
        assert getattr(mist.worker, name).__module__.startswith("mist.worker")
