"""The node's parts in-process, each built from what it is given (no Node,
no subprocess): NodeCore writing to a real temporary store, the LogKeeper
signing and collecting cosignatures, the servicers served by real gRPC
servers on 127.0.0.1 (mutual TLS on the member port, TLS on the public one)
for a consortium made by keys.layout, a PeerLink built from LinkParts
replicating with another participant's servicers, and node.status mapping
every error class to the one code ledger/errors.py gives it."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

import keys
from keys.consortium import Consortium
from keys.layout import NodeConfig, init_consortium
from keys.signing import SigningKey, read_private
from ledger import errors as E
from ledger import note, verify
from ledger.log import NodeLedger
from ledger.record import WITHDRAW, Correction, Mark, Record
from ledger.store import Store
from markex.v1 import record_pb2 as rpb
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node import client, witness
from node.core import MAX_ENVELOPES_PER_MESSAGE, MAX_GROUP, NodeCore, OwnIssue
from node.feedgate import gate_at_start
from node.limits import ClientTable, PublicGate, PublicLimits
from node.localnet import free_port_block
from node.logkeeper import LogKeeper
from node.metrics import NodeMetrics
from node.replication import LinkParts, PeerLink
from node.services import AdminService, AuditService, ExchangeService, PublicService
from node.status import DecodeGuard, code_for, detail_for, error_from_rpc
from node.viewkeeper import MAX_LOOKUP_BATCH, ViewKeeper
from node.witness import Witness
from tests.conftest import member_channel_credentials, member_server_credentials

S = grpc.StatusCode
OWN = "carrier-1"
NUMBER = "+8613800000001"

pytestmark = pytest.mark.timeout(60)


def _now() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


@pytest.fixture
def cons_dir(tmp_path: Path) -> tuple[Path, Consortium]:
    """institute and carrier-1 run nodes; auditor-1 holds only a certificate."""
    d = tmp_path / "c"
    cons = init_consortium(d, carriers=1, internet=0, base_port=free_port_block(6),
                           now=datetime.now(UTC))
    return d, cons


def _key(d: Path, pid: str) -> SigningKey:
    return SigningKey.load(d / pid / "signing.key")


def _chain(d: Path, cons: Consortium, issuer: str, n: int) -> list[Record]:
    out, prev = [], b""
    for i in range(1, n + 1):
        r = Record.issue(_key(d, issuer), issuer, i, prev, _now(),
                         Mark(f"+86139{i:08d}", "fraud", 70), consortium=cons.name)
        out.append(r)
        prev = r.id
    return out


@dataclass
class Parts:
    """What node/server.py builds for one participant, built here by hand."""

    store: Store
    core: NodeCore
    logs: LogKeeper
    view: ViewKeeper
    witness: Witness
    accepted: list[Record]


@pytest.fixture
def parts(cons_dir: tuple[Path, Consortium], tmp_path: Path) -> Iterator[Parts]:
    d, cons = cons_dir
    store = Store(tmp_path / "db")
    key = _key(d, OWN)
    core = NodeCore(store, cons, OWN, key, _now)
    logs = LogKeeper(core.ledger)
    view = ViewKeeper(core.ledger, _now)
    seen: list[Record] = []
    core.subscribe(seen.extend)
    core.subscribe(logs.grew)
    core.subscribe(view.apply)
    core.start()
    view.start()
    try:
        yield Parts(store, core, logs, view, Witness(store, cons, OWN, key, _now), seen)
    finally:
        core.stop()
        store.close()


# ====================================================================== NodeCore


def test_core_issues_the_next_record_of_its_own_feed(parts: Parts) -> None:
    first = parts.core.issue(Mark(NUMBER, "fraud", 70))
    second = parts.core.issue(Mark("13800000002", "harassment", 40))
    assert (first.status, first.record.issuer, first.record.seq, first.index) == (
        "accepted", OWN, 1, 0)
    assert (second.record.seq, second.record.prev_id, second.index) == (2, first.record.id, 1)
    assert second.record.payload.number == "+8613800000002"  # normalized when built
    led = parts.core.ledger
    assert led.size == 2 and led.feed(OWN).head_id == second.record.id
    assert [r.id for r in parts.accepted] == [first.record.id, second.record.id]
    # A payload the ledger refuses raises its own error and writes nothing.
    with pytest.raises(E.UnknownCategory):
        parts.core.issue(Mark(NUMBER, "no-such-category", 70))
    assert led.size == 2 and led.feed(OWN).seq == 2
    # The view followed the writer: the entry is there, proven against its root.
    resp = parts.view.lookup(NUMBER, True)
    assert resp.number == NUMBER and resp.entry and resp.view_checkpoint


def test_core_answers_an_issue_only_once_its_view_holds_the_record(parts: Parts) -> None:
    """Read your own write: what the node acknowledged, its view already
    holds (the holder's appeal page is read right after the filing)."""
    for i in range(20):
        number = f"+8613900{i:06d}"
        out = parts.core.issue(Mark(number, "fraud", 70))
        entry = parts.view.view.entry(number)
        assert entry is not None and [m.id for m in entry.marks] == [out.record.id]


def test_core_is_busy_while_a_group_is_written_and_idle_after(parts: Parts) -> None:
    """`busy` is what the screen's rows rest for (node/screenindex.py): true
    on the writer thread during a commit, false once the writer has nothing."""
    during: list[bool] = []
    parts.core.subscribe(lambda records: during.append(parts.core.busy))
    parts.core.issue(Mark(NUMBER, "fraud", 70))
    assert during == [True]
    deadline = time.monotonic() + 10
    while parts.core.busy:
        assert time.monotonic() < deadline, "the writer never went idle"
        time.sleep(0.01)


def test_core_submits_in_feed_order_and_refuses_what_does_not_verify(
    cons_dir: tuple[Path, Consortium], parts: Parts
) -> None:
    d, cons = cons_dir
    r1, r2, r3 = _chain(d, cons, "institute", 3)
    assert [o.status for o in parts.core.submit([r2.envelope], "institute")] == ["buffered"]
    assert [o.status for o in parts.core.submit([r1.envelope], "institute")] == ["accepted"]
    assert [r.seq for r in parts.accepted] == [1, 2]  # the buffered one followed its gap
    assert [o.status for o in parts.core.submit([r1.envelope], "institute")] == ["duplicate"]
    env = bytearray(r3.envelope)
    env[-1] ^= 1  # the signature's last byte
    out = parts.core.submit([bytes(env)], "institute")[0]
    assert out.status == "rejected" and isinstance(out.error, E.BadSignature)
    with pytest.raises(E.TooLarge, match=f"at most {MAX_ENVELOPES_PER_MESSAGE}"):
        parts.core.submit([r3.envelope] * (MAX_ENVELOPES_PER_MESSAGE + 1), "institute")
    assert parts.core.ledger.feed("institute").seq == 2


# ------------------------------------------------- NodeCore: own issues signed ahead


def _own_chain(led: NodeLedger) -> list[Record]:
    """The node's own feed from the store, checked gap-free and chained."""
    head = led.feed(OWN)
    recs = [Record.from_envelope(e) for e in led.records_after(OWN, 0, head.seq)]
    assert [r.seq for r in recs] == list(range(1, head.seq + 1))
    for before, r in zip([None, *recs], recs, strict=False):
        assert r.prev_id == (before.id if before is not None else b"")
    assert head.head_id == (recs[-1].id if recs else b"")
    return recs


def test_concurrent_issuers_share_one_gap_free_feed_in_their_order(parts: Parts) -> None:
    """Four threads issue at once: marks (signed ahead of the writer by the
    signing stage), corrections of their own marks (their checks read the
    ledger, so the writer signs them), refusals and repeated keys between
    them. The feed has no gap, each record names the one before it, every
    answer is the stored record, and each thread's records are in the order
    it queued them."""
    core = parts.core
    got: dict[int, list[tuple[str, Future | None, Future]]] = {}

    def issue(t: int) -> None:
        out: list[tuple[str, Future | None, Future]] = []
        for i in range(150):
            number = f"+86136{t:02d}{i:06d}"
            if i % 10 == 3:  # refused before the writer sees it: it takes no seq
                out.append(("rejected", None, core.issue_async(Mark(number, "nope", 50))))
            elif i % 10 == 5:  # a key sent twice in flight: the first record, once
                key = f"k-{t}-{i}".encode()
                digest = hashlib.sha256(key).digest()
                a = core.issue_async(Mark(number, "fraud", 60), key=key, digest=digest)
                b = core.issue_async(Mark(number, "fraud", 60), key=key, digest=digest)
                out += [("accepted", None, a), ("duplicate", a, b)]
            elif i % 10 == 8:  # withdraws mark i - 1, which it waits for
                target = out[-1][2].result(30).record.id
                out.append(("accepted", None, core.issue_async(
                    Correction(targets=(target,), action=WITHDRAW, reason="sent in error"))))
            else:
                out.append(("accepted", None, core.issue_async(Mark(number, "fraud", 60))))
        got[t] = out

    threads = [threading.Thread(target=issue, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    for t in range(4):
        for _, _, fut in got[t]:
            fut.result(30)  # all answered, so all written
    recs = {r.seq: r for r in _own_chain(core.ledger)}
    seqs: list[int] = []
    for t in range(4):
        mine = []
        for want, first, fut in got[t]:
            out = fut.result(30)
            assert out.status == want, (t, out)
            if want == "rejected":
                assert isinstance(out.error, E.UnknownCategory)
                continue
            assert out.record.id == recs[out.record.seq].id  # the answer is what was stored
            if want == "duplicate":
                assert first is not None and out.record.id == first.result(0).record.id
                continue
            mine.append(out.record.seq)
        assert mine == sorted(mine)  # one thread's records in the order it queued them
        seqs += mine
    assert sorted(seqs) == list(recs)  # every record answered once, none missing
    assert [r.seq for r in parts.accepted] == list(recs)  # the subscribers saw log order


def test_a_record_signed_ahead_on_a_chain_that_moved_is_signed_again_never_stored(
    cons_dir: tuple[Path, Consortium], tmp_path: Path
) -> None:
    """The writer takes a record signed ahead only at the seq and prev_id its
    feed is at; another (an earlier record was refused after it was signed)
    is dropped unseen and the item signed again: no gap, nothing buffered."""
    d, cons = cons_dir
    store = Store(tmp_path / "moved")
    core = NodeCore(store, cons, OWN, _key(d, OWN), _now)
    try:
        fut = core.issue_async(Mark(NUMBER, "fraud", 70), wait=0)
        job = core._q.get_nowait()  # taken as the signing stage would, without its thread
        job.rec = Record.issue(_key(d, OWN), OWN, 2, b"\x01" * 32, _now(),
                               Mark(NUMBER, "fraud", 70), consortium=cons.name)
        core._write_group([job])
        out = fut.result(0)
        assert (out.status, out.record.seq, out.record.prev_id) == ("accepted", 1, b"")
        assert core.ledger.record_by_id(job.rec.id) is None  # the stale one was never stored
        assert [r.id for r in _own_chain(core.ledger)] == [out.record.id]
        assert core.ledger.buffered == 0
    finally:
        store.close()


def test_a_refused_record_signed_ahead_leaves_no_gap(
    cons_dir: tuple[Path, Consortium], tmp_path: Path
) -> None:
    """The clock steps back: the record the signing stage signed at the
    earlier time is refused when written (FeedTimeReversed); the next one
    takes its seq and names the last record written, not the refused one."""
    d, cons = cons_dir
    store = Store(tmp_path / "back")
    now = [_now()]
    core = NodeCore(store, cons, OWN, _key(d, OWN), lambda: now[0])
    core.start()
    try:
        a = core.issue(Mark("+8613600000001", "fraud", 70))
        now[0] -= 60_000
        with pytest.raises(E.FeedTimeReversed):
            core.issue(Mark("+8613600000002", "fraud", 70))
        now[0] += 120_000
        outs = [core.issue_async(Mark(f"+86136000001{i:02d}", "fraud", 70)) for i in range(50)]
        got = [f.result(30) for f in outs]
        assert [o.status for o in got] == ["accepted"] * 50
        assert got[0].record.seq == 2 and got[0].record.prev_id == a.record.id
        assert [r.id for r in _own_chain(core.ledger)] == [a.record.id] + [
            o.record.id for o in got]
        assert core.ledger.buffered == 0
    finally:
        core.stop()
        store.close()


def test_own_records_after_a_refused_one_in_a_group_are_never_answered_as_issued(
    cons_dir: tuple[Path, Consortium], tmp_path: Path
) -> None:
    """The clock steps back and a batch of marks is signed on one chain: the
    first is refused when written (FeedTimeReversed), so the others, which
    name it, would wait in the out-of-order buffer. None of them is answered
    as issued or left waiting: each is signed again and answered for itself
    (here refused the same way), and once the clock is back they issue."""
    d, cons = cons_dir
    store = Store(tmp_path / "group")
    now = [_now()]
    core = NodeCore(store, cons, OWN, _key(d, OWN), lambda: now[0])
    core.start()
    try:
        a = core.issue(Mark("+8613600000001", "fraud", 70))
        now[0] -= 60_000
        futs = core.issue_many_async([OwnIssue(Mark(f"+86136000000{i:02d}", "fraud", 70))
                                      for i in range(2, 6)])
        got = [f.result(30) for f in futs]
        assert [(o.status, type(o.error)) for o in got] == [
            ("rejected", E.FeedTimeReversed)] * 4
        assert core.ledger.buffered == 0 and core.ledger.feed(OWN).seq == 1
        now[0] += 120_000
        futs = core.issue_many_async([OwnIssue(Mark(f"+86136000000{i:02d}", "fraud", 70))
                                      for i in range(2, 6)])
        got = [f.result(30) for f in futs]
        assert [o.status for o in got] == ["accepted"] * 4
        assert [r.id for r in _own_chain(core.ledger)] == [a.record.id] + [
            o.record.id for o in got]
    finally:
        core.stop()
        store.close()


def test_a_key_whose_first_issue_is_refused_is_issued_by_its_next_content(
    cons_dir: tuple[Path, Consortium], tmp_path: Path
) -> None:
    """Key K's first issue (content A) is in flight when a second issue of K
    with other content B arrives; the first is then refused. B is not told
    IdempotencyConflict (nothing was issued under K): it is issued, and K
    then names B's record."""
    d, cons = cons_dir
    store = Store(tmp_path / "key")
    now = [_now()]
    gate = threading.Event()
    gate.set()
    core = NodeCore(store, cons, OWN, _key(d, OWN), lambda: now[0])
    core.subscribe(lambda recs: gate.wait(30))  # holds the writer after a write
    core.start()
    try:
        core.issue(Mark("+8613600000001", "fraud", 70))
        gate.clear()
        x = core.issue_async(Mark("+8613600000002", "fraud", 70))  # the writer waits in it
        time.sleep(0.3)
        now[0] -= 60_000
        key = b"K"
        j1 = core.issue_async(Mark("+8613600000003", "fraud", 70), key=key,
                              digest=hashlib.sha256(b"A").digest())
        time.sleep(0.3)
        now[0] += 120_000
        j2 = core.issue_async(Mark("+8613600000004", "fraud", 70), key=key,
                              digest=hashlib.sha256(b"B").digest())
        time.sleep(0.3)
        gate.set()
        assert x.result(30).status == "accepted"
        assert isinstance(j1.result(30).error, E.FeedTimeReversed)
        b = j2.result(30)
        assert b.status == "accepted"
        again = core.issue_async(Mark("+8613600000004", "fraud", 70), key=key,
                                 digest=hashlib.sha256(b"B").digest()).result(30)
        assert again.status == "duplicate" and again.record.id == b.record.id
        other = core.issue_async(Mark("+8613600000003", "fraud", 70), key=key,
                                 digest=hashlib.sha256(b"A").digest()).result(30)
        assert isinstance(other.error, E.IdempotencyConflict)
    finally:
        gate.set()
        core.stop()
        store.close()


def test_the_writer_merges_waiting_groups_up_to_max_group_envelopes(
    cons_dir: tuple[Path, Consortium], tmp_path: Path
) -> None:
    """While the writer is held, sixteen peer batches of 1,000 records queue
    up: it then commits them at most MAX_GROUP envelopes (plus one message)
    at a time, counted in envelopes as the signing stage counts, not in jobs."""
    d, cons = cons_dir
    k = _key(d, "institute")
    envs, prev = [], b""
    for i in range(1, 1001):
        r = Record.issue(k, "institute", i, prev, _now(), Mark(f"+86139{i:08d}", "fraud", 70),
                         consortium=cons.name)
        envs.append(r.envelope)
        prev = r.id
    store = Store(tmp_path / "merge")
    core = NodeCore(store, cons, OWN, _key(d, OWN), _now)
    sizes: list[int] = []
    submit = core.ledger.submit

    def counted(e: Any, *a: Any, **kw: Any) -> Any:
        sizes.append(len(e))
        return submit(e, *a, **kw)

    core.ledger.submit = counted  # type: ignore[method-assign]
    gate = threading.Event()
    core.subscribe(lambda recs: gate.wait(30))
    core.start()
    try:
        futs = [core.submit_async(envs, "peer", wait=30)]
        time.sleep(0.3)
        futs += [core.submit_async(envs, "peer", wait=30) for _ in range(15)]
        time.sleep(0.3)
        gate.set()
        for f in futs:
            f.result(60)
        assert sum(sizes) == 16_000
        assert max(sizes) <= MAX_GROUP + MAX_ENVELOPES_PER_MESSAGE, sizes
    finally:
        gate.set()
        core.stop()
        store.close()


def test_issue_many_queues_in_order_refuses_a_bad_key_alone_and_all_or_none(
    cons_dir: tuple[Path, Consortium], tmp_path: Path
) -> None:
    """`issue_many_async` (IssueMany's one step a batch): the issues in their
    order, a bad key refused for its item only, and a batch the queue has no
    room for refused whole (BufferFull), with nothing of it queued."""
    d, cons = cons_dir
    store = Store(tmp_path / "many")
    core = NodeCore(store, cons, OWN, _key(d, OWN), _now)
    core.max_queued = 5
    try:
        futs = core.issue_many_async([
            OwnIssue(Mark("+8613620000001", "fraud", 70)),
            OwnIssue(Mark("+8613620000002", "fraud", 70), key=b"x" * 129),
            OwnIssue(Mark("+8613620000003", "fraud", 70), key=b"k", digest=bytes(32)),
        ])
        assert isinstance(futs[1].exception(0), E.BadInput) and core.queued == 2
        with pytest.raises(E.BufferFull, match="at most 5"):
            core.issue_many_async([OwnIssue(Mark(f"+86136200001{i:02d}", "fraud", 70))
                                   for i in range(4)], wait=0.1)
        assert core.queued == 2  # none of the refused batch
        core.start()
        a, c = futs[0].result(30), futs[2].result(30)
        assert (a.record.seq, c.record.seq, c.record.prev_id) == (1, 2, a.record.id)
        assert [r.id for r in _own_chain(core.ledger)] == [a.record.id, c.record.id]
    finally:
        core.stop()
        store.close()


def test_issue_many_answers_wake_their_own_waiter_and_set_once() -> None:
    """The Answers of one `issue_many_async` call share one lock: a waiter on
    one is woken when its own answer is set (not before, whatever the others
    do), a wait past its timeout raises TimeoutError, an error is raised by
    `result` and given by `exception`, and an answer is set only once."""
    from concurrent.futures import InvalidStateError

    from node.answer import Answer, _Answers

    shared = _Answers()
    a, b, c = Answer(shared), Answer(shared), Answer(shared)
    assert not a.done()
    with pytest.raises(TimeoutError):
        a.result(0.05)
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(b.result(10)))
    waiter.start()
    a.set_result("first")
    time.sleep(0.1)
    assert got == [] and waiter.is_alive()  # another answer set: b's waiter still waits
    b.set_result("second")
    waiter.join(5)
    assert got == ["second"] and a.result(0) == "first" and a.exception(0) is None
    err = E.BufferFull("no room")
    c.set_exception(err)
    assert c.done() and c.exception(0) is err
    with pytest.raises(E.BufferFull):
        c.result(0)
    with pytest.raises(InvalidStateError):
        b.set_result("again")
    assert b.result(0) == "second"


class _SyncFails:
    """A store's database whose WAL sync fails (a full disk) from now on."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def flush_wal(self, sync: bool) -> None:
        raise OSError("IO error: No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def test_a_failed_write_while_records_are_signed_ahead_lets_none_out(
    cons_dir: tuple[Path, Consortium], tmp_path: Path
) -> None:
    """The disk fails after two groups while the signing stage holds records
    signed ahead: every later issue fails with StorageFailure, no subscriber
    (the push to peers, the view) is told of any record not written, and the
    reopened store's feed goes on from its last record without a gap."""
    d, cons = cons_dir
    store = Store(tmp_path / "fails")
    core = NodeCore(store, cons, OWN, _key(d, OWN), _now)
    real = store._db
    told: list[Record] = []

    def after(records: list[Record]) -> None:
        told.extend(records)
        if len(told) >= 2 and store._db is real:
            store._db = _SyncFails(real)  # the next group's sync fails

    core.subscribe(after)
    core.start()
    try:
        futs = [core.issue_async(Mark(f"+86136100{i:05d}", "fraud", 70)) for i in range(3000)]
        outs: list[Any] = []
        for f in futs:
            try:
                outs.append(f.result(30))
            except E.StorageFailure as e:
                outs.append(e)
    finally:
        core.stop()
        store._db = real
        store.close()
    acked = [o for o in outs if not isinstance(o, Exception)]
    assert acked and all(o.status == "accepted" for o in acked)
    assert len(acked) < len(outs)  # the failure came while issues were in flight
    assert outs == acked + [o for o in outs if isinstance(o, Exception)]  # acked: a prefix
    assert [r.id for r in told] == [o.record.id for o in acked]  # nothing else went out
    reopened = Store(tmp_path / "fails")
    try:
        core = NodeCore(reopened, cons, OWN, _key(d, OWN), _now)
        # The failed group may have reached the WAL unsynced; whatever the
        # reopened store holds is one chain that holds every acknowledged record.
        held = _own_chain(core.ledger)
        assert [r.id for r in held[:len(acked)]] == [o.record.id for o in acked]
        core.start()
        try:
            nxt = core.issue(Mark("+8613610099999", "fraud", 70))
        finally:
            core.stop()
        assert (nxt.record.seq, nxt.record.prev_id) == (len(held) + 1, held[-1].id)
    finally:
        reopened.close()


# ====================================================================== LogKeeper


def test_log_keeper_signs_when_the_log_grew_and_keeps_checked_cosignatures(
    cons_dir: tuple[Path, Consortium], parts: Parts, tmp_path: Path
) -> None:
    d, cons = cons_dir
    logs = parts.logs
    assert logs.current() == (None, 0) and logs.checkpoint_note() is None
    first = logs.sign_if_grown()  # none signed yet: the empty log's checkpoint
    assert first is not None and logs.sign_if_grown() is None  # nothing grew since
    parts.core.issue(Mark(NUMBER, "fraud", 70))
    text = logs.sign_if_grown()
    assert text is not None and logs.current() == (text, 1)
    assert logs.checkpoint_note() == text  # no cosignatures yet
    # The institute's witness (its own store) cosigns carrier-1's checkpoint.
    inst_store = Store(tmp_path / "inst")
    try:
        inst = Witness(inst_store, cons, "institute", _key(d, "institute"), _now)
        line = inst.cosign_log(OWN, text, 0, [])
    finally:
        inst_store.close()
    bad = line[:-6] + ("AAAA" if line[-6:-2] != "AAAA" else "BBBB") + line[-2:]
    with pytest.raises(E.BadSignature):
        logs.add_cosignature("institute", text, bad)
    assert not logs.has_cosignature("institute", text)
    logs.add_cosignature("institute", text, line)
    assert logs.has_cosignature("institute", text)
    served = logs.checkpoint_note()
    assert served is not None and served.startswith(text.rstrip("\n")) and line.strip() in served
    witnesses = {witness.witness_name(cons.name, "institute"): cons.participant("institute")
                 .public_key}  # type: ignore[union-attr]
    assert len(note.count_cosignatures(served, witnesses)) == cons.policy.cosign_quorum


def test_a_view_checkpoint_at_another_vector_is_refused_before_its_signature_is_checked(
    cons_dir: tuple[Path, Consortium], parts: Parts
) -> None:
    """Under load most CosignView asks name another vector: refused as out of
    order without the Ed25519 check, keeping nothing; at this node's vector
    the signature is checked first, then the root."""
    from ledger.view import ViewCheckpoint, parse_view_checkpoint, sign_view_checkpoint
    from ledger.view import view_origin as vorigin

    d, cons = cons_dir
    parts.core.issue(Mark(NUMBER, "fraud", 70))
    ours = parse_view_checkpoint(note.Note.parse(parts.view.checkpoint_note()).text)
    inst = _key(d, "institute")

    def signed(vector: tuple[tuple[str, int], ...], root: bytes, key: SigningKey = inst) -> str:
        cp = ViewCheckpoint(vorigin(cons.name, "institute"), vector, ours.count, root, _now())
        return sign_view_checkpoint(cp, key)

    ahead = tuple((i, q + 1) for i, q in ours.vector)
    forged_ahead = signed(ahead, ours.root, key=_key(d, OWN))  # not the institute's key
    with pytest.raises(E.OutOfOrder):
        parts.view.cosign("institute", forged_ahead)
    with pytest.raises(E.BadSignature):  # at our vector the signature is checked first
        parts.view.cosign("institute", signed(ours.vector, bytes(32), key=_key(d, OWN)))
    assert parts.view.forks() == []  # neither refusal kept anything
    line = parts.view.cosign("institute", text := signed(ours.vector, ours.root))
    body = note.Note.parse(text).text
    assert note.verify_cosignature(body, line, witness.witness_name(cons.name, OWN),
                                   _key(d, OWN).public_bytes) > 0
    with pytest.raises(E.CheckpointFork):
        parts.view.cosign("institute", signed(ours.vector, hashlib.sha256(b"x").digest()))
    assert len(parts.view.forks()) == 1


# ====================================================================== services over gRPC


@dataclass
class Served:
    d: Path
    cons: Consortium
    parts: Parts
    member: str  # 127.0.0.1:port of the member server (Exchange, Admin, Audit)
    public: str  # and of the public one


@pytest.fixture
def served(cons_dir: tuple[Path, Consortium], parts: Parts) -> Iterator[Served]:
    """carrier-1's servicers, given its parts, on two real servers on 127.0.0.1."""
    d, cons = cons_dir
    cfg = NodeConfig.for_participant(d, OWN)
    led = parts.core.ledger
    gate = gate_at_start(led.feed(OWN).seq, restored=False, new_feed=cfg.new_feed,
                         peers=[], quorum=cons.policy.restore_quorum)
    limits = PublicLimits()
    tls = [(read_private(cfg.tls_key), cfg.tls_cert.read_bytes())]
    member = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[DecodeGuard()])
    rpc.add_ExchangeServicer_to_server(
        ExchangeService(parts.core, parts.witness, parts.view, lambda peer: False), member)
    rpc.add_AdminServicer_to_server(AdminService(parts.core, gate, issue_wait_s=1.0), member)
    rpc.add_AuditServicer_to_server(AuditService(led, forks=(parts.witness, parts.view)), member)
    mport = member.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
        tls, root_certificates=cfg.ca_cert.read_bytes(), require_client_auth=True))
    public = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[DecodeGuard()])
    rpc.add_PublicServicer_to_server(
        PublicService(led, parts.logs, parts.view, PublicGate(ClientTable(limits)), limits),
        public)
    pport = public.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(tls))
    member.start()
    public.start()
    try:
        yield Served(d, cons, parts, f"127.0.0.1:{mport}", f"127.0.0.1:{pport}")
    finally:
        member.stop(0).wait(5)
        public.stop(0).wait(5)


def _code(call: object, *args: object) -> tuple[grpc.StatusCode, E.LedgerError]:
    with pytest.raises(grpc.RpcError) as ei:
        call(*args, timeout=10)  # type: ignore[operator]
    return ei.value.code(), error_from_rpc(ei.value)


def test_admin_issues_only_for_its_own_participant(served: Served) -> None:
    with client.admin_channel(served.d, OWN, served.member) as ch:
        out = rpc.AdminStub(ch).IssueMark(rpb.Mark(number="13800000001", category="fraud",
                                                   score=70), timeout=10)
    assert (out.issuer, out.seq, out.index) == (OWN, 1, 0)
    assert served.parts.core.ledger.record_by_id(out.id) is not None
    with client.admin_channel(served.d, "institute", served.member) as ch:
        code, err = _code(rpc.AdminStub(ch).IssueMark, rpb.Mark(number="1380000002",
                                                                category="fraud"))
    assert code == S.PERMISSION_DENIED and isinstance(err, E.NotAllowed)
    assert f"only {OWN} issues records at this node" in str(err)
    # A member certificate is no admin credential.
    with client.member_channel(served.d, OWN, served.member) as ch:
        code, err = _code(rpc.AdminStub(ch).IssueMark, rpb.Mark(number="1380000002",
                                                                category="fraud"))
    assert code == S.PERMISSION_DENIED and "admin certificate" in str(err)
    assert served.parts.core.ledger.size == 1


def test_public_answers_prove_against_the_signed_view(served: Served) -> None:
    parts = served.parts
    with client.public_channel(served.d, served.public) as ch:
        pub = rpc.PublicStub(ch)
        code, err = _code(pub.GetLogCheckpoint, pb.GetLogCheckpointRequest())
        assert code == S.NOT_FOUND and isinstance(err, E.NotFound)
        parts.core.issue(Mark(NUMBER, "fraud", 70, observed_at_ms=_now()))
        parts.logs.sign_if_grown()
        cp = pub.GetLogCheckpoint(pb.GetLogCheckpointRequest(), timeout=10)
        assert cp.size == 1 and cp.note == parts.logs.checkpoint_note()
        heads = pub.GetFeedHeads(pb.FeedHeadsRequest(), timeout=10)
        assert [(h.issuer, h.seq) for h in heads.heads] == [(OWN, 1)]
        now = _now()
        resp = pub.Lookup(pb.LookupRequest(number=NUMBER), timeout=10)
        got = verify.verify_answer(served.cons, "13800000001", resp, resp.view_checkpoint, now)
        assert got["category"] == "fraud" and got["markers"] and got["signed_by"] == OWN
        # Proven, but no other member cosigned this view: not `verified`, and it says why.
        assert got["verified"] is False and "the policy needs 1" in got["error"]
        # The verifier takes any object with the answer's fields, not only protobuf.
        plain = _PlainAnswer(resp.number, resp.entry, resp.proof, resp.view_checkpoint)
        assert verify.verify_answer(served.cons, NUMBER, plain, plain.view_checkpoint, now) == got
        with pytest.raises(verify.WrongNumber):
            verify.verify_answer(served.cons, "13800000002", resp, resp.view_checkpoint, now)
        batch = pub.LookupBatch(pb.LookupBatchRequest(numbers=[NUMBER, "13800000009"],
                                                      with_proofs=True), timeout=10)
        assert [r.number for r in batch.results] == [NUMBER, "+8613800000009"]
        assert batch.results[0].entry and not batch.results[1].entry
        code, err = _code(pub.LookupBatch,
                          pb.LookupBatchRequest(numbers=[NUMBER] * (MAX_LOOKUP_BATCH + 1)))
        assert code == S.RESOURCE_EXHAUSTED and isinstance(err, E.TooLarge)
        code, err = _code(pub.Lookup, pb.LookupRequest(number="not a number"))
        assert code == S.INVALID_ARGUMENT and isinstance(err, E.InvalidNumber)
        vc = pub.GetViewCheckpoint(pb.GetViewCheckpointRequest(), timeout=10)
        assert verify.view_checkpoint_summary(served.cons, vc.note)["entries"] == 1


@dataclass(frozen=True)
class _PlainAnswer:
    number: str
    entry: bytes
    proof: bytes
    view_checkpoint: str


def test_exchange_takes_members_records_and_refuses_others(served: Served) -> None:
    recs = _chain(served.d, served.cons, "institute", 2)
    with client.member_channel(served.d, "institute", served.member) as ch:
        ex = rpc.ExchangeStub(ch)
        ack = ex.Deliver(pb.RecordBatch(envelopes=[r.envelope for r in recs]), timeout=10)
        assert (ack.accepted, ack.duplicates) == (2, 0)
        heads = ex.Heads(pb.FeedHeadsRequest(), timeout=10)
        assert {h.issuer: h.seq for h in heads.heads} == {"institute": 2}
        pulled = [e for b in ex.Pull(pb.PullRequest(issuer="institute", after=0), timeout=10)
                  for e in b.envelopes]
        assert pulled == [r.envelope for r in recs]
        code, err = _code(ex.ReportEquivocation,
                          pb.EquivocationProof(first=recs[0].envelope, second=recs[0].envelope))
        assert code == S.INVALID_ARGUMENT and isinstance(err, E.MalformedRecord)
        # A view checkpoint whose origin is not the caller's own view is refused unread.
        own_view = served.parts.view.checkpoint_note()
        code, err = _code(ex.CosignView, pb.CosignRequest(note=own_view))
        assert code == S.UNAUTHENTICATED and isinstance(err, E.BadSignature)
    with client.member_channel(served.d, "auditor-1", served.member) as ch:
        code, err = _code(rpc.ExchangeStub(ch).Heads, pb.FeedHeadsRequest())
    assert code == S.PERMISSION_DENIED and "exchanges nothing" in str(err)


def test_audit_serves_entries_and_evidence_to_certified_readers(served: Served) -> None:
    parts = served.parts
    outs = [parts.core.issue(Mark(f"1380000000{i}", "fraud", 70)) for i in range(1, 4)]
    with client.member_channel(served.d, "auditor-1", served.member) as ch:
        _audit_reads(rpc.AuditStub(ch), outs)


def _audit_reads(audit: rpc.AuditStub, outs: list) -> None:  # type: ignore[type-arg]
    got = audit.GetEntries(pb.GetEntriesRequest(start=0, end=10), timeout=10)
    assert list(got.envelopes) == [o.record.envelope for o in outs]
    rec = audit.GetRecord(pb.GetRecordRequest(id=outs[1].record.id), timeout=10)
    assert (rec.index, rec.envelope) == (1, outs[1].record.envelope)
    ev = audit.GetEvidence(pb.GetEvidenceRequest(), timeout=10)
    assert (list(ev.equivocations), list(ev.forks), ev.next_start) == ([], [], 0)
    code, err = _code(audit.GetRecord, pb.GetRecordRequest(id=b"short"))
    assert code == S.INVALID_ARGUMENT and isinstance(err, E.MalformedRecord)
    code, err = _code(audit.GetEvidence, pb.GetEvidenceRequest(limit=101))
    assert code == S.RESOURCE_EXHAUSTED and isinstance(err, E.TooLarge)


def test_undecodable_request_bytes_are_bad_input(served: Served) -> None:
    with client.public_channel(served.d, served.public) as ch:
        raw = ch.unary_unary("/markex.v1.Public/Lookup")
        with pytest.raises(grpc.RpcError) as ei:
            raw(b"\xff\xff\xff", timeout=10)
    assert ei.value.code() == S.INVALID_ARGUMENT
    assert isinstance(error_from_rpc(ei.value), E.BadInput)


# ====================================================================== PeerLink


def _wait(cond: object, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_peer_link_given_its_parts_replicates_and_collects_cosignatures(
    cons_dir: tuple[Path, Consortium], parts: Parts, tmp_path: Path
) -> None:
    """carrier-1's PeerLink, built from LinkParts alone, against the institute's
    Exchange and Audit servicers (their own parts, their own store): it pulls
    the institute's feed, pushes carrier-1's records, and brings back the
    institute's cosignatures on carrier-1's log and view checkpoints."""
    d, cons = cons_dir
    inst_cfg = NodeConfig.for_participant(d, "institute")
    inst_store = Store(tmp_path / "inst")
    inst_key = _key(d, "institute")
    inst_core = NodeCore(inst_store, cons, "institute", inst_key, _now)
    inst_view = ViewKeeper(inst_core.ledger, _now)
    inst_core.subscribe(inst_view.apply)
    inst_core.start()
    inst_view.start()
    inst_witness = Witness(inst_store, cons, "institute", inst_key, _now)
    server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[DecodeGuard()])
    rpc.add_ExchangeServicer_to_server(
        ExchangeService(inst_core, inst_witness, inst_view, lambda peer: False), server)
    rpc.add_AuditServicer_to_server(
        AuditService(inst_core.ledger, forks=(inst_witness, inst_view)), server)
    port = server.add_secure_port("127.0.0.1:0", member_server_credentials(inst_cfg))
    server.start()
    creds = member_channel_credentials(NodeConfig.for_participant(d, OWN))
    inst = cons.participant("institute")
    assert inst is not None
    gate = gate_at_start(0, restored=False, new_feed=True, peers=["institute"],
                         quorum=cons.policy.restore_quorum)
    link_parts = LinkParts(parts.core, gate, parts.logs, parts.view,
                           NodeMetrics(p.id for p in cons.participants), lambda peer: False)
    link = PeerLink(link_parts, dataclasses.replace(inst, member_endpoint=f"127.0.0.1:{port}"),
                    creds, sync_interval=0.1)
    parts.core.subscribe(
        lambda recs: link.enqueue([r.envelope for r in recs if r.issuer == OWN]))
    try:
        for i in range(3):
            inst_core.issue(Mark(f"1390000000{i}", "fraud", 70, observed_at_ms=_now()))
        link.start()
        own = parts.core.issue(Mark(NUMBER, "fraud", 70, observed_at_ms=_now()))
        _wait(lambda: parts.core.ledger.feed("institute").seq == 3, "the pull")
        _wait(lambda: inst_core.ledger.record_by_id(own.record.id) is not None, "the push")
        _wait(lambda: gate.refusal(1, own.record.id) is None, "the institute's report")
        text = parts.logs.sign_if_grown()
        assert text is not None
        link.cosign_now()
        _wait(lambda: parts.logs.has_cosignature("institute", text), "the log cosignature")
        served = parts.logs.checkpoint_note()
        assert served is not None and served != text and served.startswith(text.rstrip("\n"))

        def view_cosigned() -> bool:
            link.cosign_now()
            note_text = parts.view.checkpoint_note()
            return note_text is not None and "institute" in verify.open_view(
                cons, note_text).cosigned_at

        _wait(view_cosigned, "the view cosignature")
        assert not parts.view.refused_cosignatures
    finally:
        link.stop()
        server.stop(0).wait(5)
        inst_core.stop()
        inst_store.close()


def _link_to_down_institute(cons_dir: tuple[Path, Consortium], parts: Parts,
                            sync_interval: float) -> PeerLink:
    """A link of `parts`' node to the institute at a port nothing listens on."""
    d, cons = cons_dir
    inst = cons.participant("institute")
    assert inst is not None
    gate = gate_at_start(0, restored=False, new_feed=True, peers=["institute"],
                         quorum=cons.policy.restore_quorum)
    link_parts = LinkParts(parts.core, gate, parts.logs, parts.view,
                           NodeMetrics(p.id for p in cons.participants), lambda peer: False)
    return PeerLink(link_parts, dataclasses.replace(
        inst, member_endpoint=f"127.0.0.1:{free_port_block(1)}"),
        member_channel_credentials(NodeConfig.for_participant(d, OWN)),
        sync_interval=sync_interval)


def test_a_link_to_a_down_peer_makes_no_view_checkpoint_when_woken(
    cons_dir: tuple[Path, Consortium], parts: Parts
) -> None:
    """The institute is down (nothing listens at its port): the rota's wakes
    (`cosign_now`) between rounds ask nothing of it, so the view's checkpoint
    is not made and signed for an ask that would fail; the asks wait for the
    round that reaches it."""
    link = _link_to_down_institute(cons_dir, parts, sync_interval=30)
    asked: list[str] = []
    real = parts.view.request_cosign

    def counted(peer: Any, stub: Any) -> bool:
        asked.append(peer.id)
        return real(peer, stub)

    parts.view.request_cosign = counted  # type: ignore[method-assign]
    try:
        link.start()
        _wait(lambda: link._state is False, "the first round to fail")
        for i in range(20):
            parts.core.issue(Mark(f"+861370000{i:04d}", "fraud", 70, observed_at_ms=_now()))
            link.cosign_now()
            time.sleep(0.02)
        _wait(lambda: link.wakes_while_down >= 5, "the wakes")
        assert asked == []
    finally:
        link.stop()


def test_a_round_failing_here_not_at_the_peer_keeps_the_links_early_wakes(
    cons_dir: tuple[Path, Consortium], parts: Parts
) -> None:
    """The review: a round that fails for a reason of this node's own (not an
    RPC error: here a RuntimeError from the round) does not make the link take
    its peer for unreachable, so the rota's wakes still ask it."""
    link = _link_to_down_institute(cons_dir, parts, sync_interval=0.2)
    rounds: list[int] = []
    steps: list[tuple[bool, bool]] = []

    def round_() -> int:
        rounds.append(1)
        if len(rounds) == 1:
            return 0          # reached the peer
        raise RuntimeError("this node's own pipe is full")

    link.sync_once = round_  # type: ignore[method-assign]
    link._cosign_steps = lambda *, of_log=True, of_view=True: steps.append(  # type: ignore[method-assign]
        (of_log, of_view))
    try:
        link.start()
        _wait(lambda: len(rounds) >= 2, "a round to fail here")
        link.cosign_now()
        _wait(lambda: bool(steps), "the early wake's asks")
        assert link.wakes_while_down == 0
    finally:
        link.stop()


# ====================================================================== status


def _documented_codes() -> dict[str, grpc.StatusCode]:
    """Class name -> the code the tree in ledger/errors.py's docstring gives it."""
    out = {}
    for line in (E.__doc__ or "").splitlines():
        m = re.match(r"[\s│├└─]*([A-Z]\w+)\s.*\s([A-Z_]{6,})\s*$", line)
        if m:
            out[m.group(1)] = S[m.group(2)]
    return out


def _subclasses(base: type[Exception]) -> list[type[Exception]]:
    out, todo = [], [base]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return out


# Every module that defines LedgerError or KeysError classes a node may raise.
_ERROR_MODULES = {E.__name__, verify.__name__, witness.__name__, keys.__name__}
_KEYS_CODES = {"KeysError": S.INTERNAL, "ConfigError": S.INVALID_ARGUMENT,
               "ConfigSignatureError": S.INTERNAL, "KeyFileError": S.INTERNAL}


@pytest.mark.parametrize(
    "cls",
    [c for c in _subclasses(E.LedgerError) + _subclasses(keys.KeysError)
     if c.__module__ in _ERROR_MODULES],
    ids=lambda c: c.__name__,
)
def test_every_error_class_maps_to_its_one_code(cls: type[Exception]) -> None:
    """The nearest documented class in its ancestry gives the code; the base
    LedgerError and anything undocumented is INTERNAL."""
    documented = _documented_codes() | _KEYS_CODES
    want = next((documented[c.__name__] for c in cls.__mro__ if c.__name__ in documented),
                S.INTERNAL)
    err = cls(7) if cls is witness.WitnessConflict else cls("why")
    assert code_for(err) == want
    assert detail_for(err).startswith(f"{cls.__name__}: ")


def test_the_documented_tree_is_the_class_tree() -> None:
    """Every class the errors docstring draws exists, and every ledger error class is drawn."""
    drawn = set(re.findall(r"[├└]── (\w+)", E.__doc__ or "")) | {"LedgerError"}
    defined = {c.__name__ for c in _subclasses(E.LedgerError) if c.__module__ == E.__name__}
    assert drawn == defined
    assert _documented_codes()["Equivocation"] == S.ALREADY_EXISTS


def test_a_status_comes_back_as_its_ledger_error() -> None:
    class _Rpc(grpc.RpcError):
        def __init__(self, code: grpc.StatusCode, details: str) -> None:
            self._code, self._details = code, details

        def code(self) -> grpc.StatusCode:
            return self._code

        def details(self) -> str:
            return self._details

    for cls in _subclasses(E.LedgerError):
        if cls.__module__ != E.__name__ or cls is E.LedgerError:
            continue
        err = cls("x: y")
        back = error_from_rpc(_Rpc(code_for(err), detail_for(err)))
        assert type(back) is cls and str(back) == "x: y"
    unknown = error_from_rpc(_Rpc(S.UNAVAILABLE, "connection refused"))
    assert type(unknown) is E.LedgerError and str(unknown) == "UNAVAILABLE: connection refused"


def test_a_node_process_collector_runs_rarely_and_skips_its_start() -> None:
    """`markex node run`'s collector (node/server.py): its young generation
    holds GC_THRESHOLDS[0] objects before a collection (not Python's 700),
    and what the start made is frozen, never scanned again; objects made
    later are still collected (a cycle made after is freed)."""
    import gc
    import weakref

    from node.server import GC_THRESHOLDS, settle_collector, tune_collector

    was = gc.get_threshold()
    try:
        tune_collector()
        assert gc.get_threshold() == GC_THRESHOLDS and GC_THRESHOLDS[0] >= 10_000
        settle_collector()
        assert gc.get_freeze_count() > 0

        class Cycle:
            pass

        c = Cycle()
        c.me = c  # type: ignore[attr-defined]
        gone = weakref.ref(c)
        del c
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*was)
