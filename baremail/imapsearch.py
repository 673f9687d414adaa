r"""SEARCH evaluation (RFC 3501 6.4.4) over a key tree from baremail.imapsyntax; no I/O of its own.

    search(key, messages, count=..., uid_max=...) -> list[int]
        the sequence numbers of the matching messages, in the order given
        (the engine maps them to UIDs for UID SEARCH)
    compile_search(key, count=..., uid_max=...) -> Callable[[message], bool]
        the same test for one message at a time
    needs_content(key) -> bool
        whether any key may read a message file (HEADER, FROM..., SENT*,
        BODY, TEXT): if not, the messages' lazy methods are never called

`count` is the number of messages (what `*` means in a sequence-set key),
`uid_max` the highest UID in the mailbox (what `*` means after UID).

A message is any object with these (see `SearchMessage`):

    seq: int, uid: int, flags: Collection[str] ("\Seen", keywords),
    recent: bool, size: int (RFC822.SIZE), internal_date: float (epoch)
    header_values(name) -> list[str]
        the values of the header fields called `name` (given lower-case),
        unfolded and RFC 2047-decoded; [] if there is none
    find_text(needles: frozenset[TextNeedle]) -> Collection[TextNeedle]
        which of `needles` occur in the message: needle.text (already
        casefolded) as a substring of the casefolded decoded body, or, unless
        needle.body_only, of the header. It gets every needle of the query at
        once and is called at most once per message, so one streaming pass
        answers all of them; `TextScanner` does the matching for the caller.

Evaluation is lazy and ordered by cost: flags, UID, sequence number, size,
RECENT and internal-date keys first, then header keys, then body text; an
AND or OR stops as soon as it is decided, so no file is read when the cheap
keys decide. Each header field and the text search are asked for at most
once per message.

Semantics (RFC 3501 6.4.4), with the choices this module makes:
- BEFORE / ON / SINCE compare the internal date's calendar date in the
  server's local time zone; SENTBEFORE / SENTON / SENTSINCE the Date:
  header's date in its own zone. A message without a parsable Date: header
  matches no SENT* key (so it matches NOT SENT...).
- Substring matches are case-insensitive by str.casefold(). FROM, TO, CC,
  BCC and SUBJECT search the header fields' decoded text (not the parsed
  envelope); a zero-length string matches every message having the field
  (as HEADER does), and BODY "" / TEXT "" match every message.
- System flags are compared exactly (the parser made them canonical),
  keywords case-insensitively.
"""

from __future__ import annotations

import datetime
import time
from typing import Callable, Collection, Iterable, NamedTuple, Protocol

from .imapsyntax import (
    All,
    And,
    Flag,
    Header,
    InternalDate,
    Not,
    Or,
    Recent,
    SentDate,
    SeqSet,
    Size,
    Text,
    UidSet,
)

__all__ = ["SearchMessage", "TextNeedle", "TextScanner", "compile_search", "needs_content", "search"]


class TextNeedle(NamedTuple):
    """One BODY or TEXT string of a query: `text` is casefolded."""

    text: str
    body_only: bool


class SearchMessage(Protocol):
    """What the evaluator needs of a message (see the module docstring)."""

    seq: int
    uid: int
    flags: Collection[str]
    recent: bool
    size: int
    internal_date: float

    def header_values(self, name: str) -> list[str]: ...

    def find_text(self, needles: frozenset[TextNeedle]) -> Collection[TextNeedle]: ...


class TextScanner:
    """Streaming substring search for find_text(): feed the decoded header
    text, then the decoded body text, in chunks of any size; `found` holds
    the needles seen so far and `done` turns True once all are (stop
    reading then). Matches never span the header/body boundary."""

    def __init__(self, needles: Iterable[TextNeedle]):
        needles = frozenset(needles)
        self.found: set[TextNeedle] = {n for n in needles if not n.text}
        self._pending = [n for n in needles if n.text]
        self._keep = max((len(n.text) for n in self._pending), default=1) - 1
        self._tail = ""
        self._in_body = False

    @property
    def done(self) -> bool:
        return not self._pending

    def header(self, chunk: str) -> None:
        if self._in_body:
            raise ValueError("header text after body text")
        self._feed(chunk)

    def body(self, chunk: str) -> None:
        if not self._in_body:
            self._in_body = True
            self._tail = ""
        self._feed(chunk)

    def _feed(self, chunk: str) -> None:
        if not self._pending:
            return
        # casefold() works character by character, so folding chunk by
        # chunk equals folding the whole; the kept tail (already folded)
        # catches needles that straddle two chunks.
        text = self._tail + chunk.casefold()
        in_body = self._in_body
        still = []
        for needle in self._pending:
            if (in_body or not needle.body_only) and needle.text in text:
                self.found.add(needle)
            else:
                still.append(needle)
        self._pending = still
        self._tail = text[-self._keep :] if self._keep else ""


# Cost classes: what evaluating a key may have to read.
_CHEAP, _HEADER, _BODY = 0, 1, 2

_Test = Callable[[object, dict], bool]


def needs_content(key) -> bool:
    """True if evaluating `key` may call header_values() or find_text()."""
    return _cost(key) > _CHEAP


def _cost(key) -> int:
    if isinstance(key, (Header, SentDate)):
        return _HEADER
    if isinstance(key, Text):
        return _BODY if key.value else _CHEAP
    if isinstance(key, Not):
        return _cost(key.key)
    if isinstance(key, Or):
        return max(_cost(key.left), _cost(key.right))
    if isinstance(key, And):
        return max((_cost(k) for k in key.keys), default=_CHEAP)
    return _CHEAP


def _needles(key, out: set) -> None:
    if isinstance(key, Text):
        if key.value:
            out.add(TextNeedle(key.value.casefold(), key.body_only))
    elif isinstance(key, Not):
        _needles(key.key, out)
    elif isinstance(key, Or):
        _needles(key.left, out)
        _needles(key.right, out)
    elif isinstance(key, And):
        for k in key.keys:
            _needles(k, out)


def compile_search(key, *, count: int, uid_max: int) -> Callable[[object], bool]:
    """A test `match(message) -> bool` for `key` (see the module docstring)."""
    needles: set = set()
    _needles(key, needles)
    context = _Context(count, uid_max, frozenset(needles))
    test = context.compile(key)

    def match(message) -> bool:
        return test(message, {})

    return match


def search(key, messages: Iterable, *, count: int, uid_max: int) -> list[int]:
    """Sequence numbers of the messages that match `key`, in input order."""
    match = compile_search(key, count=count, uid_max=uid_max)
    return [m.seq for m in messages if match(m)]


def _local_midnight(day: datetime.date) -> float:
    try:
        return time.mktime((day.year, day.month, day.day, 0, 0, 0, 0, 0, -1))
    except (OverflowError, ValueError):
        # Outside what the C library handles: UTC is close enough there.
        return float((day.toordinal() - _EPOCH_ORDINAL) * 86400)


_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()


def _headers(message, memo: dict, name: str) -> list[str]:
    key = ("h", name)
    values = memo.get(key)
    if values is None:
        values = memo[key] = message.header_values(name)
    return values


def _sent_day(message, memo: dict) -> datetime.date | None:
    if "sent" in memo:
        return memo["sent"]
    day = None
    values = _headers(message, memo, "date")
    if values:
        # Imported here: the services avoid loading the email package at
        # start-up. _parseaddr needs only time and calendar.
        from email._parseaddr import parsedate_tz

        try:
            parsed = parsedate_tz(values[0])
            if parsed is not None:
                # The date as written, in the header's own zone (RFC 3501
                # 6.4.4: "disregarding time and timezone").
                day = datetime.date(parsed[0], parsed[1], parsed[2])
        except Exception:  # parsedate_tz has raised on odd input in the past
            day = None
    memo["sent"] = day
    return day


class _Context:
    def __init__(self, count: int, uid_max: int, needles: frozenset):
        self.count = count
        self.uid_max = uid_max
        self.needles = needles

    def compile(self, key) -> _Test:
        method = getattr(self, "_" + type(key).__name__.lower(), None)
        if method is None:
            raise TypeError(f"{type(key).__name__} is not a search key")
        return method(key)

    def _all(self, key: All) -> _Test:
        return lambda m, memo: True

    def _flag(self, key: Flag) -> _Test:
        flag, present = key.flag, key.present
        if flag.startswith("\\"):
            return lambda m, memo: (flag in m.flags) is present
        folded = flag.casefold()

        def keyword(m, memo) -> bool:
            flags = m.flags
            if flag in flags:
                return present
            for other in flags:
                if other.casefold() == folded:
                    return present
            return not present

        return keyword

    def _recent(self, key: Recent) -> _Test:
        present = key.present
        return lambda m, memo: bool(m.recent) is present

    def _size(self, key: Size) -> _Test:
        size = key.size
        if key.relation == "larger":
            return lambda m, memo: m.size > size
        return lambda m, memo: m.size < size

    def _internaldate(self, key: InternalDate) -> _Test:
        start = _local_midnight(key.day)
        if key.relation == "before":
            return lambda m, memo: m.internal_date < start
        if key.relation == "since":
            return lambda m, memo: m.internal_date >= start
        stop = _local_midnight(key.day + datetime.timedelta(days=1))
        return lambda m, memo: start <= m.internal_date < stop

    def _sentdate(self, key: SentDate) -> _Test:
        day, relation = key.day, key.relation

        def sent(m, memo) -> bool:
            written = _sent_day(m, memo)
            if written is None:
                return False
            if relation == "before":
                return written < day
            if relation == "since":
                return written >= day
            return written == day

        return sent

    def _uidset(self, key: UidSet) -> _Test:
        numbers = key.set.resolve(self.uid_max)
        return lambda m, memo: m.uid in numbers

    def _seqset(self, key: SeqSet) -> _Test:
        numbers = key.set.resolve(self.count)
        return lambda m, memo: m.seq in numbers

    def _header(self, key: Header) -> _Test:
        field, needle = key.field, key.value.casefold()
        if not needle:
            return lambda m, memo: bool(_headers(m, memo, field))

        def header(m, memo) -> bool:
            return any(needle in value.casefold() for value in _headers(m, memo, field))

        return header

    def _text(self, key: Text) -> _Test:
        if not key.value:
            return lambda m, memo: True
        needle = TextNeedle(key.value.casefold(), key.body_only)
        needles = self.needles

        def text(m, memo) -> bool:
            found = memo.get("text")
            if found is None:
                found = memo["text"] = m.find_text(needles)
            return needle in found

        return text

    def _not(self, key: Not) -> _Test:
        inner = self.compile(key.key)
        return lambda m, memo: not inner(m, memo)

    def _ordered(self, keys) -> list[_Test]:
        # Cheap keys first (sorted() is stable, so ties keep client order).
        return [self.compile(k) for k in sorted(keys, key=_cost)]

    def _or(self, key: Or) -> _Test:
        first, second = self._ordered((key.left, key.right))
        return lambda m, memo: first(m, memo) or second(m, memo)

    def _and(self, key: And) -> _Test:
        tests = self._ordered(key.keys)
        if len(tests) == 1:
            return tests[0]

        def every(m, memo) -> bool:
            for test in tests:
                if not test(m, memo):
                    return False
            return True

        return every
