"""The log as C2SP tlog-tiles (https://c2sp.org/tlog-tiles): pure tile math.

A tiled log is read as static resources below a URL prefix::

    checkpoint                      the signed checkpoint note
    tile/<L>/<N>[.p/<W>]            hash tile: W consecutive node hashes at tree level 8*L
    tile/entries/<N>[.p/<W>]        entry bundle: W entries, each uint16-BE length || bytes

Tile height is 8, so a full tile holds 256 hashes (8,192 bytes). Hash ``i``
of tile ``N`` at level ``L`` is MTH(D[(N*256+i) * 256**L : (N*256+i+1) * 256**L]),
which is exactly the complete subtree ledger/merkle.py stores under
``(8*L, N*256+i)``: a tile is read from stored nodes, never recomputed. ``<N>``
is written in 3-digit groups, all but the last prefixed with ``x``
(1234067 -> ``x001/x234/067``); ``.p/<W>`` (1..255) marks a partial tile.

A tree of ``size`` leaves covers tile (L, N, W) when ``N*256 + W <= size >>
(8*L)``: every one of its hashes is a complete subtree inside the tree. Only
covered tiles exist for that size (`check_covered` raises NotFound otherwise),
so a server that reads tiles for its checkpoint's size serves nothing the
checkpoint does not commit to.

Errors: `MalformedTilePath` (a BadInput) for a path that is not the one
canonical spelling of a tile; NotFound for a tile the tree does not cover;
TooLarge for an entry a uint16 length cannot carry. Nothing here touches the
network or the clock.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ledger.errors import BadInput, NotFound, StorageFailure, TooLarge
from ledger.merkle import HASH_SIZE

__all__ = [
    "ENTRIES",
    "FULL_WIDTH",
    "MAX_ENTRY_BYTES",
    "MAX_LEVEL",
    "TILE_HEIGHT",
    "EntryReader",
    "MalformedTilePath",
    "Tile",
    "check_covered",
    "decode_bundle",
    "encode_bundle",
    "entry_bundle",
    "hash_tile",
    "tiles_for_size",
]

TILE_HEIGHT = 8
FULL_WIDTH = 1 << TILE_HEIGHT
MAX_LEVEL = 63  # the spec's bound on <L>
MAX_ENTRY_BYTES = 0xFFFF  # an entry bundle's length prefix is a uint16
ENTRIES = "entries"
# A uint64 tree has fewer than 2**64 / 256 tiles per level: 7 groups of 3 digits are plenty.
_MAX_GROUPS = 7
MAX_PATH_CHARS = 64  # tile/entries/ + 7 groups + .p/255 fits well inside

_LEVEL = re.compile(r"0|[1-9][0-9]?")
_WIDTH = re.compile(r"[1-9][0-9]{0,2}")
_GROUP = re.compile(r"[0-9]{3}")
_U16 = struct.Struct(">H")


class MalformedTilePath(BadInput):
    """A path that is not the canonical spelling of a hash tile or entry bundle."""


class NodeSource(Protocol):
    """What a hash tile is read from: stored complete subtrees (ledger.merkle.NodeReader)."""

    def get_node(self, level: int, index: int) -> bytes: ...


class EntryReader(Protocol):
    """What an entry bundle is read from (ledger.log.NodeLedger has it)."""

    def entries(self, start: int, end: int) -> list[bytes]: ...


@dataclass(frozen=True)
class Tile:
    """One tile: `level` 0..63 (an entry bundle has level 0 and `entries`),
    `index` within the level, `width` 1..256 (256 is a full tile)."""

    level: int
    index: int
    width: int = FULL_WIDTH
    entries: bool = False

    def __post_init__(self) -> None:
        for name in ("level", "index", "width"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise MalformedTilePath(f"tile {name} must be an integer, got {v!r}")
        if not 0 <= self.level <= MAX_LEVEL:
            raise MalformedTilePath(f"tile level {self.level} is not in 0..{MAX_LEVEL}")
        if self.entries and self.level != 0:
            raise MalformedTilePath("an entry bundle has level-0 coordinates")
        if self.index < 0 or self.index >= 1000**_MAX_GROUPS:
            raise MalformedTilePath(f"tile index {self.index} is out of range")
        if not 1 <= self.width <= FULL_WIDTH:
            raise MalformedTilePath(f"tile width {self.width} is not in 1..{FULL_WIDTH}")

    @property
    def full(self) -> bool:
        return self.width == FULL_WIDTH

    @property
    def first(self) -> int:
        """Index, at tree level 8*level, of the tile's first hash (its first entry for a bundle)."""
        return self.index * FULL_WIDTH

    def path(self) -> str:
        """The C2SP path, without the prefix: ``tile/<L>/<N>[.p/<W>]`` or ``tile/entries/...``."""
        n = self.index
        groups = [f"{n % 1000:03d}"]
        while n >= 1000:
            n //= 1000
            groups.append(f"x{n % 1000:03d}")
        head = ENTRIES if self.entries else str(self.level)
        tail = "" if self.full else f".p/{self.width}"
        return f"tile/{head}/{'/'.join(reversed(groups))}{tail}"

    @classmethod
    def parse(cls, path: str) -> Tile:
        """The tile a path names; MalformedTilePath unless it is that tile's one spelling."""
        if len(path) > MAX_PATH_CHARS:
            raise MalformedTilePath(f"a tile path is at most {MAX_PATH_CHARS} characters")
        parts = path.split("/")
        if len(parts) < 3 or parts[0] != "tile":
            raise MalformedTilePath(f"{path!r} is not tile/<L>/<N>[.p/<W>]")
        head, rest = parts[1], parts[2:]
        entries = head == ENTRIES
        if not entries and not _LEVEL.fullmatch(head):
            raise MalformedTilePath(f"tile level {head!r} is not a decimal 0..{MAX_LEVEL}")
        level = 0 if entries else int(head)
        width = FULL_WIDTH
        if len(rest) >= 2 and rest[-2].endswith(".p"):
            w = rest[-1]
            if not _WIDTH.fullmatch(w) or not 1 <= int(w) < FULL_WIDTH:
                raise MalformedTilePath(f"partial tile width {w!r} is not a decimal 1..255")
            width = int(w)
            rest = [*rest[:-2], rest[-2][: -len(".p")]]
        if len(rest) > _MAX_GROUPS:
            raise MalformedTilePath(f"a tile index has at most {_MAX_GROUPS} path elements")
        index = 0
        for i, g in enumerate(rest):
            last = i == len(rest) - 1
            digits = g if last else g[1:] if g.startswith("x") else ""
            if not _GROUP.fullmatch(digits):
                want = "3 digits" if last else "x and 3 digits"
                raise MalformedTilePath(f"tile index element {g!r} is not {want}")
            index = index * 1000 + int(digits)
        tile = cls(level, index, width, entries)
        if tile.path() != path:  # e.g. x000/001: one index, one spelling
            raise MalformedTilePath(
                f"{path!r} is not canonical; the tile's path is {tile.path()!r}"
            )
        return tile


def check_covered(tile: Tile, size: int) -> None:
    """Raise NotFound unless a tree of `size` leaves holds every hash (entry) of `tile`."""
    have = size >> (TILE_HEIGHT * tile.level)
    if tile.first + tile.width > have:
        raise NotFound(f"{tile.path()} is beyond the checkpoint's tree of size {size}")


def tiles_for_size(size: int) -> list[Tile]:
    """The right edge of a tree of `size`: for each level, its last full tile
    and its partial tile (if any), lowest level first. Every other tile of the
    tree is a full tile left of these."""
    out: list[Tile] = []
    level = 0
    while level <= MAX_LEVEL and size >> (TILE_HEIGHT * level):
        count = size >> (TILE_HEIGHT * level)
        full, part = divmod(count, FULL_WIDTH)
        if full:
            out.append(Tile(level, full - 1))
        if part:
            out.append(Tile(level, full, part))
        level += 1
    return out


def hash_tile(nodes: NodeSource, tile: Tile, size: int) -> bytes:
    """The tile's bytes for a tree of `size`: its node hashes, concatenated.

    NotFound when the tree does not cover the tile; a stored node that is
    missing or not 32 bytes is the store's failure (StorageFailure)."""
    if tile.entries:
        raise MalformedTilePath("an entry bundle holds entries, not hashes")
    check_covered(tile, size)
    level = TILE_HEIGHT * tile.level
    out = []
    for i in range(tile.first, tile.first + tile.width):
        try:
            h = nodes.get_node(level, i)
        except NotFound as e:
            raise StorageFailure(
                f"node ({level}, {i}) inside the tree of size {size} is not stored"
            ) from e
        if len(h) != HASH_SIZE:
            raise StorageFailure(f"node ({level}, {i}) is {len(h)} bytes, not {HASH_SIZE}")
        out.append(h)
    return b"".join(out)


def encode_bundle(entries: Iterable[bytes]) -> bytes:
    """Entries as a bundle: each a big-endian uint16 length, then its bytes.
    TooLarge for an entry over 65,535 bytes (the format cannot carry it)."""
    out = []
    for i, e in enumerate(entries):
        if len(e) > MAX_ENTRY_BYTES:
            raise TooLarge(
                f"entry {i} is {len(e)} bytes; an entry bundle carries at most {MAX_ENTRY_BYTES}"
            )
        out.append(_U16.pack(len(e)))
        out.append(e)
    return b"".join(out)


def decode_bundle(data: bytes, width: int | None = None) -> list[bytes]:
    """The entries of a bundle; MalformedTilePath for a truncated bundle or,
    with `width`, a bundle that does not hold exactly that many entries."""
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise MalformedTilePath(f"entry bundle is truncated in a length prefix at byte {pos}")
        (n,) = _U16.unpack_from(data, pos)
        pos += 2
        if pos + n > len(data):
            raise MalformedTilePath(f"entry {len(out)} of the bundle is truncated")
        out.append(bytes(data[pos : pos + n]))
        pos += n
    if width is not None and len(out) != width:
        raise MalformedTilePath(f"entry bundle holds {len(out)} entries, not {width}")
    return out


def entry_bundle(reader: EntryReader, tile: Tile, size: int) -> bytes:
    """The bundle's bytes for a tree of `size`: entries first..first+width-1.

    NotFound when the tree does not cover the bundle; TooLarge for an entry
    the format cannot carry."""
    if not tile.entries:
        raise MalformedTilePath("a hash tile holds hashes, not entries")
    check_covered(tile, size)
    entries: Sequence[bytes] = reader.entries(tile.first, tile.first + tile.width)
    if len(entries) != tile.width:
        raise StorageFailure(
            f"the store returned {len(entries)} entries for {tile.path()}, not {tile.width}"
        )
    return encode_bundle(entries)
