"""`NationalView`: the view over a set of records, in memory or in a store;
`resolve`, `catch_up` and `rebuild_from_ledger`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from keys.consortium import Consortium
from ledger import derived, viewtree
from ledger.record import Record
from ledger.view.build import EntryBuilder
from ledger.view.checkpoint import ViewCheckpoint, vector_items
from ledger.view.entries import Entry
from ledger.view.resolution import Resolution
from ledger.view.state import MemoryState, ViewState
from ledger.view.stored import StoredState
from ledger.view.update import Changed, apply_records
from ledger.viewtree import ViewProof, view_key

if TYPE_CHECKING:
    from ledger.log import NodeLedger
    from ledger.store import Batch, Store


class NationalView:
    """The national view over a set of records, kept incrementally.

    `apply` may be called with any records in any order and any batching; the
    entries and the root depend only on the set applied. Corrections and
    decisions whose target is not applied yet wait (see `waiting`) and take
    effect when it arrives. Not thread-safe; the node serializes apply().

    Without a store the view lives in memory (resolve(), tests, auditors).
    With a store (`NationalView.open(store, consortium)`) its state lives in
    the store's view* column families and survives restarts: only the bucket
    tree's dense top (2**bits hashes at its lowest level) stays in memory, and
    each apply() is one atomic (unsynced) batch that also records the new
    vector. Both run the same apply (ledger/view/update.py). See docs/view.md."""

    def __init__(self, consortium: Consortium, store: Store | None = None,
                 journal: bool = True) -> None:
        self.consortium = consortium
        # The height of the dense in-memory top; the root does not depend on it.
        self.bucket_bits = min(consortium.policy.view_bucket_bits, viewtree.MAX_TOP_BITS)
        self._builder = EntryBuilder(consortium)
        self._state: ViewState = (
            MemoryState(self.bucket_bits) if store is None
            else StoredState(store, consortium, self.bucket_bits, journal)
        )
        self._stored = store is not None

    @classmethod
    def open(cls, store: Store, consortium: Consortium, journal: bool = True) -> NationalView:
        """The store-backed view kept in `store` (empty if the store holds none,
        or one computed under another view configuration). Bring it up to the
        ledger with `catch_up`. `journal`: write the change journal (False for
        a store in which nothing derives data from it: no screen rows)."""
        return cls(consortium, store, journal)

    # ------------------------------------------------------------ reads
    @property
    def stored(self) -> bool:
        """True when the view's state lives in a store."""
        return self._stored

    def root(self) -> bytes:
        return self._state.tree.root()

    @property
    def count(self) -> int:
        return self._state.count

    @property
    def entries(self) -> Mapping[str, Entry]:
        """The entries by number (store-backed: read and decoded on access)."""
        return self._state.entry_map()

    @property
    def vector(self) -> dict[str, int]:
        """Per participant, the highest seq applied (the caller applies whole
        feed prefixes, so this is the vector the view stands for)."""
        return dict(self._state.vector)

    @property
    def ignored(self) -> int:
        """How many distinct records applied resolution ignores (see docs/view.md)."""
        return self._state.ignored

    @property
    def waiting(self) -> dict[bytes, tuple[bytes, ...]]:
        """Target record id -> the corrections or decisions waiting for it.
        (Store-backed: a scan of the record index, for diagnostics and tests.)"""
        return self._state.waiting()

    def entry(self, number: str) -> Entry | None:
        """The number's entry, or None. Raises StorageFailure for stored bytes
        that do not decode."""
        return self._state.entry(number)

    def entry_bytes(self, number: str) -> bytes | None:
        """The entry's canonical bytes (what a lookup serves), or None."""
        return self._state.entry_bytes(number)

    def entries_bytes(self, numbers: Sequence[str]) -> list[bytes | None]:
        """entry_bytes of each number, in one multi-get for a stored view."""
        return self._state.entries_bytes(numbers)

    def lookup(self, number: str, at_ms: int) -> Resolution | None:
        e = self.entry(number)
        return None if e is None else e.evaluate(at_ms)

    def numbers(self) -> Iterator[str]:
        """Every number with an entry, in order."""
        return self._state.numbers()

    def proof(self, number: str) -> ViewProof:
        """The proof for `number`'s entry, or for its absence: no other number,
        no key of another number (unless it shares all 64 bits of position)."""
        key = view_key(number)
        pos = viewtree.position(key)
        b = pos >> (viewtree.DEPTH - self.bucket_bits)
        state = self._state
        below, slot = viewtree.bucket_path(state.bucket_slots(b), self.bucket_bits, pos)
        bitmap = 0
        siblings = []
        for bit, h in below + state.tree.path(b):     # the top's depths are their bits
            bitmap |= 1 << (viewtree.BITMAP_BITS - 1 - bit)
            siblings.append(h)
        listed = () if slot is None else tuple(m for m in slot.members if m[0] != key)
        return ViewProof(listed, bitmap, tuple(siblings))

    def checkpoint(self, origin: str, signed_at_ms: int) -> ViewCheckpoint:
        """The view's checkpoint as `origin` signs it at `signed_at_ms`."""
        return ViewCheckpoint(
            origin, vector_items(self._state.vector), self.count, self.root(), signed_at_ms
        )

    # ------------------------------------------------------------ writes
    def apply(self, records: Iterable[Record]) -> Changed:
        """Add records; recompute only the numbers they touch. Returns the
        numbers whose entry changed (appeared, went, or got different bytes),
        a set that also holds their new entries (`Changed.entries`).
        Store-backed: one atomic unsynced write, vector included; raises
        StorageFailure (and changes nothing) when the store fails."""
        return apply_records(self._state, list(records), self._builder, self.bucket_bits)

    def clear(self) -> None:
        """Forget every record (store-backed: empty the view's families, in one write)."""
        self._state.clear()

    def save_changes(self, batch: Batch, numbers: Iterable[str]) -> None:
        """Put the entries of `numbers` (what `apply` returned) into the store's
        "view" column family (key: the number, value: the entry bytes) in the
        caller's batch; a number without an entry is deleted. (A store-backed
        view already wrote them in apply; this copies them again.)"""
        for number in numbers:
            raw = self.entry_bytes(number)
            if raw is None:
                batch.delete("view", number.encode("utf-8"))
            else:
                batch.put("view", number.encode("utf-8"), raw)


def resolve(records: Iterable[Record], consortium: Consortium) -> NationalView:
    """The national view of a set of records (order and duplicates do not matter)."""
    view = NationalView(consortium)
    view.apply(records)
    return view


def catch_up(view: NationalView, ledger: NodeLedger, batch_size: int = 1000) -> int:
    """Bring `view` to the ledger (ledger/derived.py: each feed above the
    view's vector up to its counted seq; a view ahead of a frozen feed is
    cleared and rebuilt). Returns how many records were applied. Raises
    StorageFailure for stored records that do not parse or a feed shorter
    than its head says."""
    return derived.catch_up(view, ledger, batch_size)


def rebuild_from_ledger(
    ledger: NodeLedger, batch_size: int = 1000, view: NationalView | None = None
) -> NationalView:
    """The view of every feed up to its counted seq (a frozen feed stops at
    its freeze), read from the ledger's store in batches: into a new
    in-memory view, or into `view` after clearing it (store-backed: its
    families are emptied, then refilled batch by batch)."""
    if view is None:
        view = NationalView(ledger.consortium)
    else:
        view.clear()
    catch_up(view, ledger, batch_size)
    return view
