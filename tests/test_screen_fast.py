"""The screen's fast path (node/screener.py answer_bytes, node/screenindex.py,
node/screenwire.py: templates, and the decisions it still makes written
without protobuf) answers byte for byte as the reference path (decide_many,
each decision encoded by protobuf), whether a caller's row is known to be its
entry's, is dirty, is missing or does not cover the call's time."""

from __future__ import annotations

import marshal
import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from keys.layout import init_consortium
from keys.signing import SigningKey
from ledger import view as V
from ledger.consent import StoredConsent
from ledger.payloads.line import MarketerLine, uscc_check_char
from ledger.payloads.preference import Preference
from ledger.record import Mark, Record
from ledger.store import Store
from markex.v1 import service_pb2 as pb
from node import screenindex
from node.localnet import free_port_block
from node.screen import _decision_bytes, decision_pb, make_screener
from node.screener import Call
from node.screenindex import ScreenIndex
from node.screenwire import batch_bytes, render

NOW = 1_790_000_000_000
D = 86_400_000
CATS = ["fraud", "real-estate", "taxi", "marketing", "harassment", "delivery"]
USCC = "91110000MA0000001" + uscc_check_char("91110000MA0000001")


class Parts:
    def __init__(self, d: Path, carriers: int = 1, internet: int = 2) -> None:
        self.cons = init_consortium(d / "c", carriers=carriers, internet=internet,
                                    base_port=free_port_block(16), now=datetime.now(UTC))
        self.dir = d / "c"
        self.store = Store(d / "db")
        self.view = V.NationalView.open(self.store, self.cons)
        self.consent = StoredConsent(self.store, self.cons.members_key)
        self.seqs: dict[str, tuple[int, bytes]] = {}

    def issue(self, pid: str, payloads: list) -> list[Record]:
        key = SigningKey.load(self.dir / pid / "signing.key")
        seq, prev = self.seqs.get(pid, (0, b""))
        out = []
        for p in payloads:
            seq += 1
            r = Record.issue(key, pid, seq, prev, NOW - 10 * D, p, consortium=self.cons.name)
            prev = r.id
            out.append(r)
        self.seqs[pid] = (seq, prev)
        return out


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Parts]:
    p = Parts(tmp_path)
    rnd = random.Random(7)
    marks1 = [Mark(f"+86138{i:08d}", CATS[i % 6], 40 + i % 60, i % 4, NOW - 20 * D,
                   NOW + (i % 9 - 3) * D) for i in range(0, 300)]
    marks2 = [Mark(f"+86138{i:08d}", CATS[(i + 2) % 6], 70, 2, NOW - 15 * D)
              for i in range(0, 300, 3)]
    p.view.apply(p.issue("internet-1", marks1) + p.issue("internet-2", marks2))
    key = p.cons.members_key
    lines = [MarketerLine(f"+86138{i:08d}", False, "Anju Realty", USCC,
                          ["real-estate", "finance"][i % 2]) for i in range(0, 300, 7)]
    prefs = [Preference(key.seal(f"+86139{i:08d}"), key.id,
                        rnd.choice([("real-estate",), ("all",), ("finance", "insurance")]),
                        ("voice",) if i % 5 == 0 else (), ((540, 720),) if i % 4 == 0 else (),
                        ("weekday",) if i % 8 == 0 else ())
             for i in range(0, 200, 2)]
    p.consent.apply(p.issue("carrier-1", lines + prefs))
    try:
        yield p
    finally:
        p.store.close()


def calls(n: int, seed: int) -> list[Call]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        caller = rnd.choice([f"+86138{rnd.randrange(400):08d}", "+86110", "+8612321",
                             f"+86137{rnd.randrange(50):08d}"])
        callee = f"+86139{rnd.randrange(250):08d}"
        at = rnd.choice([NOW, NOW + rnd.randrange(-3, 12) * D + rnd.randrange(D),
                         NOW - 400 * D])
        out.append(Call(caller, callee, at, rnd.choice(["voice", "sms"])))
    return out


def reference(sc, cs: list[Call], tags: list[int]) -> list[bytes]:
    """Each call's decision as protobuf writes its message."""
    return [decision_pb(c, d, t).SerializeToString()
            for c, d, t in zip(cs, sc.decide_many(cs), tags, strict=True)]


def wait_idle(ix: ScreenIndex) -> None:
    deadline = time.monotonic() + 60
    while not ix.idle():
        assert time.monotonic() < deadline, "the screen index never caught up"
        time.sleep(0.02)


def test_the_fast_path_answers_as_the_reference(parts: Parts) -> None:
    ix = ScreenIndex(parts.store, parts.view.entries_bytes, parts.view.numbers)
    sc = make_screener(parts.cons, parts.view, parts.consent, ix, lambda: NOW)
    cs = calls(3000, 1)
    tags = [i * 977 for i in range(len(cs))]
    before = reference(sc, cs, tags)
    # no rows yet (the index not started): every caller is read and evaluated
    assert sc.answer_bytes(cs, tags, _decision_bytes) == before
    ix.start()
    try:
        wait_idle(ix)
        assert ix.written >= parts.view.count
        hits = sc.row_hits
        fast = sc.answer_bytes(cs, tags, _decision_bytes)
        assert sc.row_hits > hits, "rows were never used"
        assert fast == before
        # the batch's bytes parse as the message protobuf would write
        resp = pb.ScreenBatchResponse.FromString(batch_bytes(fast))
        assert resp.SerializeToString() == batch_bytes(fast)
        assert [d.tag for d in resp.decisions] == tags
    finally:
        ix.stop()


def test_a_changed_entry_is_never_answered_from_its_old_row(parts: Parts) -> None:
    ix = ScreenIndex(parts.store, parts.view.entries_bytes, parts.view.numbers)
    sc = make_screener(parts.cons, parts.view, parts.consent, ix, lambda: NOW)
    ix.start()
    wait_idle(ix)
    ix.stop()                       # rows are no longer rewritten
    caller = "+8613800000002"       # taxi: labelled, from its row
    c = [Call(caller, "+8613900000001", NOW, "voice")]
    old = sc.answer_bytes(c, [1], _decision_bytes)
    assert old == reference(sc, c, [1])
    changed = parts.view.apply(parts.issue("institute", [Mark(caller, "fraud", 90, 5,
                                                               NOW - 20 * D)]))
    assert changed == {caller}
    ix.changed(changed)             # what the view keeper says on the writer thread
    new = sc.answer_bytes(c, [1], _decision_bytes)
    assert new == reference(sc, c, [1]) and new != old
    assert pb.ScreenDecision.FromString(new[0]).action == pb.SCREEN_ACTION_BLOCK
    # the index dropped: a stale row is still refused by its digest
    ix._dirty.clear()
    ix.complete = False
    assert sc.answer_bytes(c, [1], _decision_bytes) == new


def test_rows_of_handed_entries_are_the_rows_of_their_stored_bytes(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The view's `Changed` hands the index the entries it built: the rows
    made from them are byte for byte the rows of the stored entries; past
    FRESH the index reads the rest back; an entry changed again after it was
    handed over gets the later entry's row."""
    ix = ScreenIndex(parts.store, parts.view.entries_bytes, parts.view.numbers)
    sc = make_screener(parts.cons, parts.view, parts.consent, ix, lambda: NOW)
    ix.load()
    ix.catch_up()                               # the first pass, from the stored bytes
    monkeypatch.setattr(screenindex, "FRESH", 5)
    callers = [f"+8613800000{i:03d}" for i in range(10, 20)]
    changed = parts.view.apply(parts.issue("institute", [
        Mark(n, "fraud", 90, 5, NOW - 20 * D) for n in callers]))
    assert changed == set(callers) and set(changed.entries) == set(callers)
    ix.changed(changed)
    assert len(ix._fresh) == 5                  # the other five are read back
    again = parts.view.apply(parts.issue("internet-2", [Mark(callers[0], "taxi", 95, 1,
                                                             NOW - 20 * D)]))
    ix.changed(set(again))                      # no entries handed over: read back
    assert callers[0] not in ix._fresh
    kept = set(ix._fresh)
    read: list[str] = []
    entries = ix._entries

    def counted(ns: list[str]) -> list[bytes | None]:
        read.extend(ns)
        return entries(ns)

    ix._entries = counted
    assert ix.catch_up() == 10
    assert sorted(read) == sorted(set(callers) - kept) and not ix._fresh
    assert ix.rows(callers)[1] == [True] * 10
    stored = parts.view.entries_bytes(callers)
    # (marshal's bytes of equal values may differ in its reference flags: compare values)
    assert [marshal.loads(r) for r in ix.rows(callers)[0]] == [
        marshal.loads(sc.row_of(n, raw, NOW)) for n, raw in zip(callers, stored, strict=True)]
    # and the screen answers from them as the reference does
    cs = [Call(n, "+8613900000001", NOW, "voice") for n in callers]
    assert sc.answer_bytes(cs, list(range(10)), _decision_bytes) == reference(sc, cs,
                                                                              list(range(10)))


def test_a_template_renders_as_protobuf_writes_the_message() -> None:
    rnd = random.Random(3)
    for _ in range(300):
        m = pb.ScreenDecision(action=rnd.randrange(1, 5), category=rnd.choice(["", "fraud"]),
                              redress=rnd.choice(["", "去 /numbers/x 申诉"]),
                              risk=rnd.choice(["", "none", "high"]),
                              reasons=[pb.ScreenReason(code="caller-category",
                                                       records=[bytes(32)], detail="x")])
        risk, m.risk = m.risk, ""
        t = (m.SerializeToString(), pb.ScreenDecision(risk=risk).SerializeToString())
        tag = rnd.choice([0, 1, 127, 128, 2**63 + 5])
        at = rnd.choice([1, 1_790_000_000_000, 2**62])
        caller, callee = f"+8613{rnd.randrange(10**9):09d}", "+86110"
        want = pb.ScreenDecision()
        want.CopyFrom(m)
        want.risk, want.tag, want.caller, want.callee, want.at_ms = risk, tag, caller, callee, at
        assert render(t, tag, caller, callee, at) == want.SerializeToString()


def test_varints_are_written_as_protobuf_writes_them() -> None:
    from node.screenwire import _varint

    for n in [*range(0, 0x4100), 0x1FFFFF, 0x200000, 2**28, 2**35, 2**63 + 5, 2**64 - 1]:
        assert _varint(n) == pb.ScreenDecision(tag=n).SerializeToString()[1:] or n == 0


def test_a_decision_is_written_as_protobuf_writes_its_message() -> None:
    """template_of and _decision_bytes write a decision without protobuf:
    the bytes of decision_pb's message, for every action, empty and long
    fields (lengths of two bytes), empty and many records, non-ASCII text."""
    from ledger.screen import ACTIONS, Decision, Reason

    rnd = random.Random(11)
    texts = ["", "x", "the callee refuses real-estate marketing by voice", "营销企业" * 40,
             "a" * 127, "b" * 128, "c" * 20_000]
    for _ in range(400):
        reasons = tuple(
            Reason(rnd.choice(["caller-line", "callee-refused-industry", ""]),
                   tuple(rnd.choice([b"", bytes(32), bytes(range(200))])
                         for _ in range(rnd.choice([0, 1, 3, 140]))),
                   rnd.choice(texts))
            for _ in range(rnd.choice([0, 1, 2, 5])))
        d = Decision(rnd.choice(ACTIONS), rnd.choice(["", "fraud", "房产"]),
                     rnd.choice(["", "none", "high"]), reasons, rnd.choice(texts))
        call = Call(f"+8613{rnd.randrange(10**9):09d}", rnd.choice(["+86110", "+8613900000001"]),
                    rnd.choice([0, 1, 1_790_000_000_000, 2**62]), "voice")
        tag = rnd.choice([0, 1, 127, 128, 2**63 + 5])
        assert _decision_bytes(call, d, tag) == decision_pb(call, d, tag).SerializeToString()


# ---------------------------------------------------------------- resting for the writer

def _slow_rows(tmp_path: Path, numbers: list[str], busy: Callable[[], bool],
               events: list[tuple[str, object]]) -> ScreenIndex:
    """An index over `numbers` whose rows take 10 ms each; `events` records
    each row written and each time the index asked whether the writer is busy."""
    def asked() -> bool:
        got = busy()
        events.append(("asked", got))
        return got

    def row_of(n: str, raw: bytes) -> bytes:
        time.sleep(0.01)  # a chunk of measurable length, so a rest has one too
        events.append(("row", n))
        return raw

    return ScreenIndex(Store(tmp_path / "ix"), lambda ns: [n.encode() for n in ns],
                       lambda: list(numbers), row_of, yield_to=asked)


def _rows_until_idle(ix: ScreenIndex, numbers: list[str],
                     events: list[tuple[str, object]]) -> None:
    """Run `_slow_rows`'s index until it is idle: every row made, in order."""
    ix.start()
    try:
        wait_idle(ix)
    finally:
        ix.stop()
    assert ix.written == len(numbers) and [n for k, n in events if k == "row"] == numbers


def test_the_index_rests_between_chunks_while_the_writer_is_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(screenindex, "CHUNK", 2)
    # a rest long enough that only the writer's idleness ends it (a slow machine's
    # late sleeps cannot end it first)
    monkeypatch.setattr(screenindex, "REST", 10_000.0)
    monkeypatch.setattr(screenindex, "MAX_REST_S", 10_000.0)
    numbers = [f"+86138{i:08d}" for i in range(6)]
    answers = iter([True, True, True])  # busy for the first three questions, then idle
    events: list[tuple[str, object]] = []
    ix = _slow_rows(tmp_path, numbers, lambda: next(answers, False), events)
    _rows_until_idle(ix, numbers, events)
    # after the first chunk it asked, was told busy and waited (asked again)
    # before the second chunk: no row was made while the writer was busy
    first_ask = events.index(("asked", True))
    assert [k for k, _ in events[:first_ask]] == ["row", "row"]
    until_next_row = events[first_ask:events.index(("row", numbers[2]))]
    assert until_next_row[:2] == [("asked", True), ("asked", True)]
    assert ix.store.get(screenindex.FAMILY, numbers[0].encode()) == numbers[0].encode()


def test_the_index_rests_longer_while_a_stream_feeds_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a stream feeds the writer (a catch-up, an import: `fed`), a rest
    is REST_FED times a chunk's time, not REST: here REST is none, so only
    the fed rests wait, and once the stream ends the rows go on at once."""
    monkeypatch.setattr(screenindex, "CHUNK", 2)
    monkeypatch.setattr(screenindex, "REST", 0.0)
    monkeypatch.setattr(screenindex, "REST_FED", 10_000.0)
    monkeypatch.setattr(screenindex, "MAX_REST_S", 10_000.0)
    numbers = [f"+86137{i:08d}" for i in range(6)]
    fed = iter([True])  # fed at the first rest only
    answers = iter([True, True, True])  # the writer busy for three questions, then idle
    events: list[tuple[str, object]] = []
    ix = _slow_rows(tmp_path, numbers, lambda: next(answers, False), events)
    ix.fed = lambda: next(fed, False)
    _rows_until_idle(ix, numbers, events)
    # after the first chunk: a fed rest, which waited (asked again) while busy
    first_ask = events.index(("asked", True))
    assert [k for k, _ in events[:first_ask]] == ["row", "row"]
    assert events[first_ask:first_ask + 4] == [("asked", True)] * 3 + [("asked", False)]
    assert [k for k, _ in events[first_ask + 4:]] == ["row"] * 4  # no rest once not fed


def test_a_rest_ends_after_max_rest_s_under_a_writer_always_fed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk that took long (a loaded machine) under a writer that is always
    busy and fed would rest REST_FED times as long: the rest ends after
    MAX_REST_S, so a chunk is written at least that often (found by the
    review: an IssueMany held open kept the rows resting 20 chunks' time)."""
    monkeypatch.setattr(screenindex, "MAX_REST_S", 0.2)
    ix = _slow_rows(tmp_path, [], lambda: True, [])
    ix.fed = lambda: True
    ix._since = time.monotonic() - 60.0  # the chunk took a minute: uncapped, a 20-minute rest
    start = time.monotonic()
    ix._rest()
    assert time.monotonic() - start < 30.0


def test_the_index_finishes_under_a_writer_that_is_always_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rest is bounded by the chunk's time: a sustained load slows the rows
    down (to a 1/(1+REST) share), it never stops them."""
    monkeypatch.setattr(screenindex, "CHUNK", 2)
    numbers = [f"+86139{i:08d}" for i in range(6)]
    events: list[tuple[str, object]] = []
    ix = _slow_rows(tmp_path, numbers, lambda: True, events)
    _rows_until_idle(ix, numbers, events)
    assert ("asked", True) in events


# ---------------------------------------------------------------- rows across a restart


def reopen(parts: Parts, tmp: Path) -> ScreenIndex:
    """The store closed and opened again, as a restarted node finds it (a
    crash included: every write is unsynced, and a reopened store holds all
    that returned), with a new view, consent state, index and screener."""
    parts.store.close()
    parts.store = Store(tmp / "db")
    parts.view = V.NationalView.open(parts.store, parts.cons)
    parts.consent = StoredConsent(parts.store, parts.cons.members_key)
    return ScreenIndex(parts.store, parts.view.entries_bytes, parts.view.numbers)


def test_rows_survive_a_restart_and_only_changed_entries_are_redone(
        parts: Parts, tmp_path: Path) -> None:
    ix = ScreenIndex(parts.store, parts.view.entries_bytes, parts.view.numbers)
    make_screener(parts.cons, parts.view, parts.consent, ix, lambda: NOW)
    ix.start()
    wait_idle(ix)
    ix.stop()
    # An entry changes and the node dies before its index hears of it.
    caller, other = "+8613800000002", "+8613800000004"
    assert parts.view.apply(parts.issue("institute", [Mark(caller, "fraud", 90, 5,
                                                           NOW - 20 * D)])) == {caller}
    ix2 = reopen(parts, tmp_path)
    sc = make_screener(parts.cons, parts.view, parts.consent, ix2, lambda: NOW)
    ix2.load()                                    # what start trusts, before its thread runs
    assert ix2.complete                           # no pass over every entry again
    _, trusted = ix2.rows([caller, other])
    assert trusted == [False, True]               # the changed one is read and checked
    cs = [Call(caller, "+8613900000001", NOW, "voice")] + calls(500, 5)
    tags = list(range(len(cs)))
    got = sc.answer_bytes(cs, tags, _decision_bytes)
    assert got == reference(sc, cs, tags)
    assert pb.ScreenDecision.FromString(got[0]).action == pb.SCREEN_ACTION_BLOCK
    ix2.start()
    try:
        wait_idle(ix2)
        assert ix2.written == 1                   # only the changed entry's row redone
        assert ix2.rows([caller])[1] == [True]
        assert sc.answer_bytes(cs, tags, _decision_bytes) == got
    finally:
        ix2.stop()


def test_rows_made_by_another_release_of_the_rules_are_not_trusted(
        parts: Parts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stored row holds decisions the rule table made: rows made by code
    whose rules, reasons, summary or encoding differ (another ROWS_CODE) are
    another version, so a start passes over every entry again."""
    import node.screener as screener

    ix = ScreenIndex(parts.store, parts.view.entries_bytes, parts.view.numbers)
    make_screener(parts.cons, parts.view, parts.consent, ix, lambda: NOW)
    ix.start()
    wait_idle(ix)
    ix.stop()
    monkeypatch.setattr(screener, "ROWS_CODE", b"\x00" * 8)   # the next release
    ix2 = reopen(parts, tmp_path)
    make_screener(parts.cons, parts.view, parts.consent, ix2, lambda: NOW)
    ix2.load()
    assert not ix2.complete
    assert ix2.rows(["+8613800000004"])[1] == [False]


def test_a_start_after_an_unfinished_pass_or_a_cleared_view_passes_again(
        parts: Parts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import node.screenindex as screenindex

    monkeypatch.setattr(screenindex, "CHUNK", 50)
    ix = ScreenIndex(parts.store, parts.view.entries_bytes, parts.view.numbers)
    make_screener(parts.cons, parts.view, parts.consent, ix, lambda: NOW)
    ix._stop = True                               # dies after its first chunk
    ix._write_all()
    assert ix.written == 50 and not ix.complete
    ix2 = reopen(parts, tmp_path)
    make_screener(parts.cons, parts.view, parts.consent, ix2, lambda: NOW)
    ix2.load()
    assert not ix2.complete                       # the unfinished pass's rows are not trusted
    ix2.start()
    try:
        wait_idle(ix2)
        assert ix2.written >= parts.view.count
    finally:
        ix2.stop()
    # The view cleared and rebuilt while no index listened: its rows are not the view's.
    parts.view.clear()
    parts.view.apply(parts.issue("internet-1", [Mark("+8613800000001", "taxi", 60, 1,
                                                     NOW - 20 * D)]))
    ix3 = reopen(parts, tmp_path)
    sc = make_screener(parts.cons, parts.view, parts.consent, ix3, lambda: NOW)
    ix3.load()
    assert not ix3.complete
    cs = calls(300, 9)
    tags = list(range(len(cs)))
    assert sc.answer_bytes(cs, tags, _decision_bytes) == reference(sc, cs, tags)


def test_a_start_after_running_without_rows_passes_again(
        parts: Parts, tmp_path: Path) -> None:
    """A node that kept no rows for a while (node.toml `screen_rows = false`)
    forgot the rows' state at its start, and its view wrote no journal: the
    next start that keeps rows trusts none of the old rows (a full pass), so
    an entry changed meanwhile is never answered from its old row."""
    caller = "+8613800000002"
    ix = ScreenIndex(parts.store, parts.view.entries_bytes, parts.view.numbers)
    make_screener(parts.cons, parts.view, parts.consent, ix, lambda: NOW)
    ix.start()
    try:
        wait_idle(ix)
    finally:
        ix.stop()
    assert ix.complete
    # A start without rows: the state and the journal go; the view journals nothing.
    parts.store.close()
    parts.store = Store(tmp_path / "db")
    screenindex.forget_rows(parts.store)
    parts.view = V.NationalView.open(parts.store, parts.cons, journal=False)
    parts.view.apply(parts.issue("institute", [Mark(caller, "fraud", 90, 5, NOW - 20 * D)]))
    assert list(parts.store.items(screenindex.CHANGED)) == []
    ix2 = reopen(parts, tmp_path)
    sc = make_screener(parts.cons, parts.view, parts.consent, ix2, lambda: NOW)
    ix2.load()
    assert not ix2.complete                       # the old rows are not trusted
    cs = calls(300, 9) + [Call(caller, "+8613900000011", NOW, "voice")]
    tags = list(range(len(cs)))
    assert sc.answer_bytes(cs, tags, _decision_bytes) == reference(sc, cs, tags)


def test_an_entry_changed_while_its_row_is_made_stays_journalled(
        parts: Parts, tmp_path: Path) -> None:
    """The writer changes an entry between the index's read and its write:
    the row written is the old entry's, so the number must stay in the
    journal (a restart then checks its row against its entry)."""
    caller = "+8613800000002"
    ix: ScreenIndex

    def entries(numbers: list[str]) -> list[bytes | None]:
        got = parts.view.entries_bytes(numbers)
        if caller in numbers:
            with ix._view_lock:                   # as the view keeper's writer does
                ix.changed(parts.view.apply(parts.issue(
                    "institute", [Mark(caller, "fraud", 90, 5, NOW - 20 * D)])))
        return got

    ix = ScreenIndex(parts.store, entries, parts.view.numbers)
    make_screener(parts.cons, parts.view, parts.consent, ix, lambda: NOW)
    ix._write_all()                               # one pass, its thread never started
    assert ix.complete
    _, trusted = ix.rows([caller, "+8613800000004"])
    assert trusted == [False, True]
    ix2 = reopen(parts, tmp_path)                 # the node dies before it writes the row again
    sc = make_screener(parts.cons, parts.view, parts.consent, ix2, lambda: NOW)
    ix2.load()
    assert ix2.complete and ix2.rows([caller])[1] == [False]
    c = [Call(caller, "+8613900000001", NOW, "voice")]
    got = sc.answer_bytes(c, [1], _decision_bytes)
    assert got == reference(sc, c, [1])
    assert pb.ScreenDecision.FromString(got[0]).action == pb.SCREEN_ACTION_BLOCK


def test_registered_callers_without_an_entry_answer_as_the_reference(parts: Parts) -> None:
    """Lines on numbers the view holds nothing of (an exact one, a prefix):
    the fast path answers them from one template per line (the redress
    written per caller), byte for byte as the reference, refused or not."""
    parts.consent.apply(parts.issue("carrier-1", [
        MarketerLine("+8613700000001", False, "Anju Realty", USCC, "real-estate"),
        MarketerLine("+861370000002", True, "Anju Realty", USCC, "finance"),
    ]))
    ix = ScreenIndex(parts.store, parts.view.entries_bytes, parts.view.numbers)
    sc = make_screener(parts.cons, parts.view, parts.consent, ix, lambda: NOW)
    ix.catch_up()
    callers = ["+8613700000001", "+8613700000020", "+8613700000027", "+8613700000033"]
    cs = [Call(a, f"+86139{j:08d}", at, mode) for a in callers for j in range(0, 60, 3)
          for at in (NOW, NOW + 3 * D + 5) for mode in ("voice", "sms")]
    tags = list(range(len(cs)))
    got = sc.answer_bytes(cs, tags, _decision_bytes)
    assert got == reference(sc, cs, tags)
    actions = {pb.ScreenDecision.FromString(b).action for b in got}
    assert {pb.SCREEN_ACTION_BLOCK, pb.SCREEN_ACTION_LABEL} <= actions
    assert len(sc._line_templates) == 2            # one per line, whatever the caller
    assert sc.answer_bytes(cs, tags, _decision_bytes) == got


def test_a_marketers_row_answers_unless_its_callee_refuses(
        parts: Parts, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unregistered caller marked with a marketing category: its row holds
    the answer for a callee who does not refuse its industries, so only the
    calls to a refusing callee go through the rule table; every answer is
    the reference's, byte for byte."""
    import node.screener as screener
    from ledger.screen import BLOCK, CALLEE_REFUSED

    ix = ScreenIndex(parts.store, parts.view.entries_bytes, parts.view.numbers)
    sc = make_screener(parts.cons, parts.view, parts.consent, ix, lambda: NOW)
    ix.catch_up()
    plain = "+8613700000001"                      # no preference
    marketers = []
    for i in range(300):
        caller = f"+86138{i:08d}"
        c = Call(caller, plain, NOW, "voice")
        t = sc._facts([c])[0].template
        d = sc.decide_many([c])[0]
        if t is not None and len(t) == 3 and parts.consent.line_at(caller, NOW) is None and (
                d.action != BLOCK):                 # a refusal would change its answer
            marketers.append(caller)
    assert len(marketers) >= 10
    cs = [Call(a, f"+86139{j:08d}", at, mode) for a in marketers for j in range(0, 40)
          for at in (NOW, NOW + 3 * D + 5) for mode in ("voice", "sms")]
    tags = list(range(len(cs)))
    want = reference(sc, cs, tags)
    refused = sum(1 for d in sc.decide_many(cs) if d.code == CALLEE_REFUSED)
    assert 0 < refused < len(cs)
    decided = []
    real = screener.decide
    monkeypatch.setattr(screener, "decide", lambda *a, **k: decided.append(a) or real(*a, **k))
    assert sc.answer_bytes(cs, tags, _decision_bytes) == want
    assert len(decided) == refused                # the others from the row's template


def test_a_batchs_calls_are_parsed_as_parse_call_parses_them(parts: Parts) -> None:
    """ScreenBatch parses its calls inline: each answer is the one of
    parse_call's call (the reference's bytes), or of its very error."""
    from ledger.errors import BadInput
    from node.screen import ScreeningService, error_pb, parse_call

    ix = ScreenIndex(parts.store, parts.view.entries_bytes, parts.view.numbers)
    sc = make_screener(parts.cons, parts.view, parts.consent, ix, lambda: NOW)
    ix.catch_up()
    service = ScreeningService(parts.cons, sc, lambda: NOW)
    reqs = [
        pb.ScreenRequest(caller="+8613800000002", callee="+8613900000002", at_ms=NOW, tag=1),
        pb.ScreenRequest(caller="138 0000 0003", callee="(139) 0000-0004", tag=2),
        pb.ScreenRequest(caller="+8613800000002", callee="+8613900000002", mode=7, tag=3),
        pb.ScreenRequest(caller="+8613800000002", callee="+8613900000002", at_ms=-1, tag=4),
        pb.ScreenRequest(caller="call me", callee="+8613900000002", tag=5),
        pb.ScreenRequest(caller="+8613800000002", callee="+86", tag=6),
        pb.ScreenRequest(caller="+8613700000001", callee="+8613900000006",
                         mode=pb.CALL_MODE_SMS, tag=7),
    ]
    got = service._answers(reqs)
    errors = 0
    for req, b in zip(reqs, got, strict=True):
        try:
            call = parse_call(req, NOW)
        except BadInput as e:
            errors += 1
            assert b == error_pb(req, e).SerializeToString()
        else:
            assert b == reference(sc, [call], [req.tag])[0]
    assert errors == 4
