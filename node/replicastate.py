"""What a replica keeps of its following across restarts, beside its view.

A replica's view is in its store already; what it lost at a restart was the
audit of each followed log (so it audited every log again from entry 0: at
100M entries, hours) and the verified records that wait for a view
checkpoint to cover them. Both are written here, in one synced batch, after
every round that moved them:

    meta  replica/audit/<node>     the AuditState of <node>'s log (JSON)
    meta  replica/pending          the waiting envelopes, each u32-length-prefixed
    meta  replica/note             the cosigned view checkpoint last served

Order makes a crash harmless. The view applies its records in a batch of its
own before this batch is written, so a crash between the two leaves the view
ahead of the stored audit: the restarted replica audits that stretch again
and drops the records its view holds (ViewFollower.add skips them). A crash
before the view applied leaves the old audit state and the old pending set,
which still hold everything the view lacks. The audit state is re-verified
when read (its checkpoint's signature and its frontier's root); a state that
does not verify, or names another log, is dropped and that log is audited
from the start, as before.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterable, Sequence

from keys import KeysError
from keys.consortium import Consortium
from ledger.audit import AuditState
from ledger.errors import LedgerError
from ledger.follow import FollowedLog
from ledger.record import Record
from ledger.store import Store
from node.logs import event

log = logging.getLogger("markex.replica")

AUDIT_PREFIX = b"replica/audit/"
PENDING_KEY = b"replica/pending"
NOTE_KEY = b"replica/note"


def load_audits(store: Store, cons: Consortium, logs: Iterable[FollowedLog]) -> None:
    """Give each followed log the audit state stored for it, when it verifies."""
    for f in logs:
        raw = store.get("meta", AUDIT_PREFIX + f.node.encode())
        if raw is None:
            continue
        try:
            state = AuditState.from_json(json.loads(raw), cons)
        except (ValueError, KeyError, TypeError, LedgerError, KeysError) as e:
            event(log, logging.WARNING, "replica-state-dropped", node=f.node,
                  error=f"{type(e).__name__}: {e}"[:300])
            continue
        f.log, f.state = state.log, state


def load_pending(store: Store) -> list[bytes]:
    """The envelopes that waited for a view checkpoint when the replica stopped."""
    raw = store.get("meta", PENDING_KEY) or b""
    out, at = [], 0
    while at + 4 <= len(raw):
        (n,) = struct.unpack_from(">I", raw, at)
        out.append(raw[at + 4:at + 4 + n])
        at += 4 + n
    return out


def load_note(store: Store) -> str | None:
    raw = store.get("meta", NOTE_KEY)
    return None if raw is None else raw.decode()


def save(store: Store, logs: Sequence[FollowedLog], pending: Iterable[Record],
         note: str | None) -> None:
    """Write every followed log's audit state, the waiting records and the
    served note in one synced batch."""
    batch = store.batch()
    for f in logs:
        if f.state is not None:
            batch.put("meta", AUDIT_PREFIX + f.node.encode(),
                      json.dumps(f.state.to_json(), sort_keys=True).encode())
    batch.put("meta", PENDING_KEY,
              b"".join(struct.pack(">I", len(r.envelope)) + r.envelope for r in pending))
    if note is not None:
        batch.put("meta", NOTE_KEY, note.encode())
    store.write(batch)


__all__ = ["load_audits", "load_note", "load_pending", "save"]
