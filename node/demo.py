"""`markex demo`: a whole local consortium (the institute, three carriers, two
internet firms, the 12321 complaints centre, the regulator) as eight processes
on loopback, a realistic scenario replayed, the national view shown on every
node, an appeal from filing to decision, a recycled number, consent and the
call-path screen, complaints from filing to outcome, the bad list, a number's
trail and the accountability figures, cosigned checkpoints, and an audit; a
participant's bulk import, a replica and a watch consumer (node/demoplug.py).
Exits 0 only if every node holds the same records and the same view root,
every audit passes, both copies hold the node's root and every story ends as
it should."""

from __future__ import annotations

import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from ledger.screen import CALLER_LISTED
from markex.v1 import record_pb2 as rpb
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node.auditclient import audit_node_online
from node.command import iso
from node.demoplug import Plug, import_reports
from node.localnet import LocalNet
from node.lookup import lookup_verified, view_checkpoint_summary

DAY = 86_400_000
MOBILE_PREFIXES = ("134", "135", "136", "150", "151", "152", "157", "158", "182", "187", "188",
                   "130", "131", "132", "155", "156", "185", "186", "133", "153", "180", "189")
APP_CATEGORIES = ("marketing", "real-estate", "harassment", "finance-insurance", "recruitment")

DELIVERY_CO = "+8613800138000"  # a courier's dispatch line, wrongly marked fraud
SELF_FIX = "+8613912345678"  # marked by mistake, withdrawn by its marker
RECYCLED = "+8613700001111"  # an old fraudster's number, given to a new subscriber
BANK = "95555"  # a bank's service number
FRAUD = "+8617012345678"  # a real fraud line the institute confirms
HOLDER_LINE = "+8613800139000"  # a restaurant's delivery line; its holder appeals on the web

# Consent and the call-path screen (issue 15)
NO_REALTY = "+8613500001001"    # refuses real-estate calls
NO_FINANCE = "+8613000001002"   # refuses finance calls
CHANGED_MIND = "+8613300001003"  # refused real-estate, then revoked it
NEW_HOLDER = "+8613600001004"   # its old holder refused real-estate; given to a new subscriber
CALL_LINE = "+864008001234"     # callcenter-1's enterprise's line, registered for real-estate
CALL_ENTERPRISE = "安家房产经纪 Anjia Realty"
CALL_USCC = "91440300MA5F000007"

# Complaints and the bad list (issue 16)
LATE = "+8613100001006"       # carrier-2's; its complaint is left unhandled
PORTED = "+8615800001007"     # carrier-1's range, but the line is carrier-2's (ported)
SLA_CHECK_DAYS = 6            # the queue looked at this far ahead: past the 5-day close


def say(msg: str = "") -> None:
    print(msg, flush=True)


def _now() -> int:
    return int(time.time() * 1000)


def _traffic(net: LocalNet, count: int) -> int:
    """Marks from every participant on `count` numbers, with conflicts."""
    rng = random.Random(2018)
    carriers = [p for p in net.ids if p.startswith("carrier")]
    firms = [p for p in net.ids if p.startswith("internet")]
    jobs: list[tuple[str, str, str, int, int]] = []
    for _ in range(count):
        number = f"+86{rng.choice(MOBILE_PREFIXES)}{rng.randrange(10**8):08d}"
        kind = rng.random()
        if kind < 0.45:  # app users' reports
            jobs.append(
                (
                    rng.choice(firms),
                    number,
                    rng.choice(APP_CATEGORIES),
                    rng.randrange(30, 80),
                    rng.randrange(1, 400),
                )
            )
        elif kind < 0.75:  # network signals at a carrier
            jobs.append(
                (
                    rng.choice(carriers),
                    number,
                    rng.choice(["harassment", "one-ring", "fraud"]),
                    rng.randrange(40, 95),
                    rng.randrange(1, 50),
                )
            )
        elif kind < 0.9:  # two participants disagree
            jobs.append((firms[0], number, "fraud", 70, rng.randrange(1, 100)))
            jobs.append(
                (
                    carriers[rng.randrange(len(carriers))],
                    number,
                    "delivery",
                    60,
                    rng.randrange(1, 100),
                )
            )
        else:  # identity labels
            jobs.append(
                (
                    rng.choice(firms),
                    number,
                    rng.choice(["delivery", "taxi", "customer-service"]),
                    50,
                    rng.randrange(1, 100),
                )
            )
    def one(job: tuple[str, str, str, int, int]) -> int:
        pid, number, cat, score, reports = job
        for _ in range(3):
            try:
                net.mark(pid, number, cat, score, reports)
                return 1
            except grpc.RpcError:
                time.sleep(0.2)
        return 0

    with ThreadPoolExecutor(12) as ex:
        return sum(ex.map(one, jobs))


def _show(net: LocalNet, number: str, label: str) -> None:
    say(f"  {label}: {number}")
    roots = set()
    for pid in net.ids:
        r = lookup_verified(net.public(pid), net.consortium, number, _now())
        roots.add(r.get("view_root"))
        markers = ", ".join(
            f"{m.get('participant') or m.get('by')}:{m.get('category')}"
            for m in (r.get("markers") or [])
        )
        aside = ", ".join(
            f"{s.get('participant') or s.get('by')}:{s.get('reason')}"
            for s in (r.get("set_aside") or [])
        )
        checked = "verified" if r.get("verified") else f"NOT verified ({r.get('error')})"
        say(
            f"    {pid:<12} {r.get('category') or 'none':<17} risk={r.get('risk') or 'unknown':<6} score={r.get('score') if r.get('score') is not None else '-':<4}"
            f" {checked}  markers=[{markers}]"
            + (f" set_aside=[{aside}]" if aside else "")
        )
    say(f"    roots equal on every node: {_yes(len(roots) == 1)}")


def _yes(b: bool) -> str:
    return "yes" if b else "no"


def _wait_views(net: LocalNet, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        views = {}
        for pid in net.ids:
            text = net.public(pid).GetViewCheckpoint(pb.GetViewCheckpointRequest(), timeout=5).note
            views[pid] = view_checkpoint_summary(net.consortium, text)
        roots = {v["root"] for v in views.values()}
        quorum = all(
            len(v["signers"]) - 1 >= net.consortium.policy.cosign_quorum for v in views.values()
        )
        if len(roots) == 1 and quorum:
            return views
        if time.monotonic() > deadline:
            return views
        time.sleep(0.3)


def cmd_demo(args: Any, _connect: Any) -> int:
    """`markex demo [--quick] [--numbers N] [--serve]`."""
    return run_demo(quick=args.quick, numbers=args.numbers, serve=getattr(args, "serve", False))


def run_demo(quick: bool = False, numbers: int = 0, serve: bool = False) -> int:
    """The scenario; with `serve`, the consortium and its web front ends
    stay up afterwards until Ctrl-C (or SIGTERM)."""
    from node.connect import TlsConnect

    count = numbers or (600 if quick else 3000)
    with tempfile.TemporaryDirectory(prefix="markex-demo-") as tmp:
        net = LocalNet(Path(tmp) / "consortium", sync_interval=0.3, complaints=1,
                       regulators=1)
        tls = TlsConnect()
        webs: dict[str, Any] = {}
        plug = Plug(net, Path(tmp))
        try:
            code = _run(net, count, tls, webs, plug)
            if serve:
                _serve(webs)
            return code
        finally:
            plug.close()  # the replica and the watch consumer, before the nodes they read
            for w in webs.values():
                w.close()
            tls.close()
            net.stop_all()


def _run(net: LocalNet, count: int, tls: Any, webs: dict[str, Any], plug: Plug) -> int:
    say("markex demo: the national number-mark exchange on one machine")
    say(f"consortium {net.consortium.name}: " + ", ".join(net.ids))
    # The complaints centre and the regulator issue nothing in the traffic:
    # they join after it and catch up from their peers (cheaper on a small
    # machine than replicating every mark of the traffic live to eight nodes).
    late = [p for p in net.ids if p in ("complaints-1", "regulator-1")]
    t0 = time.monotonic()
    for pid in net.ids:
        if pid not in late:
            net.start(pid, wait=False)
    for pid in net.ids:
        if pid not in late:
            net.wait_ready(pid)
    say(f"{len(net.ids) - len(late)} nodes up as separate processes on loopback in "
        f"{time.monotonic() - t0:.1f}s")
    web_carrier = net.consortium.carrier_for(HOLDER_LINE) or "carrier-1"
    if tls is not None:
        webs.update(_front_ends(net, tls, ("institute", web_carrier)))
        for pid, w in webs.items():
            say(f"   web front end of {pid}: {w.url}/")

    say(
        f"\n1. marks from every participant on {count} numbers (apps' user reports, carriers' network signals, conflicts)"
    )
    t0 = time.monotonic()
    sent = _traffic(net, count)
    say(f"   {sent} marks issued in {time.monotonic() - t0:.1f}s")
    t0 = time.monotonic()
    for pid in late:
        net.start(pid)
    caught = net.wait_converged(timeout=120)
    say(f"   {' and '.join(late)} joined and caught up from their peers: "
        f"{len(net.ids)} nodes in {time.monotonic() - t0:.1f}s ({caught:.1f}s to converge)")
    plug.start()  # they follow from here on: the import and the stories reach them as changes
    imported, numbers = import_reports(net, tls, plug.work, max(20, count // 10))

    say("\n2. the stories")
    now = _now()
    wrong = net.mark("internet-1", DELIVERY_CO, "fraud", 80, 12)
    net.mark("carrier-2", DELIVERY_CO, "delivery", 60, 40)
    net.mark("internet-2", DELIVERY_CO, "delivery", 60, 300)
    say(
        f"   internet-1 marked the courier {DELIVERY_CO} as fraud (record {wrong.id.hex()[:16]}...)"
    )
    mistake = net.mark("internet-2", SELF_FIX, "harassment", 55, 3)
    net.admin("internet-2").IssueCorrection(
        rpb.Correction(
            targets=[mistake.id],
            action=rpb.CORRECTION_ACTION_WITHDRAW,
            reason="reports came from one prankster",
        ),
        timeout=30,
    )
    say(f"   internet-2 marked {SELF_FIX} by mistake and withdrew it at once")
    holder = net.consortium.carrier_for(RECYCLED) or "carrier-1"
    net.mark("internet-1", RECYCLED, "fraud", 90, 120, observed_at_ms=now - 30 * DAY)
    net.mark("carrier-3", RECYCLED, "fraud", 85, 20, observed_at_ms=now - 20 * DAY)
    net.mark("institute", FRAUD, "fraud", 95, 0)
    net.mark("internet-2", FRAUD, "delivery", 40, 5)
    for c in ("carrier-1", "carrier-2"):
        net.mark(c, BANK, "customer-service", 50, 10)
    net.mark("internet-2", HOLDER_LINE, "marketing", 60, 30)
    net.wait_converged(timeout=60)

    say("\n3. an appeal: the courier's carrier appeals internet-1's mark")
    holder_dc = net.consortium.carrier_for(DELIVERY_CO) or "carrier-1"
    appeal = net.admin(holder_dc).IssueCorrection(
        rpb.Correction(
            targets=[wrong.id],
            action=rpb.CORRECTION_ACTION_WITHDRAW,
            reason="number belongs to a licensed courier; business licence attached",
        ),
        timeout=30,
    )
    say(f"   {holder_dc} filed appeal {appeal.id.hex()[:16]}... (an appeal: {_yes(appeal.appeal)}, log index {appeal.index})")
    net.wait_converged(timeout=60)
    _wait_views(net, 20)
    _show(net, DELIVERY_CO, "while the appeal is pending")
    net.admin("institute").IssueCorrection(
        rpb.Correction(
            appeal_id=appeal.id,
            outcome=rpb.APPEAL_OUTCOME_UPHOLD,
            reason="verified: courier dispatch line",
        ),
        timeout=30,
    )
    say("   the institute upheld the appeal; the decision applies on every node at once")
    holder_appeal = None
    if webs:
        holder_appeal = _holder_appeal(net, webs[web_carrier].url, HOLDER_LINE)

    say(f"\n4. a recycled number: {holder}, which holds {RECYCLED}, gives it to a new subscriber")
    net.admin(holder).IssueReassignment(
        rpb.Reassignment(number=RECYCLED, effective_at_ms=now - DAY), timeout=30
    )

    screens_ok = _consent(net)
    complaints_ok = _complaints(net)

    waited = net.wait_converged(timeout=90)
    views = _wait_views(net, 60)
    say(f"\n7. converged ({waited:.1f}s after the last record)")
    say(
        "\nthe national view, looked up on every node and verified against cosigned view checkpoints:"
    )
    _show(net, DELIVERY_CO, "courier after the upheld appeal")
    _show(net, SELF_FIX, "withdrawn by its marker")
    _show(net, RECYCLED, "recycled number")
    _show(net, FRAUD, "institute-confirmed fraud vs one app's delivery label")
    _show(net, BANK, "bank service number")
    if holder_appeal is not None:
        _show_applied(webs[web_carrier].url, holder_appeal)
    _wait_log_checkpoints(net)
    accounts_ok = _trail(net, CALL_LINE) & _stats(net)

    say("\nper node: log size, feed heads, cosigned log checkpoint, view")
    heads_all = {}
    for pid in net.ids:
        heads = net.heads(pid)
        heads_all[pid] = heads
        cp = net.public(pid).GetLogCheckpoint(pb.GetLogCheckpointRequest(), timeout=5)
        cosigs = cp.note.count("\n— ") - 1
        v = views[pid]
        say(
            f"  {pid:<12} log={net.log_size(pid):<6} heads={','.join(f'{k}:{heads[k]}' for k in sorted(heads))}"
            f"  log checkpoint size {cp.size} cosigned by {cosigs}  view root {v['root'][:16]}... entries={v['entries']} signers={len(v['signers'])}"
        )
    same_records = all(h == heads_all[net.ids[0]] for h in heads_all.values())
    same_view = len({v["root"] for v in views.values()}) == 1

    audit_ok = True
    say(
        "\n8. audit of every node (online: entries, signatures, feeds, checkpoints, cosignatures, view)"
    )
    for pid in net.ids:
        rep = audit_node_online(net.dir, net.consortium, pid)
        audit_ok &= bool(rep["ok"])
        say(
            f"  {pid:<12} {'ok' if rep['ok'] else 'FAILED'}: records={rep.get('counts', {}).get('records')} findings={len(rep.get('findings', []))}"
        )

    plugged = plug.check(numbers) & imported
    say(
        f"\nsame records on every node: {_yes(same_records)}; same view root on every node: {_yes(same_view)}; audits pass: {_yes(audit_ok)}; screens as the stories say: {_yes(screens_ok)}"
    )
    say(f"complaints as the stories say: {_yes(complaints_ok)}; trail and figures the same on "
        f"every node: {_yes(accounts_ok)}; import, replica and watch as they should: "
        f"{_yes(plugged)}")
    ok = (same_records and same_view and audit_ok and screens_ok and complaints_ok
          and accounts_ok and plugged)
    say("demo " + ("passed" if ok else "FAILED"))
    say("next: the README's \"Using it\" story runs the same by hand, command by command")
    return 0 if ok else 1


# ------------------------------------------------------------------ consent and the screen


def _consent(net: LocalNet) -> bool:
    """Subscribers' refusals, a call centre's registered line, and the screen's
    answer for each story at every node; True when every answer is the one
    the story expects and every node gives it."""
    cons = net.consortium
    say("\n5. consent and the call-path screen")
    for number, refuse in ((NO_REALTY, ["real-estate"]), (NO_FINANCE, ["finance"]),
                           (CHANGED_MIND, ["real-estate"]), (NEW_HOLDER, ["real-estate"])):
        carrier = cons.carrier_for(number) or "institute"
        net.admin(carrier).IssuePreference(pb.PreferenceRequest(number=number, refuse=refuse),
                                           timeout=30)
        say(f"   {number} refuses {', '.join(refuse)} calls (issued at {carrier}'s node, "
            "its number sealed)")
    provider = cons.carrier_for(CALL_LINE) or "carrier-1"
    net.admin(provider).IssueMarketerLine(
        rpb.MarketerLine(number=CALL_LINE, enterprise=CALL_ENTERPRISE, uscc=CALL_USCC,
                         industry="real-estate"), timeout=30)
    say(f"   {provider} registered {CALL_LINE} for {CALL_ENTERPRISE} (real-estate), the line "
        "callcenter-1 calls from")
    net.wait_converged(timeout=60)
    # A registered marketer's call that nobody refuses goes through labelled
    # with its industry (LABEL); a refused one is blocked.
    ok = _story(net, "a call to a subscriber who refused real estate", NO_REALTY, "BLOCK")
    ok &= _story(net, "a call to one who refused only finance", NO_FINANCE, "LABEL")
    ok &= _story(net, "before a revocation", CHANGED_MIND, "BLOCK")
    net.admin(cons.carrier_for(CHANGED_MIND) or "institute").IssuePreference(
        pb.PreferenceRequest(number=CHANGED_MIND), timeout=30)  # refuses nothing: revokes
    net.wait_converged(timeout=60)
    ok &= _story(net, "after the revocation", CHANGED_MIND, "LABEL")
    ok &= _story(net, "before the number changes hands", NEW_HOLDER, "BLOCK")
    net.admin(cons.carrier_for(NEW_HOLDER) or "carrier-1").IssueReassignment(
        rpb.Reassignment(number=NEW_HOLDER, effective_at_ms=_now()), timeout=30)
    net.wait_converged(timeout=60)
    time.sleep(0.01)  # screened after the new tenure began
    ok &= _story(net, "after a reassignment, the old refusal void", NEW_HOLDER, "LABEL")
    return ok & _scrub(net, provider, (NO_REALTY, NO_FINANCE, CHANGED_MIND, NEW_HOLDER))


def _scrub(net: LocalNet, node: str, numbers: tuple[str, ...]) -> bool:
    """callcenter-1 scrubs its campaign list at `node` (it runs no node of its
    own): one ScreenBatch, the same answers as one screen per call."""
    from node import client

    ep = net.consortium.participant(node).member_endpoint  # type: ignore[union-attr]
    at = _now()
    calls = [pb.ScreenRequest(caller=CALL_LINE, callee=n, at_ms=at) for n in numbers]
    with client.member_channel(net.dir, "callcenter-1", ep) as ch:
        stub = rpc.ScreeningStub(ch)
        batch = stub.ScreenBatch(pb.ScreenBatchRequest(calls=calls), timeout=30).decisions
        singles = [stub.Screen(c, timeout=10) for c in calls]
    refused = [d.callee for d in batch if d.action == pb.SCREEN_ACTION_BLOCK]
    same = [(d.action, d.reasons[0].code) for d in batch] == [
        (d.action, d.reasons[0].code) for d in singles]
    say(f"   callcenter-1 scrubbed its list of {len(numbers)} at {node}'s node: refused "
        f"{', '.join(refused) or 'none'}; as one screen per call: {_yes(same)}")
    return same and refused == [NO_REALTY]


def _story(net: LocalNet, what: str, callee: str, want: str, code: str = "") -> bool:
    """One call screened at every node (as the callee's carrier), in one line;
    True when the action is `want` (and its first reason `code`, if given)."""
    from node import client

    cons = net.consortium
    carrier = cons.carrier_for(callee) or "carrier-1"
    req = pb.ScreenRequest(caller=CALL_LINE, callee=callee, at_ms=_now(),
                           mode=pb.CALL_MODE_VOICE)
    answers = []
    for pid in net.ids:
        ep = cons.participant(pid).member_endpoint  # type: ignore[union-attr]
        with client.member_channel(net.dir, carrier, ep) as ch:
            answers.append(rpc.ScreeningStub(ch).Screen(req, timeout=10))
    d = answers[0]
    action = pb.ScreenAction.Name(d.action).removeprefix("SCREEN_ACTION_")
    same = all((a.action, [r.code for r in a.reasons]) == (d.action, [r.code for r in d.reasons])
               for a in answers)
    why = f"{d.reasons[0].code}: {d.reasons[0].detail}" if d.reasons else "no reason"
    say(f"   {what}: {CALL_LINE} -> {callee}  {action} ({why}); same on {len(answers)} "
        f"nodes: {_yes(same)}")
    return action == want and same and (not code or d.reasons[0].code == code)


# ------------------------------------------------------------------ complaints and the bad list


def _complain(net: LocalNet, number: str, category: str, complainant: str) -> bytes:
    """A complaint filed at the complaints centre's node (it seals the
    complainant), waited for in the serving carrier's queue on its own node."""
    filed = net.admin("complaints-1").IssueComplaint(pb.ComplaintRequest(
        number=number, category=category, call_at_ms=_now() - 2 * 3_600_000, channel="app",
        complainant=complainant, description="一天打了三次 called three times today"),
        timeout=30)
    carrier = net.consortium.carrier_for(number) or "carrier-1"
    _queued(net, carrier, filed.id)
    return bytes(filed.id)


def _queued(net: LocalNet, carrier: str, cid: bytes, timeout: float = 30) -> pb.ComplaintSummary:
    """The complaint as `carrier` reads it in its queue on its own node."""
    deadline = time.monotonic() + timeout
    while True:
        got = net.audit(carrier, carrier).ListComplaints(pb.ListComplaintsRequest(), timeout=10)
        found = [c for c in got.complaints if c.id == cid]
        if found or time.monotonic() > deadline:
            return found[0] if found else pb.ComplaintSummary()
        time.sleep(0.1)


def _handle(net: LocalNet, carrier: str, cid: bytes, finding: int, **kw: Any) -> None:
    told = _now()  # the reported party and the complainant were told as it was handled
    net.admin(carrier).IssueHandling(rpb.Handling(
        complaints=[cid], finding=finding, feedback_reported_at_ms=told,
        feedback_complainant_at_ms=told, **kw), timeout=30)


def _complaints(net: LocalNet) -> bool:
    """12321 passes complaints to the serving carriers, which handle them on the
    record (one on time with a mark, one forwarded to the carrier that really
    serves the line, one left overdue); the regulator lists the enterprise
    behind the complained-of line and the screen blocks its calls. True when
    each ends as the story says."""
    cons = net.consortium
    say("\n6. complaints (12321, the complaints centre), handlings and the bad list")
    c3 = cons.carrier_for(CALL_LINE) or "carrier-3"
    cid = _complain(net, CALL_LINE, "real-estate", "+8613900000009")
    say(f"   a subscriber complained about a real-estate call from {CALL_LINE} (filed at "
        f"complaints-1's node, the complainant sealed); in {c3}'s queue on its own node")
    mark = net.mark(c3, CALL_LINE, "real-estate", 70, 1)
    _handle(net, c3, cid, rpb.HANDLING_FINDING_CONFIRMED, action=rpb.HANDLING_ACTION_MARK,
            mark_id=mark.id)
    done = _queued(net, c3, cid)
    ok = done.status == "closed" and not done.overdue
    say(f"   {c3} confirmed it and marked the line: {done.status}, on time: "
        f"{_yes(not done.overdue)}")

    late_carrier = cons.carrier_for(LATE) or "carrier-2"
    late = _complain(net, LATE, "harassment", "+8613900000010")
    at = _now() + SLA_CHECK_DAYS * DAY
    got = net.audit(late_carrier, late_carrier).ListComplaints(
        pb.ListComplaintsRequest(overdue_only=True, at_ms=at), timeout=10)
    overdue = [c.id for c in got.complaints] == [late]
    ok &= overdue
    say(f"   a complaint about {LATE} that {late_carrier} leaves unhandled: overdue in its "
        f"queue at {iso(at)}: {_yes(overdue)}")

    first = cons.carrier_for(PORTED) or "carrier-1"
    other = next(p for p in ("carrier-2", "carrier-3", "carrier-1") if p != first)
    fwd = _complain(net, PORTED, "harassment", "+8613900000011")
    _handle(net, first, fwd, rpb.HANDLING_FINDING_NOT_OURS, forward_to=other)
    moved = _queued(net, other, fwd)
    _handle(net, other, fwd, rpb.HANDLING_FINDING_CONFIRMED,
            action=rpb.HANDLING_ACTION_WARNING)
    closed = _queued(net, other, fwd)
    ok &= list(moved.forwarded_from) == [first] and closed.status == "closed"
    say(f"   {PORTED}: {first} found it not its subscriber and forwarded it to {other}, which "
        f"confirmed it and warned the line: {closed.status}")

    net.admin("regulator-1").IssueSanction(rpb.Sanction(
        enterprise=CALL_ENTERPRISE, uscc=CALL_USCC, reason="harassment calls after complaints",
        document="粤通管罚〔2026〕8号", listed_at_ms=_now()), timeout=30)
    say(f"   regulator-1 listed {CALL_ENTERPRISE} ({CALL_USCC}) on the bad list")
    net.wait_converged(timeout=60)
    return ok & _story(net, "after the sanction, the listed enterprise's line", NO_FINANCE,
                       "BLOCK", CALLER_LISTED)


def _wait_log_checkpoints(net: LocalNet, timeout: float = 60) -> None:
    """Until every node's cosigned log checkpoint holds its whole log (the
    trail's and the figures' proofs are against it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sizes = [(net.public(p).GetLogCheckpoint(pb.GetLogCheckpointRequest(), timeout=5).size,
                  net.log_size(p)) for p in net.ids]
        if all(cp == size for cp, size in sizes):
            return
        time.sleep(0.3)


def _trail(net: LocalNet, number: str) -> bool:
    """`markex trail` of `number` at every node: the same records, each proven."""
    from node.trailcli import fetch_trail

    say(f"\nthe trail of {number} (markex trail), fetched and verified at every node:")
    trails = []
    for pid in net.ids:
        t, _ = fetch_trail(net.consortium, net.public(pid), net.audit(pid), number, _now())
        trails.append(t.to_json())
    for r in trails[0]["records"]:
        what = ({"sanction": "delisted" if r.get("delist") else "listed",
                 "line": r.get("industry")}.get(r["kind"]) or r.get("category")
                or r.get("finding") or r.get("outcome") or r.get("action") or "")
        say(f"    {r['kind']:<12} by {r['issuer']:<12} {what:<12} log index {r['index']:<5} "
            f"{'proven' if r['verified'] else 'NOT proven'}")
    verified = sum(bool(t["verified"]) for t in trails)
    same = all([r["id"] for r in t["records"]] == [r["id"] for r in trails[0]["records"]]
               for t in trails)
    say(f"    verified on {verified} of {len(trails)} nodes; the same records on every node: "
        f"{_yes(same)}")
    return verified == len(trails) and same


def _stats(net: LocalNet) -> bool:
    """`markex stats` at every node: the accountability figures from each log."""
    from node.trailcli import LogFollower

    figures = []
    for pid in net.ids:
        f = LogFollower(net.consortium)
        f.follow(net.public(pid), net.audit(pid))
        figures.append(f.tally.figures())
    fig = figures[0]
    say("\nthe accountability figures (markex stats), computed from every node's log:")
    for pid in ("internet-1", "internet-2"):
        p = fig["participants"][pid]
        rate = "-" if p["overturn_rate"] is None else f"{100 * p['overturn_rate']:.1f}%"
        say(f"    {pid}: {p['marks_issued']} marks, {p['marks_appealed']} appealed, "
            f"{p['appeals_upheld']} upheld against it (overturn rate {rate})")
    for cid, c in fig["carriers"].items():
        say(f"    {cid}: {c['received']} complaint(s) received, {c['forwarded']} forwarded, "
            f"{c['closed_in_sla']} closed within the SLA, {c['open']} open")
    same = all(f == fig for f in figures)
    say(f"    the same figures on every node ({len(figures)}): {_yes(same)}")
    return same


# ------------------------------------------------------------------ the web front ends


def _front_ends(net: LocalNet, tls: Any, pids: tuple[str, ...]) -> dict[str, Any]:
    """A web front end per participant (reading its own node, filing appeals
    with its member certificate), each on a free loopback port."""
    from node.web.app import create_app
    from node.web.appeals import AppealRelay, install_relay
    from node.web.ratelimit import RateLimit
    from node.webcli import WebServer, node_reader

    out = {}
    for pid in pids:
        reader = node_reader(net.dir, net.consortium, pid, pid, tls)
        app = create_app(net.consortium, reader, rate=RateLimit(per_minute=0))
        install_relay(app, AppealRelay.tls(net.dir, net.consortium, pid, pid))
        out[pid] = WebServer(app).start()
    return out


def _http(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    import json
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _holder_appeal(net: LocalNet, site: str, number: str) -> str:
    """The holder's own appeal through the carrier's front end: the code read
    from the carrier's SMS outbox, the statement, the appeal's id."""
    import re

    from node.sms import OUTBOX_FILE, read_outbox

    say(f"\n3b. the holder of {number} appeals on the web ({site}/numbers/{number})")
    sent = _http(f"{site}/api/v1/codes", {"number": number})
    box = net.dir / sent["carrier"] / OUTBOX_FILE
    text = [m for m in read_outbox(box) if m["to"] == number][-1]["text"]
    say(f"   {sent['carrier']} texted a code to {number} (the demo reads it from {box.name})")
    code = re.search(r"\d{6}", text).group(0)  # type: ignore[union-attr]
    filed = _http(f"{site}/api/v1/appeals", {
        "number": number, "code": code,
        "statement": "这是我们餐厅的外卖配送电话 our restaurant's delivery line",
    })
    aid = filed["id"]
    say(f"   appeal {aid[:16]}... filed by {sent['carrier']}: {site}/appeals/{aid}")
    net.wait_converged(timeout=60)
    net.admin("institute").IssueCorrection(
        rpb.Correction(appeal_id=bytes.fromhex(aid), outcome=rpb.APPEAL_OUTCOME_UPHOLD,
                       reason="R07 verified delivery line"),
        timeout=30,
    )
    say("   the institute upheld it")
    return aid


def _show_applied(site: str, aid: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        st = _http(f"{site}/api/v1/appeals/{aid}")
        if st["applied_count"] == st["nodes"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    say(f"  holder's appeal {aid[:16]}...: {st['status']}, applied on {st['applied_count']} "
        f"of {st['nodes']} nodes ({site}/appeals/{aid})")


def _serve(webs: dict[str, Any]) -> None:
    """Keep everything up until Ctrl-C or SIGTERM."""
    from node.signals import StopSignal

    stop = StopSignal()
    say("\nserving until Ctrl-C:")
    for pid, w in webs.items():
        say(f"   web front end of {pid}: {w.url}/")
    stop.wait()


if __name__ == "__main__":
    sys.exit(run_demo(quick="--quick" in sys.argv))
