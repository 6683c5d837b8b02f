"""Structured logs: one JSON object per line on stderr (docs/operations.md).

Every line is `{"time": ISO 8601 UTC, "level", "event", "node", "logger",
...fields}`. Code logs an event with `event(logger, level, name, **fields)`;
a plain message (a library's, or a traceback) becomes event "message" with
its text in "msg". Records accepted and refused are not logged one by one:
`RecordTally` counts them and the node logs the counts once per interval.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from keys import ConfigError
from keys.layout import LOG_LEVELS
from ledger.record import Correction, Record

_EVENT = "markex_event"  # the LogRecord attribute `event` puts the event's name in
_FIELDS = "markex_fields"


def parse_level(name: str) -> int:
    """The `logging` level of a log level name (LOG_LEVELS); ConfigError otherwise."""
    if name not in LOG_LEVELS:
        raise ConfigError(f"unknown log level {name!r}; choose one of {', '.join(LOG_LEVELS)}")
    return int(logging.getLevelName(name.upper()))


def event(logger: logging.Logger, level: int, name: str, **fields: Any) -> None:
    """Log event `name` with `fields` (JSON values) at `level`; the message
    itself is the line's JSON too, for handlers other than JsonFormatter."""
    if logger.isEnabledFor(level):
        text = json.dumps({"event": name, **fields}, ensure_ascii=False, default=str)
        logger.log(level, "%s", text, extra={_EVENT: name, _FIELDS: fields})


class JsonFormatter(logging.Formatter):
    def __init__(self, participant: str) -> None:
        super().__init__()
        self.participant = participant

    def format(self, record: logging.LogRecord) -> str:
        name = getattr(record, _EVENT, None)
        if name is not None:
            body: dict[str, Any] = dict(getattr(record, _FIELDS, {}))
        else:
            msg = record.getMessage()
            try:  # older call sites log a JSON object holding its own "event"
                body = json.loads(msg) if msg.startswith("{") else {"msg": msg}
            except json.JSONDecodeError:
                body = {"msg": msg}
            if not isinstance(body, dict):
                body = {"msg": msg}
            name = str(body.pop("event", "message"))
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": name,
            "node": self.participant,
            "logger": record.name,
            **{k: v for k, v in body.items() if k not in ("time", "level", "event", "node")},
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup(participant: str, level: int = logging.INFO) -> None:
    """Send every log line of this process to stderr as JSON, from `level` up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(participant))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class RecordTally:
    """Counts of records accepted (per issuer) and refused (per issuer and
    reason) since the last `take`; thread-safe. `issuers`: the only issuer
    names kept; any other (a forged or garbled record's) counts as "unknown",
    so a peer cannot add lines or fields without end."""

    def __init__(self, issuers: frozenset[str]) -> None:
        self.issuers = issuers
        self._lock = threading.Lock()
        self._accepted: Counter[str] = Counter()
        self._refused: Counter[tuple[str, str]] = Counter()
        self._cosigned: tuple[int, int, tuple[str, ...]] | None = None  # count, size, by

    def outcome(self, status: str, reason: str | None, issuer: str | None, n: int = 1) -> None:
        """The outcome of `n` records at the writer (NodeCore.observer)."""
        who = issuer if issuer in self.issuers else "unknown"
        with self._lock:
            if status == "accepted":
                self._accepted[who] += n
            elif status in ("rejected", "equivocation"):
                self._refused[(who, reason or status)] += n

    def cosigned(self, size: int, by: list[str]) -> None:
        """A log checkpoint of `size` reached its quorum, cosigned by `by`."""
        with self._lock:
            n = 1 if self._cosigned is None else self._cosigned[0] + 1
            self._cosigned = (n, size, tuple(sorted(by)))

    def take(self) -> list[tuple[str, dict[str, Any]]]:
        """The events to log for the interval now ending (none when nothing
        happened), and start the next: ("records", {accepted: {issuer: n},
        refused: {issuer: {reason: n}}}), ("checkpoint-cosigned", {count,
        size, by}) for the latest checkpoint that reached its quorum."""
        with self._lock:
            acc, ref, cos = self._accepted, self._refused, self._cosigned
            self._accepted, self._refused, self._cosigned = Counter(), Counter(), None
        out: list[tuple[str, dict[str, Any]]] = []
        if acc or ref:
            refused: dict[str, dict[str, int]] = {}
            for (who, why), n in sorted(ref.items()):
                refused.setdefault(who, {})[why] = n
            out.append(("records", {"accepted": dict(sorted(acc.items())), "refused": refused}))
        if cos is not None:
            out.append(("checkpoint-cosigned", {"count": cos[0], "size": cos[1],
                                                "by": list(cos[2])}))
        return out


def appeal_events(records: Sequence[Record], held: Callable[[bytes], Record | None]
                  ) -> list[tuple[str, dict[str, Any]]]:
    """The "appeal-filed" and "appeal-decided" events of newly accepted
    `records`; `held(id)` is a record the node holds. Ids are 16 hex digits;
    no reason is logged (statements are personal)."""
    out: list[tuple[str, dict[str, Any]]] = []
    for r in records:
        p = r.payload
        if not isinstance(p, Correction):
            continue
        if p.is_decision:
            out.append(("appeal-decided", {"appeal": p.appeal_id.hex()[:16],
                                           "decision": r.id.hex()[:16],
                                           "outcome": p.outcome, "by": r.issuer}))
            continue
        # A correction of another's mark is an appeal; of one's own, not.
        others = [t for t in p.targets if (m := held(t)) is not None and m.issuer != r.issuer]
        if others:
            out.append(("appeal-filed", {"appeal": r.id.hex()[:16], "by": r.issuer,
                                         "marks": [t.hex()[:16] for t in others]}))
    return out
