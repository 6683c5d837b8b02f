"""When a node may sign its next own record, so that it never signs a
sequence number of its own feed that its peers already hold (which would
freeze that feed for good as an equivocation).

Three cases, fixed when the node starts:

    own store    the store holds the node's own feed: it continues from it at
                 once, peers or not
    new feed     the store holds none of it and the operator states the feed
                 is new (`new_feed = true` in node.toml, which `consortium
                 init` writes): it issues once every peer has been tried
                 once (a peer that holds the feed would say so)
    restore      the store holds none of it and no such statement, or the
                 operator says the store comes from a backup (`--restored`):
                 it issues only once `quorum` peers report the same head of
                 its feed and it holds that head itself

It never issues while a peer reports a higher seq of its feed than it holds
(it is still catching up from that peer). Restoring, any such report counts:
a lying peer can delay a restored node, never make it re-sign a seq. Once
the node holds its feed (own store, or a new feed begun), only a report the
peer proved counts, by serving the record of ours it claims as head (signed
with our key, with that id): one hostile member cannot stop a healthy node
from issuing by claiming its feed is longer. Peers report what they hold of
our feed in every anti-entropy round (Exchange.Heads). No clock and no gRPC
here: the caller polls `refusal`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

OWN_STORE = "own-store"
NEW_FEED = "new-feed"
RESTORE = "restore"


class IssueGate:
    def __init__(
        self, mode: str, peers: Iterable[str], quorum: int, why: str = ""
    ) -> None:
        """`why` says, for a restore, what the operator did or what was found
        ("the store was restored from a backup", "the store holds none of it")."""
        if mode not in (OWN_STORE, NEW_FEED, RESTORE):
            raise ValueError(f"unknown issue mode {mode!r}")
        self._lock = threading.Lock()
        self.mode = mode
        self.why = why
        self.peers = tuple(sorted(set(peers)))
        # A consortium with fewer peers than the quorum: all of them must agree.
        self.need = max(0, min(quorum, len(self.peers)))
        self._reports: dict[str, tuple[int, bytes]] = {}
        self._proven: set[str] = set()  # peers whose latest report came with its head record
        self._tried: set[str] = set()

    def report(self, peer: str, seq: int, head_id: bytes, proven: bool = False) -> None:
        """`peer` holds our feed up to `seq`, whose record id is `head_id` (0,
        b"": none); `proven` when it served that record, signed by us."""
        if peer not in self.peers:
            return
        with self._lock:
            self._reports[peer] = (seq, head_id)
            self._tried.add(peer)
            if proven:
                self._proven.add(peer)
            else:
                self._proven.discard(peer)

    def unreachable(self, peer: str) -> None:
        """A round with `peer` failed: it has been tried, and said nothing."""
        if peer not in self.peers:
            return
        with self._lock:
            self._tried.add(peer)

    def refusal(self, own_seq: int, own_head: bytes) -> str | None:
        """None when the node may sign seq own_seq + 1 now; else why not, and what to do."""
        with self._lock:
            if self.mode == NEW_FEED and own_seq > 0:
                self.mode = OWN_STORE  # the new feed has begun in this node's own store
            strict = self.mode == RESTORE
            ahead = [
                (s, p)
                for p, (s, _) in self._reports.items()
                if s > own_seq and (strict or p in self._proven)
            ]
            if ahead:
                seq, peer = max(ahead)
                return (
                    f"peer {peer} holds seq {seq} of this node's own feed and this node "
                    f"only seq {own_seq}: it is catching up from its peers; try again shortly"
                )
            if self.mode == OWN_STORE:
                return None
            if self.mode == NEW_FEED:
                waiting = [p for p in self.peers if p not in self._tried]
                if waiting:
                    return (
                        "this node's feed is declared new and its store holds none of it; "
                        f"it issues once it has asked every peer whether one holds it "
                        f"(waiting for {', '.join(waiting)}); try again shortly"
                    )
                return None
            agree = sorted(p for p, r in self._reports.items() if r == (own_seq, own_head))
            if len(agree) >= self.need:
                self.mode = OWN_STORE  # from now on its own store is the truth
                return None
            others = sorted(
                f"{p} at seq {s}" for p, (s, h) in self._reports.items() if p not in agree
            )
            return (
                f"{self.why or 'this node was restored'}: it issues only once {self.need} "
                f"peers agree on its own feed's head (seq {own_seq}); {len(agree)} agree so far"
                + (f" ({', '.join(agree)})" if agree else "")
                + (f", others report {'; '.join(others)}" if others else "")
                + "; start its peers and try again, or, if this feed really is new, "
                "state it with new_feed = true in node.toml (on an empty store only)"
            )


def gate_at_start(
    own_seq: int, *, restored: bool, new_feed: bool, peers: Iterable[str], quorum: int
) -> IssueGate:
    """The gate of a node starting with `own_seq` records of its own feed in
    its store: `restored` is the operator's --restored, `new_feed` node.toml's
    statement that the feed is new."""
    if restored:
        why = "the operator marked this node's store as restored from a backup"
        return IssueGate(RESTORE, peers, quorum, why)
    if own_seq > 0:
        return IssueGate(OWN_STORE, peers, quorum)
    if new_feed:
        return IssueGate(NEW_FEED, peers, quorum)
    why = "this node's store holds none of its own feed and node.toml does not state it is new"
    return IssueGate(RESTORE, peers, quorum, why)
