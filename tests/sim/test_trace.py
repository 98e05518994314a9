import pytest

from mist.errors import InvalidRequest
from mist.sim.trace import half_of, load_azure2019


def write_trace(tmp_path, inv, run, mem, prefix="t_"):
    for name, rows in (("inv", inv), ("run", run), ("mem", mem)):
        (tmp_path / f"{prefix}{name}.csv").write_text("\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return f"{tmp_path}/{prefix}"


INV_HEADER = ["HashOwner", "HashApp", "HashFunction", "minute_1", "minute_2", "minute_3"]
RUN_HEADER = ["HashOwner", "HashApp", "HashFunction", "Average", "Count", "Minimum", "Maximum"]
MEM_HEADER = ["HashOwner", "HashApp", "SampleCount", "AverageAllocatedMb"]


def test_a_trace_is_joined_on_owner_app_and_function(tmp_path):
    prefix = write_trace(
        tmp_path,
        [INV_HEADER, ["o", "app", "f1", 2, 0, 1], ["o", "app", "f2", 0, 5, 0]],
        [RUN_HEADER, ["o", "app", "f1", 1500, 3, 1, 2], ["o", "app", "f2", 250, 5, 1, 2]],
        [MEM_HEADER, ["o", "app", 10, 256]],
    )
    trace = load_azure2019(prefix)
    assert trace.minutes == 3 and trace.duration_s == 180.0
    assert [(f.per_minute, f.duration_s, f.memory_mb) for f in trace.functions] == [
        (((0, 2), (2, 1)), 1.5, 256.0),
        (((1, 5),), 0.25, 256.0),  # each function of an app is charged the app's memory
    ]
    assert [f.key for f in trace.functions] == ["o/app/f1", "o/app/f2"]


def test_the_public_datasets_numbered_minute_columns_load_too(tmp_path):
    prefix = write_trace(
        tmp_path,
        [["HashOwner", "HashApp", "HashFunction", "Trigger", "1", "2"], ["h", "h", "h", "timer", 0, 4]],
        [RUN_HEADER, ["h", "h", "h", 100, 4, 1, 2]],
        [MEM_HEADER, ["h", "h", 1, 128]],
    )
    (function,) = load_azure2019(prefix).functions
    assert (function.key, function.per_minute, function.invocations) == ("h", ((1, 4),), 4)


def test_repeated_rows_are_averaged_by_their_counts(tmp_path):
    prefix = write_trace(
        tmp_path,
        [INV_HEADER, ["o", "a", "f", 1, 0, 0]],
        [RUN_HEADER, ["o", "a", "f", 1000, 1, 0, 0], ["o", "a", "f", 2000, 3, 0, 0]],
        [MEM_HEADER, ["o", "a", 1, 100], ["o", "a", 3, 200]],
    )
    (function,) = load_azure2019(prefix).functions
    assert (function.duration_s, function.memory_mb) == (1.75, 175.0)


def test_functions_without_data_or_invocations_are_skipped_and_counted(tmp_path):
    prefix = write_trace(
        tmp_path,
        [INV_HEADER, ["o", "a", "ok", 1, 0, 0], ["o", "a", "norun", 1, 0, 0], ["o", "b", "nomem", 1, 0, 0],
         ["o", "a", "never", 0, 0, 0]],
        [RUN_HEADER, ["o", "a", "ok", 10, 1, 0, 0], ["o", "b", "nomem", 10, 1, 0, 0], ["o", "a", "never", 10, 1, 0, 0]],
        [MEM_HEADER, ["o", "a", 1, 100]],
    )
    trace = load_azure2019(prefix)
    assert [f.key for f in trace.functions] == ["o/a/ok"]
    assert trace.skipped == {"no duration data": 1, "no memory data": 1, "never invoked": 1}


def test_missing_files_are_named(tmp_path):
    with pytest.raises(InvalidRequest, match=f"trace file\\(s\\) not found: {tmp_path}/x_inv.csv"):
        load_azure2019(f"{tmp_path}/x_")


def test_a_file_without_minute_columns_is_rejected(tmp_path):
    prefix = write_trace(tmp_path, [["HashFunction", "total"], ["f", 3]], [RUN_HEADER], [MEM_HEADER])
    with pytest.raises(InvalidRequest, match="no minute columns"):
        load_azure2019(prefix)


def test_halves_split_the_functions_by_hash_and_cover_them_all(tmp_path):
    rows = [["o", "a", f"f{i}", 1, 0, 0] for i in range(40)]
    prefix = write_trace(
        tmp_path, [INV_HEADER, *rows], [RUN_HEADER, *[["o", "a", f"f{i}", 10, 1, 0, 0] for i in range(40)]],
        [MEM_HEADER, ["o", "a", 1, 100]],
    )
    trace = load_azure2019(prefix)
    a, b = trace.half("a"), trace.half("b")
    assert {f.key for f in a.functions} | {f.key for f in b.functions} == {f.key for f in trace.functions}
    assert not {f.key for f in a.functions} & {f.key for f in b.functions}
    assert 5 < len(a.functions) < 35
    assert all(half_of(f.key) == "a" for f in a.functions)
    with pytest.raises(InvalidRequest, match="half 'c' is invalid"):
        trace.half("c")
