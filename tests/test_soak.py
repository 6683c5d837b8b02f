"""The reliability soak, short: ~25 s of load with SIGKILLs and partitions
(tests/soak.py runs the long one with `make soak`)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from keys.consortium import Consortium
from ledger import note
from ledger.errors import LedgerError, ProofMismatch
from ledger.log import NodeLedger, log_origin
from ledger.record import Mark
from ledger.store import Store
from markex.v1 import service_pb2 as pb
from node.witness import witness_name
from tests.conftest import KEYS, NOW
from tests.soak import Ack, Readers, Retry, Tally, run_soak


@pytest.mark.timeout(300)
def test_short_soak_loses_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("SOAK_SEED", "0")) or random.SystemRandom().randrange(1, 2**31)
    lines: list[str] = []
    r = run_soak(
        duration_s=25,
        rate=30,
        kills_target=8,
        partitions=2,
        seed=seed,
        out=lines.append,
        directory=tmp_path / "soak",
    )
    report = "\n".join(lines)
    print(report)
    assert r["failures"] == 0, report
    assert r["acknowledged"] > 0.5 * 25 * 30, report
    assert r["proofs_verified"] >= r["acknowledged"], report
    assert r["missing_records"] == 0, report
    assert r["kills"] >= 8 and r["partitions"] == 2, report
    assert r["converge_seconds"] is not None, report
    assert r["audits_ok"] and r["roots_agree"], report
    assert r["ok"], report


# ------------------------------------------------------------------ the readers' teeth
# The soak's verdict is only as good as its reader: a fake node, backed by a
# real ledger, serves honest answers and then each lie a node could tell.


class _FakePublic:
    """The read calls a soak reader makes, answered from one NodeLedger;
    `lie` names what to falsify."""

    def __init__(self, led: NodeLedger, note_text: str) -> None:
        self.led = led
        self.note = note_text
        self.lie = ""

    def GetRecord(self, req, timeout):  # noqa: N802
        index, env = self.led.record_by_id(req.id)
        if self.lie == "record":
            env = self.led.entry((index + 1) % self.led.size)
        return pb.RecordEnvelope(envelope=env, index=index)

    def GetLogCheckpoint(self, req, timeout):  # noqa: N802
        return pb.LogCheckpoint(note=self.note)

    def GetInclusionProof(self, req, timeout):  # noqa: N802
        path = self.led.inclusion_proof(req.index, req.size)
        if self.lie == "proof":
            path[0] = bytes(32)
        if self.lie == "extra-hash":
            path.append(bytes(32))
        return pb.InclusionProof(index=req.index, size=req.size, path=path)

    def GetConsistencyProof(self, req, timeout):  # noqa: N802
        path = self.led.consistency_proof(req.old_size, req.new_size)
        return pb.ConsistencyProof(old_size=req.old_size, new_size=req.new_size, path=path)


class _FakeChannels:
    def __init__(self, stub: _FakePublic) -> None:
        self.stub = stub

    def public(self, pid: str) -> _FakePublic:
        return self.stub

    def audit(self, pid: str) -> _FakePublic:
        return self.stub


def _cosigned(led: NodeLedger, cons: Consortium, by: list[str]) -> str:
    text = led.sign_checkpoint()
    body = note.Note.parse(text).text
    lines = [note.cosign_line(body, witness_name(cons.name, w), KEYS[w], NOW // 1000) for w in by]
    return note.add_signature_lines(text, lines)


@pytest.fixture
def fake(ledger: NodeLedger, consortium: Consortium):  # type: ignore[no-untyped-def]
    acks = []
    for i in range(5):
        out = ledger.issue(Mark(f"+861380000000{i}", "fraud", 60, 1, NOW), NOW)
        acks.append(Ack("carrier-1", out.record.id, out.record.seq, out.record.payload.number))
    stub = _FakePublic(ledger, _cosigned(ledger, consortium, ["institute", "carrier-2"]))
    readers = Readers(_FakeChannels(stub), consortium, Tally(), 1, 1, 10.0)  # type: ignore[arg-type]
    return readers, stub, acks


def test_reader_verifies_honest_answers(fake) -> None:  # type: ignore[no-untyped-def]
    readers, _, acks = fake
    for a in acks:
        readers.verify(a, "carrier-1")


@pytest.mark.parametrize("lie", ["record", "proof", "extra-hash"])
def test_reader_rejects_a_lying_node(fake, lie: str) -> None:  # type: ignore[no-untyped-def]
    readers, stub, acks = fake
    stub.lie = lie
    with pytest.raises(LedgerError):
        readers.verify(acks[2], "carrier-1")


def test_reader_waits_for_a_cosigning_quorum(fake, ledger, consortium) -> None:  # type: ignore[no-untyped-def]
    readers, stub, acks = fake
    stub.note = _cosigned(ledger, consortium, ["institute"])  # one of two
    with pytest.raises(Retry):
        readers.verify(acks[0], "carrier-1")
    stub.note = _cosigned(ledger, consortium, ["carrier-1", "institute"])  # its own does not count
    with pytest.raises(Retry):
        readers.verify(acks[0], "carrier-1")


def test_reader_rejects_a_checkpoint_signed_by_another_key(fake, ledger, consortium) -> None:  # type: ignore[no-untyped-def]
    readers, stub, acks = fake
    body = note.Note.parse(stub.note).text
    forged = note.sign_note(body, log_origin(consortium.name, "carrier-1"), KEYS["carrier-2"])
    stub.note = forged
    with pytest.raises(LedgerError):
        readers.verify(acks[0], "carrier-1")


def test_reader_catches_a_rewritten_log(fake, ledger, consortium, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two checkpoints of one node that no consistency proof joins."""
    readers, stub, acks = fake
    readers.verify(acks[0], "carrier-1")  # trusts size 5
    other = NodeLedger(Store(tmp_path / "other"), consortium, "carrier-1", KEYS["carrier-1"])
    try:
        for i in range(7):  # the first four as before, then another history
            number = f"+861380000000{i}" if i < 4 else f"+861390000000{i}"
            other.issue(Mark(number, "fraud", 60, 1, NOW), NOW)
        stub.note = _cosigned(other, consortium, ["institute", "carrier-2"])
        stub.led = other
        with pytest.raises(ProofMismatch):
            readers.verify(acks[0], "carrier-1")
    finally:
        other.close()
