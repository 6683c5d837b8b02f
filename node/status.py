"""One gRPC status code per ledger error class (the table in ledger/errors.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc

from keys import ConfigError, KeysError
from ledger import errors as E
from ledger.screen import NoMembersKey

# Most specific first: the first isinstance match wins.
_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (E.Equivocation, grpc.StatusCode.ALREADY_EXISTS),
    (E.ForkDetected, grpc.StatusCode.ABORTED),
    (E.TooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (E.BufferFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (E.BadSignature, grpc.StatusCode.UNAUTHENTICATED),
    (E.NotAllowed, grpc.StatusCode.PERMISSION_DENIED),
    (E.OutOfOrder, grpc.StatusCode.FAILED_PRECONDITION),
    (E.FeedFrozen, grpc.StatusCode.FAILED_PRECONDITION),
    (E.ProofMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    (E.Ineffective, grpc.StatusCode.FAILED_PRECONDITION),
    (E.NotFound, grpc.StatusCode.NOT_FOUND),
    (NoMembersKey, grpc.StatusCode.FAILED_PRECONDITION),
    (E.BadInput, grpc.StatusCode.INVALID_ARGUMENT),
    (E.StorageFailure, grpc.StatusCode.INTERNAL),
    (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (KeysError, grpc.StatusCode.INTERNAL),
)


def code_for(err: Exception) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(err, cls):
            return code
    return grpc.StatusCode.INTERNAL


def detail_for(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"


# Client side: a status back into the ledger's error type, so the CLI can
# print the precise error a node gave.
_BY_NAME: dict[str, type[E.LedgerError]] = {
    cls.__name__: cls
    for cls in vars(E).values()
    if isinstance(cls, type) and issubclass(cls, E.LedgerError)
}


def error_from_rpc(e: grpc.RpcError) -> E.LedgerError:
    """The ledger error a status detail names ("Class: message"); a detail
    naming no ledger error class is a plain LedgerError("CODE: detail")."""
    detail = e.details() or ""
    name, _, msg = detail.partition(": ")
    cls = _BY_NAME.get(name)
    if cls is None:
        return E.LedgerError(f"{e.code().name}: {detail}")
    return cls(msg)


# Server side: a request that does not decode is the caller's bad input.
# gRPC Python answers INTERNAL ("Exception deserializing request!") on its own;
# this interceptor makes it INVALID_ARGUMENT with a "BadInput: ..." detail.


class _Undecodable:
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _lenient(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception as e:  # DecodeError, or whatever a generated parser raises
            return _Undecodable(f"{type(e).__name__}: {e}"[:200])

    return parse


class DecodeGuard(grpc.ServerInterceptor):
    """Undecodable request bytes -> INVALID_ARGUMENT "BadInput: ..." on every method."""

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = details.method

        def refuse(bad: _Undecodable, context: grpc.ServicerContext) -> None:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"BadInput: the request to {method} is not a valid protobuf message "
                f"({bad.reason})",
            )

        def checked(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, _Undecodable):
                refuse(request, context)
            return request

        def checked_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            for r in requests:
                yield checked(r, context)

        des = _lenient(handler.request_deserializer)
        ser = handler.response_serializer
        if handler.unary_unary is not None:
            uu = handler.unary_unary
            return grpc.unary_unary_rpc_method_handler(
                lambda req, ctx: uu(checked(req, ctx), ctx), des, ser
            )
        if handler.unary_stream is not None:
            us = handler.unary_stream
            if getattr(us, "experimental_non_blocking", False):
                # A non-blocking stream (health Watch) keeps its mark, or gRPC
                # would give each idle watcher a thread of its own for good.
                def watch(req: Any, ctx: grpc.ServicerContext, send_response_callback: Any = None
                          ) -> Any:
                    return us(checked(req, ctx), ctx, send_response_callback=send_response_callback)

                watch.experimental_non_blocking = True  # type: ignore[attr-defined]
                watch.experimental_thread_pool = getattr(  # type: ignore[attr-defined]
                    us, "experimental_thread_pool", None
                )
                return grpc.unary_stream_rpc_method_handler(watch, des, ser)
            return grpc.unary_stream_rpc_method_handler(
                lambda req, ctx: us(checked(req, ctx), ctx), des, ser
            )
        if handler.stream_unary is not None:
            su = handler.stream_unary
            return grpc.stream_unary_rpc_method_handler(
                lambda reqs, ctx: su(checked_stream(reqs, ctx), ctx), des, ser
            )
        ss = handler.stream_stream
        return grpc.stream_stream_rpc_method_handler(
            lambda reqs, ctx: ss(checked_stream(reqs, ctx), ctx), des, ser
        )
