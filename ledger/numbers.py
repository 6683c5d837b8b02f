"""Phone numbers: every number the ledger keeps is E.164 (``+8613812345678``).

National forms (``13812345678``, ``010-12345678``, ``4001234567``) and China's
short service numbers (``95555``, ``10086``) are read with libphonenumber's
metadata for China (the `phonenumbers` package) rather than hand-written
patterns; numbering plans change and the library tracks them. Short numbers
have no E.164 form, so they are kept as ``+86`` followed by the short number.
"""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
from phonenumbers import shortnumberinfo

from ledger.errors import InvalidNumber

DEFAULT_REGION = "CN"
MAX_INPUT_LENGTH = 32
# libphonenumber is lenient (it reads "tel:" URIs, extensions, two numbers joined
# by ";"); a mark names exactly one number, written with digits and separators.
_ALLOWED = frozenset("0123456789+-() .")


def normalize(raw: str) -> str:
    """The E.164 form of `raw`, or InvalidNumber saying why not."""
    if not isinstance(raw, str):
        raise InvalidNumber("a phone number must be a string")
    if not raw or len(raw) > MAX_INPUT_LENGTH:
        raise InvalidNumber(f"{raw[:MAX_INPUT_LENGTH]!r} is not a phone number (length)")
    if not _ALLOWED.issuperset(raw):
        bad = next(c for c in raw if c not in _ALLOWED)
        raise InvalidNumber(f"{raw!r} is not a phone number: {bad!r} is not a digit or separator")
    return _normalize(raw)


@lru_cache(maxsize=200_000)
def _normalize(raw: str) -> str:
    try:
        parsed = phonenumbers.parse(raw, DEFAULT_REGION)
    except phonenumbers.NumberParseException as e:
        raise InvalidNumber(f"{raw!r} is not a phone number: {e._msg}") from None
    if phonenumbers.is_valid_number(parsed):
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    # Short service numbers (95555, 12345, 10086) are valid only nationally.
    if parsed.country_code == 86 and shortnumberinfo.is_valid_short_number(parsed):
        return f"+86{parsed.national_number}"
    raise InvalidNumber(f"{raw!r} is not a valid number in the numbering plan")


def is_normalized(number: str) -> bool:
    try:
        return normalize(number) == number
    except InvalidNumber:
        return False
