"""One gRPC status code per ledger error class (the table in ledger/errors.py)."""

from __future__ import annotations

import grpc

from keys import ConfigError, KeysError
from ledger import errors as E

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
    (E.NotFound, grpc.StatusCode.NOT_FOUND),
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
    detail = e.details() or ""
    name, _, msg = detail.partition(": ")
    cls = _BY_NAME.get(name)
    if cls is None:
        return E.LedgerError(f"{e.code().name}: {detail}")
    if cls is E.Equivocation:
        return E.Equivocation(msg)
    if cls is E.CheckpointFork:
        return E.CheckpointFork(msg)
    return cls(msg)
