"""The consortium members' shared sealing key (AES-SIV, RFC 5297).

A subscriber's number in a preference (and, later, a complainant's) is
personal information: it never leaves the member side in clear. A record
that names such a number carries it sealed with the members' key:

    sealed = AES-SIV(members key; associated data = PURPOSE; number's E.164 bytes)

Deterministic, so one number always seals to the same bytes: the node keys
a subscriber's state by the sealed value and screens a callee by sealing
it, without a table of clear numbers. Authenticated, so a sealed value that
was not made with the key does not open. The key's id (the first 8 bytes of
SHA-256 over "markex/v1/members-key" 0x00 key) travels beside the sealed
value, so the key can be rotated, and the signed consortium configuration
names the id in force (`Consortium.members_key_id`) so a node given another
key refuses to start (`keys.layout.load_consortium`).

The key lives here, in keys/, because the consortium configuration carries
it and keys/ imports no ledger; ledger/sealing.py re-exports it and wraps
`SealError` as a MalformedRecord for the ledger's error tree.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from keys import SealError

KEY_BYTES = 64  # AES-256-SIV: two 256-bit keys
KEY_ID_BYTES = 8
SUBSCRIBER = b"markex/v1/subscriber"   # the purpose: a preference's subscriber
COMPLAINANT = b"markex/v1/complainant"  # a complaint's complainant (issue 16)
MAX_SEALED_BYTES = 16 + 32             # the SIV tag and an E.164 number with room
KEY_FILE = "members.key"                # in a member's folder, mode 0600

__all__ = ["COMPLAINANT", "KEY_BYTES", "KEY_FILE", "KEY_ID_BYTES", "MAX_SEALED_BYTES",
           "SUBSCRIBER", "MembersKey", "SealError", "key_id_of"]


def key_id_of(key: bytes) -> bytes:
    return hashlib.sha256(b"markex/v1/members-key\x00" + key).digest()[:KEY_ID_BYTES]


@dataclass(frozen=True)
class MembersKey:
    """The consortium members' shared sealing key."""

    key: bytes

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES:
            raise ValueError(f"a members' key is {KEY_BYTES} bytes, got {len(self.key)}")
        object.__setattr__(self, "_siv", AESSIV(self.key))
        object.__setattr__(self, "_id", key_id_of(self.key))  # read on every seal's record

    def __repr__(self) -> str:
        # Never the key itself in a log line or a traceback.
        return f"MembersKey(id={self.id.hex()})"

    @classmethod
    def generate(cls) -> MembersKey:
        return cls(os.urandom(KEY_BYTES))

    @classmethod
    def load(cls, path: Path) -> MembersKey:
        """Raises OSError, or ValueError for a file that is not a key."""
        raw = path.read_bytes().strip()
        try:
            key = bytes.fromhex(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"{path} is not a members' key (hex, {KEY_BYTES} bytes)") from e
        return cls(key)

    def write(self, path: Path) -> None:
        """Write the key as hex, mode 0600 (also when the file existed)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.key.hex() + "\n")

    @property
    def id(self) -> bytes:
        return self._id  # type: ignore[attr-defined, no-any-return]

    def seal(self, number: str, purpose: bytes = SUBSCRIBER) -> bytes:
        """The sealed bytes of an E.164 number (deterministic)."""
        return self._siv.encrypt(number.encode("ascii"), [purpose])  # type: ignore[attr-defined]

    def open(self, sealed: bytes, purpose: bytes = SUBSCRIBER) -> str:
        """The number a sealed value holds. Raises keys.SealError (ledger code
        catches ledger.sealing.SealError, which `ledger.sealing.open_sealed` raises)."""
        if not 16 < len(sealed) <= MAX_SEALED_BYTES:
            raise SealError(f"a sealed number is 17..{MAX_SEALED_BYTES} bytes, got {len(sealed)}")
        try:
            raw = self._siv.decrypt(sealed, [purpose])  # type: ignore[attr-defined]
            return raw.decode("ascii")
        except Exception as e:  # InvalidTag, or bytes that are not ASCII
            raise SealError("the sealed number does not open with the members' key") from e
