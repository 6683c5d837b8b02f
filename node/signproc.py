"""The node's signing process: a child of the node process that signs runs
of the node's own records with the node's key, so Ed25519 signing (about 30
µs a record, most of it under the GIL in `cryptography`) runs on another
core than the node's one interpreter lock (node/core.py's signing stage).

The parent sends a run: the issuer, the first seq, the chain's head id, the
issued-at and each record's payload field (`ledger.recordbytes`); the child
chains them (each body's prev_id is the id of the envelope before it) and
answers the envelopes, in order. It keeps no state between runs but the key,
writes nothing anywhere but its pipe, and nothing it signs leaves the parent
before the parent's writer has checked and written it.

The key: its 32-byte seed goes over the child's stdin at start (no file is
written). The child ends at the end of its stdin (the node closed it, or
the node died: the kernel closes its pipes), and on Linux also by
PR_SET_PDEATHSIG when the thread that started it ends (the node starts it
from the signing stage's thread or from a gRPC worker's, IssueMany's
`prepare`; both live as long as the node: were that thread to end first, the
child would die, its next run fail, and the stage sign on its own thread
from then on, losing nothing); it ignores SIGINT, so a terminal's Ctrl-C
stops the node, which then closes it.

Frames both ways are a little-endian u32 length and that many bytes. A run:
u16 issuer length, issuer, u64 first seq, u8 head length (0 or 32), head,
u64 issued-at, u32 count, then count times (u32 length, payload field). Its
answer: count times (u32 length, envelope). The child writes b"R" once,
when it is ready."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("markex.node")

_U32 = struct.Struct("<I")
_RUN = struct.Struct("<Q")
_READY = b"R"
START_TIMEOUT_S = 20.0  # a child not ready by then is given up (the stage signs itself)
# A run's answer is due within this, plus RUN_TIMEOUT_PER_RECORD_S a record (a
# sign is about 30 µs): a stopped or hung child is given up, and the run is
# signed on the stage's thread, rather than holding every write of the node.
RUN_TIMEOUT_S = 1.0
RUN_TIMEOUT_PER_RECORD_S = 100e-6


class SigningProcessFailed(Exception):
    """The child died, answered short, or never became ready."""


def _read_exact(fd: int, n: int, deadline: float | None = None) -> bytes:
    """n bytes from fd; with `deadline` (time.monotonic()), TimeoutError past it."""
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"no answer within the run's deadline ({len(buf)} of {n} bytes)")
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _frame(parts: Sequence[bytes]) -> bytes:
    pack = _U32.pack
    return b"".join(x for p in parts for x in (pack(len(p)), p))


def _unframe(data: bytes, count: int) -> list[bytes]:
    out: list[bytes] = []
    at = 0
    unpack = _U32.unpack_from
    for _ in range(count):
        (n,) = unpack(data, at)
        at += 4
        out.append(data[at:at + n])
        at += n
    if at != len(data):
        raise ValueError("a frame longer than its items")
    return out


class SigningProcess:
    """The parent's handle on one signing child. `sign` is used by one thread
    at a time (the signing stage's); `ready` and `close` by any."""

    def __init__(self, seed: bytes, context: bytes) -> None:
        self._seed = seed
        self._context = context
        self._proc: subprocess.Popen | None = None
        self._ready = False
        self.started_at = 0.0  # time.monotonic() at start
        self._lock = threading.Lock()  # close() may come from another thread than sign()
        self._ready_lock = threading.Lock()  # one reader of the ready byte at a time

    def start(self) -> None:
        """Start the child (it imports and reads its key meanwhile: `ready`)."""
        root = Path(__file__).resolve().parent.parent
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "node.signproc", str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=str(root), bufsize=0,
            close_fds=True,
        )
        assert self._proc.stdin is not None
        seed, self._seed = self._seed, b""   # the child holds it from here on
        try:
            _write_all(self._proc.stdin.fileno(),
                       seed + _U32.pack(len(self._context)) + self._context)
        except OSError:
            self.close()   # the child, its pipes and its exit status: nothing left behind
            raise
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def ready(self) -> bool:
        """True once the child said it is ready (asks without waiting).
        Raises SigningProcessFailed when it died or took too long. Safe from
        several threads: one reads the child's ready byte, the others then see
        it read (two readers could both find it readable, and the second would
        block in its read for ever)."""
        if self._ready:
            return True
        with self._ready_lock:
            return self._ready or self._check_ready()

    def _check_ready(self) -> bool:
        proc = self._proc
        if proc is None or proc.stdout is None:
            raise SigningProcessFailed("the signing process is not running")
        fd = proc.stdout.fileno()
        if select.select([fd], [], [], 0)[0]:
            if os.read(fd, 1) != _READY:
                raise SigningProcessFailed("the signing process ended before it was ready")
            self._ready = True
            return True
        if proc.poll() is not None or time.monotonic() - self.started_at > START_TIMEOUT_S:
            raise SigningProcessFailed("the signing process did not start")
        return False

    def sign(self, issuer: str, seq: int, head: bytes, issued_at_ms: int,
             fields: Sequence[bytes]) -> list[bytes]:
        """The envelopes of records seq, seq+1, ... chained from `head`, each
        with its payload field from `fields`. Raises SigningProcessFailed."""
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdout is None or not self._ready:
            raise SigningProcessFailed("the signing process is not ready")
        who = issuer.encode()
        run = (struct.pack("<H", len(who)) + who + _RUN.pack(seq) + bytes((len(head),)) + head
               + _RUN.pack(issued_at_ms) + _U32.pack(len(fields)) + _frame(fields))
        deadline = time.monotonic() + RUN_TIMEOUT_S + RUN_TIMEOUT_PER_RECORD_S * len(fields)
        try:
            _write_all(proc.stdin.fileno(), _U32.pack(len(run)) + run)
            out = proc.stdout.fileno()
            (n,) = _U32.unpack(_read_exact(out, 4, deadline))
            return _unframe(_read_exact(out, n, deadline), len(fields))
        except (OSError, EOFError, ValueError, struct.error) as e:  # TimeoutError is an OSError
            raise SigningProcessFailed(f"the signing process failed: {e!r}") from e

    def close(self) -> None:
        """End the child: close its stdin, wait a moment, then kill it."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        for f in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                if f is not None:
                    f.close()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=2)


# ---------------------------------------------------------------- the child


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the parent's starting thread ends (Linux), and an exit
    now if the parent is gone already."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        sys.exit(0)


def _serve(inp: int, out: int) -> None:
    from keys.signing import SigningKey
    from ledger.recordbytes import envelope, head_writer, record_id

    seed = _read_exact(inp, 32)
    (n,) = _U32.unpack(_read_exact(inp, 4))
    context = _read_exact(inp, n)
    sign = SigningKey.from_seed(seed).private.sign
    del seed
    _write_all(out, _READY)
    while True:
        try:
            (n,) = _U32.unpack(_read_exact(inp, 4))
        except EOFError:
            return
        run = _read_exact(inp, n)
        (k,) = struct.unpack_from("<H", run, 0)
        at = 2 + k
        issuer = run[2:at]
        (seq,) = _RUN.unpack_from(run, at)
        k = run[at + 8]
        head = run[at + 9:at + 9 + k]
        at += 9 + k
        (issued_at,) = _RUN.unpack_from(run, at)
        (count,) = _U32.unpack_from(run, at + 8)
        answers: list[bytes] = []
        body_head = head_writer(issuer, issued_at)
        for field in _unframe(run[at + 12:], count):
            body = body_head(seq, head) + field
            env = envelope(body, sign(context + body))
            answers.append(env)
            head = record_id(env)
            seq += 1
        reply = _frame(answers)
        _write_all(out, _U32.pack(len(reply)) + reply)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(int(sys.argv[1]))
    with contextlib.suppress(EOFError):  # the node went before the child was ready
        _serve(0, 1)


if __name__ == "__main__":
    main()
