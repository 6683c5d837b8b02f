"""Personal numbers in records, sealed with the members' key.

The key itself is keys.sealing.MembersKey (the signed consortium
configuration names its id and carries it, and keys/ imports no ledger);
this module keeps the names ledger code imports and puts a value that does
not open into the ledger's error tree: `SealError` here is a MalformedRecord
(and a keys.SealError, so either `except` catches it). `open_sealed` is
`MembersKey.open` raising it. What sealing buys and costs is in
docs/consent.md ("Privacy").
"""

from __future__ import annotations

import keys
from keys.sealing import (
    COMPLAINANT,
    KEY_BYTES,
    KEY_FILE,
    KEY_ID_BYTES,
    MAX_SEALED_BYTES,
    SUBSCRIBER,
    MembersKey,
    key_id_of,
)
from ledger.errors import MalformedRecord

__all__ = ["COMPLAINANT", "KEY_BYTES", "KEY_FILE", "KEY_ID_BYTES", "MAX_SEALED_BYTES",
           "SUBSCRIBER", "MembersKey", "SealError", "key_id_of", "open_sealed"]


class SealError(MalformedRecord, keys.SealError):
    """A sealed value that does not open with the members' key in force."""


def open_sealed(key: MembersKey, sealed: bytes, purpose: bytes = SUBSCRIBER) -> str:
    """The number `sealed` holds. Raises SealError (a MalformedRecord)."""
    try:
        return key.open(sealed, purpose)
    except keys.SealError as e:
        raise SealError(str(e)) from e
