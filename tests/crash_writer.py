"""The process tests/test_crash.py kills: appends signed records to a node's
store until it is killed, acknowledging each batch on stdout.

    python -m tests.crash_writer DATA_DIR SEED [--on-go]

With ``--on-go`` it opens the store only once a line arrives on stdin, so the
parent can start the next writer's interpreter while it checks the store.
Prints ``READY <size>`` once the ledger is open, then after every submit()
that returned (so its synced write is done) one line ``ACK <size> <root hex>``,
flushed: that line is the acknowledgement the parent holds the store to.
Records are signed with the fixed test keys and continue each issuer's feed
from the head found in the store, so a restart after a kill picks up exactly
where the durable state ends. Any record not accepted is a failure: the
writer prints ``ERR ...`` to stderr and exits 1.
"""

from __future__ import annotations

import random
import sys

from ledger.log import NodeLedger
from ledger.record import Mark, Record
from tests.conftest import KEYS, NAME, NOW, make_consortium

ISSUERS = ("institute", "carrier-1", "carrier-2", "internet-1", "internet-2")
CATEGORIES = ("fraud", "harassment", "marketing", "delivery", "one-ring")
MAX_BATCH = 50


def next_record(issuer: str, seq: int, prev_id: bytes) -> Record:
    """The record at (issuer, seq): a deterministic payload signed with the
    issuer's fixed key (Ed25519 is deterministic, so the bytes are too)."""
    number = f"+86138{(seq * 7919 + ISSUERS.index(issuer)) % 10**8:08d}"
    payload = Mark(number, CATEGORIES[seq % len(CATEGORIES)], seq % 101, seq % 7, NOW - 1000)
    return Record.issue(KEYS[issuer], issuer, seq, prev_id, NOW, payload, consortium=NAME)


def run(data_dir: str, seed: int, on_go: bool = False) -> int:
    rng = random.Random(seed)
    if on_go and not sys.stdin.readline():
        return 0  # the parent closed stdin without a go: it needs no more rounds
    ledger = NodeLedger.open(data_dir, make_consortium(), "carrier-1", KEYS["carrier-1"])
    out = sys.stdout
    out.write(f"READY {ledger.size}\n")
    out.flush()
    heads = {i: (ledger.feed(i).seq, ledger.feed(i).head_id) for i in ISSUERS}
    while True:
        batch = []
        for _ in range(rng.randint(1, MAX_BATCH)):
            issuer = rng.choice(ISSUERS)
            seq, head = heads[issuer]
            rec = next_record(issuer, seq + 1, head)
            heads[issuer] = (rec.seq, rec.id)
            batch.append(rec.envelope)
        result = ledger.submit(batch, NOW)
        for o in result.outcomes:
            if o.status != "accepted":
                print(f"ERR {o.status}: {o.error}", file=sys.stderr, flush=True)
                return 1
        out.write(f"ACK {ledger.size} {ledger.root().hex()}\n")
        out.flush()


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], int(sys.argv[2]), "--on-go" in sys.argv[3:]))
