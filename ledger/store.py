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
    viewix         record id (32)             -> what the view knows of the record
    viewref        target id || referrer id   -> b"" (corrections and decisions naming it)
    viewbucket     bucket (4, BE)             -> tree leaves: rows of key || entry hash || cache
    viewbuckethash bucket (4, BE)             -> subtree hash below the view tree's top (non-empty)
    viewmeta       name                       -> the view's vector, count, config
    consent        sealed subscriber          -> its kept preferences and reassignments
    consentline    record id (32)             -> a marketer line's (de)registration
    consentmeta    name                       -> the consent state's vector and key id
    screenix       E.164 number               -> the screen's summary of its view entry
    viewchanged    E.164 number | b"*"        -> b"": an entry changed since the screen's
                                                 index took it ("*": every entry may have)
    complaints     record id (32)             -> a complaint, handling or sanction envelope
    complaintmeta  name                       -> the complaint state's vector and config
    issuekeys      idempotency key (<= 128)   -> content digest (32) || record id (32): an own
                                                 record's key, written in the record's batch
    meta           name                       -> small values (log size, ...)

The view* families belong to ledger/view/'s store-backed NationalView
(docs/view.md, "Persistence"); it writes them in its own atomic batches. The
consent* families are ledger/consent/'s StoredConsent's, written likewise; the
complaint* families ledger/complaints/'s StoredComplaints'; screenix is
node/screenindex.py's (derived data checked on every read).

Everything one accepted batch changes goes into one WriteBatch, written and
then synced before the write returns: an acknowledged record survives kill -9
and power loss, and a crash never leaves half a batch behind.

How it is synced matters for a node's latency. RocksDB's `sync=True` write
keeps Python's GIL through the fsync (rocksdict does not release it there), so
every other thread of the node (gRPC handlers, pushes to peers) stops for the
length of a disk flush, each time. Instead the batch is written to the WAL
unsynced (it reaches the OS at once, so kill -9 cannot lose it) and then
`flush_wal(sync=True)` syncs the WAL (RocksDB's SyncWAL, which also syncs
earlier WAL files and the WAL directory) with the GIL released. The call
returns only after the sync, so the durability is that of `sync=True`.

A failed write or sync leaves the store failed: the batch may be in the
memtable and the WAL without being durable, so the store refuses every later
write (StorageFailure "... restart the node") and says so (`failed`), and the
ledger refuses to call anything a duplicate of what it may hold unsynced.
Only a restart (which replays the WAL that did reach the disk) clears it.

A running node's store may also be opened by other processes as RocksDB
secondary instances (`Store(path, secondary=DIR)`, node/workers.py): they
never write, and see the primary's writes, synced or not, as of their last
`catch_up()`; `primary_moved()` says, from a directory listing, whether a
catch-up would read anything (RocksDB's own costs milliseconds even then).

A write may also ask for no sync (`sync=False`): used for derived state that
is rebuilt from the ledger after a crash (the view) and for what is collected
again (cosignatures of our own checkpoints). Such a write still lands in the
WAL in order, so the next synced write makes it durable too.
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch, WriteOptions

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
    "viewix",
    "viewref",
    "viewbucket",
    "viewbuckethash",
    "viewmeta",
    "consent",
    "consentline",
    "consentmeta",
    "complaints",
    "complaintmeta",
    "screenix",
    "issuekeys",
    "viewchanged",
)

# Families that only the view writes: small memtables, so a large view does not
# hold hundreds of MB of unflushed writes in memory (the view is rebuilt from
# the ledger if it is ever lost, and its batches are synced like the ledger's).
VIEW_FAMILIES = ("view", "viewix", "viewref", "viewbucket", "viewbuckethash", "viewmeta")
# The consent state's (ledger/consent/state.py): derived like the view, tuned alike.
CONSENT_FAMILIES = ("consent", "consentline", "consentmeta")
# The complaint state's (ledger/complaints/stored.py): derived too.
COMPLAINT_FAMILIES = ("complaints", "complaintmeta")
# The screen's summaries of view entries (ledger/view/summary.py): derived,
# checked against the entry on every read, so never synced nor rebuilt in a hurry.
# viewchanged: written by the view in its own batches (ledger/view/stored.py),
# emptied by the screen's index as its rows catch up (node/screenindex.py).
SCREEN_FAMILIES = ("screenix", "viewchanged")
VIEW_WRITE_BUFFER = 8 << 20
# Families read by random key (a record by its id: the audit reads them in log
# order, ingest asks for ids that are mostly absent): a Bloom filter per table
# lets a read skip the tables that cannot hold the key (~10 bits a key).
POINT_READ_FAMILIES = ("records", "feedseq")
# One block cache for every family, so the cache does not grow per family.
BLOCK_CACHE_BYTES = 64 << 20

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

    def put_all(self, cf: str, items: Iterable[tuple[bytes, bytes]]) -> None:
        """`put` of each (key, value) of `items` into `cf`, in order (the
        family looked up once: a group commit puts thousands)."""
        put, handle = self._wb.put, self._store._handles[cf]
        n = 0
        for key, value in items:
            put(key, value, handle)
            n += 1
        self.count += n

    def delete(self, cf: str, key: bytes) -> None:
        self._wb.delete(key, self._store._handles[cf])
        self.count += 1

    def delete_range(self, cf: str, start: bytes, end: bytes) -> None:
        """Delete every key with start <= key < end."""
        self._wb.delete_range(start, end, self._store._handles[cf])
        self.count += 1


class Store:
    def __init__(
        self,
        path: Path | str,
        *,
        read_only: bool = False,
        cache_bytes: int = BLOCK_CACHE_BYTES,
        secondary: Path | str | None = None,
        cache: Cache | None = None,
    ) -> None:
        """The store at `path`: the primary (read and write), or `read_only`
        (a stopped node's files), or a RocksDB secondary instance of a running
        primary (`secondary`: a folder of its own for the secondary's info
        log), which reads what the primary wrote as of its last `catch_up()`.
        `cache`: a block cache shared with other stores (two secondaries of
        one primary read the same table files, so one's reads warm the
        other's), instead of one of `cache_bytes` of its own."""
        self.path = Path(path)
        self.secondary = None if secondary is None else Path(secondary)
        self._cache = Cache(cache_bytes) if cache is None else cache
        opts = self._options()
        read_only = read_only or secondary is not None
        opts.create_if_missing(not read_only)
        opts.create_missing_column_families(not read_only)
        names = COLUMN_FAMILIES
        try:
            if self.secondary is not None:
                names, self._db = self._open_secondary(opts, self.secondary)
            elif read_only:
                from rocksdict import AccessType

                # A store written by an older version lacks the newer families:
                # open what exists; the missing ones read as empty.
                have = set(Rdict.list_cf(str(self.path)))
                names = tuple(n for n in COLUMN_FAMILIES if n in have)
                cfs = {name: self._options(name) for name in names}
                self._db = Rdict(
                    str(self.path),
                    opts,
                    column_families=cfs,
                    access_type=AccessType.read_only(),
                )
            else:
                self.path.mkdir(parents=True, exist_ok=True)
                cfs = {name: self._options(name) for name in names}
                self._db = Rdict(str(self.path), opts, column_families=cfs)
        except Exception as e:  # rocksdict raises plain Exception
            raise StorageFailure(f"cannot open the store at {self.path}: {e}") from e
        self._cfs = {name: self._db.get_column_family(name) for name in names}
        self._handles = {name: self._db.get_column_family_handle(name) for name in names}
        self._unsynced = WriteOptions()
        self._unsynced.sync = False
        self._closed = False
        # A secondary: the primary's files as listed at the last catch-up (catch_up).
        self._caught_up_to: tuple[tuple[str, int, int], ...] | None = None
        self._failure: str | None = None  # why a write or sync failed; set once, never cleared

    def _open_secondary(self, opts: Options, secondary: Path) -> tuple[tuple[str, ...], Rdict]:
        """RocksDB's secondary mode: it keeps every table file open
        (max_open_files -1, which the mode requires) and tails the primary's
        MANIFEST and WAL at each catch_up()."""
        from rocksdict import AccessType

        secondary.mkdir(parents=True, exist_ok=True)
        opts.set_max_open_files(-1)
        have = set(Rdict.list_cf(str(self.path)))
        names = tuple(n for n in COLUMN_FAMILIES if n in have)
        cfs = {}
        for name in names:
            cfs[name] = self._options(name)
            cfs[name].set_max_open_files(-1)
        db = Rdict(str(self.path), opts, column_families=cfs,
                   access_type=AccessType.secondary(str(secondary)))
        return names, db

    def catch_up(self) -> None:
        """A secondary: read what the primary has written since the last call
        (its flushed tables and its WAL, synced or not). StorageFailure when
        the primary's files cannot be read; ValueError on a primary store."""
        if self.secondary is None:
            raise ValueError("only a secondary store catches up with its primary")
        try:
            # Listed before the catch-up: a write landing during it changes the
            # listing again, so primary_moved() says so after.
            files = self._primary_files()
            self._db.try_catch_up_with_primary()
        except Exception as e:  # rocksdict raises plain Exception; OSError from the listing
            raise StorageFailure(f"the secondary cannot catch up with {self.path}: {e}") from e
        self._caught_up_to = files

    def primary_moved(self) -> bool:
        """A secondary: False when a catch_up() now would read nothing new:
        none of the files a write or a flush changes (the WALs, the MANIFEST,
        CURRENT) changed since the last one, which one directory listing
        tells (RocksDB's own catch-up costs milliseconds even then). True
        before the first catch_up(). StorageFailure when the listing fails."""
        if self.secondary is None:
            raise ValueError("only a secondary store follows a primary")
        try:
            return self._primary_files() != self._caught_up_to
        except OSError as e:
            raise StorageFailure(f"cannot list the primary's files at {self.path}: {e}") from e

    def _primary_files(self) -> tuple[tuple[str, int, int], ...]:
        """(name, size, mtime) of the primary's WALs, MANIFEST and CURRENT:
        every write appends to the WAL (unsynced ones too: they reach the OS
        at once), a flush or compaction to the MANIFEST, a new WAL is a new name."""
        out = []
        with os.scandir(self.path) as it:
            for e in it:
                n = e.name
                if n.endswith(".log") or n.startswith("MANIFEST-") or n == "CURRENT":
                    st = e.stat()
                    out.append((n, st.st_size, st.st_mtime_ns))
        return tuple(sorted(out))

    def _options(self, family: str | None = None) -> Options:
        o = Options(raw_mode=True)
        o.set_max_open_files(256)
        table = BlockBasedOptions()
        table.set_block_cache(self._cache)
        derived = (family in VIEW_FAMILIES or family in CONSENT_FAMILIES
                   or family in COMPLAINT_FAMILIES or family in SCREEN_FAMILIES)
        if derived or family in POINT_READ_FAMILIES:
            table.set_bloom_filter(10, False)  # most view reads ask for keys that are absent
        if derived:
            o.set_write_buffer_size(VIEW_WRITE_BUFFER)
            # A Bloom filter over the memtable's whole keys too (a tenth of
            # its size): an apply's multi-gets of absent keys (new numbers,
            # their facts) skip the skip list. view_update's CPU a record, five
            # A/B pairs under load in the ninth session (a one-off harness):
            # 70-87 µs against 81-115 without; no gain on a bulk import.
            o.set_memtable_whole_key_filtering(True)
            o.set_memtable_prefix_bloom_ratio(0.1)
        o.set_block_based_table_factory(table)
        return o

    # -------------------------------------------------------------- reads
    def get(self, cf: str, key: bytes) -> bytes | None:
        if cf not in self._cfs and cf in COLUMN_FAMILIES:
            return None  # read-only store of an older version
        try:
            return self._cfs[cf].get(key)
        except Exception as e:
            raise StorageFailure(f"read from {cf} failed: {e}") from e

    def get_many(self, cf: str, keys: list[bytes]) -> list[bytes | None]:
        if cf not in self._cfs and cf in COLUMN_FAMILIES:
            return [None] * len(keys)
        try:
            if len(keys) == 1:      # a point read: RocksDB's multi-get costs more for one key
                return [self._cfs[cf].get(keys[0])]
            return self._cfs[cf].get(keys)
        except Exception as e:
            raise StorageFailure(f"read from {cf} failed: {e}") from e

    def items(
        self, cf: str, start: bytes = b"", end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Key-ordered items with start <= key < end."""
        for k, v in self.scan_iter(cf, start):
            if end is not None and k >= end:
                return
            yield k, v

    def scan(self, cf: str, start: bytes, n: int) -> list[tuple[bytes, bytes]]:
        """The first n items (fewer at the end) with key >= start, in key order:
        one native iteration, for reading runs of adjacent keys."""
        return list(itertools.islice(self.scan_iter(cf, start), n))

    def scan_iter(self, cf: str, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every item with key >= start, in key order (a native iterator:
        take what is needed with itertools.islice)."""
        if cf not in self._cfs and cf in COLUMN_FAMILIES:
            return iter(())
        try:
            return iter(self._cfs[cf].items(from_key=start))
        except Exception as e:
            raise StorageFailure(f"read from {cf} failed: {e}") from e

    def count(self, cf: str) -> int:
        """Keys in the family (a scan of the keys alone)."""
        if cf not in self._cfs and cf in COLUMN_FAMILIES:
            return 0
        try:
            return sum(1 for _ in self._cfs[cf].keys())  # noqa: SIM118 - an Rdict, not a dict
        except Exception as e:
            raise StorageFailure(f"read from {cf} failed: {e}") from e

    # -------------------------------------------------------------- writes
    @property
    def failed(self) -> str | None:
        """Why an earlier write or sync failed, or None while the store is healthy."""
        return self._failure

    def check_writable(self) -> None:
        """Raise StorageFailure when an earlier write or sync failed (see the module doc)."""
        if self._failure is not None:
            raise StorageFailure(
                f"the store stopped taking writes after a failure ({self._failure}); "
                "restart the node"
            )

    def batch(self) -> Batch:
        return Batch(self)

    def write(self, batch: Batch, *, sync: bool = True) -> None:
        """One atomic write of the whole batch; synced to disk before it
        returns unless sync=False (see the module doc). After any failure
        every later write raises StorageFailure until the store is reopened."""
        if batch.count == 0:
            return
        self.check_writable()
        try:
            self._db.write(batch._wb, self._unsynced)
            if sync:
                self._db.flush_wal(True)
        except Exception as e:
            self._failure = f"write of {batch.count} changes failed: {e}"
            raise StorageFailure(f"{self._failure}; restart the node") from e

    def put(self, cf: str, key: bytes, value: bytes, *, sync: bool = True) -> None:
        b = self.batch()
        b.put(cf, key, value)
        self.write(b, sync=sync)

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
