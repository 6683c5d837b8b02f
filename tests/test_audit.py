"""The auditor.

Offline: a real node store built with NodeLedger audits clean; each way of
tampering with the stopped store is caught and located (leaf, record, issuer,
Merkle node, number). Evidence files round-trip through `markex audit
verify-evidence`, and forged ones fail. Online: a real node (node.server.Node,
gRPC on loopback) audits clean, a second run resumes with a consistency
proof, and a forked log, entries that do not match the checkpoint, and a view
that does not follow from the records are each caught.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from keys.consortium import Consortium
from keys.layout import NodeConfig, init_consortium
from keys.signing import SigningKey
from ledger import audit, merkle
from ledger import view as V
from ledger.audit import storepass
from ledger.audit.envelopes import Checker
from ledger.errors import BadInput, LedgerError
from ledger.evidence import b64, unb64
from ledger.log import EquivocationProof, FeedState, NodeLedger
from ledger.record import WITHDRAW, Correction, Mark, Reassignment, Record
from ledger.store import Store, feedseq_key, merkle_key, read_u64, u64
from node import auditcli
from node.auditcli import write_evidence
from node.cli import main
from tests.conftest import KEYS, NAME, NOW, free_port_block, make_consortium

# consortium.json is signed by a configuration key of its own (a participant's key may
# not sign it), and every CLI run pins that key (node/client.py).
CONFIG_KEY = SigningKey.from_seed(bytes(range(32)))
PIN = ["--institute-key", base64.b64encode(CONFIG_KEY.public_bytes).decode()]


def net_pin(directory: Path) -> list[str]:
    key = NodeConfig.for_participant(directory, "institute").institute_key
    return ["--institute-key", base64.b64encode(key).decode()]

pytestmark = pytest.mark.timeout(120)

NODE = "carrier-1"
ISSUERS = ("carrier-1", "internet-1", "institute", "carrier-2")


class Feeds:
    """Signs records for several issuers, keeping each feed's chain."""

    def __init__(self, keys: dict[str, SigningKey], now: int, consortium: str = NAME) -> None:
        self.keys = keys
        self.consortium = consortium  # the name every record is signed for
        self.now = now
        self.heads: dict[str, tuple[int, bytes]] = {}

    def issue(self, pid: str, payload: Any) -> Record:
        seq, prev = self.heads.get(pid, (0, b""))
        rec = Record.issue(
            self.keys[pid], pid, seq + 1, prev, self.now, payload, consortium=self.consortium
        )
        self.heads[pid] = (rec.seq, rec.id)
        return rec

    def marks(self, n: int, issuers: tuple[str, ...], prefix: str) -> list[Record]:
        return [
            self.issue(
                issuers[i % len(issuers)],
                Mark(
                    f"{prefix}{i % 16:04d}",
                    "harassment",
                    score=40 + i % 50,
                    observed_at_ms=self.now - 60_000,
                ),
            )
            for i in range(n)
        ]


def _write_view(led: NodeLedger) -> None:
    view = V.rebuild_from_ledger(led)
    b = led.store.batch()
    view.save_changes(b, list(view.numbers()))
    led.store.write(b)


def build_store(path: Path, cons: Consortium) -> list[Record]:
    """A carrier-1 node store: 52 records of four issuers in three batches,
    a checkpoint after each, and the view column family."""
    led = NodeLedger(Store(path), cons, NODE, KEYS[NODE])
    feeds = Feeds(KEYS, NOW)
    recs: list[Record] = []
    batches = [
        feeds.marks(20, ISSUERS, "+861380000"),
        feeds.marks(20, ISSUERS, "+861390000"),
        [
            feeds.issue("carrier-1", Reassignment("+8613800000003", NOW - 1000)),
            feeds.issue("carrier-2", Mark("+8613000000001", "fraud")),
        ]
        + feeds.marks(10, ISSUERS, "+861300000"),
    ]
    for batch in batches:
        out = led.submit([r.envelope for r in batch], NOW)
        assert all(o.status == "accepted" for o in out.outcomes), out.outcomes
        led.sign_checkpoint()
        recs.extend(batch)
    own = recs[1]  # internet-1's first mark: withdrawn by its issuer
    corr = feeds.issue("internet-1", Correction(targets=(own.id,), action=WITHDRAW))
    assert led.submit([corr.envelope], NOW).outcomes[0].status == "accepted"
    recs.append(corr)
    led.sign_checkpoint()
    _write_view(led)
    led.close()
    return recs


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Record]]:
    path = tmp_path_factory.mktemp("honest") / "db"
    return path, build_store(path, make_consortium())


@pytest.fixture
def copy(honest: tuple[Path, list[Record]], tmp_path: Path) -> Path:
    dst = tmp_path / "db"
    shutil.copytree(honest[0], dst)
    return dst


@contextmanager
def tamper(path: Path) -> Iterator[Store]:
    store = Store(path)
    try:
        yield store
    finally:
        store.close()


def run_audit(path: Path, **kw: Any) -> audit.AuditReport:
    return audit.audit_store(path, make_consortium(), NODE, workers=kw.pop("workers", 0), **kw)


def leaf_id(store: Store, i: int) -> bytes:
    rid = store.get("leaves", u64(i))
    assert rid is not None
    return rid


def indexes(rep: audit.AuditReport) -> set[int]:
    return {f.index for f in rep.findings if f.index is not None}


# ====================================================================== offline


def test_honest_store_audits_clean(honest: tuple[Path, list[Record]]) -> None:
    path, recs = honest
    rep = run_audit(path)
    assert rep.ok, [f.line() for f in rep.findings]
    assert rep.findings == []
    assert rep.counts["records"] == rep.counts["verified"] == len(recs)
    assert rep.counts["issuers"] == 4
    assert rep.counts["stored_view_entries"] == rep.counts["view_entries"] > 0
    assert {w.kind for w in rep.warnings} <= {"quorum"}
    assert rep.to_json()["ok"] is True


@pytest.mark.parametrize(
    ("where", "kind"),
    [("signature", "signature"), ("number", "signature"), ("tag", "parse")],
)
def test_flipped_byte_in_envelope_is_located(copy: Path, where: str, kind: str) -> None:
    i = 13
    with tamper(copy) as s:
        rid = leaf_id(s, i)
        v = bytearray(s.get("records", rid) or b"")
        if where == "signature":
            pos = len(v) - 1
        elif where == "number":
            pos = bytes(v).index(b"+86138") + 9  # a digit of the marked number
        else:
            pos = 8  # the envelope's first protobuf tag
        v[pos] ^= 0x01 if where != "tag" else 0xFF
        s.put("records", rid, bytes(v))
    rep = run_audit(copy)
    assert not rep.ok
    hit = [f for f in rep.findings if f.kind == kind and f.index == i]
    assert hit and hit[0].record_id is not None
    assert any(f.kind == "record" and f.index == i for f in rep.findings)  # id != hash
    assert any(f.kind == "merkle-node" and f.where == f"merkle 0/{i}" for f in rep.findings)
    assert any(f.kind == "checkpoint" for f in rep.findings)  # root differs from the signed one
    if kind == "signature":
        assert hit[0].issuer == ISSUERS[i % 4] and hit[0].seq == i // 4 + 1
        assert indexes(rep) == {i}
    else:
        assert i in indexes(rep)


def test_deleted_record_is_located(copy: Path) -> None:
    i = 22
    with tamper(copy) as s:
        s_rid = leaf_id(s, i)
        b = s.batch()
        b.delete("records", s_rid)
        s.write(b)
    rep = run_audit(copy)
    assert not rep.ok
    assert any(
        f.kind == "record" and f.index == i and "not in the store" in f.detail for f in rep.findings
    )
    # The stored leaf hash stands in for the lost envelope: the root still matches.
    assert "checkpoint" not in rep.kinds()
    # The issuer's chain now has a hole right after it.
    gap = [f for f in rep.findings if f.kind == "sequence"]
    assert gap and gap[0].issuer == ISSUERS[i % 4] and gap[0].index == i + 4


def test_record_removed_from_the_log_is_located(copy: Path) -> None:
    i = 30
    with tamper(copy) as s:
        rid = leaf_id(s, i)
        b = s.batch()
        b.delete("leaves", u64(i))
        b.delete("records", rid)
        s.write(b)
    rep = run_audit(copy)
    assert any(f.kind == "leaf" and f.index == i for f in rep.findings)


def test_swapped_records_are_located(copy: Path) -> None:
    i, j = 5, 41
    with tamper(copy) as s:
        a, b_ = leaf_id(s, i), leaf_id(s, j)
        b = s.batch()
        b.put("leaves", u64(i), b_)
        b.put("leaves", u64(j), a)
        s.write(b)
    rep = run_audit(copy)
    assert not rep.ok
    for k in (i, j):
        assert any(f.kind == "record" and f.index == k for f in rep.findings)
        assert any(f.kind == "merkle-node" and f.index == k for f in rep.findings)
        # Each feed's order is judged as a whole: only the moved records are blamed.
        assert any(f.kind == "sequence" and f.index == k for f in rep.findings)
    assert indexes(rep) == {i, j}
    assert rep.kinds() == {"record", "merkle-node", "sequence", "checkpoint"}


def test_changed_interior_hash_is_located_exactly(copy: Path) -> None:
    with tamper(copy) as s:
        h = bytearray(s.get("merkle", merkle_key(3, 1)) or b"")
        h[0] ^= 0x80
        s.put("merkle", merkle_key(3, 1), bytes(h))
    rep = run_audit(copy)
    assert not rep.ok
    assert [(f.kind, f.where) for f in rep.findings] == [("merkle-node", "merkle 3/1")]
    assert "leaves 8..15" in rep.findings[0].detail


def test_rewound_feed_head_is_located(copy: Path, honest: tuple[Path, list[Record]]) -> None:
    issuer = "internet-1"
    with tamper(copy) as s:
        st = FeedState.decode(issuer, s.get("feeds", issuer.encode()) or b"")
        prev = s.get("feedseq", feedseq_key(issuer, st.seq - 1)) or b""
        s.put("feeds", issuer.encode(), FeedState(issuer, st.seq - 1, prev).encode())
        head_leaf = read_u64((s.get("records", st.head_id) or b"")[:8])
    rep = run_audit(copy)
    assert [f.kind for f in rep.findings] == ["feed-head"]
    f = rep.findings[0]
    assert f.issuer == issuer and f.seq == st.seq and f.index == head_leaf
    assert "rewound" in f.detail


def test_edited_view_entry_is_located(copy: Path) -> None:
    with tamper(copy) as s:
        number, raw = next(iter(s.items("view")))
        edited = raw.replace(b'"harassment"', b'"fraud"', 1)
        assert edited != raw
        s.put("view", number, edited)
    rep = run_audit(copy)
    assert [(f.kind, f.where) for f in rep.findings] == [("view-entry", number.decode())]


@pytest.mark.skipif(not hasattr(V, "catch_up"), reason="no store-backed view in ledger/view.py")
def test_store_backed_view_lagging_is_clean_and_an_edit_is_located(copy: Path) -> None:
    cons = make_consortium()
    led = NodeLedger(Store(copy), cons, NODE, KEYS[NODE])
    b = led.store.batch()
    for number, _ in list(led.store.items("view")):
        b.delete("view", number)
    led.store.write(b)
    view = V.NationalView.open(led.store, cons)
    V.catch_up(view, led)  # type: ignore[attr-defined]
    # Records the view has not applied yet: it lags, as after a crash before its batch.
    feeds = Feeds(KEYS, NOW)
    feeds.heads = {i: (f.seq, f.head_id) for i, f in led.feeds().items()}
    led.submit([r.envelope for r in feeds.marks(4, ("internet-2",), "+861386000")], NOW)
    led.sign_checkpoint()
    led.close()
    rep = run_audit(copy)
    assert rep.ok, [f.line() for f in rep.findings]
    assert any(w.kind == "view" and w.issuer == "internet-2" for w in rep.warnings)
    assert rep.counts["stored_view_entries"] == rep.counts["view_entries"] > 0

    with tamper(copy) as s:
        number, raw = next(iter(s.items("view")))
        s.put("view", number, raw.replace(b'"harassment"', b'"fraud"', 1))
    rep = run_audit(copy)
    assert [(f.kind, f.where) for f in rep.findings] == [("view-entry", number.decode())]


def test_deleted_view_entry_and_shrunk_size_are_found(copy: Path) -> None:
    with tamper(copy) as s:
        number, _ = next(iter(s.items("view")))
        b = s.batch()
        b.delete("view", number)
        b.put("meta", b"size", u64(50))
        s.write(b)
    rep = run_audit(copy)
    assert any(f.kind == "view-entry" and f.where == number.decode() for f in rep.findings)
    # A signed checkpoint names more leaves than the store admits to.
    assert any(f.kind == "checkpoint" and "records lost" in f.detail for f in rep.findings)
    assert any(f.kind == "leaf" and f.index == 50 for f in rep.findings)


def test_process_pool_gives_the_same_report(copy: Path) -> None:
    with tamper(copy) as s:
        rid = leaf_id(s, 7)
        v = bytearray(s.get("records", rid) or b"")
        v[-3] ^= 0x10
        s.put("records", rid, bytes(v))
    inproc = run_audit(copy, workers=0)
    pooled = run_audit(copy, workers=2)
    assert pooled.counts["workers"] == 2
    assert [f.to_json() for f in pooled.findings] == [f.to_json() for f in inproc.findings]
    assert any(f.kind == "signature" and f.index == 7 for f in pooled.findings)


def test_the_auditing_process_checks_chunks_beside_its_pool(
    copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small chunks keep the one worker busy, so the audit's own process
    checks some of them; the report is the same as checked in one process."""
    with tamper(copy) as s:
        rid = leaf_id(s, 7)
        v = bytearray(s.get("records", rid) or b"")
        v[-3] ^= 0x10
        s.put("records", rid, bytes(v))
    monkeypatch.setattr(storepass, "CHUNK", 3)
    inproc = run_audit(copy, workers=0)
    mixed = run_audit(copy, workers=1)
    assert mixed.counts["workers"] == 1 and mixed.counts["chunks_checked_here"] > 0
    assert [f.to_json() for f in mixed.findings] == [f.to_json() for f in inproc.findings]
    assert mixed.counts["records"] == inproc.counts["records"]


# The pass checks whole chunks in bulk (one scan of leaves, one of each run of
# Merkle nodes and feedseq entries) and goes key by key only where a chunk is
# not whole. Chunks of 7 put every tampering below inside some later chunk.


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storepass, "CHUNK", 7)


@pytest.mark.usefixtures("small_chunks")
def test_honest_store_is_clean_in_small_chunks(honest: tuple[Path, list[Record]]) -> None:
    rep = run_audit(honest[0])
    assert rep.ok and rep.findings == [], [f.line() for f in rep.findings]
    assert rep.counts["verified"] == len(honest[1])


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize(
    "key", [b"\0", u64(0)[:7], u64(20) + b"x", u64(23) + b"\0\0"], ids=repr
)
def test_malformed_leaf_key_between_leaves_is_found(copy: Path, key: bytes) -> None:
    """A key that is no 8-byte index, sorting before leaf 0 or between two
    leaves of a chunk: the bulk read must not step over it."""
    with tamper(copy) as s:
        s.put("leaves", key, leaf_id(s, 3))
    rep = run_audit(copy)
    assert [f.kind for f in rep.findings] == ["leaf"]
    assert "malformed key" in rep.findings[0].detail


@pytest.mark.usefixtures("small_chunks")
def test_missing_leaf_in_a_later_chunk_is_located(copy: Path) -> None:
    with tamper(copy) as s:
        s.put("records", leaf_id(s, 40), b"")  # a record value too short to name its leaf
        b = s.batch()
        b.delete("leaves", u64(30))
        s.write(b)
    rep = run_audit(copy)
    assert any(f.kind == "leaf" and f.index == 30 for f in rep.findings)
    assert any(f.kind == "record" and f.index == 40 for f in rep.findings)
    assert any(f.kind == "sequence" and f.index == 34 for f in rep.findings)  # the hole at 30


@pytest.mark.usefixtures("small_chunks")
def test_merkle_nodes_moved_one_key_up_are_located(copy: Path) -> None:
    """Level-1 nodes from index 9 on stored one index higher: read as values
    alone, from the first key on, they would match exactly."""
    with tamper(copy) as s:
        moved = [v for k, v in s.items("merkle", merkle_key(1, 9), merkle_key(2, 0))]
        b = s.batch()
        b.delete("merkle", merkle_key(1, 9))
        for k, v in enumerate(moved, 10):
            b.put("merkle", merkle_key(1, k), v)
        s.write(b)
    rep = run_audit(copy)
    assert any(f.where == "merkle 1/9" and "missing" in f.detail for f in rep.findings)
    assert {f.kind for f in rep.findings} == {"merkle-node"}


@pytest.mark.usefixtures("small_chunks")
def test_feedseq_entries_moved_one_seq_up_are_located(copy: Path) -> None:
    issuer = ISSUERS[1]
    with tamper(copy) as s:
        start = feedseq_key(issuer, 4)
        moved = [v for _, v in s.items("feedseq", start, feedseq_key(issuer, 1 << 40))]
        b = s.batch()
        b.delete("feedseq", start)
        for k, v in enumerate(moved, 5):
            b.put("feedseq", feedseq_key(issuer, k), v)
        s.write(b)
    rep = run_audit(copy)
    bad = [f for f in rep.findings if f.kind == "feedseq"]
    assert bad and (bad[0].issuer, bad[0].seq) == (issuer, 4) and "no entry" in bad[0].detail
    assert {f.kind for f in rep.findings} == {"feedseq"}


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("tampering", ["none", "signature", "swap", "hole"])
def test_chunks_in_one_go_give_what_record_by_record_gives(
    copy: Path, tampering: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LogChecker takes an ordinary chunk (clean, each feed in order and
    linked) in one go: the same report and feed heads as record by record."""
    with tamper(copy) as s:
        if tampering == "signature":
            rid = leaf_id(s, 16)
            v = bytearray(s.get("records", rid) or b"")
            v[-1] ^= 1
            s.put("records", rid, bytes(v))
        elif tampering == "swap":
            a, b_ = leaf_id(s, 9), leaf_id(s, 26)
            s.put("leaves", u64(9), b_)
            s.put("leaves", u64(26), a)
        elif tampering == "hole":
            b = s.batch()
            b.delete("records", leaf_id(s, 18))
            s.write(b)
    calls = []
    in_order = audit.LogChecker._add_in_order

    def spy(self: audit.LogChecker, *a: Any) -> Any:
        calls.append(got := in_order(self, *a))
        return got

    monkeypatch.setattr(audit.LogChecker, "_add_in_order", spy)
    fast = run_audit(copy, view=False)  # the view takes Records one by one
    assert any(c is not None for c in calls)  # some chunks did go in one go
    assert (tampering == "none") == all(c is not None for c in calls)
    monkeypatch.setattr(audit.LogChecker, "_add_in_order", lambda *a: None)
    slow = run_audit(copy, view=False)
    assert [f.to_json() for f in fast.findings] == [f.to_json() for f in slow.findings]
    timing = {"records_per_second"}
    assert {k: v for k, v in fast.counts.items() if k not in timing} == {
        k: v for k, v in slow.counts.items() if k not in timing
    }
    assert fast.ok == (tampering == "none")


def test_a_broken_previous_link_is_located_in_either_way() -> None:
    """Checked records fed straight to LogChecker: a chunk whose links hold
    goes in one go; a chunk with a record naming another previous id (inside
    the chunk, or as its first record against the feed's head) goes record
    by record, and that record is the finding."""

    def checked(i: int, seq: int, prev: bytes) -> audit.Checked:
        rid = hashlib.sha256(b"record %d" % i).digest()
        return (hashlib.sha256(rid).digest(), rid, "carrier-1", seq, prev, None, None, None, 1)

    a = checked(0, 1, b"")
    b = checked(1, 2, a[1])
    c = checked(2, 3, b[1])
    d = checked(3, 4, bytes(32))  # should name c
    e = checked(4, 5, c[1])  # should name d
    chunks = [[(x[0], x) for x in xs] for xs in ((a, b), (c, d), (e,))]
    rep = audit.AuditReport("carrier-1", "offline")
    lc = audit.LogChecker(make_consortium(), rep)
    assert audit.LogChecker(make_consortium(), rep)._add_in_order(chunks[0], 0) is not None
    lc.add(chunks[0])
    for start, chunk in ((2, chunks[1]), (4, chunks[2])):
        before = lc.heads()
        assert lc._add_in_order(chunk, start) is None and lc.heads() == before
        lc.add(chunk)
    assert [(f.kind, f.index, f.seq) for f in rep.findings] == [
        ("previous", 3, 4),
        ("previous", 4, 5),
    ]
    assert lc.heads() == {"carrier-1": (5, e[1])} and lc.size == 5


@pytest.mark.usefixtures("small_chunks")
def test_progress_is_reported_and_drawn_for_long_runs(
    honest: tuple[Path, list[Record]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """audit_store reports (done, total) after every chunk, ending at the log
    size; the CLI's bar draws it on stderr, only for runs of PROGRESS_MIN
    records or more."""
    seen: list[tuple[int, int]] = []
    rep = run_audit(honest[0], progress=lambda done, total: seen.append((done, total)))
    n = rep.counts["records"]
    assert seen[-1] == (n, n) and len(seen) == -(-n // 7)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)

    monkeypatch.setattr(auditcli, "PROGRESS_MIN", n)
    bar = auditcli._Progress("audit carrier-1")
    for done, total in seen:
        bar(done, total)
    bar.end()
    err = capsys.readouterr().err
    assert f"audit carrier-1 [{'#' * 30}] {n}/{n} (100%)" in err and err.endswith("\n")
    monkeypatch.setattr(auditcli, "PROGRESS_MIN", n + 1)
    quiet = auditcli._Progress("audit carrier-1")
    quiet(n, n)
    quiet.end()
    assert capsys.readouterr().err == ""


def test_pool_backlog_shrinks_over_the_last_chunks(honest: tuple[Path, list[Record]]) -> None:
    """Told how many chunks come, the checker hands the last one to its own
    process rather than queueing it behind the pool; order and results are
    those of checking in-process."""
    envs = [r.envelope for r in honest[1]]
    tasks = [(k, envs[k * 4 : k * 4 + 4]) for k in range(12)]
    alone = Checker(make_consortium(), len(envs), 0)
    want = list(alone.run(tasks, verify=True, keep=False))
    pooled = Checker(make_consortium(), len(envs), 1)
    try:
        got = list(pooled.run(iter(tasks), verify=True, keep=False, count=len(tasks)))
    finally:
        pooled.close()
    assert got == want and [t for t, _ in got] == list(range(12))
    assert pooled.local >= 1  # at least the last chunk, checked here


def test_report_lists_a_bounded_number_of_findings_per_kind() -> None:
    rep = audit.AuditReport("x", "offline")
    for i in range(audit.MAX_PER_KIND + 50):
        rep.error("signature", "bad", index=i)
    rep.warn("quorum", "few")
    assert len(rep.findings) == audit.MAX_PER_KIND
    assert rep.dropped == {"error:signature": 50}
    assert not rep.ok and len(rep.warnings) == 1
    out = rep.to_json()
    assert out["findings"][0] == {
        "kind": "signature",
        "severity": "error",
        "index": 0,
        "detail": "bad",
    }


# ====================================================================== evidence


@pytest.fixture
def cons_dir(tmp_path: Path) -> Path:
    d = tmp_path / "consortium"
    d.mkdir()
    make_consortium().write(d, CONFIG_KEY)
    return d


def verify_file(cons_dir: Path, path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    capsys.readouterr()
    rc = main(
        ["audit", "verify-evidence", str(path), "--consortium", str(cons_dir), *PIN, "--json"]
    )
    return rc, json.loads(capsys.readouterr().out)


def test_equivocation_is_found_and_its_evidence_round_trips(
    tmp_path: Path, cons_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cons = make_consortium()
    path = tmp_path / "db"
    led = NodeLedger(Store(path), cons, NODE, KEYS[NODE])
    feeds = Feeds(KEYS, NOW)
    recs = feeds.marks(6, ("internet-2",), "+861381000")
    led.submit([r.envelope for r in recs], NOW)
    twin = Record.issue(
        KEYS["internet-2"],
        "internet-2",
        3,
        recs[1].id,
        NOW,
        Mark("+8613810009999", "fraud"),
        consortium=NAME,
    )
    assert led.submit([twin.envelope], NOW).outcomes[0].status == "equivocation"
    led.sign_checkpoint()
    led.close()

    rep = run_audit(path)
    assert [(f.kind, f.issuer, f.seq) for f in rep.findings] == [("equivocation", "internet-2", 3)]
    assert len(rep.evidence) == 1
    ev_path = write_evidence(tmp_path / "evidence", rep.evidence[0])
    rc, out = verify_file(cons_dir, ev_path, capsys)
    assert rc == 0 and out["valid"] and "internet-2" in out["proves"]

    # Forged: the second record's signature altered.
    forged = dict(rep.evidence[0])
    second = bytearray(unb64(forged["second"], "second"))
    second[-1] ^= 1
    forged["second"] = b64(bytes(second))
    rc, out = verify_file(cons_dir, write_evidence(tmp_path / "forged", forged), capsys)
    assert rc == 1 and not out["valid"] and "BadSignature" in out["error"]

    # Not an equivocation: one record twice.
    same = dict(rep.evidence[0], second=rep.evidence[0]["first"])
    rc, _ = verify_file(cons_dir, write_evidence(tmp_path / "same", same), capsys)
    assert rc == 1


def _ledger_with(path: Path, recs: list[Record]) -> NodeLedger:
    led = NodeLedger(Store(path), make_consortium(), NODE, KEYS[NODE])
    led.submit([r.envelope for r in recs], NOW)
    return led


def test_fork_evidence_round_trips_and_forgeries_fail(
    tmp_path: Path, cons_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cons = make_consortium()
    a_recs = Feeds(KEYS, NOW).marks(8, ("carrier-1", "internet-1"), "+861382000")
    b_recs = Feeds(KEYS, NOW + 1).marks(8, ("carrier-1", "internet-1"), "+861383000")
    a = _ledger_with(tmp_path / "a", a_recs[:5])
    a5 = a.sign_checkpoint()
    a.submit([r.envelope for r in a_recs[5:]], NOW)
    a8 = a.sign_checkpoint()
    b = _ledger_with(tmp_path / "b", b_recs)
    b8 = b.sign_checkpoint()

    # Same size, two roots.
    ev = audit.fork_evidence(cons, NODE, a8, b8)
    rc, out = verify_file(cons_dir, write_evidence(tmp_path / "e1", ev), capsys)
    assert rc == 0 and "two different roots for size 8" in out["proves"]

    # Sizes 5 and 8: the larger tree's first 5 leaves hash to another root.
    ev = audit.fork_evidence(cons, NODE, a5, b8, b.root_at(5), b.consistency_proof(5, 8))
    rc, out = verify_file(cons_dir, write_evidence(tmp_path / "e2", ev), capsys)
    assert rc == 0 and "does not extend" in out["proves"]

    # Forgeries and non-forks.
    bad_prefix = dict(ev, prefix_root=b64(a.root_at(5)))  # proof no longer verifies
    consistent = {
        **ev,
        "first": a5,
        "second": a8,
        "prefix_root": b64(a.root_at(5)),
        "proof": [b64(h) for h in a.consistency_proof(5, 8)],
    }
    no_proof = {k: v for k, v in ev.items() if k not in ("prefix_root", "proof")}
    wrong_key = dict(ev, log="carrier-2")
    for name, forged in [
        ("bad-prefix", bad_prefix),
        ("consistent", consistent),
        ("no-proof", no_proof),
        ("wrong-key", wrong_key),
    ]:
        rc, out = verify_file(cons_dir, write_evidence(tmp_path / name, forged), capsys)
        assert rc == 1 and not out["valid"], name
    with pytest.raises(LedgerError):
        audit.fork_evidence(cons, NODE, a5, a8, a.root_at(5), a.consistency_proof(5, 8))
    with pytest.raises(BadInput):
        audit.verify_evidence(
            {"format": audit.EVIDENCE_FORMAT, "kind": "x", "consortium": cons.name}, cons
        )
    for led in (a, b):
        led.close()


def test_equivocation_proof_helper_matches_the_ledgers() -> None:
    cons = make_consortium()
    r1, r2 = (
        Record.issue(KEYS["carrier-2"], "carrier-2", 1, b"", NOW, Mark(n, "fraud"), consortium=NAME)
        for n in ("+8613000000001", "+8613000000002")
    )
    ev = audit.equivocation_evidence(EquivocationProof(r1.envelope, r2.envelope), cons)
    assert "carrier-2" in audit.verify_evidence(ev, cons)


# ====================================================================== command line, offline


def test_cli_offline_honest_then_tampered(
    honest: tuple[Path, list[Record]],
    copy: Path,
    cons_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    args = ["audit", "--data-dir", str(honest[0]), "--consortium", str(cons_dir), *PIN, "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and out["findings"] == [] and out["counts"]["records"] == 53
    assert set(out) >= {"ok", "findings", "counts", "seconds"}

    with tamper(copy) as s:
        rid = leaf_id(s, 9)
        v = bytearray(s.get("records", rid) or b"")
        v[-1] ^= 1
        s.put("records", rid, bytes(v))
    args = [
        "audit",
        "--data-dir",
        str(copy),
        "--consortium",
        str(cons_dir),
        *PIN,
        "--json",
        "--evidence-dir",
        str(copy.parent / "ev"),
    ]
    assert main(args) == 1
    out = json.loads(capsys.readouterr().out)
    sig = [f for f in out["findings"] if f["kind"] == "signature"]
    assert sig and sig[0]["index"] == 9 and len(sig[0]["record_id"]) == 64

    assert main(args[:-3]) == 1  # readable report
    text = capsys.readouterr().out
    assert "FAILED" in text and "signature [leaf 9" in text


def test_cli_usage_errors(cons_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--consortium", str(cons_dir)]) == 2
    assert main(["audit", "--node", "x", "--data-dir", "y", "--consortium", str(cons_dir)]) == 2
    assert main(["audit", "verify", "f", "--consortium", str(cons_dir)]) == 2
    capsys.readouterr()


# ====================================================================== online (real node, gRPC)


@dataclasses.dataclass
class Net:
    dir: Path
    cons: Consortium
    keys: dict[str, SigningKey]
    cfg: NodeConfig
    feeds: Feeds
    now: int


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Net:
    d = tmp_path_factory.mktemp("online") / "c"
    cons = init_consortium(
        d, carriers=1, internet=1, base_port=free_port_block(6), now=datetime.now(UTC)
    )
    keys = {p.id: SigningKey.load(d / p.id / "signing.key") for p in cons.participants}
    cfg = NodeConfig.for_participant(d, NODE)
    now = int(time.time() * 1000)
    feeds = Feeds(keys, now, cons.name)
    led = NodeLedger(Store(cfg.data_dir), cons, NODE, keys[NODE])
    led.submit(
        [
            r.envelope
            for r in feeds.marks(30, ("carrier-1", "internet-1", "institute"), "+861384000")
        ],
        now,
    )
    led.sign_checkpoint()
    led.close()
    return Net(d, cons, keys, cfg, feeds, now)


@contextmanager
def running(cfg: NodeConfig) -> Iterator[Any]:
    from node.server import Node

    node = Node(cfg).start()
    try:
        yield node
    finally:
        node.stop()


def node_copy(net: Net, tmp_path: Path, name: str) -> NodeConfig:
    dst = tmp_path / name
    shutil.copytree(net.cfg.data_dir, dst)
    return dataclasses.replace(net.cfg, data_dir=dst)


def online(net: Net, state: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    capsys.readouterr()
    rc = main(
        ["audit", "--node", NODE, "--consortium", str(net.dir), *net_pin(net.dir),
         "--state", str(state), "--json"]
    )
    return rc, json.loads(capsys.readouterr().out)


def wait_checkpoint(node: Any, size: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = node.core.ledger.latest_checkpoint()
        if text is not None and f"\n{size}\n" in text:
            return
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint of size {size}")


def test_online_honest_node_clean_then_resumes_then_fork_is_proven(
    net: Net, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.json"
    cfg = node_copy(net, tmp_path, "data")
    feeds = Feeds(net.keys, net.now, net.cons.name)
    feeds.heads = dict(net.feeds.heads)
    with running(cfg) as node:
        rc, out = online(net, state, capsys)
        assert rc == 0, out
        assert out["ok"] and out["findings"] == [] and out["counts"]["verified"] == 30
        assert out["counts"]["view_entries"] > 0
        saved = json.loads(state.read_text())
        assert saved["size"] == 30 and saved["log"] == NODE

        more = feeds.marks(12, ("internet-1", "institute"), "+861394000")
        outs = node.core.submit([r.envelope for r in more], source="test")
        assert all(o.status == "accepted" for o in outs)
        wait_checkpoint(node, 42)
        rc, out = online(net, state, capsys)
        assert rc == 0, out
        assert out["counts"]["verified"] == 12  # only what is new
        assert out["counts"]["consistent_from"] == 30
        assert json.loads(state.read_text())["size"] == 42

    # The same key now serves another history of 50 records.
    forked = dataclasses.replace(net.cfg, data_dir=tmp_path / "forked")
    other = Feeds(net.keys, net.now + 5, net.cons.name)
    led = NodeLedger(Store(forked.data_dir), net.cons, NODE, net.keys[NODE])
    led.submit(
        [r.envelope for r in other.marks(50, ("carrier-1", "internet-1"), "+861305000")], net.now
    )
    led.sign_checkpoint()
    led.close()
    with running(forked):
        rc, out = online(net, state, capsys)
    assert rc == 1
    assert [f["kind"] for f in out["findings"]] == ["fork"]
    assert len(out["evidence"]) == 1
    assert json.loads(state.read_text())["size"] == 42  # the state stays at the audited tree
    capsys.readouterr()
    rc = main(["audit", "verify-evidence", out["evidence"][0], "--consortium", str(net.dir),
               *net_pin(net.dir)])
    assert rc == 0 and "does not extend" in capsys.readouterr().out


def test_online_entries_that_do_not_match_the_checkpoint(
    net: Net, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = node_copy(net, tmp_path, "data")
    i = 17
    with tamper(cfg.data_dir) as s:
        rid = leaf_id(s, i)
        v = bytearray(s.get("records", rid) or b"")
        v[-1] ^= 1
        s.put("records", rid, bytes(v))
    with running(cfg):
        rc, out = online(net, tmp_path / "state.json", capsys)
    assert rc == 1
    kinds = {(f["kind"], f.get("index")) for f in out["findings"]}
    assert ("signature", i) in kinds and ("root", i) in kinds
    assert not (tmp_path / "state.json").exists()  # nothing clean to remember


def test_online_view_root_that_does_not_follow(
    net: Net, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = node_copy(net, tmp_path, "data")
    # The node's view is built through feedseq: point internet-1#3 at #2, so
    # the view it signs leaves one mark out while its log stays intact.
    with tamper(cfg.data_dir) as s:
        two = s.get("feedseq", feedseq_key("internet-1", 2)) or b""
        s.put("feedseq", feedseq_key("internet-1", 3), two)
    with running(cfg):
        rc, out = online(net, tmp_path / "state.json", capsys)
    assert rc == 1
    assert [f["kind"] for f in out["findings"]] == ["view-root"]
    # Offline, the index itself is the finding, and so is the view the node
    # stored from it (the node keeps its view in the store).
    rep = audit.audit_store(cfg.data_dir, net.cons, NODE, workers=0)
    assert [(f.kind, f.issuer, f.seq) for f in rep.findings] == [
        ("feedseq", "internet-1", 3),
        ("view-entry", None, None),
    ]


def test_merkle_helpers_agree_with_the_ledger(honest: tuple[Path, list[Record]]) -> None:
    # The auditor recomputes roots with merkle.Frontier; the node stores nodes.
    path, recs = honest
    f = merkle.Frontier.empty()
    for r in recs:
        f.append(merkle.leaf_hash(r.envelope))
    store = Store(path, read_only=True)
    try:
        assert merkle.root_at(_Reader(store), len(recs)) == f.root()
    finally:
        store.close()


class _Reader:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get_node(self, level: int, index: int) -> bytes:
        v = self.store.get("merkle", merkle_key(level, index))
        assert v is not None
        return v


# ====================================================================== issuer-chosen times


def _commit_unchecked(led: NodeLedger, recs: list[Record]) -> None:
    """What a node that skips the time checks would write: each record on its
    feed and in the log through the ledger's own commit, so only the
    auditor's time rules can tell."""
    from ledger.log import _Pending

    pend = _Pending()
    for rec in recs:
        pend.ids[rec.id] = led.size + len(pend.accepted)
        pend.accepted.append(rec)
        pend.at[(rec.issuer, rec.seq)] = rec.id
        pend.feeds[rec.issuer] = FeedState(rec.issuer, rec.seq, rec.id, None, rec.issued_at_ms)
    led._commit(pend)


class _LedgerSource:
    """`audit.LogSource` straight over a NodeLedger, in-process (what
    node/auditcli.py's GrpcLogSource reads through the public service)."""

    def __init__(self, led: NodeLedger) -> None:
        self.led = led

    def log_checkpoint(self) -> str:
        text = self.led.latest_checkpoint()
        assert text is not None
        return text

    def entries(self, start: int, end: int) -> list[bytes]:
        return self.led.entries(start, min(end, start + audit.CHUNK))

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        return self.led.consistency_proof(old_size, new_size)

    def view_checkpoint(self) -> str | None:
        return None

    def feed_heads(self) -> dict[str, tuple[int, bytes, bool]]:
        return {i: (f.seq, f.head_id, f.frozen_at is not None) for i, f in self.led.feeds().items()}

    def evidence(self) -> tuple[list[bytes], list[bytes]]:
        return [p.encode() for p in self.led.equivocations()], []


def _time_kinds(rep: audit.AuditReport) -> list[tuple[str, int | None, str | None, str | None]]:
    return [(f.kind, f.index, f.record_id, f.issuer) for f in rep.findings]


def test_records_breaking_the_time_rules_are_findings_offline_and_online(tmp_path: Path) -> None:
    """A log holding a mark observed after it was issued, a mark expiring
    beyond max_expiry_ms, a reassignment effective long before it was issued
    (kind "time") and a record issued before its feed's previous one (kind
    "feed-time"): each is one finding located by leaf, record id and issuer,
    offline and online alike; nothing else is wrong."""
    cons = make_consortium()
    pol = cons.policy
    led = NodeLedger(Store(tmp_path / "db"), cons, NODE, KEYS[NODE])
    feeds = Feeds(KEYS, NOW)
    good = feeds.marks(8, ("internet-1", "internet-2"), "+861381000")
    out = led.submit([r.envelope for r in good], NOW)
    assert all(o.status == "accepted" for o in out.outcomes)
    observed_late = feeds.issue("internet-1", Mark("+8613810009001", "fraud", 50, 1, NOW + 1))
    seen = NOW - 1000
    too_long = feeds.issue(
        "internet-2", Mark("+8613810009002", "fraud", 50, 1, seen, seen + pol.max_expiry_ms + 1)
    )
    early = feeds.issue(
        "carrier-1", Reassignment("+8613810009003", NOW - pol.reassignment_window_ms - 1)
    )
    back = Feeds(KEYS, NOW - 1, cons.name)
    back.heads = dict(feeds.heads)
    went_back = back.issue("internet-1", Mark("+8613810009004", "fraud", 50, 1, NOW - 10))
    bad = [observed_late, too_long, early, went_back]
    _commit_unchecked(led, bad)
    led.sign_checkpoint()
    want = [
        ("time", 8, observed_late.id.hex(), "internet-1"),
        ("time", 9, too_long.id.hex(), "internet-2"),
        ("time", 10, early.id.hex(), "carrier-1"),
        ("feed-time", 11, went_back.id.hex(), "internet-1"),
    ]
    online, _ = audit.audit_source(_LedgerSource(led), cons, NODE, view=False, workers=0)
    led.close()
    offline = run_audit(tmp_path / "db", view=False)
    for rep in (offline, online):
        assert sorted(_time_kinds(rep), key=lambda k: k[1] or 0) == want, [
            f.line() for f in rep.findings
        ]
    assert "observed" in online.findings[0].detail


def test_feed_time_going_back_across_resumed_online_audits(tmp_path: Path) -> None:
    """The audit state keeps each head's issued-at, so a record appended after
    the last audit and issued before that head is still a finding; a state
    written before heads kept a time ([seq, id]) still loads."""
    cons = make_consortium()
    led = NodeLedger(Store(tmp_path / "db"), cons, NODE, KEYS[NODE])
    feeds = Feeds(KEYS, NOW)
    led.submit([r.envelope for r in feeds.marks(6, ("internet-1",), "+861381100")], NOW)
    led.sign_checkpoint()
    src = _LedgerSource(led)
    rep, state = audit.audit_source(src, cons, NODE, view=False, workers=0)
    assert rep.ok and state is not None
    assert state.head_times == {"internet-1": NOW}
    saved = state.to_json()
    assert saved["heads"]["internet-1"][2] == NOW
    again = audit.AuditState.from_json(saved, cons)
    assert again == state
    old_form = {**saved, "heads": {i: h[:2] for i, h in saved["heads"].items()}}
    assert audit.AuditState.from_json(old_form, cons).head_times == {}
    back = Feeds(KEYS, NOW - 5, cons.name)
    back.heads = dict(feeds.heads)
    went_back = back.issue("internet-1", Mark("+8613811009999", "fraud", 50, 1, NOW - 10))
    _commit_unchecked(led, [went_back])
    led.sign_checkpoint()
    rep2, state2 = audit.audit_source(src, cons, NODE, state, view=False, workers=0)
    assert _time_kinds(rep2) == [("feed-time", 6, went_back.id.hex(), "internet-1")]
    assert state2 is None  # a log finding: the next run starts from the old state again
    led.close()


def test_feed_time_going_back_inside_a_chunk_is_located() -> None:
    """A chunk whose links hold but whose issued-at goes back is not taken
    in one go; record by record, the record issued earlier is the finding,
    whether it arrives in order or before the one ahead of it."""

    def checked(i: int, seq: int, prev: bytes, at: int) -> audit.Checked:
        rid = hashlib.sha256(b"record %d" % i).digest()
        return (hashlib.sha256(rid).digest(), rid, "carrier-1", seq, prev, None, None, None, at)

    a = checked(0, 1, b"", 10)
    b = checked(1, 2, a[1], 20)
    c = checked(2, 3, b[1], 15)  # issued before b
    chunk = [(x[0], x) for x in (a, b, c)]
    rep = audit.AuditReport("carrier-1", "offline")
    lc = audit.LogChecker(make_consortium(), rep)
    assert lc._add_in_order(chunk, 0) is None and lc.heads() == {}
    lc.add(chunk)
    assert [(f.kind, f.index, f.seq) for f in rep.findings] == [("feed-time", 2, 3)]
    # Out of log order: #3 placed first, then #2 issued after it.
    rep2 = audit.AuditReport("carrier-1", "offline")
    lc2 = audit.LogChecker(make_consortium(), rep2)
    lc2.add([(x[0], x) for x in (a, c, b)])
    assert ("feed-time", 1, 3) in [(f.kind, f.index, f.seq) for f in rep2.findings]


# ====================================================================== evidence from its writers


def _log_note(pid: str, size: int, root: bytes, name: str = NAME) -> str:
    from ledger import note
    from ledger.names import log_origin

    origin = log_origin(name, pid)
    return note.sign_checkpoint(note.Checkpoint(origin, size, root), origin, KEYS[pid])


def _tree(tag: bytes, n: int) -> merkle.MemoryNodes:
    tree = merkle.MemoryNodes()
    for i in range(n):
        tree.append(merkle.leaf_hash(tag + i.to_bytes(4, "big")))
    return tree


def _witness(path: Path) -> Any:
    from node.witness import Witness

    return Witness(Store(path), make_consortium(), "carrier-1", KEYS["carrier-1"], lambda: NOW)


def test_witness_writes_proven_log_fork_evidence_for_two_roots_at_one_size(
    tmp_path: Path, cons_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ledger.errors import BadSignature, CheckpointFork
    from ledger.evidence import EVIDENCE_FORMAT, verify_evidence

    cons = make_consortium()
    w = _witness(tmp_path / "w")
    a, b = _tree(b"a", 5), _tree(b"b", 5)
    w.cosign_log("carrier-2", _log_note("carrier-2", 5, a.root()), 0, [])
    forked = _log_note("carrier-2", 5, b.root())
    with pytest.raises(CheckpointFork):
        w.cosign_log("carrier-2", forked, 5, [])
    (raw,) = w.forks()
    ev = json.loads(raw)
    assert (ev["format"], ev["kind"], ev["consortium"], ev["log"]) == (
        EVIDENCE_FORMAT, "log-fork", NAME, "carrier-2"
    )
    assert ev["second"] == forked
    assert verify_evidence(ev, cons) == "log fork: carrier-2 signed two different roots for size 5"
    rc, out = verify_file(cons_dir, write_evidence(tmp_path / "ev", ev), capsys)
    assert rc == 0 and out["valid"] and "two different roots for size 5" in out["proves"]

    # Tampered: the second note's signature altered; the same note twice; another log's key.
    lines = forked.split("\n")
    sig = bytearray(base64.b64decode(lines[-2].split(" ")[-1]))
    sig[-1] ^= 1
    lines[-2] = " ".join(lines[-2].split(" ")[:-1] + [base64.b64encode(bytes(sig)).decode()])
    with pytest.raises(BadSignature):
        verify_evidence(dict(ev, second="\n".join(lines)), cons)
    with pytest.raises(BadInput, match="the same tree: no fork"):
        verify_evidence(dict(ev, second=ev["first"]), cons)
    with pytest.raises(BadSignature):
        verify_evidence(dict(ev, log="carrier-1"), cons)
    same = write_evidence(tmp_path / "t", dict(ev, second=ev["first"]))
    rc, out = verify_file(cons_dir, same, capsys)
    assert rc == 1 and not out["valid"] and "no fork" in out["error"]
    w.store.close()


@pytest.mark.parametrize("case", ["failed-proof", "smaller-size"])
def test_witness_keeps_a_claim_no_proof_joins_and_entries_make_it_proof(
    tmp_path: Path, case: str
) -> None:
    """A witness that saw two sizes no proof joined holds no entries: it keeps
    both notes as a claim, which verify_evidence refuses and the auditor reads
    as the node's word; the larger tree's entries turn it into proof."""
    from ledger.audit.online import _served_fork
    from ledger.errors import CheckpointFork
    from ledger.evidence import log_fork_evidence, verify_evidence

    cons = make_consortium()
    w = _witness(tmp_path / "w")
    a, b = _tree(b"a", 8), _tree(b"b", 8)
    small = _log_note("carrier-2", 5, merkle.root_at(a, 5))
    big = _log_note("carrier-2", 8, b.root())
    if case == "failed-proof":
        w.cosign_log("carrier-2", small, 0, [])
        with pytest.raises(CheckpointFork, match="does not extend"):
            w.cosign_log("carrier-2", big, 5, merkle.consistency_proof(b, 5, 8))
    else:
        w.cosign_log("carrier-2", big, 0, [])
        with pytest.raises(CheckpointFork, match="showed size 5 after size 8"):
            w.cosign_log("carrier-2", small, 8, [])
    (raw,) = w.forks()
    ev = json.loads(raw)
    assert ev["kind"] == "log-fork" and {ev["first"], ev["second"]} == {small, big}
    with pytest.raises(BadInput, match="a fork needs prefix_root and proof"):
        verify_evidence(ev, cons)
    rep = audit.AuditReport("carrier-1", "online")
    _served_fork(rep, cons, raw)
    assert rep.findings == [] and [f.kind for f in rep.warnings] == ["evidence"]
    assert rep.evidence == []

    proven = log_fork_evidence(
        cons, "carrier-2", small, big, merkle.root_at(b, 5), merkle.consistency_proof(b, 5, 8)
    )
    assert "does not extend its tree of size 5" in verify_evidence(proven, cons)
    w.store.close()


def test_view_keeper_writes_view_fork_evidence_the_auditor_reports(
    net: Net, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A peer's view checkpoint for this node's vector with another root: the
    node (its view keeper) refuses to cosign and keeps both signed notes; the
    evidence verifies offline, a tampered copy does not, and an online audit
    of the node reports it and writes it as a file verify-evidence accepts."""
    from ledger import note
    from ledger.errors import BadSignature, CheckpointFork
    from ledger.evidence import verify_evidence, view_fork_evidence
    from ledger.view import ViewCheckpoint, parse_view_checkpoint, sign_view_checkpoint
    from ledger.view import view_origin as vorigin

    cfg = node_copy(net, tmp_path, "data")
    with running(cfg) as node:
        ours = parse_view_checkpoint(note.Note.parse(node.view.checkpoint_note()).text)
        forged = sign_view_checkpoint(
            ViewCheckpoint(
                vorigin(net.cons.name, "internet-1"), ours.vector, ours.count, bytes(32),
                node.clock(),
            ),
            net.keys["internet-1"],
        )
        with pytest.raises(CheckpointFork):
            node.view.cosign("internet-1", forged)
        kept = [json.loads(f) for f in node.view.forks()]
        assert [(e["kind"], e["witness"], e["peer"]) for e in kept] == [
            ("view-fork", NODE, "internet-1")
        ]
        ev = kept[0]
        assert ev["theirs"] == forged
        assert verify_evidence(ev, net.cons).startswith("view fork: for one vector")

        # Tampered: "ours" is not the witness's; both notes name one view; another vector.
        with pytest.raises(BadSignature):
            verify_evidence(dict(ev, witness="institute"), net.cons)
        with pytest.raises(BadInput, match="the same view: no fork"):
            verify_evidence(dict(ev, theirs=sign_view_checkpoint(
                dataclasses.replace(ours, origin=vorigin(net.cons.name, "internet-1")),
                net.keys["internet-1"],
            )), net.cons)
        other = dataclasses.replace(
            parse_view_checkpoint(note.Note.parse(forged).text), vector=(("carrier-1", 1),)
        )
        with pytest.raises(BadInput, match="different vectors"):
            view_fork_evidence(
                net.cons, NODE, ev["ours"], "internet-1",
                sign_view_checkpoint(other, net.keys["internet-1"]),
            )

        rc, out = online(net, tmp_path / "state.json", capsys)
    assert rc == 1
    assert [f["kind"] for f in out["findings"]] == ["view-fork"]
    (path,) = out["evidence"]
    assert json.loads(Path(path).read_text()) == ev
    capsys.readouterr()
    rc = main(["audit", "verify-evidence", path, "--consortium", str(net.dir), *net_pin(net.dir)])
    assert rc == 0 and "view fork" in capsys.readouterr().out


def test_older_nodes_ad_hoc_fork_json_is_read_as_the_format(
    tmp_path: Path, cons_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What nodes stored before the evidence format ({"kind": "log-fork", "log",
    "first", "second"}, {"kind": "view-fork", "peer", "theirs", "ours"}) is
    served by the witness in the format, verifies, and an auditor reports it."""
    from ledger.audit.online import _served_fork
    from ledger.evidence import EVIDENCE_FORMAT, read_evidence, verify_evidence
    from ledger.view import ViewCheckpoint, sign_view_checkpoint
    from ledger.view import view_origin as vorigin

    cons = make_consortium()
    first = _log_note("carrier-2", 5, _tree(b"a", 5).root())
    second = _log_note("carrier-2", 5, _tree(b"b", 5).root())
    old_log = {"kind": "log-fork", "log": "carrier-2", "first": first, "second": second}
    w = _witness(tmp_path / "w")
    w.store.put("witness", b"fork/carrier-2\x00" + u64(NOW), json.dumps(old_log).encode())
    (served,) = w.forks()
    w.store.close()
    ev = json.loads(served)
    assert ev == {"format": EVIDENCE_FORMAT, "consortium": NAME, **old_log}
    assert "two different roots" in verify_evidence(ev, cons)

    vector = (("carrier-1", 3), ("internet-1", 2))
    ours, theirs = (
        sign_view_checkpoint(
            ViewCheckpoint(vorigin(NAME, pid), vector, 4, root, NOW), KEYS[pid]
        )
        for pid, root in (("carrier-1", b"\1" * 32), ("carrier-2", b"\2" * 32))
    )
    old_view = {"kind": "view-fork", "peer": "carrier-2", "theirs": theirs, "ours": ours}
    new_view = read_evidence(json.dumps(old_view).encode(), cons)
    assert (new_view["format"], new_view["witness"], new_view["peer"]) == (
        EVIDENCE_FORMAT, "carrier-1", "carrier-2"
    )
    assert verify_evidence(old_view, cons) == verify_evidence(new_view, cons)

    rep = audit.AuditReport("carrier-1", "online")
    for old in (old_log, old_view):
        _served_fork(rep, cons, json.dumps(old).encode())
    assert [(f.kind, f.issuer, f.where) for f in rep.findings] == [
        ("fork", "carrier-2", None),
        ("view-fork", None, "carrier-1 vs carrier-2"),
    ]
    assert rep.evidence == [ev, new_view]
    path = write_evidence(tmp_path / "old", old_view)
    assert path.name.startswith("view-fork-carrier-2-")  # the file names the forking peer
    rc, out = verify_file(cons_dir, path, capsys)
    assert rc == 0 and out["valid"] and "view fork" in out["proves"]
