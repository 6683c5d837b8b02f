"""WatchView, the verified change stream (docs/watch.md): the server side.

A consumer names a view checkpoint this node signed (`since`, or nothing for
a full snapshot); the node answers with the entries whose bytes changed since
that checkpoint's vector, then the cosigned view checkpoint they bring the
copy to, then the same again each time the view moves, for as long as the
consumer stays.

The node knows what changed through a bounded `ChangeLog`: per view apply,
the vector after it and the numbers whose entry changed (ViewKeeper's
`on_change` hook). A `since` older than the log keeps (a node restart, a
catch-up that changed any number, or simply long ago) is answered with a full
snapshot, flagged as one. A `since` this node never signed is refused.

Flow control: each watch has one thread (bounded by `max_watches`, beyond
which RESOURCE_EXHAUSTED) that reads the view, sends one message and blocks in
gRPC's send until the consumer's window takes it. Nothing is queued per
consumer: a slow one receives the changes coalesced into fewer, larger deltas
(the log is asked for everything since the vector the consumer last got). The
handler is non-blocking (it holds none of the port's request threads) and
counted by the PublicGate as a watch, one of the caller's open streams.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from ledger import note
from ledger import view as V
from ledger.errors import BadInput, BadSignature, LedgerError, OutOfOrder
from ledger.verify import CosignedView, check_fresh, open_view
from markex.v1 import service_pb2 as pb
from node.logs import event
from node.services import PublicService
from node.status import code_for, detail_for
from node.viewkeeper import ViewKeeper

log = logging.getLogger("markex.watch")

Vector = tuple[tuple[str, int], ...]

LOG_APPLIES = 4096           # view applies the change log keeps
LOG_NUMBERS = 1_000_000      # changed numbers it keeps over all of them
MAX_WATCHES = 64             # open watches per node (one thread each)
PAGE_BYTES = 1 << 20         # entry bytes per message (a delta spans several)
POLL_S = 0.05                # how often a watch looks for a new cosigned checkpoint
MAX_SINCE = 64 << 10         # a `since` note longer than this is no checkpoint of ours


class ChangeLog:
    """Per view apply, the vector after it and the numbers that changed, the
    oldest dropped beyond LOG_APPLIES applies or LOG_NUMBERS numbers. Thread
    safe; `record` runs on the writer thread under the view's lock."""

    def __init__(self, max_applies: int = LOG_APPLIES, max_numbers: int = LOG_NUMBERS) -> None:
        self._lock = threading.Lock()
        self._max_applies = max_applies
        self._max_numbers = max_numbers
        self._items: deque[tuple[Vector, frozenset[str]]] = deque()
        self._numbers = 0

    def reset(self, vector: dict[str, int]) -> None:
        """The view is at `vector` and nothing before it can be told apart."""
        with self._lock:
            self._items.clear()
            self._items.append((_key(vector), frozenset()))
            self._numbers = 0

    def start(self, vector: dict[str, int]) -> None:
        """Begin at `vector` unless an apply already began the log."""
        with self._lock:
            if self._items:
                return
        self.reset(vector)

    def record(self, vector: dict[str, int], changed: set[str] | None) -> None:
        if changed is None or not self._items:   # any number may have changed: start here
            self.reset(vector)
            return
        key = _key(vector)
        with self._lock:
            if self._items and self._items[-1][0] == key:
                # the same vector again (a rebuild to where it was): merge
                old = self._items.pop()
                self._numbers -= len(old[1])
                changed = set(changed) | old[1]
            self._items.append((key, frozenset(changed)))
            self._numbers += len(changed)
            while len(self._items) > 1 and (
                len(self._items) > self._max_applies or self._numbers > self._max_numbers
            ):
                self._numbers -= len(self._items.popleft()[1])

    def since(self, vector: Vector) -> set[str] | None:
        """The numbers changed after the view was at `vector`; None when the
        log no longer reaches back to it (or never held it)."""
        with self._lock:
            out: set[str] = set()
            for key, numbers in reversed(self._items):
                if key == vector:
                    return out
                out |= numbers
            return None

    def passed(self, vector: Vector) -> bool | None:
        """True: the log holds `vector`; None: it may have been before the
        oldest the log keeps (every seq at or below it); False: this view was
        never there (a seq beyond the log's newest, or not below its oldest)."""
        with self._lock:
            if any(key == vector for key, _ in self._items):
                return True
            oldest, newest = dict(self._items[0][0]), dict(self._items[-1][0])
        v = dict(vector)
        if any(s > newest.get(i, 0) for i, s in v.items()):
            return False
        return None if all(s <= oldest.get(i, 0) for i, s in v.items()) else False


class NotOurCheckpoint(BadInput):
    """A `since` that is not a view checkpoint this node signed (INVALID_ARGUMENT)."""


def _key(vector: dict[str, int]) -> Vector:
    return tuple(sorted((i, s) for i, s in vector.items() if s > 0))


class Watcher:
    """The node's watches: the change log kept from the view keeper's hook,
    and one thread per open watch."""

    def __init__(self, view: ViewKeeper, max_watches: int = MAX_WATCHES,
                 changes: ChangeLog | None = None) -> None:
        self.view = view
        self.consortium = view.consortium
        self.changes = changes or ChangeLog()
        self.max_watches = max_watches
        self._open = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # The last note opened (its signatures checked): every open watch polls
        # the same note until the view moves, so it is verified once, not per poll.
        self._opened: tuple[str, CosignedView | None] = ("", None)
        view.on_change.append(self._changed)

    def start(self) -> None:
        """After the view keeper started: the log begins at its vector."""
        assert self.view.view is not None
        self.changes.start(self.view.view.vector)

    def stop(self) -> None:
        self._stop.set()

    def _changed(self, numbers: set[str] | None) -> None:
        # on the writer thread, under the view's lock, after the view moved
        assert self.view.view is not None
        self.changes.record(self.view.view.vector, numbers)

    # ---------------------------------------------------------------- since
    def open_since(self, text: str) -> V.ViewCheckpoint | None:
        """The checkpoint a consumer resumes from, checked: signed by this
        node under its own view origin (BadSignature, MalformedNote), at a
        vector this view passed through (OutOfOrder). None for a snapshot."""
        if not text:
            return None
        if len(text) > MAX_SINCE:
            raise BadInput(f"a view checkpoint note is at most {MAX_SINCE} bytes")
        me = self.consortium.participant(self.view.participant_id)
        assert me is not None
        verifier = note.Verifier.for_key(self.view.origin, me.public_key)
        try:
            cp = V.open_view_checkpoint(text, verifier, self.view.origin)
        except (BadSignature, BadInput) as e:
            raise NotOurCheckpoint(
                f"since is no view checkpoint this node signed: {type(e).__name__}: {e}"
            ) from e
        if self.changes.passed(cp.vector) is False:
            raise OutOfOrder(
                "this node's view never was at the vector of that checkpoint "
                "(it is not a checkpoint of this node's history)"
            )
        return cp

    # ---------------------------------------------------------------- stream
    def serve(self, request: Any, context: grpc.ServicerContext,
              send: Callable[[Any], None], charge: Callable[[int], None]) -> None:
        """The non-blocking handler: check `since`, then stream on a thread.
        `charge(n)` bills the caller for a snapshot of n entries before it
        is read (the public gate's units, as a LookupBatch of n numbers)."""
        try:
            cp = self.open_since(request.since)
        except LedgerError as e:
            context.abort(code_for(e), detail_for(e))
        if cp is None or self.changes.since(cp.vector) is None:
            assert self.view.view is not None
            charge(self.view.view.count)
        with self._lock:
            if self._open >= self.max_watches:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"at most {self.max_watches} view watches at once on this node")
            self._open += 1
        gone = threading.Event()
        context.add_callback(gone.set)
        threading.Thread(target=self._run, args=(cp, context, send, gone),
                         name="watch", daemon=True).start()

    def _run(self, since: V.ViewCheckpoint | None, context: grpc.ServicerContext,
             send: Callable[[Any], None], gone: threading.Event) -> None:
        try:
            self._stream(since, send, gone)
            if not gone.is_set():
                send(None)                  # the node stops: end the call with OK
        except LedgerError as e:
            event(log, logging.WARNING, "watch-failed", error=detail_for(e)[:300])
            end_stream(context, send, code_for(e), detail_for(e))
        except Exception:
            log.exception("watch failed")
            end_stream(context, send, grpc.StatusCode.INTERNAL,
                       "the watch failed; see the node's log")
        finally:
            with self._lock:
                self._open -= 1

    def _stream(self, since: V.ViewCheckpoint | None, send: Callable[[Any], None],
                gone: threading.Event) -> None:
        at: Vector | None = None if since is None else since.vector
        sent_body = "" if since is None else since.body()
        reason = "no checkpoint given" if since is None else ""
        while not (gone.is_set() or self._stop.is_set()):
            # Cheap first: is there a cosigned checkpoint the consumer lacks?
            if not self._news(self.view.checkpoint_note() or "", sent_body):
                gone.wait(POLL_S)
                continue
            text, delta = self._read(at)
            if delta is None:       # the log does not reach back to `at`
                at, reason = None, reason or "the checkpoint is older than the node's change log"
                continue
            if not self._news(text, sent_body):     # the view moved meanwhile: not cosigned yet
                gone.wait(POLL_S)
                continue
            body = note.Note.parse(text).text
            for msg in _pages(delta, text, at is None, reason):
                send(msg)
                if gone.is_set():
                    return
            at, sent_body, reason = V.parse_view_checkpoint(body).vector, body, ""

    def _read(self, at: Vector | None) -> tuple[str, list[tuple[str, bytes]] | None]:
        """The served note and, of the same version of the view, the entries
        changed since `at` (every entry when None); None: not in the log."""
        def read(view: V.NationalView) -> list[tuple[str, bytes]] | None:
            if at is None:
                numbers = list(view.numbers())
            else:
                changed = self.changes.since(at)
                if changed is None:
                    return None
                numbers = sorted(changed)
            out: list[tuple[str, bytes]] = []
            for i in range(0, len(numbers), 1000):
                part = numbers[i : i + 1000]
                out.extend((n, b or b"") for n, b in zip(part, view.entries_bytes(part),
                                                         strict=True))
            return out

        return self.view._consistent(read)  # noqa: SLF001 - the keeper's one consistent read

    def _news(self, text: str, sent_body: str) -> bool:
        """`text` is a cosigned checkpoint other than the one last sent."""
        return bool(text) and note.Note.parse(text).text != sent_body and self._cosigned(text)

    def _cosigned(self, text: str) -> bool:
        """The note is what a consumer accepts: a fresh quorum of cosignatures
        (the consumer checks it again; this only spares it a refusal)."""
        try:
            seen, got = self._opened
            if seen != text or got is None:
                got = open_view(self.consortium, text)
                self._opened = (text, got)
            fresh = check_fresh(got, self.consortium.policy, self.view.clock())
        except (LedgerError, BadSignature):
            return False
        return len(fresh) >= self.consortium.policy.cosign_quorum


def end_stream(context: grpc.ServicerContext, send: Callable[[Any], None],
         code: grpc.StatusCode, details: str) -> None:
    """End a non-blocking stream with a status from the watch's own thread.
    `context.abort` only ends a call from inside its handler (it raises for
    the handler's wrapper to catch); here the handler has long returned, so
    the status is set and the stream closed by its last callback."""
    context.set_code(code)
    context.set_details(details)
    with contextlib.suppress(Exception):    # the client may be gone already
        send(None)


def _pages(entries: list[tuple[str, bytes]], checkpoint: str, snapshot: bool,
           reason: str) -> Iterable[pb.WatchViewMessage]:
    """The delta as messages of at most PAGE_BYTES entry bytes; the last one
    carries the checkpoint, the first the snapshot flag."""
    page: list[pb.WatchedEntry] = []
    size = 0
    first = True
    for number, raw in entries:
        if page and size + len(raw) > PAGE_BYTES:
            yield pb.WatchViewMessage(entries=page, snapshot=snapshot and first,
                                      reason=reason if first else "")
            page, size, first = [], 0, False
        page.append(pb.WatchedEntry(number=number, entry=raw))
        size += len(raw) + len(number)
    yield pb.WatchViewMessage(entries=page, checkpoint=checkpoint,
                              snapshot=snapshot and first, reason=reason if first else "")


class WatchingPublic(PublicService):
    """The Public service with WatchView (node/server.py serves this one)."""

    watcher: Watcher

    def WatchView(self, request, context, send_response_callback=None):  # noqa: N802
        if send_response_callback is None:   # grpcio always passes it to a non-blocking handler
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "WatchView needs a non-blocking server")
        per_unit = self.limits.numbers_per_unit
        self.watcher.serve(request, context, send_response_callback,
                           lambda n: self.gate.charge(context, n / per_unit))

    WatchView.experimental_non_blocking = True  # type: ignore[attr-defined]
    WatchView.experimental_thread_pool = None  # type: ignore[attr-defined]
