"""`markex demo` end to end at a small size: eight processes (with the
complaints centre and the regulator), the stories, equal roots, verified
lookups, complaints to outcomes, the bad list, a trail and the figures the
same on every node, audits, a participant's bulk import, a replica and a
watch consumer holding the node's root, and every process stopped."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from node.demo import run_demo
from node.demoplug import Plug, held

pytestmark = pytest.mark.timeout(300)


def _children() -> set[int]:
    """This process's child processes (zombies too: a child not waited for)."""
    me, out = os.getpid(), set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # it ended while we looked
        if int(fields[1]) == me:
            out.add(int(stat.parent.name))
    return out


def test_demo_passes(capsys: pytest.CaptureFixture[str]) -> None:
    before = _children()
    assert run_demo(numbers=150) == 0
    assert _children() - before == set()  # the nodes, the replica and the consumer stopped
    out = capsys.readouterr().out
    assert "demo passed" in out
    assert "same records on every node: yes; same view root on every node: yes" in out
    assert "set_aside=[internet-1:appeal upheld]" in out
    assert "reassigned" in out and "withdrawn" in out
    # the institute's and a carrier's web front ends, and a holder's appeal on the web
    assert "web front end of institute: http://127.0.0.1:" in out
    assert "web front end of carrier-1: http://127.0.0.1:" in out
    assert "holder's appeal" in out and "upheld, applied on 8 of 8 nodes" in out
    assert "NOT verified" not in out.split("the national view, looked up")[1]
    # consent and the screen: each story one line, the same answer on every node
    assert "+8613500001001 refuses real-estate calls" in out
    assert "+8613000001002 refuses finance calls" in out
    assert "registered +864008001234 for" in out and "callcenter-1" in out
    stories = {line.split(":")[0].strip(): line for line in out.splitlines()
               if "-> +86" in line}
    for story, action in (("a call to a subscriber who refused real estate", "BLOCK"),
                          ("a call to one who refused only finance", "LABEL"),
                          ("before a revocation", "BLOCK"), ("after the revocation", "LABEL"),
                          ("before the number changes hands", "BLOCK"),
                          ("after a reassignment, the old refusal void", "LABEL")):
        line = stories[story]
        assert f"  {action}" in line and "same on 8 nodes: yes" in line, line
    assert "callee-refused-industry" in stories["before a revocation"]
    assert ("callcenter-1 scrubbed its list of 4 at carrier-3's node: refused +8613500001001; "
            "as one screen per call: yes") in out
    assert "screens as the stories say: yes" in out
    assert "6 nodes up as separate processes" in out
    assert "complaints-1 and regulator-1 joined and caught up from their peers: 8 nodes" in out
    _complaint_lines(out)
    _plug_lines(out)
    for repr_ in ("None", "True", "False"):  # plain words, no Python reprs
        assert repr_ not in out, repr_


def _complaint_lines(out: str) -> None:
    """Issue 16's part of the demo, each line as the story says."""
    lines = out.splitlines()

    def line(start: str) -> str:
        found = [x for x in lines if x.strip().startswith(start)]
        assert len(found) == 1, (start, found)
        return found[0]

    assert "(filed at complaints-1's node, the complainant sealed); in carrier-3's queue on " \
        "its own node" in line("a subscriber complained about a real-estate call from "
                               "+864008001234")
    assert line("carrier-3 confirmed it and marked the line").endswith("closed, on time: yes")
    late = line("a complaint about +8613100001006 that carrier-2 leaves unhandled")
    assert "overdue in its queue at 20" in late and late.endswith(": yes")
    assert line("+8615800001007: carrier-1 found it not its subscriber").endswith(
        "forwarded it to carrier-2, which confirmed it and warned the line: closed")
    assert "on the bad list" in line("regulator-1 listed 安家房产经纪 Anjia Realty")
    blocked = line("after the sanction, the listed enterprise's line")
    assert "  BLOCK (caller-enterprise-listed: " in blocked and "same on 8 nodes: yes" in blocked
    # the trail: line, complaint, mark, handling, sanction, each proven, on every node
    at = lines.index("the trail of +864008001234 (markex trail), fetched and verified at every "
                     "node:")
    steps = [x.split() for x in lines[at + 1:at + 6]]
    assert [(s[0], s[2], s[3]) for s in steps] == [
        ("line", "carrier-3", "real-estate"), ("complaint", "complaints-1", "real-estate"),
        ("mark", "carrier-3", "real-estate"), ("handling", "carrier-3", "confirmed"),
        ("sanction", "regulator-1", "listed")]
    assert all(s[-1] == "proven" for s in steps)
    indexes = [int(s[-2]) for s in steps]
    assert indexes == sorted(indexes)
    assert lines[at + 6].strip() == ("verified on 8 of 8 nodes; the same records on every "
                                     "node: yes")
    # the figures: the same at every node; each carrier's complaints as the stories made them
    # the courier's mark, overturned on appeal, counts against internet-1
    assert " 1 appealed, 1 upheld against it (overturn rate " in line("internet-1:")
    assert line("carrier-1: ").strip() == ("carrier-1: 1 complaint(s) received, 1 forwarded, "
                                           "0 closed within the SLA, 0 open")
    assert line("carrier-2: ").strip() == ("carrier-2: 2 complaint(s) received, 0 forwarded, "
                                           "1 closed within the SLA, 1 open")
    assert line("carrier-3: ").strip() == ("carrier-3: 1 complaint(s) received, 0 forwarded, "
                                           "1 closed within the SLA, 0 open")
    assert line("the same figures on every node").strip() == \
        "the same figures on every node (8): yes"
    assert "complaints as the stories say: yes; trail and figures the same on every node: " \
        "yes" in out


def _plug_lines(out: str) -> None:
    """Issue 17's part: the import's counts, then the replica's and the watch
    consumer's roots beside the node's, all equal."""
    lines = [x.strip() for x in out.splitlines()]
    assert ("app-reports.csv: 20 marks and one bad line (line 12: a score of 150)") in lines
    first = next(x for x in lines if x.startswith("imported: "))
    assert first.startswith("imported: 20 issued, 0 duplicates (issued before), 1 error (line "
                            "12: BadLine: 'score' must be"), first
    again = next(x for x in lines if x.startswith("the same file again: "))
    assert again.startswith("the same file again: 0 issued, 20 duplicates (issued before), "
                            "1 error (line 12: "), again
    at = lines.index("9. the replica and the watch consumer against carrier-1's node")
    rows = {}
    for who, line in zip(("carrier-1's node", "replica", "watch consumer"),
                         lines[at + 1:at + 4], strict=True):
        assert line.startswith(who), line
        m = re.search(r"view root ([0-9a-f]{64})  entries (\d+) ", line)
        assert m, line
        rows[who] = m.groups()
    assert rows["replica"] == rows["carrier-1's node"] == rows["watch consumer"], rows
    assert int(rows["replica"][1]) >= 20 + 150  # the imported numbers and the traffic's
    assert "state following" in lines[at + 2]
    assert int(re.search(r"(\d+) checkpoints verified", lines[at + 3]).group(1)) >= 2  # type: ignore[union-attr]
    assert lines[at + 4].startswith("the replica and the watch consumer hold the node's root: "
                                    "yes")
    assert lines[at + 5] == ("+8613988800000 looked up at the replica: marketing, verified as "
                             "a node's answer: yes")
    assert "import, replica and watch as they should: yes" in out
    assert "COPIES DIFFER" not in out


def test_held_says_which_copy_differs() -> None:
    """The demo's check fails, naming the copy, unless both hold the node's
    root and entry count and the replica follows."""
    node = {"root": "ab" * 32, "entries": 170, "signers": ["carrier-1"]}
    assert held(node, dict(node), dict(node), "following") == (True, "")
    older = {"root": "cd" * 32, "entries": 169, "signers": ["carrier-1"]}
    ok, why = held(node, dict(node), older, "following")
    assert not ok and why == ("the watch consumer holds root cdcdcdcdcdcdcdcd... of 169 "
                              "entries, the node abababababababab... of 170")
    ok, why = held(node, {"error": "this replica has not verified a view checkpoint yet"},
                   dict(node), "syncing")
    assert not ok and why == ("the replica holds no verified checkpoint (this replica has not "
                              "verified a view checkpoint yet); the replica is syncing")
    ok, why = held(node, dict(node), dict(node), "halted (carrier-1: LogRefused: a fork)")
    assert not ok and why == "the replica is halted (carrier-1: LogRefused: a fork)"
    ok, why = held({"error": "BadSignature: no"}, dict(node), dict(node), "following")
    assert not ok and why == "the node's view checkpoint does not verify: BadSignature: no"


def test_plug_close_stops_both_processes(tmp_path: Path) -> None:
    """What run_demo's `finally` calls on an error or Ctrl-C: the replica and
    the watch consumer it started are stopped (here no node runs at all)."""
    from node.localnet import LocalNet

    net = LocalNet(tmp_path / "c", carriers=1, internet=0)
    plug = Plug(net, tmp_path)
    before = _children()
    try:
        plug.start()
        assert plug.replica is not None and plug.watch is not None
        assert {plug.replica.pid, plug.watch.pid} <= _children()
    finally:
        plug.close()
    assert plug.replica.poll() is not None and plug.watch.poll() is not None
    assert _children() <= before
    plug.close()  # twice is harmless


def test_ctrl_c_during_the_import_stops_the_demo(tmp_path: Path) -> None:
    """`markex import` turns Ctrl-C into exit code 130; the demo's import
    raises it again, so run_demo's `finally` stops everything instead of
    the demo going on with a failed import."""
    from node.demoplug import run_import, write_reports
    from node.localnet import LocalNet

    net = LocalNet(tmp_path / "c", carriers=1, internet=2)
    path = tmp_path / "reports.csv"
    write_reports(path, 20)

    def interrupted(need: object, dial: object) -> object:
        raise KeyboardInterrupt  # as if Ctrl-C came while the node was dialled

    with pytest.raises(KeyboardInterrupt):
        run_import(net, interrupted, path)


def test_demo_serve_keeps_the_pages_up_until_ctrl_c() -> None:
    import re
    import signal
    import subprocess
    import sys
    import urllib.request

    p = subprocess.Popen([sys.executable, "-m", "node.cli", "demo", "--numbers", "60", "--serve"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert p.stdout is not None
        lines = []
        for line in p.stdout:
            lines.append(line)
            if "serving until Ctrl-C" in line:
                break
        lines += [p.stdout.readline(), p.stdout.readline()]
        urls = re.findall(r"web front end of \S+: (http://127\.0\.0\.1:\d+)/", "".join(lines[-2:]))
        assert len(urls) == 2, "".join(lines)
        for url in urls:
            with urllib.request.urlopen(f"{url}/", timeout=10) as r:
                assert r.status == 200
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=60) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
