import asyncio
import errno
import json
import os
import zlib

import pytest

from mist.metering.journal import Journal, decode, encode
from tests.metering.conftest import usage


def opened(tmp_path, **kwargs) -> Journal:
    j = Journal(tmp_path, **kwargs)
    j.recover()
    j.open()
    return j


def test_a_record_survives_its_encoding_bit_for_bit():
    r = usage(tenant="ténant ünïcode \n\t\x00", outcome="failed")
    assert decode(encode(r)) == r and b"\x00" not in encode(r)


def test_a_line_is_the_crc_and_the_json_list_of_the_fields():
    for r in (usage(), usage(tenant='a"b\\c\u2028', outcome="failed"), usage()._replace(error_type="Err\x01",
                                                                                        cold_start=True)):  # fmt: skip
        crc, _, body = encode(r).rstrip(b"\n").partition(b" ")
        assert body == json.dumps(r, separators=(",", ":")).encode() and int(crc, 16) == zlib.crc32(body)


def test_a_damaged_line_is_refused_not_misread():
    line = encode(usage())
    assert decode(line.replace(b"resize", b"resizf")) is None
    assert decode(line[: len(line) // 2]) is None  # cut by a power cut
    assert decode(b"garbage\n") is None


async def test_a_record_is_in_the_file_once_append_returns(tmp_path):
    j = opened(tmp_path)
    records = [usage() for _ in range(3)]
    for r in records:
        j.append(r)
    # another process (the next mist up, after a kill) reads them back; nothing was closed or awaited
    assert Journal(tmp_path).recover()[0][1] == records
    await j.close()


async def test_with_fsync_concurrent_callers_share_group_committed_msyncs(tmp_path):
    j = opened(tmp_path, fsync=True)

    async def one():
        await j.sync(j.append(usage()))

    await asyncio.gather(*(one() for _ in range(500)))
    assert 1 <= j.counts["syncs"] <= 10  # not one msync per record
    assert len(Journal(tmp_path).recover()[0][1]) == 500
    await j.close()


async def test_without_fsync_nothing_waits_for_the_disk(tmp_path):
    j = opened(tmp_path)
    await j.sync(j.append(usage()))
    assert j.counts["syncs"] == 0 and len(Journal(tmp_path).recover()[0][1]) == 1
    await j.close()


def test_recovery_skips_a_line_cut_in_the_middle_and_keeps_the_rest(tmp_path):
    a, b = usage(), usage()
    (tmp_path / "000000000007.log").write_bytes(encode(a) + encode(usage())[:20] + b"\n" + encode(b) + b"\x00" * 4096)
    ((path, found),) = Journal(tmp_path).recover()
    assert path.name == "000000000007.log" and found == [a, b]


async def test_rotation_keeps_old_segments_until_retired_and_numbers_new_ones_after_any_left(tmp_path):
    (tmp_path / "000000000041.log").write_bytes(encode(usage()))
    j = Journal(tmp_path)
    assert len(j.recover()) == 1
    j.open()
    j.rotate()
    assert j.closed == []  # nothing to rotate: an empty segment stays
    j.append(usage())
    j.rotate()
    (old,) = j.closed
    assert old.path.name == "000000000042.log"
    j.append(usage())
    await j.retire(old)
    assert not old.path.exists() and j.closed == []
    await j.close()
    assert sorted(p.name for p in tmp_path.glob("*.log")) == ["000000000041.log", "000000000043.log"]


async def test_a_full_segment_is_rotated_at_once_and_nothing_is_lost(tmp_path):
    j = opened(tmp_path, segment_bytes=4096)
    records = [usage() for _ in range(100)]  # ~150 bytes each: several segments
    for r in records:
        j.append(r)
    assert len(j.closed) >= 3
    assert [r for _, found in Journal(tmp_path).recover() for r in found] == records
    await j.close()


async def test_closing_keeps_a_segment_with_records_for_the_next_run(tmp_path):
    j = opened(tmp_path, fsync=True)
    r = usage()
    j.append(r)
    await j.close()
    assert Journal(tmp_path).recover()[0][1] == [r]


async def test_a_retired_segment_is_never_written_again(tmp_path):
    j = opened(tmp_path, fsync=True)
    j.append(usage())
    j.rotate()
    (old,) = j.closed
    await j.retire(old)  # imported and deleted
    old.append(usage())  # a late append writes nothing anywhere (and does not fail)
    await old.sync(len(old.records))
    assert not old.path.exists() and list(tmp_path.iterdir()) != []
    await j.close()


async def test_on_a_full_disk_the_record_is_kept_for_the_import_and_the_error_raised(tmp_path, monkeypatch):
    j = opened(tmp_path, segment_bytes=4096)

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    appended = 0
    with pytest.raises(OSError):
        while True:  # until the segment is full and no new one can be made
            j.append(usage())
            appended += 1
    assert j.current_records == appended + 1  # the one that did not fit is kept in memory
    monkeypatch.undo()
    j.append(usage())  # space again: a new segment
    assert [len(seg.records) for seg in j.closed] == [appended + 1] and j.current_records == 1
    await j.close()
