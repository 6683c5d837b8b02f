"""A record's bytes written without protobuf, for the node's signing process
(node/signproc.py), which imports no protobuf and no payload code.

A `markex.v1.Record` body is its head (issuer = 1, seq = 2, prev_id = 3,
issued_at_ms = 4) followed by its one payload field (10 and up); protobuf
writes known fields in field-number order and leaves out proto3 defaults, so
the body of a record is `body_head(...) + payload_field(...)`, byte for byte
`Record.issue`'s (tests/test_signproc.py holds the two to agreement). The
envelope is `SignedRecord(body, signature)`'s canonical encoding, the one
`ledger.record.canonical_split` reads."""

from __future__ import annotations

import hashlib
from collections.abc import Callable


def varint(n: int) -> bytes:
    """The minimal protobuf varint of `n` (>= 0)."""
    if n < 0x80:
        return bytes((n,))
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def head_writer(issuer: bytes, issued_at_ms: int) -> Callable[[int, bytes], bytes]:
    """`body_head` of one issuer and time as a function of (seq, prev_id),
    the parts common to a run written once."""
    if issued_at_ms <= 0:
        raise ValueError("a record's time is positive")
    pre = b"\x0a" + varint(len(issuer)) + issuer + b"\x10"
    post = b"\x20" + varint(issued_at_ms)

    def head(seq: int, prev_id: bytes) -> bytes:
        if seq < 1:
            raise ValueError("a record's seq starts at 1")
        if prev_id:
            return pre + varint(seq) + b"\x1a" + varint(len(prev_id)) + prev_id + post
        return pre + varint(seq) + post

    return head


def body_head(issuer: bytes, seq: int, prev_id: bytes, issued_at_ms: int) -> bytes:
    """The body's fields before the payload. `issuer` is the id's UTF-8;
    `seq` >= 1 and `issued_at_ms` > 0 (what a record may hold); `prev_id`
    empty only at seq 1 (proto3 leaves an empty field out)."""
    return head_writer(issuer, issued_at_ms)(seq, prev_id)


def envelope(body: bytes, signature: bytes) -> bytes:
    """The canonical SignedRecord of a non-empty body and a 64-byte signature."""
    return b"\x0a" + varint(len(body)) + body + b"\x12\x40" + signature


def record_id(envelope_bytes: bytes) -> bytes:
    return hashlib.sha256(envelope_bytes).digest()
