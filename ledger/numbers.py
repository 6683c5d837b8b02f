"""Phone numbers: every number the ledger keeps is E.164 (``+8613812345678``).

National forms (``13812345678``, ``010-12345678``, ``4001234567``) and China's
short service numbers (``95555``, ``10086``) are read with libphonenumber's
metadata for China (the `phonenumbers` package) rather than hand-written
patterns; numbering plans change and the library tracks them. Short numbers
have no E.164 form, so they are kept as ``+86`` followed by the short number.
"""

from __future__ import annotations

import re
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
    if type(raw) is str and (fast := _e164_fast(raw)) is not None:
        return fast  # only "+86" and digits, so none of the checks below applies
    if not isinstance(raw, str):
        raise InvalidNumber("a phone number must be a string")
    if not raw or len(raw) > MAX_INPUT_LENGTH:
        raise InvalidNumber(f"{raw[:MAX_INPUT_LENGTH]!r} is not a phone number (length)")
    if not _ALLOWED.issuperset(raw):
        bad = next(c for c in raw if c not in _ALLOWED)
        raise InvalidNumber(f"{raw!r} is not a phone number: {bad!r} is not a digit or separator")
    return _normalize(raw)


def _type_descs(metadata: phonenumbers.PhoneMetadata) -> list[phonenumbers.PhoneNumberDesc]:
    """The number-type descriptions libphonenumber's _number_type_helper
    tries after the general one; a number is valid when one matches."""
    names = [
        "premium_rate",
        "toll_free",
        "shared_cost",
        "voip",
        "personal_number",
        "pager",
        "uan",
        "voicemail",
        "fixed_line",
    ]
    if not metadata.same_mobile_and_fixed_line_pattern:
        names.append("mobile")
    descs = [getattr(metadata, n) for n in names]
    return [d for d in descs if d is not None and d.national_number_pattern]


def _by_length(
    metadata: phonenumbers.PhoneMetadata,
) -> dict[int, tuple[re.Pattern[str], re.Pattern[str]]]:
    """For each significant-number length the general description allows, the
    general pattern and one alternation of the type patterns that allow it."""
    general = metadata.general_desc
    types = _type_descs(metadata)
    out: dict[int, tuple[re.Pattern[str], re.Pattern[str]]] = {}
    for n in general.possible_length:
        alts = [
            d.national_number_pattern
            for d in types
            if not d.possible_length or n in d.possible_length
        ]
        if alts:
            # Last type first: mobile, then fixed line, the numbers most asked.
            # The order of an alternation followed by \Z never changes whether
            # the whole matches, only how soon a match is found.
            out[n] = (
                re.compile(general.national_number_pattern),
                re.compile("|".join(f"(?:{a})" for a in reversed(alts))),
            )
    return out


_CN = phonenumbers.PhoneMetadata.metadata_for_region(DEFAULT_REGION)
_CN_E164 = re.compile(r"\+86([1-9][0-9]{1,16})")
_CN_PREFIX = re.compile(_CN.national_prefix_for_parsing or "(?!)")
_CN_BY_LENGTH = _by_length(_CN)
# The same test as one pattern per input length (one regex call instead of
# four on the call path): "+86", a nonzero digit then ASCII digits only, no
# national prefix or carrier code that parse could strip, the general pattern
# and one type's pattern, each over the whole significant number.
_CN_FAST = {
    n + 3: re.compile(rf"\+86(?=[1-9][0-9]*\Z)(?!(?:{_CN_PREFIX.pattern}))"
                      rf"(?=(?:{general.pattern})\Z)(?:{types.pattern})\Z")
    for n, (general, types) in _CN_BY_LENGTH.items()
}


def _e164_fast(raw: str) -> str | None:
    """`raw` when it is already the E.164 form of a valid Chinese number (the
    common case: every stored mark, every lookup from an app), else None
    (ask libphonenumber). It answers from the same metadata by the same rule
    as parse + is_valid_number + format (general pattern and length, then any
    number type's pattern and length), without libphonenumber's parse;
    numbers on which parse could strip a national prefix or carrier code go
    to the library. tests/test_fuzz.py holds the two to agreement."""
    pat = _CN_FAST.get(len(raw))
    return raw if pat is not None and pat.match(raw) else None


def normalize_each(raws: list[str]) -> list[str | InvalidNumber]:
    """`normalize` of each, in order: its E.164 form, or the InvalidNumber
    it raises (a batch's numbers, with no call per number in the common case)."""
    fast = _CN_FAST.get
    out: list[str | InvalidNumber] = []
    for raw in raws:
        if type(raw) is str and (pat := fast(len(raw))) is not None and pat.match(raw):
            out.append(raw)              # _e164_fast, inlined
            continue
        try:
            out.append(normalize(raw))
        except InvalidNumber as e:
            out.append(e)
    return out


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
