"""What every `markex` command shares: the common options (--consortium,
--as, --node, --json, --institute-key), the pinned consortium, argument
types, printing, and the one mapping from an error to the sentence a user
reads and the exit code (2 for usage errors, 1 for everything else).

node/cli.py (the root that builds the parser), node/auditcli.py and
node/ceremony.py import this module; it imports none of them."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from keys import KeysError
from keys.consortium import Consortium
from ledger.errors import LedgerError
from node import client
from node.connect import Connect

# A command: the parsed arguments and the way to reach nodes in, an exit code out.
Command = Callable[[argparse.Namespace, Connect], int]

UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1


class UsageError(Exception):
    """The command line itself is wrong (exit code 2)."""


# ------------------------------------------------------------------ options


def common_options() -> argparse.ArgumentParser:
    """The parent parser of every subcommand: the options each one accepts."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--consortium", help="consortium folder (or MARKEX_CONSORTIUM)")
    common.add_argument("--as", dest="as_id", help="the acting participant")
    common.add_argument("--node", help="the node asked: participant id or HOST:PORT")
    common.add_argument("--json", action="store_true", help="print one JSON object")
    common.add_argument(
        "--institute-key",
        metavar="B64",
        help="the institute's configuration key consortium.json must be signed with "
        "(or MARKEX_INSTITUTE_KEY; default: institute_key in <consortium>/<--as>/node.toml)",
    )
    return common


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


def record_id(s: str) -> bytes:
    """A record id given as 64 hex digits."""
    try:
        b = bytes.fromhex(s)
    except ValueError as e:
        raise UsageError(f"{s!r} is not a hex record id") from e
    if len(b) != 32:
        raise UsageError(f"a record id is 64 hex digits, got {len(s)}")
    return b


# ------------------------------------------------------------------ the consortium


def pinned_consortium(args: argparse.Namespace) -> tuple[Path, Consortium]:
    """The consortium folder and its configuration, verified with the pinned
    institute key (--institute-key, $MARKEX_INSTITUTE_KEY or --as's node.toml)."""
    d = client.consortium_dir(args.consortium)
    return d, client.load_pinned(d, args.institute_key, args.as_id)


def acting(args: argparse.Namespace, cons: Consortium) -> str:
    """--as, which must name a participant."""
    if not args.as_id:
        raise UsageError("--as ID is required: the participant acting")
    if cons.participant(args.as_id) is None:
        raise UsageError(f"--as {args.as_id!r} is not a participant of {cons.name}")
    return args.as_id


# ------------------------------------------------------------------ output


def show(args: argparse.Namespace, obj: dict[str, Any], text: str | None = None) -> None:
    """One JSON object with --json; else `text`, or one `key: value` line per field."""
    if args.json:
        print(json.dumps(obj, ensure_ascii=False))
    else:
        print(text if text is not None else "\n".join(f"{k}: {v}" for k, v in obj.items()))


def run(fn: Command, args: argparse.Namespace, connect: Connect) -> int:
    """Run one command; every error it raises becomes one sentence on stderr
    and exit code 2 (usage) or 1 (anything else), never a traceback."""
    try:
        return int(fn(args, connect))
    except UsageError as e:
        print(f"markex: {e}", file=sys.stderr)
        return 2
    except (LedgerError, KeysError) as e:
        print(f"markex: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except grpc.RpcError as e:
        print(f"markex: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    except OSError as e:  # the CA certificate, a state or evidence file (key files: KeysError)
        where = f"{e.filename}: " if e.filename else ""
        print(f"markex: {type(e).__name__}: {where}{e.strerror or e}", file=sys.stderr)
        return 1
