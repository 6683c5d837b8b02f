"""The node's signing process (node/signproc.py, node/signrun.py): a run of
own records signed in a child process is byte for byte the run the signing
stage signs on its own thread (Ed25519 is deterministic), with the same
answers; its bytes written without protobuf are protobuf's; the child dies
with its node, and a child that fails leaves the stage signing itself."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keys.consortium import Consortium
from keys.layout import init_consortium
from keys.signing import SigningKey
from ledger import errors as E
from ledger import recordbytes
from ledger.log import NodeLedger
from ledger.record import Mark, Reassignment, Record
from ledger.store import Store
from markex.v1 import record_pb2 as pb
from node.core import NodeCore, OwnIssue
from node.localnet import free_port_block
from node.signproc import SigningProcess
from node.signrun import MIN_RUN, _record, payload_field

OWN = "carrier-1"
ROOT = Path(__file__).resolve().parent.parent
KEY = SigningKey.from_seed(bytes(range(32)))

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cons_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Consortium]:
    d = tmp_path_factory.mktemp("signproc") / "c"
    cons = init_consortium(d, carriers=1, internet=0, base_port=free_port_block(6),
                           now=datetime.now(UTC))
    return d, cons


def _key(d: Path) -> SigningKey:
    return SigningKey.load(d / OWN / "signing.key")


def _own_envelopes(led: NodeLedger) -> list[bytes]:
    return led.records_after(OWN, 0, 100_000)


marks = st.builds(
    Mark,
    number=st.integers(0, 99_999_999).map(lambda i: f"+86135{i:08d}"),
    category=st.sampled_from(["fraud", "marketing", "x" * 64]),
    score=st.integers(0, 100),
    reports=st.integers(0, 2**32 - 1),
    observed_at_ms=st.integers(0, 2**40),
    expires_at_ms=st.just(0),
    evidence_digest=st.sampled_from([b"", bytes(range(32))]),
)
reassignments = st.builds(
    Reassignment,
    number=st.integers(0, 99_999_999).map(lambda i: f"+86138{i:08d}"),
    effective_at_ms=st.integers(1, 2**62),
)


@settings(max_examples=300, deadline=None)
@given(payload=st.one_of(marks, reassignments), seq=st.integers(1, 2**63 - 1),
       issued_at=st.integers(1, 2**63 - 1), issuer=st.sampled_from(["carrier-1", "c" * 64]))
def test_a_body_written_without_protobuf_is_record_issues_and_its_record_the_parsed_one(
    payload: Mark | Reassignment, seq: int, issued_at: int, issuer: str
) -> None:
    """body_head + payload_field, and the envelope's frame, are the bytes
    Record.issue writes; the Record put together from the parts equals the
    one Record.from_envelope parses (so the payload round-trips)."""
    prev = b"" if seq == 1 else hashlib.sha256(b"%d" % seq).digest()
    want = Record.issue(KEY, issuer, seq, prev, issued_at, payload, consortium="c")
    body = recordbytes.body_head(issuer.encode(), seq, prev, issued_at) + payload_field(payload)
    assert body == want.body
    assert body == pb.Record(issuer=issuer, seq=seq, prev_id=prev, issued_at_ms=issued_at,
                             **{"mark" if isinstance(payload, Mark) else "reassignment":
                                payload.to_pb()}).SerializeToString()
    assert recordbytes.envelope(body, want.signature) == want.envelope

    class Job:  # what _record reads of a job
        pass

    job = Job()
    job.payload = payload  # type: ignore[attr-defined]

    class Led:
        participant_id = issuer

    got = _record(Led(), body, seq, prev, issued_at, job, want.envelope)  # type: ignore[arg-type]
    assert got == want == Record.from_envelope(want.envelope)


@pytest.mark.parametrize("n", [1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 2**63 - 1])
def test_varint_is_protobufs_at_every_boundary(n: int) -> None:
    assert recordbytes.varint(n) == pb.Record(seq=n).SerializeToString()[1:]


def _run(core: NodeCore, issues: list[OwnIssue]) -> list[tuple]:
    futs = core.issue_many_async(issues)
    out = []
    for f in futs:
        o = f.result(60)
        out.append((o.status, type(o.error).__name__ if o.error else None, str(o.error or ""),
                    o.record.envelope if o.record else None, o.index))
    return out


def test_a_run_signed_by_the_process_is_the_run_the_stage_signs_itself(
    cons_dir: tuple[Path, Consortium], tmp_path: Path
) -> None:
    """Two cores with one key and one clock: one signs its runs in the child
    process, the other on its signing stage's thread. Every answer (status,
    error, record bytes, index) and every stored envelope is the same, over
    a run holding refusals (a category outside the taxonomy, a protected
    number), keys issued before, keys repeated in the run (same content and
    other content) and plain marks and reassignments."""
    d, cons = cons_dir
    clock = [int(time.time() * 1000)]
    cores = []
    for name, process in (("proc", True), ("here", False)):
        core = NodeCore(Store(tmp_path / name), cons, OWN, _key(d), lambda: clock[0])
        core.signing.enabled = process
        core.start()
        cores.append(core)
    proc, here = cores
    try:
        assert proc.signing.wait_ready(30)
        digest = hashlib.sha256

        def issues(base: int) -> list[OwnIssue]:
            out = []
            for i in range(300):
                num = f"+86135{base + i:08d}"
                cat = "no-such-category" if i % 37 == 5 else "fraud"
                if i % 50 == 7:
                    num = "+86110"  # protected: emergency (or not a markable number at all)
                key = b"" if i % 3 else b"k%d" % (i % 40)  # repeats: same and other content
                payload = (Reassignment(num, clock[0] - 1000) if i % 11 == 3 and i % 50 != 7
                           else Mark(num, cat, i % 101))
                out.append(OwnIssue(payload, key=key, digest=digest(repr(payload).encode()
                                                                     if i % 2 else key).digest()
                                    if key else b""))
            return out

        first = [_run(c, issues(0)) for c in cores]
        clock[0] += 5
        again = [_run(c, issues(1000)) for c in cores]  # keys issued before, chain continued
        assert first[0] == first[1] and again[0] == again[1]
        statuses = {s for s, *_ in first[0] + again[0]}
        assert {"accepted", "rejected", "duplicate"} <= statuses
        errors = {e for _, e, *_ in first[0] + again[0] if e}
        assert {"UnknownCategory", "IdempotencyConflict"} <= errors
        assert _own_envelopes(proc.ledger) == _own_envelopes(here.ledger)
        assert proc.signing.signed >= 2 * MIN_RUN and here.signing.signed == 0
        assert proc.ledger.root() == here.ledger.root()
    finally:
        for c in cores:
            c.stop()
            c.ledger.close()


def test_a_signing_process_that_dies_leaves_the_stage_signing_itself(
    cons_dir: tuple[Path, Consortium], tmp_path: Path
) -> None:
    """The child is killed between two runs: the next run is signed on the
    stage's thread, every record accepted on one gap-free chain."""
    d, cons = cons_dir
    core = NodeCore(Store(tmp_path / "dies"), cons, OWN, _key(d))
    core.start()
    try:
        assert core.signing.wait_ready(30)
        got = _run(core, [OwnIssue(Mark(f"+86136{i:08d}", "fraud", 60)) for i in range(200)])
        assert {s for s, *_ in got} == {"accepted"} and core.signing.signed == 200
        pid = core.signing.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        got += _run(core, [OwnIssue(Mark(f"+86137{i:08d}", "fraud", 60)) for i in range(200)])
        assert {s for s, *_ in got} == {"accepted"}
        assert not core.signing.enabled and core.signing.pid is None
        chain = [Record.from_envelope(e) for e in _own_envelopes(core.ledger)]
        assert [r.seq for r in chain] == list(range(1, 401))
        assert all(b.prev_id == a.id for a, b in zip(chain, chain[1:], strict=False))
        assert [r.envelope for r in chain] == [e for *_, e, _ in got]
    finally:
        core.stop()
        core.ledger.close()


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie of a live parent still answers kill(0): read its state.
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def test_the_signing_process_ends_with_its_core_and_dies_with_its_node(
    cons_dir: tuple[Path, Consortium], tmp_path: Path
) -> None:
    """NodeCore.stop ends the child; a node process killed with SIGKILL takes
    its child with it (its stdin closes; PR_SET_PDEATHSIG)."""
    d, cons = cons_dir
    core = NodeCore(Store(tmp_path / "stop"), cons, OWN, _key(d))
    core.start()
    assert core.signing.wait_ready(30)
    pid = core.signing.pid
    assert pid is not None
    core.stop()
    core.ledger.close()
    assert _gone(pid, 5)

    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from keys.consortium import Consortium
        from keys.signing import SigningKey
        from ledger.store import Store
        from node.core import NodeCore
        d = Path({str(d)!r})
        cons = Consortium.load(d)
        core = NodeCore(Store(Path({str(tmp_path / 'killed')!r})), cons, {OWN!r},
                        SigningKey.load(d / {OWN!r} / "signing.key"))
        core.start()
        assert core.signing.wait_ready(30)
        print(core.signing.pid, flush=True)
        time.sleep(60)
    """)
    node = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert node.stdout is not None
        child = int(node.stdout.readline())
        assert not _gone(child, 0.2)
        node.kill()
        node.wait(10)
        assert _gone(child, 5)
    finally:
        if node.poll() is None:
            node.kill()


def test_a_small_run_is_signed_on_the_stages_thread_without_a_process(
    cons_dir: tuple[Path, Consortium], tmp_path: Path
) -> None:
    """Fewer than MIN_RUN own issues (a unary issue, a short import) start no process."""
    d, cons = cons_dir
    core = NodeCore(Store(tmp_path / "small"), cons, OWN, _key(d))
    core.start()
    try:
        got = _run(core, [OwnIssue(Mark(f"+86139{i:08d}", "fraud", 60))
                          for i in range(MIN_RUN - 1)])
        assert {s for s, *_ in got} == {"accepted"}
        with pytest.raises(E.UnknownCategory):
            core.issue(Mark("+8613900000000", "nope", 60))
        assert core.signing.pid is None and core.signing.signed == 0
    finally:
        core.stop()
        core.ledger.close()


def test_the_first_run_waits_for_the_process_it_started(
    cons_dir: tuple[Path, Consortium], tmp_path: Path
) -> None:
    """An IssueMany starts the process (`prepare`) just before its first
    group: that group waits for it (up to FIRST_WAIT_S) rather than being
    signed on the stage's thread; a node that never bulk-issues starts none."""
    d, cons = cons_dir
    core = NodeCore(Store(tmp_path / "first"), cons, OWN, _key(d))
    core.start()
    try:
        assert core.signing.pid is None  # none until a bulk run asks for it
        core.signing.prepare()
        got = _run(core, [OwnIssue(Mark(f"+86134{i:08d}", "fraud", 60)) for i in range(200)])
        assert {s for s, *_ in got} == {"accepted"}
        assert core.signing.signed == 200
    finally:
        core.stop()
        core.ledger.close()


def test_a_stopped_signing_process_is_given_up_and_the_node_keeps_writing(
    cons_dir: tuple[Path, Consortium], tmp_path: Path
) -> None:
    """The review's stall: a child stopped (SIGSTOP) mid-life held every write
    of the node. Its run's answer is due within the run's deadline; past it the
    child is given up and the run signed on the stage's thread."""
    from node.signproc import RUN_TIMEOUT_PER_RECORD_S, RUN_TIMEOUT_S

    d, cons = cons_dir
    core = NodeCore(Store(tmp_path / "stopped"), cons, OWN, _key(d))
    core.start()
    pid = None
    try:
        assert core.signing.wait_ready(30)
        pid = core.signing.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        start = time.monotonic()
        got = _run(core, [OwnIssue(Mark(f"+86138{i:08d}", "fraud", 60)) for i in range(200)])
        took = time.monotonic() - start
        assert {s for s, *_ in got} == {"accepted"}
        assert took < 10 * (RUN_TIMEOUT_S + 200 * RUN_TIMEOUT_PER_RECORD_S)
        assert not core.signing.enabled and core.signing.pid is None
        assert core.issue(Mark("+8613900000001", "fraud", 60)).status == "accepted"
        assert [Record.from_envelope(e).seq for e in _own_envelopes(core.ledger)] == list(
            range(1, 202))
    finally:
        if pid is not None:
            with __import__("contextlib").suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        core.stop()
        core.ledger.close()


def test_keyed_issues_requeued_behind_a_refused_one_are_all_answered(
    cons_dir: tuple[Path, Consortium], tmp_path: Path
) -> None:
    """The review's loop: the group's first own record refused by the writer
    (its clock stepped back past the skew) requeues the rest; a requeued keyed
    issue no longer finds itself in flight (and waits for itself for ever)."""
    import threading

    d, cons = cons_dir
    base = int(time.time() * 1000)
    step = {"on": False}

    def clock() -> int:
        if step["on"] and threading.current_thread().name == "ledger-writer":
            return base - 3_600_000
        return base

    core = NodeCore(Store(tmp_path / "requeue"), cons, OWN, _key(d), clock)
    core.signing.enabled = False  # the stage's own thread; the process's path is the same
    core.start()
    try:
        assert core.issue(Mark("+8613500000001", "fraud", 60)).status == "accepted"
        step["on"] = True
        futs = core.issue_many_async([
            OwnIssue(Mark(f"+86135{i:08d}", "fraud", 60), key=b"k%d" % i,
                     digest=hashlib.sha256(b"%d" % i).digest()) for i in range(2, 12)])
        deadline = time.monotonic() + 3
        while not futs[0].done() and time.monotonic() < deadline:
            time.sleep(0.01)
        step["on"] = False
        outs = [f.result(timeout=20) for f in futs]
        assert outs[0].status == "rejected"
        assert all(o.status in ("accepted", "rejected") for o in outs)
        assert core.queued == 0   # none left looping between the stage and the writer
    finally:
        core.stop()
        core.ledger.close()


def test_ready_asked_from_many_threads_at_once_answers_every_one(
    cons_dir: tuple[Path, Consortium],
) -> None:
    """`ready` reads the child's one ready byte: threads asking at the same
    moment must not both find it readable and the second then block on a
    byte that never comes (the stage and `wait_ready` may ask together)."""
    d, cons = cons_dir
    for _ in range(3):
        _ready_from_threads(SigningProcess(_key(d).seed(), b"markex/v1/record\x00test\x00"), 8)


def _ready_from_threads(proc: SigningProcess, n: int) -> None:
    proc.start()
    answered: list[bool] = []
    go = threading.Barrier(n)

    def ask() -> None:
        go.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.ready():
                answered.append(True)
                return

    threads = [threading.Thread(target=ask, daemon=True) for _ in range(n)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=25)
        assert not any(t.is_alive() for t in threads), "a thread is stuck in ready()"
        assert answered == [True] * n
    finally:
        proc.close()
