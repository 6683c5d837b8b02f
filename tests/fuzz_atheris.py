"""Coverage-guided fuzzing (atheris / libFuzzer) of the byte parsers a peer reaches.

Standalone, not collected by pytest:

    .venv/bin/pip install atheris
    .venv/bin/python tests/fuzz_atheris.py record  -runs=200000
    .venv/bin/python tests/fuzz_atheris.py note    -max_total_time=300 corpus/note

Targets:
    record  Record.from_envelope, then verify_envelopes against a test consortium
    note    Note.parse, verify_note, Checkpoint.parse_body, open_checkpoint,
            count_cosignatures, parse_view_checkpoint

Only `ledger.errors.LedgerError` and `keys.KeysError` may escape; any other
exception is a crash and libFuzzer writes the input to crash-<sha1>.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports():
    from keys import KeysError
    from ledger import note
    from ledger import view as V
    from ledger.errors import LedgerError
    from ledger.log import verify_envelopes
    from ledger.record import Mark, Record

from tests.conftest import KEYS, NAME, NOW, make_consortium  # noqa: E402

TYPED = (LedgerError, KeysError)
CONS = make_consortium()
ORIGIN = f"{NAME}/log/carrier-1"
VERIFIER = note.Verifier.for_key(ORIGIN, KEYS["carrier-1"].public_bytes)
WITNESSES = {"markex-test/witness/institute": KEYS["institute"].public_bytes}


def fuzz_record(data: bytes) -> None:
    try:
        rec = Record.from_envelope(data)
    except TYPED:
        return
    assert rec.envelope == data
    with contextlib.suppress(*TYPED):
        verify_envelopes([data], CONS)


def fuzz_note(data: bytes) -> None:
    for fn in (
        lambda: note.Note.parse(data),
        lambda: note.verify_note(data, [VERIFIER]),
    ):
        with contextlib.suppress(*TYPED):
            fn()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    for fn in (
        lambda: note.Checkpoint.parse_body(text),
        lambda: note.open_checkpoint(text, VERIFIER),
        lambda: note.count_cosignatures(text, WITNESSES),
        lambda: V.parse_view_checkpoint(text),
    ):
        with contextlib.suppress(*TYPED):
            fn()


def seeds(target: str) -> list[bytes]:
    """Valid inputs to start from (written to the corpus folder, when one is given)."""
    if target == "record":
        r = Record.issue(KEYS["carrier-1"], "carrier-1", 1, b"", NOW,
                         Mark("+8613812345678", "fraud", 80, 3, NOW - 1000), consortium=NAME)
        return [r.envelope]
    cp = note.Checkpoint(ORIGIN, 7, bytes(range(32)))
    return [note.sign_checkpoint(cp, ORIGIN, KEYS["carrier-1"]).encode()]


TARGETS = {"record": fuzz_record, "note": fuzz_note}


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: {argv[0]} {{{'|'.join(TARGETS)}}} [libFuzzer options] [corpus dir]")
    target = argv[1]
    corpus = [a for a in argv[2:] if not a.startswith("-")]
    for d in corpus[:1]:
        Path(d).mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(seeds(target)):
            (Path(d) / f"seed-{i}").write_bytes(s)
    atheris.Setup([argv[0], *argv[2:]], TARGETS[target])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
