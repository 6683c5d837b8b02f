"""`markex replica run`: a verified read replica (node/replica.py,
docs/replica.md). Prints one JSON line on stdout when it listens
(`{"listen": PORT, ...}`), logs JSON events on stderr, and runs until
SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from keys.consortium import Consortium
from node.command import UsageError, acting, node_endpoints, pinned_consortium
from node.connect import Connect
from node.webcli import parse_listen


def follow_list(text: str, cons: Consortium, as_id: str) -> list[str]:
    """--follow NODE[,NODE...]: node ids or HOST:PORT, each once. UsageError
    for an empty item, a repeated one, a participant without a node, or one
    that is neither an id nor HOST:PORT."""
    names = [n.strip() for n in text.split(",")]
    if not text.strip() or any(not n for n in names):
        raise UsageError(f"--follow {text!r}: name one or more nodes, separated by commas")
    if len(set(names)) != len(names):
        raise UsageError(f"--follow {text!r} names a node twice")
    for n in names:
        p = cons.participant(n)
        if p is not None and not p.member_endpoint:
            raise UsageError(f"--follow {n!r}: {n} runs no node")
        node_endpoints(cons, n)  # UsageError listing the participants
        if p is None and not 0 < int(n.rpartition(":")[2]) <= 65535:
            raise UsageError(f"--follow {n!r}: the port is not between 1 and 65535")
    return names


def data_dir(args: argparse.Namespace, directory: Path, as_id: str, port: int) -> Path:
    """--data-dir, or DIR/<as>/replica-<port> (port 0 has no fixed home)."""
    if args.data_dir:
        return Path(args.data_dir)
    if port == 0:
        raise UsageError("--listen with port 0 needs --data-dir (the replica's store)")
    return directory / as_id / f"replica-{port}"


def cmd_replica_run(args: argparse.Namespace, _connect: Connect) -> int:
    from ledger.store import Store
    from node import logs
    from node.replica import Replica, serve, tls_source

    directory, cons = pinned_consortium(args)
    as_id = acting(args, cons)
    level = logs.parse_level(args.log_level)
    names = follow_list(args.follow, cons, as_id)
    _host, port = parse_listen(args.listen)
    if args.interval <= 0:
        raise UsageError("--interval is a number of seconds above 0")
    path = data_dir(args, directory, as_id, port)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--data-dir {path} is not a directory")
    logs.setup(f"replica:{as_id}", level)
    store = Store(path)
    sources = [(n, tls_source(directory, cons, as_id, n)) for n in names]
    replica = Replica(cons, store, sources, interval=args.interval)
    try:
        server, bound = serve(replica, directory, as_id, args.listen)
    except OSError as e:
        store.close()
        raise UsageError(str(e)) from e
    replica.start()
    print(json.dumps({"listen": bound, "follow": names, "data_dir": str(path)}), flush=True)
    from node.signals import StopSignal

    stop = StopSignal()
    try:
        stop.wait()
    finally:
        server.stop(1).wait()
        replica.stop()
        store.close()
    logging.getLogger("markex.replica").info("stopped")
    print("markex replica: stopped", file=sys.stderr)
    return 0


__all__ = ["cmd_replica_run", "follow_list"]
