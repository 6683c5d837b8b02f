"""`markex web`: the public web front end of one node, served by waitress.

It reads through the node's public port and, with the front end's own
participant certificate (`--as`), the Audit service of its member port
(records' log indexes); it keeps no state of its own. `WebServer` runs the
same app in a thread for the demo, the tests and the benchmark."""

from __future__ import annotations

import argparse
import ipaddress
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keys.consortium import Consortium
from node.command import UsageError, acting, node_endpoints, pinned_consortium
from node.connect import Connect, Dial
from node.web.ratelimit import RateLimit, parse_proxies

if TYPE_CHECKING:
    from node.web.report import NodeReader

DEFAULT_LISTEN = "127.0.0.1:8080"  # node/cli.py's default for --listen


def parse_listen(s: str) -> tuple[str, int]:
    """HOST:PORT or [IPv6]:PORT (port 0: any free port). Raises UsageError."""
    host, sep, port = s.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            host = ""
    elif ":" in host or "[" in host or "]" in host:
        host = ""
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen {s!r} is not HOST:PORT")
    return host, int(port)


def node_reader(
    directory: Path, cons: Consortium, as_id: str, node: str, connect: Connect
) -> NodeReader:
    """The reader of `node` (id or HOST:PORT): its public port, and its
    member port's Audit service presenting `as_id`'s certificate."""
    from node.web.report import NodeReader

    ep = node_endpoints(cons, node)
    public = connect("public", Dial(directory, ep))
    audit = connect("audit", Dial(directory, ep, as_id))
    return NodeReader(ep.participant or node, public, audit)


class WebServer:
    """The app under waitress on `host:port`, in a daemon thread;
    `url` once started, `close()` stops it."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, threads: int = 8) -> None:
        from waitress.server import create_server  # imported when serving: the CLI starts fast

        # waitress drops X-Forwarded-For unless told otherwise; the app reads
        # it only from the proxies `--trusted-proxy` names (node/web/ratelimit.py).
        self._server = create_server(app, host=host, port=port, threads=threads, ident="markex",
                                     clear_untrusted_proxy_headers=False)
        self.host = host
        self.port = int(self._server.effective_port)  # type: ignore[union-attr]
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="markex-web", daemon=True)

    def _run(self) -> None:
        try:
            self._server.run()
        except OSError:
            # close() from another thread pulls the sockets out from under select()
            if not self._closing.is_set():
                raise

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> WebServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        self._server.task_dispatcher.shutdown()  # type: ignore[union-attr]
        self._server.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def cmd_web(args: argparse.Namespace, connect: Connect) -> int:
    from node.web.app import create_app
    from node.web.publish import bp as publish  # /stats, /api/v1/stats, /export/latest.*

    directory, cons = pinned_consortium(args)
    as_id = acting(args, cons)
    host, port = parse_listen(args.listen)
    if args.lookups_per_minute < 0 or args.burst < 1:
        raise UsageError("--lookups-per-minute is >= 0 and --burst >= 1")
    try:
        proxies = parse_proxies(args.trusted_proxy or [])
    except ValueError as e:
        raise UsageError(str(e)) from None
    reader = node_reader(directory, cons, as_id, args.node or as_id, connect)
    app = create_app(
        cons, reader, rate=RateLimit(args.lookups_per_minute, args.burst), blueprints=[publish],
        proxies=proxies,
    )
    from node.web.appeals import AppealRelay, install_relay  # the holder's appeal

    install_relay(app, AppealRelay.tls(directory, cons, as_id, reader.node_id))
    try:
        server = WebServer(app, host, port)
    except OSError as e:  # taken, or not an address of this machine
        raise UsageError(f"cannot listen on {args.listen}: {e.strerror or e}") from e
    from node.signals import StopSignal

    stop = StopSignal()
    server.start()
    print(f"markex web: {server.url}/ (reading node {reader.node_id})", flush=True)
    try:
        stop.wait()
    finally:
        server.close()
    print("markex web: stopped", file=sys.stderr)
    return 0
