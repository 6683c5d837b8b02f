"""The bad list is public and verifiable: the node's answer
(node/complaintservice.py `bad_list`, what GetBadList serves) verifies with
`verify_bad_list` (node/complaintcli.py, what `markex badlist` runs) against
a log's root; a bent inclusion proof, a moved index, a record signed by
someone other than the regulator, a bent envelope, a delisting passed off
as a listing, an answer for another time or code or number, and a line that
does not link the number are refused, each saying why. (On real nodes, with
the checkpoint's cosignatures: tests/test_complaint_cli.py.)"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from ledger import merkle
from ledger.complaints import ComplaintState
from ledger.consent.facts import LineFact
from ledger.payloads import MarketerLine
from ledger.payloads.line import uscc_check_char
from ledger.record import Record
from markex.v1 import service_pb2 as pb
from node.command import NotVerified
from node.complaintcli import verify_bad_list
from node.complaintservice import bad_list, parse_check
from tests.conftest import NOW
from tests.test_complaints import CONS, HOUR, USCC, Feeds, listing

LINE_NUMBER = "+8613800000077"
OTHER_USCC = "91110000MA0123456" + uscc_check_char("91110000MA0123456")


@dataclass
class Log:
    """What `bad_list` reads of a ledger: its records in log order and their tree."""

    records: list[Record]

    def __post_init__(self) -> None:
        self.nodes = merkle.MemoryNodes()
        for r in self.records:
            self.nodes.append(merkle.leaf_hash(r.envelope))

    @property
    def size(self) -> int:
        return self.nodes.size

    @property
    def root(self) -> bytes:
        return merkle.root_at(self.nodes, self.size)

    def record_by_id(self, rid: bytes) -> tuple[int, bytes] | None:
        return next(((i, r.envelope) for i, r in enumerate(self.records) if r.id == rid), None)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return merkle.inclusion_proof(self.nodes, index, size)


class Lines:
    def __init__(self, line: Record) -> None:
        self.line = line

    def line_at(self, number: str, at_ms: int) -> LineFact | None:
        p = self.line.payload
        assert isinstance(p, MarketerLine)
        if number != p.number:
            return None
        return LineFact(self.line.id, self.line.issuer, self.line.seq, self.line.issued_at_ms,
                        p.number, p.prefix, p.enterprise, p.uscc, p.industry)


@dataclass
class Book:
    feeds: Feeds
    log: Log
    state: ComplaintState
    lines: Lines
    sanction: Record
    line: Record

    def answer(self, at: int = NOW, check: str = "", size: int | None = None) -> pb.BadList:
        return bad_list(CONS, self.log, self.state, self.lines,  # type: ignore[arg-type]
                        pb.BadListRequest(at_ms=at, size=self.log.size if size is None else size,
                                          check=check), NOW)

    def verify(self, got: pb.BadList, at: int = NOW, check: str = "") -> object:
        return verify_bad_list(CONS, got, self.log.size, self.log.root, at,
                               parse_check(check) if check else None)


def book(*extra: Callable[[Feeds], Record]) -> Book:
    f = Feeds()
    line = f.issue("carrier-1", MarketerLine(LINE_NUMBER, False, "北京某某营销有限公司", USCC,
                                             "finance"), NOW - 3 * HOUR)
    sanction = f.issue("regulator-1", listing(at=NOW - 2 * HOUR), NOW - 2 * HOUR)
    f.issue("carrier-2", MarketerLine("+8613000000088", False, "上海某某", OTHER_USCC, "finance"),
            NOW - 2 * HOUR)
    for make in extra:
        make(f)
    state = ComplaintState(CONS)
    state.apply(f.records)
    return Book(f, Log(list(f.records)), state, Lines(line), sanction, line)


# ------------------------------------------------------------------ it verifies


def test_the_public_answer_verifies() -> None:
    b = book()
    v = b.verify(b.answer())
    assert [e.record.id for e in v.listed] == [b.sanction.id]   # type: ignore[attr-defined]
    e = v.listed[0]   # type: ignore[attr-defined]
    assert e.index == 1 and e.to_json()["verified"] and e.to_json()["uscc"] == USCC
    by_code = b.verify(b.answer(check=USCC), check=USCC)
    assert len(by_code.listed) == 1   # type: ignore[attr-defined]
    by_number = b.verify(b.answer(check=LINE_NUMBER), check=LINE_NUMBER)
    assert by_number.line[0].id == b.line.id   # type: ignore[attr-defined]
    assert b.verify(b.answer(check=OTHER_USCC), check=OTHER_USCC).listed == ()  # type: ignore
    # before the listing took effect, nobody is listed
    assert b.verify(b.answer(at=NOW - 3 * HOUR), at=NOW - 3 * HOUR).listed == ()  # type: ignore


def test_a_delisted_enterprise_is_off_the_list() -> None:
    b = book(lambda f: f.issue("regulator-1", listing(at=NOW - HOUR, doc="工信函〔2026〕3号",
                                                      delist=True), NOW - HOUR))
    assert b.verify(b.answer()).listed == ()   # type: ignore[attr-defined]
    got = b.answer(at=NOW - 90 * 60_000)
    assert len(b.verify(got, at=NOW - 90 * 60_000).listed) == 1   # type: ignore[attr-defined]


# ------------------------------------------------------------------ refused


def _refused(b: Book, got: pb.BadList, match: str, at: int = NOW, check: str = "") -> None:
    with pytest.raises(NotVerified, match=match):
        b.verify(got, at=at, check=check)


def test_a_bent_proof_is_refused() -> None:
    b = book()
    got = b.answer()
    path = list(got.sanctions[0].path)
    path[0] = bytes(32)
    del got.sanctions[0].path[:]
    got.sanctions[0].path.extend(path)
    _refused(b, got, "not at index 1")
    got = b.answer()
    got.sanctions[0].index = 2
    _refused(b, got, "not at index 2")
    got = b.answer()
    del got.sanctions[0].path[-1]
    _refused(b, got, "not at index")


def test_a_record_signed_by_someone_other_than_the_regulator_is_refused() -> None:
    # carrier-1 signs a sanction: the state ignores it, a lying node could serve it
    b = book(lambda f: f.issue("carrier-1", listing(at=NOW - HOUR, doc="伪造"), NOW - HOUR))
    forged = b.feeds.records[-1]
    got = b.answer()
    index = b.log.size - 1
    got.sanctions.add(envelope=forged.envelope, index=index,
                      path=b.log.inclusion_proof(index, b.log.size))
    _refused(b, got, "signed by carrier-1, not by the regulator")
    # a record of another kind, even in the log and signed, lists nobody either
    got = b.answer()
    got.sanctions[0].envelope = b.line.envelope
    got.sanctions[0].index = 0
    del got.sanctions[0].path[:]
    got.sanctions[0].path.extend(b.log.inclusion_proof(0, b.log.size))
    _refused(b, got, "signed by carrier-1, not by the regulator")


def test_a_bent_envelope_is_refused() -> None:
    b = book()
    got = b.answer()
    env = bytearray(got.sanctions[0].envelope)
    env[-1] ^= 1   # the signature
    got.sanctions[0].envelope = bytes(env)
    _refused(b, got, "does not verify")


def test_a_delisting_or_a_later_listing_passed_off_as_in_force_is_refused() -> None:
    b = book(lambda f: f.issue("regulator-1", listing(at=NOW - HOUR, doc="工信函〔2026〕3号",
                                                      delist=True), NOW - HOUR))
    delisting = b.feeds.records[-1]
    got = b.answer()
    index = b.log.size - 1
    got.sanctions.add(envelope=delisting.envelope, index=index,
                      path=b.log.inclusion_proof(index, b.log.size))
    _refused(b, got, "not a listing in force")
    # the listing itself, shown for a time before it took effect
    got = b.answer(at=NOW - 3 * HOUR)
    got.sanctions.add(envelope=b.sanction.envelope, index=1,
                      path=b.log.inclusion_proof(1, b.log.size))
    _refused(b, got, "not a listing in force", at=NOW - 3 * HOUR)


def test_an_answer_for_another_question_is_refused() -> None:
    b = book()
    _refused(b, b.answer(at=NOW - 1), "answered for", at=NOW)
    _refused(b, b.answer(size=b.log.size - 1), "size")
    _refused(b, b.answer(), "asked about " + OTHER_USCC, check=OTHER_USCC)
    got = b.answer()
    got.sanctions.extend(b.answer().sanctions)
    _refused(b, got, "twice")


def test_a_line_that_does_not_link_the_number_is_refused() -> None:
    b = book()
    got = b.answer(check=LINE_NUMBER)
    del got.lines[:]
    _refused(b, got, "exactly one marketer line", check=LINE_NUMBER)
    got = b.answer(check=LINE_NUMBER)
    other = b.feeds.records[2]           # carrier-2's line of another number and code
    got.lines[0].envelope, got.lines[0].index = other.envelope, 2
    del got.lines[0].path[:]
    got.lines[0].path.extend(b.log.inclusion_proof(2, b.log.size))
    _refused(b, got, "does not link", check=LINE_NUMBER)
    got = b.answer(check=LINE_NUMBER)
    got.number = "+8613800000078"
    _refused(b, got, "answered about", check=LINE_NUMBER)


def test_a_record_past_the_checkpoint_is_not_verified_yet() -> None:
    b = book()
    got = b.answer(size=1)      # the tree of size 1 holds the line, not the sanction
    with pytest.raises(NotVerified, match="past the log checkpoint"):
        verify_bad_list(CONS, got, 1, merkle.root_at(b.log.nodes, 1), NOW)


def test_a_check_is_a_code_or_a_number() -> None:
    assert parse_check(USCC) == ("uscc", USCC)
    assert parse_check("13800000077") == ("number", LINE_NUMBER)
    for bad, why in (("hello", "neither"), (USCC[:17] + "A", "check character"),
                     ("9" * 80, "at most")):
        with pytest.raises(Exception, match=why):
            parse_check(bad)


def test_the_node_refuses_a_tree_it_does_not_have_and_a_bad_time() -> None:
    from ledger.errors import BadInput, NotFound

    b = book()
    with pytest.raises(NotFound, match="not 99"):
        b.answer(size=99)
    with pytest.raises(BadInput, match="1970"):
        b.answer(at=-1)
