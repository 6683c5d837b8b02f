"""`markex web`: the public web front end of one node, served by waitress.

It reads through the node's public port and, with the front end's own
participant certificate (`--as`), the Audit service of its member port
(records' log indexes); it keeps no state of its own. `WebServer` runs the
same app in a thread for the demo, the tests and the benchmark."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keys.consortium import Consortium
from node import client
from node.command import UsageError, acting, finite_float, pinned_consortium
from node.connect import Connect, Dial
from node.web.ratelimit import RateLimit

if TYPE_CHECKING:
    from node.web.report import NodeReader

DEFAULT_LISTEN = "127.0.0.1:8080"


def parse_listen(s: str) -> tuple[str, int]:
    """HOST:PORT (port 0: any free port). Raises UsageError."""
    host, sep, port = s.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen {s!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def node_reader(
    directory: Path, cons: Consortium, as_id: str, node: str, connect: Connect
) -> NodeReader:
    """The reader of `node` (id or HOST:PORT): its public port, and its
    member port's Audit service presenting `as_id`'s certificate."""
    from node.web.report import NodeReader

    ep = client.resolve_node(cons, node)
    public = connect("public", Dial(directory, ep))
    audit = connect("audit", Dial(directory, ep, as_id))
    return NodeReader(ep.participant or node, public, audit)


class WebServer:
    """The app under waitress on `host:port`, in a daemon thread;
    `url` once started, `close()` stops it."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, threads: int = 8) -> None:
        from waitress.server import create_server  # imported when serving: the CLI starts fast

        self._server = create_server(app, host=host, port=port, threads=threads, ident="markex")
        self.host = host
        self.port = int(self._server.effective_port)  # type: ignore[union-attr]
        self._thread = threading.Thread(target=self._server.run, name="markex-web", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> WebServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def cmd_web(args: argparse.Namespace, connect: Connect) -> int:
    from node.web.app import create_app

    directory, cons = pinned_consortium(args)
    as_id = acting(args, cons)
    host, port = parse_listen(args.listen)
    if args.lookups_per_minute < 0 or args.burst < 1:
        raise UsageError("--lookups-per-minute is >= 0 and --burst >= 1")
    reader = node_reader(directory, cons, as_id, args.node or as_id, connect)
    app = create_app(cons, reader, rate=RateLimit(args.lookups_per_minute, args.burst))
    from node.web.appeals import AppealRelay, install_relay  # the holder's appeal

    install_relay(app, AppealRelay.tls(directory, cons, as_id, reader.node_id))
    server = WebServer(app, host, port)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    print(f"markex web: {server.url}/ (reading node {reader.node_id})", flush=True)
    try:
        stop.wait()
    finally:
        server.close()
    print("markex web: stopped", file=sys.stderr)
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Adds `markex web` to the CLI's subcommands."""
    wb = sub.add_parser("web", parents=[common], help="the public web front end of a node")
    wb.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT (default {DEFAULT_LISTEN})"
    )
    wb.add_argument(
        "--lookups-per-minute", type=finite_float, default=RateLimit.per_minute,
        help="lookups a minute one client address may make (0: no limit)",
    )
    wb.add_argument("--burst", type=int, default=RateLimit.burst,
                    help="lookups one address may make at once")
    wb.set_defaults(fn=cmd_web)
