"""The web front end as a Flask app: `create_app` wires the consortium, the
node it reads (`NodeReader`), the per-address lookup limit and the
blueprints, and sets the security headers on every response.

Blueprints reach what they need through `web_context()` (the `WebContext`
kept in `app.extensions["markex"]`), so another page set is one more
blueprint passed in `blueprints` (or `app.register_blueprint` afterwards)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from keys.consortium import Consortium
from node.web.ratelimit import AddressLimiter, Network, RateLimit, client_address
from node.web.report import NodeReader

EXTENSION = "markex"
MAX_REQUEST_BYTES = 64 * 1024

SECURITY_HEADERS = {
    # No inline script or style anywhere: every script is a file served by this app.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclass
class WebContext:
    """What every page reads: the pinned consortium, the node reader, the
    lookup limiter and the clocks (wall time in ms for verification,
    monotonic seconds for the limiter), replaceable in tests."""

    consortium: Consortium
    reader: NodeReader
    limiter: AddressLimiter
    now_ms: Callable[[], int]
    monotonic: Callable[[], float]
    proxies: tuple[Network, ...] = ()  # whose X-Forwarded-For names the client


def client_of() -> str:
    """The address the current request's limits count against."""
    ctx = web_context()
    return client_address(request.remote_addr, request.headers.get("X-Forwarded-For"),
                          ctx.proxies)


def web_context() -> WebContext:
    """The running app's WebContext (inside a request)."""
    ctx: WebContext = current_app.extensions[EXTENSION]
    return ctx


def wants_json() -> bool:
    return request.path.startswith("/api/")


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None, typed: str = ""
) -> Any:
    """The one shape of an error: JSON `{"error", "status"}` under /api/,
    else the error page with `typed` back in the search box (the template
    escapes both)."""
    if wants_json():
        resp = jsonify({"error": message, "status": status})
    else:
        resp = current_app.make_response(
            render_template("error.html", status=status, message=message, typed=typed)
        )
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def _http_error(e: HTTPException) -> Any:
    return error_response(e.code or 500, e.description or e.name)


def _secure(resp: Any) -> Any:
    for k, v in SECURITY_HEADERS.items():
        resp.headers.setdefault(k, v)
    return resp


def create_app(
    consortium: Consortium,
    reader: NodeReader,
    *,
    rate: RateLimit | None = None,
    blueprints: Iterable[Blueprint] = (),
    now_ms: Callable[[], int] | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    proxies: tuple[Network, ...] = (),
) -> Flask:
    """The app; `blueprints` are registered after the number pages."""
    from node.web.appeals import appeals
    from node.web.badlist import badlist
    from node.web.pages import pages

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = WebContext(
        consortium,
        reader,
        AddressLimiter(rate or RateLimit()),
        now_ms or (lambda: int(time.time() * 1000)),
        monotonic,
        proxies,
    )
    app.register_blueprint(pages)
    app.register_blueprint(appeals)  # the holder's appeal (node/web/appeals.py)
    app.register_blueprint(badlist)  # the bad list (node/web/badlist.py)
    for bp in blueprints:
        app.register_blueprint(bp)
    app.register_error_handler(HTTPException, _http_error)
    app.after_request(_secure)
    return app
