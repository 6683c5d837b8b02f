"""What a replica keeps of its following across restarts, beside its view.

A replica's view is in its store already; what it lost at a restart was the
audit of each followed log (so it audited every log again from entry 0: at
100M entries, hours) and the verified records that wait for a view
checkpoint to cover them. Both are written here, in one synced batch, after
every round that moved them:

    meta  replica/audit/<node>     the AuditState of <node>'s log (JSON)
    meta  replica/pending          the waiting envelopes, each u32-length-prefixed
    meta  replica/note             the cosigned view checkpoint last served
    meta  replica/vector           the view's vector when the rest was written (JSON)

Order makes a crash harmless. The view applies its records in a batch of its
own before this batch is written, so a crash between the two leaves the view
ahead of the stored audit: the restarted replica audits that stretch again
and drops the records its view holds (ViewFollower.add skips them). A crash
before the view applied leaves the old audit state and the old pending set,
which still hold everything the view lacks. The audit state is re-verified
when read (its checkpoint's signature and its frontier's root); a state that
does not verify, or is not the log of the node it is stored for, is dropped
and that log is audited from the start, as before.

All of it stands on the view holding what the audits passed over. A view
that is behind the vector stored with them (emptied: a new view
configuration, or a restore interrupted, see `forget`) drops every stored
audit and waiting record, and the logs are audited from entry 0.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterable, Mapping, Sequence

from keys import KeysError
from keys.consortium import Consortium
from ledger.audit import AuditState
from ledger.errors import LedgerError
from ledger.follow import FollowedLog
from ledger.record import Record
from ledger.store import Store
from ledger.view.stored import CHANGED
from node.logs import event

log = logging.getLogger("markex.replica")

AUDIT_PREFIX = b"replica/audit/"
PENDING_KEY = b"replica/pending"
NOTE_KEY = b"replica/note"
VECTOR_KEY = b"replica/vector"


def still_holds(store: Store, vector: Mapping[str, int]) -> bool:
    """Whether a view at `vector` holds what the stored following stood on
    (True when nothing is stored)."""
    raw = store.get("meta", VECTOR_KEY)
    if raw is None:
        return True
    try:
        saved = json.loads(raw)
        return all(vector.get(str(i), 0) >= int(s) for i, s in saved.items())
    except (ValueError, TypeError, AttributeError):
        return False


def load_audits(store: Store, cons: Consortium, logs: Iterable[FollowedLog]) -> None:
    """Give each followed log the audit state stored for it, when it verifies
    and is the log of the node it is stored for (a --follow name is a
    participant id: its node serves its own log)."""
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
        if state.log != f.node:
            event(log, logging.WARNING, "replica-state-dropped", node=f.node,
                  error=f"the stored audit is of {state.log}'s log")
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
         note: str | None, vector: Mapping[str, int]) -> None:
    """Write every followed log's audit state, the waiting records, the
    served note and the view's `vector` in one synced batch."""
    batch = store.batch()
    batch.put("meta", VECTOR_KEY, json.dumps(dict(vector), sort_keys=True).encode())
    # The view journals every changed number for a node's screen index
    # (ledger/view/stored.py); a replica keeps no index, so nothing would
    # ever empty it: one key per number ever changed. Emptied here instead.
    batch.delete_range(CHANGED, b"", b"\xff")
    for f in logs:
        if f.state is not None:
            batch.put("meta", AUDIT_PREFIX + f.node.encode(),
                      json.dumps(f.state.to_json(), sort_keys=True).encode())
    batch.put("meta", PENDING_KEY,
              b"".join(struct.pack(">I", len(r.envelope)) + r.envelope for r in pending))
    if note is not None:
        batch.put("meta", NOTE_KEY, note.encode())
    store.write(batch)


def forget(store: Store) -> None:
    """Delete everything stored of the following (before the view is emptied:
    a restart then audits from entry 0 instead of trusting audits the view
    no longer holds)."""
    batch = store.batch()
    batch.delete_range("meta", b"replica/", b"replica0")
    store.write(batch)


__all__ = ["forget", "load_audits", "load_note", "load_pending", "save", "still_holds"]
