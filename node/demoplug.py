"""Issue 17's part of `markex demo`: a participant plugs in. Its app backend
imports its users' reports from a file (`markex import`, Admin.IssueMany),
a carrier runs a read replica (`markex replica run`) following two nodes'
logs, and its SMS-warning platform keeps a copy of the node's view by the
change stream (`markex view watch`). At the end the replica's root and the
watch consumer's last verified checkpoint are shown beside the node's, and
the demo fails unless all three are equal.

The replica and the consumer are the real commands as child processes,
started by `Plug.start` and always stopped by `Plug.close` (run_demo's
`finally`: also on Ctrl-C or an error)."""

from __future__ import annotations

import contextlib
import io
import json
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from keys import KeysError
from ledger.errors import LedgerError
from ledger.verify import view_checkpoint_summary
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node import client
from node.localnet import LocalNet
from node.lookup import lookup_verified

ROOT = Path(__file__).resolve().parent.parent
IMPORTER = "internet-2"          # an app vendor's backend feeds its users' reports
RUNNER = "carrier-1"             # runs the replica; its platform runs the watch consumer
FOLLOW = ("carrier-1", "institute")
WATCHED = "carrier-1"            # the node whose root both copies must hold
IMPORT_PREFIX = "1398880"        # numbers no other part of the demo marks
CATEGORIES = ("marketing", "harassment", "real-estate", "finance-insurance", "recruitment")
BAD_SCORE = 150                  # the file's one bad line: a score past 100
START_S = 60                     # for a child process to listen
MATCH_S = 60                     # for both copies to reach the node's root
STOP_S = 10
INTERRUPTED = 130                # a command's exit code for Ctrl-C (node/command.py run)


def say(msg: str = "") -> None:
    print(msg, flush=True)


def _yes(b: bool) -> str:
    return "yes" if b else "no"


def write_reports(path: Path, n: int) -> tuple[list[str], int]:
    """A CSV of `n` marks (docs/import.md) with one bad line among them;
    returns the marked numbers (E.164) and the bad line's number."""
    rows = ["number,category,score,reports,key"]
    numbers = []
    bad_at = n // 2
    for i in range(n):
        if i == bad_at:
            rows.append(f"{IMPORT_PREFIX}9999,marketing,{BAD_SCORE},1,app-report-bad")
        national = f"{IMPORT_PREFIX}{i:04d}"
        rows.append(f"{national},{CATEGORIES[i % len(CATEGORIES)]},{50 + i % 40},"
                    f"{1 + i % 30},app-report-{i:05d}")
        numbers.append(f"+86{national}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return numbers, bad_at + 2  # line 1 is the header


def run_import(net: LocalNet, connect: Any, path: Path) -> tuple[int, dict[str, Any]]:
    """`markex import --as IMPORTER --json FILE`, in this process through the
    demo's TLS channels: (exit code, the summary it printed)."""
    from node.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["import", "--consortium", str(net.dir), "--as", IMPORTER, "--json",
                     str(path)], connect=connect)
    if code == INTERRUPTED:  # Ctrl-C: the command turned it into its exit code; stop the demo
        raise KeyboardInterrupt
    try:
        return code, json.loads(out.getvalue())
    except json.JSONDecodeError:
        return code, {"failed": (err.getvalue() or out.getvalue()).strip()[-500:]}


def import_reports(net: LocalNet, connect: Any, work: Path, n: int) -> tuple[bool, list[str]]:
    """The file imported, then imported again (what a client that crashed
    mid-file does): the first run issues every good line and reports the bad
    one by its line number; the rerun issues nothing. (ok, the numbers)."""
    path = work / "app-reports.csv"
    numbers, bad_line = write_reports(path, n)
    say(f"\n1b. {IMPORTER}'s app backend imports its users' reports from a file (markex import, "
        "Admin.IssueMany)")
    say(f"   {path.name}: {n} marks and one bad line (line {bad_line}: a score of {BAD_SCORE})")
    t0 = time.monotonic()
    code, first = run_import(net, connect, path)
    took = time.monotonic() - t0
    code2, again = run_import(net, connect, path)
    ok = True
    for what, c, s, issued, dups in (("imported", code, first, n, 0),
                                     ("the same file again", code2, again, 0, n)):
        if "failed" in s:
            say(f"   {what}: FAILED (exit {c}): {s['failed']}")
            ok = False
            continue
        errors = s["errors"]
        said = "; ".join(e["error"] for e in errors)
        say(f"   {what}: {s['issued']} issued, {s['duplicates']} duplicates (issued before), "
            f"{len(errors)} error{'' if len(errors) == 1 else 's'} ({said})"
            + (f" in {took:.1f}s" if issued else ""))
        ok &= (s["issued"], s["duplicates"]) == (issued, dups) and [
            e["line"] for e in errors] == [bad_line] and c == 2
    return ok, numbers


def _first_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The child's first stdout line, or b"" if it exits or says nothing in time."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else b""


def _tail(path: Path, n: int = 600) -> str:
    try:
        return path.read_text(errors="replace")[-n:].strip()
    except OSError:
        return ""


def held(node: dict[str, Any], replica: dict[str, Any], watch: dict[str, Any],
         state: str) -> tuple[bool, str]:
    """Whether both copies hold the node's view (the same root and entry
    count, each from a verified checkpoint) with the replica following; when
    not, a sentence saying which differs and how."""
    if "root" not in node:
        return False, f"the node's view checkpoint does not verify: {node.get('error')}"
    wrong = []
    for who, v in (("the replica", replica), ("the watch consumer", watch)):
        if "root" not in v:
            wrong.append(f"{who} holds no verified checkpoint ({v.get('error')})")
        elif (v["root"], v["entries"]) != (node["root"], node["entries"]):
            wrong.append(f"{who} holds root {v['root'][:16]}... of {v['entries']} entries, "
                         f"the node {node['root'][:16]}... of {node['entries']}")
    if state != "following":
        wrong.append(f"the replica is {state}")
    return not wrong, "; ".join(wrong)


class Plug:
    """The replica and the watch consumer: child processes of the demo."""

    def __init__(self, net: LocalNet, work: Path) -> None:
        self.net = net
        self.work = work
        self.replica: subprocess.Popen[bytes] | None = None
        self.watch: subprocess.Popen[bytes] | None = None
        self.kept = work / "watch-view.cp"       # --from: the last verified checkpoint
        self.watch_out = work / "watch.out"
        self.replica_log = work / "replica.log"
        self.port = 0
        self._channel: grpc.Channel | None = None

    def _spawn(self, argv: list[str], out: Any, err: Path) -> subprocess.Popen[bytes]:
        base = [sys.executable, "-m", "node.cli", *argv, "--consortium", str(self.net.dir),
                "--as", RUNNER]
        with open(err, "ab") as errf:
            return subprocess.Popen(base, stdout=out, stderr=errf, cwd=str(ROOT))

    def start(self) -> None:
        """Both processes started (not waited for: they boot while the demo goes on)."""
        self.replica = self._spawn(
            ["replica", "run", "--follow", ",".join(FOLLOW), "--listen", "127.0.0.1:0",
             "--data-dir", str(self.work / "replica"), "--interval", "0.3",
             "--log-level", "warning"], subprocess.PIPE, self.replica_log)
        with open(self.watch_out, "ab") as out:
            self.watch = self._spawn(["view", "watch", "--node", WATCHED, "--from",
                                      str(self.kept)], out, self.watch_out.with_suffix(".err"))
        say(f"   {RUNNER} started a replica (markex replica run --follow {','.join(FOLLOW)}) "
            f"and its SMS-warning platform a watch consumer of {WATCHED}'s node (markex view "
            "watch --from FILE)")

    def close(self) -> None:
        """Stop both (SIGTERM, then SIGKILL past STOP_S); safe to call twice."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        procs = [p for p in (self.replica, self.watch) if p is not None]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(STOP_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            if p.stdout is not None:
                p.stdout.close()

    # ------------------------------------------------------------ the check
    def _replica_channel(self) -> grpc.Channel | None:
        if self._channel is None and self.replica is not None:
            line = _first_line(self.replica, START_S)
            if not line:
                return None
            self.port = int(json.loads(line)["listen"])
            self._channel = client.public_channel(self.net.dir, f"127.0.0.1:{self.port}")
        return self._channel

    def _roots(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """The node's, the replica's and the watch consumer's view checkpoints
        (each verified; {"error": ...} for one that cannot be read yet)."""
        cons = self.net.consortium

        def summary(read: Any) -> dict[str, Any]:
            try:
                return view_checkpoint_summary(cons, read())
            except (grpc.RpcError, LedgerError, KeysError, OSError, ValueError, KeyError) as e:
                return {"error": e.details() if isinstance(e, grpc.RpcError) else str(e)}

        def replica_note() -> str:
            ch = self._replica_channel()
            if ch is None:
                raise OSError(f"the replica did not start: {_tail(self.replica_log)}")
            return rpc.PublicStub(ch).GetViewCheckpoint(pb.GetViewCheckpointRequest(),
                                                        timeout=5).note

        node = summary(lambda: self.net.public(WATCHED).GetViewCheckpoint(
            pb.GetViewCheckpointRequest(), timeout=5).note)
        return node, summary(replica_note), summary(lambda: self.kept.read_text())

    def _state(self) -> str:
        ch = self._channel
        if ch is None:
            return "not started"
        try:
            st = rpc.ReplicaStub(ch).GetStatus(pb.ReplicaStatusRequest(), timeout=5)
        except grpc.RpcError as e:
            return f"unreachable ({e.code().name})"
        return st.state + (f" ({st.reason})" if st.reason else "")

    def check(self, numbers: list[str]) -> bool:
        """Wait (at most MATCH_S) until the replica and the watch consumer hold
        the node's root, then print the three side by side and a verified
        lookup at the replica. True only when all three are equal."""
        say(f"\n9. the replica and the watch consumer against {WATCHED}'s node")
        t0 = time.monotonic()
        while True:
            node, rep, watch = self._roots()
            state = self._state()
            ok, why = held(node, rep, watch, state)
            if ok or time.monotonic() > t0 + MATCH_S or self._exited():
                break
            time.sleep(0.2)
        for who, v, aside in (
            (f"{WATCHED}'s node", node, ""),
            ("replica", rep, f"state {state}, port {self.port}"),
            ("watch consumer", watch, f"{self._checkpoints()} checkpoints verified"),
        ):
            if "root" in v:
                say(f"   {who:<16} view root {v['root']}  entries {v['entries']:<6} "
                    f"signed by {v['signers'][0]}  {aside}".rstrip())
            else:
                say(f"   {who:<16} NO verified view checkpoint: {v['error']}")
        if not ok:  # loudly: what differs, which process died, and their last words
            say(f"   COPIES DIFFER FROM THE NODE after {time.monotonic() - t0:.0f}s: "
                + "; ".join([why, *self._exited()]))
            for path in (self.replica_log, self.watch_out.with_suffix(".err")):
                say(f"   {path.name}: {_tail(path) or '(empty)'}")
        say(f"   the replica and the watch consumer hold the node's root: {_yes(ok)} "
            f"({time.monotonic() - t0:.1f}s waited)")
        return ok & self._lookup(numbers[0])

    def _exited(self) -> list[str]:
        """Which of the two processes ended (neither should before close)."""
        return [f"{name} exited with {p.returncode}" for name, p in
                (("the replica", self.replica), ("the watch consumer", self.watch))
                if p is not None and p.poll() is not None]

    def _checkpoints(self) -> int:
        return sum(line.startswith("verified ") for line in _tail(self.watch_out, 1 << 20)
                   .splitlines())

    def _lookup(self, number: str) -> bool:
        """One of the imported numbers looked up at the replica and checked
        exactly as a node's answer."""
        ch = self._channel
        if ch is None:
            return False
        r = lookup_verified(rpc.PublicStub(ch), self.net.consortium, number,
                            int(time.time() * 1000))
        checked = "yes" if r.get("verified") else f"NO ({r.get('error')})"
        say(f"   {number} looked up at the replica: {r.get('category') or 'none'}, verified as "
            f"a node's answer: {checked}")
        return bool(r.get("verified")) and r.get("category") == CATEGORIES[0]
