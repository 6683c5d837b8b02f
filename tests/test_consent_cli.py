"""`markex prefer` and `markex line register|deregister` in-process, against
the stub servicers of tests/test_cli_inprocess.py: each dials the acting
participant's own Admin service, sends the request it was asked for (the
number normalized, the prefix in E.164, the bands in minutes), prints
design.md's output, and refuses what it can judge alone with one sentence and
exit code 2 before any node is asked. What the node refuses comes back as its
sentence and its exit code (tests/test_cli_inprocess.py's sweep names these
commands too); against real nodes: tests/test_consent_nodes.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from keys.consortium import Consortium
from node.connect import Dial
from tests import test_cli_inprocess as inproc
from tests.test_cli_inprocess import RECORD_ID, Script, StubConnect, _ep, cli

# The stub node and the consortium folder of test_cli_inprocess, as this module's fixtures.
stub_server, folder, stub = inproc.stub_server, inproc.folder, inproc.stub

pytestmark = pytest.mark.timeout(60)

USCC = "91110000100000000R"  # a valid unified social credit code (its check character R)


def _ms(*ymdhm: int) -> int:
    return int(datetime(*ymdhm, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


# ------------------------------------------------------------------ prefer


def test_prefer_sends_the_number_in_clear_to_its_own_node_and_prints_the_record(
    stub: tuple[StubConnect, Script], folder: tuple[Path, Consortium],
    capsys: pytest.CaptureFixture[str],
) -> None:
    conn, script = stub
    d, cons = folder
    code, o, e = cli(capsys, folder, conn, "prefer", "--as", "carrier-1", "138 1234 5678",
                     "--refuse", "real-estate, finance", "--modes", "voice",
                     "--hours", "09-12,14:30-17", "--days", "weekday,sat",
                     "--from", "2026-12-01T00:00:00Z", "--until", "2027-12-01T00:00:00Z",
                     "--json")
    assert (code, e) == (0, "")
    assert json.loads(o) == {"id": RECORD_ID.hex(), "issuer": "carrier-1", "seq": 9,
                             "index": 44}
    assert conn.dials == [("admin", Dial(d, _ep(cons, "carrier-1"), "carrier-1"))]
    [(method, r)] = script.calls
    assert method == "IssuePreference"
    assert r.number == "+8613812345678"
    assert (list(r.refuse), list(r.modes), list(r.days)) == (
        ["real-estate", "finance"], ["voice"], ["weekday", "sat"])
    assert [(b.start_minute, b.end_minute) for b in r.allowed] == [(540, 720), (870, 1020)]
    assert (r.effective_from_ms, r.until_ms) == (_ms(2026, 12, 1), _ms(2027, 12, 1))


def test_prefer_all_and_none_and_the_plain_output(
    stub: tuple[StubConnect, Script], folder: tuple[Path, Consortium],
    capsys: pytest.CaptureFixture[str],
) -> None:
    conn, script = stub
    code, o, _ = cli(capsys, folder, conn, "prefer", "--as", "institute", "13812345678",
                     "--refuse", "all")
    assert code == 0 and list(script.calls[-1][1].refuse) == ["all"]
    assert o == (f"id         {RECORD_ID.hex()}\nissuer     carrier-1\nseq        9\n"
                 "log index  44 in the log of institute\n")
    code, o, _ = cli(capsys, folder, conn, "prefer", "--as", "carrier-1", "13812345678",
                     "--refuse", "none", "-q")
    r = script.calls[-1][1]
    assert (code, o) == (0, RECORD_ID.hex() + "\n")
    assert (list(r.refuse), list(r.modes), list(r.allowed), r.until_ms) == ([], [], [], 0)


PREFER_MISTAKES = [
    (["--refuse", "gambling"], "'gambling' is not an industry of"),
    (["--refuse", "gambling"], "real-estate (房产中介)"),  # the valid values are listed
    (["--refuse", "all,finance"], "'none' and 'all' stand alone"),
    (["--refuse", "none,finance"], "stand alone"),
    (["--refuse", "finance,finance"], "names finance twice"),
    (["--refuse", "finance,"], "empty item"),
    (["--refuse", "finance", "--modes", "fax"], "--modes: 'fax' is not one of voice, sms"),
    (["--refuse", "finance", "--hours", "9-25"], "--hours: time band '9-25'"),
    (["--refuse", "finance", "--hours", "09-12,11-13"], "overlap"),
    (["--refuse", "finance", "--hours", "morning"], "does not parse"),
    (["--refuse", "finance", "--hours", "09-12", "--days", "holiday"],
     "--days: 'holiday' is not one of weekday, weekend, mon"),
    (["--refuse", "finance", "--days", "weekend"], "--days says on which days the --hours"),
    (["--refuse", "none", "--modes", "sms"], "--refuse none revokes every refusal"),
    (["--refuse", "none", "--until", "2030-01-01T00:00:00Z"], "--refuse none revokes"),
    (["--refuse", "finance", "--from", "2027-01-01T00:00:00Z", "--until",
      "2026-01-01T00:00:00Z"], "--until must be after"),
    (["--refuse", "finance", "--until", "2001-01-01T00:00:00Z"], "--until must be after"),
    (["--refuse", "finance", "--from", "yesterday"], "'yesterday' is not an ISO 8601 time"),
]


@pytest.mark.parametrize("extra,needle", PREFER_MISTAKES, ids=lambda v: str(v)[:40])
def test_prefer_refuses_what_it_can_judge_alone_before_asking_a_node(
    stub: tuple[StubConnect, Script], folder: tuple[Path, Consortium],
    capsys: pytest.CaptureFixture[str], extra: list[str], needle: str,
) -> None:
    conn, script = stub
    code, o, e = cli(capsys, folder, conn, "prefer", "--as", "carrier-1", "13812345678", *extra)
    assert (code, o) == (2, "") and needle in e, e
    assert e.startswith("markex: ") and e.count("\n") == 1
    assert script.calls == [] and conn.dials == []


def test_prefer_of_something_that_is_no_number_is_refused(
    stub: tuple[StubConnect, Script], folder: tuple[Path, Consortium],
    capsys: pytest.CaptureFixture[str],
) -> None:
    conn, script = stub
    code, _, e = cli(capsys, folder, conn, "prefer", "--as", "carrier-1", "13x", "--refuse",
                     "finance")
    assert code == 2 and "'13x' is not a phone number" in e and script.calls == []


@pytest.mark.parametrize("status,detail,exit_code,sentence", [
    (grpc.StatusCode.PERMISSION_DENIED,
     "NotAllowed: +8613812345678 is served by carrier-2, not carrier-1", 4,
     "refused: +8613812345678 is served by carrier-2, not carrier-1"),
    (grpc.StatusCode.INVALID_ARGUMENT, "UnknownIndustry: 'gambling' is not an industry", 2,
     "'gambling' is not an industry"),
    (grpc.StatusCode.FAILED_PRECONDITION, "Ineffective: no refusal to revoke", 4,
     "refused: no refusal to revoke"),
])
def test_what_the_node_refuses_is_its_sentence(
    stub: tuple[StubConnect, Script], folder: tuple[Path, Consortium],
    capsys: pytest.CaptureFixture[str], status: grpc.StatusCode, detail: str,
    exit_code: int, sentence: str,
) -> None:
    conn, script = stub
    script.fail = (status, detail)
    code, o, e = cli(capsys, folder, conn, "prefer", "--as", "carrier-1", "13812345678",
                     "--refuse", "finance")
    assert (code, o, e) == (exit_code, "", f"markex: {sentence}\n")


# ------------------------------------------------------------------ line register


@pytest.mark.parametrize("given,number,prefix", [
    ("400*", "+86400", True),
    ("+86400*", "+86400", True),
    ("9555*", "+869555", True),
    ("0755-8*", "+867558", True),
    ("0086 400*", "+86400", True),
    ("4001234567", "+864001234567", False),
    ("138-1234-5678", "+8613812345678", False),
])
def test_line_register_writes_numbers_and_prefixes_in_e164(
    stub: tuple[StubConnect, Script], folder: tuple[Path, Consortium],
    capsys: pytest.CaptureFixture[str], given: str, number: str, prefix: bool,
) -> None:
    conn, script = stub
    d, cons = folder
    code, o, e = cli(capsys, folder, conn, "line", "register", "--as", "carrier-1", given,
                     "--enterprise", "安家房产 Anjia Realty", "--uscc", USCC.lower(),
                     "--industry", "real-estate", "--json")
    assert (code, e) == (0, "")
    assert json.loads(o) == {"id": RECORD_ID.hex(), "issuer": "carrier-1", "seq": 10,
                             "index": 45}
    assert conn.dials == [("admin", Dial(d, _ep(cons, "carrier-1"), "carrier-1"))]
    [(method, m)] = script.calls
    assert method == "IssueMarketerLine"
    assert (m.number, m.prefix, m.enterprise, m.uscc, m.industry, m.deregisters) == (
        number, prefix, "安家房产 Anjia Realty", USCC, "real-estate", b"")


@pytest.mark.parametrize("number,extra,needle", [
    ("95*", [], "at least 3 digits"),
    ("*", [], "is not a number prefix"),
    ("4a0*", [], "is not a number prefix"),
    ("13x", [], "is not a phone number"),
    ("400*", ["--uscc", USCC[:17] + "A"], "its check character is R, not A"),
    ("400*", ["--uscc", "123"], "has 18 characters"),
    ("400*", ["--industry", "gambling"], "--industry 'gambling' is not an industry"),
    ("400*", ["--enterprise", " "], "enterprise is its name"),
])
def test_line_register_refuses_what_it_can_judge_alone(
    stub: tuple[StubConnect, Script], folder: tuple[Path, Consortium],
    capsys: pytest.CaptureFixture[str], number: str, extra: list[str], needle: str,
) -> None:
    conn, script = stub
    opts = {"--enterprise": "Acme", "--uscc": USCC, "--industry": "finance"}
    for k, v in zip(extra[::2], extra[1::2], strict=True):
        opts[k] = v
    argv = [x for kv in opts.items() for x in kv]
    code, o, e = cli(capsys, folder, conn, "line", "register", "--as", "carrier-1", number,
                     *argv)
    assert (code, o) == (2, "") and needle in e, e
    assert e.startswith("markex: ") and e.count("\n") == 1
    assert script.calls == []


# ------------------------------------------------------------------ line deregister


def test_line_deregister_by_id_or_prefix_resolved_at_the_acting_node(
    stub: tuple[StubConnect, Script], folder: tuple[Path, Consortium],
    capsys: pytest.CaptureFixture[str],
) -> None:
    conn, script = stub
    d, cons = folder
    full = bytes.fromhex("5e6f7a8b" + "cd" * 28)
    code, o, _ = cli(capsys, folder, conn, "line", "deregister", "--as", "carrier-1",
                     full.hex(), "--json")
    [(method, m)] = script.calls
    assert code == 0 and json.loads(o)["seq"] == 10
    assert method == "IssueMarketerLine" and m.deregisters == full
    assert (m.number, m.prefix, m.enterprise, m.uscc, m.industry) == ("", False, "", "", "")

    script.reset()
    conn.dials.clear()
    script.found = [full]
    code, _, _ = cli(capsys, folder, conn, "line", "deregister", "--as", "carrier-1",
                     "5E6F7A8B")
    assert code == 0
    assert [m for m, _ in script.calls] == ["FindRecords", "IssueMarketerLine"]
    assert script.calls[0][1].id_prefix == "5e6f7a8b"
    assert script.calls[1][1].deregisters == full
    assert conn.dials[0] == ("audit", Dial(d, _ep(cons, "carrier-1"), "carrier-1"))

    script.reset()
    script.found = [full, bytes.fromhex("5e6f7a8b" + "ee" * 28)]
    code, o, e = cli(capsys, folder, conn, "line", "deregister", "--as", "carrier-1",
                     "5e6f7a8b")
    assert (code, o) == (2, "") and "give more digits" in e
    assert [m for m, _ in script.calls] == ["FindRecords"]

    script.reset()
    code, _, e = cli(capsys, folder, conn, "line", "deregister", "--as", "carrier-1",
                     "5e6f7a8b99")
    assert code == 3 and "no record at carrier-1 has an id starting with 5e6f7a8b99" in e
    code, _, e = cli(capsys, folder, conn, "line", "deregister", "--as", "carrier-1", "5e6f")
    assert code == 2 and "is not a record id" in e
