"""The command line as a new user meets it (issue 13): `markex` alone,
`--version`, the exit-code table in `--help` and docs/cli.md, a consortium
refused inside a git work tree, categories listed, every flag with a help
line and every command with an example, and a sweep of every command with
hostile arguments that never ends in a traceback."""

from __future__ import annotations

import argparse
import base64
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import node.cli
from keys.consortium import Consortium
from keys.layout import NodeConfig, init_consortium
from node.cli import build_parser, main
from node.client import INSTITUTE_KEY_ENV
from node.command import EXIT_CODES, UsageError

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Consortium]:
    """A consortium folder whose nodes never run: every node is unreachable."""
    d = tmp_path_factory.mktemp("ux") / "c"
    cons = init_consortium(d, carriers=1, internet=1, base_port=31700, now=datetime.now(UTC))
    return d, cons


@pytest.fixture
def pinned(folder: tuple[Path, Consortium], monkeypatch: pytest.MonkeyPatch) -> Path:
    d, _ = folder
    key = NodeConfig.for_participant(d, "institute").institute_key
    monkeypatch.setenv(INSTITUTE_KEY_ENV, base64.b64encode(key).decode())
    monkeypatch.delenv("MARKEX_DEBUG", raising=False)
    return d


def call(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    o, e = capsys.readouterr()
    return code, o, e


# ------------------------------------------------------------------ the first minutes


def test_markex_alone_prints_the_usage_and_every_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, o, e = call(capsys)
    assert code == 2 and o == ""
    assert e.startswith("usage: markex") and "required" not in e
    for cmd in ("consortium", "node", "mark", "correct", "decide", "reassign", "lookup",
                "record", "log", "view", "audit", "keys", "categories", "demo"):
        assert re.search(rf"^    {cmd}\b", e, re.M), cmd
    code, _, e = call(capsys, "log")  # a group alone: its own commands
    assert code == 2 and "inclusion" in e and "consistency" in e


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ex:
        main(["--version"])
    assert ex.value.code == 0
    assert re.fullmatch(r"markex \d+\.\d+\.\d+\n", capsys.readouterr().out)


def test_the_exit_code_table_is_in_help_and_in_docs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    doc = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for code, what in EXIT_CODES:
        name = code.name.lower().replace("_", " ")
        assert re.search(rf"^  {int(code)}  {name} +{re.escape(what)}$", text, re.M), name
        assert f"| {int(code)} | {name} | {what} |" in doc, name


def test_consortium_init_refuses_a_git_work_tree_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    code, o, e = call(capsys, "consortium", "init", str(repo / "c"), "--base-port", "31800")
    assert code == 2 and o == "" and not (repo / "c").exists()
    assert "inside the git work tree" in e and "private keys" in e and "--inside-git" in e
    code, o, _ = call(capsys, "consortium", "init", str(repo / "c"), "--base-port", "31800",
                      "--inside-git", "--json")
    assert code == 0 and json.loads(o)["participants"][0] == "institute"


def test_a_folder_git_ignores_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("/c/\n", encoding="utf-8")
    code, _, e = call(capsys, "consortium", "init", str(repo / "c"), "--base-port", "31900")
    assert code == 0, e
    code, _, e = call(capsys, "consortium", "init", str(repo / "d"), "--base-port", "31900")
    assert code == 2 and "inside the git work tree" in e


def test_make_path_prints_the_lines_that_put_markex_on_the_path(tmp_path: Path) -> None:
    venv = Path(sys.executable).parent.parent  # the venv this test runs in holds `markex`
    res = subprocess.run(["make", "-s", "-C", str(ROOT), "path", f"VENV={venv}"],
                         capture_output=True, text=True, check=True)
    lines = res.stdout.splitlines()
    assert len(lines) == 3 and lines[1].strip().startswith(". ")
    for line in lines[1:]:
        found = subprocess.run(["bash", "-c", f"{line.strip()} && command -v markex"],
                               capture_output=True, text=True, cwd=tmp_path,
                               env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
        assert found.stdout.strip() == str(venv / "bin" / "markex"), (line, found.stderr)
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    demo = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert demo.rstrip().endswith("$(MAKE) -s path")  # `make demo` ends by printing them
    assert ".venv/bin/activate" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_consortium_folder_is_ignored_by_git() -> None:
    """`git add .` after the README's `consortium init ./c` adds no key."""
    res = subprocess.run(["git", "check-ignore", "-q", "c/carrier-1/signing.key"], cwd=ROOT,
                         capture_output=True, check=False)
    assert res.returncode == 0
    assert "consortium init ./c" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_categories_are_listed(pinned: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, o, _ = call(capsys, "categories", "--consortium", str(pinned), "--json")
    cats = json.loads(o)["categories"]
    assert code == 0 and cats[0] == {"id": "fraud", "label": "诈骗", "rank": 100, "risk": True}
    assert {"delivery", "taxi", "customer-service"} <= {c["id"] for c in cats}
    code, o, _ = call(capsys, "categories", "--consortium", str(pinned))
    assert code == 0 and re.search(r"^delivery +快递外卖, rank 20, an identity label", o, re.M)
    with pytest.raises(SystemExit):
        main(["mark", "--help"])
    assert "real-estate" in capsys.readouterr().out


# ------------------------------------------------------------------ help


def leaves(p: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command that runs something, with its parser."""
    if p.get_default("fn") is not None:
        yield path, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                yield from leaves(sub, (*path, name))


PARSER = build_parser()
COMMANDS = list(leaves(PARSER))


@pytest.mark.parametrize("path,parser", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_flag_has_a_help_line_and_every_command_an_example(
    path: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    assert parser.epilog and parser.epilog.startswith("example:\n  markex " + " ".join(path))
    for a in parser._actions:
        if a.help is argparse.SUPPRESS or isinstance(a, argparse._SubParsersAction):
            continue  # a nested command has its own help line (its choices')
        assert a.help, (path, a.dest)


def test_help_states_ranges_defaults_and_formats(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["mark", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "0..100 (default 60)" in text and "the policy's expiry, 180 days" in text
    with pytest.raises(SystemExit):
        main(["reassign", "--help"])
    assert "2026-12-01T00:00:00Z" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["audit", "--help"])
    assert "verify-evidence" in capsys.readouterr().out
    # options that mean nothing for a command are not offered
    for argv in (["consortium", "init", "d", "--node", "x"], ["demo", "--as", "x"],
                 ["keys", "verifier", "--participant", "x", "--node", "y"]):
        with pytest.raises(UsageError, match="unrecognized arguments"):
            build_parser().parse_args(argv)


def test_a_usage_error_with_json_is_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    code, o, e = call(capsys, "mark", "13812345678", "fraud", "--score", "-5", "--json")
    assert code == 2 and o == ""
    assert json.loads(e) == {"error": {
        "code": "usage", "exit": 2,
        "message": "argument --score: -5 is not between 0 and 100 (see `markex mark --help`)"}}


# ------------------------------------------------------------------ hostile arguments

HOSTILE = ["-5", "-1", str(2**64), "1e400", "nan", "inf", "", "zz-not-valid", "9" * 400,
           "2026-02-30T25:61:00Z", "{tmp}/missing/x", "127.0.0.1:99999999", "[::1"]
SKIP = {("demo",), ("node", "run"), ("web",)}  # they serve until stopped; bad input: below
VALUES = {"number": "13812345678", "category": "fraud", "record_id": "ab" * 32,
          "appeal_id": "ab" * 32, "dir": "{tmp}/new", "file": "{tmp}/missing.json",
          "at": "2026-12-01T00:00:00Z", "start": "0", "end": "2", "index": "0", "old": "1",
          "participant": "carrier-1", "as_id": "carrier-1", "node": "carrier-1",
          "pin": "{tmp}/missing.pub", "role": "carrier", "id": "carrier-9",
          # prefer, line register|deregister (node/consentcli.py), sanction
          "refuse": "real-estate,finance", "enterprise": "Acme Realty",
          "uscc": "91110000100000000R", "industry": "real-estate",
          # complain, handle, sanction (node/complaintcli.py)
          "complaint_id": "ab" * 32, "complainant": "13900000009", "name": "某某营销",
          "doc": "工信罚〔2026〕12号"}
# The complaint commands act as their own roles (node/complaintcli.py checks it first).
AS_ROLE = {"complain": "complaints-1", "sanction": "regulator-1"}
OPTIONAL = {"timeout": "0.2"}  # `node wait` waits for nodes that never come: not long


def _base(path: tuple[str, ...], parser: argparse.ArgumentParser) -> list[tuple[Any, str]]:
    """(action, value) of a plausible command line: positionals and required options."""
    out = []
    for a in parser._actions:
        if a.option_strings and not a.required and a.dest not in ("as_id", "node", *OPTIONAL):
            continue
        if isinstance(a, argparse._SubParsersAction | argparse._HelpAction):
            continue
        if a.option_strings and a.dest in ("as_id", "node") and not any(
                x.dest == a.dest for x in parser._actions if x.option_strings):
            continue
        value = VALUES.get(a.dest) or OPTIONAL.get(a.dest) or "{tmp}/missing"
        if a.choices:
            value = next(iter(a.choices))
        if path[0] == "decide" and a.dest == "as_id":
            value = "institute"
        if path[0] in AS_ROLE and a.dest == "as_id":
            value = AS_ROLE[path[0]]
        out.append((a, value))
    return out


def _argv(base: list[tuple[Any, str]], tmp: Path) -> list[str]:
    argv: list[str] = []
    for a, v in base:
        v = v.replace("{tmp}", str(tmp))
        argv += [a.option_strings[0], v] if a.option_strings else [v]
    return argv


CASES = [(path, parser) for path, parser in COMMANDS if path not in SKIP]


@pytest.mark.parametrize("path,parser", CASES, ids=[" ".join(p) for p, _ in CASES])
def test_no_command_ever_prints_a_traceback(
    path: tuple[str, ...], parser: argparse.ArgumentParser, pinned: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every value-taking argument of every command, given each hostile value,
    against nodes that do not run: a clean one-line message, never 'a bug'."""
    monkeypatch.chdir(tmp_path)  # a hostile value taken as a relative path lands here
    # main() builds the whole parser at each call, most of this test's time over
    # its thousands of calls; argparse keeps no state between parses, so one serves.
    monkeypatch.setattr(node.cli, "build_parser", lambda: PARSER)
    base = _base(path, parser)
    extra = ["--consortium", str(pinned)] if any(
        "--consortium" in a.option_strings for a in parser._actions) else []
    takes = [a for a in parser._actions if a.nargs != 0 and not isinstance(
        a, argparse._SubParsersAction | argparse._HelpAction) and a.dest != "consortium"]
    runs = 0
    for target in takes:
        for value in HOSTILE:
            line = [(a, v) for a, v in base if a is not target]
            line.append((target, value))
            argv = [*path, *_argv(line, tmp_path), *extra]
            code, o, e = call(capsys, *argv)
            runs += 1
            assert "Traceback" not in o + e, argv
            if code == 0:
                continue  # some hostile text is a fine value (a reason, a folder)
            assert e.startswith("markex: ") and e.count("\n") == 1, (argv, e)
            assert code != 6 and "a bug" not in e, (argv, e)
    assert runs or not takes


def test_the_commands_that_start_processes_refuse_bad_input_first(
    pinned: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv, needle in ((["demo", "--numbers", "-5"], "--numbers"),
                         (["demo", "--numbers", "nan"], "--numbers"),
                         (["node", "run", "--consortium", str(pinned)], "--as ID is required"),
                         (["node", "run", "--consortium", str(pinned), "--as", "nobody"],
                          "nobody"),
                         (["web", "--consortium", str(pinned), "--as", "carrier-1",
                           "--listen", "[::1"], "HOST:PORT"),
                         (["web", "--consortium", str(pinned), "--as", "carrier-1",
                           "--burst", "-1"], "--burst")):
        code, o, e = call(capsys, *argv)
        assert code == 2 and o == "" and needle in e and e.count("\n") == 1, (argv, e)


def test_the_installed_command_fails_cleanly_in_a_subprocess(pinned: Path) -> None:
    """The real process: stderr holds the one sentence and nothing else."""
    res = subprocess.run(
        [sys.executable, "-m", "node.cli", "log", "inclusion", "--node", "carrier-1",
         "--index", "-1", "--consortium", str(pinned)],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == ("markex: argument --index: -1 is not between 0 and "
                          f"{2**64 - 1} (see `markex log inclusion --help`)\n")


def test_help_loads_no_grpc_no_keys_no_ledger_view() -> None:
    """What makes `markex --help` start fast (bench cli_startup): the commands'
    modules, gRPC and the key code are loaded only by the commands that use them."""
    probe = ("import sys, contextlib, io\n"
             "from node.cli import main\n"
             "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
             "    main(['--help'])\n"
             "heavy = ('grpc', 'cryptography', 'ledger.view', 'ledger.log', 'keys.consortium',\n"
             "         'node.issuecli', 'node.lookupcli', 'node.recordcli', 'node.ceremony')\n"
             "print(sorted(m for m in heavy if m in sys.modules))\n")
    res = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)
    assert res.stdout.strip() == "[]", res.stdout


def test_a_lookup_nobody_cosigned_says_how_many_cosignatures_it_lacks(
    pinned: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """carrier-1 runs alone: its view checkpoint is signed, nobody cosigns it."""
    import time

    from node.server import Node

    node = Node(NodeConfig.for_participant(pinned, "carrier-1"), sync_interval=0.2).start()
    try:
        deadline = time.monotonic() + 30
        while True:
            code, o, e = call(capsys, "lookup", "--node", "carrier-1", "13812345678",
                              "--consortium", str(pinned))
            if code == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    finally:
        node.stop(grace=0.1)
    assert code == 1 and re.search(r"^verified +no$", o, re.M)
    assert e.startswith("markex: not verified: 0 of 2 required cosignatures (") and \
        e.count("\n") == 1, e


def test_cli_startup_and_cli_lookup_are_benchmarks() -> None:
    """`make bench` runs them (bench/cli_startup.py), in the fixed report format."""
    from bench import report
    from bench.__main__ import BENCHMARKS

    for name in ("cli_startup", "cli_lookup"):
        fn = BENCHMARKS[name].load()
        assert fn.__module__ == "bench.cli_startup" and not BENCHMARKS[name].opt_in
    from bench import cli_startup

    ms = cli_startup._wall_ms([sys.executable, "-m", "node.cli", "--help"], 1)
    result = report.latency(ms, "ms", cli_startup.HELP_TARGET_MS, "one run")
    report.check_result("cli_startup", result)
    assert ms > 0
