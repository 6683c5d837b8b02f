"""How a command reaches a node: the command names what it needs (a `Need`)
and whom it dials (a `Dial`); a `Connect` turns that into a gRPC stub.

`TlsConnect` is the default and what `markex` runs with: TLS channels with
the consortium's CA that accept only the dialled participant's certificate,
presenting the admin or member credential of `Dial.as_id` (node/client.py).
Tests pass their own `Connect` (any callable of the same shape) to run
commands against in-process servers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from keys import ConfigError

if TYPE_CHECKING:  # loaded by the first connection: a command that dials no node never pays
    import grpc

    from keys.consortium import Consortium
    from node import client

# public: the Public service on the public port; admin: the Admin service
# with the operator's admin certificate; audit: the Audit service on the
# member port with a member's or an auditor's certificate; holders: the
# Holders service on the member port (node/holders.py), likewise; screening:
# the Screening service on the member port (node/screen.py), likewise.
Need = Literal["public", "admin", "audit", "holders", "screening"]


@dataclass(frozen=True)
class Dial:
    """Whom a command asks: the node's endpoints (from `client.resolve_node`),
    the consortium folder holding the CA and the credentials, and the
    participant whose credential is presented (None for the public port)."""

    directory: Path
    node: client.Endpoints
    as_id: str | None = None


def reader_id(cons: Consortium, as_id: str | None) -> str:
    """Who reads the Audit service: `as_id`, else the consortium's first auditor."""
    if as_id:
        if cons.participant(as_id) is None:
            raise ConfigError(f"--as {as_id!r} is not a participant of {cons.name}")
        return as_id
    for p in cons.participants:
        if p.role == "auditor":
            return p.id
    raise ConfigError(f"{cons.name} has no auditor: pass --as ID (a member or an auditor)")


class Connect(Protocol):
    """Returns the stub of the service `need` on the node `dial` names:
    `rpc.PublicStub`, `rpc.AdminStub`, `rpc.AuditStub`, `rpc.HoldersStub` or
    `rpc.ScreeningStub`."""

    def __call__(self, need: Need, dial: Dial) -> Any: ...


class TlsConnect:
    """The real connections, exactly as `markex` opens them; `close()` (or
    leaving a `with` block) closes every channel it opened."""

    def __init__(self) -> None:
        self._channels: list[grpc.Channel] = []

    def __call__(self, need: Need, dial: Dial) -> Any:
        from markex.v1 import service_pb2_grpc as rpc
        from node import client

        ep = dial.node
        if need == "public":
            ch = client.public_channel(dial.directory, ep.public, ep.participant)
            stub: Any = rpc.PublicStub
        elif dial.as_id is None:
            raise ValueError(f"a {need} connection presents a participant's credential")
        elif need == "admin":
            ch = client.admin_channel(dial.directory, dial.as_id, ep.member, ep.participant)
            stub = rpc.AdminStub
        elif need in ("audit", "holders", "screening"):
            ch = client.member_channel(dial.directory, dial.as_id, ep.member, ep.participant)
            stub = {"audit": rpc.AuditStub, "holders": rpc.HoldersStub,
                    "screening": rpc.ScreeningStub}[need]
        else:
            raise ValueError(f"no such connection: {need!r}")
        self._channels.append(ch)
        return stub(ch)

    def close(self) -> None:
        for ch in self._channels:
            ch.close()
        self._channels.clear()

    def __enter__(self) -> TlsConnect:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
