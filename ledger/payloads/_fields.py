"""Field rules shared by payload types (sizes, the number's form)."""

from __future__ import annotations

from ledger.errors import InvalidNumber
from ledger.numbers import normalize

ID_SIZE = 32
MAX_TARGETS = 64
MAX_REASON = 1024
MAX_CATEGORY = 64


def read_number(raw: str) -> str:
    """The E.164 form of a number read from a record. Raises InvalidNumber."""
    try:
        return normalize(raw)
    except InvalidNumber:
        raise
    except Exception as e:  # phonenumbers must never take the node down
        raise InvalidNumber(f"{raw[:32]!r} is not a phone number") from e


def normalized_field(obj: object, name: str) -> None:
    """Set the frozen dataclass field `name` of `obj` to its number's E.164
    form, so a payload always holds the normalized number whatever its
    caller passed. Raises InvalidNumber."""
    raw = getattr(obj, name)
    number = read_number(raw)  # InvalidNumber also for a non-string
    if number is not raw:
        object.__setattr__(obj, name, number)
