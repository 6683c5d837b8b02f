"""`markex`: the one command, and the root of the command line: it builds
the parser for every command of `COMMANDS` (each command's module imported
only when that command runs) and runs one.
`main(argv, connect=...)` returns an exit code and is what tests call;
`connect` reaches the nodes (node/connect.py; default: TLS channels as the
consortium folder gives them). With --json a command prints exactly one JSON
object on stdout; an error is one sentence on stderr (one JSON object with
--json) and an exit code of the table in node/command.py and docs/cli.md.

Modules only some commands need are imported when those run, so that
`markex --help` and a lookup start quickly (bench/cli_startup.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from node.command import (
    OPTION_DEFAULTS,
    Command,
    Exit,
    Parser,
    UsageError,
    add_options,
    exit_code_epilog,
    fail,
    finite_float,
    run,
    uint32,
    uint64,
)
from node.connect import Connect, TlsConnect

__all__ = ["UsageError", "build_parser", "main"]

# Each command's module is imported only when it runs: `markex --help` and a
# lookup load what they use and nothing more (bench/cli_startup.py).
COMMANDS: dict[str, tuple[str, str]] = {
    name: (module, name) for module, names in {
        "node.issuecli": ("cmd_consortium_init", "cmd_node_run", "cmd_mark", "cmd_correct",
                          "cmd_decide", "cmd_reassign"),
        "node.consentcli": ("cmd_prefer", "cmd_line_register", "cmd_line_deregister"),
        "node.readcli": ("cmd_log_checkpoint", "cmd_log_entries", "cmd_view_checkpoint",
                         "cmd_keys_verifier", "cmd_categories"),
        "node.recordcli": ("cmd_log_inclusion", "cmd_log_consistency", "cmd_record_get",
                           "cmd_node_wait"),
        "node.lookupcli": ("cmd_lookup",),
        "node.exportcli": ("cmd_view_export", "cmd_view_verify_export"),
        "node.auditcli": ("cmd_audit", "cmd_verify_evidence"),
        "node.ceremony": ("cmd_keys_generate", "cmd_consortium_keygen",
                          "cmd_consortium_add_member", "cmd_consortium_sign", "cmd_ca_init",
                          "cmd_ca_sign", "cmd_node_configure"),
        "node.demo": ("cmd_demo",),
        "node.webcli": ("cmd_web",),
        "node.appealscli": ("cmd_appeals",),
        "node.importcli": ("cmd_import",),
        "node.screencli": ("cmd_screen",),
        "node.trailcli": ("cmd_trail", "cmd_stats"),
        "node.complaintcli": ("cmd_complain", "cmd_complaints", "cmd_handle", "cmd_sanction",
                              "cmd_badlist"),
        "node.replicacli": ("cmd_replica_run",),
        "node.watchcli": ("cmd_view_watch",),
    }.items() for name in names
}


def lazy(name: str) -> Command:
    """The command `name` of COMMANDS, its module imported when it runs."""
    module, attr = COMMANDS[name]

    def command(args: argparse.Namespace, connect: Connect) -> int:
        import importlib

        return int(getattr(importlib.import_module(module), attr)(args, connect))

    command.__qualname__ = command.__name__ = name
    return command


# ------------------------------------------------------------------ parser

# What --as means for a command that only reads.
READER = ("a member or auditor to read as (default: the consortium's auditor); its node.toml "
          "also pins the institute key")
PINNER = "a participant whose node.toml pins the institute key"
# The shared options of the commands that talk to a node (node.command.add_options).
ISSUE = READ = "consortium as node json pin"


def _quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print only the new record's id (e.g. ID=$(markex mark -q ...))")


def _cmd(sub: Any, name: str, fn: Any, help_: str, example: str, opts: str,
         as_help: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    """One subcommand with its help line, its example (the epilog) and the
    shared options it means something for."""
    p = sub.add_parser(name, help=help_, description=description or help_,
                       epilog=f"example:\n  {example}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, *opts.split(), as_help=as_help)
    p.set_defaults(fn=fn)
    return p


def _group(sub: Any, name: str, help_: str) -> Any:
    g = sub.add_parser(name, help=help_, description=help_)
    g.set_defaults(fn=None, usage_of=g)
    return g.add_subparsers(dest="sub", title="commands", metavar="COMMAND")


class _Version(argparse.Action):
    """--version, reading the installed version only when asked."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("markex")
        except PackageNotFoundError:
            v = "unknown (not installed)"
        print(f"markex {v}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="markex", description="The national number-mark exchange.",
               epilog=exit_code_epilog() + "\n\nmore: docs/cli.md; every command's --help "
                                           "shows an example",
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    p.set_defaults(fn=None, usage_of=p, **OPTION_DEFAULTS)
    sub = p.add_subparsers(dest="cmd", title="commands", metavar="COMMAND")

    cons = _group(sub, "consortium", "set up a consortium: keys, CA, signed consortium.json")
    ci = _cmd(cons, "init", lazy("cmd_consortium_init"),
              "a whole local consortium in one folder: keys, CA, certificates, node.toml, "
              "signed consortium.json", "markex consortium init ~/markex-c", "json")
    ci.add_argument("dir", metavar="DIR", help="the folder to create (must be empty)")
    ci.add_argument("--carriers", type=uint32, default=3, help="how many carriers (default 3)")
    ci.add_argument("--internet", type=uint32, default=2,
                    help="how many internet firms (default 2)")
    ci.add_argument("--complaints", type=uint32, default=1,
                    help="how many complaints centres, complaints-1 the 12321 centre (default 1)")
    ci.add_argument("--regulators", type=uint32, default=1,
                    help="how many regulators, regulator-1 the communication administration "
                         "(default 1)")
    ci.add_argument("--base-port", type=uint32, default=7400,
                    help="the first of the loopback ports the nodes listen on (default 7400)")
    ci.add_argument("--inside-git", action="store_true",
                    help="allow DIR inside a git work tree (it holds private keys: "
                         "keep it in .gitignore)")
    ci.add_argument("--host", action="append", metavar="NAME",
                    help="a DNS name or IP address of the machine the nodes run on "
                         "(repeatable): every node certificate names it, and "
                         "consortium.json's endpoints use the first")
    ci.add_argument("--listen-all", action="store_true",
                    help="nodes listen on 0.0.0.0 (every interface); default: the first "
                         "--host when it is an IP address, else 127.0.0.1")

    nd = _group(sub, "node", "run or configure a node")
    nr = _cmd(nd, "run", lazy("cmd_node_run"), "run this participant's node until SIGTERM",
              "markex node run --consortium ~/markex-c --as carrier-1", "consortium as",
              as_help="the participant whose node this is")
    nr.add_argument("--restored", action="store_true",
                    help="the store was restored from a backup: issue only once a quorum of "
                         "peers agree on this node's own feed head")
    nr.add_argument("--log-level", metavar="LEVEL",
                    help="the least level logged: debug, info, warning, error or critical "
                         "(wins over node.toml's log_level, default info)")
    nr.add_argument("--workers", metavar="N", type=int, default=None,
                    help="processes serving the public port, sharing it (SO_REUSEPORT) and "
                         "reading this node's store as RocksDB secondaries; default: the "
                         "machine's cores; 1: one process serves everything")
    nr.add_argument("--test-refuse-file", metavar="FILE",
                    help="TESTS ONLY: refuse the peers listed in FILE (simulated partitions)")
    nw = _cmd(nd, "wait", lazy("cmd_node_wait"),
              "wait until nodes answer with cosigned checkpoints (with --for: covering a "
              "record, in the log and in the view)",
              "markex node wait --node internet-1 --for 1a2b3c4d5e6f7a8b",
              "consortium as node json pin",
              as_help=READER)
    nw.add_argument("--for", dest="for_records", metavar="RECORD_ID", action="append",
                    help="a record every node asked must hold in its cosigned log and view "
                         "checkpoints (64 hex digits or a unique prefix; may be repeated)")
    nw.add_argument("--timeout", type=_seconds, default=60.0, metavar="SECONDS",
                    help="give up after this long, 0..3600, exit code 5 (default 60)")

    dm = _cmd(sub, "demo", lazy("cmd_demo"),
              "a whole local consortium, a scenario, the view, an audit", "markex demo --quick", "")
    dm.add_argument("--quick", action="store_true", help="fewer numbers")
    dm.add_argument("--numbers", type=uint32, default=0,
                    help="how many numbers to mark (default 0: the scenario's own count)")
    dm.add_argument("--serve", action="store_true",
                    help="keep the consortium and its web front ends up until Ctrl-C")

    ap = _cmd(sub, "appeals", lazy("cmd_appeals"), "appeals with their status and age",
              "markex appeals --as institute --pending --json", "consortium as node json pin",
              as_help="the member reading (its certificate; its node unless --node)")
    ap.add_argument("--pending", action="store_true", help="only appeals not decided yet")

    mk = _cmd(sub, "mark", lazy("cmd_mark"), "sign and append a mark on a number",
              "markex mark --as carrier-1 13812345678 fraud --score 80", ISSUE,
              description="Sign and append a mark on a number.\n\ncategories (the default "
                          "taxonomy; `markex categories` lists a consortium's own):\n"
                          "  risks: fraud, harassment, debt-collection, one-ring, marketing,\n"
                          "         real-estate, finance-insurance, recruitment\n"
                          "  identity labels (not risks): delivery, taxi, customer-service")
    _quiet(mk)
    mk.add_argument("number", metavar="NUMBER", help="the number, E.164 or national form")
    mk.add_argument("category", metavar="CATEGORY",
                    help="a category of the consortium's taxonomy (see `markex categories`)")
    mk.add_argument("--score", type=_score, default=60, help="how sure, 0..100 (default 60)")
    mk.add_argument("--reports", type=uint32, default=1,
                    help="how many reports back the mark (default 1)")
    mk.add_argument("--expires-days", type=finite_float, default=0, metavar="DAYS",
                    help="days until the mark expires (default 0: the policy's expiry, "
                         "180 days by default)")

    co = _cmd(sub, "correct", lazy("cmd_correct"),
              "correct a mark: at once on one's own, an appeal on another's",
              "markex correct --as carrier-2 1a2b3c4d --withdraw --reason 'licensed courier'",
              ISSUE)
    _quiet(co)
    co.add_argument("record_id", metavar="RECORD_ID",
                    help="the mark's id: 64 hex digits or a unique prefix of at least 8")
    co.add_argument("--withdraw", action="store_true", help="withdraw the mark")
    co.add_argument("--category", metavar="C", help="recategorize the mark as C")
    co.add_argument("--reason", metavar="TEXT", help="why (kept in the record)")
    co.add_argument("--wait-for-target", action="store_true",
                    help="issue even if the node has not seen RECORD_ID yet; the correction "
                         "applies once it arrives (without it: refused, not found)")

    de = _cmd(sub, "decide", lazy("cmd_decide"), "the institute decides an appeal",
              "markex decide --as institute 5e6f7a8b --uphold --reason 'courier confirmed'",
              ISSUE)
    _quiet(de)
    de.add_argument("appeal_id", metavar="APPEAL_ID",
                    help="the appeal's id: 64 hex digits or a unique prefix of at least 8")
    de.add_argument("--uphold", action="store_true", help="the marks are set aside")
    de.add_argument("--reject", action="store_true", help="the marks stand")
    de.add_argument("--reason", metavar="TEXT", help="why (kept in the record)")

    ra = _cmd(sub, "reassign", lazy("cmd_reassign"), "declare a number given to a new holder",
              "markex reassign --as carrier-1 13812345678 --at 2026-12-01T00:00:00Z", ISSUE)
    _quiet(ra)
    ra.add_argument("number", metavar="NUMBER", help="the number, E.164 or national form")
    ra.add_argument("--at", required=True, metavar="ISO8601",
                    help="when the new holder got it, e.g. 2026-12-01T00:00:00Z (UTC when no "
                         "zone is given); marks observed before no longer count")
    _consent(sub)

    lk = _cmd(sub, "lookup", lazy("cmd_lookup"),
              "a number's national view entry, verified against a cosigned view checkpoint",
              "markex lookup --node internet-1 13812345678", READ, as_help=READER)
    lk.add_argument("number", metavar="NUMBER", nargs="?", help="the number looked up")
    lk.add_argument("--batch", metavar="FILE",
                    help="look up every number of FILE (one a line) through LookupBatch")
    lk.add_argument("--at", metavar="ISO8601",
                    help="evaluate the entry at this time, e.g. 2026-12-01T00:00:00Z "
                         "(default: now)")

    sc = _cmd(sub, "screen", lazy("cmd_screen"),
              "the call-path decision (allow, label, warn, block, and why), or a campaign "
              "list scrubbed (CSV out)",
              "markex screen --as carrier-1 13800000001 13900000002 --json",
              "consortium as node json pin",
              as_help="a carrier, the institute or a call centre (its member certificate)")
    sc.add_argument("caller_pos", metavar="CALLER", nargs="?", help="the calling number")
    sc.add_argument("callee", metavar="CALLEE", nargs="?", help="the called number")
    sc.add_argument("--at", metavar="ISO8601",
                    help="screen at this time (default: the node's clock; a list: now)")
    sc.add_argument("--mode", choices=("voice", "sms"), default="voice",
                    help="a voice call or an SMS (default voice)")
    sc.add_argument("--caller", metavar="CALLER", help="with --list: the campaign's number")
    sc.add_argument("--list", metavar="FILE",
                    help="a CSV of numbers (first column; header `number` allowed) to scrub")
    sc.add_argument("--out", metavar="FILE",
                    help="with --list: the CSV written (default: standard output)")

    _cmd(sub, "categories", lazy("cmd_categories"), "the mark categories and the names users know",
         "markex categories", "consortium as json pin", as_help=PINNER)

    rc = _group(sub, "record", "one record, followed to its proof")
    rg = _cmd(rc, "get", lazy("cmd_record_get"),
              "a record decoded, with its log index and its inclusion proof verified against "
              "the node's cosigned log checkpoint",
              "markex record get --node carrier-1 1a2b3c4d", READ, as_help=READER)
    rg.add_argument("record_id", metavar="RECORD_ID",
                    help="64 hex digits or a unique prefix of at least 8")

    vw = _group(sub, "view", "the national view")
    _cmd(vw, "checkpoint", lazy("cmd_view_checkpoint"), "the node's latest signed view checkpoint",
         "markex view checkpoint --node carrier-1", "consortium as node json pin",
         as_help=PINNER)
    vx = _cmd(vw, "export", lazy("cmd_view_export"),
              "every entry at one cosigned view checkpoint, as CSV or JSONL rows that "
              "carry the checkpoint (docs/export.md)",
              "markex view export --node carrier-1 --format csv --out view.csv", READ,
              as_help=READER)
    vx.add_argument("--format", choices=("csv", "jsonl"), required=True,
                    help="csv (the checkpoint in a comment line) or jsonl (in the first line)")
    vx.add_argument("--out", metavar="FILE",
                    help="the file to write, whole or not at all (default: standard output)")
    vx.add_argument("--since", metavar="FILE",
                    help="an earlier whole export: write only the delta since it")
    vx.add_argument("--wait", type=_seconds, default=30.0, metavar="SECONDS",
                    help="how long to wait for a checkpoint with the cosignature quorum, "
                         "0..3600 (default 30)")
    vv = _cmd(vw, "verify-export", lazy("cmd_view_verify_export"),
              "recompute the view root from an export's rows alone and check its "
              "checkpoint's signature and cosignature quorum",
              "markex view verify-export view.csv", "consortium as json pin", as_help=PINNER)
    vv.add_argument("file", metavar="FILE", help="the export (CSV or JSONL)")
    vv.add_argument("--base", metavar="FILE",
                    help="for a delta: the whole export it is since")

    vw_ = _cmd(vw, "watch", lazy("cmd_view_watch"),
               "a copy of the node's view kept by its verified change stream, one line per "
               "verified checkpoint (docs/watch.md)",
               "markex view watch --node carrier-1 --from view.cp --jsonl",
               "consortium as node pin", as_help=PINNER)
    vw_.add_argument("--from", dest="from_file", metavar="FILE",
                     help="keep the last verified checkpoint in FILE and the copy in FILE.d/; "
                          "resume from them")
    vw_.add_argument("--jsonl", action="store_true",
                     help="one JSON object a line: each changed entry, then the checkpoint")
    vw_.add_argument("--count", type=uint32, metavar="N",
                     help="stop after N verified checkpoints (default: watch until killed)")

    lg = _group(sub, "log", "the node's Merkle log")
    _cmd(lg, "checkpoint", lazy("cmd_log_checkpoint"),
         "the node's latest signed log checkpoint, as the note text (with cosignatures)",
         "markex log checkpoint --node carrier-1", "consortium as node json pin",
         as_help=PINNER)
    le = _cmd(lg, "entries", lazy("cmd_log_entries"),
              "envelopes START..END-1 of the node's log (members and auditors)",
              "markex log entries --node carrier-1 --start 0 --end 10", READ, as_help=READER)
    le.add_argument("--start", type=uint64, required=True, help="the first index")
    le.add_argument("--end", type=uint64, required=True, help="one past the last index")
    li = _cmd(lg, "inclusion", lazy("cmd_log_inclusion"),
              "an inclusion proof, verified against the node's cosigned log checkpoint",
              "markex log inclusion --node carrier-1 --index 3", "consortium as node json pin",
              as_help=PINNER)
    li.add_argument("--index", type=uint64, required=True, help="the leaf's index")
    li.add_argument("--size", type=uint64,
                    help="the tree size (default: the latest checkpoint's)")
    lcs = _cmd(lg, "consistency", lazy("cmd_log_consistency"),
               "a consistency proof, verified against the node's cosigned log checkpoint",
               "markex log consistency --node carrier-1 --old 2", "consortium as node json pin",
               as_help=PINNER)
    lcs.add_argument("--old", type=uint64, required=True, help="the older tree size")
    lcs.add_argument("--new", type=uint64,
                     help="the newer tree size (default: the latest checkpoint's)")

    au = _cmd(sub, "audit", lazy("cmd_audit"),
              "verify a node's log, checkpoints and view, online or on a stopped node's files",
              "markex audit --node carrier-1", READ, as_help=READER)
    au.add_argument("--data-dir", metavar="PATH", help="audit a stopped node's files offline")
    au.add_argument("--state", metavar="FILE",
                    help="auditor state file (remembers audited checkpoints)")
    au.add_argument("--evidence-dir", metavar="DIR",
                    help="where evidence files go (default: beside the state)")
    aus = au.add_subparsers(dest="sub", title="commands", metavar="COMMAND")
    ve = _cmd(aus, "verify-evidence", lazy("cmd_verify_evidence"),
              "check an evidence file (equivocation, fork) with consortium.json",
              "markex audit verify-evidence c/audit/evidence/equivocation-x.json",
              "consortium as json pin", as_help=PINNER)
    ve.add_argument("file", metavar="FILE", help="the evidence file")

    tr = _cmd(sub, "trail", lazy("cmd_trail"), "every record about a number in causal order, "
              "each proven in the node's cosigned log (docs/trail.md)",
              "markex trail --node carrier-1 +8613800138000", READ, as_help=READER)
    tr.add_argument("number", metavar="NUMBER", help="the number whose records are shown")
    tr.add_argument("--at", metavar="ISO8601", help="the time whose marketer line registration "
                    "links the enterprise's sanctions (default: now)")
    st = _cmd(sub, "stats", lazy("cmd_stats"), "accountability figures from the log, online or "
              "on a stopped node's files (docs/trail.md)", "markex stats --node carrier-1",
              READ, as_help=READER)
    st.add_argument("--data-dir", metavar="PATH", help="count a stopped node's files offline")
    st.add_argument("--vector", type=_vector, metavar="ISSUER=SEQ,...",
                    help="count only the records up to this vector (default: all the log has)")

    _complaint_commands(sub)

    ky = _group(sub, "keys", "keys")
    kv = _cmd(ky, "verifier", lazy("cmd_keys_verifier"), "a participant's signed-note verifier key",
              "markex keys verifier --participant carrier-1", "consortium as json pin",
              as_help=PINNER)
    kv.add_argument("--participant", required=True, metavar="ID", help="whose key")

    wb = _cmd(sub, "web", lazy("cmd_web"),
              "the public web front end of a node: a number's page and the JSON API /api/v1",
              "markex web --consortium ~/markex-c --as carrier-1 --listen 127.0.0.1:8080",
              "consortium as node pin",
              as_help="the front end's participant: its member certificate reads the node's "
                      "log indexes, its node.toml pins the institute key")
    wb.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                    help="where to serve HTTP (default 127.0.0.1:8080; port 0: any free port)")
    wb.add_argument("--lookups-per-minute", type=finite_float, default=120.0, metavar="N",
                    help="lookups a minute one client address may make (default 120; 0: no "
                         "limit)")
    wb.add_argument("--burst", type=uint32, default=30, metavar="N",
                    help="lookups one client address may make at once (default 30)")
    wb.add_argument("--trusted-proxy", action="append", metavar="CIDR",
                    help="a reverse proxy (address or network) whose X-Forwarded-For names "
                         "the client for the limits; repeat for several (default: none, the "
                         "connection's address counts)")

    im = _cmd(sub, "import", lazy("cmd_import"),
              "issue many records from a JSONL or CSV file, idempotent: a rerun issues "
              "nothing twice (docs/import.md)", "markex import --as carrier-1 marks.csv --json",
              ISSUE)
    im.add_argument("file", metavar="FILE", help="JSONL (one object a line) or CSV of marks")
    im.add_argument("--format", choices=("jsonl", "csv"),
                    help="the file's format (default: .csv/.jsonl by name, else by content)")
    im.add_argument("--strict", action="store_true",
                    help="stop at the first bad line: nothing after it is sent")
    im.add_argument("--results", metavar="OUT",
                    help="write one JSON line per line of FILE: its record (id, seq, index, "
                         "duplicate) or its error")
    im.add_argument("--timeout", type=finite_float, default=0, metavar="SECONDS",
                    help="give up after this long (default 0: no limit)")

    _replica(sub)
    _ceremony(sub, cons, ky, nd)
    return p


def _consent(sub: Any) -> None:
    """`prefer` and `line register|deregister` (node/consentcli.py, docs/cli.md)."""
    pr = _cmd(sub, "prefer", lazy("cmd_prefer"),
              "a subscriber's refusal of marketing calls by industry (--refuse none revokes)",
              "markex prefer --as carrier-1 13812345678 --refuse real-estate,finance "
              "--hours 09-12 --days weekday", ISSUE,
              as_help="the number's serving carrier or the institute (the national platform)")
    _quiet(pr)
    pr.add_argument("number", metavar="NUMBER", help="the subscriber's number, E.164 or "
                    "national form (sent to the node only; the record holds it sealed)")
    pr.add_argument("--refuse", required=True, metavar="IND[,IND...]|all|none",
                    help="the industries whose marketing is refused, ids of the consortium's "
                         "list (by default finance, insurance, securities, real-estate, "
                         "education, health, consumer-goods, telecom, tourism, recruitment), "
                         "all (every marketing call), or none (revokes the refusal)")
    pr.add_argument("--modes", metavar="voice,sms",
                    help="the modes refused (default: every mode)")
    pr.add_argument("--hours", metavar="HH-HH[,...]",
                    help="China Standard Time bands in which refused marketing is still "
                         "allowed, e.g. 09-12,14:30-17 (default: none)")
    pr.add_argument("--days", metavar="DAYS",
                    help="the days the --hours hold: weekday, weekend or mon..sun, "
                         "comma-separated (default: every day)")
    pr.add_argument("--from", dest="start", metavar="ISO8601",
                    help="when it takes effect, e.g. 2026-12-01T00:00:00Z (default: when "
                         "issued)")
    pr.add_argument("--until", metavar="ISO8601",
                    help="when it ends (default: until a later preference)")
    ln = _group(sub, "line", "marketers' lines: a number or prefix registered to an enterprise")
    lr = _cmd(ln, "register", lazy("cmd_line_register"),
              "register a number or a prefix (400*, +86400*) used for marketing by an "
              "enterprise, as the carrier that provides it",
              "markex line register --as carrier-1 4001234567 --enterprise 'Acme Realty' "
              "--uscc 91110000100000000R --industry real-estate", ISSUE)
    _quiet(lr)
    lr.add_argument("number", metavar="NUMBER_OR_PREFIX",
                    help="a number (E.164 or national form) or a prefix ending in *")
    lr.add_argument("--enterprise", required=True, metavar="NAME", help="the enterprise's name")
    lr.add_argument("--uscc", required=True, metavar="CODE",
                    help="its unified social credit code (18 characters, GB 32100-2015)")
    lr.add_argument("--industry", required=True, metavar="IND",
                    help="the industry it markets for, an id of the consortium's list")
    ld = _cmd(ln, "deregister", lazy("cmd_line_deregister"),
              "end a registration, as the carrier that made it",
              "markex line deregister --as carrier-1 1a2b3c4d", ISSUE)
    _quiet(ld)
    ld.add_argument("record_id", metavar="RECORD_ID",
                    help="the registration's id: 64 hex digits or a unique prefix of at "
                         "least 8")
def _replica(sub: Any) -> None:
    """`markex replica run` (node/replicacli.py, docs/replica.md)."""
    rp = _group(sub, "replica", "verified read replicas of the national view")
    rr = _cmd(rp, "run", lazy("cmd_replica_run"),
              "follow nodes' logs, verify every record as the auditor does, and serve "
              "Lookup, LookupBatch and GetViewCheckpoint with the nodes' proofs",
              "markex replica run --consortium ~/markex-c --as carrier-1 --follow carrier-1,"
              "carrier-2 --listen 127.0.0.1:7400 --data-dir ~/replica", "consortium as pin",
              as_help="the participant running the replica: its member certificate reads the "
                      "followed nodes' Audit service, its TLS certificate serves the port")
    rr.add_argument("--follow", required=True, metavar="NODE[,NODE...]",
                    help="the nodes whose logs are followed (ids or HOST:PORT)")
    rr.add_argument("--listen", required=True, metavar="HOST:PORT",
                    help="where to serve the public port (port 0: any free port)")
    rr.add_argument("--data-dir", metavar="PATH",
                    help="the replica's own store (default: DIR/<as>/replica-<port>)")
    rr.add_argument("--interval", type=finite_float, default=0.5, metavar="S",
                    help="seconds between rounds over the followed logs (default 0.5)")
    rr.add_argument("--log-level", metavar="LEVEL", default="info",
                    help="the least level logged: debug, info, warning, error or critical")


def _ceremony(sub: Any, consortium: Any, keys: Any, node: Any) -> None:
    """The key ceremony's commands (node/ceremony.py), each with its help line
    and an example (docs/consortium-setup.md tells the story)."""

    def command(group: Any, name: str, fn: Any, help_: str, example: str,
                opts: str = "json", as_help: str | None = None) -> Any:
        return _cmd(group, name, fn, help_, example, opts, as_help=as_help)

    kg = command(keys, "generate", lazy("cmd_keys_generate"),
                 "a participant's keys, certificate requests and member.json",
                 "markex keys generate --id carrier-4 --role carrier --out ./org "
                 "--host node.carrier4.example")
    kg.add_argument("--id", required=True, help="the participant's id, e.g. carrier-4")
    kg.add_argument("--role", required=True,
                    help="its role: institute, carrier, internet, auditor, callcenter, "
                         "complaints or regulator")
    kg.add_argument("--out", required=True, help="the organisation's folder; keys go in OUT/ID/")
    kg.add_argument("--host", default="127.0.0.1", help="the node's host name or address")
    kg.add_argument("--member-port", type=int, default=7400,
                    help="the member port (mutual TLS; default 7400)")
    kg.add_argument("--public-port", type=int, default=7401,
                    help="the public port (TLS, read-only; default 7401)")
    kg.add_argument("--name", help="the organisation's name")

    ck = command(consortium, "keygen", lazy("cmd_consortium_keygen"),
                 "the institute's configuration key (kept off every node)",
                 "markex consortium keygen --out ./config")
    ck.add_argument("--out", required=True, help="the folder the key is written to")
    am = command(consortium, "add-member", lazy("cmd_consortium_add_member"),
                 "add a participant's member.json to the draft",
                 "markex consortium add-member ./draft --member ./org/carrier-4/member.json")
    am.add_argument("dir", help="the draft consortium folder")
    am.add_argument("--member", required=True, help="the participant's member.json")
    am.add_argument("--name", help="the consortium's name (a new draft only)")
    am.add_argument("--weight", type=int, help="the participant's weight (default: its role's)")
    am.add_argument("--ranges", help="a carrier's E.164 prefixes, comma-separated")
    cs = command(consortium, "sign", lazy("cmd_consortium_sign"),
                 "sign consortium.json with the configuration key",
                 "markex consortium sign ./draft --key ./config/config.key")
    cs.add_argument("dir", help="the draft consortium folder")
    cs.add_argument("--key", required=True, help="the configuration key file")
    cs.add_argument("--members-key", help="the members' key file, made at the first signature "
                    "(default: members.key beside --key)")

    ca = sub.add_parser("ca", help="the consortium CA", description="the consortium CA")
    ca.set_defaults(fn=None, usage_of=ca)
    ca = ca.add_subparsers(dest="sub", title="commands", metavar="COMMAND")
    cai = command(ca, "init", lazy("cmd_ca_init"), "a new consortium CA",
                  "markex ca init --ca ./ca")
    cai.add_argument("--ca", required=True, help="the CA's folder")
    cai.add_argument("--name", default="markex CA", help="the CA's name (default: markex CA)")
    cas = command(ca, "sign", lazy("cmd_ca_sign"), "issue a certificate for a request",
                  "markex ca sign --ca ./ca --csr ./org/carrier-4/tls.csr --out tls.pem "
                  "--id carrier-4", "consortium json pin")
    cas.add_argument("--ca", required=True, help="the CA's folder")
    cas.add_argument("--csr", required=True, help="the certificate request (PEM)")
    cas.add_argument("--out", required=True, help="where the certificate is written")
    cas.add_argument("--id", help="the participant the request must name")

    nc = command(node, "configure", lazy("cmd_node_configure"),
                 "write this participant's node.toml, pinned to the configuration key",
                 "markex node configure --consortium ./c --as carrier-4 --pin ./config.pub",
                 "consortium as json", as_help="the participant whose node this is")
    nc.add_argument("--pin", required=True,
                    help="the configuration public key, base64 (or a file holding it)")
    nc.add_argument("--new-feed", action="store_true",
                    help="this participant has never issued: its node may start a new feed")


def _complaint_commands(sub: Any) -> None:
    """complain, complaints, handle, sanction, badlist (node/complaintcli.py)."""
    cp = _cmd(sub, "complain", lazy("cmd_complain"),
              "the complaints centre files a complaint, addressed to the number's serving "
              "carrier (the complainant sealed by the node, the description kept as a digest)",
              "markex complain --as complaints-1 13812345678 marketing --at "
              "2026-12-01T09:30:00Z --channel app --complainant 13900000009", ISSUE)
    _quiet(cp)
    cp.add_argument("number", metavar="NUMBER", help="the reported number")
    cp.add_argument("category", metavar="CATEGORY", help="a category of the taxonomy")
    cp.add_argument("--at", required=True, metavar="ISO8601",
                    help="when the reported call came, e.g. 2026-12-01T09:30:00Z")
    cp.add_argument("--channel", required=True, choices=("web", "app", "phone", "wechat"),
                    help="how the complaint reached the centre")
    cp.add_argument("--complainant", required=True, metavar="NUMBER",
                    help="the complainant's number (sealed by the node, never recorded in clear)")
    cp.add_argument("--description", metavar="TEXT",
                    help="what the complainant said (only its SHA-256 is recorded)")

    cq = _cmd(sub, "complaints", lazy("cmd_complaints"),
              "a carrier's complaint queue with the SLA clock (never the complainant)",
              "markex complaints --as carrier-1 --open --json", "consortium as node json pin",
              as_help="a carrier (its own queue), or the institute or regulator with --carrier")
    state = cq.add_mutually_exclusive_group()
    state.add_argument("--open", action="store_true", help="only complaints not closed")
    state.add_argument("--overdue", action="store_true", help="only complaints past a deadline")
    cq.add_argument("--at", metavar="ISO8601", help="the queue at this time (default: now)")
    cq.add_argument("--carrier", metavar="ID",
                    help="the institute or the regulator: whose queue (a carrier reads its own)")

    hd = _cmd(sub, "handle", lazy("cmd_handle"),
              "the carrier a complaint is addressed to says what it found and did, or forwards it",
              "markex handle --as carrier-1 1a2b3c4d --confirmed --mark 5e6f7a8b --json", ISSUE)
    _quiet(hd)
    hd.add_argument("complaint_id", metavar="COMPLAINT_ID",
                    help="the complaint's id: 64 hex digits or a unique prefix of at least 8")
    hd.add_argument("--confirmed", action="store_true", help="the complaint is confirmed")
    hd.add_argument("--not-confirmed", action="store_true", help="the complaint is not confirmed")
    hd.add_argument("--forward", metavar="CARRIER",
                    help="not our subscriber: forward it to the carrier that serves the number")
    hd.add_argument("--mark", metavar="RECORD_ID",
                    help="with --confirmed: the mark issued for it (id or unique prefix)")
    hd.add_argument("--action", choices=("warning", "suspended", "none"),
                    help="with --confirmed: a warning to the line, the line suspended, or none")
    hd.add_argument("--feedback-reported", metavar="ISO8601",
                    help="when the reported party was told")
    hd.add_argument("--feedback-complainant", metavar="ISO8601",
                    help="when the complainant was told")

    sn = _cmd(sub, "sanction", lazy("cmd_sanction"),
              "the regulator lists an enterprise on the bad list, or delists it",
              "markex sanction --as regulator-1 --uscc 91110000600037341L --name 某某营销 "
              "--reason 骚扰电话 --doc '工信罚〔2026〕12号' --json", ISSUE)
    _quiet(sn)
    sn.add_argument("--uscc", required=True, metavar="CODE",
                    help="the enterprise's unified social credit code (18 characters)")
    sn.add_argument("--name", required=True, metavar="N", help="the enterprise's name")
    sn.add_argument("--reason", metavar="T", help="why (a listing needs one)")
    sn.add_argument("--doc", required=True, metavar="D", help="the penalty's document number")
    sn.add_argument("--licence", metavar="L", help="the enterprise's licence number")
    sn.add_argument("--delist", action="store_true", help="take the enterprise off the list")
    sn.add_argument("--at", metavar="ISO8601", help="when it takes effect (default: now)")

    bl = _cmd(sub, "badlist", lazy("cmd_badlist"),
              "the bad list, each listing's signature, inclusion proof and checkpoint verified",
              "markex badlist --node carrier-1 --check 13812345678 --json",
              "consortium as node json pin", as_help=PINNER)
    bl.add_argument("--check", metavar="CODE_OR_NUMBER",
                    help="is this enterprise (credit code) or number (its marketer line's "
                         "enterprise) listed?")
    bl.add_argument("--at", metavar="ISO8601", help="the list at this time (default: now)")


def _seconds(s: str) -> float:
    v = finite_float(s)
    if not 0 <= v <= 3600:
        raise argparse.ArgumentTypeError(f"{s} is not between 0 and 3600 seconds")
    return v


def _vector(s: str) -> dict[str, int]:
    """ISSUER=SEQ[,ISSUER=SEQ...]: what `markex stats --json` prints as its vector."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in s.split(","))):
        issuer, eq, seq = part.partition("=")
        if not eq or not issuer or not seq.isdigit():
            raise argparse.ArgumentTypeError(f"{part!r} is not ISSUER=SEQ")
        out[issuer] = int(seq)
    return out


def _score(s: str) -> int:
    try:
        v = int(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{s!r} is not a whole number") from e
    if not 0 <= v <= 100:
        raise argparse.ArgumentTypeError(f"{s} is not between 0 and 100")
    return v


def main(argv: list[str] | None = None, *, connect: Connect | None = None) -> int:
    """Run `markex` with `argv` (default: sys.argv[1:]) and return its exit
    code. `connect` reaches the nodes (default: TLS channels from the
    consortium folder, all closed before this returns)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        return fail("--json" in argv, Exit.USAGE, str(e))
    if args.fn is None:  # `markex` or `markex log` alone: what there is to run
        args.usage_of.print_help(sys.stderr)
        return int(Exit.USAGE)
    if connect is not None:
        return run(args.fn, args, connect)
    with TlsConnect() as tls:
        return run(args.fn, args, tls)


if __name__ == "__main__":
    sys.exit(main())
