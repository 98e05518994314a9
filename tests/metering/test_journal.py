import asyncio
import os

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


async def test_records_are_on_disk_once_durable_returns(tmp_path):
    j = Journal(tmp_path)
    j.recover()
    j.open()
    records = [usage() for _ in range(3)]
    tickets = [j.append(r) for r in records]
    await asyncio.gather(*(j.durable(t) for t in tickets))
    # another process (the next mist up) reads them back without this one closing anything
    assert Journal(tmp_path).recover()[0][1] == records
    await j.close()


async def test_concurrent_callers_share_group_commits(tmp_path):
    j = Journal(tmp_path)
    j.recover()
    j.open()

    async def one():
        await j.durable(j.append(usage()))

    await asyncio.gather(*(one() for _ in range(500)))
    assert 1 <= j.counts["flushes"] <= 10  # not one fdatasync per record
    assert len(Journal(tmp_path).recover()[0][1]) == 500
    await j.close()


async def test_recovery_skips_a_damaged_line_and_keeps_the_rest(tmp_path):
    j = Journal(tmp_path)
    j.recover()
    j.open()
    a, b = usage(), usage()
    await j.durable(j.append(a))
    seg_path = next(tmp_path.glob("*.log"))
    with open(seg_path, "ab") as f:
        f.write(encode(usage())[:20])  # a torn write
        f.write(b"\n")
    await j.durable(j.append(b))
    (path, found), = Journal(tmp_path).recover()
    assert path == seg_path and found == [a, b]
    await j.close()


async def test_rotation_keeps_old_segments_until_retired_and_numbers_new_ones_after_any_left(tmp_path):
    (tmp_path / "000000000041.log").write_bytes(encode(usage()))
    j = Journal(tmp_path)
    assert len(j.recover()) == 1
    j.open()
    assert j.rotate() is None  # nothing to rotate: an empty segment stays
    await j.durable(j.append(usage()))
    old = j.rotate()
    assert old is not None and old.path.name == "000000000042.log"
    await j.durable(j.append(usage()))
    await j.retire(old)
    assert not old.path.exists()
    await j.close()
    assert sorted(p.name for p in tmp_path.glob("*.log")) == ["000000000041.log", "000000000043.log"]


async def test_closing_writes_out_what_was_appended_but_not_waited_for(tmp_path):
    j = Journal(tmp_path)
    j.recover()
    j.open()
    r = usage()
    j.append(r)
    await j.close()
    assert Journal(tmp_path).recover()[0][1] == [r]


async def test_without_fsync_the_write_alone_is_waited_for(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(os, "fdatasync", synced.append)
    j = Journal(tmp_path, fsync=False)
    j.recover()
    j.open()
    await j.durable(j.append(usage()))
    assert synced == [] and len(Journal(tmp_path).recover()[0][1]) == 1
    await j.close()


async def test_a_retired_segment_is_never_written_again(tmp_path):
    j = Journal(tmp_path)
    j.recover()
    j.open()
    ticket = j.append(usage())  # appended, its write not started yet
    old = j.rotate()
    await j.retire(old)  # imported elsewhere and deleted
    other = tmp_path / "other-file"
    fd = os.open(other, os.O_WRONLY | os.O_CREAT)  # may take the retired segment's descriptor number
    await j.durable(ticket)
    os.close(fd)
    assert other.read_bytes() == b"" and not old.path.exists()
    await j.close()
