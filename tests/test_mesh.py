"""What a link of the full mesh costs when nothing flows, and how few peers a
checkpoint asks: the RoundPacer of a quiet link, a real PeerLink whose
anti-entropy rounds slow down while idle and speed up again when a pull
brings records, and the CosignRota that wakes only a quorum and a spare per
new checkpoint (more when the checkpoints stay short of their quorum)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from keys.consortium import Consortium
from keys.layout import NodeConfig, init_consortium
from keys.signing import SigningKey
from ledger.record import Mark
from ledger.store import Store
from markex.v1 import service_pb2 as pb
from markex.v1 import service_pb2_grpc as rpc
from node.core import NodeCore, OwnIssue
from node.feedgate import gate_at_start
from node.localnet import free_port_block
from node.logkeeper import LogKeeper
from node.metrics import NodeMetrics
from node.replication import CosignRota, LinkParts, PeerLink, RoundPacer, ViewAskPacer
from node.services import ExchangeService
from node.status import DecodeGuard
from node.viewkeeper import ViewKeeper
from node.witness import Witness
from tests.conftest import member_channel_credentials, member_server_credentials

pytestmark = pytest.mark.timeout(60)
OWN = "carrier-1"


def _now() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


# ====================================================================== RoundPacer


def test_a_quiet_link_waits_twice_as_long_each_round_up_to_its_cap() -> None:
    pace = RoundPacer(0.5, most=8)
    assert [pace.after(0) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert pace.after(3) == 0.5  # a pull: the pushes missed something, back to the interval
    assert pace.after(0) == 0.5 and pace.after(0) == 1.0
    assert pace.reset() == 0.5 and pace.after(0) == 0.5  # a failed or refused round


# ====================================================================== a real link


@dataclass
class Peer:
    core: NodeCore
    heads_calls: list[float]
    cosigns: dict[str, int]  # Cosign ("log") and CosignView ("view") calls served


class CountingExchange(ExchangeService):
    """The institute's Exchange servicer, noting when each Heads call came
    and counting the Cosign and CosignView calls."""

    def __init__(self, *args: object, calls: list[float], cosigns: dict[str, int]) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.calls = calls
        self.cosigns = cosigns

    def Heads(self, request, context):  # noqa: N802
        self.calls.append(time.monotonic())
        return super().Heads(request, context)

    def Cosign(self, request, context):  # noqa: N802
        self.cosigns["log"] += 1
        return super().Cosign(request, context)

    def CosignView(self, request, context):  # noqa: N802
        self.cosigns["view"] += 1
        return super().CosignView(request, context)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[PeerLink, Peer, NodeCore]]:
    """carrier-1's PeerLink (sync interval 0.05 s) to the institute's servicer."""
    d = tmp_path / "c"
    cons: Consortium = init_consortium(d, carriers=1, internet=0, base_port=free_port_block(6),
                                       now=datetime.now(UTC))
    stores, cores = [], []
    for pid in ("institute", OWN):
        store = Store(tmp_path / pid)
        core = NodeCore(store, cons, pid, SigningKey.load(d / pid / "signing.key"), _now)
        core.start()
        stores.append(store)
        cores.append(core)
    inst_core, own_core = cores
    inst_view = ViewKeeper(inst_core.ledger, _now)
    inst_core.subscribe(inst_view.apply)
    inst_view.start()
    own_view = ViewKeeper(own_core.ledger, _now)
    own_core.subscribe(own_view.apply)
    own_view.start()
    calls: list[float] = []
    cosigns = {"log": 0, "view": 0}
    server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[DecodeGuard()])
    inst_key = SigningKey.load(d / "institute" / "signing.key")
    rpc.add_ExchangeServicer_to_server(CountingExchange(
        inst_core, Witness(stores[0], cons, "institute", inst_key, _now), inst_view,
        lambda peer: False, calls=calls, cosigns=cosigns), server)
    inst_cfg = NodeConfig.for_participant(d, "institute")
    port = server.add_secure_port("127.0.0.1:0", member_server_credentials(inst_cfg))
    server.start()
    creds = member_channel_credentials(NodeConfig.for_participant(d, OWN))
    inst = cons.participant("institute")
    assert inst is not None
    gate = gate_at_start(0, restored=False, new_feed=True, peers=["institute"],
                         quorum=cons.policy.restore_quorum)
    parts = LinkParts(own_core, gate, LogKeeper(own_core.ledger), own_view,
                      NodeMetrics(p.id for p in cons.participants), lambda peer: False)
    link = PeerLink(parts, dataclasses.replace(inst, member_endpoint=f"127.0.0.1:{port}"),
                    creds, sync_interval=0.05)
    try:
        yield link, Peer(inst_core, calls, cosigns), own_core
    finally:
        link.stop()
        server.stop(0).wait(5)
        for core in cores:
            core.stop()
        for store in stores:
            store.close()


def _wait(cond: object, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_an_idle_link_polls_less_and_still_pulls_what_no_push_brought(
    pair: tuple[PeerLink, Peer, NodeCore],
) -> None:
    link, inst, own = pair
    link.start()
    _wait(lambda: len(inst.heads_calls) >= 1, "the first round")
    time.sleep(2.0)
    # 0.05 s rounds would be about 40 calls in 2 s; doubling to 0.4 s they are about 8.
    first = inst.heads_calls[0]
    calls = [t for t in inst.heads_calls if first < t <= first + 2.0]
    assert len(calls) <= 15, len(calls)
    # a loaded machine may have made fewer rounds: wait for enough to compare
    _wait(lambda: len(inst.heads_calls) >= 5, "rounds to compare", timeout=30)
    calls = inst.heads_calls[1:]
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert gaps and max(gaps) >= 0.3  # it waited longer than one interval between rounds
    # A record the institute holds but did not push (issued with no link to push it):
    # a round at the slowed pace still finds and pulls it.
    inst.core.issue(Mark("+8613900000001", "fraud", 70, observed_at_ms=_now()))
    _wait(lambda: own.ledger.feed("institute").seq == 1, "the pull", timeout=5)


# ====================================================================== CosignRota


class FakeLink:
    def __init__(self) -> None:
        self.view_asks = ViewAskPacer()
        self.woken = 0
        self.kinds: list[tuple[bool, bool]] = []  # (log, view) of each wake-up
        self.lock = threading.Lock()

    def cosign_now(self, *, log: bool = True, view: bool = True) -> None:
        with self.lock:
            self.woken += 1
            self.kinds.append((log, view))


def test_a_new_checkpoint_asks_a_quorum_and_a_spare_in_turn() -> None:
    links = [FakeLink() for _ in range(11)]
    rota = CosignRota(links, quorum=2)  # type: ignore[arg-type]
    rota.new_checkpoint()
    assert [x.woken for x in links] == [1, 1, 1] + [0] * 8
    rota.new_checkpoint()  # the next checkpoint: the next three peers
    assert [x.woken for x in links] == [1] * 6 + [0] * 5
    for _ in range(2):
        rota.new_checkpoint()
    # round the ring: every peer is asked in its turn
    assert [x.woken for x in links] == [2] + [1] * 10


def test_a_checkpoint_short_of_its_quorum_asks_the_others_then_again_in_turn() -> None:
    links = [FakeLink() for _ in range(5)]
    rota = CosignRota(links, quorum=2)  # type: ignore[arg-type]
    rota.new_checkpoint()
    rota.short()
    assert [x.woken for x in links] == [1] * 5  # three, then the two not asked yet
    # still short once every link was asked (a peer lacked the view's records):
    # ask again in turn, a quorum and a spare a tick, not waiting for the links'
    # backed-off rounds
    rota.short()
    assert sum(x.woken for x in links) == 8
    rota.short()
    assert [x.woken for x in links] == [2] * 5
    rota.new_checkpoint()
    assert sum(x.woken for x in links) == 13


def test_a_short_view_wakes_links_for_the_view_only_and_a_new_checkpoint_for_both() -> None:
    links = [FakeLink() for _ in range(5)]
    rota = CosignRota(links, quorum=2)  # type: ignore[arg-type]
    rota.new_checkpoint()
    assert [x.kinds for x in links[:3]] == [[(True, True)]] * 3
    rota.short(log=False, view=True)  # the log has its quorum; the view does not
    assert [x.kinds for x in links[3:]] == [[(False, True)]] * 2
    rota.short(log=True, view=False)
    assert sum(x.kinds[-1] == (True, False) for x in links) == 3


def _wakes(pace: ViewAskPacer, n: int, outcomes: list[bool]) -> list[bool]:
    """For `n` wakes of a link, whether each asked; the k-th ask gets outcomes[k]."""
    made, asked = [], 0
    for _ in range(n):
        made.append(pace.due())
        if made[-1]:
            pace.outcome(outcomes[asked])
            asked += 1
    return made


def test_a_link_refused_for_another_vector_skips_more_view_asks_up_to_a_cap() -> None:
    T, F = True, False
    # refused each time: 1, 2, 4 asks skipped, then 4 at most
    assert _wakes(ViewAskPacer(most=4, free=0), 16, [F] * 5) == [
        T, F, T, F, F, T, F, F, F, F, T, F, F, F, F, T
    ]
    # a cosignature between: none skipped after it
    assert _wakes(ViewAskPacer(most=4, free=0), 8, [F, F, T, T, F, F]) == [
        T, F, T, F, F, T, T, T
    ]
    # the first two refusals in a row skip nothing; a cosignature starts the count again
    assert _wakes(ViewAskPacer(most=4, free=2), 9, [F, F, F, F, T, F, F, F]) == [
        T, T, T, F, T, F, F, T, T
    ]
    pace = ViewAskPacer(most=4, free=0)
    pace.outcome(False)
    pace.outcome(False)
    pace.clear()
    assert pace.due()


def test_a_settled_view_lets_the_links_woken_ask_whatever_their_refusals() -> None:
    links = [FakeLink() for _ in range(5)]
    rota = CosignRota(links, quorum=2)  # type: ignore[arg-type]
    for x in links:
        x.view_asks = ViewAskPacer(most=4, free=0)
        x.view_asks.outcome(False)
        x.view_asks.outcome(False)  # two refusals in a row: the next two asks are skipped
    rota.short(log=False, view=True)  # the view moved meanwhile: the links keep their pace
    assert [x.woken for x in links] == [1, 1, 1, 0, 0]
    assert not any(x.view_asks.due() for x in links)
    rota.short(log=False, view=True, settled=True)  # it stood still for a tick
    assert [x.woken for x in links] == [1, 1, 1, 1, 1]
    # the two woken now ask; the three before had one more ask to skip
    assert [x.view_asks.due() for x in links] == [False, False, False, True, True]
    for x in links:
        x.view_asks.outcome(False)  # refused again: the next ask is skipped
    rota.short(log=True, view=False, settled=True)  # only the log short: no view asks cleared
    assert not any(x.view_asks.due() for x in links)


# ====================================================================== catch-up
# The writer's busy flag and the screen index resting for it: tests/test_node_parts.py
# (test_core_is_busy_while_a_group_is_written_and_idle_after) and tests/test_screen_fast.py.


# ====================================================================== callers


class _Context:
    def __init__(self, cert: bytes) -> None:
        self.cert = cert

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self.cert]}


def test_a_callers_certificate_is_read_once_and_a_bad_one_is_refused_each_time(
    tmp_path: Path,
) -> None:
    from ledger.errors import NotAllowed
    from node import services

    d = tmp_path / "c"
    init_consortium(d, carriers=1, internet=0, base_port=free_port_block(6),
                    now=datetime.now(UTC))
    pem = NodeConfig.for_participant(d, OWN).tls_cert.read_bytes()
    services._participant_of.cache_clear()
    assert services.caller_id(_Context(pem)) == OWN  # type: ignore[arg-type]
    assert services.caller_id(_Context(pem)) == OWN  # type: ignore[arg-type]
    info = services._participant_of.cache_info()
    assert (info.hits, info.misses) == (1, 1)
    for _ in range(2):
        with pytest.raises(NotAllowed):
            services.caller_id(_Context(b"-----BEGIN CERTIFICATE-----\nAAAA\n"))  # type: ignore[arg-type]


# ====================================================================== LogKeeper pacing


def test_a_grown_log_is_signed_at_most_once_per_interval_and_never_when_unchanged(
    tmp_path: Path,
) -> None:
    """Each new log checkpoint is a round of Cosign calls: a busy log is signed
    again only `every_s` after the last signing (its growth is kept, not lost),
    and a log that did not grow is not signed however long it waits."""
    d = tmp_path / "c"
    cons = init_consortium(d, carriers=1, internet=0, base_port=free_port_block(6),
                           now=datetime.now(UTC))
    store = Store(tmp_path / "db")
    core = NodeCore(store, cons, OWN, SigningKey.load(d / OWN / "signing.key"), _now)
    t = [100.0]
    logs = LogKeeper(core.ledger, _now, every_s=1.0, pace=lambda: t[0])
    core.subscribe(logs.grew)
    core.start()
    try:
        assert logs.sign_if_grown() is not None  # none signed yet: signed at once
        core.issue(Mark("+8613900000001", "fraud", 70, observed_at_ms=_now()))
        t[0] += 0.5
        assert logs.sign_if_grown() is None and logs.current()[1] == 0  # within the interval
        t[0] += 0.5
        text = logs.sign_if_grown()  # the interval is over: the growth was kept
        assert text is not None and logs.current() == (text, 1)
        t[0] += 5.0
        assert logs.sign_if_grown() is None  # nothing grew since: nothing to sign
        core.issue(Mark("+8613900000002", "fraud", 70, observed_at_ms=_now()))
        assert logs.current()[1] == 1 and logs.sign_if_grown() is not None  # long after: at once
        assert logs.current()[1] == 2
    finally:
        core.stop()
        store.close()


class _WitnessStub:
    """An Exchange stub whose Cosign is the institute's witness, in-process."""

    def __init__(self, witness: Witness) -> None:
        self.witness = witness
        self.calls = 0

    def Cosign(self, request: Any, timeout: float) -> Any:  # noqa: N802
        self.calls += 1
        line = self.witness.cosign_log(OWN, request.note, request.old_size, list(request.proof))
        return pb.CosignResponse(signature_line=line)


def test_a_log_knows_how_long_ago_each_peer_last_cosigned_it(tmp_path: Path) -> None:
    """A link's round asks for the log's cosignature only when the peer has
    not cosigned for a while (cosigned_within); a refusal counts as none."""
    d = tmp_path / "c"
    cons = init_consortium(d, carriers=1, internet=0, base_port=free_port_block(6),
                           now=datetime.now(UTC))
    store, inst_store = Store(tmp_path / "db"), Store(tmp_path / "inst")
    core = NodeCore(store, cons, OWN, SigningKey.load(d / OWN / "signing.key"), _now)
    t = [100.0]
    logs = LogKeeper(core.ledger, _now, pace=lambda: t[0])
    core.subscribe(logs.grew)
    core.start()
    stub = _WitnessStub(Witness(inst_store, cons, "institute",
                                SigningKey.load(d / "institute" / "signing.key"), _now))
    try:
        core.issue(Mark("+8613900000001", "fraud", 70, observed_at_ms=_now()))
        assert logs.sign_if_grown() is not None
        assert not logs.cosigned_within("institute", 4.0)  # never, in this run
        logs.request_cosign("institute", stub)  # type: ignore[arg-type]
        assert stub.calls == 1 and logs.cosigned_within("institute", 4.0)
        t[0] += 3.9
        assert logs.cosigned_within("institute", 4.0)
        t[0] += 0.2
        assert not logs.cosigned_within("institute", 4.0)
        assert not logs.cosigned_within("internet-1", 4.0)
    finally:
        core.stop()
        store.close()
        inst_store.close()


def test_a_wake_for_the_log_that_lands_in_a_round_is_served_by_the_round(
    pair: tuple[PeerLink, Peer, NodeCore],
) -> None:
    """The rota woke a link for a new log checkpoint and its anti-entropy
    round took the wake: the round asks for the cosignature although the peer
    cosigned an older checkpoint within IDLE_ROUNDS_MAX intervals (found by
    the review: the round dropped the wake and asked no one)."""
    link, _inst, own = pair
    logs = link.parts.logs
    own.subscribe(logs.grew)
    own.issue(Mark("+8613900000021", "fraud", 70, observed_at_ms=_now()))
    first = logs.sign_if_grown()
    assert first is not None
    link.sync_once()                              # never cosigned: the round asks
    assert logs.has_cosignature("institute", first)
    own.issue(Mark("+8613900000022", "fraud", 70, observed_at_ms=_now()))
    time.sleep(logs.every_s)                      # a log is signed at most once an interval
    second = logs.sign_if_grown() or ""
    assert second and second != first
    link.cosign_now(log=True, view=False)
    link.sync_once()                              # cosigned 0 s ago, but woken for the log
    assert logs.has_cosignature("institute", second)


def test_a_link_woken_for_the_view_asks_no_log_cosignature(
    pair: tuple[PeerLink, Peer, NodeCore],
) -> None:
    link, inst, own = pair
    logs = link.parts.logs
    own.subscribe(logs.grew)
    assert logs.sign_if_grown() is not None
    link.start()
    _wait(lambda: inst.cosigns["log"] >= 1 and inst.cosigns["view"] >= 1, "the first round")
    for i in range(10):  # until a wake-up is served with no anti-entropy round beside it
        time.sleep(0.5)  # the quiet link's rounds are 0.4 s apart by now
        own.issue(Mark(f"+861390000001{i}", "fraud", 70, observed_at_ms=_now()))
        text = logs.sign_if_grown()  # a new log checkpoint, cosigned by no one yet
        assert text is not None
        before, rounds = dict(inst.cosigns), len(inst.heads_calls)
        link.cosign_now(log=False, view=True)
        _wait(lambda b=before: inst.cosigns["view"] > b["view"], "the CosignView call")
        log_calls, cosigned = inst.cosigns["log"], logs.has_cosignature("institute", text)
        # A round (its Heads call comes first) asks both; with none, only this wake-up came.
        if len(inst.heads_calls) == rounds:
            assert log_calls == before["log"] and not cosigned
            break
    else:
        pytest.fail("every wake-up met an anti-entropy round")
    link.cosign_now(log=True, view=False)
    _wait(lambda: logs.has_cosignature("institute", text), "the log cosignature")


def test_a_round_failing_mid_pull_writes_what_it_pulled_and_the_next_round_goes_on(
    pair: tuple[PeerLink, Peer, NodeCore],
) -> None:
    """The peer's Pull stream breaks after its first batch: the round fails,
    but the batch it pulled is written before the round ends (the pipe is
    closed with it, not left to the next round), and the next round pulls the
    rest without an error carried over."""
    link, inst, own = pair
    inst.core.issue_many_async([OwnIssue(Mark(f"+86139{i:08d}", "fraud", 70,
                                              observed_at_ms=_now()))
                                for i in range(1500)])[-1].result(30)
    pull = link.stub.Pull
    first: list[int] = []

    def breaking(request: Any, timeout: float | None = None) -> Any:
        batch = next(iter(pull(request, timeout=timeout)))
        first.append(len(batch.envelopes))
        yield batch
        raise grpc.RpcError("the stream broke")

    link.stub.Pull = breaking
    with pytest.raises(grpc.RpcError):
        link.sync_once()
    assert link._pulls._thread is None           # closed with the failed round
    assert 0 < first[0] < 1500 and own.ledger.feed("institute").seq == first[0]
    link.stub.Pull = pull
    link.sync_once()
    assert own.ledger.feed("institute").seq == 1500
