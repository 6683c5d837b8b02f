"""The consent commands: `markex prefer` (a subscriber's refusal of marketing
by industry, issued by its serving carrier or the institute; `--refuse none`
revokes) and `markex line register|deregister` (a marketer's number or
prefix, registered by the carrier that provides it).

Everything the command line can judge alone (the number, the industries of
the pinned consortium, modes, time bands, day types, times, a prefix, the
credit code) is refused here with a sentence saying what to write, before
any node is asked; who may issue what stays the node's rule (the ledger's
`check_preference`, `check_line`), whose refusal comes back as its sentence.
The subscriber's number travels to the acting node on the member port only:
the node seals it before it signs (node/services.py). node/cli.py runs these
by name."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from node.command import (
    UsageError,
    acting,
    node_endpoints,
    parse_time,
    pinned_consortium,
    show,
    table,
)
from node.connect import Connect, Dial

if TYPE_CHECKING:
    from keys.consortium import Consortium

RPC_TIMEOUT_S = 30
NONE = "none"  # --refuse none: a revocation


def _endpoint(args: argparse.Namespace) -> tuple[Any, Consortium, str, Any]:
    """(folder, consortium, acting id, its node's endpoints) of an issuing command."""
    d, cons = pinned_consortium(args)
    who = acting(args, cons)
    return d, cons, who, node_endpoints(cons, args.node or who)


def _issued(args: argparse.Namespace, r: Any) -> None:
    """The record the node signed as design.md prints it (`-q`: its id alone)."""
    if args.quiet and not args.json:
        print(r.id.hex())
        return
    obj = {"id": r.id.hex(), "issuer": r.issuer, "seq": r.seq, "index": r.index}
    show(args, obj, table([("id", obj["id"]), ("issuer", r.issuer), ("seq", r.seq),
                           ("log index", f"{r.index} in the log of {args.node or args.as_id}")]))


def _items(flag: str, text: str) -> tuple[str, ...]:
    """A comma-separated list, each item once."""
    items = tuple(x.strip() for x in text.split(","))
    if not all(items):
        raise UsageError(f"{flag} {text!r} has an empty item: write values separated by commas")
    twice = sorted({x for x in items if items.count(x) > 1})
    if twice:
        raise UsageError(f"{flag} names {', '.join(twice)} twice")
    return items


def _one_of(flag: str, text: str | None, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if text is None:
        return ()
    items = _items(flag, text)
    for x in items:
        if x not in allowed:
            raise UsageError(f"{flag}: {x!r} is not one of {', '.join(allowed)}")
    return items


def industry_list(cons: Consortium) -> str:
    """The consortium's industries with the names users know: the valid values of IND."""
    return ", ".join(f"{i.id} ({i.label})" for i in cons.industries)


def refused_industries(cons: Consortium, text: str) -> tuple[str, ...]:
    """--refuse: industry ids of the consortium, `all` alone, or `none` alone (())."""
    from ledger.payloads.preference import ALL

    items = _items("--refuse", text)
    if NONE in items or ALL in items:
        if len(items) > 1:
            raise UsageError(f"--refuse {text!r}: {NONE!r} and {ALL!r} stand alone")
        return () if items[0] == NONE else items
    for x in items:
        if x not in cons.industry_ids:
            raise UsageError(f"--refuse: {x!r} is not an industry of {cons.name}; industries: "
                             f"{industry_list(cons)}, or all, or none (a revocation)")
    return items


def _industry(cons: Consortium, ind: str) -> str:
    if ind not in cons.industry_ids:
        raise UsageError(f"--industry {ind!r} is not an industry of {cons.name}; industries: "
                         f"{industry_list(cons)}")
    return ind


def cmd_prefer(args: argparse.Namespace, connect: Connect) -> int:
    from ledger.errors import BadInput
    from ledger.numbers import normalize
    from ledger.payloads.preference import DAY_TYPES, MODES, parse_bands
    from markex.v1 import record_pb2 as rpb
    from markex.v1 import service_pb2 as pb

    d, cons, who, ep = _endpoint(args)
    number = normalize(args.number)
    refuse = refused_industries(cons, args.refuse)
    modes = _one_of("--modes", args.modes, MODES)
    days = _one_of("--days", args.days, DAY_TYPES)
    try:
        bands = parse_bands(args.hours) if args.hours is not None else ()
    except BadInput as e:
        raise UsageError(f"--hours: {e}") from e
    start = parse_time(args.start) if args.start else 0
    until = parse_time(args.until) if args.until else 0
    if not refuse and (modes or bands or days or until):
        raise UsageError("--refuse none revokes every refusal: give it no --modes, --hours, "
                         "--days or --until")
    if days and not bands:
        raise UsageError("--days says on which days the --hours allow marketing: give --hours")
    if start < 0 or until < 0:
        raise UsageError("--from and --until are after 1970")
    if until and until <= (start or _now_ms()):
        raise UsageError("--until must be after the preference takes effect (--from, or now)")
    req = pb.PreferenceRequest(
        number=number, refuse=list(refuse), modes=list(modes), days=list(days),
        allowed=[rpb.TimeBand(start_minute=s, end_minute=e) for s, e in bands],
        effective_from_ms=start, until_ms=until,
    )
    _issued(args, connect("admin", Dial(d, ep, who)).IssuePreference(req, timeout=RPC_TIMEOUT_S))
    return 0


def line_number(text: str) -> tuple[str, bool]:
    """(E.164 number or prefix, is a prefix) of NUMBER_OR_PREFIX
    (ledger.payloads.line.parse_line_number); UsageError when it is neither."""
    from ledger.errors import InvalidNumber
    from ledger.payloads.line import parse_line_number

    try:
        return parse_line_number(text)
    except InvalidNumber as e:
        raise UsageError(str(e)) from e


def cmd_line_register(args: argparse.Namespace, connect: Connect) -> int:
    from ledger.payloads.line import MarketerLine

    d, cons, who, ep = _endpoint(args)
    number, prefix = line_number(args.number)
    industry = _industry(cons, args.industry)
    # The record's own field rules (prefix length, name, the credit code's
    # check character) say what is wrong before the node is asked.
    line = MarketerLine(number=number, prefix=prefix, enterprise=args.enterprise,
                        uscc=args.uscc.strip().upper(), industry=industry)
    r = connect("admin", Dial(d, ep, who)).IssueMarketerLine(line.to_pb(), timeout=RPC_TIMEOUT_S)
    _issued(args, r)
    return 0


def cmd_line_deregister(args: argparse.Namespace, connect: Connect) -> int:
    from markex.v1 import record_pb2 as rpb
    from node.recordcli import id_ref, resolve_id

    d, _, who, ep = _endpoint(args)
    ref = id_ref(args.record_id)
    target = bytes.fromhex(ref) if len(ref) == 64 else resolve_id(
        ref, connect("audit", Dial(d, ep, who)), ep.participant or ep.member)
    r = connect("admin", Dial(d, ep, who)).IssueMarketerLine(
        rpb.MarketerLine(deregisters=target), timeout=RPC_TIMEOUT_S)
    _issued(args, r)
    return 0


def _now_ms() -> int:
    return int(time.time() * 1000)
