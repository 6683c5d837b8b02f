"""`markex demo` end to end at a small size: six processes, the stories, equal
roots, verified lookups, audits, and every process stopped."""

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
    assert "holder's appeal" in out and "upheld, applied on 6 of 6 nodes" in out
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
        assert f"  {action}" in line and "same on 6 nodes: yes" in line, line
    assert "callee-refused-industry" in stories["before a revocation"]
    assert ("callcenter-1 scrubbed its list of 4 at carrier-3's node: refused +8613500001001; "
            "as one screen per call: yes") in out
    assert "screens as the stories say: yes" in out
    for repr_ in ("None", "True", "False"):  # plain words, no Python reprs
        assert repr_ not in out, repr_


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
