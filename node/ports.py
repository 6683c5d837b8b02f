"""The addresses a node listens on, checked before it starts: a port that is
taken, or an address this machine does not have, is one sentence naming the
node.toml key to change, never a gRPC traceback.

    ConfigError (keys)
    └── CannotListen    a listen address cannot be bound (not this machine's, no permission)
        └── PortInUse   another program holds the port
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import grpc

from keys import ConfigError
from keys.layout import NodeConfig

# The listen keys a node cannot run without; tiles_listen only warns (node/tilesrv.py).
REQUIRED_LISTENERS = ("member_listen", "public_listen", "metrics_listen")


class CannotListen(ConfigError):
    """A listen address named in node.toml cannot be bound: `key` (e.g.
    "public_listen") holds `address` in the file `source`."""

    def __init__(self, message: str, key: str, address: str, source: Path | str | None) -> None:
        super().__init__(message)
        self.key, self.address, self.source = key, address, source


class PortInUse(CannotListen):
    """Another program holds the port."""


def listen_error(key: str, address: str, source: Path | str | None, err: OSError) -> CannotListen:
    """The typed error for `err`, raised binding `address` (the value of `key` in
    `source`): PortInUse with "port A (KEY in FILE) is in use by another program;
    stop it or change KEY", else CannotListen with the system's reason."""
    where = f"{key} in {source}" if source is not None else f"{key} of the node configuration"
    if err.errno == errno.EADDRINUSE:
        return PortInUse(
            f"port {address} ({where}) is in use by another program; stop it or change {key}",
            key, address, source,
        )
    why = err.strerror or str(err)
    return CannotListen(f"cannot listen on {address} ({where}): {why}; change {key}",
                        key, address, source)


def check_free(cfg: NodeConfig, keys: tuple[str, ...] = REQUIRED_LISTENERS) -> None:
    """Raise CannotListen (PortInUse when taken) for the first of `keys` whose
    address cannot be bound now. Port 0 (any free port) always can."""
    for key in keys:
        address = getattr(cfg, key)
        try:
            _probe(address)
        except OSError as e:
            raise listen_error(key, address, cfg.source, e) from None


def add_secure_port(
    server: grpc.Server, cfg: NodeConfig, key: str, creds: grpc.ServerCredentials
) -> int:
    """`server.add_secure_port` on the address of `key`, a failure raised as
    CannotListen; gRPC says only "Failed to bind", so the address is probed again
    to tell why."""
    address = getattr(cfg, key)
    try:
        return server.add_secure_port(address, creds)
    except RuntimeError:
        check_free(cfg, (key,))  # taken, or not this machine's: that sentence
        raise listen_error(key, address, cfg.source, OSError("gRPC could not bind it")) from None


def _probe(address: str) -> None:
    """Bind (and release) every address `address` resolves to, as gRPC would (SO_REUSEADDR)."""
    host, _, port_text = address.rpartition(":")
    port = int(port_text)
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise OSError(errno.EADDRNOTAVAIL, f"{host} does not resolve ({e.strerror})") from e
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(sockaddr)
            s.listen(1)

