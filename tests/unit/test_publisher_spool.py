"""The durable spool: framing, order, restart, corruption and the size cap."""

from __future__ import annotations

from pathlib import Path

import pytest

from costplane.publisher.spool import DiskSpool, SpooledMessage, SpoolFull, SpoolLocked, encode_record, open_spool


def _msgs(n: int, size: int = 300) -> list[SpooledMessage]:
    return [
        SpooledMessage(b"acme", bytes([i % 256]) * size, [("h", b"v"), ("costplane-schema", b"UsageBatch")])
        for i in range(n)
    ]


def _drain(spool: DiskSpool) -> list[SpooledMessage]:
    got: list[SpooledMessage] = []
    while (oldest := spool.oldest_segment()) is not None:
        path, records = oldest
        got += records
        spool.acknowledge(path, len(records))
    return got


def test_spool_round_trip_crc_and_cap(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=1024 * 1024, segment_bytes=1000)
    msgs = [SpooledMessage(b"acme", bytes([i]) * 300, [("h", b"v")]) for i in range(10)]
    for m in msgs:
        spool.append(m)
    got: list[SpooledMessage] = []
    while (oldest := spool.oldest_segment()) is not None:
        path, records = oldest
        got += records
        spool.acknowledge(path, len(records))
    assert got == msgs
    # A torn tail (crash mid-write) is dropped and counted, the good records before it survive.
    spool.append(msgs[0])
    spool.close()
    seg = sorted(tmp_path.glob("seg-*.spool"))[-1]
    seg.write_bytes(seg.read_bytes() + b"\x00\x00\x01\x00garbage")
    path, records = DiskSpool(tmp_path).oldest_segment() or (None, [])
    assert records == [msgs[0]]
    # Cap with drop_oldest: the oldest records go, counted.
    capped = DiskSpool(tmp_path / "cap", max_bytes=2000, segment_bytes=700)
    for m in msgs:
        capped.append(m)
    assert capped.size_bytes() <= 2000 and capped.stats.dropped_full > 0


def test_records_replay_in_order_across_segments_and_restarts(tmp_path: Path) -> None:
    msgs = _msgs(30)
    first = DiskSpool(tmp_path, segment_bytes=2000)
    for m in msgs[:20]:
        first.append(m)
    first.close()  # the process exits
    second = DiskSpool(tmp_path, segment_bytes=2000)  # a new process appends behind the old records
    for m in msgs[20:]:
        second.append(m)
    assert len(list(tmp_path.glob("seg-*.spool"))) > 1
    assert _drain(second) == msgs
    assert second.is_empty() and list(tmp_path.glob("seg-*.spool")) == []


def test_a_corrupted_record_is_counted_and_nothing_after_it_in_that_segment_is_trusted(tmp_path: Path) -> None:
    msgs = _msgs(3)
    spool = DiskSpool(tmp_path)
    for m in msgs:
        spool.append(m)
    spool.close()
    (seg,) = tmp_path.glob("seg-*.spool")
    data = bytearray(seg.read_bytes())
    record_len = len(encode_record(msgs[0]))
    data[record_len + 20] ^= 0xFF  # flip a byte inside the second record's payload
    seg.write_bytes(bytes(data))
    reader = DiskSpool(tmp_path)
    _path, records = reader.oldest_segment() or (None, [])
    assert records == [msgs[0]] and reader.stats.corrupt == 1


def test_refuse_newest_keeps_the_old_records_and_raises(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=1500, segment_bytes=700, when_full="refuse_newest")
    msgs = _msgs(10)
    kept = 0
    with pytest.raises(SpoolFull):
        for m in msgs:
            spool.append(m)
            kept += 1
    assert spool.stats.refused_full == 1 and spool.size_bytes() <= 1500
    assert _drain(spool) == msgs[:kept]


def test_drop_oldest_keeps_the_newest_records(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=2000, segment_bytes=700)
    msgs = _msgs(10)
    for m in msgs:
        spool.append(m)
    got = _drain(spool)
    assert got == msgs[-len(got) :] and len(got) + spool.stats.dropped_full == len(msgs)


@pytest.mark.parametrize(("policy", "appends", "fsyncs"), [("always", 3, 3), ("roll", 3, 0), ("never", 3, 0)])
def test_fsync_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str, appends: int, fsyncs: int) -> None:
    calls: list[int] = []
    monkeypatch.setattr("costplane.publisher.spool.os.fsync", calls.append)
    spool = DiskSpool(tmp_path, fsync=policy)  # type: ignore[arg-type]
    for m in _msgs(appends):
        spool.append(m)
    assert len(calls) == fsyncs
    spool.close()
    assert len(calls) == fsyncs + (0 if policy == "never" else 1)  # closing rolls the open segment


def test_one_process_per_directory_and_slots_for_the_others(tmp_path: Path) -> None:
    first = open_spool(tmp_path)
    with pytest.raises(SpoolLocked):
        DiskSpool(tmp_path)
    second = open_spool(tmp_path)
    assert (first.directory, second.directory) == (tmp_path, tmp_path / "slot-1")
    first.append(_msgs(1)[0])
    first.close()
    again = open_spool(tmp_path)  # a restarted process gets the free slot 0 back, with its records
    assert again.directory == tmp_path and _drain(again) == _msgs(1)
    second.close()


def test_is_empty_follows_appends_and_acknowledgements_without_rescanning(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path / "s", segment_bytes=200)
    assert spool.is_empty()
    spool.append(SpooledMessage(b"k", b"v" * 300, []))  # rolls: a closed segment
    assert not spool.is_empty()
    oldest = spool.oldest_segment()
    assert oldest is not None
    spool.acknowledge(oldest[0], len(oldest[1]))
    assert spool.is_empty()
    spool.append(SpooledMessage(b"k", b"v", []))  # into a fresh open segment
    assert not spool.is_empty() and spool.size_bytes() > 0
    spool.close()
    reopened = DiskSpool(tmp_path / "s")
    assert not reopened.is_empty()  # what the last process left is found by the first scan
    reopened.close()
