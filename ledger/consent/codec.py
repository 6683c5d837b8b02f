"""The stored consent state's bytes: a subscriber's entry, a line record.

A subscriber entry is read on every screen, so it is a flat binary record
(struct), decoded in one pass:

    entry  = 0x01 || n (1) || n × preference || m (1) || m × (effective_at (8) || id (32))
    preference = id (32) || seq, issued_at, effective_from, until (4 × 8, BE)
                 || issuer (1 + len) || refuse, comma-joined (2 + len)
                 || modes (1, bit per MODES) || days (2, bit per DAY_TYPES)
                 || bands (1 + 4 each: start, end minute, BE)

A line record (registration or deregistration) is kept under its record id.
"""

from __future__ import annotations

import struct

from ledger.consent.facts import Deregistration, LineFact, PreferenceFact, Subscriber
from ledger.errors import StorageFailure
from ledger.payloads.preference import DAY_TYPES, MODES

VERSION = 1
_HEAD = struct.Struct(">32sQQQQ")
_REASSIGN = struct.Struct(">Q32s")
_BAND = struct.Struct(">HH")
_U16 = struct.Struct(">H")
_LINE = struct.Struct(">B32sQQ")   # kind (1 registration, 2 deregistration), id, seq, issued_at
_MODE_BIT = {m: 1 << i for i, m in enumerate(MODES)}
_DAY_BIT = {d: 1 << i for i, d in enumerate(DAY_TYPES)}


def _bits(values: tuple[str, ...], table: dict[str, int]) -> int:
    out = 0
    for v in values:
        out |= table[v]
    return out


def _names(bits: int, order: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v for i, v in enumerate(order) if bits >> i & 1)


# Every bit set, decoded once: a screen decodes a subscriber per marketing call.
_MODES_OF = tuple(_names(b, MODES) for b in range(1 << len(MODES)))
_DAYS_OF = tuple(_names(b, DAY_TYPES) for b in range(1 << len(DAY_TYPES)))
_MODE_MASK, _DAY_MASK = len(_MODES_OF) - 1, len(_DAYS_OF) - 1


def _str(s: str, size: struct.Struct | None = None) -> bytes:
    raw = s.encode()
    return (bytes((len(raw),)) if size is None else size.pack(len(raw))) + raw


def encode_subscriber(sub: Subscriber) -> bytes:
    out = [bytes((VERSION, len(sub.preferences)))]
    for f in sub.preferences:
        out.append(_HEAD.pack(f.id, f.seq, f.issued_at, f.effective_from, f.until))
        out.append(_str(f.issuer))
        out.append(_str(",".join(f.refuse), _U16))
        out.append(bytes((_bits(f.modes, _MODE_BIT),)))
        out.append(_U16.pack(_bits(f.days, _DAY_BIT)))
        out.append(bytes((len(f.allowed),)))
        out.extend(_BAND.pack(s, e) for s, e in f.allowed)
    out.append(bytes((len(sub.reassigned),)))
    out.extend(_REASSIGN.pack(r, rid) for r, rid in sub.reassigned)
    return b"".join(out)


def decode_subscriber(raw: bytes) -> Subscriber:
    """Raises StorageFailure for bytes that are not an entry."""
    try:
        if raw[0] != VERSION:
            raise ValueError(f"version {raw[0]}")
        n, i = raw[1], 2
        prefs = []
        for _ in range(n):
            rid, seq, issued, eff, until = _HEAD.unpack_from(raw, i)
            i += _HEAD.size
            k = raw[i]
            issuer = raw[i + 1 : i + 1 + k].decode()
            i += 1 + k
            (k,) = _U16.unpack_from(raw, i)
            text = raw[i + 2 : i + 2 + k].decode()
            i += 2 + k
            modes = _MODES_OF[raw[i] & _MODE_MASK]   # _names of the bits, as a table
            (days,) = _U16.unpack_from(raw, i + 1)
            nb = raw[i + 3]
            i += 4
            bands = tuple(_BAND.unpack_from(raw, i + 4 * j) for j in range(nb)) if nb else ()
            i += 4 * nb
            prefs.append(PreferenceFact(
                rid, issuer, seq, issued, tuple(text.split(",")) if text else (), modes,
                bands, _DAYS_OF[days & _DAY_MASK], eff, until,
            ))
        m = raw[i]
        i += 1
        reassigned = tuple(_REASSIGN.unpack_from(raw, i + _REASSIGN.size * j) for j in range(m))
        if i + _REASSIGN.size * m != len(raw):
            raise ValueError("trailing bytes")
    except (IndexError, ValueError, struct.error, UnicodeDecodeError) as e:
        raise StorageFailure(f"a stored consent entry does not decode: {e}") from e
    return Subscriber(tuple(prefs), reassigned)


def encode_line(f: LineFact | Deregistration) -> bytes:
    if isinstance(f, Deregistration):
        return _LINE.pack(2, f.id, f.seq, f.issued_at) + _str(f.issuer) + f.target
    return b"".join((
        _LINE.pack(1, f.id, f.seq, f.issued_at), _str(f.issuer), _str(f.number),
        bytes((f.prefix,)), _str(f.enterprise, _U16), _str(f.uscc), _str(f.industry),
    ))


def decode_line(raw: bytes) -> LineFact | Deregistration:
    """Raises StorageFailure for bytes that are not a line record."""
    try:
        kind, rid, seq, issued = _LINE.unpack_from(raw, 0)
        i = _LINE.size
        fields: list[str] = []

        def take(wide: bool = False) -> str:
            nonlocal i
            if wide:
                (k,) = _U16.unpack_from(raw, i)
                i += 2
            else:
                k = raw[i]
                i += 1
            s = raw[i : i + k].decode()
            i += k
            return s

        issuer = take()
        if kind == 2:
            target = raw[i:]
            if len(target) != 32:
                raise ValueError("a deregistration names a 32-byte id")
            return Deregistration(rid, issuer, seq, issued, target)
        if kind != 1:
            raise ValueError(f"kind {kind}")
        number = take()
        prefix = bool(raw[i])
        i += 1
        fields = [take(wide=True), take(), take()]
        if i != len(raw):
            raise ValueError("trailing bytes")
    except (IndexError, ValueError, struct.error, UnicodeDecodeError) as e:
        raise StorageFailure(f"a stored line record does not decode: {e}") from e
    return LineFact(rid, issuer, seq, issued, number, prefix, *fields)
