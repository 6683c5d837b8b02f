"""NodeLedger: every append check has its own typed error and changes nothing;
duplicates are idempotent; equivocations are kept and freeze the feed;
out-of-order records wait; reopening restores the exact state."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ledger import errors as E
from ledger import merkle
from ledger.log import EquivocationProof, NodeLedger
from ledger.record import Correction, Fields, Mark, Reassignment, Record, parse_envelope
from ledger.store import Store
from markex.v1 import record_pb2 as pb
from tests.conftest import KEYS, NAME, NOW, make_consortium

ID0 = bytes(32)


def rec(issuer: str, seq: int, prev: bytes, payload, at: int = NOW, key=None) -> Record:  # type: ignore[no-untyped-def]
    return Record.issue(key or KEYS[issuer], issuer, seq, prev, at, payload, consortium=NAME)


def mark(n: str = "+8613800000001", cat: str = "fraud", **kw) -> Mark:  # type: ignore[no-untyped-def]
    return Mark(n, cat, kw.pop("score", 70), kw.pop("reports", 1), NOW - 1000, **kw)


def snapshot(led: NodeLedger) -> dict[str, list[tuple[bytes, bytes]]]:
    from ledger.store import COLUMN_FAMILIES

    return {cf: list(led.store.items(cf)) for cf in COLUMN_FAMILIES}


def chain(issuer: str, n: int, start: int = 1, prev: bytes = b"") -> list[Record]:
    out = []
    for s in range(start, start + n):
        r = rec(issuer, s, prev, mark(f"+86138{s:08d}"))
        out.append(r)
        prev = r.id
    return out


# --------------------------------------------------------------- happy path


def test_parse_envelope_fields_are_records_fields_in_order() -> None:
    """Record.from_envelope is Record(*parse_envelope(...)): one field list, in
    one order, for both."""
    assert Fields._fields == tuple(f.name for f in dataclasses.fields(Record))
    r = rec("carrier-1", 1, b"", Mark("+8613812345678", "fraud"))
    assert parse_envelope(r.envelope) == tuple(getattr(r, f) for f in Fields._fields)


def test_append_builds_feed_and_log(ledger: NodeLedger) -> None:
    rs = chain("internet-1", 5)
    for r in rs:
        assert ledger.append(r.envelope, NOW).status == "accepted"
    assert ledger.size == 5
    st = ledger.feed("internet-1")
    assert (st.seq, st.head_id, st.frozen_at) == (5, rs[-1].id, None)
    leaves = [merkle.leaf_hash(r.envelope) for r in rs]
    assert ledger.root() == merkle.root_from_leaf_hashes(leaves)
    assert ledger.entries(0, 5) == [r.envelope for r in rs]
    assert ledger.records_after("internet-1", 2, 10) == [r.envelope for r in rs[2:]]
    for i in range(5):
        merkle.verify_inclusion(leaves[i], i, 5, ledger.inclusion_proof(i, 5), ledger.root())


def test_issue_signs_next_sequence(ledger: NodeLedger) -> None:
    a = ledger.issue(mark(), NOW)
    b = ledger.issue(Correction((a.record.id,), "withdraw"), NOW)
    assert (a.record.seq, b.record.seq) == (1, 2)
    assert b.record.prev_id == a.record.id


def test_duplicate_is_idempotent(ledger: NodeLedger) -> None:
    r = rec("internet-1", 1, b"", mark())
    first = ledger.append(r.envelope, NOW)
    before = snapshot(ledger)
    again = ledger.append(r.envelope, NOW)
    assert again.status == "duplicate" and again.index == first.index
    assert snapshot(ledger) == before


# --------------------------------------------------------------- each check


def _bad_envelope(body: bytes, signer: str = "internet-1") -> bytes:
    from ledger.record import signing_message

    sig = KEYS[signer].sign(signing_message(NAME, body))
    return pb.SignedRecord(body=body, signature=sig).SerializeToString()


def _body(**kw) -> bytes:  # type: ignore[no-untyped-def]
    m = kw.pop(
        "mark", pb.Mark(number="+8613800000001", category="fraud", score=50, observed_at_ms=NOW)
    )
    r = pb.Record(
        issuer=kw.pop("issuer", "internet-1"),
        seq=kw.pop("seq", 1),
        prev_id=kw.pop("prev_id", b""),
        issued_at_ms=kw.pop("at", NOW),
        **kw,
    )
    if m is not None:
        r.mark.CopyFrom(m)
    return r.SerializeToString()


CASES = [
    ("garbage", b"\xff\xfe not protobuf", E.MalformedRecord),
    ("empty", b"", E.MalformedRecord),
    (
        "too large",
        _bad_envelope(
            _body(
                mark=pb.Mark(number="+8613800000001", category="fraud", evidence_digest=b"x" * 5000)
            )
        ),
        E.TooLarge,
    ),
    ("no payload", _bad_envelope(_body(mark=None)), E.MalformedRecord),
    ("seq zero", _bad_envelope(_body(seq=0)), E.MalformedRecord),
    ("prev on first", _bad_envelope(_body(prev_id=b"\x01" * 32)), E.MalformedRecord),
    ("short prev", _bad_envelope(_body(seq=2, prev_id=b"\x01" * 5)), E.MalformedRecord),
    (
        "not a number",
        _bad_envelope(_body(mark=pb.Mark(number="call me", category="fraud"))),
        E.InvalidNumber,
    ),
    (
        "short number",
        _bad_envelope(_body(mark=pb.Mark(number="+861381234567", category="fraud"))),
        E.InvalidNumber,
    ),
    (
        "score over 100",
        _bad_envelope(_body(mark=pb.Mark(number="+8613800000001", category="fraud", score=101))),
        E.MalformedRecord,
    ),
    (
        "unknown category",
        _bad_envelope(_body(mark=pb.Mark(number="+8613800000001", category="spam"))),
        E.UnknownCategory,
    ),
    ("unknown issuer", _bad_envelope(_body(issuer="mallory")), E.UnknownIssuer),
    ("signed by another", _bad_envelope(_body(), signer="internet-2"), E.BadSignature),
    ("future", _bad_envelope(_body(at=NOW + 10 * 60 * 1000)), E.ClockSkew),
    ("gap", _bad_envelope(_body(seq=3, prev_id=b"\x01" * 32)), E.SequenceGap),
    ("wrong prev", _bad_envelope(_body(seq=2, prev_id=b"\x02" * 32)), E.WrongPrevious),
]


@pytest.mark.parametrize("name,envelope,error", CASES, ids=[c[0] for c in CASES])
def test_bad_record_has_its_error_and_changes_nothing(
    ledger: NodeLedger, name: str, envelope: bytes, error: type[Exception]
) -> None:
    ledger.append(rec("internet-1", 1, b"", mark("+8613900000009")).envelope, NOW)
    before = snapshot(ledger)
    with pytest.raises(error):
        ledger.append(envelope, NOW)
    assert snapshot(ledger) == before


def test_swapped_signature_rejected(ledger: NodeLedger) -> None:
    a = rec("internet-1", 1, b"", mark())
    b = rec("internet-1", 1, b"", mark("+8613800000002"))
    swapped = pb.SignedRecord(body=a.body, signature=b.signature).SerializeToString()
    with pytest.raises(E.BadSignature):
        ledger.append(swapped, NOW)
    assert ledger.size == 0


def test_non_canonical_envelope_rejected(ledger: NodeLedger) -> None:
    a = rec("internet-1", 1, b"", mark())
    env = pb.SignedRecord()
    env.ParseFromString(a.envelope)
    # signature first, then body: same fields, another encoding, another id
    reordered = (
        pb.SignedRecord(signature=env.signature).SerializeToString()
        + pb.SignedRecord(body=env.body).SerializeToString()
    )
    with pytest.raises(E.MalformedRecord):
        ledger.append(reordered, NOW)


@pytest.mark.parametrize(
    "issuer,payload,error",
    [
        ("carrier-1", Correction(appeal_id=b"\x01" * 32, outcome="uphold"), E.NotAllowed),
        ("internet-1", Reassignment("+8613800000001", NOW), E.NotAllowed),
        ("carrier-2", Reassignment("+8613800000001", NOW), E.NotAllowed),  # carrier-1's range
        ("carrier-1", Reassignment("+8613812345678", NOW), E.NotAllowed),  # ported to carrier-2
        ("carrier-1", Reassignment("+12025550123", NOW), E.NotAllowed),  # no carrier holds it
        ("internet-1", Correction((b"\x01" * 32,), "recategorize", "spam"), E.UnknownCategory),
        # protected numbers (policy protected_numbers), whatever the category
        ("internet-1", Mark("110", "fraud", 50, 1, NOW), E.UnmarkableNumber),
        ("institute", Mark("+8612321", "customer-service", 50, 1, NOW), E.UnmarkableNumber),
    ],
)
def test_role_rules(ledger: NodeLedger, issuer: str, payload, error) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error):
        ledger.append(rec(issuer, 1, b"", payload).envelope, NOW)
    assert ledger.size == 0


def test_roles_allowed(ledger: NodeLedger) -> None:
    ledger.append(
        rec("institute", 1, b"", Correction(appeal_id=b"\x01" * 32, outcome="reject")).envelope, NOW
    )
    ledger.append(rec("carrier-1", 1, b"", Reassignment("+8613800000001", NOW)).envelope, NOW)
    ledger.append(rec("carrier-2", 1, b"", Reassignment("13812345678", NOW)).envelope, NOW)
    assert ledger.size == 3


def test_national_forms_normalize() -> None:
    for raw, e164 in [
        ("13812345678", "+8613812345678"),
        ("010-12345678", "+861012345678"),
        ("4001234567", "+864001234567"),
        ("95555", "+8695555"),
    ]:
        r = rec("internet-1", 1, b"", Mark(raw, "fraud", 50, 1, NOW))
        assert r.payload.number == e164


# --------------------------------------------------------------- equivocation


def test_equivocation_kept_and_feed_frozen(ledger: NodeLedger, consortium) -> None:  # type: ignore[no-untyped-def]
    rs = chain("internet-1", 3)
    for r in rs:
        ledger.append(r.envelope, NOW)
    other = rec("internet-1", 2, rs[0].id, mark("+8613999999999"))
    with pytest.raises(E.Equivocation) as ei:
        ledger.append(other.envelope, NOW)
    assert ei.value.first == rs[1].envelope and ei.value.second == other.envelope
    assert ledger.feed("internet-1").frozen_at == 1
    assert ledger.feed("internet-1").counted_seq == 1
    [proof] = ledger.equivocations()
    a, b = proof.verify(consortium)
    assert {a.id, b.id} == {rs[1].id, other.id}
    with pytest.raises(E.FeedFrozen):
        ledger.append(rec("internet-1", 4, rs[2].id, mark()).envelope, NOW)
    assert ledger.size == 3


def test_equivocation_proof_from_peer(ledger: NodeLedger, consortium) -> None:  # type: ignore[no-untyped-def]
    a = rec("internet-2", 1, b"", mark())
    b = rec("internet-2", 1, b"", mark("+8613800000002"))
    assert ledger.add_equivocation_proof(EquivocationProof(a.envelope, b.envelope))
    assert ledger.feed("internet-2").frozen_at == 0
    assert not ledger.add_equivocation_proof(EquivocationProof(a.envelope, b.envelope))
    forged = pb.SignedRecord(body=b.body, signature=a.signature).SerializeToString()
    with pytest.raises(E.BadSignature):
        ledger.add_equivocation_proof(EquivocationProof(a.envelope, forged))
    with pytest.raises(E.MalformedRecord):
        ledger.add_equivocation_proof(EquivocationProof(a.envelope, a.envelope))


# --------------------------------------------------------------- out of order


def test_out_of_order_waits_then_applies(ledger: NodeLedger) -> None:
    rs = chain("internet-1", 6)
    res = ledger.submit([r.envelope for r in reversed(rs)], NOW)
    assert [o.status for o in res.outcomes] == ["buffered"] * 5 + ["accepted"]
    assert [r.seq for r in res.accepted] == [1, 2, 3, 4, 5, 6]
    assert ledger.size == 6 and ledger.buffered == 0
    assert ledger.entries(0, 6) == [r.envelope for r in rs]


def test_buffer_is_bounded(tmp_path: Path) -> None:
    cons = make_consortium(out_of_order_buffer=3, out_of_order_per_issuer=3)
    led = NodeLedger(Store(tmp_path / "db"), cons, "carrier-1")
    rs = chain("internet-1", 6)
    res = led.submit([r.envelope for r in rs[1:]], NOW)
    assert [o.status for o in res.outcomes] == ["buffered"] * 3 + ["rejected"] * 2
    assert isinstance(res.outcomes[-1].error, E.BufferFull)
    led.close()


# --------------------------------------------------------------- durability


def test_reopen_restores_exact_state(tmp_path: Path, consortium) -> None:  # type: ignore[no-untyped-def]
    led = NodeLedger(Store(tmp_path / "db"), consortium, "carrier-1", KEYS["carrier-1"])
    for r in chain("internet-1", 40):
        led.append(r.envelope, NOW)
    led.issue(mark(), NOW)
    root, size, feeds, cp = led.root(), led.size, led.feeds(), led.sign_checkpoint()
    led.close()
    led2 = NodeLedger(Store(tmp_path / "db"), consortium, "carrier-1", KEYS["carrier-1"])
    assert (led2.root(), led2.size, led2.feeds(), led2.latest_checkpoint()) == (
        root,
        size,
        feeds,
        cp,
    )
    assert led2.issue(mark("+8613800000077"), NOW).record.seq == 2
    led2.close()


def test_proofs_after_reopen_match_brute_force(tmp_path: Path, consortium) -> None:  # type: ignore[no-untyped-def]
    led = NodeLedger(Store(tmp_path / "db"), consortium, "carrier-1", KEYS["carrier-1"])
    rs = chain("internet-1", 37)
    led.submit([r.envelope for r in rs[:20]], NOW)
    led.submit([r.envelope for r in rs[20:]], NOW)
    leaves = [merkle.leaf_hash(r.envelope) for r in rs]
    for size in (1, 7, 20, 37):
        root = merkle.root_from_leaf_hashes(leaves[:size])
        assert led.root_at(size) == root
        for old in (1, 5, size):
            if old <= size:
                merkle.verify_consistency(
                    old,
                    size,
                    merkle.root_from_leaf_hashes(leaves[:old]),
                    root,
                    led.consistency_proof(old, size),
                )
    led.close()


# --------------------------------------------------------------- one consortium


def test_record_from_another_consortium_is_refused(tmp_path: Path) -> None:
    """The same participants and keys in a consortium of another name: a
    record validly signed for one is BadSignature in the other, in the ledger,
    in an equivocation proof and in verify_envelopes, and changes nothing.
    (Fails on the old context, which named no consortium.)"""
    from ledger.log import verify_envelopes

    a_cons = make_consortium()
    b_cons = dataclasses.replace(a_cons, name="markex-other")
    led = NodeLedger(Store(tmp_path / "db"), b_cons, "carrier-1")
    before = snapshot(led)
    signed_for_a = rec("internet-1", 1, b"", mark())
    assert verify_envelopes([signed_for_a.envelope], a_cons)[0].id == signed_for_a.id
    with pytest.raises(E.BadSignature):
        led.append(signed_for_a.envelope, NOW)
    with pytest.raises(E.BadSignature):
        verify_envelopes([signed_for_a.envelope], b_cons)
    twin = rec("internet-1", 1, b"", mark("+8613800000002"))
    with pytest.raises(E.BadSignature):
        led.add_equivocation_proof(EquivocationProof(signed_for_a.envelope, twin.envelope))
    assert snapshot(led) == before
    # Signed for B, the same payload is accepted there.
    for_b = Record.issue(
        KEYS["internet-1"], "internet-1", 1, b"", NOW, mark(), consortium="markex-other"
    )
    assert led.append(for_b.envelope, NOW).status == "accepted"
    led.close()


def test_record_context_names_the_consortium() -> None:
    """The signed message is the fixed context, the name, a NUL, then the exact
    body; a name that is empty or holds a NUL (which would make the split
    ambiguous) is refused."""
    from ledger.record import RECORD_CONTEXT, record_context, signing_message

    assert record_context("markex-test") == b"markex/v1/record\x00markex-test\x00"
    assert signing_message("c", b"body") == RECORD_CONTEXT + b"c\x00body"
    for bad in ("", "a\x00b"):
        with pytest.raises(E.MalformedConfig):
            record_context(bad)


# internet-1's first mark, signed with its fixed test key for "markex-test":
# any change to the body encoding, the envelope or the signing context shows here.
GOLDEN_RECORD = bytes.fromhex(
    "0a390a0a696e7465726e65742d3110012080d8c1a28c3452220a0e2b38363133383030303030303031"
    "12056672617564184620012898d0c1a28c34124025bce5ca496b8810fbbe16af30dc75da329e9dc83d"
    "534b3b8d151f48a33e88a322c1b51ea4fe31112ded50e254b05fb6e56562eccd1df5f53c1e190d34df1a08"
)
GOLDEN_RECORD_ID = "61655ece673cb1887d68a6a2c2d7766b57ca19c69c4f06f383b0fc02364b6889"


def test_golden_record_bytes(ledger: NodeLedger) -> None:
    """A record issued with a fixed key is byte for byte the golden one and is
    accepted; the golden bytes are signed in the consortium's context."""
    r = rec("internet-1", 1, b"", mark())
    assert r.envelope == GOLDEN_RECORD and r.id.hex() == GOLDEN_RECORD_ID
    assert ledger.append(GOLDEN_RECORD, NOW).status == "accepted"


# --------------------------------------------------------------- issuer-chosen times


def test_feed_time_must_not_go_back(ledger: NodeLedger) -> None:
    """A feed's issued-at never decreases: the next record issued before the
    head is FeedTimeReversed and changes nothing, appended or drained from the
    buffer; an equal time is fine."""
    a = rec("internet-1", 1, b"", mark(), at=NOW)
    ledger.append(a.envelope, NOW)
    assert ledger.feed("internet-1").head_issued_at_ms == NOW
    before = snapshot(ledger)
    back = rec("internet-1", 2, a.id, mark("+8613800000002"), at=NOW - 1)
    with pytest.raises(E.FeedTimeReversed):
        ledger.append(back.envelope, NOW)
    assert snapshot(ledger) == before
    same = rec("internet-1", 2, a.id, mark("+8613800000003"), at=NOW)
    assert ledger.append(same.envelope, NOW).status == "accepted"
    # Waiting in the buffer does not help: #4 goes back behind #3 once #3 is in.
    three = rec("internet-1", 3, same.id, mark("+8613800000004"), at=NOW + 5)
    four = rec("internet-1", 4, three.id, mark("+8613800000005"), at=NOW + 4)
    res = ledger.submit([four.envelope, three.envelope], NOW)
    assert [o.status for o in res.outcomes] == ["buffered", "accepted"]
    assert [r.seq for r in res.accepted] == [3]
    assert ledger.feed("internet-1").seq == 3 and ledger.buffered == 0


def test_mark_observed_after_issue_is_refused(ledger: NodeLedger) -> None:
    before = snapshot(ledger)
    late = rec("internet-1", 1, b"", Mark("+8613800000001", "fraud", 50, 1, NOW + 1), at=NOW)
    with pytest.raises(E.MalformedRecord, match="observed"):
        ledger.append(late.envelope, NOW)
    assert snapshot(ledger) == before
    ok = rec("internet-1", 1, b"", Mark("+8613800000001", "fraud", 50, 1, NOW), at=NOW)
    assert ledger.append(ok.envelope, NOW).status == "accepted"


def test_expiry_beyond_policy_is_refused(tmp_path: Path) -> None:
    cons = make_consortium(max_expiry_ms=10 * 86_400_000, default_expiry_ms=10 * 86_400_000)
    led = NodeLedger(Store(tmp_path / "db"), cons, "carrier-1")
    before = snapshot(led)
    seen = NOW - 1000
    limit = seen + 10 * 86_400_000
    far = rec("internet-1", 1, b"", Mark("+8613800000001", "fraud", 50, 1, seen, limit + 1))
    with pytest.raises(E.MalformedRecord, match="expires"):
        led.append(far.envelope, NOW)
    assert snapshot(led) == before
    edge = rec("internet-1", 1, b"", Mark("+8613800000001", "fraud", 50, 1, seen, limit))
    assert led.append(edge.envelope, NOW).status == "accepted"
    led.close()


def test_reassignment_effective_time_is_bounded(ledger: NodeLedger) -> None:
    """Effective at most reassignment_window_ms before issue and at most the
    clock skew after; both ends are refused beyond, by the same rule the
    ledger issues with."""
    policy = ledger.consortium.policy
    before = snapshot(ledger)
    for effective in (NOW - policy.reassignment_window_ms - 1, NOW + policy.clock_skew_ms + 1):
        r = rec("carrier-1", 1, b"", Reassignment("+8613800000001", effective))
        with pytest.raises(E.MalformedRecord, match="reassignment"):
            ledger.append(r.envelope, NOW)
        assert snapshot(ledger) == before
    with pytest.raises(E.MalformedRecord):
        ledger.issue(Reassignment("+8613800000001", NOW + policy.clock_skew_ms + 1), NOW)
    assert snapshot(ledger) == before
    earliest = NOW - policy.reassignment_window_ms
    first = rec("carrier-1", 1, b"", Reassignment("+8613800000001", earliest))
    assert ledger.append(first.envelope, NOW).status == "accepted"


def test_old_feed_state_encoding_is_read(tmp_path: Path, consortium) -> None:  # type: ignore[no-untyped-def]
    """A store written with the 48-byte FeedState (no head issued-at) opens,
    the head's issued-at is read from the head record, and a record issued
    before it is still refused."""
    import struct

    led = NodeLedger(Store(tmp_path / "db"), consortium, "carrier-1")
    rs = [rec("internet-1", 1, b"", mark(), at=NOW - 50)]
    rs.append(rec("internet-1", 2, rs[0].id, mark("+8613800000002"), at=NOW - 10))
    led.submit([r.envelope for r in rs], NOW)
    old = struct.pack(">Q32sQ", 2, rs[1].id, (1 << 64) - 1)
    led.store.put("feeds", b"internet-1", old)
    led.close()
    led2 = NodeLedger(Store(tmp_path / "db"), consortium, "carrier-1")
    st = led2.feed("internet-1")
    assert (st.seq, st.head_id, st.frozen_at) == (2, rs[1].id, None)
    assert st.head_issued_at_ms == NOW - 10
    earlier = rec("internet-1", 3, rs[1].id, mark("+8613800000003"), at=NOW - 11)
    with pytest.raises(E.FeedTimeReversed):
        led2.append(earlier.envelope, NOW)
    later = rec("internet-1", 3, rs[1].id, mark("+8613800000003"), at=NOW)
    assert led2.append(later.envelope, NOW).status == "accepted"
    led2.close()


# --------------------------------------------------------------- who decides


def test_institute_cannot_decide_its_own_appeal(ledger: NodeLedger) -> None:
    """The institute may appeal a mark, but its decision of that appeal is
    NotAllowed and changes nothing: appended later, in the same batch, or
    drained from the buffer after the appeal arrives. Deciding another
    participant's appeal stays allowed."""
    target = rec("internet-1", 1, b"", mark())
    ledger.append(target.envelope, NOW)
    appeal = rec("institute", 1, b"", Correction((target.id,), "withdraw"))
    decision = rec("institute", 2, appeal.id, Correction(appeal_id=appeal.id, outcome="uphold"))
    # In one batch: the appeal is accepted, the decision refused.
    res = ledger.submit([appeal.envelope, decision.envelope], NOW)
    assert [o.status for o in res.outcomes] == ["accepted", "rejected"]
    assert isinstance(res.outcomes[1].error, E.NotAllowed)
    before = snapshot(ledger)
    with pytest.raises(E.NotAllowed, match="may not decide"):
        ledger.append(decision.envelope, NOW)
    assert snapshot(ledger) == before
    # Another participant's appeal: the institute decides it.
    other = rec("carrier-2", 1, b"", Correction((target.id,), "withdraw"))
    ledger.append(other.envelope, NOW)
    fair = rec("institute", 2, appeal.id, Correction(appeal_id=other.id, outcome="reject"))
    assert ledger.append(fair.envelope, NOW).status == "accepted"


def test_own_appeal_decision_buffered_before_its_appeal_is_dropped(tmp_path: Path) -> None:
    """The decision arrives ahead of the appeal (a gap in the institute's
    feed) and waits; once the appeal fills the gap, the decision is checked
    again and not appended."""
    led = NodeLedger(Store(tmp_path / "db"), make_consortium(), "carrier-1")
    target = rec("internet-1", 1, b"", mark())
    appeal = rec("institute", 1, b"", Correction((target.id,), "withdraw"))
    decision = rec("institute", 2, appeal.id, Correction(appeal_id=appeal.id, outcome="uphold"))
    res = led.submit([target.envelope, decision.envelope, appeal.envelope], NOW)
    assert [o.status for o in res.outcomes] == ["accepted", "buffered", "accepted"]
    assert [r.id for r in res.accepted] == [target.id, appeal.id]
    assert led.feed("institute").seq == 1 and led.buffered == 0
    led.close()


def test_buffer_is_per_issuer_and_expires(tmp_path: Path) -> None:
    """One issuer's records far ahead of its feed fill only its own share of
    the out-of-order buffer (BufferFull naming it), so another issuer's
    records still wait there and apply once their gap closes; a record that
    waited longer than out_of_order_ttl_ms is dropped (fails on main: one
    pool for all, never expiring)."""
    ttl = 60_000
    cons = make_consortium(
        out_of_order_buffer=5, out_of_order_per_issuer=2, out_of_order_ttl_ms=ttl
    )
    led = NodeLedger(Store(tmp_path / "db"), cons, "carrier-1")
    flood = chain("internet-1", 8)
    res = led.submit([r.envelope for r in flood[1:]], NOW)
    assert [o.status for o in res.outcomes] == ["buffered"] * 2 + ["rejected"] * 5
    assert all(isinstance(o.error, E.BufferFull) for o in res.outcomes[2:])
    assert "internet-1" in str(res.outcomes[-1].error)
    assert (led.buffered_of("internet-1"), led.buffered) == (2, 2)
    other = chain("internet-2", 3)
    res = led.submit([r.envelope for r in other[1:]], NOW + 1)
    assert [o.status for o in res.outcomes] == ["buffered", "buffered"]
    res = led.submit([other[0].envelope], NOW + 2)
    assert [r.seq for r in res.accepted] == [1, 2, 3]
    assert (led.buffered_of("internet-2"), led.buffered) == (0, 2)
    # internet-1's records have waited exactly the TTL: still there; one ms more: gone.
    assert led.expire_buffer(NOW + ttl) == 0 and led.buffered == 2
    res = led.submit([flood[0].envelope], NOW + ttl + 1)
    assert [r.seq for r in res.accepted] == [1]  # #2 and #3 were dropped, not drained
    assert led.buffered == 0 and led.feed("internet-1").seq == 1
    # The issuer's share is free again.
    res = led.submit([r.envelope for r in flood[2:4]], NOW + ttl + 2)
    assert [o.status for o in res.outcomes] == ["buffered", "buffered"]
    led.close()


def test_own_records_signed_past_the_head_are_not_looked_up_and_land_as_any(
    ledger: NodeLedger,
) -> None:
    """A batch of own records the node has just signed (`signed`): none is
    looked up in the records family (a feed's accepted records are at or
    below its head, so none can be a duplicate), and the stored bytes, the
    log and the feed are those of the same batch submitted in full; an own
    record at or below the head is still looked up (here: a duplicate)."""
    rs = chain("carrier-1", 6)
    asked: list[str] = []
    real_get = ledger.store.get

    def get(cf: str, key: bytes) -> bytes | None:
        asked.append(cf)
        return real_get(cf, key)

    ledger.store.get = get  # type: ignore[method-assign]
    out = ledger.submit([r.envelope for r in rs], NOW, signed={r.id: r for r in rs[1:]})
    assert [o.status for o in out.outcomes] == ["accepted"] * 6
    assert asked.count("records") == 1  # the first only (not in `signed`)
    asked.clear()
    again = ledger.submit([rs[5].envelope], NOW, signed={rs[5].id: rs[5]})
    assert again.outcomes[0].status == "duplicate" and asked.count("records") == 1
    ledger.store.get = real_get  # type: ignore[method-assign]
    assert ledger.entries(0, 6) == [r.envelope for r in rs]
    assert ledger.records_after("carrier-1", 0, 10) == [r.envelope for r in rs]
    assert ledger.root() == merkle.root_from_leaf_hashes([merkle.leaf_hash(r.envelope)
                                                         for r in rs])
    assert all(ledger.get_node(0, i) == merkle.leaf_hash(r.envelope) for i, r in enumerate(rs))


def test_a_batchs_put_all_is_its_puts_in_order(tmp_path: Path) -> None:
    store = Store(tmp_path / "puts")
    try:
        b = store.batch()
        b.put_all("meta", [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")])
        b.put("meta", b"c", b"4")
        assert b.count == 4
        store.write(b)
        assert list(store.items("meta")) == [(b"a", b"3"), (b"b", b"2"), (b"c", b"4")]
    finally:
        store.close()
