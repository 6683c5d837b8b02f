"""The house rules of issue 12: each rule has one home, and no module is a
room of two thousand lines.

- The payload registry (`ledger.payloads`) is the one table of who may write
  what: changing an entry there changes what the ledger refuses, what the
  view counts and what the auditor reports, together.
- A payload's number is always its E.164 form, whoever builds it.
- No Python file in ledger/, node/ or keys/ is over ~700 lines.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger import audit, payloads
from ledger import view as V
from ledger.errors import InvalidNumber, NotAllowed
from ledger.log import NodeLedger
from ledger.record import Mark, Reassignment, Record
from ledger.store import Store
from tests.conftest import KEYS, NAME, NOW, make_consortium

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 700
NUMBER = "+8613800138000"


def issue(pid: str, seq: int, prev: bytes, payload: payloads.Payload) -> Record:
    return Record.issue(KEYS[pid], pid, seq, prev, NOW, payload, consortium=NAME)


@pytest.fixture
def no_internet_fraud(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Change the registry's rule for marks, and only there: internet firms
    may no longer mark a number as fraud."""
    mark_type = payloads.type_of(Mark(NUMBER, "fraud"))
    original = mark_type.check

    def check(cons, role, issuer, payload):  # type: ignore[no-untyped-def]
        if role == "internet" and payload.category == "fraud":
            raise NotAllowed(f"{issuer} is an internet firm; fraud marks are not its to issue")
        original(cons, role, issuer, payload)

    monkeypatch.setitem(payloads._BY_CLASS, Mark, dataclasses.replace(mark_type, check=check))
    yield


def test_the_registry_is_the_rule_of_the_log_the_view_and_the_auditor(
    tmp_path: Path, no_internet_fraud: None
) -> None:
    """One edit of the registry entry is seen by all three: the ledger refuses
    the record, resolution ignores it, and the audit of a store that holds it
    (written before the rule changed) reports it as a role finding."""
    cons = make_consortium()
    fraud = issue("internet-1", 1, b"", Mark(NUMBER, "fraud", 80, 3, NOW - 1000))
    delivery = issue("carrier-1", 1, b"", Mark(NUMBER, "delivery", 60, 2, NOW - 1000))

    # The ledger: refused, nothing written.
    led = NodeLedger(Store(tmp_path / "refusing"), cons, "carrier-1", KEYS["carrier-1"])
    try:
        with pytest.raises(NotAllowed, match="internet firm"):
            led.append(fraud.envelope, NOW)
        assert led.size == 0
        led.append(delivery.envelope, NOW)
        assert led.size == 1
    finally:
        led.store.close()

    # The view: the record is not counted (only the carrier's mark is on the entry).
    entry = V.resolve([fraud, delivery], cons).entry(NUMBER)
    assert entry is not None
    assert [(m.participant, m.category) for m in entry.marks] == [("carrier-1", "delivery")]

    # The auditor: a store that took the record under the old rule is reported.
    path = tmp_path / "older"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(payloads._BY_CLASS, Mark, payloads.REGISTRY[0])  # the rule before the change
        led = NodeLedger(Store(path), cons, "carrier-1", KEYS["carrier-1"])
        led.append(fraud.envelope, NOW)
        led.append(delivery.envelope, NOW)
        led.sign_checkpoint()
        led.store.close()
    rep = audit.audit_store(path, cons, "carrier-1", workers=0, view=False)
    roles = [f for f in rep.findings if f.kind == "role"]
    assert [f.issuer for f in roles] == ["internet-1"], rep.findings
    assert "internet firm" in roles[0].detail


def test_every_payload_type_is_registered_once() -> None:
    fields = [t.field for t in payloads.REGISTRY]
    classes = [t.cls for t in payloads.REGISTRY]
    assert len(set(fields)) == len(fields) and len(set(classes)) == len(classes)
    # Every oneof field of the record message has its registry entry.
    from markex.v1 import record_pb2 as pb

    oneof = pb.Record.DESCRIPTOR.oneofs_by_name["payload"]
    assert sorted(f.name for f in oneof.fields) == sorted(fields)


@pytest.mark.parametrize("raw", ["13800138000", "+86 138 0013 8000", "138-0013-8000"])
def test_payload_numbers_are_normalized_whoever_builds_them(raw: str) -> None:
    assert Mark(raw, "fraud").number == NUMBER
    assert Reassignment(raw, NOW).number == NUMBER


@pytest.mark.parametrize("raw", ["", "12", "not a number", "+86138001380001234567"])
def test_payload_with_a_bad_number_is_refused(raw: str) -> None:
    with pytest.raises(InvalidNumber):
        Mark(raw, "fraud")
    with pytest.raises(InvalidNumber):
        Reassignment(raw, NOW)


def _python_files() -> list[Path]:
    out = []
    for top in ("ledger", "node", "keys"):
        out += [p for p in sorted((ROOT / top).rglob("*.py")) if "_pb2" not in p.name]
    return out


@pytest.mark.parametrize("path", _python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_room_of_two_thousand_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines; split it by concern"
