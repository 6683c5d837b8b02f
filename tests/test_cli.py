"""The `markex` command against real nodes, run in this process (the TLS
connections are the ones `markex` opens): names and JSON outputs of
design.md, precise errors, and proofs that outside verifiers accept.
tests/test_cli_inprocess.py runs the commands against stub servicers."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from keys.consortium import Consortium
from keys.layout import NodeConfig
from keys.signing import SigningKey
from ledger import merkle, note
from ledger.log import log_origin
from node.cli import main
from node.client import INSTITUTE_KEY_ENV
from node.localnet import LocalNet
from node.server import Node

pytestmark = pytest.mark.timeout(180)


class InProcessNet(LocalNet):
    """LocalNet's consortium and clients, its nodes `Node`s in this process:
    nothing here is about processes."""

    nodes_running: list[Node]

    def start_all(self) -> None:
        assert self.sync_interval is not None
        self.nodes_running = [
            Node(NodeConfig.for_participant(self.dir, pid), sync_interval=self.sync_interval)
            for pid in self.ids
        ]
        for node in self.nodes_running:
            node.start()

    def stop_all(self) -> None:
        super().stop_all()  # the client channels
        # Together: each waits for its peer links, which wait for the others.
        with ThreadPoolExecutor(len(self.nodes_running)) as ex:
            list(ex.map(lambda node: node.stop(grace=0.1), self.nodes_running))

    def serving_pinned(self) -> Iterator[InProcessNet]:
        """Start every node, yield the net with the institute key pinned in
        the environment (commands without --as take it from there), and stop
        everything after: a module fixture's body."""
        self.start_all()
        with pytest.MonkeyPatch.context() as mp:
            key = NodeConfig.for_participant(self.dir, "institute").institute_key
            mp.setenv(INSTITUTE_KEY_ENV, base64.b64encode(key).decode())
            try:
                yield self
            finally:
                self.stop_all()


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    n = InProcessNet(
        tmp_path_factory.mktemp("cli") / "c", carriers=1, internet=1, sync_interval=0.2
    )
    yield from n.serving_pinned()


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
    # init adds the complaints centre and the regulator (nodes, by default one each),
    # an auditor and a call centre (keys and a member certificate, no node, no admin
    # credential)
    assert out["participants"] == ["institute", "carrier-1", "carrier-2", "internet-1",
                                   "complaints-1", "regulator-1", "auditor-1", "callcenter-1"]
    for pid in out["participants"]:
        for f in ("signing.key", "tls.key"):
            assert stat.S_IMODE((d / pid / f).stat().st_mode) == 0o600
        runs_node = pid not in ("auditor-1", "callcenter-1")
        assert (d / pid / "node.toml").is_file() == runs_node
        assert (d / pid / "admin.pem").is_file() == runs_node
    assert (d / "consortium.json.sig").is_file()
    # tampered configuration is refused by every command
    raw = (d / "consortium.json").read_bytes()
    (d / "consortium.json").write_bytes(raw.replace(b'"weight": 5', b'"weight": 9'))
    code, _, err = run(
        capsys, "keys", "verifier", "--consortium", str(d), "--participant", "carrier-1",
        "--as", "carrier-1",
    )
    assert code == 1 and "not verified" in err and "consortium.json" in err
    # init into a non-empty folder is refused
    code, _, err = run(capsys, "consortium", "init", str(d))
    assert code == 2 and "empty" in err


def test_mark_correct_decide_reassign(net: LocalNet, capsys: pytest.CaptureFixture[str]) -> None:
    c = ["--consortium", str(net.dir), "--json"]
    code, m, _ = run(
        capsys, "mark", "--as", "carrier-1", "13812345001", "fraud", "--score", "80", *c
    )
    assert code == 0 and set(m) == {"id", "issuer", "seq", "index"} and m["issuer"] == "carrier-1"
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
    assert code == 4 and json.loads(err)["error"] == {
        "code": "refused", "exit": 4,
        "message": "refused: only the institute decides appeals; carrier-1 is a carrier"}
    code, dec, _ = run(capsys, "decide", "--as", "institute", ap["id"], "--uphold", *c)
    assert code == 0 and dec["issuer"] == "institute"
    # A day ago: a reassignment takes effect at most policy.reassignment_window_ms before now.
    day_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86_400))
    code, ra, _ = run(capsys, "reassign", "--as", "carrier-1", "13812345001", "--at", day_ago, *c)
    assert code == 0 and ra["issuer"] == "carrier-1"
    net.wait_converged(timeout=30)


@pytest.mark.parametrize(
    "argv,exit_code,needle",
    [
        (["mark", "--as", "carrier-1", "call-me", "fraud"], 2, "call-me"),
        (["mark", "--as", "carrier-1", "13812345678", "spam"], 2,
         "'spam' is not a category of markex-local; categories: fraud (诈骗), harassment"),
        (["mark", "--as", "carrier-1", "13812345678", "fraud", "--score", "101"], 2,
         "101 is not between 0 and 100"),
        (["mark", "--as", "nobody", "13812345678", "fraud"], 2,
         "participants: institute, carrier-1, internet-1, auditor-1"),
        (["correct", "--as", "carrier-1", "abcd", "--withdraw"], 2, "record id"),
        (["correct", "--as", "carrier-1", "00" * 32], 2, "exactly one"),
        (
            ["reassign", "--as", "internet-1", "13812345678", "--at", "2026-01-01T00:00:00Z"],
            4, "refused: only carriers declare reassignments",
        ),
        (["reassign", "--as", "carrier-1", "13812345678", "--at", "yesterday"], 2, "ISO 8601"),
        (
            ["log", "inclusion", "--node", "carrier-1", "--index", "99999", "--size", "100000"],
            3, "not found: ",
        ),
        (["lookup", "--node", "nowhere", "13812345678"], 2,
         "neither a participant of markex-local nor HOST:PORT; participants: institute,"),
    ],
)
def test_bad_input_gets_a_precise_error(
    net: LocalNet, capsys: pytest.CaptureFixture[str], argv: list[str], exit_code: int,
    needle: str,
) -> None:
    # records issued by earlier tests may still be on their way to carrier-1
    net.wait_converged(timeout=30)
    before = net.heads("carrier-1")
    code, out, err = run(capsys, *argv, "--consortium", str(net.dir), "--json")
    assert code == exit_code and out == "" and needle in json.loads(err)["error"]["message"]
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
    # Raw entries go to members and auditors only (docs/publication.md): by default
    # the command reads them as the consortium's auditor.
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
    assert out["view_signed_at_ms"] > 0 and len(out["cosigned_by"]) >= 2
    code, vc, _ = run(capsys, "view", "checkpoint", "--node", "carrier-1", *c)
    assert code == 0 and set(vc) == {"vector", "root", "entries", "signed_at_ms", "signers"}
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
    _, ent, _ = run(capsys, "log", "entries", "--start", "0", "--end", str(cp.size), *c,
                    "--as", "internet-1")
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


def _resigned(tmp_path: Path) -> tuple[Path, str]:
    """A consortium folder whose consortium.json an attacker rewrote (the
    institute key inside replaced by theirs, a carrier's key too) and signed
    with their own configuration key: a file the key named inside it verifies.
    Returns the folder
    and the genuine institute key in base64."""
    d = tmp_path / "c"
    cons = main(["consortium", "init", str(d), "--base-port", "31100", "--json"])
    assert cons == 0
    pinned = NodeConfig.for_participant(d, "institute").institute_key
    genuine = Consortium.load(d, pinned)
    thief = SigningKey.from_seed(b"\x07" * 32)
    swapped = tuple(
        dataclasses.replace(p, public_key=thief.public_bytes)
        if p.id in ("institute", "carrier-1") else p
        for p in genuine.participants
    )
    # Signed with a configuration key of the attacker's own (no participant's key may be one).
    thief_config = SigningKey.from_seed(b"\x08" * 32)
    dataclasses.replace(genuine, participants=swapped, raw=b"", config_key=b"").write(
        d, thief_config)
    # Without a pin this file verifies: the key inside it signed it.
    assert Consortium.load(d).institute.public_key == thief.public_bytes
    return d, base64.b64encode(pinned).decode()


EVERY_COMMAND = [
    ["keys", "verifier", "--participant", "carrier-1"],
    ["log", "checkpoint", "--node", "carrier-1"],
    ["log", "entries", "--node", "carrier-1", "--start", "0", "--end", "1"],
    ["log", "inclusion", "--node", "carrier-1", "--index", "0", "--size", "1"],
    ["log", "consistency", "--node", "carrier-1", "--old", "1", "--new", "2"],
    ["lookup", "--node", "carrier-1", "13812345678"],
    ["view", "checkpoint", "--node", "carrier-1"],
    ["audit", "--node", "carrier-1"],
    ["audit", "--data-dir", "{dir}/carrier-1/data"],
    ["audit", "verify-evidence", "{dir}/no-such-evidence.json"],
]


@pytest.mark.parametrize("argv", EVERY_COMMAND, ids=lambda a: " ".join(a[:2]))
def test_resigned_consortium_is_refused_by_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
) -> None:
    """Fails on main: there a command without --as loads consortium.json with
    the key inside the file, so the re-signed file is accepted."""
    monkeypatch.delenv(INSTITUTE_KEY_ENV, raising=False)
    d, pin = _resigned(tmp_path)
    (d / "carrier-1" / "data").mkdir(exist_ok=True)
    (d / "carrier-1" / "data" / "CURRENT").write_text("")  # a data folder to name offline
    args = [a.replace("{dir}", str(d)) for a in argv] + ["--consortium", str(d)]
    capsys.readouterr()
    # pinned by --institute-key, by the environment, or by --as's node.toml: refused
    for how, extra, env in (
        ("flag", ["--institute-key", pin], None),
        ("env", [], pin),
        ("node.toml", ["--as", "internet-1"], None),
    ):
        if env is None:
            monkeypatch.delenv(INSTITUTE_KEY_ENV, raising=False)
        else:
            monkeypatch.setenv(INSTITUTE_KEY_ENV, env)
        code, out, err = run(capsys, *args, *extra)
        assert code == 1 and "not verified: " in err, (how, out, err)
    # not pinned at all: refused, saying what to pass (offline, the audited
    # node's own node.toml pins, and refuses the file)
    monkeypatch.delenv(INSTITUTE_KEY_ENV, raising=False)
    code, _, err = run(capsys, *args)
    if "--data-dir" in argv:
        assert code == 1 and "not verified: " in err, err
    else:
        assert code == 2 and "--institute-key" in err and "no pinned institute key" in err, err


def test_issuing_commands_pin_with_as(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """mark/correct/decide/reassign take --as: its node.toml's key refuses the re-signed file."""
    monkeypatch.delenv(INSTITUTE_KEY_ENV, raising=False)
    d, _ = _resigned(tmp_path)
    for argv in (
        ["mark", "--as", "carrier-1", "13812345678", "fraud"],
        ["correct", "--as", "carrier-1", "00" * 32, "--withdraw"],
        ["decide", "--as", "institute", "00" * 32, "--uphold"],
        ["reassign", "--as", "carrier-1", "13812345678", "--at", "2026-01-01T00:00:00Z"],
    ):
        code, _, err = run(capsys, *argv, "--consortium", str(d))
        assert code == 1 and "not verified: " in err, (argv, err)
    # a wrong --institute-key is refused too, and a malformed one precisely
    code, _, err = run(capsys, "keys", "verifier", "--participant", "carrier-1",
                       "--consortium", str(d), "--institute-key", "AAAA")
    assert code == 2 and "32-byte" in err
    code, _, err = run(capsys, "keys", "verifier", "--participant", "carrier-1",
                       "--consortium", str(d), "--institute-key", "not base64!")
    assert code == 2 and "not base64" in err


# ------------------------------------------------------------------ following a record


def _until(fn, timeout: float = 30):  # type: ignore[no-untyped-def]
    """fn() -> (done, value) until done or timeout; the last value."""
    deadline = time.monotonic() + timeout
    while True:
        done, value = fn()
        if done or time.monotonic() > deadline:
            return value
        time.sleep(0.3)


def test_a_record_followed_by_its_prefix_to_a_verified_proof(
    net: LocalNet, capsys: pytest.CaptureFixture[str]
) -> None:
    """mark prints the log index; `record get` by a 12-digit prefix decodes the
    record and verifies its inclusion against carrier-1's cosigned checkpoint."""
    c = ["--consortium", str(net.dir)]
    code, m, _ = run(capsys, "mark", "--as", "carrier-1", "13812345777", "harassment",
                     "--score", "70", *c, "--json")
    assert code == 0 and isinstance(m["index"], int)
    net.wait_converged(timeout=30)

    def get() -> tuple[bool, tuple[int, dict | str, str]]:
        got = run(capsys, "record", "get", "--node", "carrier-1", m["id"][:12], *c, "--json")
        return got[0] == 0, got

    code, rec, err = _until(get)
    assert code == 0, err
    assert rec["id"] == m["id"] and rec["index"] == m["index"] and rec["verified"] is True
    assert (rec["kind"], rec["issuer"], rec["seq"]) == ("mark", "carrier-1", m["seq"])
    assert rec["payload"]["number"] == "+8613812345777"
    assert rec["payload"]["category"] == "harassment" and rec["payload"]["score"] == 70
    assert rec["issued_at"].endswith("Z") and rec["payload"]["observed_at"].endswith("Z")
    assert rec["checkpoint"]["node"] == "carrier-1" and len(rec["checkpoint"]["cosigned_by"]) >= 2
    cp = rec["checkpoint"]
    merkle.verify_inclusion(
        merkle.leaf_hash(base64.b64decode(_entry(net, capsys, rec["index"]))), rec["index"],
        cp["size"], [bytes.fromhex(h) for h in rec["inclusion_proof"]], bytes.fromhex(cp["root"]))
    code, text, _ = run(capsys, "record", "get", "--node", "carrier-1", m["id"][:12], *c)
    assert code == 0 and re.search(r"^issuer +carrier-1$", text, re.M)
    assert re.search(r"^verified +yes, against carrier-1's log checkpoint of size", text, re.M)
    for repr_ in ("None", "True", "False", "{"):
        assert repr_ not in text
    # a prefix no record has: not found (3), naming what was looked for
    code, _, err = run(capsys, "record", "get", "--node", "carrier-1", "0123456789abcdef", *c)
    assert code == 3 and "no record at carrier-1 has an id starting with 0123456789abcdef" in err
    code, _, err = run(capsys, "record", "get", "--node", "carrier-1", m["id"][:7], *c)
    assert code == 2 and "at least 8" in err


def _entry(net: LocalNet, capsys: pytest.CaptureFixture[str], index: int) -> str:
    code, ent, _ = run(capsys, "log", "entries", "--node", "carrier-1", "--start", str(index),
                       "--end", str(index + 1), "--consortium", str(net.dir), "--json")
    assert code == 0
    return ent["entries"][0]


def test_an_appeal_by_prefix_shows_in_lookup_with_its_reasons_and_decision(
    net: LocalNet, capsys: pytest.CaptureFixture[str]
) -> None:
    c = ["--consortium", str(net.dir), "--json"]
    code, m, _ = run(capsys, "mark", "--as", "carrier-1", "13812345888", "fraud", *c)
    assert code == 0
    net.wait_converged(timeout=30)
    code, ap, _ = run(capsys, "correct", "--as", "internet-1", m["id"][:16], "--withdraw",
                      "--reason", "a licensed courier", *c)
    assert code == 0 and ap["appeal"] is True and isinstance(ap["index"], int)
    net.wait_converged(timeout=30)
    code, dec, _ = run(capsys, "decide", "--as", "institute", ap["id"][:10], "--uphold",
                       "--reason", "courier confirmed", *c)
    assert code == 0
    net.wait_converged(timeout=30)

    def decided() -> tuple[bool, tuple[int, dict | str, str]]:
        got = run(capsys, "lookup", "--node", "carrier-1", "13812345888", *c)
        ok = got[0] == 0 and isinstance(got[1], dict) and any(
            a["status"] == "upheld" for a in got[1]["appeals"])
        return ok, got

    code, out, err = _until(decided)
    assert code == 0, err
    [a] = out["appeals"]
    assert (a["appeal_id"], a["appellant"], a["status"]) == (ap["id"], "internet-1", "upheld")
    assert a["reason"] == "a licensed courier" and a["decision_reason"] == "courier confirmed"
    assert a["decision_id"] == dec["id"] and a["filed_at_iso"].endswith("Z")
    assert a["decided_at_iso"].endswith("Z") and out["view_signed_at"].endswith("Z")
    assert out["appeal"] == "upheld"  # design.md's key keeps its meaning
    code, text, _ = run(capsys, "lookup", "--node", "carrier-1", "13812345888",
                        "--consortium", str(net.dir))
    assert code == 0 and re.search(rf"^appeal id +{ap['id']}$", text, re.M)
    assert "reason: a licensed courier" in text and "decision reason: courier confirmed" in text
    assert "by internet-1, filed 20" in text and re.search(r"^verified +yes$", text, re.M)
    for repr_ in ("None", "True", "False", "{"):
        assert repr_ not in text
    # the tenure after a reassignment made after the marks
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
    time.sleep(1.2)
    code, _, err = run(capsys, "reassign", "--as", "carrier-1", "13812345888", "--at", now, *c)
    assert code == 0, err
    net.wait_converged(timeout=30)

    def reassigned() -> tuple[bool, tuple[int, dict | str, str]]:
        got = run(capsys, "lookup", "--node", "carrier-1", "13812345888", *c)
        return got[0] == 0 and bool(got[1]["tenure_since"]), got  # type: ignore[index]

    code, out, _ = _until(reassigned)
    assert code == 0 and out["tenure_since_iso"] == now


def test_log_proofs_are_verified_against_the_cosigned_checkpoint(
    net: LocalNet, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for i in range(5):
        net.mark("internet-1", f"1391235{i:04d}", "marketing")
    net.wait_converged(timeout=30)
    c = ["--node", "internet-1", "--consortium", str(net.dir), "--json"]

    def verified() -> tuple[bool, tuple[int, dict | str, str]]:
        got = run(capsys, "log", "inclusion", "--index", "0", *c)  # size: the checkpoint's
        return got[0] == 0, got

    code, inc, err = _until(verified)
    assert code == 0 and inc["verified"] is True, err
    size = inc["checkpoint"]["size"]
    assert inc["size"] == size and len(inc["checkpoint"]["cosigned_by"]) >= 2
    # a smaller tree is proven through a consistency proof up to the checkpoint
    code, inc, _ = run(capsys, "log", "inclusion", "--index", "1", "--size", str(size - 1), *c)
    assert code == 0 and inc["verified"] is True and inc["size"] == size - 1
    code, con, _ = run(capsys, "log", "consistency", "--old", "2", *c)
    assert code == 0 and con["verified"] is True and con["new"] >= size
    code, con, _ = run(capsys, "log", "consistency", "--old", "1", "--new", str(size - 1), *c)
    assert code == 0 and con["verified"] and con["old_root"] and con["new_root"]
    # beyond the checkpoint: printed, not verified, and said why
    code, inc, err = run(capsys, "log", "inclusion", "--index", "0", "--size",
                         str(size + 10_000), *c)
    assert code in (1, 3)
    code, text, err = run(capsys, "log", "inclusion", "--index", "0", "--node", "internet-1",
                          "--consortium", str(net.dir))
    assert code == 0 and re.search(r"^verified +yes, against internet-1's log", text, re.M)
    # lookup --batch goes through LookupBatch, one verified answer a number
    f = tmp_path / "numbers.txt"
    f.write_text("# campaign list\n13912350000\n\n13912350001,extra\n", encoding="utf-8")

    def batch_verified() -> tuple[bool, tuple[int, dict | str, str]]:
        # the view's newest checkpoint may not be cosigned yet right after the marks
        got = run(capsys, "lookup", "--node", "internet-1", "--batch", str(f),
                  "--consortium", str(net.dir), "--json")
        return got[0] == 0, got

    code, out, err = _until(batch_verified)
    assert code == 0, err
    assert [r["number"] for r in out["results"]] == ["+8613912350000", "+8613912350001"]
    assert out["verified"] and all(r["category"] == "marketing" for r in out["results"])
    f.write_text("13912350000\nnot-a-number\n", encoding="utf-8")
    code, _, err = run(capsys, "lookup", "--node", "internet-1", "--batch", str(f),
                       "--consortium", str(net.dir))
    assert code == 2 and f"{f}:2:" in err


def test_find_records_by_prefix_on_a_real_node(net: LocalNet) -> None:
    """Audit.FindRecords: odd and even prefixes, the limit, and precise refusals."""
    import grpc

    from markex.v1 import service_pb2 as pb
    from node import client

    rid = net.mark("carrier-1", "13812346000", "fraud").id
    ep = client.resolve_node(net.consortium, "carrier-1")
    stub = client.audit_stub(net.dir, "auditor-1", ep.member, "carrier-1")
    for n in (8, 9, 31, 64):
        got = stub.FindRecords(pb.FindRecordsRequest(id_prefix=rid.hex()[:n].upper()), timeout=5)
        assert rid in got.ids, n
    miss = "0" * 9 if not rid.hex().startswith("0" * 9) else "f" * 9
    assert list(stub.FindRecords(pb.FindRecordsRequest(id_prefix=miss), timeout=5).ids) == []
    for prefix, limit, status in (("abc", 0, grpc.StatusCode.INVALID_ARGUMENT),
                                  ("zz" * 5, 0, grpc.StatusCode.INVALID_ARGUMENT),
                                  ("a" * 65, 0, grpc.StatusCode.INVALID_ARGUMENT),
                                  (rid.hex()[:8], 17, grpc.StatusCode.RESOURCE_EXHAUSTED)):
        with pytest.raises(grpc.RpcError) as ex:
            stub.FindRecords(pb.FindRecordsRequest(id_prefix=prefix, limit=limit), timeout=5)
        assert ex.value.code() == status, prefix
