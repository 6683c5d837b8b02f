"""ScreenDecision messages written from templates: the screen's fast path.

Most decisions depend on the caller alone: a caller that is not marketing is
answered the same whoever it calls, by any mode, at any time of one interval
of its entry (ledger/screen.py rules 1, 2, 4-7; only rule 3 reads the
callee's preference). Such a decision is encoded once, as a `Template`: the
bytes of its fields 1-4 (action, category, reasons, redress) and of field 9
(risk); a call's answer is those bytes around its own fields 5-8 (tag,
caller, callee, at_ms), which is exactly what protobuf writes for the whole
message (fields in number order, defaults left out; tests/test_screen_fast.py
checks it byte for byte against SerializeToString).

A decision that does need the callee (a refusal, a listed line's) is
written the same way (`template_of`): its reasons' bytes are kept per
reason (a line's or a sanction's recurs from call to call), so no protobuf
message is built on the call path.

A batch's answer is the ScreenBatchResponse's bytes, each decision as field 1.
"""

from __future__ import annotations

from typing import NamedTuple

from ledger.screen import ALLOW, BLOCK, LABEL, WARN, Decision, Reason
from markex.v1 import service_pb2 as pb


def _varint(n: int) -> bytes:
    # The lengths and tags of a batch take one to three bytes: looked up or
    # written without a loop.
    if n < 0x4000:
        return SMALL_VARINT[n]
    if n < 0x200000:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


ONE_BYTE = [bytes((i,)) for i in range(0x80)]
SMALL_VARINT = ONE_BYTE + [bytes((n & 0x7F | 0x80, n >> 7)) for n in range(0x80, 0x4000)]


def text_field(field: int, s: str) -> bytes:
    """A string field (wire type 2); an empty one is left out, as protobuf does."""
    if not s:
        return b""
    b = s.encode()
    return _varint(field << 3 | 2) + _varint(len(b)) + b


TAG_KEY, _AT = _varint(5 << 3), _varint(8 << 3)


class Template(NamedTuple):
    prefix: bytes   # fields 1-4
    suffix: bytes   # field 9


CALLER_KEY, CALLEE_KEY = _varint(6 << 3 | 2), _varint(7 << 3 | 2)


_last_at: tuple[int, bytes] = (0, b"")


def at_bytes(at_ms: int) -> bytes:
    """Field 8 (at_ms) as written, b"" for 0 (left out)."""
    global _last_at
    last = _last_at
    if last[0] == at_ms:         # calls mostly share their time (a batch's, the clock's ms)
        return last[1]
    b = _AT + _varint(at_ms) if at_ms > 0 else b""
    _last_at = (at_ms, b)        # one tuple: a racing thread reads a whole pair
    return b


def render(t: tuple[bytes, bytes], tag: int, caller: str, callee: str, at_ms: int) -> bytes:
    """One call's ScreenDecision bytes from a template (prefix, suffix);
    numbers are E.164 (ASCII, never empty)."""
    return render_at(t, tag, caller, callee, at_bytes(at_ms))


def tag_field(tag: int) -> bytes:
    """Field 5 (tag) as written, b"" for 0 (left out)."""
    return TAG_KEY + _varint(tag) if tag else b""


def render_at(t: tuple[bytes, bytes], tag: int, caller: str, callee: str,
              at_field: bytes) -> bytes:
    """`render` with the call's time already written (`at_bytes`): a batch's
    calls mostly share it (node/screener.py's first pass writes the same
    bytes inline)."""
    a, b = caller.encode(), callee.encode()
    return b"".join((
        t[0],
        tag_field(tag),
        CALLER_KEY, ONE_BYTE[len(a)], a,
        CALLEE_KEY, ONE_BYTE[len(b)], b,
        at_field,
        t[1],
    ))


_ACTION = {a: _varint(1 << 3) + _varint(v) for a, v in (
    (ALLOW, pb.SCREEN_ACTION_ALLOW), (LABEL, pb.SCREEN_ACTION_LABEL),
    (WARN, pb.SCREEN_ACTION_WARN), (BLOCK, pb.SCREEN_ACTION_BLOCK))}
_RECORD, _REASON = _varint(2 << 3 | 2), _varint(3 << 3 | 2)
_REASONS: dict[Reason, bytes] = {}
MAX_REASONS = 4096   # reasons kept as bytes (a line's, a sanction's, the fixed sentences)


def reason_bytes(r: Reason) -> bytes:
    """Field 3 of a ScreenDecision for reason `r` (a ScreenReason: code,
    each record id, detail), as protobuf writes it; recurring ones are kept."""
    got = _REASONS.get(r)
    if got is None:
        body = b"".join((text_field(1, r.code),
                         *(_RECORD + _varint(len(x)) + x for x in r.records),
                         text_field(3, r.detail)))
        got = _REASON + _varint(len(body)) + body
        if len(_REASONS) >= MAX_REASONS:
            _REASONS.clear()
        _REASONS[r] = got
    return got


def template_of(d: Decision) -> Template:
    """The template of decision `d`: the bytes protobuf writes for its
    ScreenDecision without the call's fields, around which `render_at`
    writes them. Raises KeyError for an action that is none of the four."""
    return Template(
        b"".join((_ACTION[d.action], text_field(2, d.category),
                  *[reason_bytes(r) for r in d.reasons], text_field(4, d.redress))),
        text_field(9, d.risk))


def decision_bytes(d: Decision, tag: int, caller: str, callee: str, at_ms: int) -> bytes:
    """One call's ScreenDecision bytes for decision `d` (numbers E.164)."""
    return render(template_of(d), tag, caller, callee, at_ms)


_DECISIONS = _varint(1 << 3 | 2)


def batch_bytes(decisions: list[bytes]) -> bytes:
    """The ScreenBatchResponse of these ScreenDecision bytes (one join, no
    copy of a decision before it)."""
    parts = [_DECISIONS, b"", b""] * len(decisions)
    parts[1::3] = [_varint(len(d)) for d in decisions]
    parts[2::3] = decisions
    return b"".join(parts)
