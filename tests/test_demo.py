"""`markex demo` end to end at a small size: eight processes (with the
complaints centre and the regulator), the stories, equal roots, verified
lookups, complaints to outcomes, the bad list, a trail and the figures the
same on every node, audits, and every process stopped."""

from __future__ import annotations

import pytest

from node.demo import run_demo

pytestmark = pytest.mark.timeout(300)


def test_demo_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_demo(numbers=150) == 0
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
