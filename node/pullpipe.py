"""Pulled batches verified ahead of the writer (a catch-up's pipeline).

A fresh node's catch-up spent half of its writer thread's time parsing
pulled envelopes and checking their Ed25519 signatures, in series with the
append and the view apply. The signature check releases the GIL, so a
thread of its own runs it while the writer appends and applies the batch
before: the stream's batches go Pull -> this pipe's thread (parse and
verify, `verify_each`) -> the writer (NodeCore.submit_async with what
verified), in the order they came.

Verification fails closed: the writer skips the signature check only of a
record this pipe verified, found by its id (the hash of its exact bytes)
against the ledger's own pinned consortium; an envelope that did not parse
or verify here, or whose check never ran, is checked in full by the writer
and refused there with the same typed error and evidence as before. Once a
batch fails to reach the writer (a full queue, a stopped writer), no later
batch of the round is handed over: the writer never sees a pulled batch
after one that was lost (the next round pulls from the gap again).

Back-pressure: `put` blocks while DEPTH batches wait to be verified, and the
pipe keeps at most INFLIGHT verified batches queued for the writer, so a
catch-up's writer always has the next batch ready and never more than a few.
The thread starts with a round's first batch and ends at `close` (which
waits until every batch handed over is written) or within POLL_S of the
link's stop (batches not handed over yet are then dropped, never written)."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from keys.consortium import Consortium
from ledger.errors import LedgerError
from ledger.record import Record, record_context
from node.core import NodeCore

DEPTH = 2     # pulled batches waiting to be verified, at most
INFLIGHT = 2  # verified batches queued for the writer, at most
POLL_S = 0.2  # how often a blocked put or wait looks at the stop event
# Threads checking one batch's signatures: with one, the check (most of a
# record's cost) was still the pipeline's slowest stage; a second thread
# splits each batch with it (the check releases the GIL).
VERIFY_THREADS = 2
_END = None   # the queue's last item: no more batches this round


def verify_each(envelopes: Sequence[bytes], consortium: Consortium) -> dict[bytes, Record]:
    """The envelopes that parse and carry their issuer's good signature for
    `consortium`, by record id (NodeLedger.submit's `verified`); one that does
    not is left out, for the writer to check in full and refuse."""
    out: dict[bytes, Record] = {}
    context = record_context(consortium.name)
    limit = consortium.policy.max_envelope_bytes
    for env in envelopes:
        try:
            rec = Record.from_envelope(env, limit)
        except LedgerError:
            continue
        p = consortium.participant(rec.issuer)
        if p is not None and p.verify(rec.signature, context + rec.body):
            out[rec.id] = rec
    return out


class PullPipe:
    """A link's pulled batches, verified ahead and written in order (see the
    module doc): `put` each batch of a round, then `close`."""

    def __init__(self, core: NodeCore, source: str, stop: threading.Event, *,
                 wait: float = 60, timeout: float = 120) -> None:
        """`source`: the peer the batches come from; `stop`: the link's stop
        event; `wait`: how long a batch waits for room in the writer's queue;
        `timeout`: how long for a queued batch to be written."""
        self.core = core
        self.source = source
        self._stop = stop
        self.wait = wait
        self.timeout = timeout
        self._q: queue.Queue[list[bytes] | None] = queue.Queue(DEPTH)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._dropping = False  # after an error: hand nothing more to the writer

    @property
    def running(self) -> bool:
        """Whether the pipe's thread is alive (between a round's first put and its close)."""
        return self._thread is not None and self._thread.is_alive()

    def put(self, envelopes: list[bytes]) -> None:
        """Queue a pulled batch; blocks while DEPTH wait. Raises the first
        error of the batches before it (then this one is not queued); once
        the link stops, the batch is dropped, never written."""
        if self._error is not None:
            self.close()  # raises it
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"verify-{self.source}",
                                            daemon=True)
            self._thread.start()
        while not self._stop.is_set():
            if not self._thread.is_alive():
                self.close()  # it ended by an error: raises it
                raise RuntimeError(f"the pull pipe of {self.source} ended")
            try:
                self._q.put(envelopes, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Wait until every batch put is written (or the link stops); raise
        the first error. The next put starts again."""
        thread, self._thread = self._thread, None
        if thread is not None:
            while thread.is_alive():
                try:
                    self._q.put(_END, timeout=POLL_S)  # the thread takes every item before it
                    break
                except queue.Full:
                    continue
            thread.join()
        err, self._error = self._error, None
        self._dropping = False
        if err is not None:
            raise err

    def _run(self) -> None:
        try:
            # the round feeds the writer until it ends (the screen's rows rest meanwhile)
            with self.core.feeding(), ThreadPoolExecutor(max(1, VERIFY_THREADS - 1),
                                                         f"verify-{self.source}-") as helpers:
                self._pipe(helpers)
        except BaseException as e:  # a bug here: put and close must not wait for it
            self._fail(e)
            raise

    def _verify(self, helpers: ThreadPoolExecutor, envelopes: list[bytes]) -> dict[bytes, Record]:
        """`verify_each` of the batch, its parts checked at once on the helpers and here."""
        consortium = self.core.ledger.consortium
        step = max(1, -(-len(envelopes) // VERIFY_THREADS))  # a peer may send an empty batch
        parts = [envelopes[i:i + step] for i in range(0, len(envelopes), step)]
        others = [helpers.submit(verify_each, part, consortium) for part in parts[1:]]
        verified = verify_each(parts[0], consortium) if parts else {}
        for fut in others:
            verified.update(fut.result())
        return verified

    def _pipe(self, helpers: ThreadPoolExecutor) -> None:
        inflight: deque[Future] = deque()
        while not self._stop.is_set():
            try:
                envelopes = self._q.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if envelopes is _END:
                break
            if self._dropping:
                continue  # never written: the writer never sees a batch after a lost one
            try:
                verified = self._verify(helpers, envelopes)
                inflight.append(self.core.submit_async(envelopes, self.source, self.wait,
                                                       verified=verified))
                while len(inflight) > INFLIGHT:
                    self._written(inflight.popleft())
            except BaseException as e:
                self._fail(e)
        while inflight and not self._dropping and not self._stop.is_set():
            try:
                self._written(inflight.popleft())
            except BaseException as e:
                self._fail(e)

    def _fail(self, e: BaseException) -> None:
        if self._error is None:
            self._error = e
        self._dropping = True

    def _written(self, fut: Future) -> None:
        """Wait for a batch handed to the writer; the link stopping ends the
        wait (the writer writes it or not; no one waits for it any more)."""
        deadline = time.monotonic() + self.timeout
        while not self._stop.is_set():
            try:
                fut.result(timeout=POLL_S)
                return
            except FutureTimeout:
                if time.monotonic() > deadline:
                    raise
