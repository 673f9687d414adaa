r"""IMAP4rev1 command grammar (RFC 3501 section 9, plus extensions): parts in, typed values out; no I/O.

`parse_command(parts)` takes one complete command as the framer delivers it,
a list of text segments (bytes, without the final CRLF and with each literal
announcement removed) with a `Literal` or `StreamedLiteral` wherever the
client sent a literal, and returns one immutable `Command` or raises
`IMAPSyntaxError`. It keeps no state: which commands are allowed when is the
session engine's business. Any list of bytes / Literal / StreamedLiteral
gives either a Command or an IMAPSyntaxError (anything else in the list is a
caller bug and raises TypeError).

Errors (catch the subclasses first):

    UnknownCommand(IMAPSyntaxError)  the command name is not one we know:
                                     answer `tag BAD unknown command`
    BadCharset(IMAPSyntaxError)      SEARCH CHARSET other than US-ASCII or
                                     UTF-8: answer `tag NO [BADCHARSET
                                     (US-ASCII UTF-8)] ...` (RFC 3501 6.4.4)
    IMAPSyntaxError                  `.tag` is the tag (str) if it could be
                                     read, else None (answer `* BAD`);
                                     `.text` is a short reason for the reply

Every command is a frozen dataclass with `.tag` (str) and a class attribute
`.name` (the upper-case command word, e.g. "FETCH"; UID variants have the
same name and `uid=True`). Mailbox names are str, decoded from modified
UTF-7 (RFC 3501 5.1.3); any-case "INBOX" is "INBOX". Flags are str with
system flags in canonical case ("\Seen"); keywords as sent.

    Capability Noop Logout StartTLS Check Close Idle Namespace Unselect
                                    (no arguments)
    Authenticate(mechanism: str upper-case, initial_response: bytes | None)
                 SASL-IR (RFC 4959): None = absent, else the base64 text as
                 sent ("=" for an empty one), checked; engine.SaslExchange
                 decodes it
    Login(userid: bytes, password: bytes)
    Select / Examine(mailbox: str, params: tuple[(str, value)])
                 RFC 4466 select-params, generic: name upper-case, value None,
                 a str, or a nested tuple of str / tuples
    Create(mailbox, params)  Delete(mailbox)  Rename(mailbox, new_name)
    Subscribe(mailbox)  Unsubscribe(mailbox)
    List(reference: str, patterns: tuple[str, ...], selection: frozenset[str],
         return_options: frozenset[str], extended: bool)
                 RFC 5258/6154 syntax; selection options: SUBSCRIBED REMOTE
                 RECURSIVEMATCH SPECIAL-USE; return options: SUBSCRIBED
                 CHILDREN SPECIAL-USE. Implied return options are included
                 (selection SUBSCRIBED -> SUBSCRIBED, SPECIAL-USE ->
                 SPECIAL-USE). `extended` is True when any LIST-EXTENDED
                 syntax was used (options or a parenthesized pattern list).
    Lsub(reference: str, pattern: str)
    Status(mailbox, items: tuple[str, ...])  of MESSAGES RECENT UIDNEXT
                 UIDVALIDITY UNSEEN, in the order given, no duplicates
    Append(mailbox, flags: tuple[str, ...], date: float | None (epoch),
           message: Literal | StreamedLiteral)
    Expunge(uid_set: SequenceSet | None)   UID EXPUNGE (RFC 4315) when set;
                 `.uid` is True then
    Search(charset: "US-ASCII" | "UTF-8" | None, key: SearchKey, uid: bool)
    Fetch(sequence_set: SequenceSet, items: tuple[str | BodySection, ...],
          uid: bool)
                 simple items are str: "ENVELOPE" "FLAGS" "INTERNALDATE"
                 "RFC822" "RFC822.HEADER" "RFC822.SIZE" "RFC822.TEXT" "BODY"
                 "BODYSTRUCTURE" "UID"; macros are expanded; duplicates
                 dropped. UID FETCH does NOT add "UID" here: the engine must
                 (RFC 3501 6.4.8). `.sets_seen` tells whether the fetch marks
                 messages \Seen (BODY[...] without PEEK, RFC822, RFC822.TEXT).
    Store(sequence_set, action: "replace" | "add" | "remove", silent: bool,
          flags: tuple[str, ...], uid: bool)
    Copy / Move(sequence_set, mailbox, uid: bool)
    Id(parameters: tuple[(str, str | None), ...] | None)   None = NIL
    Enable(capabilities: tuple[str, ...])  upper-case

BodySection(peek, part: tuple[int, ...], kind: "" | "HEADER" |
"HEADER.FIELDS" | "HEADER.FIELDS.NOT" | "TEXT" | "MIME", fields:
tuple[str, ...] (upper-case), partial: (origin, length) | None, echo: Raw)
-- `echo` is the item name the response must carry, e.g.
Raw(b"BODY[HEADER.FIELDS (FROM TO)]") or Raw(b"BODY[]<0>") (RFC 3501
7.4.2: PEEK dropped, only the origin of a partial).

SequenceSet: `.resolve(maximum)` -> NumberSet (sorted, merged ranges clipped
to 1..maximum, `*` = maximum, never expanded), `.contains(n, maximum)`;
NumberSet supports `in`, len(), iteration, `.ranges` and
`.indices_in(sorted_numbers)`.

Search keys (`SearchKey`) are plain values: All, Flag(flag, present),
Recent(present), Header(field lower-case, value), Text(value, body_only),
InternalDate(relation, day), SentDate(relation, day) with relation "before" |
"on" | "since" and day a datetime.date, Size(relation "larger" | "smaller",
size), UidSet(set), SeqSet(set), Not(key), Or(left, right), And(keys).
NEW is And((Recent(True), Flag("\Seen", False))), OLD is Recent(False).
`baremail.imapsearch` evaluates them.

`append_prefix(parts)` answers, when a literal has just been announced,
whether it is APPEND's message (so it can be streamed to disk).

Helpers: encode_mailbox / decode_mailbox (modified UTF-7), mailbox_matcher
(LIST/LSUB patterns), format_date_time / parse_date_time (INTERNALDATE),
format_sequence (uid-set text for COPYUID/APPENDUID).

Choices where the RFCs leave room:
- \Recent in STORE or APPEND is a syntax error (RFC 3501 2.3.2: the client
  can not alter it); so is any other unknown backslash flag (a Maildir can
  not keep it, and dropping it silently would make sync clients loop).
- Quoted strings may carry 8-bit octets (RFC 9051 allows UTF-8 there); atoms
  are 7-bit. Numbers are 32-bit (RFC 3501 section 9, "number").
- Mailbox names must be canonical modified UTF-7 (what encode_mailbox
  produces) and free of control characters (RFC 9051 5.1, RFC 5198).
- Nesting (parentheses, NOT, OR) deeper than MAX_NESTING is a syntax error.
- CREATE's RFC 4466 parameters are parsed generically; RFC 6154's
  CREATE-SPECIAL-USE `(USE (\Drafts))` is not (backslash atoms), so it is
  a syntax error: do not advertise CREATE-SPECIAL-USE.

Runs on Python 3.9 and later (pyproject.toml); standard library only.
"""

from __future__ import annotations

import base64
import bisect
import datetime
import re
import time
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterable, Iterator, NoReturn, Sequence, Union

from .engine import decode_base64
from .imapdata import Literal, Raw, StreamedLiteral, encode

__all__ = [
    "MAX_NESTING",
    "SUPPORTED_CHARSETS",
    "All",
    "And",
    "Append",
    "AppendPrefix",
    "Authenticate",
    "BadCharset",
    "BodySection",
    "Capability",
    "Check",
    "Close",
    "Command",
    "Copy",
    "Create",
    "Delete",
    "Enable",
    "Examine",
    "Expunge",
    "Fetch",
    "Flag",
    "Header",
    "IMAPSyntaxError",
    "Id",
    "Idle",
    "InternalDate",
    "List",
    "Login",
    "Logout",
    "Lsub",
    "Move",
    "Namespace",
    "Noop",
    "Not",
    "NumberSet",
    "Or",
    "Recent",
    "Rename",
    "Search",
    "SearchKey",
    "Select",
    "SentDate",
    "SeqSet",
    "SequenceSet",
    "Size",
    "StartTLS",
    "Status",
    "Store",
    "Subscribe",
    "Text",
    "UidSet",
    "UnknownCommand",
    "Unselect",
    "Unsubscribe",
    "append_prefix",
    "decode_mailbox",
    "encode_mailbox",
    "format_date_time",
    "format_sequence",
    "mailbox_matcher",
    "parse_command",
    "parse_date_time",
]

SUPPORTED_CHARSETS = ("US-ASCII", "UTF-8")

# Deep enough for any real client's SEARCH (they nest a handful of levels),
# shallow enough that recursion stays far from Python's limit.
MAX_NESTING = 100


# --- Errors -----------------------------------------------------------------


class IMAPSyntaxError(Exception):
    """The command can not be parsed: answer `tag BAD text`, or `* BAD text`
    when `tag` is None (the tag itself was unreadable)."""

    def __init__(self, tag: str | None, text: str):
        super().__init__(text)
        self.tag = tag
        self.text = text


class UnknownCommand(IMAPSyntaxError):
    """The command name is not one this grammar knows."""


class BadCharset(IMAPSyntaxError):
    """SEARCH named a charset other than SUPPORTED_CHARSETS."""


# --- Sequence sets (RFC 3501 section 9, "sequence-set") ---------------------


class NumberSet:
    """A sequence set resolved against a maximum: sorted, disjoint,
    non-adjacent inclusive ranges within 1..maximum. Immutable."""

    __slots__ = ("ranges", "_starts")

    def __init__(self, ranges: Sequence[tuple[int, int]] = ()):
        self.ranges: tuple[tuple[int, int], ...] = tuple(ranges)
        self._starts = [lo for lo, _ in self.ranges]

    def __contains__(self, number: object) -> bool:
        if not isinstance(number, int):
            return False
        index = bisect.bisect_right(self._starts, number) - 1
        return index >= 0 and number <= self.ranges[index][1]

    def __iter__(self) -> Iterator[int]:
        for lo, hi in self.ranges:
            yield from range(lo, hi + 1)

    def __len__(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.ranges)

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NumberSet) and other.ranges == self.ranges

    def __hash__(self) -> int:
        return hash(self.ranges)

    def __repr__(self) -> str:
        return f"NumberSet({list(self.ranges)!r})"

    def indices_in(self, numbers: Sequence[int]) -> Iterator[int]:
        """Indexes i, ascending, with numbers[i] in this set; `numbers` must
        be sorted ascending (e.g. a mailbox's UIDs). Costs O(ranges * log n)
        plus the output, however large the ranges are."""
        for lo, hi in self.ranges:
            start = bisect.bisect_left(numbers, lo)
            stop = bisect.bisect_right(numbers, hi, start)
            yield from range(start, stop)


_SEQ_NUMBER_MAX = 0xFFFFFFFF


def _seq_number(text: bytes) -> int | None:
    if text == b"*":
        return None
    if not text.isdigit() or len(text) > 10:
        raise ValueError("invalid number in sequence set")
    number = int(text)
    if not 0 < number <= _SEQ_NUMBER_MAX:
        raise ValueError("sequence numbers run from 1 to 4294967295")
    return number


@dataclass(frozen=True)
class SequenceSet:
    """A sequence set as sent: `items` are (first, last) pairs in the
    client's order, None standing for `*`; a single number n is (n, n).
    Resolve it against the current maximum (the message count for sequence
    numbers, the highest UID for UIDs) before use."""

    items: tuple[tuple[int | None, int | None], ...]

    @classmethod
    def parse(cls, text: bytes | str) -> SequenceSet:
        """Parse "1:4,7,9:*"; ValueError if it is not a sequence-set."""
        if isinstance(text, str):
            text = text.encode("ascii", "replace")
        items = []
        append = items.append
        for element in text.split(b","):
            # Fast path for the common single number; _seq_number checks
            # everything else (and the length before int(): 3.11 refuses
            # to convert very long digit strings).
            if element.isdigit() and len(element) <= 10:
                number = int(element)
                if 0 < number <= _SEQ_NUMBER_MAX:
                    append((number, number))
                    continue
            first, colon, last = element.partition(b":")
            if colon and first.isdigit() and last.isdigit() and len(first) <= 10 and len(last) <= 10:
                lo, hi = int(first), int(last)
                if 0 < lo <= _SEQ_NUMBER_MAX and 0 < hi <= _SEQ_NUMBER_MAX:
                    append((lo, hi))
                    continue
            lo = _seq_number(first)
            append((lo, _seq_number(last) if colon else lo))
        return cls(tuple(items))

    def resolve(self, maximum: int) -> NumberSet:
        """The numbers this set means when `*` is `maximum`: ranges sorted,
        merged and clipped to 1..maximum (empty when maximum < 1). A range
        is unordered (5:2 is 2:5), so n:* with n > maximum holds maximum,
        as RFC 3501 6.4.8 requires for UIDs."""
        if maximum < 1:
            return NumberSet()
        spans = []
        for lo, hi in self.items:
            lo = maximum if lo is None else lo
            hi = maximum if hi is None else hi
            if lo > hi:
                lo, hi = hi, lo
            if lo <= maximum:
                spans.append((lo, min(hi, maximum)))
        spans.sort()
        merged: list[list[int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1] + 1:
                if hi > merged[-1][1]:
                    merged[-1][1] = hi
            else:
                merged.append([lo, hi])
        return NumberSet([(lo, hi) for lo, hi in merged])

    def contains(self, number: int, maximum: int) -> bool:
        """Whether `number` is in this set when `*` is `maximum`. For many
        tests, resolve once and use `in` on the NumberSet."""
        return number in self.resolve(maximum)

    @property
    def largest_number(self) -> int:
        """The largest number written explicitly (0 if only `*`): lets the
        engine reject message sequence numbers beyond the message count."""
        return max((n for pair in self.items for n in pair if n is not None), default=0)

    def __str__(self) -> str:
        def one(n):
            return "*" if n is None else str(n)

        return ",".join(one(lo) if lo == hi else f"{one(lo)}:{one(hi)}" for lo, hi in self.items)


def format_sequence(numbers: Iterable[int]) -> str:
    """Compact text of numbers in the given order, runs of consecutive
    ascending numbers as n:m: [3, 4, 5, 9, 2] -> "3:5,9,2". Order is kept,
    as COPYUID's source and destination sets must correspond (RFC 4315)."""
    out = []
    start = prev = None
    for n in numbers:
        if prev is not None and n == prev + 1:
            prev = n
            continue
        if start is not None:
            out.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = n
    if start is not None:
        out.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(out)


# --- Search keys (RFC 3501 6.4.4) -------------------------------------------


@dataclass(frozen=True)
class All:
    """ALL: every message."""


@dataclass(frozen=True)
class Flag:
    """A flag (canonical system flag or keyword) is set (present=True) or
    not set: ANSWERED/UNANSWERED, ..., KEYWORD/UNKEYWORD."""

    flag: str
    present: bool


@dataclass(frozen=True)
class Recent:
    """RECENT (present=True) or OLD (present=False)."""

    present: bool


@dataclass(frozen=True)
class Header:
    """The header field (lower-case name) contains `value` (case-insensitive
    substring); value "" means the field exists. FROM, TO, CC, BCC and
    SUBJECT are Header keys too."""

    field: str
    value: str


@dataclass(frozen=True)
class Text:
    """BODY (body_only=True) or TEXT (header or body) contains `value`."""

    value: str
    body_only: bool


@dataclass(frozen=True)
class InternalDate:
    """BEFORE / ON / SINCE: the internal date's local calendar date."""

    relation: str
    day: datetime.date


@dataclass(frozen=True)
class SentDate:
    """SENTBEFORE / SENTON / SENTSINCE: the Date: header's calendar date."""

    relation: str
    day: datetime.date


@dataclass(frozen=True)
class Size:
    """LARGER / SMALLER than `size` octets (RFC822.SIZE)."""

    relation: str
    size: int


@dataclass(frozen=True)
class UidSet:
    """UID <sequence-set>."""

    set: SequenceSet


@dataclass(frozen=True)
class SeqSet:
    """A bare <sequence-set> of message sequence numbers."""

    set: SequenceSet


@dataclass(frozen=True)
class Not:
    key: "SearchKey"


@dataclass(frozen=True)
class Or:
    left: "SearchKey"
    right: "SearchKey"


@dataclass(frozen=True)
class And:
    """All keys match: a parenthesized list, or several keys in a row."""

    keys: tuple


SearchKey = Union[All, Flag, Recent, Header, Text, InternalDate, SentDate, Size, UidSet, SeqSet, Not, Or, And]


# --- FETCH items (RFC 3501 6.4.5) -------------------------------------------


@dataclass(frozen=True)
class BodySection:
    """BODY[section]<partial> or BODY.PEEK[...]; see the module docstring."""

    peek: bool
    part: tuple[int, ...]
    kind: str
    fields: tuple[str, ...]
    partial: tuple[int, int] | None
    echo: Raw


# --- Commands ---------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    tag: str
    name: ClassVar[str] = ""


@dataclass(frozen=True)
class Capability(Command):
    """CAPABILITY (RFC 3501 6.1.1)."""

    name: ClassVar[str] = "CAPABILITY"


@dataclass(frozen=True)
class Noop(Command):
    """NOOP (RFC 3501 6.1.2)."""

    name: ClassVar[str] = "NOOP"


@dataclass(frozen=True)
class Logout(Command):
    """LOGOUT (RFC 3501 6.1.3)."""

    name: ClassVar[str] = "LOGOUT"


@dataclass(frozen=True)
class StartTLS(Command):
    """STARTTLS (RFC 3501 6.2.1)."""

    name: ClassVar[str] = "STARTTLS"


@dataclass(frozen=True)
class Check(Command):
    """CHECK (RFC 3501 6.4.1)."""

    name: ClassVar[str] = "CHECK"


@dataclass(frozen=True)
class Close(Command):
    """CLOSE (RFC 3501 6.4.2)."""

    name: ClassVar[str] = "CLOSE"


@dataclass(frozen=True)
class Idle(Command):
    """IDLE (RFC 2177); the engine itself reads the DONE line."""

    name: ClassVar[str] = "IDLE"


@dataclass(frozen=True)
class Namespace(Command):
    """NAMESPACE (RFC 2342)."""

    name: ClassVar[str] = "NAMESPACE"


@dataclass(frozen=True)
class Unselect(Command):
    """UNSELECT (RFC 3691)."""

    name: ClassVar[str] = "UNSELECT"


@dataclass(frozen=True)
class Authenticate(Command):
    """AUTHENTICATE (RFC 3501 6.2.2) with SASL-IR (RFC 4959)."""

    mechanism: str
    initial_response: bytes | None
    name: ClassVar[str] = "AUTHENTICATE"


@dataclass(frozen=True)
class Login(Command):
    userid: bytes
    password: bytes
    name: ClassVar[str] = "LOGIN"


@dataclass(frozen=True)
class Select(Command):
    mailbox: str
    params: tuple = ()
    name: ClassVar[str] = "SELECT"


@dataclass(frozen=True)
class Examine(Command):
    mailbox: str
    params: tuple = ()
    name: ClassVar[str] = "EXAMINE"


@dataclass(frozen=True)
class Create(Command):
    mailbox: str
    params: tuple = ()
    name: ClassVar[str] = "CREATE"


@dataclass(frozen=True)
class Delete(Command):
    mailbox: str
    name: ClassVar[str] = "DELETE"


@dataclass(frozen=True)
class Rename(Command):
    mailbox: str
    new_name: str
    name: ClassVar[str] = "RENAME"


@dataclass(frozen=True)
class Subscribe(Command):
    mailbox: str
    name: ClassVar[str] = "SUBSCRIBE"


@dataclass(frozen=True)
class Unsubscribe(Command):
    mailbox: str
    name: ClassVar[str] = "UNSUBSCRIBE"


@dataclass(frozen=True)
class List(Command):
    reference: str
    patterns: tuple[str, ...]
    selection: frozenset = frozenset()
    return_options: frozenset = frozenset()
    extended: bool = False
    name: ClassVar[str] = "LIST"


@dataclass(frozen=True)
class Lsub(Command):
    reference: str
    pattern: str
    name: ClassVar[str] = "LSUB"


@dataclass(frozen=True)
class Status(Command):
    mailbox: str
    items: tuple[str, ...]
    name: ClassVar[str] = "STATUS"


@dataclass(frozen=True)
class Append(Command):
    mailbox: str
    flags: tuple[str, ...]
    date: float | None
    message: object  # Literal | StreamedLiteral
    name: ClassVar[str] = "APPEND"


@dataclass(frozen=True)
class Expunge(Command):
    """EXPUNGE, or UID EXPUNGE <uid_set> (RFC 4315 2.1)."""

    uid_set: SequenceSet | None = None
    name: ClassVar[str] = "EXPUNGE"

    @property
    def uid(self) -> bool:
        return self.uid_set is not None


@dataclass(frozen=True)
class Search(Command):
    charset: str | None
    key: object  # SearchKey
    uid: bool = False
    name: ClassVar[str] = "SEARCH"


@dataclass(frozen=True)
class Fetch(Command):
    sequence_set: SequenceSet
    items: tuple
    uid: bool = False
    name: ClassVar[str] = "FETCH"

    @property
    def sets_seen(self) -> bool:
        """True if fetching these items sets \\Seen (RFC 3501 6.4.5)."""
        for item in self.items:
            if isinstance(item, BodySection):
                if not item.peek:
                    return True
            elif item == "RFC822" or item == "RFC822.TEXT":
                return True
        return False


@dataclass(frozen=True)
class Store(Command):
    sequence_set: SequenceSet
    action: str
    silent: bool
    flags: tuple[str, ...]
    uid: bool = False
    name: ClassVar[str] = "STORE"


@dataclass(frozen=True)
class Copy(Command):
    sequence_set: SequenceSet
    mailbox: str
    uid: bool = False
    name: ClassVar[str] = "COPY"


@dataclass(frozen=True)
class Move(Command):
    sequence_set: SequenceSet
    mailbox: str
    uid: bool = False
    name: ClassVar[str] = "MOVE"


@dataclass(frozen=True)
class Id(Command):
    parameters: tuple | None
    name: ClassVar[str] = "ID"


@dataclass(frozen=True)
class Enable(Command):
    capabilities: tuple[str, ...]
    name: ClassVar[str] = "ENABLE"


@dataclass(frozen=True)
class AppendPrefix:
    """What append_prefix() learnt before APPEND's message literal."""

    tag: str
    mailbox: str
    flags: tuple[str, ...]
    date: float | None


# --- Modified UTF-7 (RFC 3501 5.1.3) ----------------------------------------

_PRINTABLE_RUN = re.compile(r"[\x20-\x7e]+|[^\x20-\x7e]+")
_PRINTABLE_BYTES = re.compile(rb"[\x20-\x7e]*")
_MUTF7_TOKEN = re.compile(rb"([\x20-\x25\x27-\x7e]+)|&([A-Za-z0-9+,]*)-")


def encode_mailbox(name: str) -> bytes:
    """The modified UTF-7 form of a mailbox name. ValueError if `name`
    holds a lone surrogate (no UTF-16 form)."""
    if name.isascii() and name.isprintable():
        return name.replace("&", "&-").encode("ascii")
    out = []
    for match in _PRINTABLE_RUN.finditer(name):
        run = match.group()
        if run[0] >= " " and run[0] <= "~":
            out.append(run.replace("&", "&-").encode("ascii"))
        else:
            try:
                utf16 = run.encode("utf-16-be")
            except UnicodeEncodeError:
                raise ValueError("mailbox name has no UTF-16 form") from None
            out.append(b"&" + base64.b64encode(utf16).rstrip(b"=").replace(b"/", b",") + b"-")
    return b"".join(out)


def decode_mailbox(data: bytes) -> str:
    """The mailbox name that modified UTF-7 `data` stands for. ValueError
    unless `data` is exactly what encode_mailbox() would produce: printable
    US-ASCII only, "&" as "&-", no printable ASCII inside a shifted run, no
    non-zero padding bits, one shifted run per stretch of non-ASCII
    characters (RFC 3501 5.1.3). INBOX is not normalized here."""
    if b"&" not in data:
        if _PRINTABLE_BYTES.fullmatch(data) is None:
            raise ValueError("mailbox name has 8-bit or control octets")
        return data.decode("ascii")
    out = []
    pos, end = 0, len(data)
    while pos < end:
        match = _MUTF7_TOKEN.match(data, pos)
        if match is None:
            raise ValueError("invalid modified UTF-7 in mailbox name")
        pos = match.end()
        if match.group(1) is not None:
            out.append(match.group(1).decode("ascii"))
            continue
        chunk = match.group(2)
        if not chunk:
            out.append("&")
            continue
        if len(chunk) % 8 not in (0, 3, 6):
            raise ValueError("invalid modified BASE64 length in mailbox name")
        raw = base64.b64decode(chunk.replace(b",", b"/") + b"=" * (-len(chunk) % 4))
        try:
            out.append(raw.decode("utf-16-be"))
        except UnicodeDecodeError:
            raise ValueError("invalid UTF-16 in mailbox name") from None
    name = "".join(out)
    if encode_mailbox(name) != data:
        raise ValueError("non-canonical modified UTF-7 in mailbox name")
    return name


# --- LIST / LSUB patterns (RFC 3501 6.3.8) ----------------------------------


def mailbox_matcher(reference: str, pattern: str, delimiter: str = ".") -> Callable[[str], bool]:
    """A test for mailbox names (as decoded str, INBOX spelled "INBOX")
    against LIST's reference and pattern: the two are concatenated (one
    delimiter dropped if the reference ends and the pattern starts with
    it); "*" matches anything, "%" anything but the delimiter; the "INBOX"
    part of a name matches case-insensitively (RFC 3501 5.1). Runs in
    O(len(name) * len(pattern)), whatever the pattern."""
    if reference and pattern.startswith(delimiter) and reference.endswith(delimiter):
        pattern = reference + pattern[len(delimiter) :]
    else:
        pattern = reference + pattern
    # Runs of wildcards collapse: "**", "%*" and "*%" match what "*" does,
    # "%%" what "%" does; this keeps the state set small.
    collapsed: list[str] = []
    for ch in pattern:
        if ch in "*%" and collapsed and collapsed[-1] in "*%":
            if ch == "*":
                collapsed[-1] = "*"
            continue
        collapsed.append(ch)
    pat = "".join(collapsed)
    if pat == "*":
        return lambda name: True
    if "*" not in pat and "%" not in pat:
        inbox_form = "INBOX" + pat[5:] if pat[:5].isascii() and pat[:5].upper() == "INBOX" else None

        def exact(name: str) -> bool:
            return name == pat or (inbox_form is not None and name == inbox_form and _inbox_prefix(name, delimiter))

        return exact
    size = len(pat)

    def closure(states: set[int]) -> set[int]:
        # A wildcard may match nothing: from state i at a wildcard, i+1 too.
        stack = list(states)
        while stack:
            i = stack.pop()
            if i < size and pat[i] in "*%" and i + 1 not in states:
                states.add(i + 1)
                stack.append(i + 1)
        return states

    start = closure({0})

    def match(name: str) -> bool:
        insensitive = 5 if _inbox_prefix(name, delimiter) else 0
        states = start
        for pos, ch in enumerate(name):
            following: set[int] = set()
            for i in states:
                if i == size:
                    continue
                p = pat[i]
                if p == "*":
                    following.add(i)
                elif p == "%":
                    if ch != delimiter:
                        following.add(i)
                elif p == ch or (pos < insensitive and p.isascii() and p.upper() == ch):
                    following.add(i + 1)
            if not following:
                return False
            states = closure(following)
        return size in states

    return match


def _inbox_prefix(name: str, delimiter: str) -> bool:
    return name == "INBOX" or name.startswith("INBOX" + delimiter)


# --- Date-time (RFC 3501 section 9, "date-time") ----------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {m.upper().encode(): i + 1 for i, m in enumerate(_MONTHS)}
# date-day-fixed is (SP DIGIT) / 2DIGIT; one digit alone is accepted too.
_DATE_TIME = re.compile(
    rb" ?([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"
)
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()


def format_date_time(epoch: float, utc_offset: int | None = None) -> str:
    """INTERNALDATE text, e.g. "17-Jul-1996 02:44:25 -0700", in the local
    time zone (or `utc_offset` seconds east of UTC). Quote it for the wire
    (imapdata.encode does)."""
    seconds = int(epoch // 1)
    if utc_offset is None:
        tm = time.localtime(seconds)
        utc_offset = tm.tm_gmtoff
    else:
        tm = time.gmtime(seconds + utc_offset)
    sign = "-" if utc_offset < 0 else "+"
    minutes = abs(utc_offset) // 60
    return "%02d-%s-%04d %02d:%02d:%02d %s%02d%02d" % (
        tm.tm_mday,
        _MONTHS[tm.tm_mon - 1],
        tm.tm_year,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        sign,
        minutes // 60,
        minutes % 60,
    )


def parse_date_time(text: bytes | str) -> float:
    """The epoch of a date-time such as "17-Jul-1996 02:44:25 -0700" (the
    inside of APPEND's quoted date-time; day may be space-padded).
    ValueError if it is not a valid date-time."""
    if isinstance(text, str):
        text = text.encode("ascii", "replace")
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        raise ValueError("invalid date-time")
    day, month, year, hour, minute, second, sign, zh, zm = match.groups()
    month_number = _MONTH_NUMBER.get(month.upper())
    if month_number is None:
        raise ValueError("invalid month in date-time")
    date = datetime.date(int(year), month_number, int(day))  # ValueError for 31-Feb, year 0
    hour, minute, second, zh, zm = int(hour), int(minute), int(second), int(zh), int(zm)
    if hour > 23 or minute > 59 or second > 60 or zm > 59:
        raise ValueError("invalid time in date-time")
    offset = (zh * 3600 + zm * 60) * (-1 if sign == b"-" else 1)
    days = date.toordinal() - _EPOCH_ORDINAL
    return float(days * 86400 + hour * 3600 + minute * 60 + second - offset)


def _parse_date(text: bytes) -> datetime.date:
    match = _DATE.fullmatch(text)
    if match is None:
        raise ValueError("invalid date")
    day, month, year = match.groups()
    month_number = _MONTH_NUMBER.get(month.upper())
    if month_number is None:
        raise ValueError("invalid month")
    return datetime.date(int(year), month_number, int(day))


# --- The reader -------------------------------------------------------------

# Character classes of RFC 3501 section 9. atom-specials: ( ) { SP CTL % *
# DQUOTE \ ]; ASTRING-CHAR adds "]"; a tag is ASTRING-CHARs except "+";
# list-char adds the wildcards % and *.
_ATOM = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\\]]+')
_ASTRING_ATOM = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\]+')
_TAG = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\+]+')
_LIST_CHARS = re.compile(rb'[^\x00-\x20\x7f-\xff(){"\\]+')
_DIGITS = re.compile(rb"[0-9]+")
_SEQUENCE = re.compile(rb"[0-9*:,]+")
_QUOTED = re.compile(rb'"([^"\\\r\n\x00]*(?:\\["\\][^"\\\r\n\x00]*)*)"')
_FETCH_NAME = re.compile(rb"[A-Za-z0-9.]+")
_SECTION = re.compile(rb"[A-Za-z0-9.]*")
_BASE64 = re.compile(rb"[A-Za-z0-9+/=]+")
_EXT_LABEL = re.compile(rb"[A-Za-z_.\-][A-Za-z0-9_.:\-]*")
_EXT_SIMPLE = re.compile(rb"[0-9*:,]+")
_EXT_ATOM = re.compile(rb'[^\x00-\x20\x7f-\xff(){%"\\]+')
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")

_SP = 0x20


class _Reader:
    """A cursor over the command: text segments alternating with literals
    (texts has one more entry than literals)."""

    __slots__ = ("texts", "literals", "index", "buf", "pos", "tag")

    def __init__(self, parts):
        texts: list[bytes] = []
        literals: list = []
        current = None
        for part in parts:
            # Literal subclasses bytes: test it first.
            if isinstance(part, (Literal, StreamedLiteral)):
                texts.append(current if current is not None else b"")
                literals.append(part)
                current = None
            elif isinstance(part, (bytes, bytearray)):
                current = bytes(part) if current is None else current + bytes(part)
            else:
                raise TypeError(f"a command part must be bytes or a literal, not {type(part).__name__}")
        texts.append(current if current is not None else b"")
        self.texts = texts
        self.literals = literals
        self.index = 0
        self.buf = texts[0]
        self.pos = 0
        self.tag: str | None = None

    def fail(self, text: str) -> NoReturn:
        raise IMAPSyntaxError(self.tag, text)

    def at_end(self) -> bool:
        return self.pos >= len(self.buf) and self.index >= len(self.literals)

    def at_literal(self) -> bool:
        return self.pos >= len(self.buf) and self.index < len(self.literals)

    def peek(self) -> int:
        """The next octet of the current text segment, -1 if none."""
        return self.buf[self.pos] if self.pos < len(self.buf) else -1

    def accept(self, octet: int) -> bool:
        if self.pos < len(self.buf) and self.buf[self.pos] == octet:
            self.pos += 1
            return True
        return False

    def expect(self, octet: int, what: str) -> None:
        if not self.accept(octet):
            self.fail(f"expected {what}")

    def sp(self) -> None:
        if self.pos < len(self.buf) and self.buf[self.pos] == _SP:
            self.pos += 1
        else:
            self.fail("expected a space" if not self.at_end() else "missing argument")

    def match(self, regex: re.Pattern) -> bytes | None:
        m = regex.match(self.buf, self.pos)
        if m is None:
            return None
        self.pos = m.end()
        return m.group()

    def end(self) -> None:
        if not self.at_end():
            self.fail("unexpected characters at end of command")

    def literal(self):
        lit = self.literals[self.index]
        self.index += 1
        self.buf = self.texts[self.index]
        self.pos = 0
        return lit

    def bytes_literal(self) -> bytes:
        lit = self.literal()
        if isinstance(lit, StreamedLiteral):
            self.fail("unexpected streamed literal")
        return lit

    def quoted(self) -> bytes:
        m = _QUOTED.match(self.buf, self.pos)
        if m is None:
            self.fail("invalid quoted string")
        self.pos = m.end()
        value = m.group(1)
        if b"\\" in value:
            value = re.sub(rb"\\(.)", rb"\1", value)
        return value

    def number(self, what: str = "a number") -> int:
        digits = self.match(_DIGITS)
        if digits is None:
            self.fail(f"expected {what}")
        if len(digits) > 10 or int(digits) > _SEQ_NUMBER_MAX:
            self.fail("number too large")
        return int(digits)

    def nz_number(self, what: str) -> int:
        number = self.number(what)
        if number == 0:
            self.fail(f"{what} must not be 0")
        return number

    def atom(self, what: str) -> bytes:
        value = self.match(_ATOM)
        if value is None:
            self.fail(f"expected {what}")
        return value

    def string(self, what: str) -> bytes:
        """string = quoted / literal."""
        if self.peek() == 0x22:
            return self.quoted()
        if self.at_literal():
            return self.bytes_literal()
        self.fail(f"expected {what}")

    def astring(self, what: str) -> bytes:
        """astring = 1*ASTRING-CHAR / string."""
        c = self.peek()
        if c == 0x22:
            return self.quoted()
        if c == -1 and self.at_literal():
            return self.bytes_literal()
        value = self.match(_ASTRING_ATOM)
        if value is None:
            self.fail(f"expected {what}")
        return value

    def nstring(self, what: str) -> bytes | None:
        """A string or NIL (an astring atom is accepted too)."""
        c = self.peek()
        if c != 0x22 and not self.at_literal():
            value = self.match(_ASTRING_ATOM)
            if value is None:
                self.fail(f"expected {what}")
            return None if value.upper() == b"NIL" else value
        return self.string(what)

    def mailbox(self, what: str = "a mailbox name") -> str:
        name = self._mailbox_text(self.astring(what))
        # INBOX is case-insensitive (RFC 3501 5.1); ASCII only, so that
        # "\u0131nbox" (dotless i) stays a name of its own.
        return "INBOX" if name.isascii() and name.upper() == "INBOX" else name

    def list_mailbox(self) -> str:
        """list-mailbox = 1*list-char / string (may hold % and *)."""
        c = self.peek()
        if c == 0x22 or (c == -1 and self.at_literal()):
            raw = self.string("a mailbox pattern")
        else:
            raw = self.match(_LIST_CHARS)
            if raw is None:
                self.fail("expected a mailbox pattern")
        return self._mailbox_text(raw)

    def _mailbox_text(self, raw: bytes) -> str:
        try:
            name = decode_mailbox(raw)
        except ValueError as error:
            self.fail(str(error))
        # RFC 9051 5.1 asks for Net-Unicode names (RFC 5198): no controls.
        if _CONTROLS.search(name):
            self.fail("mailbox name has a control character")
        return name

    def sequence_set(self) -> SequenceSet:
        text = self.match(_SEQUENCE)
        if text is None:
            self.fail("expected a sequence set")
        try:
            return SequenceSet.parse(text)
        except ValueError as error:
            self.fail(str(error))

    # Flags (RFC 3501 section 9: flag, flag-list).

    def flag(self) -> str:
        if self.accept(0x5C):  # "\"
            atom = self.match(_ATOM)
            if atom is None:
                self.fail("invalid flag")
            canonical = _SYSTEM_FLAGS.get(atom.lower())
            if canonical is None:
                if atom.lower() == b"recent":
                    self.fail("\\Recent can not be set by a client")
                self.fail("unknown system flag")
            return canonical
        atom = self.match(_ATOM)
        if atom is None:
            self.fail("expected a flag")
        return atom.decode("ascii")

    def flag_list(self) -> tuple[str, ...]:
        self.expect(0x28, "(")
        flags: list[str] = []
        if not self.accept(0x29):
            flags.append(self.flag())
            while self.accept(_SP):
                flags.append(self.flag())
            self.expect(0x29, "')' after flags")
        return tuple(dict.fromkeys(flags))


_SYSTEM_FLAGS = {
    b"answered": "\\Answered",
    b"flagged": "\\Flagged",
    b"deleted": "\\Deleted",
    b"seen": "\\Seen",
    b"draft": "\\Draft",
}


# --- Command grammar --------------------------------------------------------


def _read_tag(r: _Reader) -> None:
    tag = r.match(_TAG)
    if tag is None or not (r.peek() == _SP or r.at_end()):
        raise IMAPSyntaxError(None, "missing or invalid tag")
    r.tag = tag.decode("ascii")


def _command_name(r: _Reader) -> str:
    if r.at_end():
        r.fail("missing command")
    r.sp()
    name = r.match(_ATOM)
    if name is None:
        r.fail("missing command")
    return name.upper().decode("ascii")


def parse_command(parts: Sequence) -> Command:
    """Parse one complete command; see the module docstring."""
    r = _Reader(parts)
    _read_tag(r)
    name = _command_name(r)
    if name == "UID":
        sub = _command_name(r)
        handler = _UID_COMMANDS.get(sub)
        if handler is None:
            raise UnknownCommand(r.tag, "unknown command")
        command = handler(r, True)
    else:
        handler = _COMMANDS.get(name)
        if handler is None:
            raise UnknownCommand(r.tag, "unknown command")
        command = handler(r)
    r.end()
    return command


def _no_arguments(cls):
    return lambda r: cls(r.tag)


def _authenticate(r: _Reader) -> Authenticate:
    r.sp()
    mechanism = r.atom("a SASL mechanism").upper().decode("ascii")
    initial = None
    if r.accept(_SP):
        text = r.match(_BASE64)
        if text is None:
            r.fail("invalid initial response")
        # Checked here (a bad one is BAD), decoded with the responses that
        # follow by the engine kit's SaslExchange: one decoder everywhere.
        if decode_base64(bytes(text)) is None:
            r.fail("invalid base64 in initial response")
        initial = bytes(text)
    return Authenticate(r.tag, mechanism, initial)


def _login(r: _Reader) -> Login:
    r.sp()
    userid = r.astring("a user name")
    r.sp()
    password = r.astring("a password")
    return Login(r.tag, bytes(userid), bytes(password))


def _ext_value(r: _Reader, depth: int):
    """tagged-ext-val (RFC 4466): a simple value or a parenthesized list of
    astrings and lists, as str and nested tuples."""
    if depth > MAX_NESTING:
        r.fail("too deeply nested")
    if r.accept(0x28):
        items: list = []
        if not r.accept(0x29):
            while True:
                c = r.peek()
                if c == 0x28:
                    items.append(_ext_value(r, depth + 1))
                elif c == 0x22 or r.at_literal():
                    items.append(r.string("a parameter value").decode("utf-8", "surrogateescape"))
                else:
                    # astring, or a sequence set such as 1:* (RFC 4466)
                    value = r.match(_EXT_ATOM)
                    if value is None:
                        r.fail("expected a parameter value")
                    items.append(value.decode("ascii"))
                if r.accept(0x29):
                    break
                r.sp()
        return tuple(items)
    simple = r.match(_EXT_SIMPLE)
    if simple is None:
        r.fail("expected a parameter value")
    return simple.decode("ascii")


def _params(r: _Reader) -> tuple:
    """Optional RFC 4466 parameters after a mailbox: SP "(" name [SP value]
    *(SP name [SP value]) ")", kept generic for the engine to judge."""
    if not r.accept(_SP):
        return ()
    r.expect(0x28, "'(' before parameters")
    params: list = []
    if r.accept(0x29):
        return ()
    while True:
        label = r.match(_EXT_LABEL)
        if label is None:
            r.fail("expected a parameter name")
        value = None
        if r.accept(_SP):
            c = r.peek()
            if c == 0x28 or c == 0x2A or 0x30 <= c <= 0x39:
                value = _ext_value(r, 1)
            else:
                params.append((label.upper().decode("ascii"), None))
                continue
        params.append((label.upper().decode("ascii"), value))
        if r.accept(0x29):
            return tuple(params)
        r.sp()


def _mailbox_with_params(cls):
    def parse(r: _Reader):
        r.sp()
        mailbox = r.mailbox()
        return cls(r.tag, mailbox, _params(r))

    return parse


def _mailbox_only(cls):
    def parse(r: _Reader):
        r.sp()
        return cls(r.tag, r.mailbox())

    return parse


def _rename(r: _Reader) -> Rename:
    r.sp()
    old = r.mailbox()
    r.sp()
    return Rename(r.tag, old, r.mailbox("a new mailbox name"))


_LIST_SELECTION = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
_LIST_RETURN = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE"})
# Selection options that imply a return option (RFC 5258 section 3, RFC 6154
# section 5.1; the IANA LIST-EXTENDED registry lists them).
_LIST_IMPLIED = {"SUBSCRIBED": "SUBSCRIBED", "SPECIAL-USE": "SPECIAL-USE"}


def _list_options(r: _Reader, known: frozenset, what: str) -> frozenset:
    r.expect(0x28, "(")
    options: set[str] = set()
    if r.accept(0x29):
        return frozenset()
    while True:
        option = r.atom(f"a LIST {what} option").upper().decode("ascii")
        # RFC 5258 section 3: an unrecognized option gets a tagged BAD.
        if option not in known:
            r.fail(f"unsupported LIST {what} option")
        options.add(option)
        if r.accept(0x29):
            return frozenset(options)
        r.sp()


def _list(r: _Reader) -> List:
    r.sp()
    extended = False
    selection: frozenset = frozenset()
    if r.peek() == 0x28:
        extended = True
        selection = _list_options(r, _LIST_SELECTION, "selection")
        # RFC 5258 section 3: RECURSIVEMATCH needs a selection it modifies.
        if "RECURSIVEMATCH" in selection and not selection - {"RECURSIVEMATCH", "REMOTE"}:
            r.fail("RECURSIVEMATCH needs another selection option")
        r.sp()
    reference = r._mailbox_text(r.astring("a reference name"))
    r.sp()
    if r.accept(0x28):
        extended = True
        patterns = [r.list_mailbox()]
        while r.accept(_SP):
            patterns.append(r.list_mailbox())
        r.expect(0x29, "')' after patterns")
    else:
        patterns = [r.list_mailbox()]
    returns: set[str] = set()
    if r.accept(_SP):
        word = r.atom("RETURN")
        if word.upper() != b"RETURN":
            r.fail("expected RETURN")
        r.sp()
        extended = True
        returns.update(_list_options(r, _LIST_RETURN, "return"))
    returns.update(_LIST_IMPLIED[o] for o in selection if o in _LIST_IMPLIED)
    return List(r.tag, reference, tuple(patterns), selection, frozenset(returns), extended)


def _lsub(r: _Reader) -> Lsub:
    r.sp()
    reference = r._mailbox_text(r.astring("a reference name"))
    r.sp()
    return Lsub(r.tag, reference, r.list_mailbox())


_STATUS_ITEMS = frozenset({"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN"})


def _status(r: _Reader) -> Status:
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    r.expect(0x28, "'(' before status items")
    items: list[str] = []
    while True:
        item = r.atom("a status item").upper().decode("ascii")
        if item not in _STATUS_ITEMS:
            r.fail("unknown status item")
        items.append(item)
        if r.accept(0x29):
            break
        r.sp()
    return Status(r.tag, mailbox, tuple(dict.fromkeys(items)))


def _append_head(r: _Reader, stop_at_end: bool):
    """mailbox [SP flag-list] [SP date-time] SP, up to APPEND's message.
    With stop_at_end (append_prefix), returns None if the text runs out
    where the mailbox would be."""
    r.sp()
    if stop_at_end and r.at_end():
        return None
    mailbox = r.mailbox()
    r.sp()
    flags: tuple[str, ...] = ()
    date = None
    if r.peek() == 0x28:
        flags = r.flag_list()
        r.sp()
    if r.peek() == 0x22:
        text = r.quoted()
        try:
            date = parse_date_time(text)
        except ValueError:
            r.fail("invalid date-time")
        r.sp()
    return mailbox, flags, date


def _append(r: _Reader) -> Append:
    mailbox, flags, date = _append_head(r, False)
    if not r.at_literal():
        r.fail("expected the message as a literal")
    return Append(r.tag, mailbox, flags, date, r.literal())


def append_prefix(parts: Sequence) -> AppendPrefix | None:
    """Given the parts of a command received so far, ending where a literal
    was just announced (the announcement removed): an AppendPrefix if that
    literal is APPEND's message; None if the command is not APPEND (or its
    tag is unreadable) or the literal is the mailbox name. Raises
    IMAPSyntaxError if the command is an APPEND that can not be valid
    whatever follows (the engine may refuse the literal)."""
    r = _Reader(parts)
    try:
        _read_tag(r)
        name = _command_name(r)
    except IMAPSyntaxError:
        return None
    if name != "APPEND":
        return None
    head = _append_head(r, True)
    if head is None:
        return None
    if not r.at_end():
        r.fail("expected the message as a literal")
    mailbox, flags, date = head
    return AppendPrefix(r.tag, mailbox, flags, date)


def _expunge(r: _Reader) -> Expunge:
    return Expunge(r.tag)


def _uid_expunge(r: _Reader, uid: bool) -> Expunge:
    r.sp()
    return Expunge(r.tag, r.sequence_set())


# FETCH (RFC 3501 6.4.5 and section 9: fetch-att, section).

_FETCH_SIMPLE = frozenset(
    {"ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT", "BODY", "BODYSTRUCTURE", "UID"}
)
_FETCH_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SECTION_KINDS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"})


def _fetch_att(r: _Reader):
    name = r.match(_FETCH_NAME)
    if name is None:
        r.fail("expected a fetch item")
    name = name.upper().decode("ascii")
    if r.peek() == 0x5B:  # "["
        if name == "BODY":
            return _body_section(r, False)
        if name == "BODY.PEEK":
            return _body_section(r, True)
        r.fail("unknown fetch item")
    if name in _FETCH_SIMPLE:
        return name
    r.fail("unknown fetch item")


def _body_section(r: _Reader, peek: bool) -> BodySection:
    r.pos += 1  # "["
    spec = r.match(_SECTION).upper()
    part: list[int] = []
    kind = ""
    if spec:
        components = spec.split(b".")
        index = 0
        while index < len(components) and components[index].isdigit():
            digits = components[index]
            if len(digits) > 10 or not 0 < int(digits) <= _SEQ_NUMBER_MAX:
                r.fail("invalid section part number")
            part.append(int(digits))
            index += 1
        if index < len(components):
            kind = b".".join(components[index:]).decode("ascii")
            if kind not in _SECTION_KINDS:
                r.fail("invalid section")
        if kind == "MIME" and not part:
            r.fail("MIME needs a part number")
    echo = [b"BODY[", spec]
    fields: tuple[str, ...] = ()
    if kind in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        r.sp()
        r.expect(0x28, "'(' before header field names")
        names = [r.astring("a header field name").upper()]
        while r.accept(_SP):
            names.append(r.astring("a header field name").upper())
        r.expect(0x29, "')' after header field names")
        names = list(dict.fromkeys(names))
        fields = tuple(n.decode("ascii", "surrogateescape") for n in names)
        # Field names are echoed as atoms when they may be, else as strings.
        echo.append(b" (" + b" ".join(n if _ATOM.fullmatch(n) else encode(bytes(n)) for n in names) + b")")
    r.expect(0x5D, "']' after section")
    echo.append(b"]")
    partial = None
    if r.accept(0x3C):  # "<"
        origin = r.number("a partial origin")
        r.expect(0x2E, "'.' in partial")
        length = r.nz_number("a partial length")
        r.expect(0x3E, "'>' after partial")
        partial = (origin, length)
        echo.append(b"<%d>" % origin)
    return BodySection(peek, tuple(part), kind, fields, partial, Raw(b"".join(echo)))


def _fetch(r: _Reader, uid: bool = False) -> Fetch:
    r.sp()
    sequence_set = r.sequence_set()
    r.sp()
    if r.accept(0x28):
        items = [_fetch_att(r)]
        while r.accept(_SP):
            items.append(_fetch_att(r))
        r.expect(0x29, "')' after fetch items")
    else:
        start = r.pos
        word = r.match(_FETCH_NAME)
        macro = _FETCH_MACROS.get(word.upper().decode("ascii")) if word else None
        if macro is not None and r.peek() != 0x5B:
            items = list(macro)
        else:
            r.pos = start
            items = [_fetch_att(r)]
    return Fetch(r.tag, sequence_set, tuple(dict.fromkeys(items)), uid)


_STORE_ACTIONS = {b"": "replace", b"+": "add", b"-": "remove"}
_STORE_ITEM = re.compile(rb"([+-]?)(FLAGS(?:\.SILENT)?)", re.IGNORECASE)


def _store(r: _Reader, uid: bool = False) -> Store:
    r.sp()
    sequence_set = r.sequence_set()
    r.sp()
    m = _STORE_ITEM.match(r.buf, r.pos)
    if m is None:
        r.fail("expected FLAGS, +FLAGS or -FLAGS")
    r.pos = m.end()
    r.sp()
    if r.peek() == 0x28:
        flags = r.flag_list()
    else:
        found = [r.flag()]
        while r.accept(_SP):
            found.append(r.flag())
        flags = tuple(dict.fromkeys(found))
    silent = len(m.group(2)) > 5
    return Store(r.tag, sequence_set, _STORE_ACTIONS[m.group(1)], silent, flags, uid)


def _copy_like(cls):
    def parse(r: _Reader, uid: bool = False):
        r.sp()
        sequence_set = r.sequence_set()
        r.sp()
        return cls(r.tag, sequence_set, r.mailbox(), uid)

    return parse


def _id(r: _Reader) -> Id:
    r.sp()
    if not r.accept(0x28):
        if r.atom("a parameter list or NIL").upper() != b"NIL":
            r.fail("expected a parameter list or NIL")
        return Id(r.tag, None)
    pairs: list = []
    if not r.accept(0x29):
        while True:
            field = r.astring("an ID field").decode("utf-8", "replace")
            r.sp()
            value = r.nstring("an ID value")
            pairs.append((field, None if value is None else value.decode("utf-8", "replace")))
            if r.accept(0x29):
                break
            r.sp()
    return Id(r.tag, tuple(pairs))


def _enable(r: _Reader) -> Enable:
    r.sp()
    names = [r.atom("a capability").upper().decode("ascii")]
    while r.accept(_SP):
        names.append(r.atom("a capability").upper().decode("ascii"))
    return Enable(r.tag, tuple(dict.fromkeys(names)))


# SEARCH (RFC 3501 6.4.4 and section 9: search, search-key).


def _search(r: _Reader, uid: bool = False) -> Search:
    r.sp()
    charset = None
    start = r.pos
    word = r.match(_ATOM)
    if word is not None and word.upper() == b"CHARSET" and r.peek() == _SP:
        r.sp()
        name = r.astring("a charset").decode("ascii", "replace").upper()
        if name not in SUPPORTED_CHARSETS:
            raise BadCharset(r.tag, "unsupported charset")
        charset = name
        r.sp()
    else:
        r.pos = start
    codec = "ascii" if charset == "US-ASCII" else "utf-8"
    keys = [_search_key(r, codec, 1)]
    while r.accept(_SP):
        keys.append(_search_key(r, codec, 1))
    return Search(r.tag, charset, keys[0] if len(keys) == 1 else And(tuple(keys)), uid)


def _flag_key(flag: str, present: bool):
    key = Flag(flag, present)
    return lambda r, codec, depth: key


def _constant(key):
    return lambda r, codec, depth: key


def _header_key(field: str):
    def parse(r, codec, depth):
        r.sp()
        return Header(field, r.astring("a search string").decode(codec, "replace"))

    return parse


def _text_key(body_only: bool):
    def parse(r, codec, depth):
        r.sp()
        return Text(r.astring("a search string").decode(codec, "replace"), body_only)

    return parse


def _date_key(cls, relation: str):
    def parse(r, codec, depth):
        r.sp()
        text = r.astring("a date")
        try:
            return cls(relation, _parse_date(text))
        except ValueError:
            r.fail("invalid date")

    return parse


def _size_key(relation: str):
    def parse(r, codec, depth):
        r.sp()
        return Size(relation, r.number("a size"))

    return parse


def _keyword_key(present: bool):
    def parse(r, codec, depth):
        r.sp()
        return Flag(r.atom("a keyword").decode("ascii"), present)

    return parse


def _header_field_key(r, codec, depth):
    r.sp()
    field = r.astring("a header field name").decode(codec, "replace").lower()
    r.sp()
    return Header(field, r.astring("a search string").decode(codec, "replace"))


def _uid_key(r, codec, depth):
    r.sp()
    return UidSet(r.sequence_set())


def _not_key(r, codec, depth):
    r.sp()
    return Not(_search_key(r, codec, depth + 1))


def _or_key(r, codec, depth):
    r.sp()
    left = _search_key(r, codec, depth + 1)
    r.sp()
    return Or(left, _search_key(r, codec, depth + 1))


_SEARCH_KEYS = {
    b"ALL": _constant(All()),
    b"ANSWERED": _flag_key("\\Answered", True),
    b"BCC": _header_key("bcc"),
    b"BEFORE": _date_key(InternalDate, "before"),
    b"BODY": _text_key(True),
    b"CC": _header_key("cc"),
    b"DELETED": _flag_key("\\Deleted", True),
    b"DRAFT": _flag_key("\\Draft", True),
    b"FLAGGED": _flag_key("\\Flagged", True),
    b"FROM": _header_key("from"),
    b"HEADER": _header_field_key,
    b"KEYWORD": _keyword_key(True),
    b"LARGER": _size_key("larger"),
    # NEW = RECENT UNSEEN, OLD = NOT RECENT (RFC 3501 6.4.4).
    b"NEW": _constant(And((Recent(True), Flag("\\Seen", False)))),
    b"NOT": _not_key,
    b"OLD": _constant(Recent(False)),
    b"ON": _date_key(InternalDate, "on"),
    b"OR": _or_key,
    b"RECENT": _constant(Recent(True)),
    b"SEEN": _flag_key("\\Seen", True),
    b"SENTBEFORE": _date_key(SentDate, "before"),
    b"SENTON": _date_key(SentDate, "on"),
    b"SENTSINCE": _date_key(SentDate, "since"),
    b"SINCE": _date_key(InternalDate, "since"),
    b"SMALLER": _size_key("smaller"),
    b"SUBJECT": _header_key("subject"),
    b"TEXT": _text_key(False),
    b"TO": _header_key("to"),
    b"UID": _uid_key,
    b"UNANSWERED": _flag_key("\\Answered", False),
    b"UNDELETED": _flag_key("\\Deleted", False),
    b"UNDRAFT": _flag_key("\\Draft", False),
    b"UNFLAGGED": _flag_key("\\Flagged", False),
    b"UNKEYWORD": _keyword_key(False),
    b"UNSEEN": _flag_key("\\Seen", False),
}


def _search_key(r: _Reader, codec: str, depth: int):
    if depth > MAX_NESTING:
        r.fail("search too deeply nested")
    c = r.peek()
    if c == 0x28:  # "("
        r.pos += 1
        keys = [_search_key(r, codec, depth + 1)]
        while r.accept(_SP):
            keys.append(_search_key(r, codec, depth + 1))
        r.expect(0x29, "')' in search")
        return keys[0] if len(keys) == 1 else And(tuple(keys))
    if c == 0x2A or 0x30 <= c <= 0x39:  # "*" or a digit
        return SeqSet(r.sequence_set())
    word = r.match(_ATOM)
    if word is None:
        r.fail("expected a search key")
    parse = _SEARCH_KEYS.get(word.upper())
    if parse is None:
        r.fail("unknown search key")
    return parse(r, codec, depth)


_COMMANDS: dict[str, Callable] = {
    "APPEND": _append,
    "AUTHENTICATE": _authenticate,
    "CAPABILITY": _no_arguments(Capability),
    "CHECK": _no_arguments(Check),
    "CLOSE": _no_arguments(Close),
    "COPY": _copy_like(Copy),
    "CREATE": _mailbox_with_params(Create),
    "DELETE": _mailbox_only(Delete),
    "ENABLE": _enable,
    "EXAMINE": _mailbox_with_params(Examine),
    "EXPUNGE": _expunge,
    "FETCH": _fetch,
    "ID": _id,
    "IDLE": _no_arguments(Idle),
    "LIST": _list,
    "LOGIN": _login,
    "LOGOUT": _no_arguments(Logout),
    "LSUB": _lsub,
    "MOVE": _copy_like(Move),
    "NAMESPACE": _no_arguments(Namespace),
    "NOOP": _no_arguments(Noop),
    "RENAME": _rename,
    "SEARCH": _search,
    "SELECT": _mailbox_with_params(Select),
    "STARTTLS": _no_arguments(StartTLS),
    "STATUS": _status,
    "STORE": _store,
    "SUBSCRIBE": _mailbox_only(Subscribe),
    "UNSELECT": _no_arguments(Unselect),
    "UNSUBSCRIBE": _mailbox_only(Unsubscribe),
}

_UID_COMMANDS: dict[str, Callable] = {
    "COPY": _copy_like(Copy),
    "EXPUNGE": _uid_expunge,
    "FETCH": _fetch,
    "MOVE": _copy_like(Move),
    "SEARCH": _search,
    "STORE": _store,
}
