"""Clients of a node: the consortium configuration verified with a pinned
institute key, channels with the consortium's TLS material that accept only
the certificate of the participant dialled, and the calls the CLI and tools make."""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from keys import ConfigError
from keys.consortium import Consortium
from keys.layout import NodeConfig
from keys.signing import read_private
from keys.tls import participant_dns_name
from markex.v1 import service_pb2_grpc as rpc

CONSORTIUM_ENV = "MARKEX_CONSORTIUM"
INSTITUTE_KEY_ENV = "MARKEX_INSTITUTE_KEY"
PIN_FILE = "config.pub"  # <dir>/<id>/config.pub: the pin of a participant that runs no node


def consortium_dir(arg: str | None) -> Path:
    d = arg or os.environ.get(CONSORTIUM_ENV)
    if not d:
        raise ConfigError("no consortium: pass --consortium DIR or set MARKEX_CONSORTIUM")
    p = Path(d)
    if not (p / "consortium.json").is_file():
        raise ConfigError(f"{p} holds no consortium.json (run `markex consortium init {p}`)")
    return p


def pinned_institute_key(directory: Path, key_b64: str | None, as_id: str | None) -> bytes:
    """The institute key consortium.json must be signed with: `key_b64`
    (--institute-key), else $MARKEX_INSTITUTE_KEY, else the `institute_key` of
    <directory>/<as_id>/node.toml (for a participant without a node, such as an
    auditor, <directory>/<as_id>/config.pub). Raises ConfigError when none is given: the
    key inside the file is never trusted to verify the file."""
    raw = key_b64 or os.environ.get(INSTITUTE_KEY_ENV)
    if raw:
        try:
            key = base64.b64decode(raw.strip(), validate=True)
        except (binascii.Error, ValueError) as e:
            raise ConfigError("--institute-key is not base64") from e
        if len(key) != 32:
            raise ConfigError(f"--institute-key is {len(key)} bytes, not a 32-byte Ed25519 key")
        return key
    if as_id:
        pin_file = directory / as_id / PIN_FILE
        if not (directory / as_id / "node.toml").is_file() and pin_file.is_file():
            # A participant without a node (an auditor) keeps only the pin.
            return _pin_from(pin_file)
        return NodeConfig.for_participant(directory, as_id).institute_key
    raise missing_pin(directory)


def _pin_from(path: Path) -> bytes:
    try:
        key = base64.b64decode(path.read_text(encoding="ascii").strip(), validate=True)
    except (OSError, UnicodeDecodeError, binascii.Error, ValueError) as e:
        raise ConfigError(f"{path} does not hold a base64 configuration key") from e
    if len(key) != 32:
        raise ConfigError(f"{path} does not hold a 32-byte Ed25519 key")
    return key


def missing_pin(directory: Path) -> ConfigError:
    """The refusal to load `directory`'s consortium.json unpinned, saying what to pass."""
    return ConfigError(
        "no pinned institute key to verify consortium.json with: pass --institute-key B64 "
        f"(or set {INSTITUTE_KEY_ENV}), or --as ID to take the institute_key of "
        f"{directory}/ID/node.toml"
    )


def load_pinned(directory: Path, key_b64: str | None, as_id: str | None) -> Consortium:
    """consortium.json of `directory`, verified with the pinned institute key."""
    return Consortium.load(directory, pinned_institute_key(directory, key_b64, as_id))


@dataclass(frozen=True)
class Endpoints:
    member: str
    public: str
    participant: str | None = None  # whose certificate the node must present (None: any)


def resolve_node(cons: Consortium, node: str) -> Endpoints:
    """`--node ID` (from consortium.json; the channel then accepts only ID's
    certificate) or `--node HOST:PORT` (both ports the same, any member's certificate)."""
    p = cons.participant(node)
    if p is not None:
        return Endpoints(p.member_endpoint, p.public_endpoint, p.id)
    host, sep, port = node.rpartition(":")
    if sep and host and port.isdigit():
        return Endpoints(node, node)
    raise ConfigError(f"--node {node!r} is neither a participant of {cons.name} nor HOST:PORT")


def target_options(participant: str | None) -> list[tuple[str, str]]:
    """Channel options that make TLS accept only `participant`'s certificate
    (the DNS SAN only the CA's certificate for that participant carries)."""
    if participant is None:
        return []
    return [("grpc.ssl_target_name_override", participant_dns_name(participant))]


def public_channel(
    directory: Path, endpoint: str, participant: str | None = None
) -> grpc.Channel:
    """A TLS channel to a public port; with `participant`, only that
    participant's certificate is accepted."""
    ca = (directory / "ca" / "ca.pem").read_bytes()
    return grpc.secure_channel(
        endpoint,
        grpc.ssl_channel_credentials(ca),
        options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            *target_options(participant),
        ],
    )


def member_channel(
    directory: Path, as_id: str, endpoint: str, participant: str | None = None
) -> grpc.Channel:
    """A mutual-TLS channel presenting `as_id`'s certificate (DIR/<id>/tls.pem);
    with `participant`, only that participant's server certificate is accepted.

    Raises KeyFileError when the key file is missing or readable by others.
    """
    return _mtls_channel(directory, as_id, "tls", endpoint, participant)


def admin_channel(
    directory: Path, as_id: str, endpoint: str, participant: str | None = None
) -> grpc.Channel:
    """A mutual-TLS channel presenting `as_id`'s operator's admin certificate
    (DIR/<id>/admin.pem and admin.key): the only credential the Admin API takes.

    Raises KeyFileError when the key file is missing or readable by others.
    """
    return _mtls_channel(directory, as_id, "admin", endpoint, participant)


def _mtls_channel(
    directory: Path, as_id: str, stem: str, endpoint: str, participant: str | None
) -> grpc.Channel:
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
        endpoint,
        creds,
        options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            *target_options(participant),
        ],
    )


def public_stub(
    directory: Path, endpoint: str, participant: str | None = None
) -> rpc.PublicStub:
    return rpc.PublicStub(public_channel(directory, endpoint, participant))


def admin_stub(
    directory: Path, as_id: str, endpoint: str, participant: str | None = None
) -> rpc.AdminStub:
    return rpc.AdminStub(admin_channel(directory, as_id, endpoint, participant))


def audit_stub(
    directory: Path, as_id: str, endpoint: str, participant: str | None = None
) -> rpc.AuditStub:
    """Raw records and evidence, on the member port, as member or auditor `as_id`."""
    return rpc.AuditStub(member_channel(directory, as_id, endpoint, participant))
