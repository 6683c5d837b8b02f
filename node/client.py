"""Clients of a node: channels with the consortium's TLS material, and the
calls the CLI and tools make."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from keys import ConfigError
from keys.consortium import Consortium
from keys.signing import read_private
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
    """A mutual-TLS channel presenting `as_id`'s certificate (DIR/<id>/tls.pem).

    Raises KeyFileError when the key file is missing or readable by others.
    """
    return _mtls_channel(directory, as_id, "tls", endpoint)


def admin_channel(directory: Path, as_id: str, endpoint: str) -> grpc.Channel:
    """A mutual-TLS channel presenting `as_id`'s operator's admin certificate
    (DIR/<id>/admin.pem and admin.key): the only credential the Admin API takes.

    Raises KeyFileError when the key file is missing or readable by others.
    """
    return _mtls_channel(directory, as_id, "admin", endpoint)


def _mtls_channel(directory: Path, as_id: str, stem: str, endpoint: str) -> grpc.Channel:
    pdir = directory / as_id
    key = read_private(pdir / f"{stem}.key")  # the same mode check as signing keys
    try:
        cert = (pdir / f"{stem}.pem").read_bytes()
        ca = (directory / "ca" / "ca.pem").read_bytes()
    except OSError as e:
        raise ConfigError(f"no {stem} certificate for {as_id!r} in {pdir}: {e.strerror}") from e
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    return grpc.secure_channel(
        endpoint, creds, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    )


def public_stub(directory: Path, endpoint: str) -> rpc.PublicStub:
    return rpc.PublicStub(public_channel(directory, endpoint))


def admin_stub(directory: Path, as_id: str, endpoint: str) -> rpc.AdminStub:
    return rpc.AdminStub(admin_channel(directory, as_id, endpoint))


def audit_stub(directory: Path, as_id: str, endpoint: str) -> rpc.AuditStub:
    """Raw records and evidence, on the member port, as member or auditor `as_id`."""
    return rpc.AuditStub(member_channel(directory, as_id, endpoint))
