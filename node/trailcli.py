"""`markex trail` and `markex stats` (docs/trail.md).

    markex trail --node ID NUMBER      every record about NUMBER in causal order, each
                                       proven in the node's cosigned log checkpoint
    markex stats --node ID             accountability figures from the node's log (every
                                       entry fetched, signed and proven to the checkpoint)
    markex stats --data-dir PATH       the same from a stopped node's files

Neither believes the node: the trail's records are the ones its view entry
names (proven against a cosigned view checkpoint), each checked by its hash,
its signature and its inclusion proof (ledger/trail.py); the online figures
come from envelopes whose leaf hashes give the cosigned checkpoint's root.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from keys import ConfigError
from keys.consortium import Consortium
from keys.layout import NodeConfig, load_consortium
from ledger import merkle
from ledger.errors import LedgerError, StorageFailure
from ledger.log import verify_envelopes
from ledger.numbers import normalize
from ledger.record import Record
from ledger.stats import Tally
from ledger.store import Store, read_u64, u64
from ledger.trail import Proven, VerifiedTrail, verify_trail
from markex.v1 import service_pb2 as pb
from node import client
from node.command import (
    NotVerified,
    UsageError,
    iso,
    node_endpoints,
    parse_time,
    pinned_consortium,
    show,
)
from node.connect import Connect, Dial, reader_id
from node.recordcli import TrustedCheckpoint, open_log_checkpoint

ENTRIES_PAGE = 1000  # the node's GetEntries answers at most this many (node/services.py)
STORE_CHUNK = 5000   # leaves read from a stopped store at once


def _trusted_log(public: Any, cons: Any) -> TrustedCheckpoint:
    """The node's log checkpoint, signed by it and cosigned by a quorum (NotVerified else)."""
    got = public.GetLogCheckpoint(pb.GetLogCheckpointRequest(), timeout=10)
    trusted = open_log_checkpoint(cons, got.note)
    if trusted.why_not is not None:
        raise NotVerified(f"the log checkpoint is not trusted: {trusted.why_not}")
    return trusted


# ------------------------------------------------------------------ trail


def fetch_trail(cons: Any, public: Any, audit: Any, number: str, now_ms: int,
                at_ms: int = 0) -> tuple[VerifiedTrail, TrustedCheckpoint]:
    """Ask a node for `number`'s trail (its line registration at `at_ms`, 0:
    the node's now) and verify it (ledger.trail.verify_trail) against its
    cosigned log checkpoint at `now_ms`. Raises NotVerified for a refused answer."""
    asked = normalize(number)
    trusted = _trusted_log(public, cons)
    cp = trusted.checkpoint
    got = audit.GetTrail(pb.TrailRequest(number=asked, size=cp.size, at_ms=at_ms), timeout=30)
    if got.size != cp.size:
        raise NotVerified(f"asked for proofs at size {cp.size}, the node gave size {got.size}")
    given = [Proven(r.envelope, r.index, tuple(r.path)) for r in got.records]
    try:
        trail = verify_trail(cons, asked, got.lookup, given, cp.size, cp.root, now_ms)
    except LedgerError as e:
        raise NotVerified(f"the trail of {asked} does not verify: {type(e).__name__}: {e}") \
            from e
    return trail, trusted


def _trail_text(out: dict[str, Any]) -> str:
    lines = [f"trail of {out['number']}: {len(out['records'])} record(s)"]
    for r in out["records"]:
        what = r.get("category") or r.get("outcome") or r.get("action") or ""
        mark = "proven" if r["verified"] else "not yet in the checkpoint"
        lines.append(f"  {iso(r['issued_at_ms'])}  {r['kind']:<12} {r['issuer']:<12} "
                     f"{what:<12} {r['id'][:16]}  log index {r['index']}, {mark}")
    cp = out["checkpoint"]
    lines.append("verified: " + (f"yes, against {cp['node']}'s log checkpoint of size "
                                 f"{cp['size']} (cosigned by {', '.join(cp['cosigned_by'])})"
                                 if out["verified"] else f"no: {out.get('error')}"))
    return "\n".join(lines)


def cmd_trail(args: argparse.Namespace, connect: Connect) -> int:
    d, cons = pinned_consortium(args)
    if not args.node:
        raise UsageError("--node ID (or HOST:PORT) is required")
    ep = node_endpoints(cons, args.node)
    public = connect("public", Dial(d, ep))
    audit = connect("audit", Dial(d, ep, reader_id(cons, args.as_id)))
    at = parse_time(args.at) if args.at else 0
    trail, trusted = fetch_trail(cons, public, audit, args.number, int(time.time() * 1000), at)
    out = trail.to_json()
    out["checkpoint"] = trusted.to_json()
    show(args, out, _trail_text(out))
    if not trail.verified:
        raise NotVerified(out["error"])
    return 0


# ------------------------------------------------------------------ stats


class LogFollower:
    """The accountability figures of a node's log, followed from checkpoint
    to checkpoint: each `follow` fetches only the entries past the last one,
    checks their signatures and that every leaf so far gives the new cosigned
    checkpoint's root, and counts them (NotVerified, counting nothing, else).
    Not thread-safe: one caller at a time."""

    def __init__(self, cons: Consortium, vector: dict[str, int] | None = None) -> None:
        self.cons = cons
        self.tally = Tally(cons, vector)
        self.frontier = merkle.Frontier.empty()
        self.trusted: TrustedCheckpoint | None = None

    def follow(self, public: Any, audit: Any) -> TrustedCheckpoint:
        trusted = _trusted_log(public, self.cons)
        cp = trusted.checkpoint
        have = self.frontier.size
        if cp.size < have:
            raise NotVerified(f"the node's log checkpoint has {cp.size} entries, fewer than "
                              f"the {have} already counted")
        envs: list[bytes] = []
        while have + len(envs) < cp.size:
            start = have + len(envs)
            got = audit.GetEntries(pb.GetEntriesRequest(
                start=start, end=min(cp.size, start + ENTRIES_PAGE)), timeout=30)
            if got.start != start or not got.envelopes:
                raise NotVerified(f"asked for entries from {start}, the node gave "
                                  f"{len(got.envelopes)} from {got.start}")
            envs.extend(got.envelopes[: cp.size - start])
        frontier = self.frontier.copy()
        frontier.extend([merkle.leaf_hash(e) for e in envs])
        if frontier.root() != cp.root:
            raise NotVerified(f"the log's {cp.size} entries do not give the root of "
                              f"{trusted.node}'s log checkpoint")
        try:
            records = verify_envelopes(envs, self.cons)
        except LedgerError as e:
            raise NotVerified(f"an entry of the log does not verify: {e}") from e
        self.tally.add_all(records)
        self.frontier, self.trusted = frontier, trusted
        return trusted


def store_records(data_dir: Path, max_envelope_bytes: int) -> Iterator[Record]:
    """The records of a stopped node's log, in log order (read-only)."""
    store = Store(data_dir, read_only=True)
    try:
        raw = store.get("meta", b"size")
        size = read_u64(raw) if raw else 0
        for start in range(0, size, STORE_CHUNK):
            ids = [rid for _, rid in store.items("leaves", u64(start),
                                                 u64(min(size, start + STORE_CHUNK)))]
            for rid, v in zip(ids, store.get_many("records", ids), strict=True):
                if v is None:
                    raise StorageFailure(f"record {rid.hex()} of the log is missing")
                yield Record.from_envelope(v[8:], max_envelope_bytes)
    finally:
        store.close()


def _offline_consortium(args: argparse.Namespace, data_dir: Path) -> Consortium:
    """consortium.json verified with the pin given, else with the one in the
    node.toml beside the files (<consortium>/<id>/data, as `markex audit` finds it)."""
    d = client.consortium_dir(args.consortium or (
        None if os.environ.get(client.CONSORTIUM_ENV) else str(data_dir.resolve().parent.parent)))
    if args.institute_key or os.environ.get(client.INSTITUTE_KEY_ENV) or args.as_id:
        return client.load_pinned(d, args.institute_key, args.as_id)
    for toml in sorted(d.glob("*/node.toml")):
        cfg = NodeConfig.load(toml)
        if cfg.data_dir.resolve() == data_dir.resolve():
            return load_consortium(cfg)
    raise client.missing_pin(d)


def _stats_text(out: dict[str, Any]) -> str:
    lines = [f"accountability figures of {out['source']} at the vector "
             + ", ".join(f"{i}={s}" for i, s in out["vector"].items()),
             f"{'participant':<14}{'marks':>7}{'appealed':>10}{'upheld':>8}{'rejected':>10}"
             f"{'overturn':>10}{'decision median':>17}{'p90':>10}"]
    for pid, f in out["participants"].items():
        rate = "-" if f["overturn_rate"] is None else f"{100 * f['overturn_rate']:.1f}%"
        dm = f["decision_ms"]

        def h(ms: int | None) -> str:
            return "-" if ms is None else f"{ms / 3_600_000:.1f} h"

        lines.append(f"{pid:<14}{f['marks_issued']:>7}{f['marks_appealed']:>10}"
                     f"{f['appeals_upheld']:>8}{f['appeals_rejected']:>10}{rate:>10}"
                     f"{h(dm['median']):>17}{h(dm['p90']):>10}")
    a = out["appeals"]
    lines.append(f"appeals: {a['filed']} filed, {a['pending']} pending, {a['upheld']} upheld, "
                 f"{a['rejected']} rejected, {a['withdrawn']} withdrawn")
    if out["carriers"]:
        lines.append(f"{'carrier':<14}{'received':>9}{'forwarded':>10}{'ack in SLA':>11}"
                     f"{'closed':>8}{'in SLA':>8}{'open':>6}{'median handling':>17}")
        for cid, c in out["carriers"].items():
            med = c["handling_ms"]["median"]
            lines.append(f"{cid:<14}{c['received']:>9}{c['forwarded']:>10}"
                         f"{c['acknowledged_in_sla']:>11}{c['closed']:>8}{c['closed_in_sla']:>8}"
                         f"{c['open']:>6}{'-' if med is None else f'{med / 3_600_000:.1f} h':>17}")
    return "\n".join(lines)


def cmd_stats(args: argparse.Namespace, connect: Connect) -> int:
    if bool(args.node) == bool(args.data_dir):
        raise UsageError("give exactly one of --node ID (online) or --data-dir PATH (offline)")
    if args.data_dir:
        data_dir = Path(args.data_dir)
        if not (data_dir / "CURRENT").is_file():
            raise ConfigError(f"{data_dir} holds no node database (no RocksDB CURRENT file)")
        cons = _offline_consortium(args, data_dir)
        tally = Tally(cons, args.vector).add_all(
            store_records(data_dir, cons.policy.max_envelope_bytes))
        source = str(data_dir)
        extra: dict[str, Any] = {}
    else:
        d, cons = pinned_consortium(args)
        ep = node_endpoints(cons, args.node)
        public = connect("public", Dial(d, ep))
        audit = connect("audit", Dial(d, ep, reader_id(cons, args.as_id)))
        follower = LogFollower(cons, args.vector)
        trusted = follower.follow(public, audit)
        tally = follower.tally
        source = args.node
        extra = {"checkpoint": trusted.to_json()}
    out = {"source": source, **tally.figures(), **extra}
    show(args, out, _stats_text(out))
    return 0
