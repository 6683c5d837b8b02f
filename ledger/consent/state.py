"""The consent state: a pure function of the set of records (docs/consent.md).

`ConsentState` is the one apply algorithm; `MemoryConsent` keeps it in
memory (tests, auditors), `StoredConsent` in the node's store:

    consent      sealed subscriber     -> its entry (codec.encode_subscriber)
    consentline  record id (32)        -> a registration or a deregistration
    consentmeta  b"vector"             -> JSON {issuer: seq} the state covers
                 b"key"                -> the members' key id the state was built with

Each apply is one atomic unsynced batch (like the view's: the state is
rebuilt from the ledger if a crash loses it, `catch_up`). Lines are few:
all of them are held in memory too, and `line_at` reads no store.

The state counts every record it is given: it is given what the ledger
accepted (the issuer rule, `ledger.payloads.check_issuer`, and the time
bounds, `ledger.rules`, were checked then), so a preference a carrier issued
before its subscriber ported away keeps counting (rule 9).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from ledger import derived
from ledger.consent import rules as R
from ledger.consent.codec import decode_line, decode_subscriber, encode_line, encode_subscriber
from ledger.consent.facts import Deregistration, LineFact, PreferenceFact, Subscriber
from ledger.errors import StorageFailure
from ledger.payloads.line import MarketerLine
from ledger.payloads.preference import Preference
from ledger.payloads.reassignment import Reassignment
from ledger.record import Record
from ledger.store import CONSENT_FAMILIES

if TYPE_CHECKING:
    from ledger.log import NodeLedger
    from ledger.sealing import MembersKey
    from ledger.store import Store

_VECTOR = b"vector"
_KEY = b"key"


class ConsentState:
    """The consent state over a backing (in memory or in a store). A
    ConsentReader (`preference_at`, `line_at`) and what the effect checks
    read (`subscriber`, `line`, `lines_overlapping`). Reads may run on other
    threads while one writer applies."""

    def __init__(self, key: MembersKey) -> None:
        self.key = key  # seals a reassignment's number to find its subscriber
        self.vector: dict[str, int] = {}
        self._regs: dict[bytes, LineFact] = {}
        self._deregs: dict[bytes, Deregistration] = {}
        self._lines = R.LineIndex({})

    # ------------------------------------------------------------ backing
    def _get(self, sealed: bytes) -> Subscriber | None:
        raise NotImplementedError

    def _get_many(self, sealed: list[bytes]) -> list[Subscriber | None]:
        return [self._get(k) for k in sealed]

    def _commit(self, subs: dict[bytes, Subscriber],
                lines: Sequence[LineFact | Deregistration], vector: dict[str, int]) -> None:
        raise NotImplementedError

    def clear(self) -> None:
        """Forget everything (a rebuild follows)."""
        self.vector = {}
        self._regs, self._deregs = {}, {}
        self._lines = R.LineIndex({})

    # ------------------------------------------------------------ reads
    def preference_at(self, sealed: bytes, at_ms: int) -> PreferenceFact | None:
        """The preference in force for the sealed subscriber at `at_ms` (rules
        2-4), a revocation included, or None. One read, one decode."""
        return R.in_force(self._get(sealed), at_ms)

    def preferences_at(self, sealed: list[bytes], at_ms: list[int]
                       ) -> list[PreferenceFact | None]:
        """`preference_at` of each pair, in order, the subscribers read at once."""
        return [R.in_force(sub, t) for sub, t in zip(self._get_many(sealed), at_ms, strict=True)]

    def line_at(self, number: str, at_ms: int) -> LineFact | None:
        """The registration holding `number` at `at_ms` (rule 7), from memory."""
        return self._lines.line_at(number, at_ms)

    def line_reader(self) -> Callable[[str, int], LineFact | None]:
        """`line_at` of the registrations as they are now (a later change of
        the lines is not seen by it)."""
        return self._lines.line_at

    def subscriber(self, sealed: bytes) -> Subscriber:
        """What the state keeps of the subscriber (rule 6)."""
        return self._get(sealed) or Subscriber()

    def line(self, rid: bytes) -> LineFact | None:
        """The registration with record id `rid`, its end resolved (rule 8), or None."""
        return self._lines.by_id.get(rid)

    def lines_overlapping(self, number: str, prefix: bool, at_ms: int) -> list[LineFact]:
        return self._lines.overlapping(number, prefix, at_ms)

    def line_records(self) -> tuple[list[LineFact], list[Deregistration]]:
        """The registrations (as recorded) and deregistrations the state counts."""
        return list(self._regs.values()), list(self._deregs.values())

    def lines(self) -> list[LineFact]:
        """Every registration, its end resolved, in issue order."""
        return sorted(self._lines.by_id.values(), key=R.line_order)

    # ------------------------------------------------------------ apply
    def apply(self, records: Iterable[Record]) -> None:
        """Count `records` (any order, any batches, duplicates: the same state).
        Raises StorageFailure; a stored state then changes nothing."""
        vector = dict(self.vector)
        subs: dict[bytes, Subscriber] = {}
        new_lines: list[LineFact | Deregistration] = []
        seen: set[bytes] = set()
        for rec in records:
            if rec.seq > vector.get(rec.issuer, 0):
                vector[rec.issuer] = rec.seq
            p = rec.payload
            if isinstance(p, Preference):
                sealed, pref, re = p.subscriber, (R.preference_fact(rec),), ()
            elif isinstance(p, Reassignment):
                sealed, pref, re = self.key.seal(p.number), (), ((p.effective_at_ms, rec.id),)
            elif isinstance(p, MarketerLine):
                if rec.id not in self._regs and rec.id not in self._deregs and rec.id not in seen:
                    seen.add(rec.id)
                    new_lines.append(
                        R.deregistration(rec) if p.is_deregistration else R.line_fact(rec)
                    )
                continue
            else:
                continue
            old = subs[sealed] if sealed in subs else self._get(sealed)
            subs[sealed] = R.merge(old, pref, re)
        self._commit(subs, new_lines, vector)
        self.vector = vector  # memory moves on only after the write succeeded
        if new_lines:
            regs, deregs = dict(self._regs), dict(self._deregs)
            for f in new_lines:
                (deregs if isinstance(f, Deregistration) else regs)[f.id] = f  # type: ignore[index]
            self._regs, self._deregs = regs, deregs
            self._lines = R.resolve_lines(regs.values(), deregs.values())


class MemoryConsent(ConsentState):
    """The consent state in memory (tests, auditors)."""

    def __init__(self, key: MembersKey) -> None:
        super().__init__(key)
        self._subs: dict[bytes, Subscriber] = {}

    def _get(self, sealed: bytes) -> Subscriber | None:
        return self._subs.get(sealed)

    def _commit(self, subs: dict[bytes, Subscriber],
                lines: Sequence[LineFact | Deregistration], vector: dict[str, int]) -> None:
        self._subs.update(subs)

    def clear(self) -> None:
        super().clear()
        self._subs = {}


class StoredConsent(ConsentState):
    """The consent state in the node's store (the consent* families)."""

    def __init__(self, store: Store, key: MembersKey) -> None:
        super().__init__(key)
        self.store = store
        if store.get("consentmeta", _KEY) not in (None, key.id):
            self.clear()  # built with another members' key: its reassignments are sealed wrong
            return
        raw = store.get("consentmeta", _VECTOR)
        if raw is not None:
            try:
                self.vector = {str(k): int(v) for k, v in json.loads(raw).items()}
            except (ValueError, AttributeError) as e:
                raise StorageFailure(f"the stored consent vector does not parse: {e}") from e
        for _, v in store.items("consentline"):
            f = decode_line(v)
            (self._deregs if isinstance(f, Deregistration) else self._regs)[f.id] = f  # type: ignore[index]
        self._lines = R.resolve_lines(self._regs.values(), self._deregs.values())

    def _get(self, sealed: bytes) -> Subscriber | None:
        raw = self.store.get("consent", sealed)
        return None if raw is None else decode_subscriber(raw)

    def _get_many(self, sealed: list[bytes]) -> list[Subscriber | None]:
        return [None if raw is None else decode_subscriber(raw)
                for raw in self.store.get_many("consent", sealed)]

    def _commit(self, subs: dict[bytes, Subscriber],
                lines: Sequence[LineFact | Deregistration], vector: dict[str, int]) -> None:
        b = self.store.batch()
        for sealed, sub in subs.items():
            b.put("consent", sealed, encode_subscriber(sub))
        for f in lines:
            b.put("consentline", f.id, encode_line(f))
        if vector != self.vector:
            b.put("consentmeta", _VECTOR, json.dumps(vector, sort_keys=True).encode())
        b.put("consentmeta", _KEY, self.key.id)
        self.store.write(b, sync=False)  # derived state: catch_up rebuilds what a crash loses

    def clear(self) -> None:
        super().clear()
        b = self.store.batch()
        for cf in CONSENT_FAMILIES:
            b.delete_range(cf, b"", b"\xff" * 64)
        self.store.write(b, sync=False)


def catch_up(state: ConsentState, ledger: NodeLedger, batch_size: int = 1000) -> int:
    """Bring `state` to the ledger (ledger/derived.py). Returns how many
    records were applied. Raises StorageFailure."""
    return derived.catch_up(state, ledger, batch_size)
