"""The `markex` command against real node processes: names and JSON outputs of
design.md, precise errors, and proofs that outside verifiers accept."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from ledger import merkle, note
from ledger.log import log_origin
from node.cli import main
from node.localnet import LocalNet

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    n = LocalNet(tmp_path_factory.mktemp("cli") / "c", carriers=1, internet=1, sync_interval=0.2)
    n.start_all()
    try:
        yield n
    finally:
        n.stop_all()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict | str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    try:
        return code, json.loads(out), err
    except json.JSONDecodeError:
        return code, out, err


def test_consortium_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "new"
    code, out, _ = run(
        capsys,
        "consortium",
        "init",
        str(d),
        "--carriers",
        "2",
        "--internet",
        "1",
        "--base-port",
        "31000",
        "--json",
    )
    assert code == 0
    assert out["participants"] == ["institute", "carrier-1", "carrier-2", "internet-1"]
    for pid in out["participants"]:
        for f in ("signing.key", "tls.key"):
            assert stat.S_IMODE((d / pid / f).stat().st_mode) == 0o600
        assert (d / pid / "node.toml").is_file()
    assert (d / "consortium.json.sig").is_file()
    # tampered configuration is refused by every command
    raw = (d / "consortium.json").read_bytes()
    (d / "consortium.json").write_bytes(raw.replace(b'"weight": 5', b'"weight": 9'))
    code, _, err = run(
        capsys, "keys", "verifier", "--consortium", str(d), "--participant", "carrier-1"
    )
    assert code == 1 and "ConfigSignatureError" in err
    # init into a non-empty folder is refused
    code, _, err = run(capsys, "consortium", "init", str(d))
    assert code == 1 and "empty" in err


def test_mark_correct_decide_reassign(net: LocalNet, capsys: pytest.CaptureFixture[str]) -> None:
    c = ["--consortium", str(net.dir), "--json"]
    code, m, _ = run(
        capsys, "mark", "--as", "carrier-1", "13812345001", "fraud", "--score", "80", *c
    )
    assert code == 0 and set(m) == {"id", "issuer", "seq"} and m["issuer"] == "carrier-1"
    code, own, _ = run(
        capsys, "correct", "--as", "carrier-1", m["id"], "--category", "harassment", *c
    )
    assert code == 0 and own["appeal"] is False and own["seq"] == m["seq"] + 1
    net.wait_converged(timeout=30)
    code, ap, _ = run(
        capsys,
        "correct",
        "--as",
        "internet-1",
        m["id"],
        "--withdraw",
        "--reason",
        "a licensed courier",
        *c,
    )
    assert code == 0 and ap["appeal"] is True
    net.wait_converged(timeout=30)
    code, _, err = run(capsys, "decide", "--as", "carrier-1", ap["id"], "--uphold", *c)
    assert code == 1 and "PERMISSION_DENIED" in err
    code, dec, _ = run(capsys, "decide", "--as", "institute", ap["id"], "--uphold", *c)
    assert code == 0 and dec["issuer"] == "institute"
    # A day ago: a reassignment takes effect at most policy.reassignment_window_ms before now.
    day_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86_400))
    code, ra, _ = run(capsys, "reassign", "--as", "carrier-1", "13812345001", "--at", day_ago, *c)
    assert code == 0 and ra["issuer"] == "carrier-1"
    net.wait_converged(timeout=30)


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["mark", "--as", "carrier-1", "call-me", "fraud"], "InvalidNumber"),
        (["mark", "--as", "carrier-1", "13812345678", "spam"], "UnknownCategory"),
        (
            ["mark", "--as", "carrier-1", "13812345678", "fraud", "--score", "101"],
            "MalformedRecord",
        ),
        (["mark", "--as", "nobody", "13812345678", "fraud"], "not a participant"),
        (["correct", "--as", "carrier-1", "abcd", "--withdraw"], "record id"),
        (["correct", "--as", "carrier-1", "00" * 32], "exactly one"),
        (
            ["reassign", "--as", "internet-1", "13812345678", "--at", "2026-01-01T00:00:00Z"],
            "PERMISSION_DENIED",
        ),
        (["reassign", "--as", "carrier-1", "13812345678", "--at", "yesterday"], "ISO 8601"),
        (
            ["log", "inclusion", "--node", "carrier-1", "--index", "99999", "--size", "100000"],
            "NOT_FOUND",
        ),
        (["lookup", "--node", "nowhere", "13812345678"], "neither a participant"),
    ],
)
def test_bad_input_gets_a_precise_error(
    net: LocalNet, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    # records issued by earlier tests may still be on their way to carrier-1
    net.wait_converged(timeout=30)
    before = net.heads("carrier-1")
    code, out, err = run(capsys, *argv, "--consortium", str(net.dir), "--json")
    assert code in (1, 2) and out == "" and needle in err
    assert net.heads("carrier-1") == before


def _checkpoint(
    net: LocalNet, capsys: pytest.CaptureFixture[str], pid: str
) -> tuple[str, note.Checkpoint]:
    code, text, _ = run(capsys, "log", "checkpoint", "--node", pid, "--consortium", str(net.dir))
    assert code == 0
    code, vk, _ = run(
        capsys, "keys", "verifier", "--participant", pid, "--consortium", str(net.dir)
    )
    assert code == 0
    verifier = note.Verifier.from_string(vk.strip())
    cp = note.open_checkpoint(text, verifier, log_origin(net.consortium.name, pid))
    return text, cp


def test_log_commands_and_proofs(net: LocalNet, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(12):
        net.mark("internet-1", f"1391234{i:04d}", "marketing")
    net.wait_converged(timeout=30)
    time.sleep(0.6)  # a fresh checkpoint
    _, cp = _checkpoint(net, capsys, "internet-1")
    c = ["--node", "internet-1", "--consortium", str(net.dir), "--json"]
    code, ent, _ = run(capsys, "log", "entries", "--start", "0", "--end", str(cp.size), *c)
    assert code == 0 and ent["start"] == 0 and ent["end"] == cp.size
    leaves = [merkle.leaf_hash(base64.b64decode(e)) for e in ent["entries"]]
    assert merkle.root_from_leaf_hashes(leaves) == cp.root
    for i in (0, cp.size // 2, cp.size - 1):
        code, inc, _ = run(
            capsys, "log", "inclusion", "--index", str(i), "--size", str(cp.size), *c
        )
        assert code == 0 and inc["leaf_hash"] == leaves[i].hex()
        merkle.verify_inclusion(
            leaves[i], i, cp.size, [bytes.fromhex(h) for h in inc["proof"]], cp.root
        )
    old = max(1, cp.size - 7)
    code, con, _ = run(capsys, "log", "consistency", "--old", str(old), "--new", str(cp.size), *c)
    assert code == 0 and (con["old"], con["new"]) == (old, cp.size)
    merkle.verify_consistency(
        old,
        cp.size,
        merkle.root_from_leaf_hashes(leaves[:old]),
        cp.root,
        [bytes.fromhex(h) for h in con["proof"]],
    )


def test_lookup_and_view_checkpoint(net: LocalNet, capsys: pytest.CaptureFixture[str]) -> None:
    net.mark("institute", "17012345678", "fraud", 95)
    net.wait_converged(timeout=30)
    deadline = time.monotonic() + 20
    c = ["--consortium", str(net.dir), "--json"]
    while True:
        code, out, _ = run(capsys, "lookup", "--node", "carrier-1", "17012345678", *c)
        if out.get("verified") or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert code == 0 and out["verified"] is True
    assert {
        "number",
        "category",
        "risk",
        "score",
        "markers",
        "set_aside",
        "appeal",
        "view_root",
        "verified",
    } <= set(out)
    assert (
        out["number"] == "+8617012345678" and out["category"] == "fraud" and out["risk"] == "high"
    )
    code, vc, _ = run(capsys, "view", "checkpoint", "--node", "carrier-1", *c)
    assert code == 0 and set(vc) == {"vector", "root", "entries", "signers"}
    assert vc["entries"] >= 1 and "carrier-1" in vc["signers"]


GO = shutil.which("go")
GOPATH = "/usr/share/gocode"


@pytest.mark.skipif(
    GO is None or not Path(GOPATH, "src/golang.org/x/mod/sumdb/note").is_dir(),
    reason="Go and Debian's golang-golang-x-mod-dev are needed (.ci/run installs them)",
)
def test_go_sumdb_note_and_tlog_accept_our_checkpoint_and_proofs(
    net: LocalNet, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """golang.org/x/mod's note.Open and tlog.CheckRecord/CheckTree, written
    elsewhere, accept our signed checkpoint and our proofs."""
    text, cp = _checkpoint(net, capsys, "carrier-1")
    vk = note.Verifier.for_key(
        log_origin(net.consortium.name, "carrier-1"),
        net.consortium.participant("carrier-1").public_key,
    ).to_string()  # type: ignore[union-attr]
    c = ["--node", "carrier-1", "--consortium", str(net.dir), "--json"]
    _, ent, _ = run(capsys, "log", "entries", "--start", "0", "--end", str(cp.size), *c)
    lines = [f"vkey {vk}", "note " + base64.b64encode(text.encode()).decode()]
    leaves = [merkle.leaf_hash(base64.b64decode(e)) for e in ent["entries"]]
    for i in range(cp.size):
        _, inc, _ = run(capsys, "log", "inclusion", "--index", str(i), "--size", str(cp.size), *c)
        lines.append(f"leaf {i} {ent['entries'][i]}")
        lines.append(f"inclusion {i} {','.join(inc['proof']) or '-'}")
    for old in range(1, cp.size):
        _, con, _ = run(capsys, "log", "consistency", "--old", str(old), "--new", str(cp.size), *c)
        old_root = base64.b64encode(merkle.root_from_leaf_hashes(leaves[:old])).decode()
        lines.append(f"consistency {old} {old_root} {','.join(con['proof']) or '-'}")
    env = dict(
        os.environ, GOPATH=GOPATH, GO111MODULE="off", GOFLAGS="", GOCACHE=str(tmp_path / "gocache")
    )
    src = Path(__file__).parent / "interop" / "verify.go"
    res = subprocess.run(
        [GO, "run", str(src)],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"
    # and a tampered note is refused by the same outside verifier
    bad = text.replace("\n" + str(cp.size) + "\n", "\n" + str(cp.size + 1) + "\n", 1)
    lines[1] = "note " + base64.b64encode(bad.encode()).decode()
    res = subprocess.run(
        [GO, "run", str(src)],
        input="\n".join(lines[:2]) + "\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode != 0 and "note.Open" in res.stderr
