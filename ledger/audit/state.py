"""What an online audit asks a node (`LogSource`) and what it remembers of a
log between runs (`AuditState`), so a second audit reads only what is new."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from keys.consortium import Consortium
from ledger import merkle, note
from ledger.errors import BadInput, UnknownIssuer
from ledger.evidence import b64, unb64
from ledger.names import log_origin

STATE_VERSION = 1


class LogSource(Protocol):
    """What an online audit asks a node (node/auditcli.py adapts gRPC).
    Methods raise a LedgerError when the node refuses or fails."""

    def log_checkpoint(self) -> str: ...

    def entries(self, start: int, end: int) -> list[bytes]:
        """Envelopes start.. (at most end-1); may return fewer than asked."""
        ...

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]: ...

    def view_checkpoint(self) -> str | None: ...

    def feed_heads(self) -> dict[str, tuple[int, bytes, bool]]: ...

    def evidence(self) -> tuple[list[bytes], list[bytes]]: ...


@dataclass(frozen=True)
class AuditState:
    """What an auditor remembers of one log between runs: the last audited
    checkpoint (verified note), the Merkle frontier at its size, each feed's
    head there, the signing time (ms) of the newest view checkpoint seen and
    the newest log cosignature time (s) seen (0: none yet), so a node serving
    an older view or an older cosigned log checkpoint is a finding. Stored as JSON."""

    consortium: str
    log: str
    note: str
    size: int
    root: bytes
    frontier: tuple[bytes, ...]
    heads: Mapping[str, tuple[int, bytes]]
    head_times: Mapping[str, int] = field(default_factory=dict)  # each head's issued-at
    view_signed_at_ms: int = 0
    log_cosigned_at: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "consortium": self.consortium,
            "log": self.log,
            "size": self.size,
            "root": b64(self.root),
            "note": self.note,
            "frontier": [b64(h) for h in self.frontier],
            "heads": {
                i: [s, h.hex()] + ([self.head_times[i]] if i in self.head_times else [])
                for i, (s, h) in sorted(self.heads.items())
            },
            "view_signed_at_ms": self.view_signed_at_ms,
            "log_cosigned_at": self.log_cosigned_at,
        }

    @classmethod
    def from_json(cls, obj: Any, cons: Consortium) -> AuditState:
        """Parse and re-verify (the note's signature, the frontier's root).
        A head is [seq, id hex] or [seq, id hex, issued-at] (states written
        before the issued-at was kept have the first form)."""
        try:
            if obj["version"] != STATE_VERSION:
                raise BadInput(f"audit state version {obj['version']!r} is not {STATE_VERSION}")
            log = obj["log"]
            if obj["consortium"] != cons.name:
                raise BadInput(f"the audit state is for consortium {obj['consortium']!r}")
            p = cons.participant(log)
            if p is None:
                raise UnknownIssuer(f"audit state names {log!r}, not a participant")
            origin = log_origin(cons.name, log)
            text = obj["note"]
            cp = note.open_checkpoint(text, note.Verifier.for_key(origin, p.public_key), origin)
            frontier = tuple(unb64(h, "frontier hash") for h in obj["frontier"])
            f = merkle.Frontier.from_hashes(cp.size, frontier)
            if f.root() != cp.root or obj["size"] != cp.size:
                raise BadInput("the audit state's frontier does not give its checkpoint's root")
            heads = {}
            times = {}
            for issuer, head in obj["heads"].items():
                if not isinstance(head, list) or len(head) not in (2, 3):
                    raise BadInput(f"audit state head of {issuer!r} is not [seq, id(, time)]")
                heads[str(issuer)] = (int(head[0]), bytes.fromhex(head[1]))
                if len(head) == 3:
                    times[str(issuer)] = int(head[2])
            # Absent in states written before these were kept: nothing seen yet.
            seen = [obj.get(k, 0) for k in ("view_signed_at_ms", "log_cosigned_at")]
            if any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in seen):
                raise BadInput("the audit state's times are not non-negative integers")
        except (KeyError, TypeError, ValueError) as e:
            raise BadInput(f"audit state does not parse: {e}") from e
        return cls(cons.name, log, text, cp.size, cp.root, frontier, heads, times, *seen)
