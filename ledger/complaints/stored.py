"""The complaint state in a node's store, so a start reads the complaint
records rather than the whole log.

    complaints     record id (32)  -> the envelope of a complaint, handling or sanction
    complaintmeta  b"vector"       -> the state's vector (JSON: issuer -> seq)
                   b"config"       -> SHA-256 of the consortium.json bytes it was built under

Opening loads the kept envelopes into memory (`ComplaintState`) and the
vector; `catch_up` then applies what the ledger holds beyond it. Each apply
writes the records that entered and the vector in one atomic batch,
unsynced: the state is derived from the synced ledger, and a crash between
the two is healed by the next start's catch-up (applying a record twice
changes nothing). A state built under another configuration (other
participants, ranges, taxonomy or policy) is cleared and built anew.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ledger.complaints.state import ComplaintState
from ledger.errors import LedgerError, StorageFailure
from ledger.record import Record

if TYPE_CHECKING:
    from keys.consortium import Consortium
    from ledger.store import Store

FAMILY, META = "complaints", "complaintmeta"
_END = b"\xff" * 33


def config_digest(consortium: Consortium) -> bytes:
    return hashlib.sha256(consortium.to_json_bytes()).digest()


class StoredComplaints(ComplaintState):
    """A ComplaintState whose records and vector are kept in `store`."""

    def __init__(self, store: Store, consortium: Consortium) -> None:
        super().__init__(consortium)      # clears memory only: no store yet
        self.store = store
        digest = config_digest(consortium)
        if store.get(META, b"config") != digest:
            self.clear()
            store.put(META, b"config", digest, sync=False)
            return
        try:
            records = [Record.from_envelope(v) for _, v in store.items(FAMILY)]
            raw = store.get(META, b"vector")
            vector = {} if raw is None else json.loads(raw)
        except (LedgerError, ValueError) as e:
            raise StorageFailure(f"the stored complaint state does not parse: {e}") from e
        super()._take(records)
        self.vector = {str(k): int(v) for k, v in vector.items()}

    def clear(self) -> None:
        super().clear()
        store = getattr(self, "store", None)
        if store is None:
            return  # ComplaintState.__init__: nothing stored read yet
        b = store.batch()
        b.delete_range(FAMILY, b"", _END)
        b.delete(META, b"vector")
        store.write(b, sync=False)

    def _take(self, records: Iterable[Record]) -> list[Record]:
        entered = super()._take(records)
        b = self.store.batch()
        for rec in entered:
            b.put(FAMILY, rec.id, rec.envelope)
        b.put(META, b"vector", json.dumps(self.vector, sort_keys=True).encode())
        self.store.write(b, sync=False)
        return entered
