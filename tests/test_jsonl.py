"""fedtiny.jsonl.Tail: the one reader of JSON lines another process appends (progress, events)."""

from __future__ import annotations

from pathlib import Path

from fedtiny.jsonl import Tail
from fedtiny.runtime import channel


def test_tail_returns_complete_lines_once(tmp_path: Path) -> None:
    p = tmp_path / "events.jsonl"
    tail = Tail(p)
    assert tail.records() == []  # no file yet
    p.write_bytes(b'{"a": 1}\n{"b": 2}\n{"c"')
    assert tail.records() == [{"a": 1}, {"b": 2}]
    assert tail.records() == []  # the half-written line waits for its newline
    with p.open("ab") as fh:
        fh.write(b': 3}\nnot json\n\n{"d": "\xc3\xa9"}\n')
    assert tail.records() == [{"c": 3}, {"d": "é"}]


def test_channel_reader_reads_the_writers_records(tmp_path: Path) -> None:
    w, r = channel.Writer(tmp_path), channel.Reader(tmp_path)
    w.stopped()
    w.done(3)
    assert r.records() == [channel.RunStopped(), channel.RunDone(3)]
    assert r.records() == [] and r.error() is None


def test_channel_lines_decode_to_typed_records_and_unknown_lines_are_skipped(tmp_path: Path) -> None:
    rec = channel.RoundRecord(4, 10, 0.5, float("nan"), 1.5, 2.0)
    back = channel.decode(channel.encode(rec))
    assert isinstance(back, channel.RoundRecord) and back.round == 4 and back.rounds == 10
    assert back.accuracy == 0.5 and back.accuracy_global != back.accuracy_global  # NaN survives
    assert channel.decode({"something": "new"}) is None
    assert channel.decode({"round": "four"}) is None
