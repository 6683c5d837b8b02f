"""The web front end in a real headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium 4) against real in-process nodes: the
browser's own verdict on a marked number, an unmarked one and a bent answer;
a number with a script in it never runs; and the browser verifier
(node/web/static/verify.js) against answers Python produced and bent, each
verdict compared with node/lookup.py's, and its view-proof walk against
ledger/viewtree.py's on random proofs.

Screenshots: `MARKEX_SCREENSHOTS=docs/screenshots pytest tests/test_web_browser.py
-k screenshots` rewrites the README's images (by default they go to a tmp dir)."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keys.consortium import DEFAULT_TAXONOMY
from keys.signing import SigningKey
from ledger import note, viewtree
from ledger import view as V
from ledger.errors import BadSignature, LedgerError
from ledger.view.parts import EntryComplaint
from ledger.viewtree import ViewProof
from markex.v1 import service_pb2 as pb
from node.lookup import verify_answer
from node.web.report import NodeReader, trust_anchor
from node.webcli import WebServer
from tests.browser import chromium, needs_chromium, no_alert
from tests.test_web import MARKED, SCRIPT, UNMARKED, WebNet, web_net  # noqa: F401

pytestmark = [
    pytest.mark.timeout(300),
    needs_chromium,
]


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    with chromium(1400) as drv:
        yield drv


@pytest.fixture(scope="module")
def site(web_net: WebNet) -> Iterator[str]:  # noqa: F811
    with WebServer(web_net.app()) as srv:
        yield srv.url


def _verdict(drv: Any) -> tuple[str, str]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    box = WebDriverWait(drv, 20).until(
        lambda d: (b := d.find_element(By.ID, "browser-verdict"))
        and b.get_attribute("data-verified") != "pending"
        and b
    )
    return box.get_attribute("data-verified"), box.text



def test_marked_number_is_verified_by_the_browser(driver: Any, site: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{site}/numbers/{MARKED}")
    state, text = _verdict(driver)
    assert state == "yes", text
    assert "verified by your browser: 3 of 3 members" in text
    rows = driver.find_elements(By.CSS_SELECTOR, "#markers tr.marker")
    assert {r.get_attribute("data-participant") for r in rows} == {"carrier-1", "internet-1"}
    assert "诈骗 fraud" in driver.find_element(By.ID, "category").text


def test_unmarked_number_is_verified_absent(driver: Any, site: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{site}/numbers/{UNMARKED}")
    state, text = _verdict(driver)
    assert state == "yes", text
    assert "not marked" in driver.find_element(By.ID, "unmarked").text


class _Bent(NodeReader):
    """A node that bends its answers: `how` rewrites each LookupResponse."""

    def __init__(self, inner: NodeReader, how: Any) -> None:
        super().__init__(inner.node_id, inner.public, inner.audit)
        object.__setattr__(self, "how", how)

    def lookup(self, asked: str, at_ms: int) -> pb.LookupResponse:
        return self.how(super().lookup(asked, at_ms))  # type: ignore[attr-defined]


def _bend_proof(resp: pb.LookupResponse) -> pb.LookupResponse:
    proof = bytearray(resp.proof)
    proof[-1] ^= 0x01
    return pb.LookupResponse(
        entry=resp.entry, proof=bytes(proof), view_checkpoint=resp.view_checkpoint,
        number=resp.number,
    )


def test_a_bent_answer_is_shown_as_not_verified(driver: Any, web_net: WebNet) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    from node.web.app import create_app
    from node.web.ratelimit import RateLimit

    app = create_app(web_net.cons, _Bent(web_net.reader, _bend_proof),
                     rate=RateLimit(per_minute=0))
    with WebServer(app) as srv:
        driver.get(f"{srv.url}/numbers/{MARKED}")
        state, text = _verdict(driver)
    assert state == "no" and "not verified by your browser" in text, text
    assert "view proof" in text
    assert driver.find_element(By.ID, "server-verdict").get_attribute("data-verified") == "no"


@pytest.mark.parametrize("how", ["path", "search"])
def test_a_number_with_a_script_in_it_never_runs(driver: Any, site: str, how: str) -> None:
    from selenium.webdriver.common.by import By

    if how == "path":
        driver.get(f"{site}/numbers/{SCRIPT}")
    else:
        driver.get(f"{site}/")
        box = driver.find_element(By.ID, "number")
        box.send_keys(SCRIPT + '"><img src=x onerror=alert(2)>')
        box.submit()
    from selenium.webdriver.support.ui import WebDriverWait

    # the error page, once the form's navigation has finished
    err = WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.ID, "error"))[0].text
    no_alert(driver)
    assert "<script>alert(1)</script>" in err  # shown as text, not run
    assert driver.find_elements(By.TAG_NAME, "img") == []
    assert driver.find_elements(By.TAG_NAME, "script") == []  # the error page runs nothing


# ------------------------------------------------------------------ verifier vectors


def _js_verify(drv: Any, site: str, asked: str, api: dict, trust: dict, now_ms: int) -> dict:
    if not drv.current_url.startswith(site):
        drv.get(f"{site}/")
    return drv.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "import('/static/verify.js').then((m) => done(m.verifyAnswer(...arguments)))"
        ".catch((e) => done({ok: false, why: 'import: ' + e}));",
        asked, api, trust, now_ms,
    )


def _py_verify(w: WebNet, asked: str, api: dict, now_ms: int) -> tuple[bool, str]:
    resp = pb.LookupResponse(
        entry=base64.b64decode(api["entry"]) if api["entry"] else b"",
        proof=base64.b64decode(api["proof"]),
        view_checkpoint=api["view_checkpoint"],
        number=api["number"],
    )
    try:
        out = verify_answer(w.cons, asked, resp, api["view_checkpoint"], api["at_ms"], now_ms)
    except (LedgerError, BadSignature) as e:
        return False, f"{type(e).__name__}: {e}"
    # A client shows its own evaluation of the proven entry, never the node's.
    for k in ("category", "risk", "score", "markers", "set_aside"):
        if out[k] != api["answer"][k]:
            return False, f"the answer's {k} is not the proven entry's"
    return out["verified"], out.get("error", "")


def _without_cosignatures(text: str, keep: int) -> str:
    parsed = note.Note.parse(text)
    own, cos = parsed.signatures[:1], parsed.signatures[1:]
    return note.Note(parsed.text, own + cos[:keep]).to_text()


def _resigned_by_stranger(text: str) -> str:
    parsed = note.Note.parse(text)
    origin = parsed.text.split("\n", 1)[0]
    stranger = SigningKey.from_seed(bytes(range(32)))
    own = note.Note.parse(note.sign_note(parsed.text, origin, stranger)).signatures
    return note.Note(parsed.text, own + parsed.signatures[1:]).to_text()


def _forged_cosignature(text: str) -> str:
    parsed = note.Note.parse(text)
    sigs = list(parsed.signatures)
    s = sigs[1]
    sigs[1] = note.NoteSignature(s.name, s.key_id, s.signature[:-1] + bytes([s.signature[-1] ^ 1]))
    return note.Note(parsed.text, tuple(sigs)).to_text()


def _vectors(w: WebNet) -> list[tuple[str, str, dict, int, bool, str]]:
    """(name, asked, api answer, now, verified?, a word the browser's reason holds)."""
    c = w.app().test_client()
    marked = c.get(f"/api/v1/numbers/{MARKED}").get_json()
    unmarked = c.get(f"/api/v1/numbers/{UNMARKED}").get_json()
    now = marked["at_ms"]
    max_age = w.cons.policy.view_max_age_ms
    entry = bytearray(base64.b64decode(marked["entry"]))
    entry[entry.index(b'"score":80')+8] = ord("9")
    proof = bytearray(base64.b64decode(marked["proof"]))
    proof[-5] ^= 0x40
    b64 = lambda b: base64.b64encode(bytes(b)).decode()  # noqa: E731
    bent_answer = {**marked["answer"], "category": "delivery"}
    hidden_marker = {**marked["answer"], "markers": marked["answer"]["markers"][:1]}
    return [
        ("genuine", MARKED, marked, now, True, ""),
        ("genuine absence", UNMARKED, unmarked, unmarked["at_ms"], True, ""),
        ("another number", UNMARKED, marked, now, False, "asked about"),
        ("another number's proof", UNMARKED, {**marked, "number": UNMARKED}, now, False, "proof"),
        ("absence claimed for a marked number", MARKED,
         {**unmarked, "number": MARKED}, now, False, "proof"),
        ("bent proof", MARKED, {**marked, "proof": b64(proof)}, now, False, "proof"),
        ("bent entry", MARKED, {**marked, "entry": b64(entry)}, now, False, "proof"),
        ("genuine entry, another category shown", MARKED, {**marked, "answer": bent_answer},
         now, False, "category is not what the proven entry says"),
        ("genuine entry, a marker hidden", MARKED, {**marked, "answer": hidden_marker},
         now, False, "markers is not what the proven entry says"),
        ("unknown key", MARKED,
         {**marked, "view_checkpoint": _resigned_by_stranger(marked["view_checkpoint"])},
         now, False, "known key"),
        ("too few cosignatures", MARKED,
         {**marked, "view_checkpoint": _without_cosignatures(marked["view_checkpoint"], 1)},
         now, False, "cosigned by 1"),
        ("no cosignatures", MARKED,
         {**marked, "view_checkpoint": _without_cosignatures(marked["view_checkpoint"], 0)},
         now, False, "cosigned by 0"),
        ("forged cosignature", MARKED,
         {**marked, "view_checkpoint": _forged_cosignature(marked["view_checkpoint"])},
         now, False, "cosignature does not verify"),
        ("stale", MARKED, marked, marked["view"]["signed_at_ms"] + max_age + 1000, False, "old"),
        ("from the future", MARKED, marked,
         marked["view"]["signed_at_ms"] - w.cons.policy.clock_skew_ms - 1000, False, "future"),
    ]


def test_browser_verdicts_match_markex_lookup_on_python_vectors(
    driver: Any, site: str, web_net: WebNet  # noqa: F811
) -> None:
    trust = trust_anchor(web_net.cons)
    for name, asked, api, now, ok, word in _vectors(web_net):
        py_ok, py_why = _py_verify(web_net, asked, api, now)
        js = _js_verify(driver, site, asked, api, trust, now)
        assert py_ok is ok, (name, py_why)
        assert js["ok"] is ok, (name, js)
        if ok:
            assert js["members"] == 3 and len(js["cosigners"]) == 2, (name, js)
            assert js["answer"]["category"] == api["answer"]["category"], name
        else:
            assert word in js["why"], (name, js["why"])


def test_a_member_key_the_browser_does_not_trust_is_refused(
    driver: Any, site: str, web_net: WebNet  # noqa: F811
) -> None:
    api = web_net.app().test_client().get(f"/api/v1/numbers/{MARKED}").get_json()
    trust = trust_anchor(web_net.cons)
    stranger = base64.b64encode(SigningKey.from_seed(bytes(32)).public_bytes).decode()
    bad = {**trust, "members": [
        {**m, "public_key": stranger} if m["id"] == "carrier-1" else m for m in trust["members"]
    ]}
    js = _js_verify(driver, site, MARKED, api, bad, api["at_ms"])
    assert js["ok"] is False and "known key" in js["why"]


def _random_proof(rng: random.Random) -> tuple[bytes, bytes | None, ViewProof]:
    """A proof of a random shape: siblings at binary and sixteen-way depths,
    sometimes entries listed at the key's position."""
    key = rng.randbytes(32)
    pos = viewtree.position(key)
    bitmap = 0
    for d in range(24):
        if rng.random() < 0.3:
            bitmap |= 1 << (viewtree.BITMAP_BITS - 1 - d)
    for d in range(24, 64, 4):
        own = viewtree.child_index(pos, d)
        for i in range(16):
            if i != own and rng.random() < 0.08:
                bitmap |= 1 << (viewtree.BITMAP_BITS - 1 - viewtree.proof_bit(d, i))
    siblings = tuple(rng.randbytes(32) for _ in range(bitmap.bit_count()))
    listed = sorted(key[:8] + rng.randbytes(24) for _ in range(rng.choice([0, 0, 1, 2])))
    proof = ViewProof(tuple((k, rng.randbytes(32)) for k in listed if k != key), bitmap, siblings)
    entry = None if rng.random() < 0.3 else rng.randbytes(32)
    return key, entry, proof


def test_browser_view_proof_walk_is_viewtree_proof_root(
    driver: Any, site: str
) -> None:
    rng = random.Random(14)
    cases = []
    for _ in range(60):
        key, entry, proof = _random_proof(rng)
        cases.append([key.hex(), entry.hex() if entry else None,
                      base64.b64encode(proof.encode()).decode(),
                      viewtree.proof_root(key, entry, proof).hex()])
    # and malformed ones Python refuses: the number's own key listed, a truncated proof
    key, entry, proof = _random_proof(rng)
    own = dataclasses.replace(proof, listed=((key, bytes(32)),))
    bad = [[key.hex(), None, base64.b64encode(own.encode()).decode(), None],
           [key.hex(), None, base64.b64encode(proof.encode()[:-1]).decode(), None]]
    driver.get(f"{site}/")
    got = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "import('/static/verify.js').then((m) => done(arguments[0].map(([k, e, p]) => {"
        "  try { return m.proofRootHex(k, e, p); } catch (x) { return null; } })));",
        cases + bad,
    )
    assert got == [c[3] for c in cases] + [None] * len(bad)


def _random_entry(rng: random.Random, k: int) -> V.Entry:
    """An entry exercising every rule evaluate has: several marks per
    participant, recategorizations, set-aside spans, protections, expiry,
    reassignments, appeals in every status, identity labels and the institute,
    complaints under the complaint rule."""
    parts = [("institute", "institute", 5), ("carrier-1", "carrier", 2),
             ("carrier-2", "carrier", 2), ("internet-1", "internet", 1)]
    cats = [c.id for c in DEFAULT_TAXONOMY]
    rid = lambda: rng.randbytes(32)  # noqa: E731
    t = lambda: rng.randrange(0, 100)  # noqa: E731
    marks = []
    for seq in range(rng.randrange(0, 7)):
        pid, role, w = rng.choice(parts)
        obs = t()
        recat = tuple(sorted(
            (V.Recategorization(t(), rng.choice(cats), rid()) for _ in range(rng.randrange(0, 2))),
            key=lambda r: (r.at, r.ref),
        ))
        spans = tuple(
            V.SetAsideSpan(t(), rng.choice(["withdrawn", "appeal upheld", "reassigned"]), rid())
            for _ in range(rng.randrange(0, 2))
        )
        marks.append(V.EntryMark(
            rid(), pid, role, w, rng.choice(cats), rng.randrange(0, 101), rng.randrange(0, 9),
            obs, obs + rng.randrange(1, 80), obs + rng.randrange(0, 5), seq + 1, recat, spans,
        ))
    marks.sort(key=lambda m: (m.observed_at, m.id))
    appeals = []
    for _ in range(rng.randrange(0, 3)):
        status = rng.choice(["pending", "upheld", "rejected", "withdrawn"])
        filed = t()
        closed = None if status == "pending" else filed + rng.randrange(0, 30)
        appeals.append(V.Appeal(
            rid(), rng.choice(parts)[0], tuple(m.id for m in marks[:1]), "withdraw", "",
            filed, status, closed, rid() if closed is not None else b"",
        ))
    appeals.sort(key=lambda a: (a.filed_at, a.id))
    reass = sorted(
        (V.EntryReassignment(rid(), "carrier-1", t()) for _ in range(rng.randrange(0, 2))),
        key=lambda x: (x.effective_at, x.id),
    )
    prots = sorted((V.Protection(rng.choice(cats), s0 := t(), s0 + rng.randrange(1, 50), rid())
                    for _ in range(rng.randrange(0, 2))),
                   key=lambda p: (p.since, p.category, p.until, p.decision))
    # Complaints and the complaint rule (docs/view.md): some tags repeat.
    complaints = sorted(
        (EntryComplaint(rid(), "complaints-1", rng.choice(cats), t(), 0,
                        bytes([rng.randrange(0, 6)]) * 8) for _ in range(rng.randrange(0, 8))),
        key=lambda c: (c.call_at, c.id),
    )
    rules = V.Rules(rng.choice([1, 2, 3]), rng.choice([1, 2]), rng.random() < 0.7,
                    rng.choice([0, 2, 3]), rng.choice([10, 40]), rng.choice(["medium", "high"]))
    categories = tuple(V.CategoryInfo(c.id, c.rank, c.risk) for c in DEFAULT_TAXONOMY)
    return V.Entry(f"+86138000{k:05d}", rules, categories, tuple(marks), tuple(appeals),
                   tuple(reass), tuple(prots), tuple(complaints))


def test_browser_evaluation_is_entry_evaluate(driver: Any, site: str) -> None:
    rng = random.Random(1414)
    cases, want = [], []
    for k in range(150):
        e = V.Entry.decode(_random_entry(rng, k).encode())  # through the bytes, as served
        for at in (0, 25, 50, 75, 99, 200):
            cases.append([json.loads(e.encode()), at])
            got = e.evaluate(at).to_json()
            del got["number"], got["at_ms"]
            want.append(got)
    driver.get(f"{site}/")
    got = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "import('/static/verify.js').then((m) => done(arguments[0].map("
        "  ([e, at]) => m.evaluateEntry(e, at))));",
        cases,
    )
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, (i, cases[i])
    assert sum(1 for w in want if w["markers"]) > 100  # most cases are not trivial
    assert {w["risk"] for w in want} == {"none", "medium", "high"}
    assert {s["reason"] for w in want for s in w["set_aside"]} == set(V.REASONS)
    assert sum(1 for w in want if w["complainants"] >= 3) > 10  # the complaint rule is met


def test_browser_checks_the_records_log_proofs(
    driver: Any, site: str, web_net: WebNet  # noqa: F811
) -> None:
    api = web_net.app().test_client().get(f"/api/v1/numbers/{MARKED}").get_json()
    trust = trust_anchor(web_net.cons)

    def js(a: dict) -> dict:
        return driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "import('/static/verify.js').then((m) => done(m.verifyLogProofs(arguments[0], "
            "arguments[1])));",
            a, trust,
        )

    driver.get(f"{site}/")
    ok = js(api)
    assert ok["ok"] and ok["proven"] == ok["total"] == len(api["records"]) >= 2
    assert sorted(ok["cosigners"]) == ["institute", "internet-1"]
    rec = dict(api["records"][0])
    rec["index"] = rec["index"] + 1
    bent = js({**api, "records": [rec, *api["records"][1:]]})
    assert not bent["ok"] and "inclusion proof" in bent["why"]
    log = dict(api["log_checkpoint"])
    log["note"] = _without_cosignatures(log["note"], 1)
    few = js({**api, "log_checkpoint": log})
    assert not few["ok"] and "quorum" in few["why"]
    log["note"] = _resigned_by_stranger(api["log_checkpoint"]["note"])
    assert "known key" in js({**api, "log_checkpoint": log})["why"]


def test_browser_inclusion_walk_is_rfc9162(driver: Any, site: str) -> None:
    from ledger import merkle

    cases, want = [], []
    for size in range(1, 34):
        tree = merkle.MemoryNodes()
        leaves = [merkle.leaf_hash(bytes([size, i])) for i in range(size)]
        for leaf in leaves:
            tree.append(leaf)
        for i in range(size):
            path = merkle.inclusion_proof(tree, i, size)
            cases.append([leaves[i].hex(), i, size, [h.hex() for h in path]])
            want.append(tree.root().hex())
            if path:  # a path one hash short, and one hash too long
                cases.append([leaves[i].hex(), i, size, [h.hex() for h in path[:-1]]])
                want.append(None)
            cases.append([leaves[i].hex(), i, size, [h.hex() for h in [*path, leaves[0]]]])
            want.append(None)
    driver.get(f"{site}/")
    got = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "import('/static/verify.js').then((m) => done(arguments[0].map(([l, i, n, p]) => {"
        "  try { return m.inclusionRootHex(l, i, n, p); } catch (x) { return null; } })));",
        cases,
    )
    assert got == want  # a path too short or too long is refused, not walked


# ------------------------------------------------------------------ screenshots


def test_screenshots_of_the_number_page(driver: Any, site: str, tmp_path: Path) -> None:
    from tests.test_web import APPEALED

    out = Path(os.environ.get("MARKEX_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    for name, number in (("number-marked", MARKED), ("number-appealed", APPEALED),
                         ("number-unmarked", UNMARKED)):
        driver.get(f"{site}/numbers/{number}")
        assert _verdict(driver)[0] == "yes"
        png = out / f"{name}.png"
        driver.save_screenshot(str(png))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if number != UNMARKED:
            log = driver.find_element("id", "browser-log-verdict")
            assert log.get_attribute("data-verified") == "yes", log.text


def test_statistics_page_and_its_export_verified(
    driver: Any, web_net: WebNet, tmp_path: Path  # noqa: F811
) -> None:
    """The statistics page in the browser: its figures and charts, and the
    latest export it offers, downloaded by the browser and checked by
    `markex view verify-export` against the pinned consortium alone."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from node.cli import main
    from node.web.publish import bp as publish

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    with WebServer(web_net.app(blueprints=[publish])) as srv:
        driver.get(srv.url + "/stats")
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "img"))
        text = driver.find_element(By.TAG_NAME, "body").text
        charts = driver.find_elements(By.CSS_SELECTOR, "img")
        assert len(charts) >= 4
        # each chart is an SVG the page really loaded (not a broken image)
        assert all(driver.execute_script("return arguments[0].naturalWidth", c) > 0 for c in charts)
        figures = json.loads(driver.execute_script(
            "return fetch('/api/v1/stats').then(r => r.text())"))
        assert str(figures["entries"]) in text
        driver.find_element(By.LINK_TEXT, "JSONL").click()
        WebDriverWait(driver, 30).until(
            lambda d: [p for p in downloads.iterdir() if p.suffix == ".jsonl"]
        )
    got = next(p for p in downloads.iterdir() if p.suffix == ".jsonl")
    assert main(["view", "verify-export", str(got), "--consortium", str(web_net.net.dir),
                 "--as", "carrier-1"]) == 0
    tampered = tmp_path / "tampered.jsonl"
    lines = got.read_text(encoding="utf-8").splitlines()
    tampered.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")  # a row left out
    assert main(["view", "verify-export", str(tampered), "--consortium", str(web_net.net.dir),
                 "--as", "carrier-1"]) == 1
