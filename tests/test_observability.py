"""The node tells what happens (issue 13, docs/operations.md): JSON log lines
of real in-process nodes on 127.0.0.1 (a peer stopped and started: one
"peer-lost", one "peer-connected"; records refused counted per interval;
equivocations and appeals without free text), `--log-level` and node.toml's
`log_level` in a real `markex node run` process, and the /metrics a real node
serves: exactly the metrics docs/operations.md lists, right after a restart."""

from __future__ import annotations

import json
import logging
import math
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from keys import ConfigError
from keys.consortium import Consortium
from keys.layout import NodeConfig, init_consortium
from keys.signing import SigningKey
from ledger import note
from ledger.names import log_origin
from ledger.record import UPHOLD, WITHDRAW, Correction, Mark, Record
from ledger.store import Store
from node.localnet import free_port_block
from node.logs import JsonFormatter
from node.server import Node
from node.witness import Witness

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "operations.md"
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

pytestmark = pytest.mark.timeout(120)


class Lines(logging.Handler):
    """Every line the markex loggers write, formatted as `markex node run` does."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter("test"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def events(self, name: str, **fields: object) -> list[dict]:
        out = []
        for line in list(self.lines):
            obj = json.loads(line)
            if obj["event"] == name and all(obj.get(k) == v for k, v in fields.items()):
                out.append(obj)
        return out


@pytest.fixture
def logged() -> Iterator[Lines]:
    h = Lines()
    top = logging.getLogger("markex")
    level = top.level
    top.addHandler(h)
    top.setLevel(logging.INFO)
    try:
        yield h
    finally:
        top.removeHandler(h)
        top.setLevel(level)


def _consortium(tmp_path: Path, carriers: int = 1) -> tuple[Path, Consortium]:
    d = tmp_path / "c"
    n = 1 + carriers
    cons = init_consortium(d, carriers=carriers, internet=0, base_port=free_port_block(4 * n),
                           now=datetime.now(UTC))
    return d, cons


def _node(d: Path, pid: str, **kw: object) -> Node:
    return Node(NodeConfig.for_participant(d, pid), sync_interval=0.1, **kw).start()  # type: ignore[arg-type]


def _wait(cond: Callable[[], object], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _now() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def _key(d: Path, pid: str) -> SigningKey:
    return SigningKey.load(d / pid / "signing.key")


def _record(d: Path, cons: Consortium, issuer: str, seq: int, prev: bytes, payload: object,
            key: SigningKey | None = None) -> Record:
    return Record.issue(key or _key(d, issuer), issuer, seq, prev, _now(), payload,  # type: ignore[arg-type]
                        consortium=cons.name)


def _scrape(port: int) -> dict[str, object]:
    """The node's /metrics: family name (counters with `_total`) -> family."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for fam in text_string_to_metric_families(body):
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        out[name] = fam
    return out


def _value(fams: dict[str, object], name: str, **labels: str) -> float:
    fam = fams[name]
    for s in fam.samples:  # type: ignore[attr-defined]
        if s.name == name and s.labels == labels:
            return float(s.value)
    raise AssertionError(f"no sample {name}{labels}")


def _documented() -> dict[str, tuple[str, str]]:
    """docs/operations.md's metrics table: name -> (type, labels)."""
    part = DOC.read_text().split("\n## Metrics\n", 1)[1]
    rows = re.findall(r"^\| `(markex_[a-z_]+)` \| (\w+) \|([^|]*)\|", part, re.M)
    return {name: (kind, labels.strip()) for name, kind, labels in rows}


# ------------------------------------------------------------------ 1. logs


def test_a_peer_stopped_then_started_is_one_lost_and_one_connected_line(
    tmp_path: Path, logged: Lines
) -> None:
    """On main a peer's failures were logged at debug, once per retry, and
    its coming back not at all."""
    d, _ = _consortium(tmp_path)
    inst = _node(d, "institute")
    try:
        peer = _node(d, "carrier-1")
        _wait(lambda: logged.events("peer-connected", peer="carrier-1"), "the peer connected")
        port = inst.metrics.port
        assert _value(_scrape(port), "markex_peer_up", peer="carrier-1") == 1
        peer.stop()
        _wait(lambda: logged.events("peer-lost", peer="carrier-1"), "the peer lost")
        assert _value(_scrape(port), "markex_peer_up", peer="carrier-1") == 0
        time.sleep(1.0)  # ten retry rounds at 0.1 s: still one line
        mark = len(logged.lines)
        peer = _node(d, "carrier-1")
        try:
            _wait(lambda: any(json.loads(x)["event"] == "peer-connected"
                              and json.loads(x).get("peer") == "carrier-1"
                              for x in logged.lines[mark:]), "the peer connected again")
            time.sleep(0.5)
            assert _value(_scrape(port), "markex_peer_up", peer="carrier-1") == 1
            upto = len(logged.lines)  # stopping both at the end is another loss
        finally:
            peer.stop()
    finally:
        inst.stop()
    logged.lines = logged.lines[:upto]
    lost = logged.events("peer-lost", peer="carrier-1")
    assert len(lost) == 1
    assert lost[0]["level"] == "warning"
    assert lost[0]["reason"].startswith("the peer does not answer")
    assert lost[0]["reason"].endswith(".")
    after = [json.loads(x) for x in logged.lines[mark:]]
    again = [o for o in after if o["event"] == "peer-connected" and o.get("peer") == "carrier-1"]
    assert len(again) == 1 and again[0]["level"] == "info"
    assert len(logged.events("peer-connected", peer="carrier-1")) == 2  # at start, and again
    for line in logged.lines:
        obj = json.loads(line)  # every line is one JSON object
        assert TIME.fullmatch(obj["time"]) and obj["level"] and obj["event"], line


def test_catch_up_says_how_many_records_from_which_peer(tmp_path: Path, logged: Lines) -> None:
    """On main a node caught up in silence."""
    d, _ = _consortium(tmp_path)
    node = _node(d, "carrier-1")
    try:
        for i in range(5):
            node.core.issue(Mark(f"+861380000002{i}", "fraud", 70))
        inst = _node(d, "institute")  # starts without them: pulls them from carrier-1
        try:
            _wait(lambda: inst.core.ledger.size == 5, "the institute caught up")
        finally:
            inst.stop()
    finally:
        node.stop()
    lines = logged.events("catch-up", peer="carrier-1")
    assert lines and sum(o["records"] for o in lines) == 5
    assert all(o["level"] == "info" for o in lines)


def test_records_refused_are_counted_in_the_interval_line(
    tmp_path: Path, logged: Lines
) -> None:
    """On main no line counted records; a refused record left no trace in the log."""
    d, cons = _consortium(tmp_path)
    node = _node(d, "carrier-1", log_interval=0.3)
    try:
        forged = [_record(d, cons, "institute", 1, b"", Mark(f"+8613900000{i:03d}", "fraud", 70),
                          key=_key(d, "carrier-1")) for i in range(3)]
        outs = node.core.submit([r.envelope for r in forged] + [b"\x00junk"], source="institute")
        assert [o.status for o in outs] == ["rejected"] * 4
        reasons = {type(o.error).__name__ for o in outs}
        node.core.issue(Mark("+8613800000001", "fraud", 70))
        _wait(lambda: logged.events("records"), "the interval line")
    finally:
        node.stop()
    lines = logged.events("records")
    assert len(lines) == 1  # four refused and one accepted: one line, not one per record
    obj = lines[0]
    assert obj["level"] == "info" and obj["interval_s"] == 0.3
    assert obj["accepted"] == {"carrier-1": 1}
    bad_sig = type(outs[0].error).__name__
    junk = type(outs[3].error).__name__
    assert obj["refused"] == {"institute": {bad_sig: 3}, "unknown": {junk: 1}}
    assert reasons == {bad_sig, junk}
    assert "+86139" not in json.dumps(lines)


def test_equivocations_and_appeals_are_logged_without_free_text(
    tmp_path: Path, logged: Lines
) -> None:
    d, cons = _consortium(tmp_path, carriers=2)
    node = _node(d, "carrier-1")
    secret = "the subscriber told us about his neighbour"
    try:
        theirs = _record(d, cons, "carrier-2", 1, b"", Mark("+8613800000009", "fraud", 70))
        assert node.core.submit([theirs.envelope], source="carrier-2")[0].status == "accepted"
        appeal = node.core.issue(Correction(targets=(theirs.id,), action=WITHDRAW,
                                            reason=secret)).record
        decision = _record(d, cons, "institute", 1, b"",
                           Correction(appeal_id=appeal.id, outcome=UPHOLD, reason=secret))
        assert node.core.submit([decision.envelope], source="institute")[0].status == "accepted"
        # carrier-2 signs a second record at seq 1: an equivocation.
        other = _record(d, cons, "carrier-2", 1, b"", Mark("+8613800000010", "fraud", 70))
        assert node.core.submit([other.envelope], source="carrier-2")[0].status == "equivocation"
        _wait(lambda: logged.events("equivocation"), "the equivocation line")
        assert _value(_scrape(node.metrics.port), "markex_equivocations") == 1
    finally:
        node.stop()
    (filed,) = logged.events("appeal-filed")
    assert filed == {**filed, "appeal": appeal.id.hex()[:16], "by": "carrier-1",
                     "marks": [theirs.id.hex()[:16]], "level": "info"}
    (decided,) = logged.events("appeal-decided")
    assert decided == {**decided, "appeal": appeal.id.hex()[:16], "by": "institute",
                       "decision": decision.id.hex()[:16], "outcome": UPHOLD}
    (eq,) = logged.events("equivocation")
    assert (eq["level"], eq["kind"], eq["issuer"], eq["seq"]) == (
        "warning", "equivocation", "carrier-2", 1)
    assert secret not in "\n".join(logged.lines)


def test_a_log_fork_is_an_error_line_with_its_kind_and_issuer(
    tmp_path: Path, logged: Lines
) -> None:
    d, cons = _consortium(tmp_path)
    store = Store(tmp_path / "w")
    try:
        w = Witness(store, cons, "carrier-1", _key(d, "carrier-1"), _now)
        origin = log_origin(cons.name, "institute")

        def signed(size: int, root: bytes) -> str:
            return note.sign_checkpoint(note.Checkpoint(origin, size, root), origin,
                                        _key(d, "institute"))

        w.cosign_log("institute", signed(2, b"\x01" * 32), 0, [])
        with pytest.raises(Exception, match="two roots"):
            w.cosign_log("institute", signed(2, b"\x02" * 32), 2, [])
    finally:
        store.close()
    (fork,) = logged.events("fork")
    assert (fork["level"], fork["kind"], fork["issuer"]) == ("error", "log-fork", "institute")


def _run(d: Path, pid: str, *flags: str) -> list[dict]:
    """Run `markex node run` until its ports line, stop it, return its log lines."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "node", "run", "--consortium", str(d), "--as", pid,
         *flags],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        first = proc.stdout.readline()  # type: ignore[union-attr]
        assert json.loads(first)["participant"] == pid
        time.sleep(1.5)  # a few rounds with the absent peer
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return [json.loads(line) for line in err.splitlines()]


def test_log_level_flag_and_node_toml_key(tmp_path: Path) -> None:
    """On main `node run` knew no --log-level and node.toml no log_level."""
    d, _ = _consortium(tmp_path)
    lines = _run(d, "institute")
    assert {"started", "stopped"} <= {o["event"] for o in lines}  # info by default
    quiet = _run(d, "institute", "--log-level", "warning")
    assert quiet and all(o["level"] in ("warning", "error", "critical") for o in quiet)
    assert [o["event"] for o in quiet] == ["peer-unreachable"]  # said once, not per retry
    toml = d / "institute" / "node.toml"
    toml.write_text(toml.read_text().replace('log_level = "info"', 'log_level = "warning"'))
    assert NodeConfig.for_participant(d, "institute").log_level == "warning"
    assert all(o["level"] != "info" for o in _run(d, "institute"))
    loud = _run(d, "institute", "--log-level", "info")  # the flag wins
    assert "started" in {o["event"] for o in loud}


def test_an_unknown_log_level_is_refused_before_anything_starts(tmp_path: Path) -> None:
    d, _ = _consortium(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "node.cli", "node", "run", "--consortium", str(d), "--as",
         "institute", "--log-level", "loud"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert run.returncode != 0 and run.stdout == ""
    assert "unknown log level 'loud'" in run.stderr and "Traceback" not in run.stderr
    assert not any((d / "institute" / "data").iterdir())  # the store was never opened
    cfg = NodeConfig.for_participant(d, "institute")
    with pytest.raises(ConfigError, match="log_level must be one of"):
        NodeConfig.from_dict({**_toml(cfg), "log_level": "loud"}, base=d / "institute")


def _toml(cfg: NodeConfig) -> dict:
    import tomllib

    return tomllib.loads(cfg.to_toml(at=cfg.source))


# ------------------------------------------------------------------ 2. metrics


def test_metrics_port_is_fixed_per_node(tmp_path: Path) -> None:
    """On main every node.toml said 127.0.0.1:0: a new port at each start."""
    d = tmp_path / "c"
    init_consortium(d, carriers=2, internet=1, base_port=9000, now=datetime.now(UTC))
    got = [NodeConfig.for_participant(d, p).metrics_listen
           for p in ("institute", "carrier-1", "carrier-2", "internet-1")]
    assert got == [f"127.0.0.1:{9012 + k}" for k in range(4)]  # after 2 x 4 gRPC, 4 tiles
    with pytest.raises(ConfigError, match=r"need ports 65521\.\.65536"):  # 16 > 15 left
        init_consortium(tmp_path / "e", carriers=2, internet=1, base_port=65521,
                        now=datetime.now(UTC))


def test_node_configure_keeps_the_metrics_port_and_the_log_level(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On main `node configure` put the metrics back on a random port."""
    from node.cli import main

    d, _ = _consortium(tmp_path)
    toml = d / "carrier-1" / "node.toml"
    toml.write_text(toml.read_text().replace('log_level = "info"', 'log_level = "error"'))
    before = NodeConfig.for_participant(d, "carrier-1")
    assert main(["node", "configure", "--consortium", str(d), "--as", "carrier-1",
                 "--pin", str(d / "config" / "config.pub"), "--new-feed"]) == 0
    capsys.readouterr()
    after = NodeConfig.for_participant(d, "carrier-1")
    assert (after.metrics_listen, after.log_level) == (before.metrics_listen, "error")
    assert after.metrics_listen != "127.0.0.1:0"


def test_the_node_exports_exactly_the_documented_metrics(tmp_path: Path, logged: Lines) -> None:
    """Each metric docs/operations.md lists is served, with its type and
    labels, and the node serves no markex_ metric the page does not list;
    the cosigned checkpoints are one log line per interval."""
    doc = _documented()
    assert len(doc) >= 12
    d, _ = _consortium(tmp_path)
    inst = _node(d, "institute")
    node = _node(d, "carrier-1", log_interval=0.3)
    try:
        for i in range(3):
            node.core.issue(Mark(f"+861380000000{i}", "fraud", 70))
        _wait(lambda: node.logs.cosignatures() >= 1, "a cosigned checkpoint")
        _wait(lambda: logged.events("checkpoint-cosigned", size=3, by=["institute"]),
              "the cosigned line")
        _wait(lambda: _value(_scrape(node.metrics.port), "markex_peer_up", peer="institute"),
              "the peer up")
        assert node.metrics.port == int(node.cfg.metrics_listen.rsplit(":", 1)[1])
        fams = _scrape(node.metrics.port)
    finally:
        node.stop()
        inst.stop()
    ours = {n: f for n, f in fams.items() if n.startswith("markex_")}
    assert set(ours) == set(doc)
    for name, (kind, labels) in doc.items():
        fam = ours[name]
        assert fam.type == kind, name  # type: ignore[attr-defined]
        want = set(re.findall(r"`(\w+)`", labels))
        for s in fam.samples:  # type: ignore[attr-defined]
            assert set(s.labels) - {"le"} == want, (name, s)
    assert _value(fams, "markex_log_size") == 3
    # carrier-1's log, cosigned by the institute (and the institute's, by carrier-1)
    mine = logged.events("checkpoint-cosigned", size=3, by=["institute"])
    assert len(mine) == 1 and mine[0]["count"] >= 1 and mine[0]["level"] == "info"
    assert _value(fams, "markex_checkpoint_cosignatures") == 1
    assert 0 <= _value(fams, "markex_checkpoint_age_seconds") < 30
    assert _value(fams, "markex_equivocations") == 0
    assert _value(fams, "markex_view_lag_records") == 0
    assert 0 <= _value(fams, "markex_view_age_seconds") < 60


def test_gauges_are_right_after_a_restart(tmp_path: Path) -> None:
    """On main markex_log_size read 0 after a restart until the next record."""
    d, _ = _consortium(tmp_path)
    node = _node(d, "carrier-1")
    try:
        for i in range(4):
            node.core.issue(Mark(f"+861380000001{i}", "fraud", 70))
        _wait(lambda: node.logs.current()[1] == 4, "a checkpoint of the four records")
    finally:
        node.stop()
    again = _node(d, "carrier-1")  # the same node.toml, store and metrics port
    try:
        fams = _scrape(again.metrics.port)
        assert _value(fams, "markex_log_size") == 4
        age = _value(fams, "markex_checkpoint_age_seconds")
        assert not math.isnan(age) and 0 <= age < 30
        assert _value(fams, "markex_view_lag_records") == 0
        assert _value(fams, "markex_peer_up", peer="institute") == 0
    finally:
        again.stop()
