"""Fuzzing every parser and verifier that takes bytes from outside.

Each property feeds random and mutated inputs (mutations of real, validly
signed seeds) to one entry point and asserts that only the typed errors
escape: `ledger.errors.LedgerError` and `keys.KeysError` subclasses. The
escapes the fuzzers found have reproducers at the end of this file.

Run longer with FUZZ_EXAMPLES=20000 (examples per property).
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keys import ConfigError, KeysError
from keys.consortium import Consortium, Policy
from keys.layout import NodeConfig
from keys.tls import make_ca, make_node_cert, participant_from_cert
from ledger import merkle, note, numbers
from ledger import view as V
from ledger.errors import InvalidNumber, LedgerError, MalformedProof, ProofMismatch
from ledger.log import EquivocationProof, FeedState, NodeLedger, verify_envelopes
from ledger.numbers import normalize
from ledger.record import (
    UPHOLD,
    WITHDRAW,
    Correction,
    Mark,
    Reassignment,
    Record,
    _split_or_raise,
    canonical_split,
    record_id,
    signing_message,
)
from ledger.store import Store
from markex.v1 import record_pb2 as rpb
from tests.conftest import IDS, KEYS, NAME, NOW, make_consortium

TYPED = (LedgerError, KeysError)
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0"))


def fuzz(default: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=EXAMPLES or default,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


def typed(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args), or None when it raised a typed error. Anything else fails the test."""
    try:
        return fn(*args)
    except TYPED:
        return None


# ------------------------------------------------------------------ seeds

CONS = make_consortium()
NUMBER = "+8613812345678"


def _issue(issuer: str, seq: int, prev: bytes, payload: Any) -> Record:
    return Record.issue(KEYS[issuer], issuer, seq, prev, NOW, payload, consortium=NAME)


M1 = _issue("carrier-1", 1, b"", Mark(NUMBER, "fraud", 80, 3, NOW - 1000))
M2 = _issue("internet-1", 1, b"", Mark(NUMBER, "harassment", 60, 1, NOW - 500))
A1 = _issue("carrier-2", 1, b"", Correction(targets=(M1.id,), action=WITHDRAW, reason="ok"))
D1 = _issue("institute", 1, b"", Correction(appeal_id=A1.id, outcome=UPHOLD, reason="yes"))
R1 = _issue("carrier-1", 2, M1.id, Reassignment(NUMBER, NOW - 100))
M1B = _issue("carrier-1", 1, b"", Mark(NUMBER, "fraud", 81, 3, NOW - 1000))  # rival of M1
RECORDS = [M1, M2, A1, D1, R1]
ENVELOPES = [r.envelope for r in RECORDS]

LOG_ORIGIN = "markex-test/log/carrier-1"
WITNESS = "markex-test/witness/institute"
TREE = merkle.MemoryNodes()
for _i in range(13):
    TREE.append(merkle.leaf_hash(b"leaf %d" % _i))
CHECKPOINT = note.Checkpoint(LOG_ORIGIN, 13, TREE.root(), ("extension line",))
SIGNED_CP = note.sign_checkpoint(CHECKPOINT, LOG_ORIGIN, KEYS["carrier-1"])
COSIG_LINE = note.cosign_line(CHECKPOINT.body(), WITNESS, KEYS["institute"], 1_790_000_000)
COSIGNED_CP = note.add_signature_lines(SIGNED_CP, [COSIG_LINE])
VERIFIER = note.Verifier.for_key(LOG_ORIGIN, KEYS["carrier-1"].public_bytes)
WITNESSES = {WITNESS: KEYS["institute"].public_bytes}
NOTES = [SIGNED_CP, COSIGNED_CP]

VIEW = V.resolve(RECORDS, CONS)
VIEW_ORIGIN = V.view_origin(CONS.name, "carrier-1")
ENTRY = VIEW.entry(NUMBER)
assert ENTRY is not None
ENTRY_BYTES = ENTRY.encode()
PROOF_BYTES = VIEW.proof(NUMBER).encode()
ABSENT_PROOF = VIEW.proof("+8613912345678").encode()
VIEW_CP = V.sign_view_checkpoint(VIEW.checkpoint(VIEW_ORIGIN, NOW), KEYS["carrier-1"])
VIEW_VERIFIER = note.Verifier.for_key(VIEW_ORIGIN, KEYS["carrier-1"].public_bytes)
BITS = CONS.policy.view_bucket_bits

CONSORTIUM_JSON = CONS.to_json_bytes()
NODE_CONFIG = {
    "participant": "carrier-1",
    "consortium": "/srv/markex",
    "data_dir": "data",
    "signing_key": "signing.key",
    "tls_key": "tls.key",
    "tls_cert": "tls.pem",
    "ca_cert": "../ca/ca.pem",
    "member_listen": "127.0.0.1:7400",
    "public_listen": "0.0.0.0:7401",
    "metrics_listen": "127.0.0.1:0",
    "institute_key": base64.b64encode(KEYS["institute"].public_bytes).decode(),
}


def _cert_seeds() -> list[bytes]:
    from datetime import UTC, datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca_key, ca_cert = make_ca("fuzz CA", datetime(2026, 1, 1, tzinfo=UTC))
    _, cert = make_node_cert(ca_key, ca_cert, "carrier-1", ["127.0.0.1"],
                             datetime(2026, 1, 1, tzinfo=UTC))
    der = x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
    return [cert, der]


CERTS = _cert_seeds()


# ------------------------------------------------------------------ strategies

_INTERESTING = b"\x00\x01\x7f\x80\xff\n\x0a\x12 +=-\xe2\x80\x94"


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes]) -> bytes:
    """A seed with 1..6 byte-level edits: flips, sets, cuts, inserts, deletes, copies."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        n = len(data)
        op = draw(st.sampled_from(("flip", "set", "cut", "insert", "delete", "copy")))
        i = draw(st.integers(0, n))
        if op == "flip" and i < n:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and i < n:
            data[i] = draw(st.sampled_from(_INTERESTING) | st.integers(0, 255))
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 40))]
        elif op == "copy":
            j, k = draw(st.integers(i, n)), draw(st.integers(0, n))
            data[k:k] = data[i:j]
    return bytes(data)


def mutated_text(seeds: Sequence[str]) -> st.SearchStrategy[str]:
    """Mutations of UTF-8 text seeds, decoded back to text (invalid bytes replaced)."""
    return mutated([s.encode() for s in seeds]).map(lambda b: b.decode("utf-8", "replace"))


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)
LINES = st.lists(
    st.one_of(TEXT, st.sampled_from(["", "\u2014 ", LOG_ORIGIN, "13", "vector a=1"])),
    max_size=8,
).map("\n".join)
INTS = st.one_of(
    st.integers(-2, 40), st.integers(-(2**70), 2**70), st.sampled_from([2**63, 2**64 - 1, 2**64])
)
U64 = st.integers(0, 2**64 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)


@st.composite
def record_bodies(draw: st.DrawFn) -> bytes:
    """Protobuf-level Record bodies with every field drawn at random."""
    msg = rpb.Record(
        issuer=draw(st.sampled_from(IDS) | TEXT),
        seq=draw(st.sampled_from([0, 1, 2]) | U64),
        prev_id=draw(st.sampled_from([b"", M1.id]) | st.binary(max_size=40)),
        issued_at_ms=draw(st.sampled_from([NOW, 0, -1]) | I64),
    )
    numbers = st.sampled_from([NUMBER, "13812345678", "95555", "010-12345678"]) | TEXT
    kind = draw(st.sampled_from(("mark", "correction", "reassignment", "none")))
    if kind == "mark":
        msg.mark.CopyFrom(rpb.Mark(
            number=draw(numbers),
            category=draw(st.sampled_from(["fraud", "delivery", ""]) | TEXT),
            score=draw(st.integers(0, 120) | st.integers(0, 2**32 - 1)),
            reports=draw(st.integers(0, 2**32 - 1)),
            observed_at_ms=draw(I64),
            expires_at_ms=draw(st.just(0) | I64),
            evidence_digest=draw(st.binary(max_size=40)),
        ))
    elif kind == "correction":
        msg.correction.CopyFrom(rpb.Correction(
            targets=draw(st.lists(st.sampled_from([M1.id, M2.id]) | st.binary(max_size=40),
                                  max_size=70)),
            action=draw(st.integers(-(2**31), 2**31 - 1) | st.integers(0, 3)),
            category=draw(st.sampled_from(["", "fraud"]) | TEXT),
            reason=draw(TEXT),
            appeal_id=draw(st.sampled_from([b"", A1.id]) | st.binary(max_size=40)),
            outcome=draw(st.integers(-(2**31), 2**31 - 1) | st.integers(0, 3)),
        ))
    elif kind == "reassignment":
        msg.reassignment.CopyFrom(rpb.Reassignment(number=draw(numbers),
                                                    effective_at_ms=draw(I64)))
    return msg.SerializeToString() + draw(st.just(b"") | st.binary(max_size=12))


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    """Random bodies, signed for real (by a participant or not) or with junk."""
    body = draw(record_bodies())
    how = draw(st.sampled_from(("issuer", "other", "junk")))
    if how == "junk":
        sig = draw(st.binary(min_size=64, max_size=64) | st.binary(max_size=80))
    else:
        try:
            issuer = rpb.Record.FromString(body).issuer
        except Exception:
            issuer = ""
        pid = issuer if how == "issuer" and issuer in KEYS else draw(st.sampled_from(IDS))
        sig = KEYS[pid].sign(signing_message(NAME, body))
    return rpb.SignedRecord(body=body, signature=sig).SerializeToString()


ANY_ENVELOPE = st.one_of(st.binary(max_size=600), mutated(ENVELOPES), envelopes())

# ------------------------------------------------------------------ records


@fuzz(300)
@given(ANY_ENVELOPE)
def test_record_from_envelope(env: bytes) -> None:
    rec = typed(Record.from_envelope, env)
    if rec is not None:
        assert rec.envelope == env and rec.id == record_id(env)
        assert Record.from_envelope(rec.envelope) == rec
    typed(verify_envelopes, [env], CONS)


@st.composite
def framed_envelopes(draw: st.DrawFn) -> bytes:
    """Envelopes framed by hand around the varint and size boundaries: bodies of
    0..2 bytes and about 127, 128, 16383, 16384 bytes; minimal, padded and
    wrong length varints; signatures of 63, 64, 65 bytes; fields swapped,
    repeated or followed by more."""
    def varint(n: int, pad: int = 0) -> bytes:
        """n as a varint, minimal or with `pad` needless bytes at the end."""
        out = bytearray()
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        out.append(n)
        for _ in range(pad):
            out[-1] |= 0x80
            out.append(0)
        return bytes(out)

    size = draw(st.sampled_from([0, 1, 2, 126, 127, 128, 129, 16383, 16384, 16385]))
    body = draw(st.binary(min_size=size, max_size=size)) if size < 200 else bytes(size)
    length = size + draw(st.sampled_from([0, 0, 0, -1, 1]))
    head = b"\x0a" + varint(max(length, 0), draw(st.sampled_from([0, 0, 1, 2])))
    sig_len = draw(st.sampled_from([64, 64, 63, 65, 0]))
    sig = b"\x12" + varint(sig_len) + bytes(sig_len)
    parts = [head + body if size or draw(st.booleans()) else b"", sig]
    if draw(st.booleans()):
        parts.append(draw(st.sampled_from([b"", sig, b"\x0a\x00", b"\x18\x01", b"\x00"])))
    if draw(st.booleans()):
        parts[:2] = parts[1::-1]
    return b"".join(parts)


@fuzz(400)
@given(st.one_of(ANY_ENVELOPE, framed_envelopes()))
def test_canonical_split_agrees_with_protobuf(env: bytes) -> None:
    """The envelope read without protobuf accepts what the protobuf parse
    and re-serialization accept, and splits it the same way."""
    fast = canonical_split(env)
    assert fast == typed(_split_or_raise, env)


def test_canonical_split_at_varint_boundaries() -> None:
    for size in (0, 1, 127, 128, 129, 16383, 16384, 16385, 60_000):
        body, sig = bytes([size % 251]) * size, bytes(range(64))
        env = rpb.SignedRecord(body=body, signature=sig).SerializeToString()
        assert canonical_split(env) == _split_or_raise(env) == (body, sig)
        assert canonical_split(env + b"\x00") is None
        assert canonical_split(env[:-1]) is None


@fuzz(100)
@given(st.binary(min_size=1, max_size=70_000))
def test_record_from_envelope_any_size(env: bytes) -> None:
    typed(Record.from_envelope, env, 4096)


@pytest.fixture(scope="module")
def fuzz_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeLedger]:
    """One ledger for the module: hypothesis calls a test many times."""
    led = NodeLedger(Store(tmp_path_factory.mktemp("fuzz") / "db"), CONS, "carrier-1",
                     KEYS["carrier-1"])
    yield led
    led.close()


@fuzz(100)
@given(envs=st.lists(ANY_ENVELOPE, max_size=6))
def test_ledger_submit_outcomes_are_typed(fuzz_ledger: NodeLedger, envs: list[bytes]) -> None:
    """The whole acceptance path: every outcome is a status or a typed error."""
    out = fuzz_ledger.submit(envs + [M1.envelope], NOW)
    for o in out.outcomes:
        assert o.status in ("accepted", "duplicate", "buffered", "rejected", "equivocation")
        assert o.error is None or isinstance(o.error, LedgerError)


@fuzz(300)
@given(
    st.one_of(st.binary(max_size=300), mutated([EquivocationProof(M1.envelope,
                                                                    M1B.envelope).encode()]))
)
def test_equivocation_proof_decode_and_verify(data: bytes) -> None:
    proof = typed(EquivocationProof.decode, data)
    if proof is not None:
        typed(proof.verify, CONS)


@fuzz(300)
@given(ANY_ENVELOPE | st.just(M1.envelope), ANY_ENVELOPE | mutated([M1B.envelope]))
def test_equivocation_proof_verify(first: bytes, second: bytes) -> None:
    got = typed(EquivocationProof(first, second).verify, CONS)
    if got is not None:
        a, b = got
        assert (a.issuer, a.seq) == (b.issuer, b.seq) and a.id != b.id


@fuzz(300)
@given(
    st.binary(max_size=80)
    | st.builds(
        lambda seq, head, frozen, at: FeedState("f", seq, head, frozen, at).encode(),
        st.integers(1, 2**64 - 1),
        st.binary(min_size=32, max_size=32),
        st.none() | st.integers(0, 2**64 - 2),
        st.integers(0, 2**64 - 1),
    )
)
def test_feed_state_decode(data: bytes) -> None:
    """Stored feed state: 56 bytes (or the older 48) decode, anything else is
    StorageFailure; a decoded state with a head re-encodes to its bytes."""
    st_ = typed(FeedState.decode, "f", data)
    if st_ is None:
        assert len(data) not in (48, 56)
        return
    if st_.seq and len(data) == 56:
        assert st_.encode() == data


POLICY_FIELDS = sorted(Policy().to_json())


@fuzz(300)
@given(
    st.dictionaries(
        st.sampled_from(POLICY_FIELDS),
        st.integers(-5, 2**40) | st.booleans() | st.sampled_from([0, 1, 2, 24, 25, 65536, 65537]),
        max_size=6,
    )
)
def test_policy_from_json(obj: dict[str, Any]) -> None:
    """Any policy object is a Policy or a ConfigError; one that loads is
    within every range (built again from its values, it loads)."""
    p = typed(Policy.from_json, obj)
    if p is not None:
        assert Policy(**p.to_json()) == p
        assert p.cosign_quorum >= 1 and p.max_envelope_bytes <= 64 * 1024


# ------------------------------------------------------------------ notes and checkpoints

NOTE_INPUT = st.one_of(
    TEXT, LINES, mutated_text(NOTES), mutated([n.encode() for n in NOTES]), st.binary(max_size=200)
)


@fuzz(400)
@given(NOTE_INPUT)
def test_note_parse_and_verify(data: str | bytes) -> None:
    parsed = typed(note.Note.parse, data)
    if parsed is not None:
        text = data if isinstance(data, str) else data.decode()
        assert parsed.to_text() == text  # strict parse: exact round trip
        typed(note.Checkpoint.parse_body, parsed.text)
        typed(note.count_cosignatures, text, WITNESSES)
    typed(note.verify_note, data, [VERIFIER])


@fuzz(300)
@given(st.one_of(LINES, mutated_text([CHECKPOINT.body()]), TEXT))
def test_checkpoint_parse_body(text: str) -> None:
    cp = typed(note.Checkpoint.parse_body, text)
    if cp is not None:
        assert cp.body() == text


@fuzz(300)
@given(st.one_of(mutated_text(NOTES), LINES))
def test_open_checkpoint(text: str) -> None:
    cp = typed(note.open_checkpoint, text, VERIFIER)
    if cp is not None:
        assert cp.origin == LOG_ORIGIN


@fuzz(300)
@given(
    st.one_of(TEXT, mutated_text([COSIG_LINE, SIGNED_CP.split("\n\n")[1]])),
    st.one_of(st.just(CHECKPOINT.body()), mutated_text([CHECKPOINT.body()])),
)
def test_signature_lines_and_cosignatures(line: str, body: str) -> None:
    typed(note.NoteSignature.from_line, line)
    typed(note.verify_cosignature, body, line, WITNESS, KEYS["institute"].public_bytes)
    typed(note.add_signature_lines, SIGNED_CP, [line])


@fuzz(300)
@given(st.one_of(TEXT, mutated_text([VERIFIER.to_string(),
                                     note.cosigner_vkey(WITNESS, KEYS["institute"].public_bytes)])))
def test_verifier_key_strings(vkey: str) -> None:
    typed(note.Verifier.from_string, vkey)
    typed(note.parse_cosigner_vkey, vkey)


# ------------------------------------------------------------------ Merkle proofs

HASHES = st.lists(st.binary(min_size=0, max_size=40) | st.binary(min_size=32, max_size=32),
                  max_size=70)
HASH = st.binary(min_size=32, max_size=32) | st.binary(max_size=40)


@fuzz(400)
@given(HASH, INTS, INTS, HASHES, HASH)
def test_verify_inclusion_random(leaf: bytes, index: int, size: int, proof: list[bytes],
                                 root: bytes) -> None:
    typed(merkle.verify_inclusion, leaf, index, size, proof, root)


@fuzz(400)
@given(INTS, INTS, HASH, HASH, HASHES)
def test_verify_consistency_random(old: int, new: int, old_root: bytes, new_root: bytes,
                                   proof: list[bytes]) -> None:
    typed(merkle.verify_consistency, old, new, old_root, new_root, proof)


BIG = merkle.MemoryNodes()
for _i in range(70):
    BIG.append(merkle.leaf_hash(b"%d" % _i))


@st.composite
def bent(draw: st.DrawFn, proof: list[bytes]) -> list[bytes]:
    """A proof changed in one way: extra, missing, short, long or flipped hashes."""
    p = list(proof)
    op = draw(st.sampled_from(("extra", "drop", "short", "long", "flip", "swap")))
    if op == "extra":
        p.insert(draw(st.integers(0, len(p))), draw(st.binary(min_size=32, max_size=32)))
    elif op == "drop" and p:
        del p[draw(st.integers(0, len(p) - 1))]
    elif op == "short" and p:
        i = draw(st.integers(0, len(p) - 1))
        p[i] = p[i][: draw(st.integers(0, 31))]
    elif op == "long" and p:
        i = draw(st.integers(0, len(p) - 1))
        p[i] = p[i] + draw(st.binary(min_size=1, max_size=8))
    elif op == "flip" and p:
        i = draw(st.integers(0, len(p) - 1))
        b = bytearray(p[i])
        b[draw(st.integers(0, 31))] ^= 1 << draw(st.integers(0, 7))
        p[i] = bytes(b)
    elif op == "swap" and len(p) > 1 and p[0] != p[-1]:
        p[0], p[-1] = p[-1], p[0]
    else:
        p.append(bytes(32))
    return p


@fuzz(300)
@given(st.data())
def test_bent_inclusion_proof_never_verifies(data: st.DataObject) -> None:
    size = data.draw(st.integers(1, 70))
    index = data.draw(st.integers(0, size - 1))
    proof = merkle.inclusion_proof(BIG, index, size)
    root = merkle.root_at(BIG, size)
    leaf = BIG.get_node(0, index)
    merkle.verify_inclusion(leaf, index, size, proof, root)
    p = data.draw(bent(proof))
    with pytest.raises((MalformedProof, ProofMismatch)):
        merkle.verify_inclusion(leaf, index, size, p, root)


@fuzz(300)
@given(st.data())
def test_bent_consistency_proof_never_verifies(data: st.DataObject) -> None:
    new = data.draw(st.integers(2, 70))
    old = data.draw(st.integers(1, new - 1))
    proof = merkle.consistency_proof(BIG, old, new)
    r_old, r_new = merkle.root_at(BIG, old), merkle.root_at(BIG, new)
    merkle.verify_consistency(old, new, r_old, r_new, proof)
    p = data.draw(bent(proof))
    with pytest.raises((MalformedProof, ProofMismatch)):
        merkle.verify_consistency(old, new, r_old, r_new, p)


# ------------------------------------------------------------------ the view


@fuzz(400)
@given(st.one_of(st.binary(max_size=400), mutated([PROOF_BYTES, ABSENT_PROOF])))
def test_view_proof_decode(data: bytes) -> None:
    p = typed(V.ViewProof.decode, data)
    if p is not None:
        assert p.encode() == data  # nothing trailing, nothing ignored


JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                      st.floats(allow_nan=True), TEXT)
JSON = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12)


def _substitute(obj: Any, path: list[int], value: Any) -> Any:
    """obj with the node that `path` picks (indexes mod the container size) replaced."""
    if not path or not isinstance(obj, dict | list) or not obj:
        return value
    if isinstance(obj, dict):
        keys = sorted(obj)
        k = keys[path[0] % len(keys)]
        return {**obj, k: _substitute(obj[k], path[1:], value)}
    i = path[0] % len(obj)
    return obj[:i] + [_substitute(obj[i], path[1:], value)] + obj[i + 1 :]


def json_mutations(seed: bytes, compact: bool) -> st.SearchStrategy[bytes]:
    base = json.loads(seed)

    def dump(obj: Any) -> bytes:
        if compact:
            return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
        return json.dumps(obj, indent=2, ensure_ascii=False).encode()

    return st.builds(
        lambda path, value, drop: dump(_substitute(base, path, value) if not drop else
                                       _substitute(base, path, {})),
        st.lists(st.integers(0, 50), min_size=1, max_size=5), JSON, st.booleans(),
    )


@fuzz(400)
@given(st.one_of(st.binary(max_size=300), mutated([ENTRY_BYTES]),
                 json_mutations(ENTRY_BYTES, compact=True)))
def test_entry_decode(data: bytes) -> None:
    e = typed(V.Entry.decode, data)
    if e is not None:
        assert e.encode() == data


@fuzz(300)
@given(st.one_of(LINES, mutated_text([VIEW.checkpoint(VIEW_ORIGIN, NOW).body()])))
def test_parse_view_checkpoint(text: str) -> None:
    vc = typed(V.parse_view_checkpoint, text)
    if vc is not None:
        assert vc.body() == text


@fuzz(300)
@given(st.one_of(mutated_text([VIEW_CP]), LINES))
def test_open_view_checkpoint(text: str) -> None:
    typed(V.open_view_checkpoint, text, VIEW_VERIFIER)


@fuzz(250)
@given(
    st.sampled_from([NUMBER, "+8613912345678"]) | TEXT,
    st.none() | st.just(ENTRY_BYTES) | mutated([ENTRY_BYTES]),
    mutated([PROOF_BYTES, ABSENT_PROOF]) | st.sampled_from([PROOF_BYTES, ABSENT_PROOF]),
    st.just(VIEW.root()) | HASH,
    st.just(BITS) | st.integers(-3, 40),
)
def test_verify_lookup(number: str, entry: bytes | None, proof: bytes, root: bytes,
                       bits: int) -> None:
    """Whatever is mutated, only true answers verify: NUMBER's own entry, or
    the absence of a number the view does not hold, or any number's absence
    from the empty view (its root is EMPTY: true of every number) (the fifth
    argument, proof version 1's bucket bits, is ignored)."""
    from ledger.viewtree import EMPTY

    try:
        got = V.verify_lookup(number, entry, proof, root, bits)
    except TYPED:
        return
    if root == EMPTY and got is None and entry is None:
        return
    assert root == VIEW.root()
    if got is not None:
        assert entry == ENTRY_BYTES and number == NUMBER
    else:
        assert entry is None and VIEW.entry_bytes(number) is None


# ------------------------------------------------------------------ configuration


@fuzz(300)
@given(st.one_of(st.binary(max_size=300), mutated([CONSORTIUM_JSON]),
                 json_mutations(CONSORTIUM_JSON, compact=False)))
def test_consortium_from_json_bytes(raw: bytes) -> None:
    typed(Consortium.from_json_bytes, raw)


_CONFIG_VALUES = st.one_of(TEXT, JSON_LEAF, st.sampled_from(["", "a:1", "[::1]:0", "/", "\x00"]))


@fuzz(400)
@given(st.one_of(
    st.dictionaries(st.sampled_from(sorted(NODE_CONFIG)) | TEXT, _CONFIG_VALUES, max_size=12),
    st.builds(lambda k, v: {**NODE_CONFIG, k: v}, st.sampled_from(sorted(NODE_CONFIG)),
              _CONFIG_VALUES),
    st.builds(lambda k: {x: y for x, y in NODE_CONFIG.items() if x != k},
              st.sampled_from(sorted(NODE_CONFIG))),
))
def test_node_config_from_dict(obj: dict[str, Any]) -> None:
    typed(NodeConfig.from_dict, obj, Path("/srv/markex/carrier-1"))


_TOML = "".join(f"{k} = {json.dumps(v)}\n" for k, v in NODE_CONFIG.items())


@fuzz(200)
@given(st.one_of(st.binary(max_size=300), mutated([_TOML.encode()])))
def test_node_config_load(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "node.toml"
        path.write_bytes(raw)
        typed(NodeConfig.load, path)


@fuzz(300)
@given(st.one_of(st.binary(max_size=300), mutated(CERTS)))
def test_participant_from_cert(raw: bytes) -> None:
    typed(participant_from_cert, raw)


def test_a_certificate_of_an_unknown_x509_version_is_a_config_error() -> None:
    """Found by the fuzz run above in CI: a version field of 3 (v4) raised
    cryptography's InvalidVersion, which is not a ValueError."""
    der = next(c for c in CERTS if c[:1] == b"0")
    at = der.index(b"\xa0\x03\x02\x01\x02")       # [0] EXPLICIT INTEGER 2 (v3)
    bent = der[:at + 4] + b"\x03" + der[at + 5:]
    with pytest.raises(ConfigError, match="not an X.509 certificate"):
        participant_from_cert(bent)


@fuzz(200)
@given(st.one_of(TEXT, st.from_regex(r"\+?[0-9 ()\-]{0,24}", fullmatch=True)))
def test_normalize_number(raw: str) -> None:
    try:
        out = normalize(raw)
    except InvalidNumber:
        return
    assert out.startswith("+") and out[1:].isdigit() and normalize(out) == out


def _library_normalize(raw: str) -> str:
    """What normalize answers without its E.164 fast path: libphonenumber's."""
    try:
        return numbers._normalize.__wrapped__(raw)
    except InvalidNumber as e:
        return f"InvalidNumber: {e}"


# E.164 candidates for China, biased to the prefixes of real number ranges.
CN_E164 = st.builds(
    lambda head, tail, n: ("+86" + head + tail)[: 3 + n],
    st.sampled_from(["1", "10", "13", "15", "17", "179", "18", "2", "21", "400", "800", "95"]),
    st.text("0123456789", min_size=0, max_size=16),
    st.integers(min_value=2, max_value=17),
)


@fuzz(500)
@given(st.one_of(CN_E164, st.from_regex(r"\+86[0-9]{0,18}", fullmatch=True)))
def test_e164_fast_path_agrees_with_the_library(raw: str) -> None:
    fast = numbers._e164_fast(raw)
    if fast is not None:
        assert fast == raw == _library_normalize(raw)


@fuzz(300)
@given(st.lists(st.one_of(CN_E164, st.from_regex(r"\+?86[0-9]{0,18}", fullmatch=True),
                          st.text(max_size=20)), max_size=8))
def test_normalize_each_is_normalize_of_each(raws: list[str]) -> None:
    """The screen's batch path (normalize_each, its fast path inlined) gives
    for every number what normalize gives, or the same error."""
    for raw, got in zip(raws, numbers.normalize_each(raws), strict=True):
        try:
            want: object = numbers.normalize(raw)
        except numbers.InvalidNumber as e:
            assert isinstance(got, numbers.InvalidNumber) and str(got) == str(e), raw
        else:
            assert got == want, raw


def test_e164_fast_path_sweep() -> None:
    """Every 1-to-4-digit prefix, filled out to every length at random: where
    the fast path answers, libphonenumber gives the same number; and it does
    answer for ordinary mobile and fixed-line numbers."""
    import random

    rng = random.Random(7)
    answered = 0
    for prefix in range(1, 10_000):
        p = str(prefix)
        for n in range(max(2, len(p)), 18, 3):
            raw = "+86" + (p + "".join(rng.choices("0123456789", k=n)))[:n]
            fast = numbers._e164_fast(raw)
            if fast is not None:
                answered += 1
                assert fast == _library_normalize(raw), raw
    assert answered > 1000
    for raw in ("+8613812345678", "+861012345678", "+864001234567", "+8618912345678"):
        assert numbers._e164_fast(raw) == raw == _library_normalize(raw)
    for raw in ("+86 138 1234 5678", "13812345678", "+860101234567", "+8612345678901234"):
        assert numbers._e164_fast(raw) is None


# ------------------------------------------------------------------ seeds are sound

def test_seeds_are_valid() -> None:
    """The mutations start from real, valid inputs."""
    assert verify_envelopes(ENVELOPES, CONS) == RECORDS
    EquivocationProof(M1.envelope, M1B.envelope).verify(CONS)
    assert note.open_checkpoint(COSIGNED_CP, VERIFIER) == CHECKPOINT
    assert note.count_cosignatures(COSIGNED_CP, WITNESSES) == [WITNESS]
    assert V.verify_lookup(NUMBER, ENTRY_BYTES, PROOF_BYTES, VIEW.root(), BITS) == ENTRY
    assert V.verify_lookup("+8613912345678", None, ABSENT_PROOF, VIEW.root(), BITS) is None
    assert V.open_view_checkpoint(VIEW_CP, VIEW_VERIFIER).root == VIEW.root()
    assert Consortium.from_json_bytes(CONSORTIUM_JSON).name == CONS.name
    assert NodeConfig.from_dict(NODE_CONFIG, Path("/srv/markex/carrier-1")).participant == (
        "carrier-1"
    )
    assert participant_from_cert(CERTS[0]) == participant_from_cert(CERTS[1]) == "carrier-1"


# ------------------------------------------------------------------ former escapes
# Each was found by the fuzzers as an untyped error and is now a typed one.

_NC = Path("/srv/markex/carrier-1")


@pytest.mark.parametrize("raw", [b'{"format": ' + b"1" * 5000 + b"}", b"[" * 100_000],
                         ids=["5000-digit-int", "deep-nesting"])
def test_consortium_json_limits_are_config_errors(raw: bytes) -> None:
    with pytest.raises(ConfigError):
        Consortium.from_json_bytes(raw)


def test_entry_json_nesting_is_bad_input() -> None:
    from ledger.errors import BadInput

    with pytest.raises(BadInput):
        V.Entry.decode(b"[" * 100_000)


@pytest.mark.parametrize("key,value", [("institute_key", "\u00e9"), ("data_dir", "a\x00b"),
                                       ("member_listen", "host:\u00b2")],
                         ids=["non-ascii-base64", "nul-in-path", "superscript-port"])
def test_node_config_bad_values_are_config_errors(key: str, value: str) -> None:
    with pytest.raises(ConfigError):
        NodeConfig.from_dict({**NODE_CONFIG, key: value}, _NC)


def test_node_config_toml_digit_limit_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_bytes(b"x = 1" + b"0" * 5000 + b"\n")
    with pytest.raises(ConfigError):
        NodeConfig.load(path)


def _garbled_san(der: bytes) -> bytes:
    """The DER certificate with its SAN extension's SEQUENCE tag turned into a SET."""
    at = der.index(b"U\x1d\x11\x04") + 5  # OID 2.5.29.17, OCTET STRING, its length
    assert der[at] == 0x30
    return der[:at] + b"\x31" + der[at + 1 :]


def test_garbled_certificate_extension_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        participant_from_cert(_garbled_san(CERTS[1]))


def test_garbled_certificate_subject_is_a_config_error() -> None:
    """The subject's CN with an ASN.1 tag no string type has (13, not
    UTF8String's 12): the name is parsed lazily, and raised ValueError."""
    der = CERTS[1]
    at = der.index(b"U\x04\x03\x0c\tcarrier-1") + 3
    with pytest.raises(ConfigError, match="subject"):
        participant_from_cert(der[:at] + b"\x0d" + der[at + 1 :])
