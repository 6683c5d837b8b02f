"""Shared fixtures: fixed test keys, a small consortium, ledgers on tmp_path."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from keys.consortium import Consortium, Participant, Policy
from keys.signing import SigningKey
from ledger.log import NodeLedger
from ledger.store import Store

IDS = ("institute", "carrier-1", "carrier-2", "internet-1", "internet-2")
ROLES = {
    "institute": "institute",
    "carrier-1": "carrier",
    "carrier-2": "carrier",
    "internet-1": "internet",
    "internet-2": "internet",
}
WEIGHTS = {"institute": 5, "carrier": 2, "internet": 1}
NAME = "markex-test"  # the test consortium's name, which every test record is signed for
NOW = 1_790_000_000_000  # a fixed "now" (2026-09-21), passed in; no clock in tests


def fixed_key(pid: str) -> SigningKey:
    """Fixed keys: golden files signed with them must never change."""
    return SigningKey.from_seed(hashlib.sha256(b"markex test key " + pid.encode()).digest())


KEYS = {pid: fixed_key(pid) for pid in IDS}


def make_consortium(**policy: int) -> Consortium:
    parts = tuple(
        Participant(pid, ROLES[pid], KEYS[pid].public_bytes, WEIGHTS[ROLES[pid]], "", "")
        for pid in IDS
    )
    ranges = {
        "carrier-1": ("+86138", "+86139", "+8610"),
        "carrier-2": ("+86130", "+86131", "+8621", "+8613812345678"),
    }
    return Consortium(NAME, parts, ranges, policy=Policy(**policy))


@pytest.fixture
def consortium() -> Consortium:
    return make_consortium()


@pytest.fixture
def ledger(tmp_path: Path, consortium: Consortium) -> Iterator[NodeLedger]:
    led = NodeLedger(Store(tmp_path / "db"), consortium, "carrier-1", KEYS["carrier-1"])
    yield led
    led.close()


def free_port_block(n: int) -> int:
    """A base port with n free consecutive loopback ports after it."""
    # Below the kernel's ephemeral ports (32768 and up), and apart per process (a
    # parallel run's workers): a block found free is not taken by another's connection.
    start = 20000 + ((hash(str(Path.cwd())) + os.getpid() * 131) % 1000) * 10
    for base in (*range(start, 32000, 97), *range(20000, start, 97)):
        socks = []
        try:
            for i in range(n):
                s = socket.socket()
                s.bind(("127.0.0.1", base + i))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port block")


def stop_nodes(nodes: Iterable[Any], grace: float = 0.1) -> None:
    """Stop in-process `Node`s of one net together, at the end of a test.
    One by one, each would wait out its grace for the push streams of the
    peers not yet stopped; together, their links end those streams at once."""
    running = list(nodes)
    if running:
        with ThreadPoolExecutor(len(running)) as ex:
            list(ex.map(lambda node: node.stop(grace=grace), running))


def member_server_credentials(cfg: Any) -> Any:
    """A member port's credentials for the node of NodeConfig `cfg`: its
    certificate, clients must show one from the consortium CA."""
    import grpc

    from keys.signing import read_private

    return grpc.ssl_server_credentials(
        [(read_private(cfg.tls_key), cfg.tls_cert.read_bytes())],
        root_certificates=cfg.ca_cert.read_bytes(), require_client_auth=True)


def member_channel_credentials(cfg: Any) -> Any:
    """The credentials the node of NodeConfig `cfg` dials a member port with."""
    import grpc

    from keys.signing import read_private

    return grpc.ssl_channel_credentials(
        root_certificates=cfg.ca_cert.read_bytes(), private_key=read_private(cfg.tls_key),
        certificate_chain=cfg.tls_cert.read_bytes())
