import asyncio
import os

import pytest

from mist.metering.journal import Journal, decode, encode
from tests.metering.conftest import usage


def test_a_record_survives_its_encoding_bit_for_bit():
    r = usage(tenant="ténant ünïcode \n\t", outcome="failed")
    assert decode(encode(r)) == r


def test_a_damaged_line_is_refused_not_misread():
    line = encode(usage())
    assert decode(line.replace(b"resize", b"resizf")) is None
    assert decode(line[: len(line) // 2]) is None  # cut by a power cut
    assert decode(b"garbage\n") is None


def test_a_record_is_in_the_file_once_append_returns(tmp_path):
    j = Journal(tmp_path)
    j.recover()
    j.open()
    records = [usage() for _ in range(3)]
    for r in records:
        j.append(r)
    # another process (the next mist up, after a kill) reads them back; nothing was closed or awaited
    assert Journal(tmp_path).recover()[0][1] == records


async def test_with_fsync_concurrent_callers_share_group_committed_fdatasyncs(tmp_path, monkeypatch):
    synced = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(fd), real(fd)))
    j = Journal(tmp_path, fsync=True)
    j.recover()
    j.open()

    async def one():
        await j.sync(j.append(usage()))

    await asyncio.gather(*(one() for _ in range(500)))
    assert 1 <= len(synced) <= 10 and j.counts["syncs"] == len(synced)  # not one fdatasync per record
    assert len(Journal(tmp_path).recover()[0][1]) == 500
    await j.close()


async def test_recovery_skips_a_damaged_line_and_keeps_the_rest(tmp_path):
    j = Journal(tmp_path)
    j.recover()
    j.open()
    a, b = usage(), usage()
    j.append(a)
    seg_path = next(tmp_path.glob("*.log"))
    with open(seg_path, "ab") as f:
        f.write(encode(usage())[:20])  # a torn write
        f.write(b"\n")
    j.append(b)
    (path, found), = Journal(tmp_path).recover()
    assert path == seg_path and found == [a, b]
    await j.close()


async def test_rotation_keeps_old_segments_until_retired_and_numbers_new_ones_after_any_left(tmp_path):
    (tmp_path / "000000000041.log").write_bytes(encode(usage()))
    j = Journal(tmp_path)
    assert len(j.recover()) == 1
    j.open()
    assert j.rotate() is None  # nothing to rotate: an empty segment stays
    j.append(usage())
    old = j.rotate()
    assert old is not None and old.path.name == "000000000042.log"
    j.append(usage())
    await j.retire(old)
    assert not old.path.exists()
    await j.close()
    assert sorted(p.name for p in tmp_path.glob("*.log")) == ["000000000041.log", "000000000043.log"]


async def test_closing_keeps_a_segment_with_records_for_the_next_run(tmp_path):
    j = Journal(tmp_path, fsync=True)
    j.recover()
    j.open()
    r = usage()
    j.append(r)
    await j.close()
    assert Journal(tmp_path).recover()[0][1] == [r]


async def test_without_fsync_nothing_waits_for_the_disk(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(os, "fdatasync", synced.append)
    j = Journal(tmp_path)
    j.recover()
    j.open()
    await j.sync(j.append(usage()))
    assert synced == [] and len(Journal(tmp_path).recover()[0][1]) == 1
    await j.close()


async def test_a_retired_segment_is_never_written_again(tmp_path):
    j = Journal(tmp_path, fsync=True)
    j.recover()
    j.open()
    j.append(usage())
    old_seg = j.rotate()
    await j.retire(old_seg)  # imported and deleted
    size = len(old_seg.records)
    other = tmp_path / "other-file"
    fd = os.open(other, os.O_WRONLY | os.O_CREAT)  # may take the retired segment's descriptor number
    old_seg.append(usage())  # a late append writes nothing anywhere
    await old_seg.sync(size + 1)  # and a late sync does not touch the descriptor
    os.close(fd)
    assert other.read_bytes() == b"" and not old_seg.path.exists()
    await j.close()


async def test_after_a_failed_write_the_segment_is_written_no_more_but_keeps_its_records(tmp_path, monkeypatch):
    j = Journal(tmp_path)
    j.recover()
    j.open()

    def full(fd, data):
        raise OSError(28, "No space left on device")

    real = os.write
    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError):
        j.append(usage())
    monkeypatch.setattr(os, "write", real)
    j.append(usage())
    seg = j.rotate()
    assert len(seg.records) == 2 and seg.path.read_bytes() == b""
    await j.close()
