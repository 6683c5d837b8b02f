"""Where a view's state lives: the interface the one apply algorithm
(ledger/view/update.py) runs over, and the in-memory state.

A state holds, per record id, what the view knows of the record (a fact, or
ignored), per record id the corrections and decisions naming it (its
referrers), per number its entry, per bucket of the view tree its occupied
positions (`viewtree.Slot`), the tree's dense top, the vector, the entry count
and the ignored count. `MemoryState` keeps them in dicts; `StoredState`
(ledger/view/stored.py) in the store's view* families, writing one apply's
changes in one batch at `commit`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from ledger import viewtree
from ledger.view.entries import Entry
from ledger.view.facts import ComplaintFact, CorrectionFact, Fact, MarkFact, ReassignmentFact
from ledger.viewtree import Slot


@dataclass(frozen=True)
class Held:
    """A number's entry before an apply: its bytes, and the facts it keeps (its
    marks and reassignments, the ids of its appeals)."""

    entry: bytes
    marks: list[MarkFact]
    reassignments: list[ReassignmentFact]
    appeals: list[bytes]
    complaints: list[ComplaintFact] = field(default_factory=list)


class ViewState(Protocol):
    """What a view reads and the apply algorithm changes. Between `begin` and
    `commit` the changes put are visible to the reads of the same apply; a
    stored state makes them durable only at `commit` (and a failed apply is
    forgotten at the next `begin`)."""

    tree: viewtree.TopTree
    vector: dict[str, int]          # per issuer, the highest seq applied
    count: int                      # numbers with an entry
    ignored: int                    # distinct records resolution ignores

    # ---- the record index
    def begin(self, ids: Iterable[bytes]) -> None:
        """Start an apply of the records `ids` (a stored state reads them at once)."""
        ...

    def seen(self, rid: bytes) -> bool:
        """Applied before, as a fact or ignored (a record only named is not)."""
        ...

    def known(self, rid: bytes) -> bool:
        """Applied as a fact."""
        ...

    def mark(self, rid: bytes) -> MarkFact | None: ...

    def mark_number(self, rid: bytes) -> str | None:
        """The number of mark `rid`, or None when `rid` is not a known mark."""
        ...

    def correction(self, rid: bytes) -> CorrectionFact | None:
        """The correction or decision `rid`, or None when it is not one."""
        ...

    def referrers(self, target: bytes) -> list[CorrectionFact]:
        """The corrections and decisions naming `target` that are remembered."""
        ...

    def has_referrers(self, target: bytes) -> bool: ...

    def put_fact(self, fact: Fact) -> None: ...

    def put_ignored(self, rid: bytes) -> None: ...

    def add_referrer(self, target: bytes, referrer: bytes) -> None: ...

    def drop_referrer(self, target: bytes, referrer: bytes) -> None:
        """Forget that `referrer` names `target` (no entry depends on it)."""
        ...

    # ---- entries and the tree
    def held(self, numbers: Sequence[str]) -> list[Held | None]:
        """What each number's entry holds now (None: no entry)."""
        ...

    def put_entry(self, number: str, entry: Entry | None) -> None: ...

    def bucket_slots(self, b: int) -> list[Slot]:
        """The occupied positions of bucket `b`, sorted."""
        ...

    def buckets(self, bs: Sequence[int]) -> list[list[Slot]]:
        """`bucket_slots` of each of `bs`, read together (an apply reads every
        bucket it changes at once)."""
        ...

    def put_bucket(self, b: int, slots: list[Slot], top: bytes) -> None:
        """Bucket `b` is now `slots` (sorted) with subtree hash `top`."""
        ...

    def commit(self, vector: dict[str, int], count: int, ignored: int,
               tops: dict[int, bytes]) -> None:
        """End the apply: the new vector and counts, and the buckets' new hashes."""
        ...

    # ---- reads
    def entry(self, number: str) -> Entry | None: ...

    def entry_bytes(self, number: str) -> bytes | None: ...

    def entries_bytes(self, numbers: Sequence[str]) -> list[bytes | None]: ...

    def entry_map(self) -> Mapping[str, Entry]:
        """The entries by number (a stored state reads each on access)."""
        ...

    def numbers(self) -> Iterator[str]:
        """Every number with an entry, in order."""
        ...

    def waiting(self) -> dict[bytes, tuple[bytes, ...]]:
        """Record id not applied as a fact -> the remembered referrers naming it."""
        ...

    def clear(self) -> None:
        """Forget every record."""
        ...


class MemoryState:
    """A view's state in memory (resolve, tests, auditors)."""

    def __init__(self, bucket_bits: int) -> None:
        self.bucket_bits = bucket_bits
        self.clear()

    def clear(self) -> None:
        self._facts: dict[bytes, Fact] = {}
        self._ignored: set[bytes] = set()
        self._refs: dict[bytes, dict[bytes, None]] = {}     # target -> referrers (ordered)
        self.entries: dict[str, Entry] = {}
        self._buckets: dict[int, list[Slot]] = {}
        self.tree = viewtree.TopTree(self.bucket_bits)
        self.vector: dict[str, int] = {}
        self.count = 0
        self.ignored = 0

    # ---- the record index
    def begin(self, ids: Iterable[bytes]) -> None:
        del ids                     # nothing to read ahead

    def seen(self, rid: bytes) -> bool:
        return rid in self._facts or rid in self._ignored

    def known(self, rid: bytes) -> bool:
        return rid in self._facts

    def mark(self, rid: bytes) -> MarkFact | None:
        f = self._facts.get(rid)
        return f if isinstance(f, MarkFact) else None

    def mark_number(self, rid: bytes) -> str | None:
        f = self._facts.get(rid)
        return f.number if isinstance(f, MarkFact) else None

    def correction(self, rid: bytes) -> CorrectionFact | None:
        f = self._facts.get(rid)
        return f if isinstance(f, CorrectionFact) else None

    def referrers(self, target: bytes) -> list[CorrectionFact]:
        facts = self._facts
        out = []
        for r in self._refs.get(target, ()):
            f = facts[r]
            assert isinstance(f, CorrectionFact)
            out.append(f)
        return out

    def has_referrers(self, target: bytes) -> bool:
        return target in self._refs

    def put_fact(self, fact: Fact) -> None:
        self._facts[fact.id] = fact

    def put_ignored(self, rid: bytes) -> None:
        self._ignored.add(rid)

    def add_referrer(self, target: bytes, referrer: bytes) -> None:
        self._refs.setdefault(target, {})[referrer] = None

    def drop_referrer(self, target: bytes, referrer: bytes) -> None:
        refs = self._refs.get(target)
        if refs is not None:
            refs.pop(referrer, None)
            if not refs:
                del self._refs[target]

    # ---- entries and the tree
    def held(self, numbers: Sequence[str]) -> list[Held | None]:
        out: list[Held | None] = []
        facts = self._facts
        for n in numbers:
            e = self.entries.get(n)
            if e is None:
                out.append(None)
                continue
            # Every fact an entry keeps is in the index: memory forgets no fact.
            marks = [f for f in (facts[m.id] for m in e.marks) if isinstance(f, MarkFact)]
            reassigns = [
                f for f in (facts[r.id] for r in e.reassignments)
                if isinstance(f, ReassignmentFact)
            ]
            complaints = [f for f in (facts[c.id] for c in e.complaints)
                          if isinstance(f, ComplaintFact)]
            out.append(Held(e.encode(), marks, reassigns, [a.id for a in e.appeals], complaints))
        return out

    def put_entry(self, number: str, entry: Entry | None) -> None:
        if entry is None:
            del self.entries[number]
        else:
            self.entries[number] = entry

    def bucket_slots(self, b: int) -> list[Slot]:
        return self._buckets.get(b, [])

    def buckets(self, bs: Sequence[int]) -> list[list[Slot]]:
        return [self._buckets.get(b, []) for b in bs]

    def put_bucket(self, b: int, slots: list[Slot], top: bytes) -> None:
        if slots:
            self._buckets[b] = slots
        else:
            self._buckets.pop(b, None)

    def commit(self, vector: dict[str, int], count: int, ignored: int,
               tops: dict[int, bytes]) -> None:
        self.tree.update(tops)
        self.vector = vector
        self.count = count
        self.ignored = ignored

    # ---- reads
    def entry(self, number: str) -> Entry | None:
        return self.entries.get(number)

    def entry_bytes(self, number: str) -> bytes | None:
        e = self.entries.get(number)
        return None if e is None else e.encode()

    def entries_bytes(self, numbers: Sequence[str]) -> list[bytes | None]:
        return [self.entry_bytes(n) for n in numbers]

    def entry_map(self) -> Mapping[str, Entry]:
        return MappingProxyType(self.entries)

    def numbers(self) -> Iterator[str]:
        return iter(sorted(self.entries))

    def waiting(self) -> dict[bytes, tuple[bytes, ...]]:
        return {
            t: tuple(sorted(refs)) for t, refs in self._refs.items() if t not in self._facts
        }
