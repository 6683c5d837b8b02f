"""Clients of a node: channels with the consortium's TLS material, and the
calls the CLI and tools make."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from keys import ConfigError
from keys.consortium import Consortium
from markex.v1 import service_pb2_grpc as rpc

CONSORTIUM_ENV = "MARKEX_CONSORTIUM"


def consortium_dir(arg: str | None) -> Path:
    d = arg or os.environ.get(CONSORTIUM_ENV)
    if not d:
        raise ConfigError("no consortium: pass --consortium DIR or set MARKEX_CONSORTIUM")
    p = Path(d)
    if not (p / "consortium.json").is_file():
        raise ConfigError(f"{p} holds no consortium.json (run `markex consortium init {p}`)")
    return p


@dataclass(frozen=True)
class Endpoints:
    member: str
    public: str


def resolve_node(cons: Consortium, node: str) -> Endpoints:
    """`--node ID` (from consortium.json) or `--node HOST:PORT` (both ports the same)."""
    p = cons.participant(node)
    if p is not None:
        return Endpoints(p.member_endpoint, p.public_endpoint)
    host, sep, port = node.rpartition(":")
    if sep and host and port.isdigit():
        return Endpoints(node, node)
    raise ConfigError(f"--node {node!r} is neither a participant of {cons.name} nor HOST:PORT")


def public_channel(directory: Path, endpoint: str) -> grpc.Channel:
    ca = (directory / "ca" / "ca.pem").read_bytes()
    return grpc.secure_channel(
        endpoint,
        grpc.ssl_channel_credentials(ca),
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
    )


def member_channel(directory: Path, as_id: str, endpoint: str) -> grpc.Channel:
    """A mutual-TLS channel presenting `as_id`'s certificate."""
    pdir = directory / as_id
    try:
        key = (pdir / "tls.key").read_bytes()
        cert = (pdir / "tls.pem").read_bytes()
    except OSError as e:
        raise ConfigError(f"no TLS key and certificate for {as_id!r} in {pdir}") from e
    ca = (directory / "ca" / "ca.pem").read_bytes()
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    return grpc.secure_channel(endpoint, creds)


def public_stub(directory: Path, endpoint: str) -> rpc.PublicStub:
    return rpc.PublicStub(public_channel(directory, endpoint))


def admin_stub(directory: Path, as_id: str, endpoint: str) -> rpc.AdminStub:
    return rpc.AdminStub(member_channel(directory, as_id, endpoint))
