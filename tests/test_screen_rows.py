"""The screen rows' storage (node/screener.py `stored_row`, node/screenindex.py):
an entry that answers as no entry keeps no row, the index remembers from
when (`elided_from`, across a restart), and a screen of such a caller, before
that time or with a line, still answers as the reference path; a full pass
writes no tombstones; a row's head is what the batch's first pass reads."""

from __future__ import annotations

import marshal
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.consent.facts import LineFact
from ledger.consent.rules import LineIndex
from ledger.payloads.line import MarketerLine
from ledger.record import Mark
from ledger.view.summary import summarize
from node import screenindex
from node.screen import _decision_bytes, make_screener
from node.screener import ROW_VERSION, Call, _read_row
from node.screenindex import ScreenIndex
from tests.test_screen_fast import NOW, USCC, D, Parts, reference

DEAD = "+8613700000001"      # one fraud mark, expired before the rows' start
LIVE = "+8613700000002"      # one fraud mark in force: its row holds a BLOCK
LINED = "+8613700000003"     # an expired mark, and a live marketer line
CALLEE = "+8613900000002"


def _fill(parts: Parts) -> None:
    marks = [Mark(DEAD, "fraud", 90, 2, NOW - 20 * D, NOW - 5 * D),
             Mark(LIVE, "fraud", 90, 2, NOW - 20 * D),
             Mark(LINED, "fraud", 90, 2, NOW - 20 * D, NOW - 5 * D)]
    parts.view.apply(parts.issue("internet-1", marks))
    parts.consent.apply(parts.issue("carrier-1", [
        MarketerLine(LINED, False, "Anju Realty", USCC, "real-estate")]))


@pytest.fixture
def made(tmp_path: Path) -> Iterator[Parts]:
    p = Parts(tmp_path)
    _fill(p)
    try:
        yield p
    finally:
        p.store.close()


def _index(parts: Parts) -> tuple[ScreenIndex, object]:
    ix = ScreenIndex(parts.store, parts.view.entries_bytes, parts.view.numbers)
    sc = make_screener(parts.cons, parts.view, parts.consent, ix, lambda: NOW)
    return ix, sc


def test_an_entry_answering_as_none_keeps_no_row_and_answers_as_the_reference(
        made: Parts) -> None:
    parts = made
    ix, sc = _index(parts)
    ix.catch_up()
    start = NOW - parts.cons.policy.clock_skew_ms
    rows, trusted = ix.rows([DEAD, LIVE])
    assert rows[0] is None and rows[1] is not None and trusted == [True, True]
    assert ix.elided_from == start
    stored = parts.store.get(screenindex.FAMILY, screenindex.ELIDED_KEY)
    assert stored is not None and int.from_bytes(stored, "big") == start
    # at the rows' start and after: rule 9, as with no entry; before it (the mark
    # in force), its entry is read; a registered caller's entry is read too
    cs = [Call(DEAD, CALLEE, t, "voice") for t in (start, NOW, NOW - 10 * D, start - 1)]
    cs += [Call(LIVE, CALLEE, NOW, "voice"), Call(LINED, CALLEE, NOW, "sms"),
           Call(LINED, CALLEE, NOW - 10 * D, "voice")]
    want = reference(sc, cs, list(range(len(cs))))
    assert sc.answer_bytes(cs, list(range(len(cs))), _decision_bytes) == want
    old = [d.code for d in sc.decide_many(cs[:3])]
    assert old == ["caller-unknown", "caller-unknown", "caller-risk-warn"]   # its mark then
    # a unary screen of it reads its entry only where its answer may differ from
    # no entry's: before the rows' start, or for a caller with a line
    read: list[str] = []
    entries = parts.view.entries_bytes

    def counted(ns: list[str]) -> list[bytes | None]:
        read.extend(ns)
        return entries(ns)

    sc.view = type("Counted", (), {"entries_bytes": staticmethod(counted)})()
    assert [d.code for d in sc.decide_many(cs[:2])] == ["caller-unknown"] * 2 and read == []
    assert sc.decide_many(cs[2:3])[0].code == "caller-risk-warn" and read == [DEAD]
    sc.decide_many([cs[5]])
    assert read == [DEAD, LINED]
    sc.view = parts.view
    # a restart trusts the rows and remembers from when an absent row may be an entry
    again, sc2 = _index(parts)
    again.load()
    assert again.complete and again.elided_from == start
    assert sc2.answer_bytes(cs, list(range(len(cs))), _decision_bytes) == want


def test_a_full_pass_writes_no_tombstone_and_a_later_elision_deletes_the_row(
        made: Parts) -> None:
    parts = made
    later = "+8613700000004"       # a mark in force until two days from NOW
    parts.view.apply(parts.issue("internet-2", [Mark(later, "fraud", 90, 2, NOW - 20 * D,
                                                     NOW + 2 * D)]))
    clock = [NOW]
    ix = ScreenIndex(parts.store, parts.view.entries_bytes, parts.view.numbers)
    sc = make_screener(parts.cons, parts.view, parts.consent, ix, lambda: clock[0])
    ix.catch_up()
    cf = parts.store._cfs[screenindex.FAMILY]
    # DEAD keeps no row, and the pass (which deleted every row first) no tombstone
    assert ix.rows([DEAD, later])[0][0] is None and ix.rows([later])[0][0] is not None
    assert cf.property_value("rocksdb.num-deletes-active-mem-table") == "0"
    # three days on, the row of `later` is made again: it answers as none from
    # then on, so its old row is deleted (not left to answer)
    clock[0] = NOW + 3 * D
    ix.changed({later})
    assert ix.catch_up() == 1
    assert ix.rows([later])[0] == [None] and ix.elided_from == clock[0] - (
        parts.cons.policy.clock_skew_ms)
    assert cf.property_value("rocksdb.num-deletes-active-mem-table") == "1"
    c = [Call(later, CALLEE, t, "voice") for t in (NOW + 3 * D, NOW + D, NOW)]
    want = reference(sc, c, [1, 2, 3])
    assert sc.answer_bytes(c, [1, 2, 3], _decision_bytes) == want
    assert [d.code for d in sc.decide_many(c)][0] == "caller-unknown"
    assert [d.code for d in sc.decide_many(c)][1] != "caller-unknown"


def test_a_rows_head_is_read_alone_and_the_whole_row_round_trips(made: Parts) -> None:
    parts = made
    ix, sc = _index(parts)
    raw = parts.view.entries_bytes([LIVE])[0]
    assert raw is not None
    row = sc.row_of(LIVE, raw, NOW)
    version, tag, from_ms, ahead, templates = marshal.loads(row)
    s = summarize(raw, NOW - parts.cons.policy.clock_skew_ms)
    assert (version, tag, from_ms, ahead) == (ROW_VERSION, sc.tag, s.from_ms, s.ahead)
    got = _read_row(row, sc.tag)
    assert got is not None and got.summary == s and got.templates == templates
    assert _read_row(row, b"another!") is None and _read_row(row[:-5], sc.tag) is None
    kept = sc.stored_row(LIVE, raw, NOW)    # (marshal's reference flags may differ: values)
    assert isinstance(kept, bytes) and _read_row(kept, sc.tag) == got
    dead = parts.view.entries_bytes([DEAD])[0]
    assert dead is not None and sc.stored_row(DEAD, dead, NOW) == s.from_ms


def _line(number: str, prefix: bool, seq: int, ended: int = 0) -> LineFact:
    return LineFact(bytes([seq]) * 32, "carrier-1", seq, 100, number, prefix, "E", USCC,
                    "finance", ended)


def test_line_at_turns_away_numbers_under_no_prefix_as_the_full_search_does() -> None:
    lines = [_line("+864008", True, 1), _line("+8640081", True, 2, ended=500),
             _line("+8613800000001", False, 3), _line("+861", True, 4, ended=100)]
    idx = LineIndex({f.id: f for f in lines})

    def full(number: str, at: int) -> LineFact | None:
        exact = [f for f in idx.exact.get(number, ()) if f.issued_at <= at and (
            not f.ended_at or f.ended_at > at)]
        if exact:
            return exact[0]
        for n in range(len(number), 3, -1):
            for f in idx.prefixes.get(number[:n], ()):
                if f.issued_at <= at and (not f.ended_at or f.ended_at > at):
                    return f
        return None

    for number in ("+8640081234567", "+8640089999999", "+8613800000001", "+8613800000002",
                   "+864008", "+86400", "+8610086"):
        for at in (50, 100, 300, 600):
            assert idx.line_at(number, at) == full(number, at), (number, at)
    assert idx.line_at("+8640081234567", 300).seq == 2          # the longest prefix
    assert idx.line_at("+8640081234567", 600).seq == 1          # the longer one ended
    assert idx.line_at("+8613900000001", 300) is None


def _plain_and_batch(parts: Parts, sc: object, number: str) -> tuple[bytes, bytes]:
    """(the decision of a screener that reads the entry, the batch path's)."""
    calls = [Call(number, CALLEE, NOW, "voice")]
    plain = make_screener(parts.cons, parts.view, parts.consent)   # no index: the entry
    return (reference(plain, calls, [1])[0],
            sc.answer_bytes(calls, [1], _decision_bytes)[0])  # type: ignore[attr-defined]


def test_a_row_whose_head_passes_64_kib_is_stored_and_screens_as_its_entry(
        tmp_path: Path) -> None:
    """The review's case: ten issuers marking one number eight times each,
    each issuer's marks ending in the reverse order they began (its mark that
    counts changes at every instant, so intervals of equal facts, which share
    one template, are few), make a row head of about 80 KB; its length no
    longer overflows the row's tail, so the heavily marked number BLOCKs on
    every path, as its entry does."""
    parts = Parts(tmp_path, carriers=3, internet=6)   # ten issuers with the institute
    try:
        number = "+8613800000077"
        issuers = [q.id for q in parts.cons.participants
                   if q.role in ("carrier", "internet", "institute")]
        recs = []
        for k, pid in enumerate(issuers):
            recs += parts.issue(pid, [
                Mark(number, "fraud", 60 + i * 4 + k, 3, NOW - 20 * D + (i * 7 + k) * 3_600_000,
                     NOW + D + ((7 - i) * 7 + k) * 3_600_000) for i in range(8)])
        parts.view.apply(recs)
        ix = ScreenIndex(parts.store, parts.view.entries_bytes, parts.view.numbers)
        sc = make_screener(parts.cons, parts.view, parts.consent, ix, lambda: NOW - 21 * D)
        row = sc.row_of(number, parts.view.entries_bytes([number])[0], NOW - 21 * D)
        assert int.from_bytes(row[-4:], "big") > 65_536 and _read_row(row, sc.tag) is not None
        ix.catch_up()
        assert ix.rows([number]) == ([row], [True])
        plain, batch = _plain_and_batch(parts, sc, number)
        assert batch == plain and b"fraud" in batch
        assert reference(sc, [Call(number, CALLEE, NOW, "voice")], [1])[0] == plain
    finally:
        parts.store.close()


def test_a_row_that_cannot_be_made_is_stored_as_unreadable_and_the_entry_is_read(
        made: Parts, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure making a row must not read as "no row", which for a clean number
    means no entry or one answering as none: LIVE's fraud mark still counts."""
    from node.screener import UNREAD_ROW

    parts = made
    ix, sc = _index(parts)

    def fails(number: str, raw: object, now_ms: int) -> bytes | int:
        raise OverflowError("a row the code cannot write")

    monkeypatch.setattr(sc, "stored_row", fails)
    ix.catch_up()
    assert ix.rows([LIVE]) == ([UNREAD_ROW], [True])
    plain, batch = _plain_and_batch(parts, sc, LIVE)
    assert batch == plain and b"caller-risk-" in plain   # not caller-unknown
    assert reference(sc, [Call(LIVE, CALLEE, NOW, "voice")], [1])[0] == plain
