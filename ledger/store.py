"""The node's RocksDB store (rocksdict): one database, one column family per kind.

    records        record id (32)             -> leaf index (8, BE) || envelope
    leaves         leaf index (8, BE)         -> record id (32)
    merkle         level (1) || index (8, BE) -> SHA-256 of a complete subtree
    feeds          issuer                     -> FeedState encoding
    feedseq        issuer || 0x00 || seq (8)  -> record id
    equivocations  issuer || 0x00 || seq (8)  -> EquivocationProof encoding
    checkpoints    name                       -> signed note text
    witness        peer id || 0x00 || ...     -> what we saw of peers' checkpoints
    view           E.164 number               -> view entry bytes
    meta           name                       -> small values (log size, ...)

Everything one accepted batch changes goes into one WriteBatch written with
sync=True: an acknowledged record survives kill -9, and a crash never leaves
half a batch behind.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch, WriteOptions

from ledger.errors import StorageFailure

COLUMN_FAMILIES = (
    "records",
    "leaves",
    "merkle",
    "feeds",
    "feedseq",
    "equivocations",
    "checkpoints",
    "witness",
    "view",
    "meta",
)

U64 = struct.Struct(">Q")


def u64(n: int) -> bytes:
    return U64.pack(n)


def read_u64(b: bytes) -> int:
    return U64.unpack(b)[0]


def merkle_key(level: int, index: int) -> bytes:
    return bytes((level,)) + U64.pack(index)


def feedseq_key(issuer: str, seq: int) -> bytes:
    return issuer.encode() + b"\x00" + U64.pack(seq)


class Batch:
    """Puts and deletes gathered for one atomic write."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._wb = WriteBatch(raw_mode=True)
        self.count = 0

    def put(self, cf: str, key: bytes, value: bytes) -> None:
        self._wb.put(key, value, self._store._handles[cf])
        self.count += 1

    def delete(self, cf: str, key: bytes) -> None:
        self._wb.delete(key, self._store._handles[cf])
        self.count += 1


class Store:
    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        self.path = Path(path)
        opts = self._options()
        opts.create_if_missing(not read_only)
        opts.create_missing_column_families(not read_only)
        cfs = {name: self._options() for name in COLUMN_FAMILIES}
        try:
            if read_only:
                from rocksdict import AccessType

                self._db = Rdict(
                    str(self.path),
                    opts,
                    column_families=cfs,
                    access_type=AccessType.read_only(),
                )
            else:
                self.path.mkdir(parents=True, exist_ok=True)
                self._db = Rdict(str(self.path), opts, column_families=cfs)
        except Exception as e:  # rocksdict raises plain Exception
            raise StorageFailure(f"cannot open the store at {self.path}: {e}") from e
        self._cfs = {name: self._db.get_column_family(name) for name in COLUMN_FAMILIES}
        self._handles = {name: self._db.get_column_family_handle(name) for name in COLUMN_FAMILIES}
        self._sync = WriteOptions()
        self._sync.sync = True
        self._closed = False

    @staticmethod
    def _options() -> Options:
        o = Options(raw_mode=True)
        o.set_max_open_files(256)
        return o

    # -------------------------------------------------------------- reads
    def get(self, cf: str, key: bytes) -> bytes | None:
        try:
            return self._cfs[cf].get(key)
        except Exception as e:
            raise StorageFailure(f"read from {cf} failed: {e}") from e

    def get_many(self, cf: str, keys: list[bytes]) -> list[bytes | None]:
        try:
            return self._cfs[cf].get(keys)
        except Exception as e:
            raise StorageFailure(f"read from {cf} failed: {e}") from e

    def items(
        self, cf: str, start: bytes = b"", end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Key-ordered items with start <= key < end."""
        it = self._cfs[cf].iter()
        if start:
            it.seek(start)
        else:
            it.seek_to_first()
        while it.valid():
            k = it.key()
            if end is not None and k >= end:
                return
            yield k, it.value()
            it.next()

    def count(self, cf: str) -> int:
        return sum(1 for _ in self.items(cf))

    # -------------------------------------------------------------- writes
    def batch(self) -> Batch:
        return Batch(self)

    def write(self, batch: Batch) -> None:
        """One atomic, synced write of the whole batch."""
        if batch.count == 0:
            return
        try:
            self._db.write(batch._wb, self._sync)
        except Exception as e:
            raise StorageFailure(f"write of {batch.count} changes failed: {e}") from e

    def put(self, cf: str, key: bytes, value: bytes) -> None:
        b = self.batch()
        b.put(cf, key, value)
        self.write(b)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cfs.clear()
        self._handles.clear()
        try:
            self._db.close()
        except Exception as e:
            raise StorageFailure(f"close failed: {e}") from e
        del self._db

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
