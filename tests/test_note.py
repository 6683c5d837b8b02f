"""Signed notes, checkpoints and cosignatures: vectors, golden bytes, mutations, properties.

Vector sources (facts copied, no code):
- golang.org/x/mod sumdb/note/note.go and note_test.go: the PeterNeumann and
  EnochRoot keys, the signed note and both signature lines, the malformed notes.
- transparency-dev/formats log/note_test.go: the Log / Known key pairs, the
  sum.golang.org checkpoint and the monkeys / bananas / witness signatures of it.
- C2SP signed-note (example.com/foo key and note, the quasimodo note),
  tlog-checkpoint and tlog-cosignature (the witness.example.com/w1 line).
- A real arche2025h1.staging.ct.transparency.dev checkpoint with its log
  signature, an RFC 6962 (type 0x05) signature and four witness cosignatures,
  with the witnesses' published type-0x04 verifier keys.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keys.signing import SigningKey
from ledger.errors import BadSignature, LedgerError, MalformedConfig, MalformedNote
from ledger.note import (
    MAX_SIGNATURES,
    Checkpoint,
    NoKnownSignature,
    Note,
    NoteSignature,
    Verifier,
    add_signature_lines,
    cosign_line,
    cosignature_key_id,
    cosignature_timestamp,
    cosigner_vkey,
    count_cosignatures,
    open_checkpoint,
    parse_cosigner_vkey,
    sign_checkpoint,
    sign_note,
    verify_cosignature,
    verify_note,
)

EM = "\u2014"

# --- golang.org/x/mod sumdb/note -------------------------------------------

PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    f"{EM} PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    f"{EM} EnochRoot "
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)

# --- transparency-dev/formats log/note_test.go -----------------------------

FORMATS_KEYS = [
    (
        "PRIVATE+KEY+Log+2271c621+AdEIq9FLRQni54Wg68T96VJO+iayOaulswav2DUMKgvQ",
        "Log+2271c621+AemuH5ooBpEPcr+W8onrjA1NfuzBVHdezakU81Ekarvs",
    ),
    (
        "PRIVATE+KEY+Known+451c786d+AQPRoE2+Z+Ed1HaHBA9F/FfracvcZ2rDU39kCecMEoci",
        "Known+451c786d+AXAQ0T7lbwuY4ABJ9/MYY9bWV3hmSyOGVt2x42NkmdUH",
    ),
    (
        "PRIVATE+KEY+KnownAgain+4893b26c+ARhZda/l25zjGZswYLDZsLNRzNpmv5wYTN9IoTr1OJ2+",
        "KnownAgain+4893b26c+AQ+LR7BFF/F/dkpIBjBpSvT0crkteizuUkavAoGeaYMj",
    ),
    (
        "PRIVATE+KEY+Unknown+fdbb2e08+Aav2knTC6orbhXX8pMWuNiWgO+Wwk2DB+h1eU2Q1W1nU",
        "Unknown+fdbb2e08+AWgRIYZ+8x1Vl+1Q+sR8zciNHiYI1SdlBjNw+RV0rots",
    ),
]
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_NOTE = (
    "go.sum database tree\n6476701\nmb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n\n"
    f"{EM} sum.golang.org "
    "Az3grsLX85Gz+s1SiTbgkuqxgItqFq7gsMUEyVnrsa9LM7Us9S+1xbFIGu95949rj4nPRYfvimWEPWL+o3GeoWwOoAw=\n"
)
SUMDB_EXTRA = [
    (
        "monkeys+db4d9f7e+AULaJMvTtDLHPUcUrjdDad9vDlh/PTfC2VV60JUtCfWT",
        f"{EM} monkeys 202ffh9ve46Mqbhuyb4wnC2Pwdan5EsXQym/tF1ggXJqhjGosU4T5intH4iKMRgDLxrnX"
        "uIjRaU2NbvAnaepM6Y+8ww=",
    ),
    (
        "bananas+cf639f13+AaPjhFnPCQnid/Ql32KWhmh+uk72FVRfK+2DLmO3BI3M",
        f"{EM} bananas z2OfE+2bbsBZ7NLgfuslc0v7NFW2QyexJ7fhePpoL2N/P7N/COd5S+JNHbQEAlYzz2C5s"
        "g0E+x/MggS1mDR6t3/9rQw=",
    ),
    (
        "witness+f13a86db+AdYV1Ztajd9BvyjP2HgpwrqYL6TjOwIjGMOq8Bu42xbN",
        f"{EM} witness 8TqG25yWGFLdT7WPf/WoyeG3LwqtkXP+8S3yykOVm6EMh4hPgCke6eSVPU4BdtXNMPJBX"
        "KF+UpDbGgCdcpR8SVSoqAU=",
    ),
]

# --- C2SP -------------------------------------------------------------------

SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n"
    f"{EM} example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)
QUASIMODO_NOTE = (
    "Ognuno sta solo sul cuor della terra\n"
    "trafitto da un raggio di sole:\n"
    "\n"
    "ed è subito sera.\n"
    "\n"
    f"{EM} quasimodo.example/salvatore "
    "NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n"
)
SPEC_COSIGNATURE_LINE = (
    f"{EM} witness.example.com/w1 "
    "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIU"
    "BkBIfZ+qnA==\n"
)

# --- a real witnessed checkpoint -------------------------------------------

ARCHE_VKEY = (
    "arche2025h1.staging.ct.transparency.dev+ba2f06c0+AU0vHmlGCS/PdN8b2OaGmKprLI8HKM+dJ472xgFYh15f"
)
ARCHE_NOTE = (
    "arche2025h1.staging.ct.transparency.dev\n"
    "1432088532\n"
    "U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=\n"
    "\n"
    f"{EM} arche2025h1.staging.ct.transparency.dev zTM8sQAAAZ5W0WdjBAMARjBEAiBjW5IQf9pvsYLfQFX6"
    "hoGREPMHbdQ3urbllzalApkptQIgIpwtEroeW2BXaHAI4kJXFbon5Ch9MNL5zRNZ55lvGt0=\n"
    f"{EM} arche2025h1.staging.ct.transparency.dev ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/27lefwh"
    "UkzbC3NygNI75MdhL1bfTW9g8Ei59RA23oHP7Ry1k3ZFWwQ=\n"
    f"{EM} transparency.dev/DEV:witness-little-garden 2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP8nd8/KY"
    "TzwZ2rhIgcqoXHAwVkjZr4AscylP3v7sEodkRAErumC2q44vdgJY096st5BQ==\n"
    f"{EM} witness1.smartit.nu/witness1 pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+"
    "/iEcxZ75W3u5hNI7TOQtmJbqmNWVuE0tgh0XwzdZsDsUAQ==\n"
    f"{EM} remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIo"
    "bWX9sXTynk5XeU/zZ0WBxtqB0DrAWfBw==\n"
    f"{EM} witness.stagemole.eu Z/euoAAAAABqEiEgw0i+7g2ENfDAWHmtRzCfKTHSDwYDJA2NmKeGi9Y8FtEyOUvVr"
    "+AJmIY/2TUFucgKi7lI7cUiOvKFYe/TmN9DAg==\n"
)
ARCHE_WITNESS_VKEYS = [
    "transparency.dev/DEV:witness-little-garden+d8042a87+BCtusOxINQNUTN5Oj8HObRkh2yHf/MwYaGX4CPdiVEPM",
    "witness1.smartit.nu/witness1+a48c820f+BPSFWg9G6KPiO7QPryYO5Xq4oYJJ+kAvLKLSimDhoxMO",
    "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
    "witness.stagemole.eu+67f7aea0+BEqSG3yu9YrmcM3BHvQYTxwFj3uSWakQepafafpUqklv",
]
# A published witness that did not cosign this checkpoint.
RING_ANY_BELLS_VKEY = (
    "staging.witness.transparency.goog/ring-any-bells+2e1a8dc9+"
    "BG5JTpLc3FJtwzgh1Uv+Qelz9qeOH2bfWjS1s0s+y4rL"
)

# --- golden bytes from a fixed test key --------------------------------------

GOLDEN_SEED = bytes(range(32))
GOLDEN_ORIGIN = "markex/v1/log/carrier-1"
GOLDEN_WITNESS = "witness.markex/institute"
GOLDEN_TIME = 1700000000
GOLDEN_CHECKPOINT = Checkpoint(GOLDEN_ORIGIN, 3, bytes(range(32)))
GOLDEN_VKEY = "markex/v1/log/carrier-1+9ab624ff+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"
GOLDEN_COSIGNER_VKEY = (
    "witness.markex/institute+017548e3+BAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"
)
GOLDEN_NOTE = (
    "markex/v1/log/carrier-1\n"
    "3\n"
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
    "\n"
    f"{EM} markex/v1/log/carrier-1 "
    "mrYk/01nMdsftV+4pOovATenYs2EeSx66bshECrLb9RXfoAD917G2WHKhOZcuLXbyXwb66OIyXSzNnLp6SjF8MmaPAQ=\n"
)
GOLDEN_COSIGNATURE = (
    f"{EM} witness.markex/institute "
    "AXVI4wAAAABlU/EAyoS7f14XlTABkmOYVwUw+RFj+cvdMf2/qUQlwzF8j89npM2cIdSA7sV9PMDoKoLl7tOHeqB2mdDk"
    "9XW3ugmjDQ==\n"
)


def seed_of(skey: str) -> bytes:
    """The 32-byte Ed25519 seed inside a Go "PRIVATE+KEY+name+id+base64" string."""
    material = base64.b64decode(skey.split("+", 4)[4])
    assert material[0] == 0x01 and len(material) == 33
    return material[1:]


@pytest.fixture(scope="module")
def golden_key() -> SigningKey:
    return SigningKey.from_seed(GOLDEN_SEED)


@pytest.fixture(scope="module")
def golden_verifier(golden_key: SigningKey) -> Verifier:
    return Verifier.for_key(GOLDEN_ORIGIN, golden_key.public_bytes)


# === known answers: Go =======================================================


def test_go_verifier_key_parses_and_round_trips():
    v = Verifier.from_string(PETER_VKEY)
    assert v.name == "PeterNeumann"
    assert v.key_id == bytes.fromhex("c74f20a3")
    assert v.to_string() == PETER_VKEY
    assert Verifier.for_key("PeterNeumann", v.public_key) == v


def test_go_key_id_from_private_key():
    key = SigningKey.from_seed(seed_of(PETER_SKEY))
    assert Verifier.for_key("PeterNeumann", key.public_bytes).to_string() == PETER_VKEY


@pytest.mark.parametrize(("skey", "vkey"), FORMATS_KEYS)
def test_formats_key_pairs(skey: str, vkey: str):
    name = skey.split("+")[2]
    key = SigningKey.from_seed(seed_of(skey))
    assert Verifier.for_key(name, key.public_bytes).to_string() == vkey


def test_sign_reproduces_go_bytes():
    key = SigningKey.from_seed(seed_of(PETER_SKEY))
    assert sign_note(GO_TEXT, "PeterNeumann", key) == GO_TEXT + "\n" + PETER_SIG


def test_open_go_note_one_known_one_unknown():
    peter = Verifier.from_string(PETER_VKEY)
    note, signed = verify_note(GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG, [peter])
    assert note.text == GO_TEXT
    assert signed == [peter]
    assert [s.name for s in note.signatures] == ["PeterNeumann", "EnochRoot"]


def test_open_go_note_both_known_and_bytes_input():
    peter, enoch = Verifier.from_string(PETER_VKEY), Verifier.from_string(ENOCH_VKEY)
    msg = (GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode()
    _, signed = verify_note(msg, [enoch, peter])
    assert signed == [peter, enoch]  # note order


def test_open_go_note_no_known_key():
    with pytest.raises(NoKnownSignature) as e:
        verify_note(GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG, [])
    assert e.value.note is not None and len(e.value.note.signatures) == 2
    assert isinstance(e.value, BadSignature)


def test_go_invalid_signature():
    bad = GO_TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(BadSignature, match="PeterNeumann\\+c74f20a3"):
        verify_note(bad, [Verifier.from_string(PETER_VKEY)])


def test_go_duplicated_signatures():
    enoch_abcd = ENOCH_SIG[:60] + "ABCD" + ENOCH_SIG[60:]
    msg = GO_TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG + enoch_abcd
    peter = Verifier.from_string(PETER_VKEY)
    note, signed = verify_note(msg, [peter])
    assert signed == [peter]
    assert note.to_text() == msg  # every line kept, byte for byte


def test_go_too_many_signatures():
    peter = Verifier.from_string(PETER_VKEY)
    verify_note(GO_TEXT + "\n" + PETER_SIG * MAX_SIGNATURES, [peter])
    for known in ([peter], []):
        with pytest.raises(MalformedNote):
            verify_note(GO_TEXT + "\n" + PETER_SIG * (MAX_SIGNATURES + 1), known)


@pytest.mark.parametrize(
    "msg",
    [
        GO_TEXT,
        GO_TEXT + "\n",
        GO_TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + GO_TEXT + "\n" + PETER_SIG,
        b"\xff" + (GO_TEXT + "\n" + PETER_SIG).encode(),
        GO_TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Bad Name")[:-1],
        GO_TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
    ],
)
def test_go_malformed_notes(msg: str | bytes):
    with pytest.raises(MalformedNote):
        verify_note(msg, [Verifier.from_string(PETER_VKEY)])


def test_go_verifier_key_manglings_rejected():
    # Every proper substring and every single-character increment must fail.
    for i in range(len(PETER_VKEY) + 1):
        for j in range(i + 1, len(PETER_VKEY) + 1):
            if (i, j) != (0, len(PETER_VKEY)):
                with pytest.raises(MalformedNote):
                    Verifier.from_string(PETER_VKEY[i:j])
    for i in range(len(PETER_VKEY)):
        mangled = PETER_VKEY[:i] + chr(ord(PETER_VKEY[i]) + 1) + PETER_VKEY[i + 1 :]
        with pytest.raises(MalformedNote):
            Verifier.from_string(mangled)
    # wrong key length and unknown algorithm, each with a matching key id
    for vkey in (
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ):
        with pytest.raises(MalformedNote):
            Verifier.from_string(vkey)


def test_verifier_key_id_hex_any_case_like_go():
    upper = PETER_VKEY.replace("c74f20a3", "C74F20A3")
    assert Verifier.from_string(upper).to_string() == PETER_VKEY
    for bad in ("0xc74f20", "c74f_0a3", " c74f20a", "c74f20ag", "c74f20a", "c74f20a30"):
        with pytest.raises(MalformedNote):
            Verifier.from_string(PETER_VKEY.replace("c74f20a3", bad))


# === known answers: checkpoints ==============================================


def test_sumdb_checkpoint_with_other_origin():
    sumdb = Verifier.from_string(SUMDB_VKEY)
    cp = open_checkpoint(SUMDB_NOTE, sumdb, origin="go.sum database tree")
    assert cp.size == 6476701
    assert cp.root == base64.b64decode("mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=")
    assert cp.body() == Note.parse(SUMDB_NOTE).text
    # our rule (key name == origin) applies when no origin is given
    with pytest.raises(BadSignature, match="origin"):
        open_checkpoint(SUMDB_NOTE, sumdb)


def test_sumdb_checkpoint_many_signers():
    note = add_signature_lines(SUMDB_NOTE, [line for _, line in SUMDB_EXTRA])
    verifiers = [Verifier.from_string(vkey) for vkey, _ in SUMDB_EXTRA]
    _, signed = verify_note(note, [*verifiers, Verifier.from_string(SUMDB_VKEY)])
    assert [v.name for v in signed] == ["sum.golang.org", "monkeys", "bananas", "witness"]
    for v in verifiers:  # each alone suffices; the log's own line is then unknown
        assert verify_note(note, [v])[1] == [v]


def test_c2sp_signed_note_example():
    v = Verifier.from_string(SPEC_VKEY)
    assert v.public_key.hex() == "e932791ae6e7a840a46164c904786426d5e7821dd8b29a00d61cae72afdd4da4"
    note, signed = verify_note(SPEC_NOTE, [v])
    assert note.text == "This is an example message.\n"
    assert signed == [v]


def test_c2sp_note_text_may_hold_empty_lines():
    note = Note.parse(QUASIMODO_NOTE)
    assert note.text.endswith("\n\ned è subito sera.\n")
    assert note.to_text() == QUASIMODO_NOTE
    with pytest.raises(NoKnownSignature):
        verify_note(QUASIMODO_NOTE, [Verifier.from_string(SPEC_VKEY)])


def test_real_checkpoint_log_signature():
    cp = open_checkpoint(ARCHE_NOTE, Verifier.from_string(ARCHE_VKEY))
    assert cp.origin == "arche2025h1.staging.ct.transparency.dev"
    assert cp.size == 1432088532 and cp.extensions == ()
    assert Note.parse(ARCHE_NOTE).to_text() == ARCHE_NOTE


def test_real_checkpoint_cosignatures():
    witnesses = dict(parse_cosigner_vkey(v) for v in ARCHE_WITNESS_VKEYS)
    absent = dict([parse_cosigner_vkey(RING_ANY_BELLS_VKEY)])
    assert count_cosignatures(ARCHE_NOTE, witnesses | absent) == list(witnesses)
    note = Note.parse(ARCHE_NOTE)
    for sig in note.signatures[2:]:
        ts = verify_cosignature(note.text, sig, sig.name, witnesses[sig.name])
        assert ts == cosignature_timestamp(sig) == 1779573024
    for vkey in ARCHE_WITNESS_VKEYS:
        name, public_key = parse_cosigner_vkey(vkey)
        assert cosigner_vkey(name, public_key) == vkey
    # a cosigner key is not a note verifier key, and the reverse
    with pytest.raises(MalformedNote):
        Verifier.from_string(ARCHE_WITNESS_VKEYS[0])
    with pytest.raises(MalformedNote):
        parse_cosigner_vkey(ARCHE_VKEY)


def test_real_checkpoint_clobbered():
    clobbered = ARCHE_NOTE.replace("1432088532", "1432088533")
    with pytest.raises(BadSignature):
        open_checkpoint(clobbered, Verifier.from_string(ARCHE_VKEY))
    witnesses = dict([parse_cosigner_vkey(ARCHE_WITNESS_VKEYS[2])])
    with pytest.raises(BadSignature):
        count_cosignatures(clobbered, witnesses)


def test_c2sp_cosignature_example_framing():
    sig = NoteSignature.from_line(SPEC_COSIGNATURE_LINE)
    assert sig.name == "witness.example.com/w1"
    assert sig.key_id == bytes.fromhex("8d66cf3f")
    assert len(sig.signature) == 8 + 64
    assert cosignature_timestamp(sig) == 1679315147
    assert sig.to_line() == SPEC_COSIGNATURE_LINE


# === golden bytes ==========================================================


def test_golden_keys(golden_key: SigningKey, golden_verifier: Verifier):
    assert golden_key.public_bytes.hex() == (
        "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
    )
    assert golden_verifier.to_string() == GOLDEN_VKEY
    assert cosigner_vkey(GOLDEN_WITNESS, golden_key.public_bytes) == GOLDEN_COSIGNER_VKEY


def test_golden_checkpoint_note(golden_key: SigningKey, golden_verifier: Verifier):
    note = sign_checkpoint(GOLDEN_CHECKPOINT, GOLDEN_ORIGIN, golden_key)
    assert note == GOLDEN_NOTE
    assert open_checkpoint(note, golden_verifier) == GOLDEN_CHECKPOINT


def test_golden_checkpoint_note_independently_built():
    # The format from the spec text, with pyca/cryptography only.
    private = Ed25519PrivateKey.from_private_bytes(GOLDEN_SEED)
    text = f"{GOLDEN_ORIGIN}\n3\n{base64.b64encode(bytes(range(32))).decode()}\n"
    pk = bytes.fromhex("03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8")
    key_id = hashlib.sha256(GOLDEN_ORIGIN.encode() + b"\n\x01" + pk).digest()[:4]
    blob = base64.b64encode(key_id + private.sign(text.encode())).decode()
    assert f"{text}\n\u2014 {GOLDEN_ORIGIN} {blob}\n" == GOLDEN_NOTE


def test_golden_cosignature(golden_key: SigningKey):
    body = GOLDEN_CHECKPOINT.body()
    line = cosign_line(body, GOLDEN_WITNESS, golden_key, GOLDEN_TIME)
    assert line == GOLDEN_COSIGNATURE
    # independently: key id with type 0x04, big-endian u64 time, the v1 message
    raw = base64.b64decode(line.split(" ")[2])
    pk = golden_key.public_bytes
    assert raw[:4] == hashlib.sha256(GOLDEN_WITNESS.encode() + b"\n\x04" + pk).digest()[:4]
    assert raw[4:12] == GOLDEN_TIME.to_bytes(8, "big")
    message = f"cosignature/v1\ntime {GOLDEN_TIME}\n".encode() + body.encode()
    Ed25519PublicKey.from_public_bytes(pk).verify(raw[12:], message)
    assert verify_cosignature(body, line, GOLDEN_WITNESS, pk) == GOLDEN_TIME


def test_golden_cosigned_note(golden_key: SigningKey, golden_verifier: Verifier):
    note = add_signature_lines(GOLDEN_NOTE, [GOLDEN_COSIGNATURE])
    assert note == GOLDEN_NOTE + GOLDEN_COSIGNATURE
    assert open_checkpoint(note, golden_verifier) == GOLDEN_CHECKPOINT
    witnesses = {GOLDEN_WITNESS: golden_key.public_bytes}
    assert count_cosignatures(note, witnesses) == [GOLDEN_WITNESS]
    # same key and name as a plain note key: a different key id, so not a cosignature
    assert count_cosignatures(note, {GOLDEN_ORIGIN: golden_key.public_bytes}) == []


# === mutations =============================================================


def _golden_sig_blob() -> tuple[str, bytes]:
    head, _, b64 = GOLDEN_NOTE[:-1].rpartition(" ")
    return head, base64.b64decode(b64)


def _with_blob(head: str, blob: bytes) -> str:
    return f"{head} {base64.b64encode(blob).decode()}\n"


def test_every_signature_byte_flipped(golden_verifier: Verifier):
    head, blob = _golden_sig_blob()
    for i in range(4, len(blob)):
        for bit in (0x01, 0x80):
            mutated = bytearray(blob)
            mutated[i] ^= bit
            with pytest.raises(BadSignature):
                verify_note(_with_blob(head, bytes(mutated)), [golden_verifier])


def test_key_id_byte_flipped_is_an_unknown_key(golden_verifier: Verifier):
    head, blob = _golden_sig_blob()
    for i in range(4):
        mutated = bytearray(blob)
        mutated[i] ^= 0x01
        with pytest.raises(NoKnownSignature):
            verify_note(_with_blob(head, bytes(mutated)), [golden_verifier])


def test_truncated_and_extended_signatures(golden_verifier: Verifier):
    head, blob = _golden_sig_blob()
    for mutated in (blob[:-1], blob + b"\x00", blob[:5]):
        with pytest.raises(BadSignature):
            verify_note(_with_blob(head, mutated), [golden_verifier])
    with pytest.raises(MalformedNote):
        verify_note(_with_blob(head, blob[:4]), [golden_verifier])


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("\n3\n", "\n4\n"),
        ("carrier-1\n3", "carrier-2\n3"),
        ("AAECAwQF", "AAECAwQG"),
        ("\n3\n", "\n3 \n"),
        ("Hh8=\n", "Hh8=\nextension\n"),
    ],
)
def test_body_changed(golden_verifier: Verifier, old: str, new: str):
    with pytest.raises(BadSignature):
        open_checkpoint(GOLDEN_NOTE.replace(old, new, 1), golden_verifier)


@pytest.mark.parametrize(
    "mutated",
    [
        GOLDEN_NOTE.replace("=\n\n\u2014", "=\n\u2014"),  # missing blank line
        GOLDEN_NOTE[:-1],  # no final newline
        GOLDEN_NOTE + "\n",  # trailing empty line
        GOLDEN_NOTE + " ",  # trailing space after the note
        GOLDEN_NOTE[:-1] + " \n",  # trailing space on the signature line
        GOLDEN_NOTE.replace("\u2014 ", "- "),  # hyphen
        GOLDEN_NOTE.replace("\u2014 ", "\u2013 "),  # en dash
        GOLDEN_NOTE.replace("\u2014 ", "\u2014"),  # no space after the dash
        GOLDEN_NOTE.replace("\u2014 ", "\u2014  "),  # two spaces
        GOLDEN_NOTE.replace("\u2014 markex", "\u2014 mark ex"),  # space in key name
        GOLDEN_NOTE.replace("\u2014 markex", "\u2014 mark+ex"),  # plus in key name
        GOLDEN_NOTE.replace("\u2014 markex", "\u2014 mark\u00a0ex"),  # Unicode space
        GOLDEN_NOTE.replace("\u2014 markex/v1/log/carrier-1 ", "\u2014  "),  # empty name
        GOLDEN_NOTE.replace("\n", "\r\n"),  # CRLF
        GOLDEN_NOTE.replace("3\n", "3\t\n", 1),  # control character in the text
        GOLDEN_NOTE.replace("PAQ=\n", "PAQ\n"),  # missing padding
        GOLDEN_NOTE.replace("PAQ=\n", "PAQ==\n"),  # extra padding
        GOLDEN_NOTE.replace("PAQ=\n", "PAR=\n"),  # non-zero padding bits
        GOLDEN_NOTE.replace("PAQ=\n", "PA-=\n"),  # URL-safe alphabet
        GOLDEN_NOTE.replace("mrYk", "mr\u00ffk"),  # non-ASCII in base64
    ],
)
def test_malformed_mutations(golden_verifier: Verifier, mutated: str):
    with pytest.raises(MalformedNote):
        verify_note(mutated, [golden_verifier])


def test_invalid_utf8_and_lone_surrogates():
    with pytest.raises(MalformedNote):
        Note.parse(GOLDEN_NOTE.encode().replace(b"carrier", b"carr\xc3er"))
    with pytest.raises(MalformedNote):
        Note.parse(GOLDEN_NOTE.replace("carrier", "carr\ud800er"))


def test_more_than_100_signatures(golden_key: SigningKey, golden_verifier: Verifier):
    lines = [
        cosign_line(GOLDEN_CHECKPOINT.body(), GOLDEN_WITNESS, golden_key, t) for t in range(100)
    ]
    with pytest.raises(MalformedNote):
        add_signature_lines(GOLDEN_NOTE, lines)
    full = add_signature_lines(GOLDEN_NOTE, lines[:99])
    assert len(Note.parse(full).signatures) == MAX_SIGNATURES
    assert open_checkpoint(full, golden_verifier) == GOLDEN_CHECKPOINT
    witnesses = {GOLDEN_WITNESS: golden_key.public_bytes}
    assert count_cosignatures(full, witnesses) == [GOLDEN_WITNESS]
    with pytest.raises(MalformedNote):
        Note.parse(full + lines[99])


def test_bad_key_names(golden_key: SigningKey):
    for name in ("", "a b", "a+b", "a\tb", "a\u3000b", "a\nb", "a\x01b"):
        with pytest.raises(MalformedNote):
            Verifier.for_key(name, golden_key.public_bytes)
        with pytest.raises(MalformedNote):
            sign_note("text\n", name, golden_key)
        with pytest.raises(MalformedNote):
            cosignature_key_id(name, golden_key.public_bytes)


def test_sign_note_rejects_bad_text(golden_key: SigningKey):
    for text in ("", "no newline", "a\rb\n", "tab\t\n", "\ud800\n"):
        with pytest.raises(MalformedNote):
            sign_note(text, "name", golden_key)


def test_sign_note_allows_empty_lines_like_the_spec(golden_key: SigningKey):
    verifier = Verifier.for_key("name", golden_key.public_bytes)
    for text in ("a\n\nb\n", "\n", "a\n\n", "\n\na\n"):
        note, signed = verify_note(sign_note(text, "name", golden_key), [verifier])
        assert note.text == text and signed == [verifier]


# === checkpoints =============================================================

ROOT64 = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize(
    "body",
    [
        f"o\n01\n{ROOT64}\n",  # leading zero
        f"o\n00\n{ROOT64}\n",
        f"o\n+1\n{ROOT64}\n",
        f"o\n-1\n{ROOT64}\n",
        f"o\n-0\n{ROOT64}\n",
        f"o\n1_0\n{ROOT64}\n",
        f"o\n 1\n{ROOT64}\n",
        f"o\n1 \n{ROOT64}\n",
        f"o\n\u0661\n{ROOT64}\n",  # Arabic-Indic digit one
        f"o\n0x1\n{ROOT64}\n",
        f"o\n\n{ROOT64}\n",
        f"o\n18446744073709551616\n{ROOT64}\n",  # 2^64
        f"o\n1\n{base64.b64encode(bytes(31)).decode()}\n",
        f"o\n1\n{base64.b64encode(bytes(33)).decode()}\n",
        f"o\n1\n{ROOT64.rstrip('=')}\n",
        f"o\n1\n{ROOT64}=\n",
        f"o\n1\n{ROOT64[:-2]}B=\n",  # non-zero padding bits
        f"\n1\n{ROOT64}\n",  # empty origin
        f"o\n1\n{ROOT64}",  # no final newline
        "o\n1\n",  # two lines
        f"o\n1\n{ROOT64}\n\n",  # empty extension line
        f"o\n1\n{ROOT64}\next\n\nmore\n",
        f"o\r\n1\n{ROOT64}\n",
    ],
)
def test_checkpoint_body_rejected(body: str):
    with pytest.raises(MalformedNote):
        Checkpoint.parse_body(body)


def test_checkpoint_body_accepted():
    assert Checkpoint.parse_body(f"o\n0\n{ROOT64}\n") == Checkpoint("o", 0, bytes(32))
    cp = Checkpoint.parse_body(f"o p\n18446744073709551615\n{ROOT64}\nx y\nz\n")
    assert cp == Checkpoint("o p", 2**64 - 1, bytes(32), ("x y", "z"))
    assert cp.body() == f"o p\n18446744073709551615\n{ROOT64}\nx y\nz\n"


def test_checkpoint_constructor_validates():
    for args in (
        ("", 1, bytes(32)),
        ("o\n", 1, bytes(32)),
        ("o", -1, bytes(32)),
        ("o", 2**64, bytes(32)),
        ("o", True, bytes(32)),
        ("o", 1, bytes(31)),
    ):
        with pytest.raises(MalformedNote):
            Checkpoint(*args)
    for ext in ("", "a\nb", "\x00"):
        with pytest.raises(MalformedNote):
            Checkpoint("o", 1, bytes(32), (ext,))


def test_signed_note_that_is_not_a_checkpoint(golden_key: SigningKey, golden_verifier: Verifier):
    note = sign_note(f"{GOLDEN_ORIGIN}\n01\n{ROOT64}\n", GOLDEN_ORIGIN, golden_key)
    verify_note(note, [golden_verifier])  # a fine note ...
    with pytest.raises(MalformedNote):  # ... but not a checkpoint
        open_checkpoint(note, golden_verifier)


def test_checkpoint_origin_rules(golden_key: SigningKey, golden_verifier: Verifier):
    with pytest.raises(MalformedNote):
        sign_checkpoint(GOLDEN_CHECKPOINT, "another/name", golden_key)
    other = Checkpoint("markex/v1/log/carrier-2", 3, bytes(32))
    note = sign_checkpoint(other, other.origin, golden_key)
    renamed = Verifier.for_key(other.origin, golden_key.public_bytes)
    assert open_checkpoint(note, renamed) == other
    with pytest.raises(NoKnownSignature):  # other name, so other key id
        open_checkpoint(note, golden_verifier)
    with pytest.raises(BadSignature, match="origin"):
        open_checkpoint(note, renamed, origin=GOLDEN_ORIGIN)


def test_view_checkpoint_with_extensions(golden_key: SigningKey):
    cp = Checkpoint("markex/v1/view/institute", 7, bytes(range(32)), ("vector abc", "entries 5"))
    note = sign_checkpoint(cp, cp.origin, golden_key)
    assert open_checkpoint(note, Verifier.for_key(cp.origin, golden_key.public_bytes)) == cp
    body = cp.body()
    line = cosign_line(body, GOLDEN_WITNESS, golden_key, 5)
    stripped = Checkpoint(cp.origin, cp.size, cp.root).body()
    with pytest.raises(BadSignature):  # the cosignature covers the extension lines
        verify_cosignature(stripped, line, GOLDEN_WITNESS, golden_key.public_bytes)


# === cosignatures ============================================================


def test_cosignature_mutations(golden_key: SigningKey):
    body, pk = GOLDEN_CHECKPOINT.body(), golden_key.public_bytes
    other_pk = SigningKey.from_seed(bytes(32)).public_bytes
    with pytest.raises(BadSignature):
        verify_cosignature(body.replace("\n3\n", "\n4\n"), GOLDEN_COSIGNATURE, GOLDEN_WITNESS, pk)
    with pytest.raises(BadSignature):
        verify_cosignature(body, GOLDEN_COSIGNATURE, "witness.markex/other", pk)
    with pytest.raises(BadSignature):
        verify_cosignature(body, GOLDEN_COSIGNATURE, GOLDEN_WITNESS, other_pk)
    sig = NoteSignature.from_line(GOLDEN_COSIGNATURE)
    for i in range(len(sig.signature)):
        mutated = bytearray(sig.signature)
        mutated[i] ^= 0x01
        bad = NoteSignature(sig.name, sig.key_id, bytes(mutated))
        with pytest.raises(BadSignature):
            verify_cosignature(body, bad, GOLDEN_WITNESS, pk)
    for payload in (sig.signature[:-1], sig.signature + b"\x00", b"\x80" + sig.signature[1:]):
        with pytest.raises(BadSignature):
            verify_cosignature(body, NoteSignature(sig.name, sig.key_id, payload), sig.name, pk)
    with pytest.raises(MalformedNote):
        verify_cosignature("not a checkpoint\n", sig, GOLDEN_WITNESS, pk)


def test_cosign_timestamp_bounds(golden_key: SigningKey):
    body = GOLDEN_CHECKPOINT.body()
    pk = golden_key.public_bytes
    for ts in (0, 2**63 - 1):
        line = cosign_line(body, GOLDEN_WITNESS, golden_key, ts)
        assert verify_cosignature(body, line, GOLDEN_WITNESS, pk) == ts
    for ts in (-1, 2**63, True):
        with pytest.raises(MalformedNote):
            cosign_line(body, GOLDEN_WITNESS, golden_key, ts)
    with pytest.raises(MalformedNote):
        cosign_line("just text\n", GOLDEN_WITNESS, golden_key, 1)


def test_count_cosignatures_quorum(golden_key: SigningKey, golden_verifier: Verifier):
    body = GOLDEN_CHECKPOINT.body()
    keys = {f"w{i}.example": SigningKey.from_seed(bytes([i]) * 32) for i in range(1, 5)}
    lines = [cosign_line(body, name, key, 10 + i) for i, (name, key) in enumerate(keys.items())]
    note = add_signature_lines(GOLDEN_NOTE, [lines[2], lines[0], lines[0], lines[2]])
    assert note == GOLDEN_NOTE + lines[2] + lines[0]  # order kept, duplicates dropped
    witnesses = {name: key.public_bytes for name, key in keys.items()}
    assert count_cosignatures(note, witnesses) == ["w3.example", "w1.example"]
    assert open_checkpoint(note, golden_verifier) == GOLDEN_CHECKPOINT
    # a second, later cosignature from one witness: a new line, counted once
    again = cosign_line(body, "w1.example", keys["w1.example"], 99)
    note2 = add_signature_lines(note, [again])
    assert count_cosignatures(note2, witnesses) == ["w3.example", "w1.example"]
    # a known witness's broken line rejects the note
    sig = NoteSignature.from_line(lines[1])
    flipped = sig.signature[:-1] + bytes([sig.signature[-1] ^ 1])
    broken = NoteSignature(sig.name, sig.key_id, flipped).to_line()
    with pytest.raises(BadSignature):
        count_cosignatures(add_signature_lines(note, [broken]), witnesses)
    with pytest.raises(MalformedConfig):
        count_cosignatures(note, {"bad name": bytes(32)})
    with pytest.raises(MalformedConfig):
        count_cosignatures(note, {"w1.example": bytes(31)})
    with pytest.raises(MalformedNote):
        count_cosignatures(sign_note("not\na checkpoint\n", "n", golden_key), witnesses)


def test_add_signature_lines_input_checks():
    with pytest.raises(MalformedNote):
        add_signature_lines(GOLDEN_NOTE, ["- bad line\n"])
    with pytest.raises(MalformedNote):
        add_signature_lines(GOLDEN_NOTE, [GOLDEN_COSIGNATURE + GOLDEN_COSIGNATURE])
    with pytest.raises(MalformedNote):
        add_signature_lines("no blank line\n", [GOLDEN_COSIGNATURE])
    with pytest.raises(TypeError):
        add_signature_lines(GOLDEN_NOTE, GOLDEN_COSIGNATURE)  # type: ignore[arg-type]
    assert add_signature_lines(GOLDEN_NOTE, [GOLDEN_COSIGNATURE[:-1]]) == (
        GOLDEN_NOTE + GOLDEN_COSIGNATURE
    )
    assert add_signature_lines(GOLDEN_NOTE, []) == GOLDEN_NOTE


def test_ambiguous_verifiers(golden_verifier: Verifier):
    # Two distinct keys sharing name and key id need a 32-bit collision; forge one.
    forged = object.__new__(Verifier)
    object.__setattr__(forged, "name", golden_verifier.name)
    object.__setattr__(forged, "key_id", golden_verifier.key_id)
    object.__setattr__(forged, "public_key", bytes(32))
    with pytest.raises(MalformedConfig):
        verify_note(GOLDEN_NOTE, [golden_verifier, forged])
    assert verify_note(GOLDEN_NOTE, [golden_verifier, golden_verifier])[1] == [golden_verifier]


def test_verifier_rejects_wrong_key_id(golden_verifier: Verifier):
    with pytest.raises(MalformedNote):
        Verifier(golden_verifier.name, b"\x00\x00\x00\x00", golden_verifier.public_key)
    with pytest.raises(MalformedNote):
        Verifier.for_key("name", bytes(31))


# === properties ==============================================================

_TEXT_CHARS = st.characters(exclude_categories=("Cs", "Cc"))
_LINE = st.text(_TEXT_CHARS, max_size=30)
_NAME = st.text(
    st.characters(exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), exclude_characters="+"),
    min_size=1,
    max_size=20,
).filter(lambda s: not any(c.isspace() for c in s))
_FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FAST
@given(
    lines=st.lists(_LINE, min_size=1, max_size=6),
    names=st.lists(_NAME, min_size=1, max_size=3, unique=True),
    seed=st.binary(min_size=32, max_size=32),
)
def test_property_note_round_trip(lines: list[str], names: list[str], seed: bytes):
    text = "\n".join(lines) + "\n"
    key = SigningKey.from_seed(seed)
    note = sign_note(text, names[0], key)
    more = [Note.parse(sign_note(text, n, key)).signatures[0].to_line() for n in names[1:]]
    note = add_signature_lines(note, more)
    parsed = Note.parse(note)
    assert parsed.text == text and parsed.to_text() == note
    assert Note.parse(note.encode()).to_text() == note
    verifiers = [Verifier.for_key(n, key.public_bytes) for n in names]
    assert verify_note(note, verifiers[::-1])[1] == verifiers
    assert Verifier.from_string(verifiers[0].to_string()) == verifiers[0]


@_FAST
@given(
    origin=st.text(_TEXT_CHARS, min_size=1, max_size=30).filter(lambda s: "\n" not in s),
    size=st.integers(min_value=0, max_value=2**64 - 1),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(st.text(_TEXT_CHARS, min_size=1, max_size=10), max_size=3),
    timestamp=st.integers(min_value=0, max_value=2**63 - 1),
)
def test_property_checkpoint_round_trip(
    origin: str, size: int, root: bytes, extensions: list[str], timestamp: int
):
    cp = Checkpoint(origin, size, root, tuple(extensions))
    assert Checkpoint.parse_body(cp.body()) == cp
    key = SigningKey.from_seed(GOLDEN_SEED)
    line = cosign_line(cp.body(), "w", key, timestamp)
    assert verify_cosignature(cp.body(), line, "w", key.public_bytes) == timestamp


def _mutations() -> st.SearchStrategy[bytes]:
    base = (GOLDEN_NOTE + GOLDEN_COSIGNATURE).encode()

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(base)
        for _ in range(draw(st.integers(min_value=1, max_value=4))):
            i = draw(st.integers(min_value=0, max_value=len(data)))
            op = draw(st.sampled_from(["set", "insert", "delete"]))
            byte = draw(st.sampled_from([0x0A, 0x20, 0x2B, 0x3D, 0x41, 0xE2, 0x80, 0x94, 0x00]))
            if op == "insert":
                data.insert(i, byte)
            elif i < len(data):
                if op == "set":
                    data[i] = byte
                else:
                    del data[i]
        return bytes(data)

    return mutate()


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=200), _mutations()))
def test_property_parsers_raise_only_ledger_errors(data: bytes | str):
    key = SigningKey.from_seed(GOLDEN_SEED)
    verifier = Verifier.for_key(GOLDEN_ORIGIN, key.public_bytes)
    try:
        note = Note.parse(data)
    except MalformedNote:
        pass
    else:
        expected = data if isinstance(data, str) else data.decode()
        assert note.to_text() == expected
    for call in (
        lambda: verify_note(data, [verifier]),
        lambda: open_checkpoint(_as_text(data), verifier),
        lambda: count_cosignatures(_as_text(data), {GOLDEN_WITNESS: key.public_bytes}),
        lambda: Checkpoint.parse_body(_as_text(data)),
        lambda: Verifier.from_string(_as_text(data)),
        lambda: NoteSignature.from_line(_as_text(data)),
    ):
        try:
            call()
        except (MalformedNote, BadSignature):
            pass
        except LedgerError as e:  # pragma: no cover - would be a bug
            pytest.fail(f"unexpected {type(e).__name__}: {e}")


def _as_text(data: bytes | str) -> str:
    return data if isinstance(data, str) else data.decode("utf-8", "surrogateescape")


# --- the character checks, against their definitions ------------------------


def _name_by_definition(name: str) -> bool:
    """A key name as the spec defines it, character by character."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return bool(name) and not any(c.isspace() or c < "\x20" or c == "+" for c in name)


def test_key_name_check_agrees_with_its_definition_for_every_code_point():
    from ledger.note import is_valid_key_name

    wrong = [
        hex(cp)
        for cp in range(0x110000)
        if is_valid_key_name(f"log{chr(cp)}") != _name_by_definition(f"log{chr(cp)}")
    ]
    assert wrong == []
    assert not is_valid_key_name("")


@pytest.mark.parametrize("cp", [c for c in range(0x20) if c != 0x0A] + [0xD800, 0xDFFF])
def test_a_checkpoint_with_a_control_character_or_lone_surrogate_is_refused_each_time(cp: int):
    text = f"example.com/log\n3\n{'A' * 43}=\nx{chr(cp)}y\n"
    for _ in range(2):   # refused again: a refusal is never remembered as a parse
        with pytest.raises(MalformedNote):
            Checkpoint.parse_body(text)


@pytest.mark.parametrize("cp", [0x7F, 0x85, 0x2028, 0x4E2D])
def test_a_checkpoint_extension_may_hold_what_is_not_a_control_below_space(cp: int):
    text = f"example.com/log\n3\n{'A' * 43}=\nx{chr(cp)}y\n"
    assert Checkpoint.parse_body(text).extensions == (f"x{chr(cp)}y",)


def test_a_checkpoint_text_parsed_twice_gives_the_same_checkpoint():
    body = Checkpoint("example.com/log", 7, bytes(range(32)), ("ext one",)).body()
    first = Checkpoint.parse_body(body)
    assert Checkpoint.parse_body(body) == first
    assert first.body() == body


def test_a_long_checkpoint_text_is_parsed_but_not_remembered():
    from ledger import note as N

    long_ext = "x" * (N._CACHED_BODY + 1)
    body = Checkpoint("example.com/log", 7, bytes(range(32)), (long_ext,)).body()
    before = N._parsed_body.cache_info().currsize
    assert Checkpoint.parse_body(body).extensions == (long_ext,)
    assert N._parsed_body.cache_info().currsize == before
