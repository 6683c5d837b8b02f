"""C2SP signed notes, tlog-checkpoints and tlog-cosignatures (Ed25519), byte-exact.

Formats (https://c2sp.org/signed-note, /tlog-checkpoint, /tlog-cosignature):

    <text: one or more lines, each ending in "\\n">
    "\\n"                                          the blank separator line
    "— <key name> <base64(key id[4] || payload)>\\n"   one line per signature (1..100)

- The separator is the *last* empty line, so a generic note's text may contain
  empty lines (the spec allows it, Go's note.Open splits at the last "\\n\\n").
  A checkpoint's text never does.
- Ed25519 (type 0x01): key id = SHA-256(name || "\\n" || 0x01 || pk)[:4]; the
  payload is the Ed25519 signature of the text bytes (final "\\n" included).
  Verifier key string: "<name>+<8 hex key id>+<base64(0x01 || pk)>".
- Cosignature v1 (type 0x04): key id = SHA-256(name || "\\n" || 0x04 || pk)[:4];
  payload = timestamp (u64 big-endian seconds, <= 2^63-1) || Ed25519 signature of
  "cosignature/v1\\ntime <decimal timestamp>\\n" + the checkpoint text.
- Checkpoint text: "<origin>\\n<size>\\n<base64 root>\\n" + extension lines.

Strictness: everything that Go's golang.org/x/mod/sumdb/note rejects is
rejected here too (bad UTF-8, control characters other than "\\n", missing
blank line, lines without "— ", bad key names, bad base64, payload under 5
bytes, more than 100 signatures). We are stricter in two places only: base64
must be canonical (no non-zero padding bits), so a parsed note re-serializes
to the same bytes; and every signature line that matches a known key is
verified, not just the first one per key.

Errors (all from `ledger.errors`): MalformedNote for anything that does not
parse (notes, checkpoints, verifier key strings, signature lines);
BadSignature when a known key's signature does not verify, when a checkpoint
has the wrong origin, or a cosignature is not from the named key;
NoKnownSignature (a BadSignature defined here) when a note parses but no
signature from a known key is on it; MalformedConfig for an ambiguous set of
verifiers or witnesses (two keys with one name and key id).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from keys.signing import SigningKey, verify_ed25519
from ledger.errors import BadSignature, MalformedConfig, MalformedNote

__all__ = [
    "ALG_COSIGNATURE_V1",
    "ALG_ED25519",
    "MAX_SIGNATURES",
    "Checkpoint",
    "NoKnownSignature",
    "Note",
    "NoteSignature",
    "Verifier",
    "add_signature_lines",
    "cosign_line",
    "cosignature_key_id",
    "cosignature_message",
    "cosignature_timestamp",
    "cosigner_vkey",
    "count_cosignatures",
    "ed25519_key_id",
    "is_valid_key_name",
    "open_checkpoint",
    "parse_cosigner_vkey",
    "sign_checkpoint",
    "sign_note",
    "verify_cosignature",
    "verify_note",
    "verify_parsed",
]

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
# Go's note.Open refuses more than 100 signature lines; the spec asks for >= 16.
MAX_SIGNATURES = 100
KEY_ID_SIZE = 4
PUBLIC_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
ROOT_SIZE = 32
MAX_TREE_SIZE = 2**64 - 1
MAX_COSIGNATURE_TIME = 2**63 - 1

SIGNATURE_PREFIX = "\u2014 "  # EM DASH, SPACE
COSIGNATURE_HEADER = "cosignature/v1\n"

_DECIMAL = re.compile(r"(?:0|[1-9][0-9]*)\Z", re.ASCII)
_HEX8 = re.compile(r"[0-9a-fA-F]{8}\Z", re.ASCII)


class NoKnownSignature(BadSignature):
    """The note parsed, but no signature from a known key is on it.

    `note` holds the parsed (unverified) note; its text must not be trusted.
    """

    def __init__(self, message: str, note: Note | None = None) -> None:
        super().__init__(message)
        self.note = note


# --- small strict codecs ---------------------------------------------------


def _b64decode(text: str, what: str) -> bytes:
    """Standard base64 with padding, canonical only (re-encodes to `text`)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as e:
        raise MalformedNote(f"{what} is not base64") from e
    if base64.b64encode(raw).decode("ascii") != text:
        raise MalformedNote(f"{what} is not canonical base64")
    return raw


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# A control character other than newline; and what a key name may not hold:
# a Unicode space (re's \s is str.isspace, Go's unicode.IsSpace plus the
# controls 0x1c-0x1f), a control character, or '+'.
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")
_NOT_IN_NAME = re.compile(r"[\s\x00-\x1f+]")


def _is_utf8(text: str) -> bool:
    """False for a str holding a lone surrogate (it has no UTF-8 form)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text_chars(text: str, what: str) -> None:
    """Valid UTF-8 (no lone surrogates) and no control characters but newline."""
    if not _is_utf8(text):
        raise MalformedNote(f"{what} is not valid UTF-8")
    bad = _CONTROL.search(text)
    if bad is not None:
        raise MalformedNote(f"{what} contains control character {ord(bad.group()):#04x}")


def is_valid_key_name(name: str) -> bool:
    """Non-empty, valid UTF-8, no Unicode space, no '+', no control character."""
    return bool(name) and _is_utf8(name) and _NOT_IN_NAME.search(name) is None


def _check_key_name(name: str) -> None:
    if not is_valid_key_name(name):
        raise MalformedNote(f"invalid key name {name!r}: empty, or has a space, '+' or control")


def _key_id(name: str, key_type: int, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([key_type]) + public_key).digest()[
        :KEY_ID_SIZE
    ]


def ed25519_key_id(name: str, public_key: bytes) -> bytes:
    """SHA-256(name || "\\n" || 0x01 || public key)[:4] (signed-note, type 0x01)."""
    return _checked_key_id(name, ALG_ED25519, bytes(public_key))


def cosignature_key_id(name: str, public_key: bytes) -> bytes:
    """SHA-256(name || "\\n" || 0x04 || public key)[:4] (tlog-cosignature v1)."""
    return _checked_key_id(name, ALG_COSIGNATURE_V1, bytes(public_key))


# Key ids are asked for the same few (name, key) pairs at every note verified
# and every cosignature (several per checkpoint per peer): kept per pair. A bad
# name or key raises each time (lru_cache keeps no exception).
@functools.lru_cache(maxsize=1024)
def _checked_key_id(name: str, key_type: int, public_key: bytes) -> bytes:
    _check_key_name(name)
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise MalformedNote(f"an Ed25519 public key is 32 bytes, got {len(public_key)}")
    return _key_id(name, key_type, public_key)


def _split_vkey(vkey: str) -> tuple[str, bytes, int, bytes]:
    """Split "<name>+<hex id>+<base64(type || key)>" into its parts; the id is checked."""
    name, sep1, rest = vkey.partition("+")
    hex_id, sep2, key64 = rest.partition("+")
    if not (sep1 and sep2):
        raise MalformedNote("verifier key is not <name>+<hex key id>+<base64 key>")
    _check_key_name(name)
    # Go parses the id with strconv.ParseUint(_, 16, 32): either case, exactly 8 digits.
    if not _HEX8.match(hex_id):
        raise MalformedNote(f"verifier key id {hex_id!r} is not 8 hex digits")
    material = _b64decode(key64, "verifier key material")
    if not material:
        raise MalformedNote("verifier key material is empty")
    key_id = bytes.fromhex(hex_id)
    if _key_id(name, material[0], material[1:]) != key_id:
        raise MalformedNote(f"verifier key id {hex_id} does not match the key")
    return name, key_id, material[0], material[1:]


# --- verifier keys -----------------------------------------------------------


@dataclass(frozen=True)
class Verifier:
    """A trusted Ed25519 (type 0x01) note key: its name, key id and public key."""

    name: str
    key_id: bytes
    public_key: bytes

    def __post_init__(self) -> None:
        if ed25519_key_id(self.name, self.public_key) != self.key_id:
            raise MalformedNote(f"key id {self.key_id.hex()} does not match key {self.name!r}")

    @classmethod
    def for_key(cls, name: str, public_key: bytes) -> Verifier:
        return cls(name, ed25519_key_id(name, public_key), bytes(public_key))

    @classmethod
    def from_string(cls, vkey: str) -> Verifier:
        """Parse "<name>+<hex key id>+<base64(0x01 || pk)>"; the key id is checked."""
        name, key_id, key_type, public_key = _split_vkey(vkey)
        if key_type != ALG_ED25519:
            raise MalformedNote(f"verifier key type {key_type:#04x} is not Ed25519 (0x01)")
        if len(public_key) != PUBLIC_KEY_SIZE:
            raise MalformedNote(f"an Ed25519 public key is 32 bytes, got {len(public_key)}")
        return cls(name, key_id, public_key)

    def to_string(self) -> str:
        material = _b64encode(bytes([ALG_ED25519]) + self.public_key)
        return f"{self.name}+{self.key_id.hex()}+{material}"

    def verify(self, text: str, signature: bytes) -> bool:
        return verify_ed25519(self.public_key, signature, text.encode("utf-8"))


def cosigner_vkey(name: str, public_key: bytes) -> str:
    """A witness's verifier key string, type 0x04 (tlog-cosignature)."""
    key_id = cosignature_key_id(name, public_key)
    return f"{name}+{key_id.hex()}+{_b64encode(bytes([ALG_COSIGNATURE_V1]) + public_key)}"


def parse_cosigner_vkey(vkey: str) -> tuple[str, bytes]:
    """(name, Ed25519 public key) from a type-0x04 verifier key string."""
    name, _, key_type, public_key = _split_vkey(vkey)
    if key_type != ALG_COSIGNATURE_V1:
        raise MalformedNote(f"verifier key type {key_type:#04x} is not a cosigner (0x04)")
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise MalformedNote(f"an Ed25519 public key is 32 bytes, got {len(public_key)}")
    return name, public_key


# --- notes -----------------------------------------------------------------


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, 4-byte key id, and the payload after the id."""

    name: str
    key_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_key_name(self.name)
        if len(self.key_id) != KEY_ID_SIZE:
            raise MalformedNote(f"a key id is 4 bytes, got {len(self.key_id)}")
        if not self.signature:
            raise MalformedNote("empty signature")

    @classmethod
    def from_line(cls, line: str) -> NoteSignature:
        """Parse "— <name> <base64>" with or without its final newline."""
        if line.endswith("\n"):
            line = line[:-1]
        _check_text_chars(line, "signature line")
        if "\n" in line:
            raise MalformedNote("a signature line holds more than one line")
        if not line.startswith(SIGNATURE_PREFIX):
            raise MalformedNote("signature line does not start with an em dash and a space")
        name, _, b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
        _check_key_name(name)
        if not b64:
            raise MalformedNote("signature line has no signature")
        raw = _b64decode(b64, "signature")
        if len(raw) <= KEY_ID_SIZE:
            raise MalformedNote("signature is shorter than a key id and one byte")
        return cls(name, raw[:KEY_ID_SIZE], raw[KEY_ID_SIZE:])

    def to_line(self) -> str:
        return f"{SIGNATURE_PREFIX}{self.name} {_b64encode(self.key_id + self.signature)}\n"


def _check_note_text(text: str) -> None:
    if not text.endswith("\n"):
        raise MalformedNote("note text does not end in a newline")
    _check_text_chars(text, "note text")


@dataclass(frozen=True)
class Note:
    """A note's text (ending in "\\n") and all its signature lines, in order.

    Parsing verifies nothing: use `verify_note` before trusting `text`.
    """

    text: str
    signatures: tuple[NoteSignature, ...]

    def __post_init__(self) -> None:
        _check_note_text(self.text)
        if not self.signatures:
            raise MalformedNote("a signed note has at least one signature")
        if len(self.signatures) > MAX_SIGNATURES:
            raise MalformedNote(f"more than {MAX_SIGNATURES} signatures")

    @classmethod
    def parse(cls, data: str | bytes) -> Note:
        """Strict parse; `Note.parse(x).to_text()` gives back exactly `x`."""
        if isinstance(data, bytes | bytearray | memoryview):
            try:
                data = bytes(data).decode("utf-8")
            except UnicodeDecodeError as e:
                raise MalformedNote("note is not valid UTF-8") from e
        _check_text_chars(data, "note")
        split = data.rfind("\n\n")
        if split < 0:
            raise MalformedNote("note has no blank line before its signatures")
        text, block = data[: split + 1], data[split + 2 :]
        if not block.endswith("\n"):
            raise MalformedNote("note does not end with a signature line and a newline")
        lines = block[:-1].split("\n")
        if len(lines) > MAX_SIGNATURES:
            raise MalformedNote(f"more than {MAX_SIGNATURES} signatures")
        return cls(text, tuple(NoteSignature.from_line(line) for line in lines))

    def to_text(self) -> str:
        return self.text + "\n" + "".join(sig.to_line() for sig in self.signatures)


def sign_note(text: str, name: str, key: SigningKey) -> str:
    """The note `text` with one Ed25519 signature line by `key` under `name`."""
    _check_note_text(text)
    key_id = ed25519_key_id(name, key.public_bytes)
    signature = key.sign(text.encode("utf-8"))
    return Note(text, (NoteSignature(name, key_id, signature),)).to_text()


def add_signature_lines(note: str, lines: Sequence[str]) -> str:
    """Append signature lines (e.g. cosignatures) to a note.

    Existing lines stay as they are, in order; new lines follow in order; a
    line equal to one already present (same name, key id and payload) is
    dropped. Nothing is verified here.
    """
    if isinstance(lines, str):
        raise TypeError("lines must be a sequence of signature lines, not one string")
    parsed = Note.parse(note)
    signatures = list(parsed.signatures)
    seen = set(signatures)
    for line in lines:
        sig = NoteSignature.from_line(line)
        if sig not in seen:
            seen.add(sig)
            signatures.append(sig)
    return Note(parsed.text, tuple(signatures)).to_text()


def _index(verifiers: Sequence[Verifier]) -> dict[tuple[str, bytes], Verifier]:
    known: dict[tuple[str, bytes], Verifier] = {}
    for v in verifiers:
        other = known.setdefault((v.name, v.key_id), v)
        if other != v:
            raise MalformedConfig(f"two different keys named {v.name}+{v.key_id.hex()}")
    return known


def verify_note(note: str | bytes, verifiers: Sequence[Verifier]) -> tuple[Note, list[Verifier]]:
    """Parse `note` and check its signatures against the trusted `verifiers`.

    Lines whose (name, key id) is not a known key are ignored. Every line that
    matches a known key must verify. Returns the parsed note and the verifiers
    that signed it, in the order of their first line in the note.

    Raises MalformedNote (does not parse), BadSignature (a known key's line
    does not verify), NoKnownSignature (no line from a known key at all),
    MalformedConfig (two different verifiers share a name and key id).
    """
    parsed = Note.parse(note)
    return parsed, verify_parsed(parsed, verifiers)


def verify_parsed(parsed: Note, verifiers: Sequence[Verifier]) -> list[Verifier]:
    """`verify_note` of a note already parsed (its text read, not trusted,
    before this): the verifiers that signed it; raises as `verify_note`."""
    known = _index(verifiers)
    signed: list[Verifier] = []
    for sig in parsed.signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        if not verifier.verify(parsed.text, sig.signature):
            raise BadSignature(f"invalid signature for key {sig.name}+{sig.key_id.hex()}")
        if verifier not in signed:
            signed.append(verifier)
    if not signed:
        raise NoKnownSignature("no signature from a known key", parsed)
    return signed


# --- checkpoints -----------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A tlog-checkpoint: origin, tree size, 32-byte RFC 6962 root, extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise MalformedNote("checkpoint origin is empty or holds a newline")
        _check_text_chars(self.origin, "checkpoint origin")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise MalformedNote("checkpoint size is not an integer")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise MalformedNote(f"checkpoint size {self.size} is not a uint64")
        if len(self.root) != ROOT_SIZE:
            raise MalformedNote(f"checkpoint root is 32 bytes, got {len(self.root)}")
        for line in self.extensions:
            if not line or "\n" in line:
                raise MalformedNote("checkpoint extension line is empty or holds a newline")
            _check_text_chars(line, "checkpoint extension line")

    def body(self) -> str:
        """The note text: "<origin>\\n<size>\\n<base64 root>\\n" + extension lines."""
        head = f"{self.origin}\n{self.size}\n{_b64encode(self.root)}\n"
        return head + "".join(line + "\n" for line in self.extensions)

    @classmethod
    def parse_body(cls, text: str) -> Checkpoint:
        """Strict: >= 3 non-empty lines, canonical decimal size, 32-byte base64 root.
        A text parsed before is not parsed again (a checkpoint's cosignatures
        and its extensions each ask for it; the result is immutable). Only
        texts up to _CACHED_BODY characters are remembered, so what the cache
        holds is bounded whatever a peer sends."""
        if cls is not Checkpoint or len(text) > _CACHED_BODY:
            return cls._parse_body(text)
        return _parsed_body(text)

    @classmethod
    def _parse_body(cls, text: str) -> Checkpoint:
        if not text.endswith("\n"):
            raise MalformedNote("checkpoint text does not end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise MalformedNote("checkpoint text has fewer than three lines")
        if any(not line for line in lines):
            raise MalformedNote("checkpoint text has an empty line")
        origin, size, root, *extensions = lines
        if not _DECIMAL.match(size):
            raise MalformedNote(f"checkpoint size {size!r} is not a canonical decimal")
        return cls(origin, int(size), _b64decode(root, "checkpoint root"), tuple(extensions))


_CACHED_BODY = 4096     # characters: a view checkpoint of a few hundred issuers


@functools.lru_cache(maxsize=256)
def _parsed_body(text: str) -> Checkpoint:
    return Checkpoint._parse_body(text)


def sign_checkpoint(cp: Checkpoint, name: str, key: SigningKey) -> str:
    """The checkpoint as a note signed by `key`; `name` must equal the origin."""
    if name != cp.origin:
        raise MalformedNote(f"key name {name!r} differs from checkpoint origin {cp.origin!r}")
    return sign_note(cp.body(), name, key)


def open_checkpoint(note: str, verifier: Verifier, origin: str | None = None) -> Checkpoint:
    """Verify that `verifier` signed `note`, then parse it as a checkpoint.

    The origin must equal `origin`, or the verifier's key name when `origin`
    is None (our rule: key name == origin). Other signatures are ignored.
    Raises MalformedNote, BadSignature (also for a wrong origin),
    NoKnownSignature.
    """
    parsed, _ = verify_note(note, [verifier])
    cp = Checkpoint.parse_body(parsed.text)
    expected = verifier.name if origin is None else origin
    if cp.origin != expected:
        raise BadSignature(f"checkpoint origin {cp.origin!r} is not {expected!r}")
    return cp


# --- cosignatures (tlog-cosignature v1, Ed25519) ---------------------------


def cosignature_message(checkpoint_body: str, timestamp: int) -> bytes:
    """The v1 signed message: "cosignature/v1\\ntime <t>\\n" + the checkpoint text."""
    Checkpoint.parse_body(checkpoint_body)
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise MalformedNote("cosignature timestamp is not an integer")
    if not 0 <= timestamp <= MAX_COSIGNATURE_TIME:
        raise MalformedNote(f"cosignature timestamp {timestamp} is outside 0..2^63-1")
    return f"{COSIGNATURE_HEADER}time {timestamp}\n{checkpoint_body}".encode()


def cosign_line(checkpoint_body: str, name: str, key: SigningKey, timestamp: int) -> str:
    """One full signature line "— <name> <base64(id || u64 time || sig)>\\n".

    `timestamp` is POSIX seconds, passed in (never read from a clock here).
    """
    key_id = cosignature_key_id(name, key.public_bytes)
    signature = key.sign(cosignature_message(checkpoint_body, timestamp))
    return NoteSignature(name, key_id, struct.pack(">Q", timestamp) + signature).to_line()


def cosignature_timestamp(sig: NoteSignature) -> int:
    """The timestamp a v1 cosignature claims (unverified)."""
    if len(sig.signature) != 8 + ED25519_SIGNATURE_SIZE:
        raise MalformedNote("not a cosignature v1: payload is not 8 + 64 bytes")
    return struct.unpack(">Q", sig.signature[:8])[0]


def verify_cosignature(
    checkpoint_body: str, line_or_sig: NoteSignature | str, name: str, public_key: bytes
) -> int:
    """Check one cosignature by witness (`name`, `public_key`); return its timestamp.

    Raises MalformedNote when the line or the checkpoint text does not parse,
    BadSignature when the line is not from this witness or does not verify.
    """
    sig = (
        line_or_sig
        if isinstance(line_or_sig, NoteSignature)
        else NoteSignature.from_line(line_or_sig)
    )
    key_id = cosignature_key_id(name, public_key)
    if sig.name != name or sig.key_id != key_id:
        raise BadSignature(f"signature is by {sig.name}+{sig.key_id.hex()}, not by {name}")
    if len(sig.signature) != 8 + ED25519_SIGNATURE_SIZE:
        raise BadSignature(f"cosignature by {name} is not 8 + 64 bytes")
    timestamp = struct.unpack(">Q", sig.signature[:8])[0]
    if timestamp > MAX_COSIGNATURE_TIME:
        raise BadSignature(f"cosignature by {name} has a timestamp above 2^63-1")
    message = cosignature_message(checkpoint_body, timestamp)
    if not verify_ed25519(public_key, sig.signature[8:], message):
        raise BadSignature(f"invalid cosignature for key {name}+{key_id.hex()}")
    return timestamp


def count_cosignatures(note: str, witnesses: Mapping[str, bytes]) -> list[str]:
    """Names of `witnesses` (name -> Ed25519 public key) with a valid cosignature.

    Only cosignatures are checked, not the log's own signature (use
    `open_checkpoint` for that). Lines from unknown keys are ignored; a line
    whose name and key id match a witness must verify, else BadSignature (the
    spec's "reject the whole note"). Names come in note order, each once.
    """
    known: dict[tuple[str, bytes], str] = {}
    for name, public_key in witnesses.items():
        try:
            known[(name, cosignature_key_id(name, public_key))] = name
        except MalformedNote as e:
            raise MalformedConfig(f"witness {name!r}: {e}") from e
    parsed = Note.parse(note)
    Checkpoint.parse_body(parsed.text)
    names: list[str] = []
    for sig in parsed.signatures:
        name = known.get((sig.name, sig.key_id))
        if name is None:
            continue
        verify_cosignature(parsed.text, sig, name, witnesses[name])
        if name not in names:
            names.append(name)
    return names
