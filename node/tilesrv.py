"""The node's log over HTTPS as C2SP tlog-tiles (docs/tiles.md).

    GET /checkpoint                 the latest signed log checkpoint, with the
                                    cosignatures the node holds (as over gRPC)
    GET /tile/<L>/<N>[.p/<W>]       hash tiles, from the stored Merkle nodes
    GET /tile/entries/<N>[.p/<W>]   entry bundles: only for a client presenting a
                                    member or auditor certificate of the consortium CA

Tiles are read for the size of the checkpoint served at the time of the
request, so nothing is served that the checkpoint does not commit to; the
tile math is ledger/tiles.py. TLS uses the node's server certificate; a
client certificate is optional and, when presented, must chain to the
consortium CA (else the handshake fails). Every refusal is a status with a
one-line reason: 400 malformed path, 403 entries without a member or auditor
certificate, 404 not covered or unknown, 405 a method other than GET/HEAD,
500 the store failed. Connections are bounded in number and time.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from keys import KeysError
from keys.consortium import Consortium
from keys.tls import participant_from_cert
from ledger import note, tiles
from ledger.errors import BadInput, LedgerError, NotFound, StorageFailure, TooLarge
from node import ports
from node.logs import event

log = logging.getLogger("markex.tiles")

FULL_TILE_CACHE = "public, max-age=31536000, immutable"  # its bytes never change
# A partial tile's bytes never change either, but the spec lets a log drop it
# once the full tile exists: caches should not hold it for a year.
PARTIAL_TILE_CACHE = "public, max-age=60"
CHECKPOINT_CACHE = "no-store"  # mutable: the spec asks for no caching past a few seconds
MAX_CONNECTIONS = 32  # past this a new connection is closed at once
IO_TIMEOUT_S = 10.0  # handshake, request line, headers and an idle keep-alive


class LogSource(Protocol):
    """What the server reads: stored Merkle nodes and envelopes (NodeLedger)."""

    def get_node(self, level: int, index: int) -> bytes: ...

    def entries(self, start: int, end: int) -> list[bytes]: ...


class Refused(Exception):
    """An HTTP refusal: a status and a one-line reason."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class TileServer:
    """One node's tile endpoint. `checkpoint()` returns the note text to serve
    (or None before the first checkpoint); `source` the log it covers."""

    def __init__(
        self,
        listen: str,
        *,
        checkpoint: Callable[[], str | None],
        source: LogSource,
        consortium: Consortium,
        cert_file: Path,
        key_file: Path,
        ca_pem: bytes,
    ) -> None:
        host, _, port = listen.rpartition(":")
        self._address = (host.strip("[]"), int(port))
        self.checkpoint = checkpoint
        self.source = source
        self.consortium = consortium
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(cert_file), str(key_file))
        ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
        ctx.verify_mode = ssl.CERT_OPTIONAL  # anyone reads hashes; entries need a certificate
        self.tls_context = ctx
        # One per open connection: past MAX_CONNECTIONS a new one is closed unserved.
        self.connection_slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return 0 if self._httpd is None else self._httpd.server_address[1]

    def start(self) -> int:
        """Bind and serve in a thread; returns the port (OSError if it cannot bind)."""
        httpd = _Server(self._address, _Handler, self)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="tiles", daemon=True
        )
        self._thread.start()
        return self.port

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._httpd = None

    # ------------------------------------------------------------ answers
    def answer(self, path: str, peer_der: bytes | None) -> tuple[bytes, str, str]:
        """(body, content type, cache control) for a GET of `path`; raises Refused."""
        if path in ("/checkpoint", "/checkpoint/"):
            return self._checkpoint_text().encode(), "text/plain; charset=utf-8", CHECKPOINT_CACHE
        if not path.startswith("/tile/"):
            raise Refused(HTTPStatus.NOT_FOUND, "not a tlog-tiles path (checkpoint, tile/...)")
        try:
            tile = tiles.Tile.parse(path[1:])
        except tiles.MalformedTilePath as e:
            raise Refused(HTTPStatus.BAD_REQUEST, str(e)) from e
        if tile.entries:
            self._check_reader(peer_der)
        size = self._size()
        try:
            if tile.entries:
                body = tiles.entry_bundle(self.source, tile, size)
            else:
                body = tiles.hash_tile(self.source, tile, size)
        except NotFound as e:
            raise Refused(HTTPStatus.NOT_FOUND, str(e)) from e
        except TooLarge as e:
            raise Refused(HTTPStatus.INTERNAL_SERVER_ERROR, str(e)) from e
        except StorageFailure as e:
            event(log, logging.ERROR, "tiles-storage-failure", error=str(e))
            raise Refused(HTTPStatus.INTERNAL_SERVER_ERROR, "the node's store failed") from e
        cache = FULL_TILE_CACHE if tile.full else PARTIAL_TILE_CACHE
        return body, "application/octet-stream", cache

    def _checkpoint_text(self) -> str:
        text = self.checkpoint()
        if text is None:
            raise Refused(HTTPStatus.NOT_FOUND, "this node has not signed a log checkpoint yet")
        return text

    def _size(self) -> int:
        """The tree size of the checkpoint served now: the only tree tiles are read for."""
        text = self._checkpoint_text()
        try:
            return note.Checkpoint.parse_body(note.Note.parse(text).text).size
        except BadInput as e:  # our own note: a store that returns garbage
            raise Refused(HTTPStatus.INTERNAL_SERVER_ERROR, "the stored checkpoint is bad") from e

    def _check_reader(self, peer_der: bytes | None) -> None:
        """Entry bundles hold the envelopes, which are not public (docs/publication.md)."""
        if peer_der is None:
            raise Refused(
                HTTPStatus.FORBIDDEN,
                "entry bundles are for members and auditors: present a certificate of the "
                "consortium CA",
            )
        try:
            pid = participant_from_cert(peer_der)
        except (KeysError, ValueError) as e:  # an admin certificate, or one naming no one
            raise Refused(HTTPStatus.FORBIDDEN, f"not a member or auditor certificate: {e}") from e
        why = self.consortium.why_not_reader(pid)
        if why is not None:
            raise Refused(HTTPStatus.FORBIDDEN, why)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, tiles_: TileServer) -> None:
        self.tiles = tiles_
        # TCPServer makes its socket from this attribute: IPv6 for an IPv6 literal.
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.tiles.connection_slots.acquire(blocking=False):
            self.shutdown_request(request)  # bounded: no thread for a connection past the limit
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.tiles.connection_slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.tiles.connection_slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The handshake runs here, in the connection's thread, so a slow client stalls no one.
        request.settimeout(IO_TIMEOUT_S)
        # An answer goes out as two writes (headers, then body). With Nagle's
        # algorithm the body waits for the ACK of the headers, which a client
        # delays by up to 40 ms: every request on a kept-alive connection paid it.
        with contextlib.suppress(OSError):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            conn = self.tiles.tls_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            log.debug("tiles: TLS handshake with %s failed: %s", client_address, e)
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("tiles: connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Never HTTP/0.9: a refusal of a garbled request line still carries its status line.
    default_request_version = "HTTP/1.0"
    timeout = IO_TIMEOUT_S
    server_version = "markex-tiles"

    def do_GET(self) -> None:  # noqa: N802
        self._serve(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(head=True)

    def _refuse_method(self) -> None:
        self.close_connection = True  # a body we do not read must not be taken for a request
        self._send(
            HTTPStatus.METHOD_NOT_ALLOWED,
            b"only GET and HEAD are served\n",
            "text/plain; charset=utf-8",
            "no-store",
            head=False,
            allow=True,
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method  # noqa: N815

    def _serve(self, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        try:
            body, ctype, cache = self.server.tiles.answer(path, self._peer_cert())
        except Refused as r:
            self._send(
                r.status,
                (r.reason + "\n").encode(),
                "text/plain; charset=utf-8",
                "no-store",
                head=head,
            )
            return
        except LedgerError as e:  # a ledger error the answer did not expect: still one line
            self._send(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                f"{type(e).__name__}: {e}\n".encode(),
                "text/plain; charset=utf-8",
                "no-store",
                head=head,
            )
            return
        except Exception:
            log.exception("tiles: answering %s failed", path)
            self._send(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                b"internal error\n",
                "text/plain; charset=utf-8",
                "no-store",
                head=head,
            )
            return
        gz = "/entries/" in path and "gzip" in self.headers.get("Accept-Encoding", "")
        if gz:  # the spec asks that entry bundles be compressed at the HTTP layer
            body = gzip.compress(body, mtime=0)
        self._send(HTTPStatus.OK, body, ctype, cache, head=head, gzipped=gz)

    def _peer_cert(self) -> bytes | None:
        conn = self.connection
        if isinstance(conn, ssl.SSLSocket):
            return conn.getpeercert(binary_form=True)
        return None

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        ctype: str,
        cache: str,
        *,
        head: bool,
        gzipped: bool = False,
        allow: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        if allow:
            self.send_header("Allow", "GET, HEAD")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own refusals (a bad request line, headers too long): one line, no HTML.
        reason = message or HTTPStatus(code).phrase
        self.close_connection = True
        with contextlib.suppress(OSError):
            self._send(
                HTTPStatus(code),
                (reason + "\n").encode(),
                "text/plain; charset=utf-8",
                "no-store",
                head=self.command == "HEAD",
            )

    def version_string(self) -> str:
        return self.server_version  # not the Python version: nothing for a scanner to match

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug("tiles: %s %s", self.address_string(), format % args)


def start_tiles(
    listen: str,
    *,
    checkpoint: Callable[[], str | None],
    source: LogSource,
    consortium: Consortium,
    cert_file: Path,
    key_file: Path,
    ca_pem: bytes,
    config_name: str = "node.toml",
) -> TileServer | None:
    """A started TileServer on `listen`, or None when `listen` is "" (off) or the
    address cannot be bound: then a warning names the key to change, and the
    node runs on without tiles (its gRPC ports are what it cannot do without)."""
    if not listen:
        return None
    try:
        server = TileServer(
            listen,
            checkpoint=checkpoint,
            source=source,
            consortium=consortium,
            cert_file=cert_file,
            key_file=key_file,
            ca_pem=ca_pem,
        )
        server.start()
    except OSError as e:
        event(
            log, logging.WARNING, "tiles-not-started",
            listen=listen,
            error=e.strerror or str(e),
            message=str(ports.listen_error("tiles_listen", listen, config_name, e)),
            fix=f'change the key tiles_listen in {config_name} ("" turns it off)',
        )
        return None
    event(log, logging.INFO, "tiles-serving", port=server.port)
    return server
