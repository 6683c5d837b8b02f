"""Consent: subscribers' preferences and marketers' lines, as the screen reads them.

    facts.py   PreferenceFact, LineFact, Subscriber, Deregistration; ConsentReader
    rules.py   the rules of docs/consent.md as pure functions (in force, refuses,
               keep, lines' overlaps and lookup, the effect checks)
    codec.py   the stored bytes
    state.py   ConsentState (the one apply), MemoryConsent, StoredConsent, catch_up
"""

from ledger.consent.facts import (
    ConsentReader,
    Deregistration,
    LineFact,
    PreferenceFact,
    Subscriber,
)
from ledger.consent.rules import allowed_at, in_force, refuses
from ledger.consent.state import ConsentState, MemoryConsent, StoredConsent, catch_up

__all__ = [
    "ConsentReader",
    "ConsentState",
    "Deregistration",
    "LineFact",
    "MemoryConsent",
    "PreferenceFact",
    "StoredConsent",
    "Subscriber",
    "allowed_at",
    "catch_up",
    "in_force",
    "refuses",
]
