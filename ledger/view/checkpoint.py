"""View checkpoints: the signed note a node publishes for its view.

    <origin>\\n<entry count>\\n<base64 root>\\nvector <issuer>=<seq> ...\\nsigned-at-ms <t>\\n

`parse_view_checkpoint` raises MalformedNote; `open_view_checkpoint` also
BadSignature (a wrong signature, or an origin that is not the one expected).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ledger import note
from ledger.errors import BadSignature, MalformedNote

if TYPE_CHECKING:
    from keys.signing import SigningKey

_ISSUER = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
_DECIMAL = re.compile(r"(?:0|[1-9][0-9]*)\Z", re.ASCII)
SIGNED_AT_KEYWORD = "signed-at-ms"   # the view checkpoint's fifth line: when it was signed
MAX_SIGNED_AT_MS = 2**63 - 1


@dataclass(frozen=True)
class ViewCheckpoint:
    """A view checkpoint's body, a C2SP tlog-checkpoint text with two extension lines:

        <origin>\\n<entry count>\\n<base64 root>\\nvector <issuer>=<seq> ...\\nsigned-at-ms <t>\\n

    The vector line lists every issuer with seq > 0, sorted by issuer id;
    `signed_at_ms` is when the signer signed it (POSIX milliseconds, passed in),
    so a client can refuse a view that is old however well it is cosigned."""

    origin: str
    vector: tuple[tuple[str, int], ...]
    count: int
    root: bytes
    signed_at_ms: int

    def __post_init__(self) -> None:
        t = self.signed_at_ms
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= MAX_SIGNED_AT_MS:
            raise MalformedNote(f"view checkpoint time {t!r} is not a time in milliseconds")

    def body(self) -> str:
        line = " ".join(["vector"] + [f"{i}={s}" for i, s in self.vector])
        stamp = f"{SIGNED_AT_KEYWORD} {self.signed_at_ms}"
        return note.Checkpoint(self.origin, self.count, self.root, (line, stamp)).body()

    @property
    def vector_dict(self) -> dict[str, int]:
        return dict(self.vector)


def vector_items(vector: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    """The vector line's items: sorted by issuer, seq 0 left out. Raises MalformedNote."""
    items = []
    for issuer, seq in sorted(vector.items()):
        if not _ISSUER.match(issuer):
            raise MalformedNote(f"{issuer!r} is not a participant id")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise MalformedNote(f"vector seq of {issuer} is not a non-negative integer")
        if seq:
            items.append((issuer, seq))
    return tuple(items)


def view_checkpoint_text(
    origin: str, vector: Mapping[str, int], count: int, root: bytes, signed_at_ms: int
) -> str:
    """The note text of a view checkpoint signed at `signed_at_ms` (issuers at
    seq 0 are left out)."""
    return ViewCheckpoint(origin, vector_items(vector), count, root, signed_at_ms).body()


def parse_view_checkpoint(text: str) -> ViewCheckpoint:
    """Strict parse of a view checkpoint's note text. Raises MalformedNote."""
    cp = note.Checkpoint.parse_body(text)
    if len(cp.extensions) != 2:
        raise MalformedNote(
            "a view checkpoint has exactly two extension lines, the vector and the signing time"
        )
    words = cp.extensions[0].split(" ")
    if words[0] != "vector":
        raise MalformedNote("a view checkpoint's fourth line starts with 'vector'")
    items = []
    for w in words[1:]:
        issuer, eq, seq = w.partition("=")
        if not eq or not _ISSUER.match(issuer) or not _DECIMAL.match(seq) or seq == "0":
            raise MalformedNote(f"vector item {w[:80]!r} is not <issuer>=<seq>")
        items.append((issuer, int(seq)))
    if [i for i, _ in items] != sorted({i for i, _ in items}):
        raise MalformedNote("vector issuers are not sorted and unique")
    keyword, sp, stamp = cp.extensions[1].partition(" ")
    if keyword != SIGNED_AT_KEYWORD or not sp or not _DECIMAL.match(stamp):
        raise MalformedNote(f"a view checkpoint's fifth line is '{SIGNED_AT_KEYWORD} <ms>'")
    vc = ViewCheckpoint(cp.origin, tuple(items), cp.size, cp.root, int(stamp))
    if vc.body() != text:
        raise MalformedNote("view checkpoint text is not canonical")
    return vc


def sign_view_checkpoint(cp: ViewCheckpoint, key: SigningKey) -> str:
    """The view checkpoint as a signed note; the key name is the origin."""
    return note.sign_note(cp.body(), cp.origin, key)


def open_view_checkpoint(
    signed: str, verifier: note.Verifier, origin: str | None = None
) -> ViewCheckpoint:
    """Verify `verifier`'s signature, then parse. The origin must equal
    `origin`, or the verifier's key name. Raises MalformedNote, BadSignature."""
    parsed, _ = note.verify_note(signed, [verifier])
    vc = parse_view_checkpoint(parsed.text)
    expected = verifier.name if origin is None else origin
    if vc.origin != expected:
        raise BadSignature(f"view checkpoint origin {vc.origin!r} is not {expected!r}")
    return vc
