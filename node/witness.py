"""Witnessing: check each peer's new log checkpoint against the last one we
saw (a consistency proof) and cosign it (C2SP tlog-cosignature). A checkpoint
no proof joins to the last one is kept as log fork evidence (ledger.evidence):
both signed notes; proven when they name one size, else the witness's claim."""

from __future__ import annotations

import json
import logging
import struct
import threading
from collections.abc import Callable, Sequence

from keys.consortium import Consortium
from keys.signing import SigningKey
from ledger import merkle, note
from ledger.errors import CheckpointFork, NotAllowed, OutOfOrder, ProofMismatch
from ledger.evidence import in_format, log_fork_evidence
from ledger.names import log_origin, witness_name
from ledger.store import Store, u64
from node.logs import event

__all__ = ["Witness", "WitnessConflict", "witness_name"]  # witness_name: still importable here

log = logging.getLogger("markex.witness")

_STATE = struct.Struct(">Q32s")


class WitnessConflict(OutOfOrder):
    """The witness knows another size than the one the proof starts from."""

    def __init__(self, known_size: int) -> None:
        super().__init__(f"witness knows size {known_size}")
        self.known_size = known_size


class Witness:
    """This node's witness: the last checkpoint it cosigned of each peer's
    log (in the store's `witness` family), and the first fork of each."""

    def __init__(
        self,
        store: Store,
        consortium: Consortium,
        participant_id: str,
        key: SigningKey,
        clock_ms: Callable[[], int],
    ) -> None:
        self.store = store
        self.consortium = consortium
        self.name = witness_name(consortium.name, participant_id)
        self.key = key
        self.clock_ms = clock_ms
        self._lock = threading.Lock()

    def known(self, peer: str) -> tuple[int, bytes, str] | None:
        """(size, root, signed note) of the last checkpoint of `peer` cosigned, if any."""
        v = self.store.get("witness", b"log/" + peer.encode())
        if v is None:
            return None
        size, root = _STATE.unpack(v[: _STATE.size])
        return size, root, v[_STATE.size :].decode()

    def cosign_log(self, peer: str, text: str, old_size: int, proof: Sequence[bytes]) -> str:
        """Cosign `peer`'s checkpoint if it extends the last one we saw."""
        p = self.consortium.participant(peer)
        if p is None:
            raise NotAllowed(f"{peer!r} is not a member")
        origin = log_origin(self.consortium.name, peer)
        cp = note.open_checkpoint(text, note.Verifier.for_key(origin, p.public_key), origin)
        with self._lock:
            known = self.known(peer)
            if known is not None:
                ksize, kroot, knote = known
                if cp.size < ksize:
                    self._fork(peer, knote, text, proven=False)
                    raise CheckpointFork(
                        f"{peer} showed size {cp.size} after size {ksize}", knote, text
                    )
                if cp.size == ksize:
                    if cp.root != kroot:
                        self._fork(peer, knote, text, proven=True)
                        raise CheckpointFork(
                            f"{peer} signed two roots for size {ksize}", knote, text
                        )
                else:
                    if old_size != ksize:
                        raise WitnessConflict(ksize)
                    try:
                        merkle.verify_consistency(ksize, cp.size, kroot, cp.root, list(proof))
                    except ProofMismatch as e:
                        # A proof that fails proves nothing of the trees: kept as a claim.
                        self._fork(peer, knote, text, proven=False)
                        raise CheckpointFork(
                            f"{peer}'s size {cp.size} does not extend its size {ksize}", knote, text
                        ) from e
            self.store.put(
                "witness", b"log/" + peer.encode(), _STATE.pack(cp.size, cp.root) + text.encode()
            )
        return note.cosign_line(cp.body(), self.name, self.key, self.clock_ms() // 1000)

    def _fork(self, peer: str, first: str, second: str, *, proven: bool) -> None:
        """Keep the first evidence that `peer` forked its log; later ones add
        nothing (one proof convicts it), so a peer cannot fill our disk.
        `proven`: the two notes name one size (else a claim: the witness
        holds no entries to prove the fork with)."""
        prefix = b"fork/" + peer.encode() + b"\x00"
        if next(iter(self.store.items("witness", prefix, prefix[:-1] + b"\x01")), None):
            return
        ev = log_fork_evidence(self.consortium, peer, first, second, claim=not proven)
        self.store.put("witness", prefix + u64(self.clock_ms()), json.dumps(ev).encode())
        event(log, logging.ERROR, "fork", kind="log-fork" if proven else "log-fork-claim",
              issuer=peer)

    def forks(self) -> list[bytes]:
        """The log fork evidence kept, one per peer, in the evidence format
        (what an older node stored in its own JSON is translated)."""
        return [
            in_format(v, self.consortium)
            for _, v in self.store.items("witness", b"fork/", b"fork0")
        ]
