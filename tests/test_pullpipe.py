"""Pulled batches verified ahead of the writer (node/pullpipe.py): a NodeCore
writing to a real temporary store. Order is kept; the signatures are checked
on the pipe's thread, not the writer's; a bad signature is refused with its
typed error and nothing after it is appended out of order; the pipe's thread
ends at `close` and with its link."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keys.consortium import Participant
from ledger import errors as E
from ledger.record import Mark, Record
from ledger.store import Store
from markex.v1 import record_pb2 as pb
from node.core import FEED_IDLE_S, NodeCore
from node.pullpipe import PullPipe, verify_each
from tests.conftest import KEYS, NAME, NOW, make_consortium

pytestmark = pytest.mark.timeout(60)


def chain(issuer: str, n: int) -> list[Record]:
    out: list[Record] = []
    prev = b""
    for s in range(1, n + 1):
        r = Record.issue(KEYS[issuer], issuer, s, prev, NOW - 5000,
                         Mark(f"+861380{s:07d}", "fraud", 70, 1, NOW - 10_000), consortium=NAME)
        out.append(r)
        prev = r.id
    return out


def bent(rec: Record) -> bytes:
    """`rec`'s envelope with one bit of its signature flipped (it still parses)."""
    sig = bytes([rec.signature[0] ^ 1]) + rec.signature[1:]
    return pb.SignedRecord(body=rec.body, signature=sig).SerializeToString()


@pytest.fixture
def core(tmp_path: Path) -> Iterator[NodeCore]:
    c = NodeCore(Store(tmp_path / "db"), make_consortium(), "carrier-1", KEYS["carrier-1"],
                 lambda: NOW)
    c.start()
    yield c
    c.stop()
    c.ledger.close()


def batches(envelopes: list[bytes], size: int) -> list[list[bytes]]:
    return [envelopes[i:i + size] for i in range(0, len(envelopes), size)]


def test_batches_are_written_in_the_order_pulled(core: NodeCore) -> None:
    a, b = chain("carrier-2", 300), chain("internet-1", 300)
    envs = [r.envelope for pair in zip(a, b, strict=True) for r in pair]
    pipe = PullPipe(core, "carrier-2", threading.Event())
    for batch in batches(envs, 37):
        pipe.put(batch)
    pipe.close()
    assert not pipe.running
    assert core.ledger.entries(0, core.ledger.size) == envs


def test_signatures_are_checked_off_the_writer_thread(
    core: NodeCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    verify = Participant.verify

    def spy(self: Participant, signature: bytes, message: bytes) -> bool:
        threads.append(threading.current_thread().name)
        return verify(self, signature, message)

    monkeypatch.setattr(Participant, "verify", spy)
    envs = [r.envelope for r in chain("carrier-2", 200)]
    pipe = PullPipe(core, "carrier-2", threading.Event())
    for batch in batches(envs, 50):
        pipe.put(batch)
    pipe.close()
    assert core.ledger.feed("carrier-2").seq == 200
    assert threads and all(t.startswith("verify-carrier-2") for t in threads)  # not the writer


def test_a_bad_signature_is_refused_and_nothing_after_it_is_appended(core: NodeCore) -> None:
    seen: list[tuple[str, str | None]] = []
    core.observer = lambda status, reason, issuer, n: seen.extend([(status, reason)] * n)
    recs = chain("carrier-2", 120)
    envs = [r.envelope for r in recs]
    envs[70] = bent(recs[70])  # seq 71
    assert recs[70].id not in verify_each(envs, core.ledger.consortium)
    pipe = PullPipe(core, "carrier-2", threading.Event())
    for batch in batches(envs, 25):
        pipe.put(batch)
    pipe.close()
    led = core.ledger
    assert led.feed("carrier-2").seq == 70 and led.size == 70
    assert led.entries(0, 70) == envs[:70]
    assert led.record_at("carrier-2", 71) is None and led.record_at("carrier-2", 72) is None
    # The writer checked it in full and gave the same typed error as without the pipe.
    assert seen.count(("rejected", "BadSignature")) == 1
    assert seen[70] == ("rejected", "BadSignature")
    assert all(s == ("buffered", None) for s in seen[71:])  # waiting for #71, not appended
    out = core.submit([envs[70]], "carrier-2")[0]
    assert out.status == "rejected" and isinstance(out.error, E.BadSignature)
    assert led.size == 70


def test_a_record_not_verified_ahead_is_checked_in_full(core: NodeCore) -> None:
    recs = chain("carrier-2", 3)
    good = verify_each([r.envelope for r in recs], core.ledger.consortium)
    # A verified map that names other records proves nothing about these bytes.
    out = core.submit_async([recs[0].envelope, bent(recs[1])], "carrier-2",
                            verified={recs[1].id: recs[1], recs[2].id: recs[2]}).result(10)
    assert [o.status for o in out] == ["accepted", "rejected"]
    assert isinstance(out[1].error, E.BadSignature)
    assert good.keys() == {r.id for r in recs}


def test_the_pipe_stops_with_its_link(core: NodeCore) -> None:
    core.stop()  # the writer takes nothing more: batches handed over stay queued
    stop = threading.Event()
    pipe = PullPipe(core, "carrier-2", stop)
    envs = [r.envelope for r in chain("carrier-2", 40)]
    for batch in batches(envs, 10):
        pipe.put(batch)  # the pipe waits for the writer, which never answers
    assert pipe.running
    stop.set()
    deadline = time.monotonic() + 5
    while pipe.running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not pipe.running
    pipe.put(envs[:1])  # after the stop: dropped, not queued
    pipe.close()
    assert core.ledger.size == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("verify-carrier-2")]


def test_an_empty_batch_from_a_peer_changes_nothing(core: NodeCore) -> None:
    envs = [r.envelope for r in chain("carrier-2", 3)]
    pipe = PullPipe(core, "carrier-2", threading.Event())
    pipe.put([])
    pipe.put(envs)
    pipe.close()
    assert core.ledger.entries(0, core.ledger.size) == envs


def test_a_round_feeds_the_writer_until_it_is_written(core: NodeCore) -> None:
    """While a round's batches flow (from its first put until close), the
    core says a stream feeds its writer (`fed`, and so `busy`, also between
    batches): the screen's rows rest for it. Once closed, it is idle again."""
    envs = [r.envelope for r in chain("carrier-2", 50)]
    pipe = PullPipe(core, "carrier-2", threading.Event())
    assert not core.fed and not core.busy
    pipe.put(envs[:25])
    deadline = time.monotonic() + 10
    while core.ledger.size < 25 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert core.ledger.size == 25 and core.queued == 0
    assert core.fed and core.busy  # written, and the round not closed: more may follow
    # A round held open with nothing more to write stops feeding (an idle
    # stream kept the rows resting for as long as it stayed open).
    time.sleep(FEED_IDLE_S + 0.1)
    assert not core.fed and not core.busy
    pipe.put(envs[25:])
    pipe.close()
    assert core.ledger.size == 50 and not core.fed and not core.busy


def test_the_observer_is_told_each_run_of_alike_outcomes_once(core: NodeCore) -> None:
    """A group's outcomes reach NodeCore.observer in log order, each run of
    alike ones (status, error class, issuer) as one call with its count."""
    calls: list[tuple[str, str | None, str | None, int]] = []
    core.observer = lambda status, reason, issuer, n: calls.append((status, reason, issuer, n))
    recs = chain("carrier-2", 6)
    envs = [r.envelope for r in recs]
    outs = core.submit(envs[:3] + [bent(recs[3])] + envs[4:] + envs[:1], "carrier-2")
    assert [o.status for o in outs] == ["accepted"] * 3 + ["rejected"] + ["buffered"] * 2 + [
        "duplicate"]
    assert calls == [("accepted", None, "carrier-2", 3),
                     ("rejected", "BadSignature", "carrier-2", 1),
                     ("buffered", None, "carrier-2", 2), ("duplicate", None, None, 1)]
