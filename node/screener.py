"""The screener: a call's facts gathered from this node's own state, and its
decision (ledger/screen.py `decide`, the one rule table).

Two ways out, one set of facts:
- `decide_many(calls)`: the decisions (Screen, ScreenStream, the CLI);
- `answer_bytes(calls, tags)`: each decision's ScreenDecision bytes
  (ScreenBatch, the switches' path). A caller whose decision does not depend
  on the callee (not marketing: no live line, a category outside
  policy.marketing_categories) is answered from the template its screen row
  holds for the interval of the call's time, or, with no entry at all, the
  unknown caller's template; a marketing caller from its row's or its line's
  template unless its callee's preference (one multi-get per batch) refuses
  it; the others go through `decide` as above.
  tests/test_screen_fast.py holds the two ways equal, byte for byte.

A caller's facts come, fastest first, from its row in the screen index
(node/screenindex.py) when the row is known to be its entry's; from its
entry's bytes when the row's digest matches them; else from the entry
decoded and evaluated (`ResolutionCache`). A trusted caller without a row
has no entry, or one that answers as none from the index's `elided_from` on
(`stored_row`): the first pass answers it as rule 9 only from then on; the
other paths read its entry.
"""

from __future__ import annotations

import hashlib
import logging
import marshal
import threading
from bisect import bisect_right
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple, Protocol

from ledger.complaints.facts import SanctionFact
from ledger.complaints.rules import Listing
from ledger.consent.facts import ConsentReader, LineFact
from ledger.screen import (
    CALLER_REGISTERED,
    CallerView,
    Decision,
    NoMembersKey,
    decide,
    is_marketing,
    redress,
    refuses_any,
)
from ledger.view.entries import Entry
from ledger.view.resolution import Resolution, evaluate, instants
from ledger.view.summary import Summary, entry_digest, summarize
from node.screenwire import (
    CALLEE_KEY,
    CALLER_KEY,
    ONE_BYTE,
    SMALL_VARINT,
    TAG_KEY,
    Template,
    at_bytes,
    render_at,
    tag_field,
    template_of,
    text_field,
)

if TYPE_CHECKING:
    from keys.consortium import Consortium

log = logging.getLogger("markex.node")

CACHE_ENTRIES = 100_000   # distinct callers' entries kept (the bound on the cache's memory)
LINE_TEMPLATES = 65_536   # registered callers' templates kept (dropped all at once when full)
# 2: a marketer's interval holds its template and its industries; 3: what the
# first pass reads (version, policy, from_ms, ahead, templates) marshalled first,
# the digest and facts after it (`row_of`)
ROW_VERSION = 3
_TAIL = 4   # a row's last four bytes: where its digest and facts begin (big-endian)
# What the index stores for an entry whose row could not be made: no row of
# any version (the first pass leaves it to the rest, which reads the entry),
# never "no row", which a clean number's elided entry may mean.
UNREAD_ROW = b""


def _code_digest() -> bytes:
    """The source of the modules a stored row's summary and templates come
    from (the rule table, its reasons, the summary, the evaluation, the wire
    encoding, this file): a release that changes any of them makes the rows
    of the one before it another version, redone at the first start."""
    import sys
    from pathlib import Path

    names = ("ledger.screen", "ledger.view.summary", "ledger.view.resolution",
             "ledger.view.entries", "node.screenwire", __name__)
    h = hashlib.sha256()
    for name in names:
        h.update(Path(sys.modules[name].__file__ or "").read_bytes())
    return h.digest()[:8]


ROWS_CODE = _code_digest()


class Call(NamedTuple):
    """One call to screen, normalized (a NamedTuple: one is built per call)."""

    caller: str
    callee: str
    at_ms: int
    mode: str


class EntrySource(Protocol):
    """The consistent read of the view the lookups use (ViewKeeper.entries_bytes)."""

    def entries_bytes(self, e164s: list[str]) -> list[bytes | None]: ...


class ListingSource(Protocol):
    """The bad list (node.complaints, node/complaintkeeper.py)."""

    def listing(self, uscc: str) -> Listing | None: ...


class RowSource(Protocol):
    """The screen index (node/screenindex.py)."""

    def rows(self, numbers: list[str]) -> tuple[list[bytes | None], list[bool]]: ...

    @property
    def elided_from(self) -> int:
        """The latest start of a row not stored (`Screener.stored_row`): a
        trusted number without a row has no entry, or one that answers as none
        from then on (0: no row was elided)."""
        ...


@dataclass
class _Cached:
    instants: tuple[int, ...]
    by_interval: dict[int, Resolution]  # index of the interval (bisect_right) -> resolution


class ResolutionCache:
    """At most `size` entries, the oldest inserted dropped first; each keeps
    its instants and the resolutions computed so far, keyed by the entry
    bytes' digest (the same bytes are the same entry in any process and any
    copy of the store, so it is never invalidated). Reads take no lock; a
    race computes one resolution twice, which is harmless since both are
    equal (and makes `hits` and `misses` approximate)."""

    def __init__(self, size: int = CACHE_ENTRIES) -> None:
        self.size = size
        self._items: dict[bytes, _Cached] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def resolve(self, raw: bytes, at_ms: int) -> Resolution:
        """`Entry.decode(raw).evaluate(at_ms)`, but for `at_ms`: the returned
        resolution's `at_ms` is the first time of its interval evaluated.
        Raises BadInput for bytes that are no entry."""
        key = entry_digest(raw)
        got = self._items.get(key)
        entry = None
        if got is None:
            self.misses += 1
            entry = Entry.decode(raw)
            got = _Cached(instants(entry), {})
            with self._lock:
                while len(self._items) >= self.size:
                    self._items.pop(next(iter(self._items)))
                self._items[key] = got
        else:
            self.hits += 1
        i = bisect_right(got.instants, at_ms)
        res = got.by_interval.get(i)
        if res is None:
            res = got.by_interval[i] = evaluate(entry or Entry.decode(raw), at_ms)
        return res


def policy_tag(cons: Consortium) -> bytes:
    """Names the configuration a row's templates were made under."""
    return hashlib.sha256(cons.raw or cons.to_json_bytes()).digest()[:8]


class _Row(NamedTuple):
    summary: Summary
    # per interval: a Template, or (prefix, suffix, industries) for a marketer
    templates: tuple[tuple, ...]


def _read_row(data: bytes, tag: bytes) -> _Row | None:
    """The row `row_of` wrote, or None for one of another version or policy
    (or bytes that are no row: it is redone)."""
    try:
        version, row_tag, from_ms, ahead, templates = marshal.loads(data)
        if version != ROW_VERSION or row_tag != tag:
            return None
        digest, facts = marshal.loads(data[int.from_bytes(data[-_TAIL:], "big"):-_TAIL])
    except (ValueError, EOFError, TypeError):
        return None
    return _Row(Summary(digest, from_ms, ahead, facts), templates)


class _Facts(NamedTuple):
    """A caller's facts at a call's time: evaluated (`res`), or in its row
    (`row`, interval `k`: built only when asked); `template` the row's for
    that interval (a marketer's with its industries third). All None: the
    caller has no entry."""

    res: CallerView | None
    row: _Row | None = None
    k: int = 0
    template: tuple | None = None

    def view(self) -> CallerView | None:
        return self.row.summary.facts_of(self.k) if self.row is not None else self.res

    @property
    def present(self) -> bool:
        return self.res is not None or self.row is not None


_ABSENT = _Facts(None)


class Screener:
    """Decides calls from this node's state: the view's entries (`view`), the
    consent state (`consent`), the screen index (`index`, optional), the
    consortium's policy and members' key."""

    def __init__(self, cons: Consortium, view: EntrySource, consent: ConsentReader,
                 cache: ResolutionCache | None = None, index: RowSource | None = None,
                 back_ms: int | None = None,
                 listings: ListingSource | None = None) -> None:
        self.cons = cons
        # The bad list, read only for callers with a live line (the templates of
        # callers without one need none: a listing reaches a caller through its line).
        self.listings = listings
        self.view = view
        self.consent = consent
        self.cache = cache if cache is not None else ResolutionCache()
        self.index = index
        self.back_ms = cons.policy.clock_skew_ms if back_ms is None else back_ms
        self.tag = policy_tag(cons)
        # What a stored row was made under: rows of another version are redone.
        self.rows_version = bytes((ROW_VERSION,)) + self.tag + ROWS_CODE
        self._unknown: Template | None = None   # an unmarked, unregistered caller's answer
        self._none_row: tuple | None = None     # its template in a row (`stored_row`)
        # (caller, row digest, interval, *line key) -> the answer when the callee does
        # not refuse; a line's key alone -> the answer of a caller with no entry, but
        # its redress
        self._line_templates: dict[object, Template] = {}
        self.row_hits = 0        # callers answered from their row (tests, metrics)

    # ------------------------------------------------------------ rows
    def row_of(self, number: str, raw: bytes | Entry, now_ms: int) -> bytes:
        """The screen row of `number`'s entry bytes (or Entry, as the view
        built it), for times from a little before `now_ms`. Raises BadInput
        for bytes that are no entry."""
        s, templates = self._row_parts(number, raw, now_ms)
        return self._row_bytes(s, templates)

    def stored_row(self, number: str, raw: bytes | Entry, now_ms: int) -> bytes | int:
        """What the index stores for `number`'s entry: its row (`row_of`), or,
        when that row would answer a caller without a line at every time from
        its start exactly as no entry does (rule 9's template in every
        interval: marks that give no category and no risk that counts), the
        row's start (an int): no row is stored, and the index keeps the
        latest such start (`ScreenIndex.elided_from`). Raises BadInput for
        bytes that are no entry."""
        s, templates = self._row_parts(number, raw, now_ms)
        none = self._none_row_template(number, s.from_ms)
        if all(t == none for t in templates):
            return s.from_ms
        return self._row_bytes(s, templates)

    def _row_parts(self, number: str, raw: bytes | Entry, now_ms: int
                   ) -> tuple[Summary, list[tuple]]:
        s = summarize(raw, now_ms - self.back_ms)
        templates: list[tuple] = []
        marketing = self.cons.policy.marketing_categories
        # With no line and no preference a decision reads no time (rules 3 and
        # 4 need them): intervals of equal facts (t and t+1 often are) share one
        made: dict[tuple, tuple] = {}
        for i, start in enumerate((s.from_ms, *s.ahead)):
            t = made.get(s.facts[i])
            if t is None:
                f = s.facts_of(i)
                d = decide(self.cons, number, "", start, "voice", f, None, None)
                t = tuple(template_of(d))
                # A marketer's answer (unregistered: no line) depends on the callee
                # only through rule 4: it is the template's unless the callee
                # refuses one of its category's industries (kept third).
                inds = marketing.get(f.category) if f.category is not None else None
                t = made[s.facts[i]] = t if inds is None else (*t, tuple(inds))
            templates.append(t)
        return s, templates

    def _none_row_template(self, number: str, at_ms: int) -> tuple:
        """A row's template for `number` without an entry: rule 1's for a
        protected number, else rule 9's, the same for every number and time
        (made once)."""
        if self.cons.policy.protecting(number) is None and self._none_row is not None:
            return self._none_row
        t = tuple(template_of(decide(self.cons, number, "", at_ms, "voice", None, None, None)))
        if self.cons.policy.protecting(number) is None:
            self._none_row = t
        return t

    def _row_bytes(self, s: Summary, templates: list[tuple]) -> bytes:
        # marshal.loads reads the head alone (it ignores the bytes after an
        # object): the batch's first pass builds no digest and no facts
        head = marshal.dumps((ROW_VERSION, self.tag, s.from_ms, s.ahead, tuple(templates)))
        return head + marshal.dumps((s.digest, s.facts)) + len(head).to_bytes(_TAIL, "big")

    # ------------------------------------------------------------ facts
    def _need_key(self) -> None:
        if self.cons.members_key is None:
            raise NoMembersKey(
                "this node holds no members' key (node.toml members_key): it cannot read "
                "subscribers' preferences, so it does not screen")

    def _rows(self, callers: list[str]) -> tuple[list[bytes | None], list[bool]]:
        if self.index is not None:
            return self.index.rows(callers)
        return [None] * len(callers), [False] * len(callers)

    def _elided_from(self) -> int:
        """The index's `elided_from`, read after the rows it covers (it only grows)."""
        return self.index.elided_from if self.index is not None else 0

    def _facts(self, calls: list[Call], read: tuple[list[bytes | None], list[bool]] | None = None,
               lines: list[LineFact | None] | None = None) -> list[_Facts]:
        """Each caller's facts at its call's time (and its template); `read`,
        the callers' rows and trust when already read (`_rows`); `lines`,
        their lines at their times, when known.

        A trusted absent row may be an elided one's (`stored_row`): it is
        answered as no entry only for a caller without a line at or after
        `elided_from` (its answer is then rule 9's either way); any other
        call reads the entry."""
        callers = [c.caller for c in calls]
        rows, trusted = read if read is not None else self._rows(callers)
        elided = self._elided_from()
        parsed = [None if d is None else _read_row(d, self.tag) for d in rows]
        # unsure: not clean; a stored row this code cannot read (UNREAD_ROW);
        # or no row where an elided entry could answer otherwise than as none
        unsure = [i for i, (t, d, r) in enumerate(zip(trusted, rows, parsed, strict=True))
                  if not t or (d is not None and r is None) or (elided and d is None and (
                      lines is None or lines[i] is not None or calls[i].at_ms < elided))]
        raws: dict[int, bytes | None] = {}
        if unsure:
            raws = dict(zip(unsure, self.view.entries_bytes([callers[i] for i in unsure]),
                            strict=True))
        out: list[_Facts] = []
        hits = 0
        for i, c in enumerate(calls):
            row = parsed[i]
            if i in raws:
                raw = raws[i]
                if raw is None:
                    out.append(_ABSENT)
                    continue
                if row is not None and row.summary.digest != entry_digest(raw):
                    row = None
            elif row is None:            # a clean number without a row: no entry, or
                out.append(_ABSENT)      # one answering as none (its entry not read)
                continue
            k = None if row is None else row.summary.interval(c.at_ms)
            if row is not None and k is not None:
                hits += 1
                out.append(_Facts(None, row, k, row.templates[k]))
                continue
            raw = raws.get(i)
            if raw is None:          # a clean row, but a time before it: read the entry
                raw = self.view.entries_bytes([c.caller])[0]
            out.append(_ABSENT if raw is None else _Facts(self.cache.resolve(raw, c.at_ms)))
        self.row_hits += hits
        return out

    def _decide(self, c: Call, f: _Facts, line: LineFact | None) -> Decision:
        cons, consent = self.cons, self.consent
        # Only a marketer's decision reads the callee's preference (rule 4):
        # the seal and the read are skipped for every other caller.
        res = f.view()
        pref = None
        if is_marketing(cons, res, line, c.at_ms):
            key = cons.members_key
            assert key is not None
            pref = consent.preference_at(key.seal(c.callee), c.at_ms)
        return decide(cons, c.caller, c.callee, c.at_ms, c.mode, res, line, pref,
                      self._listed(line, c.at_ms))

    def _listed(self, line: LineFact | None, at_ms: int,
                held: dict[str, Listing | None] | None = None) -> SanctionFact | None:
        """The listing in force at `at_ms` of the live line's enterprise, or
        None; `held`, the listings already read by enterprise (a batch's)."""
        if line is None or self.listings is None or (line.ended_at and at_ms >= line.ended_at):
            return None
        if held is None:
            listing = self.listings.listing(line.uscc)
        elif line.uscc in held:
            listing = held[line.uscc]
        else:
            listing = held[line.uscc] = self.listings.listing(line.uscc)
        return None if listing is None else listing.in_force(at_ms)

    # ------------------------------------------------------------ answers
    def decide_many(self, calls: list[Call]) -> list[Decision]:
        """One decision per call, in order. Raises NoMembersKey when this node
        cannot read preferences."""
        self._need_key()
        line_at = self.consent.line_at
        lines = [line_at(c.caller, c.at_ms) for c in calls]
        return [self._decide(c, f, line)
                for c, f, line in zip(calls, self._facts(calls, None, lines), lines, strict=True)]

    def answer_bytes(self, calls: list[Call], tags: list[int],
                     encode: object) -> list[bytes]:
        """Each call's ScreenDecision bytes, in order (`answer_columns` of
        the calls' fields)."""
        return self.answer_columns([c.caller for c in calls], [c.callee for c in calls],
                                   [c.at_ms for c in calls], [c.mode for c in calls], tags,
                                   encode)

    def answer_columns(self, callers: list[str], callees: list[str], ats: list[int],
                       modes: list[str], tags: list[int], encode: object) -> list[bytes]:
        """Each call's ScreenDecision bytes, in order, the calls given as one
        list per field (normalized, as a Call holds them): a template's when
        the decision does not turn on the callee, else `encode(call, decision, tag)`'s.

        The batch's two commonest callers are answered first, in one pass
        with no object per call: no line and a trusted row whose interval's
        template needs no callee, or no line, no entry (a trusted absence)
        and not protected (rule 9's one template). The rest (`_answer_rest`)
        are answered from the same read of their rows."""
        self._need_key()
        line_at = self.consent.line_reader()
        exact, heads = self.cons.policy.protected_heads    # protecting(), inlined
        rows, trusted = self._rows(callers)
        elided = self._elided_from()
        tag_, unknown, loads = self.tag, self._unknown, marshal.loads
        out: list[bytes | None] = [None] * len(callers)
        rest: list[int] = []
        lines: dict[int, LineFact] = {}
        at_ms, at_field = -1, b""
        hits = 0
        join, one, small = b"".join, ONE_BYTE, SMALL_VARINT
        for i, (caller, at, data, sure) in enumerate(zip(callers, ats, rows, trusted,
                                                          strict=True)):
            if sure:
                line = line_at(caller, at)
                if line is not None:
                    lines[i] = line
                    rest.append(i)
                    continue
                t = None
                if data is None:   # no entry, or from `elided` on one that answers as none
                    if at >= elided and caller not in exact and not caller.startswith(heads):
                        if unknown is None:
                            unknown = self._unknown_template(
                                Call(caller, callees[i], at, modes[i]))
                        t = unknown
                else:                             # _read_row and Summary.interval, inlined
                    try:
                        version, row_tag, from_ms, ahead, templates = loads(data)  # the head
                        if version == ROW_VERSION and row_tag == tag_ and at >= from_ms:
                            t = templates[bisect_right(ahead, at)]
                            if len(t) == 2:
                                hits += 1
                            else:                 # a marketer's: the callee decides
                                t = None
                    except (ValueError, EOFError, TypeError, IndexError):
                        t = None                  # no row of this release: the rest reads it
                if t is not None:
                    if at != at_ms:               # the calls of a batch mostly share one time
                        at_ms, at_field = at, at_bytes(at)
                    # render_at, inlined (E.164 numbers: ASCII, under 128 bytes)
                    tag = tags[i]
                    a, b = caller.encode(), callees[i].encode()
                    out[i] = join((t[0], TAG_KEY + small[tag] if 0 < tag < 0x4000 else
                                   tag_field(tag),
                                   CALLER_KEY, one[len(a)], a, CALLEE_KEY, one[len(b)], b,
                                   at_field, t[1]))
                    continue
            rest.append(i)
        self.row_hits += hits
        if rest:
            calls = [Call(callers[i], callees[i], ats[i], modes[i]) for i in rest]
            done = self._answer_rest(calls, [tags[i] for i in rest], encode,
                                     ([rows[i] for i in rest], [trusted[i] for i in rest]),
                                     [lines[i] if i in lines else line_at(callers[i], ats[i])
                                      for i in rest])
            for i, b in zip(rest, done, strict=True):
                out[i] = b
        return out  # type: ignore[return-value]

    def _answer_rest(self, calls: list[Call], tags: list[int], encode: object,
                     read: tuple[list[bytes | None], list[bool]],
                     lines: list[LineFact | None]) -> list[bytes]:
        """`answer_bytes` of any calls, from their rows as read (`_rows`) and
        their callers' lines at their times (`lines`).

        A caller that is marketing (a live line and a row or no entry, or no
        line and a marketer's row) has its callee's preference read, all of a
        batch's in one multi-get, and only a refusal (rule 4) goes through
        `decide` per call. Otherwise the decision is `decide`'s with no
        preference (no other rule reads it), which depends only on the
        caller's row interval and line, so it is kept as a template (no
        listing in force: a listing's rules read the call's time)."""
        cons, consent = self.cons, self.consent
        protecting = cons.policy.protecting
        key = cons.members_key
        assert key is not None
        kept = self._line_templates
        facts = self._facts(calls, read, lines)
        # The callees whose preference decides: a registered caller's (answered
        # below from a row or no entry, unlisted) and a marketer row's.
        want: list[int] = []
        listed: dict[int, SanctionFact | None] = {}
        held: dict[str, Listing | None] = {}   # the batch's listings, one read per enterprise
        for i, (c, f, ln) in enumerate(zip(calls, facts, lines, strict=True)):
            if ln is None:
                if f.template is not None and len(f.template) == 3:
                    want.append(i)
                continue
            s = listed[i] = self._listed(ln, c.at_ms, held)
            if s is None and (f.row is not None or not f.present):
                want.append(i)
        prefs = dict(zip(want, consent.preferences_at(
            [key.seal(calls[i].callee) for i in want], [calls[i].at_ms for i in want]),
            strict=True))
        at_ms, at_field = -1, b""
        out = []
        for i, (c, f, tag, line) in enumerate(zip(calls, facts, tags, lines, strict=True)):
            if c.at_ms != at_ms:            # the calls of a batch mostly share one time
                at_ms, at_field = c.at_ms, at_bytes(c.at_ms)
            if line is None:
                t = f.template
                if t is None and not f.present and protecting(c.caller) is None:
                    t = self._unknown_template(c)
                if t is None:
                    out.append(encode(c, self._decide(c, f, line), tag))  # type: ignore[operator]
                    continue
                if len(t) == 3:             # a marketer: the template holds unless refused
                    pref = prefs[i]
                    if pref is not None and refuses_any(pref, t[2], c.mode, c.at_ms):
                        d = decide(cons, c.caller, c.callee, c.at_ms, c.mode, f.view(), None,
                                   pref)
                        out.append(encode(c, d, tag))  # type: ignore[operator]
                        continue
                out.append(render_at(t, tag, c.caller, c.callee, at_field))
                continue
            row = f.row
            if i not in prefs:
                out.append(encode(c, self._decide(c, f, line), tag))  # type: ignore[operator]
                continue
            pref = prefs[i]
            if pref is not None and refuses_any(pref, (line.industry,), c.mode, c.at_ms):
                d = decide(cons, c.caller, c.callee, c.at_ms, c.mode, f.view(), line, pref)
                out.append(encode(c, d, tag))  # type: ignore[operator]
                continue
            if row is None:     # no entry: rule 8's label, the same for every number of the line
                t = self._line_template(c, line, protecting)
                if t is None:
                    out.append(encode(c, decide(cons, c.caller, c.callee, c.at_ms, c.mode, None,
                                                line, None), tag))  # type: ignore[operator]
                else:
                    out.append(render_at((t[0] + text_field(4, redress(cons, c.caller)), t[1]),
                                         tag, c.caller, c.callee, at_field))
                continue
            k = (c.caller, row.summary.digest, f.k, *_line_key(line))
            t = kept.get(k)
            if t is None:
                d = decide(cons, c.caller, "", c.at_ms, c.mode, f.view(), line, None)
                t = template_of(d)
                if len(kept) >= LINE_TEMPLATES:
                    kept.clear()
                kept[k] = t
            out.append(render_at(t, tag, c.caller, c.callee, at_field))
        return out

    def _line_template(self, c: Call, line: LineFact, protecting: object) -> Template | None:
        """The answer, but its redress (field 4: it names the caller), for a
        caller with no view entry on its live `line`, unlisted, whose callee
        does not refuse it: caller-registered-marketer, whose reasons name
        the line only. None for a protected caller (rule 1 names it)."""
        if protecting(c.caller) is not None:  # type: ignore[operator]
            return None
        kept = self._line_templates
        key = _line_key(line)
        t = kept.get(key)
        if t is None:
            d = decide(self.cons, c.caller, "", c.at_ms, c.mode, None, line, None)
            if d.code != CALLER_REGISTERED:     # not what the table gives today: decide per call
                return None
            t = template_of(replace(d, redress=""))
            if len(kept) >= LINE_TEMPLATES:
                kept.clear()
            kept[key] = t
        return t

    def _unknown_template(self, c: Call) -> Template:
        """An unmarked, unregistered, unprotected caller's answer (rule 9: the
        same for every such caller)."""
        if self._unknown is None:
            d = decide(self.cons, c.caller, c.callee, c.at_ms, c.mode, None, None, None)
            self._unknown = template_of(d)
        return self._unknown


def _line_key(line: LineFact) -> tuple[bytes, int, bytes]:
    """What tells registrations apart: a record id names every field but the
    end, which a deregistration sets (cheaper to hash than the LineFact)."""
    return line.id, line.ended_at, line.ended_by


def row_maker(screener: Screener, clock: object) -> object:
    """The index's `row_of(number, entry bytes or Entry)` for this screener, at
    `clock()`: the row's bytes, or the start of an elided row (`stored_row`)."""
    def row_of(number: str, raw: bytes | Entry) -> bytes | int | None:
        try:
            return screener.stored_row(number, raw, clock())  # type: ignore[operator]
        except Exception:   # no row made (bytes that are no entry, a bug): the screen
            log.exception("no screen row for %s; its screens read the entry", number)
            return UNREAD_ROW   # reads the entry, never takes it for one answering as none
    return row_of


__all__ = ["UNREAD_ROW", "Call", "EntrySource", "ResolutionCache", "RowSource", "Screener",
           "row_maker"]
