"""A downstream copy of a node's national view, kept by WatchView deltas and
proven equal to the node's at every checkpoint (docs/watch.md). Pure: no
network, no clock (the time is an argument), no storage (the caller keeps the
entry bytes where it likes; node/watchcli.py keeps them in a RocksDB).

The copy holds, per bucket of the view tree, its occupied positions (the
view tree's own `viewtree.Slot`s: (view key, entry hash) pairs) and the tree's
dense top (`viewtree.TopTree`), so a delta of k entries is rehashed in
O(k) bucket rehashes, never the whole tree; `viewtree.tree_root` from nothing
gives the same root (tests hold them equal).

`WatchCopy.apply(delta, note, now_ms)` checks, in this order, and changes
nothing unless every check passes (the copy stays at its last verified state):

1. the checkpoint is signed by the pinned node (its view origin and key from
   the pinned consortium; MalformedNote, BadSignature: WrongSigner for another
   member's checkpoint);
2. it is not older than `policy.view_max_age_ms` nor in the future beyond the
   clock skew (StaleView, ClockSkew), and has `policy.cosign_quorum` member
   cosignatures at a fresh time (TooFewCosigners);
3. it is not older than the copy's checkpoint: a vector that goes back in
   any feed, or an older signing time (ViewRollback);
4. each delta entry decodes, is canonical and is its row's number, each
   number once (BentEntry);
5. the copy with the delta applied has exactly the checkpoint's entry count
   and root (DeltaMismatch).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from keys.consortium import Consortium
from ledger import viewtree
from ledger.errors import BadInput, NotAllowed, ProofMismatch
from ledger.names import view_origin
from ledger.verify import CosignedView, ViewRollback, check_fresh, open_view
from ledger.view import Entry, ViewCheckpoint, entry_hash, view_key
from ledger.viewtree import Slot

__all__ = ["BentEntry", "Change", "DeltaMismatch", "TooFewCosigners", "WatchCopy",
           "WrongSigner", "verify_checkpoint"]

BUCKET_BITS = 12          # the copy's dense top: 4096 buckets (the root does not depend on it)


class BentEntry(BadInput):
    """A delta entry that does not decode, is not canonical, or is another number's."""


class DeltaMismatch(ProofMismatch):
    """A delta that does not bring the copy to the checkpoint's root and count."""


class WrongSigner(NotAllowed):
    """A checkpoint signed by another node than the one the copy follows."""


class TooFewCosigners(NotAllowed):
    """A checkpoint without the policy's quorum of fresh member cosignatures."""


@dataclass(frozen=True)
class Change:
    """One delta row: the number and its new entry bytes (None: it has none now)."""

    number: str
    entry: bytes | None


def verify_checkpoint(cons: Consortium, node: str, text: str, now_ms: int) -> CosignedView:
    """Steps 1 and 2: signed by `node`, fresh, with a fresh cosignature quorum."""
    got = open_view(cons, text)
    if got.signer != node or got.checkpoint.origin != view_origin(cons.name, node):
        raise WrongSigner(f"the checkpoint is {got.signer}'s view, not {node}'s")
    fresh = check_fresh(got, cons.policy, now_ms)
    need = cons.policy.cosign_quorum
    if len(fresh) < need:
        raise TooFewCosigners(
            f"the view checkpoint has {len(fresh)} fresh member cosignature(s) "
            f"({', '.join(sorted(fresh)) or 'none'}); the policy needs {need}"
        )
    return got


class WatchCopy:
    """The tree of one node's view as far as the verified deltas brought it."""

    def __init__(self, consortium: Consortium, node: str) -> None:
        self.consortium = consortium
        self.node = node
        self.checkpoint: ViewCheckpoint | None = None  # the last verified one
        self.note = ""                                 # its note, with cosignatures
        self.count = 0
        self._buckets: dict[int, list[Slot]] = {}
        self._tree = viewtree.TopTree(BUCKET_BITS)

    # ------------------------------------------------------------ state
    def root(self) -> bytes:
        return self._tree.root()

    def holds(self, number: str) -> bool:
        """Whether the copy holds an entry for the E.164 `number`."""
        key = view_key(number)
        pos = viewtree.position(key)
        slots = self._buckets.get(pos >> (viewtree.DEPTH - BUCKET_BITS), [])
        return any(s.pos == pos and any(k == key for k, _ in s.members) for s in slots)

    def load(self, entries: Iterable[tuple[str, bytes]], note: str) -> None:
        """Rebuild from a kept copy (its entries and the note they were verified
        at), checking the root again: a copy changed on disk is refused
        (DeltaMismatch, BentEntry) and this copy stays empty."""
        got = open_view(self.consortium, note)
        if got.signer != self.node:
            raise WrongSigner(f"the kept checkpoint is {got.signer}'s view, not {self.node}'s")
        cp = got.checkpoint
        fresh = WatchCopy(self.consortium, self.node)
        rows = [Change(n, e) for n, e in entries]
        fresh._apply_rows(_checked(rows), cp, snapshot=True)
        self.__dict__.update(fresh.__dict__)
        self.checkpoint, self.note = cp, note

    def reset(self) -> None:
        """Empty: the next delta is a snapshot."""
        self.__init__(self.consortium, self.node)  # type: ignore[misc]

    # ------------------------------------------------------------ apply
    def apply(self, changes: Sequence[Change], note: str, now_ms: int,
              snapshot: bool = False) -> ViewCheckpoint:
        """Verify and apply one delta (see the module docstring); with
        `snapshot` the copy is emptied first. Returns the new checkpoint.
        Raises and changes nothing on any failed check."""
        got = verify_checkpoint(self.consortium, self.node, note, now_ms)
        cp = got.checkpoint
        self._no_rollback(cp)
        checked = _checked(changes)
        target = WatchCopy(self.consortium, self.node) if snapshot else self
        target._apply_rows(checked, cp, snapshot=snapshot)
        if snapshot:
            self.__dict__.update(target.__dict__)
        self.checkpoint, self.note = cp, note
        return cp

    def _no_rollback(self, cp: ViewCheckpoint) -> None:
        old = self.checkpoint
        if old is None:
            return
        back = [i for i, s in old.vector if s > cp.vector_dict.get(i, 0)]
        if back:
            raise ViewRollback(
                f"the checkpoint goes back on {', '.join(back)}'s feed from the copy's last one"
            )
        if cp.signed_at_ms < old.signed_at_ms:
            raise ViewRollback("the checkpoint was signed before the copy's last one")

    def _apply_rows(self, rows: list[tuple[bytes, bytes | None]], cp: ViewCheckpoint,
                    snapshot: bool) -> None:
        """Apply (view key, entry hash or None) rows, check root and count
        against `cp`; on a mismatch undo them, so the copy is unchanged."""
        by_bucket: dict[int, dict[bytes, bytes | None]] = {}
        for key, h in rows:
            b = viewtree.position(key) >> (viewtree.DEPTH - BUCKET_BITS)
            by_bucket.setdefault(b, {})[key] = h
        saved = {b: self._buckets.get(b, []) for b in by_bucket}
        saved_tops = {b: self._tree.bucket(b) for b in by_bucket}
        count = self.count
        tops = {}
        for b, changes in by_bucket.items():
            slots, delta = _rebucket(self._buckets.get(b, []), changes)
            count += delta
            top, _ = viewtree.rehash_bucket(slots, BUCKET_BITS)
            tops[b] = top
            if slots:
                self._buckets[b] = slots
            else:
                self._buckets.pop(b, None)
        self._tree.update(tops)
        root = self._tree.root()
        if count != cp.count or root != cp.root:
            for b, slots in saved.items():     # undo: the copy stays where it was
                if slots:
                    self._buckets[b] = slots
                else:
                    self._buckets.pop(b, None)
            self._tree.update(saved_tops)
            what = "snapshot" if snapshot else "delta"
            raise DeltaMismatch(
                f"the {what} brings the copy to {count} entries and root {root.hex()[:16]}..., "
                f"the checkpoint signs {cp.count} and {cp.root.hex()[:16]}..."
            )
        self.count = count


def _checked(changes: Sequence[Change]) -> list[tuple[bytes, bytes | None]]:
    """Step 4: each row's (view key, entry hash or None). Raises BentEntry."""
    seen: set[str] = set()
    out: list[tuple[bytes, bytes | None]] = []
    for c in changes:
        if c.number in seen:
            raise BentEntry(f"the delta lists {c.number} twice")
        seen.add(c.number)
        if c.entry is None:
            out.append((view_key(c.number), None))
            continue
        try:
            entry = Entry.decode(c.entry)
        except BadInput as e:
            raise BentEntry(f"the entry of {c.number} does not decode: {e}") from e
        if entry.number != c.number:
            raise BentEntry(f"the row of {c.number} carries {entry.number}'s entry")
        out.append((view_key(c.number), entry_hash(c.entry)))
    return out


def _rebucket(slots: list[Slot], changes: dict[bytes, bytes | None]) -> tuple[list[Slot], int]:
    """The bucket's slots with `changes` put in (sorted by position) and the
    change in its entry count. Slots are new objects: the old list stays
    valid for an undo."""
    by_pos = {s.pos: s for s in slots}
    delta = 0
    for key, h in changes.items():
        pos = viewtree.position(key)
        s = by_pos.get(pos)
        members = [m for m in s.members if m[0] != key] if s is not None else []
        delta -= (len(s.members) - len(members)) if s is not None else 0
        if h is not None:
            members.append((key, h))
            delta += 1
        if members:
            by_pos[pos] = Slot.of(members)
        else:
            by_pos.pop(pos, None)
    return [by_pos[p] for p in sorted(by_pos)], delta
