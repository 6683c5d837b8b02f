"""The consortium's names: the origin lines of each participant's log and
view checkpoints, the key name it cosigns with, and the way back from an
origin to the participant. One rule, used by the log, the view, the
witness, the verifier and the auditor."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from keys.consortium import Participant


def log_origin(consortium_name: str, participant_id: str) -> str:
    """The origin line (and note key name) of a participant's log checkpoints."""
    return f"{consortium_name}/log/{participant_id}"


def view_origin(consortium_name: str, participant_id: str) -> str:
    """The origin line (and note key name) of a participant's view checkpoints."""
    return f"{consortium_name}/view/{participant_id}"


def witness_name(consortium_name: str, participant_id: str) -> str:
    """The key name a participant cosigns others' checkpoints with."""
    return f"{consortium_name}/witness/{participant_id}"


def origin_of(text: str) -> str:
    """The origin line of a checkpoint or note text (its first line)."""
    return text.split("\n", 1)[0]


def participant_of_log(
    consortium_name: str, participants: Iterable[Participant], origin: str
) -> Participant | None:
    """The participant whose log checkpoints carry `origin`, or None."""
    for p in participants:
        if origin == log_origin(consortium_name, p.id):
            return p
    return None


def participant_of_view(
    consortium_name: str, participants: Iterable[Participant], origin: str
) -> Participant | None:
    """The participant whose view checkpoints carry `origin`, or None."""
    for p in participants:
        if origin == view_origin(consortium_name, p.id):
            return p
    return None
