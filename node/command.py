"""What every `markex` command shares: the common options (--consortium,
--as, --node, --json, --institute-key), the pinned consortium, argument
types, printing, and the one mapping from an error to the sentence a user
reads and its exit code, the table of docs/cli.md (`EXIT_CODES`):

    0  ok
    1  not verified   an answer, proof, checkpoint, signature, audit or evidence did not verify
    2  usage          the command line, or a file or folder it names, is wrong
    3  not found      the node has no such record, entry or checkpoint
    4  refused        the node will not do it (not allowed, out of order, ...)
    5  unavailable    the node is not answering, busy or not issuing yet: try again
    6  failed         anything else: the node's internal error, a storage failure, a bug

node/cli.py (the root that builds the parser) and every command module
(issuecli, readcli, recordcli, lookupcli, auditcli, ceremony) import
this module; it imports none of them, and neither gRPC nor the key code
until an error or a command needs them."""

from __future__ import annotations

import argparse
import enum
import json
import math
import os
import re
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from keys import ConfigSignatureError, KeysError
from ledger.errors import (
    BadInput,
    BadSignature,
    BufferFull,
    FeedFrozen,
    ForkDetected,
    LedgerError,
    NotAllowed,
    NotFound,
    OutOfOrder,
    ProofMismatch,
    TooLarge,
)
from node.connect import Connect, Dial, Need

if TYPE_CHECKING:  # imported where used: `markex --help` loads neither gRPC nor the key code
    import grpc

    from keys.consortium import Consortium

# A command: the parsed arguments and the way to reach nodes in, an exit code out.
Command = Callable[[argparse.Namespace, Connect], int]

UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
DEBUG_ENV = "MARKEX_DEBUG"  # set: an unexpected error prints its traceback too


class Exit(enum.IntEnum):
    """The exit codes of every command (docs/cli.md)."""

    OK = 0
    NOT_VERIFIED = 1
    USAGE = 2
    NOT_FOUND = 3
    REFUSED = 4
    UNAVAILABLE = 5
    FAILED = 6

    @property
    def word(self) -> str:
        """The code's name in a JSON error: `not_verified`, `usage`, ..."""
        return self.name.lower()


EXIT_CODES: tuple[tuple[Exit, str], ...] = (
    (Exit.OK, "done"),
    (Exit.NOT_VERIFIED, "an answer, proof, signature, audit or evidence did not verify"),
    (Exit.USAGE, "the command line, or a file it names, is wrong (or a value the node refuses)"),
    (Exit.NOT_FOUND, "the node has no such record, entry or checkpoint"),
    (Exit.REFUSED, "the node will not do it: not allowed, out of order, already there"),
    (Exit.UNAVAILABLE, "the node is not answering, busy or not issuing yet: try again"),
    (Exit.FAILED, "anything else: the node's internal error, a storage failure, a bug"),
)


def exit_code_epilog() -> str:
    """The exit-code table as `markex --help` prints it."""
    rows = "\n".join(f"  {int(c)}  {c.name.lower().replace('_', ' '):13} {what}"
                     for c, what in EXIT_CODES)
    return "exit codes:\n" + rows


class CommandError(Exception):
    """A failure the command itself names, with the exit code it ends in."""

    exit: Exit = Exit.FAILED


class UsageError(CommandError):
    """The command line itself is wrong (exit code 2)."""

    exit = Exit.USAGE


class NotVerified(CommandError):
    """What the node showed does not verify (exit code 1); the message says why."""

    exit = Exit.NOT_VERIFIED


class Missing(CommandError):
    """The node has no such thing (exit code 3)."""

    exit = Exit.NOT_FOUND


# ------------------------------------------------------------------ options


OPTION_DEFAULTS = {"consortium": None, "as_id": None, "node": None, "json": False,
                   "institute_key": None}


def add_options(p: argparse.ArgumentParser, *names: str, as_help: str | None = None) -> None:
    """Give `p` the shared options it means something for, of: consortium, as,
    node, json, pin (--institute-key). Their defaults are the root parser's
    (OPTION_DEFAULTS): a nested command's parser then never resets an option
    given before its name (`markex audit --json verify-evidence F`)."""
    keep = argparse.SUPPRESS
    if "consortium" in names:
        p.add_argument("--consortium", metavar="DIR", default=keep,
                       help="the consortium folder `consortium init` wrote "
                            "(default: $MARKEX_CONSORTIUM)")
    if "as" in names:
        p.add_argument("--as", dest="as_id", metavar="ID", default=keep,
                       help=as_help or "the acting participant (e.g. carrier-1)")
    if "node" in names:
        p.add_argument("--node", metavar="ID|HOST:PORT", default=keep,
                       help="the node asked: a participant id (only its certificate is "
                            "accepted) or HOST:PORT")
    if "json" in names:
        p.add_argument("--json", action="store_true", default=keep,
                       help="print one JSON object on stdout (an error: one JSON object "
                            '{"error": {"code", "message"}} on stderr)')
    if "pin" in names:
        p.add_argument(
            "--institute-key", metavar="B64", default=keep,
            help="the institute's configuration key consortium.json must be signed with "
                 "(or MARKEX_INSTITUTE_KEY; default: institute_key in "
                 "<consortium>/<--as>/node.toml)",
        )


def _bounded_int(top: int) -> Callable[[str], int]:
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{s!r} is not a whole number") from e
        if not 0 <= v <= top:
            raise argparse.ArgumentTypeError(f"{s} is not between 0 and {top}")
        return v

    return parse


# Values a protobuf uint32/uint64 field holds; anything else is a usage error, not a traceback.
uint32 = _bounded_int(UINT32_MAX)
uint64 = _bounded_int(UINT64_MAX)


def finite_float(s: str) -> float:
    """A float that is a number (not nan or inf)."""
    try:
        v = float(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{s!r} is not a number") from e
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{s!r} is not a finite number")
    return v


def parse_time(s: str) -> int:
    """An ISO 8601 time as milliseconds since the epoch (UTC when no zone is given)."""
    try:
        t = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError as e:
        raise UsageError(f"{s!r} is not an ISO 8601 time (e.g. 2026-11-28T10:00:00Z)") from e
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1000)


# ------------------------------------------------------------------ the consortium


def pinned_consortium(args: argparse.Namespace) -> tuple[Path, Consortium]:
    """The consortium folder and its configuration, verified with the pinned
    institute key (--institute-key, $MARKEX_INSTITUTE_KEY or --as's node.toml)."""
    from node import client

    d = client.consortium_dir(args.consortium)
    return d, client.load_pinned(d, args.institute_key, args.as_id)


def acting(args: argparse.Namespace, cons: Consortium) -> str:
    """--as, which must name a participant."""
    if not args.as_id:
        raise UsageError("--as ID is required: the participant acting")
    if cons.participant(args.as_id) is None:
        raise UsageError(f"--as {args.as_id!r} is not a participant of {cons.name}; "
                         f"participants: {participant_list(cons)}")
    return args.as_id


def node_endpoints(cons: Consortium, node: str) -> Any:
    """`client.resolve_node`, with the participants listed when `node` names none."""
    from node import client

    try:
        return client.resolve_node(cons, node)
    except KeysError as e:
        raise UsageError(f"{e}; participants: {participant_list(cons)}") from e


def public_of(args: argparse.Namespace, connect: Connect) -> tuple[Any, Consortium]:
    """The Public service of --node (required), and the pinned consortium."""
    d, cons = pinned_consortium(args)
    if not args.node:
        raise UsageError("--node ID (or HOST:PORT) is required")
    return connect("public", Dial(d, node_endpoints(cons, args.node))), cons


def participant_list(cons: Consortium) -> str:
    """The participants' ids, comma-separated: the valid values of --as and --node."""
    return ", ".join(p.id for p in cons.participants)


def category_list(cons: Consortium) -> str:
    """The taxonomy's categories with the names users know: the valid values of CATEGORY."""
    return ", ".join(f"{c.id} ({c.label})" for c in cons.taxonomy)


# ------------------------------------------------------------------ output


def iso(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ISO 8601 in UTC (`...Z`; whole seconds
    drop the `.000`); None and 0 (no time) stay None."""
    if not ms:
        return None
    t = datetime.fromtimestamp(ms / 1000, UTC)
    spec = "seconds" if ms % 1000 == 0 else "milliseconds"
    return t.isoformat(timespec=spec).replace("+00:00", "Z")


def plain(v: Any) -> str:
    """A value as words for the human output: no Python reprs."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list | tuple):
        return ", ".join(plain(x) for x in v) if v else "-"
    if isinstance(v, dict):
        return ", ".join(f"{k} {plain(x)}" for k, x in v.items()) if v else "-"
    return str(v)


def table(rows: list[tuple[str, Any]]) -> str:
    """Two aligned columns, one `name  value` row a line."""
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"{k.ljust(width)}  {plain(v)}".rstrip() for k, v in rows)


def show(args: argparse.Namespace, obj: dict[str, Any], text: str | None = None) -> None:
    """One JSON object with --json; else `text`, or the fields as a table."""
    if args.json:
        print(json.dumps(obj, ensure_ascii=False))
    else:
        print(text if text is not None else table([(k.replace("_", " "), v)
                                                    for k, v in obj.items()]))


# ------------------------------------------------------------------ errors


def _node_sentence(detail: str) -> str:
    """A node's status detail without the error class it starts with ("NotAllowed: ...")."""
    return _CLASS_PREFIX.sub("", detail or "", count=1) or "no reason given"


_CLASS_PREFIX = re.compile(r"^[A-Z][A-Za-z]+: ")
# Details gRPC itself writes when no node answered (not a node's own sentence).
_NO_ANSWER = ("failed to connect", "connection refused", "socket closed", "dns resolution",
              "connection reset", "connections to all backends failing", "unreachable",
              "endpoint is closed", "broken pipe")
_TLS = ("ssl", "tls", "handshake", "certificate", "peer name", "verification check")

# A node's gRPC status (by name) -> the exit code.
_RPC_EXIT: dict[str, Exit] = {
    "NOT_FOUND": Exit.NOT_FOUND,
    "INVALID_ARGUMENT": Exit.USAGE,
    "OUT_OF_RANGE": Exit.USAGE,
    "PERMISSION_DENIED": Exit.REFUSED,
    "UNAUTHENTICATED": Exit.REFUSED,
    "FAILED_PRECONDITION": Exit.REFUSED,
    "ALREADY_EXISTS": Exit.REFUSED,
    "ABORTED": Exit.REFUSED,
    "UNAVAILABLE": Exit.UNAVAILABLE,
    "DEADLINE_EXCEEDED": Exit.UNAVAILABLE,
    "RESOURCE_EXHAUSTED": Exit.UNAVAILABLE,
    "CANCELLED": Exit.UNAVAILABLE,
}

_PREFIX = {Exit.NOT_FOUND: "not found: ", Exit.REFUSED: "refused: ",
           Exit.NOT_VERIFIED: "not verified: "}


def _who(dialled: tuple[Need, Dial] | None) -> str:
    if dialled is None:
        return "the node"
    need, dial = dialled
    addr = dial.node.public if need == "public" else dial.node.member
    pid = dial.node.participant
    return f"node {pid} ({addr})" if pid else f"the node at {addr}"


def _explain_rpc(e: grpc.RpcError, dialled: tuple[Need, Dial] | None) -> tuple[Exit, str]:
    code = e.code() if callable(getattr(e, "code", None)) else None
    name = getattr(code, "name", "UNKNOWN")
    detail = (e.details() if callable(getattr(e, "details", None)) else "") or ""
    low = detail.lower()
    who = _who(dialled)
    if name == "UNAVAILABLE" and any(s in low for s in _TLS):
        pid = dialled[1].node.participant if dialled else None
        whose = f"{pid}'s certificate from this consortium's CA" if pid else (
            "a certificate from this consortium's CA")
        return Exit.NOT_VERIFIED, f"{who} did not present {whose} (TLS handshake failed)"
    if name == "UNAVAILABLE" and (not detail or any(s in low for s in _NO_ANSWER)):
        return Exit.UNAVAILABLE, f"{who} is not answering; is it running?"
    if name == "DEADLINE_EXCEEDED":
        return Exit.UNAVAILABLE, f"{who} did not answer in time; is it overloaded?"
    ex = _RPC_EXIT.get(name, Exit.FAILED)
    sentence = _node_sentence(detail)
    if ex is Exit.UNAVAILABLE:
        return ex, f"{who} is busy or not ready: {sentence}; try again later"
    if ex is Exit.FAILED:
        return ex, f"{who} failed ({name.lower()}): {sentence}"
    return ex, _PREFIX.get(ex, "") + sentence


def _rpc_error() -> type[Exception] | None:
    """grpc.RpcError if gRPC is loaded (if it is not, no call can have failed)."""
    grpc = sys.modules.get("grpc")
    return getattr(grpc, "RpcError", None)


def _ledger_exit(e: LedgerError) -> Exit:
    if isinstance(e, BadSignature | ProofMismatch | ForkDetected):
        return Exit.NOT_VERIFIED
    if isinstance(e, NotFound):
        return Exit.NOT_FOUND
    if isinstance(e, NotAllowed | OutOfOrder | FeedFrozen):
        return Exit.REFUSED
    if isinstance(e, BufferFull):
        return Exit.UNAVAILABLE
    if isinstance(e, BadInput | TooLarge):
        return Exit.USAGE
    return Exit.FAILED


def explain(
    e: BaseException, dialled: tuple[Need, Dial] | None = None
) -> tuple[Exit, str]:
    """The exit code and the one sentence for an error a command raised;
    `dialled` is the last node the command asked (named when it did not answer)."""
    rpc_error = _rpc_error()
    if isinstance(e, CommandError):
        return e.exit, _PREFIX.get(e.exit, "") + str(e)
    if rpc_error is not None and isinstance(e, rpc_error):
        return _explain_rpc(e, dialled)  # type: ignore[arg-type]
    if rpc_error is not None and isinstance(e, LedgerError) and isinstance(e.__cause__,
                                                                           rpc_error):
        # a node's status, re-raised as its ledger class (node/auditclient.py)
        return _explain_rpc(e.__cause__, dialled)  # type: ignore[arg-type]
    if isinstance(e, LedgerError):
        ex = _ledger_exit(e)
        return ex, _PREFIX.get(ex, "") + str(e)
    if isinstance(e, ConfigSignatureError):
        return Exit.NOT_VERIFIED, f"not verified: {e}"
    if isinstance(e, KeysError):
        return Exit.USAGE, str(e)
    if isinstance(e, OSError):  # the CA certificate, a state or evidence file
        where = f"{e.filename}: " if e.filename else ""
        return Exit.USAGE, f"{where}{e.strerror or e}"
    return Exit.FAILED, (
        f"unexpected {type(e).__name__}: {e} (a bug in markex; "
        f"{DEBUG_ENV}=1 prints the traceback)"
    )


def fail(as_json: bool, code: Exit, message: str) -> int:
    """Print one error (one JSON object with --json) on stderr; return its exit code."""
    if as_json:
        err = {"error": {"code": code.word, "message": message, "exit": int(code)}}
        print(json.dumps(err, ensure_ascii=False), file=sys.stderr)
    else:
        print(f"markex: {message}", file=sys.stderr)
    return int(code)


class _Recorder:
    """A `Connect` that remembers the last node dialled, to name it in an error."""

    def __init__(self, connect: Connect) -> None:
        self.connect = connect
        self.last: tuple[Need, Dial] | None = None

    def __call__(self, need: Need, dial: Dial) -> Any:
        self.last = (need, dial)
        return self.connect(need, dial)


def run(fn: Command, args: argparse.Namespace, connect: Connect) -> int:
    """Run one command; every error it raises becomes one sentence on stderr
    (a JSON object with --json) and the exit code of the table, never a traceback."""
    rec = _Recorder(connect)
    try:
        return int(fn(args, rec))
    except KeyboardInterrupt:
        fail(getattr(args, "json", False), Exit.FAILED, "interrupted")
        return 130  # the shell's code for SIGINT
    except Exception as e:
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        code, message = explain(e, rec.last)
        return fail(getattr(args, "json", False), code, message)


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are a `UsageError` (one sentence, the JSON
    form with --json) rather than argparse's own print-and-exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")
