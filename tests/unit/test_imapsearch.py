"""Unit tests for SEARCH evaluation (baremail.imapsearch).

Keys come from the real parser; messages are small fakes that record which
lazy methods were called, so the tests can tell when a file would be read.
"""

import calendar
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baremail.imapdata import Literal
from baremail.imapsearch import TextNeedle, TextScanner, compile_search, needs_content, search
from baremail.imapsyntax import (
    All,
    And,
    Flag,
    Header,
    Not,
    Or,
    Recent,
    SeqSet,
    SequenceSet,
    Size,
    Text,
    UidSet,
    parse_command,
)


@dataclass
class Msg:
    seq: int
    uid: int
    flags: frozenset = frozenset()
    recent: bool = False
    size: int = 100
    internal_date: float = 0.0
    headers: dict = field(default_factory=dict)  # lower-case name -> values
    body: str = ""
    reads: list = field(default_factory=list)

    def header_values(self, name):
        self.reads.append(("header", name))
        return list(self.headers.get(name, []))

    def find_text(self, needles):
        self.reads.append(("text", needles))
        scanner = TextScanner(needles)
        for name, values in self.headers.items():
            for value in values:
                scanner.header(f"{name}: {value}\r\n")
        scanner.body(self.body)
        return scanner.found


def key(text, *parts):
    return parse_command([b"A1 SEARCH " + text, *parts]).key


def run(text, messages, *, count=None, uid_max=None):
    """Sequence numbers matching the SEARCH arguments `text`."""
    count = len(messages) if count is None else count
    uid_max = max((m.uid for m in messages), default=0) if uid_max is None else uid_max
    return search(key(text), messages, count=count, uid_max=uid_max)


def reads(messages):
    return [r for m in messages for r in m.reads]


def mailbox():
    return [
        Msg(1, 10, frozenset({"\\Seen"}), size=500, headers={"from": ["Alice <alice@example.org>"], "subject": ["Hello"]},
            body="first body"),
        Msg(2, 11, frozenset({"\\Answered", "\\Seen", "$Forwarded"}), recent=True, size=1500,
            headers={"from": ["Bob <bob@example.org>"], "to": ["alice@example.org"], "subject": ["Re: Hello"]},
            body="second BODY text"),
        Msg(3, 20, frozenset({"\\Flagged", "\\Deleted"}), recent=True, size=100,
            headers={"from": ["Carol"], "cc": ["bob@example.org"], "bcc": ["dave@example.org"],
                     "subject": ["Stra\u00dfe"], "x-spam": [""]}, body="straße und mehr"),
        Msg(4, 35, frozenset({"\\Draft", "nonjunk"}), size=1000, headers={"subject": ["draft"]}, body=""),
    ]


# --- Flags and cheap keys ---------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (b"ALL", [1, 2, 3, 4]),
        (b"ANSWERED", [2]),
        (b"UNANSWERED", [1, 3, 4]),
        (b"DELETED", [3]),
        (b"UNDELETED", [1, 2, 4]),
        (b"DRAFT", [4]),
        (b"UNDRAFT", [1, 2, 3]),
        (b"FLAGGED", [3]),
        (b"UNFLAGGED", [1, 2, 4]),
        (b"SEEN", [1, 2]),
        (b"UNSEEN", [3, 4]),
        (b"RECENT", [2, 3]),
        (b"OLD", [1, 4]),
        (b"NEW", [3]),  # RECENT UNSEEN
        (b"KEYWORD $Forwarded", [2]),
        (b"KEYWORD $forwarded", [2]),  # keywords compare case-insensitively
        (b"UNKEYWORD $Forwarded", [1, 3, 4]),
        (b"KEYWORD NonJunk", [4]),
        (b"UNKEYWORD NONJUNK", [1, 2, 3]),
        (b"KEYWORD $Junk", []),
        (b"LARGER 1000", [2]),
        (b"LARGER 999", [2, 4]),
        (b"SMALLER 500", [3]),
        (b"SMALLER 501", [1, 3]),
        (b"UID 10", [1]),
        (b"UID 11:20", [2, 3]),
        (b"UID 2:6", []),
        (b"UID *", [4]),
        (b"UID 100:*", [4]),  # n:* past the highest UID: the highest (RFC 3501 6.4.8)
        (b"UID 30:12", [3]),
        (b"2:3", [2, 3]),
        (b"*", [4]),
        (b"3:*", [3, 4]),
        (b"1,4", [1, 4]),
        (b"NOT SEEN", [3, 4]),
        (b"OR SEEN FLAGGED", [1, 2, 3]),
        (b"SEEN ANSWERED", [2]),
        (b"(SEEN) (NOT ANSWERED)", [1]),
        (b"OR (DRAFT LARGER 10) UID 10", [1, 4]),
        (b"NOT NOT SEEN", [1, 2]),
        (b"OR OR DRAFT DELETED ANSWERED", [2, 3, 4]),
    ],
)
def test_cheap_keys(text, expected):
    messages = mailbox()
    assert run(text, messages) == expected
    assert reads(messages) == []  # none of these reads a file


def test_search_answers_sequence_numbers_not_uids():
    # smtp4dev answered UIDs where sequence numbers were asked.
    messages = mailbox()
    assert run(b"UID 20", messages) == [3]


def test_sequence_set_keys_use_the_message_count():
    messages = mailbox()[:2]
    assert run(b"*", messages, count=2) == [2]
    assert run(b"5:*", messages, count=2) == [2]


def test_empty_mailbox():
    assert run(b"ALL", [], count=0, uid_max=0) == []
    assert run(b"UID 1:*", [], count=0, uid_max=0) == []


def test_system_flags_need_canonical_case():
    # The parser makes system flags canonical; the caller's flags are too.
    assert search(Flag("\\Seen", True), [Msg(1, 1, frozenset({"\\seen"}))], count=1, uid_max=1) == []


# --- Dates ------------------------------------------------------------------


@pytest.fixture
def local_tz():
    saved = os.environ.get("TZ")

    def use(rule):
        os.environ["TZ"] = rule
        time.tzset()

    yield use
    if saved is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = saved
    time.tzset()


def utc(*fields):
    return float(calendar.timegm(fields))


def test_internal_date_keys_use_the_local_calendar_date(local_tz):
    local_tz("XYZ-2")  # two hours east of UTC
    messages = [
        Msg(1, 1, internal_date=utc(1994, 1, 31, 21, 59, 59)),  # 31-Jan 23:59:59 local
        Msg(2, 2, internal_date=utc(1994, 1, 31, 22, 0, 0)),  # 1-Feb 00:00 local
        Msg(3, 3, internal_date=utc(1994, 2, 1, 21, 59, 59)),  # 1-Feb 23:59:59 local
        Msg(4, 4, internal_date=utc(1994, 2, 1, 22, 30, 0)),  # 2-Feb 00:30 local, still 1-Feb in UTC
    ]
    assert run(b"BEFORE 1-Feb-1994", messages) == [1]
    assert run(b"ON 1-Feb-1994", messages) == [2, 3]
    assert run(b"SINCE 1-Feb-1994", messages) == [2, 3, 4]
    assert run(b"SINCE 2-Feb-1994", messages) == [4]
    assert run(b'ON "2-Feb-1994"', messages) == [4]
    assert run(b"NOT BEFORE 2-Feb-1994", messages) == [4]
    assert reads(messages) == []


def test_internal_date_keys_across_daylight_saving(local_tz):
    local_tz("CET-1CEST,M3.5.0,M10.5.0/3")
    # 27-Oct-2024 is 25 hours long in CET/CEST.
    messages = [
        Msg(1, 1, internal_date=utc(2024, 10, 26, 22, 0, 0)),  # 27-Oct 00:00 CEST
        Msg(2, 2, internal_date=utc(2024, 10, 27, 22, 59, 59)),  # 27-Oct 23:59:59 CET
        Msg(3, 3, internal_date=utc(2024, 10, 27, 23, 0, 0)),  # 28-Oct 00:00 CET
    ]
    assert run(b"ON 27-Oct-2024", messages) == [1, 2]
    assert run(b"SINCE 28-Oct-2024", messages) == [3]


def dated(seq, value):
    return Msg(seq, seq, headers={"date": [value]} if value is not None else {})


def test_sent_date_keys_use_the_header_date_in_its_own_zone(local_tz):
    local_tz("UTC0")
    messages = [
        dated(1, "Mon, 31 Jan 1994 23:30:00 -0800"),  # 1-Feb in UTC, but written 31-Jan
        dated(2, "Tue, 1 Feb 1994 00:10:00 +1300"),  # 31-Jan in UTC, but written 1-Feb
        dated(3, "2 Feb 1994 12:00 GMT"),
        dated(4, None),
        dated(5, "not a date"),
        dated(6, "Tue, 1 Feb 94 10:00:00 +0000"),  # two-digit year
    ]
    assert run(b"SENTBEFORE 1-Feb-1994", messages) == [1]
    assert run(b"SENTON 1-Feb-1994", messages) == [2, 6]
    assert run(b"SENTSINCE 1-Feb-1994", messages) == [2, 3, 6]
    # A message without a usable Date: matches no SENT* key.
    assert run(b"NOT SENTON 1-Feb-1994", messages) == [1, 3, 4, 5]


def test_sent_date_reads_the_date_header_once():
    message = dated(1, "1 Feb 1994 10:00 +0000")
    assert run(b"OR SENTBEFORE 1-Jan-1990 OR SENTON 1-Feb-1994 HEADER Date 1994", [message]) == [1]
    assert message.reads == [("header", "date")]


def test_sent_date_with_invalid_calendar_fields():
    assert run(b"SENTON 1-Feb-1994", [dated(1, "31 Feb 1994 10:00 +0000")]) == []


# --- Header keys ------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (b"FROM alice", [1]),
        (b"FROM EXAMPLE.ORG", [1, 2]),
        (b"TO alice", [2]),
        (b"CC bob", [3]),
        (b"BCC dave", [3]),
        (b"SUBJECT hello", [1, 2]),
        (b'SUBJECT "re: hello"', [2]),
        (b"SUBJECT STRASSE", [3]),  # casefold: "Straße" matches "STRASSE"
        (b"HEADER X-Spam \"\"", [3]),  # an empty string: the field exists
        (b'HEADER to ""', [2]),
        (b'FROM ""', [1, 2, 3]),
        (b"HEADER Subject aft", [4]),
        (b"HEADER X-Missing x", []),
        (b"NOT FROM bob", [1, 3, 4]),
    ],
)
def test_header_keys(text, expected):
    assert run(text, mailbox()) == expected


def test_header_key_with_a_literal_and_utf8():
    messages = [Msg(1, 1, headers={"subject": ["Grüße aus Köln"]}), Msg(2, 2, headers={"subject": ["x"]})]
    found = search(key(b"CHARSET UTF-8 SUBJECT ", Literal("KÖLN".encode()), b""), messages, count=2, uid_max=2)
    assert found == [1]


def test_smtp4dev_message_id_search():
    messages = [Msg(1, 5, headers={"message-id": ["<a@x>"]}), Msg(2, 6, headers={"message-id": ["<b@x>"]})]
    assert run(b"HEADER MESSAGE-ID <b@x>", messages) == [2]


def test_each_header_field_is_asked_for_once_per_message():
    message = Msg(1, 1, headers={"from": ["a"], "subject": ["s"]})
    assert run(b"OR FROM x OR FROM y OR SUBJECT z FROM a", [message]) == [1]
    assert sorted(message.reads) == [("header", "from"), ("header", "subject")]


# --- Text keys --------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (b"BODY body", [1, 2]),
        (b"BODY SECOND", [2]),
        (b"BODY STRASSE", [3]),
        (b"BODY hello", []),  # only in a header
        (b"TEXT hello", [1, 2]),  # TEXT searches the header too
        (b"TEXT alice@", [1, 2]),
        (b"TEXT subject", [1, 2, 3, 4]),  # field names are header text
        (b"NOT BODY body", [3, 4]),
        (b"BODY first BODY body", [1]),
        (b"OR BODY first TEXT draft", [1, 4]),
    ],
)
def test_text_keys(text, expected):
    assert run(text, mailbox()) == expected


def test_empty_text_matches_without_reading():
    messages = mailbox()
    assert run(b'BODY ""', messages) == [1, 2, 3, 4]
    assert run(b'TEXT ""', messages) == [1, 2, 3, 4]
    assert reads(messages) == []


def test_find_text_gets_all_needles_once():
    messages = mailbox()
    assert run(b"OR BODY FIRST OR TEXT Hello BODY \"Stra\xc3\x9fe\"", messages) == [1, 2, 3]
    for message in messages:
        texts = [r for r in message.reads if r[0] == "text"]
        assert len(texts) <= 1
    asked = next(r[1] for r in reads(messages) if r[0] == "text")
    assert asked == frozenset({TextNeedle("first", True), TextNeedle("hello", False), TextNeedle("strasse", True)})


# --- Laziness and order -----------------------------------------------------


def test_cheap_keys_decide_before_any_file_is_read():
    messages = mailbox()
    # Client order puts the expensive key first; the flag decides for 3 and 4.
    assert run(b"BODY body SEEN", messages) == [1, 2]
    assert [m.seq for m in messages if m.reads] == [1, 2]
    messages = mailbox()
    assert run(b"OR BODY nothing SEEN", messages) == [1, 2]
    assert [m.seq for m in messages if m.reads] == [3, 4]
    messages = mailbox()
    assert run(b"LARGER 100000 FROM alice TEXT x", messages) == []
    assert reads(messages) == []
    messages = mailbox()
    assert run(b"UID 10 SUBJECT hello", messages) == [1]
    assert [m.seq for m in messages if m.reads] == [1]


def test_headers_are_read_before_the_body():
    messages = mailbox()
    assert run(b"TEXT body FROM bob", messages) == [2]
    # Messages 1, 3 and 4 fail on From: without the text search.
    assert [m.seq for m in messages if any(r[0] == "text" for r in m.reads)] == [2]


def test_needs_content():
    assert not needs_content(key(b"SEEN UID 1:* LARGER 5 SINCE 1-Jan-2000 OR NEW 1:3"))
    assert not needs_content(key(b'BODY ""'))
    assert needs_content(key(b"FROM x"))
    assert needs_content(key(b"SENTON 1-Jan-2000"))
    assert needs_content(key(b"NOT OR SEEN BODY x"))


def test_compile_search_for_one_message_at_a_time():
    match = compile_search(key(b"OR SEEN UID 35"), count=4, uid_max=35)
    assert [match(m) for m in mailbox()] == [True, True, False, True]


def test_unknown_key_type_is_a_caller_bug():
    with pytest.raises(TypeError):
        compile_search("SEEN", count=1, uid_max=1)


def test_a_large_mailbox_searches_quickly():
    messages = [Msg(i, i * 3, frozenset({"\\Seen"} if i % 2 else ()), size=i) for i in range(1, 20001)]
    start = time.perf_counter()
    found = run(b"UNSEEN LARGER 100 UID 1:*", messages, count=20000, uid_max=60000)
    assert len(found) == 9950
    assert time.perf_counter() - start < 1.0
    assert reads(messages) == []


# --- TextScanner ------------------------------------------------------------


def test_scanner_finds_needles_across_chunks():
    scanner = TextScanner([TextNeedle("hello world", True), TextNeedle("xyz", False)])
    scanner.header("Subject: nothing\r\n")
    for chunk in ("abc HEL", "LO WO", "R", "LD and more"):
        scanner.body(chunk)
    assert scanner.found == {TextNeedle("hello world", True)}
    assert not scanner.done
    scanner.body("..XY")
    scanner.body("Z")
    assert scanner.done


def test_scanner_casefolds_chunks():
    scanner = TextScanner([TextNeedle("strasse", True)])
    scanner.body("STRA")
    scanner.body("ßE")
    assert scanner.done


def test_scanner_keeps_body_needles_out_of_the_header():
    scanner = TextScanner([TextNeedle("secret", True), TextNeedle("subject", False)])
    scanner.header("Subject: secret\r\n")
    assert scanner.found == {TextNeedle("subject", False)}
    scanner.body("nothing here")
    assert scanner.found == {TextNeedle("subject", False)}


def test_scanner_does_not_match_across_header_and_body():
    scanner = TextScanner([TextNeedle("ab", False)])
    scanner.header("xa")
    scanner.body("bx")
    assert not scanner.found
    with pytest.raises(ValueError):
        scanner.header("late")


def test_scanner_with_empty_and_no_needles():
    assert TextScanner([TextNeedle("", True)]).done
    assert TextScanner([]).done


@settings(max_examples=300)
@given(st.text(alphabet="abAB ß", max_size=30), st.text(alphabet="abß", min_size=1, max_size=4),
       st.lists(st.integers(0, 30), max_size=5))
def test_scanner_agrees_with_a_whole_string_search(body, needle, cuts):
    folded = needle.casefold()
    scanner = TextScanner([TextNeedle(folded, True)])
    points = sorted({0, len(body), *[c for c in cuts if c <= len(body)]})
    for start, stop in zip(points, points[1:]):
        scanner.body(body[start:stop])
    assert (TextNeedle(folded, True) in scanner.found) == (folded in body.casefold())


# --- Against a naive reference ----------------------------------------------


def naive(key, m, count, uid_max):
    """What a key means, evaluated directly and eagerly."""
    if isinstance(key, All):
        return True
    if isinstance(key, Flag):
        if key.flag.startswith("\\"):
            return (key.flag in m.flags) == key.present
        return any(f.casefold() == key.flag.casefold() for f in m.flags) == key.present
    if isinstance(key, Recent):
        return m.recent == key.present
    if isinstance(key, Size):
        return m.size > key.size if key.relation == "larger" else m.size < key.size
    if isinstance(key, UidSet):
        return m.uid in set(key.set.resolve(uid_max))
    if isinstance(key, SeqSet):
        return m.seq in set(key.set.resolve(count))
    if isinstance(key, Header):
        values = m.headers.get(key.field, [])
        return bool(values) if not key.value else any(key.value.casefold() in v.casefold() for v in values)
    if isinstance(key, Text):
        header = "".join(f"{n}: {v}\r\n" for n, vs in m.headers.items() for v in vs)
        needle = key.value.casefold()
        return needle in m.body.casefold() or (not key.body_only and needle in header.casefold())
    if isinstance(key, Not):
        return not naive(key.key, m, count, uid_max)
    if isinstance(key, Or):
        return naive(key.left, m, count, uid_max) or naive(key.right, m, count, uid_max)
    if isinstance(key, And):
        return all(naive(k, m, count, uid_max) for k in key.keys)
    raise AssertionError(key)


FLAGS = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "$Junk", "$junk2"]
small_set = st.lists(st.tuples(st.one_of(st.none(), st.integers(1, 12)), st.one_of(st.none(), st.integers(1, 12))),
                     min_size=1, max_size=3).map(lambda items: SequenceSet(tuple(items)))
leaf = st.one_of(
    st.just(All()),
    st.builds(Flag, st.sampled_from(FLAGS + ["$JUNK"]), st.booleans()),
    st.builds(Recent, st.booleans()),
    st.builds(Size, st.sampled_from(["larger", "smaller"]), st.integers(0, 60)),
    st.builds(UidSet, small_set),
    st.builds(SeqSet, small_set),
    st.builds(Header, st.sampled_from(["from", "subject", "x"]), st.text(alphabet="abAB", max_size=2)),
    st.builds(Text, st.text(alphabet="abAB", max_size=2), st.booleans()),
)
search_key = st.recursive(
    leaf,
    lambda children: st.one_of(
        st.builds(Not, children),
        st.builds(Or, children, children),
        st.lists(children, min_size=1, max_size=3).map(lambda keys: And(tuple(keys))),
    ),
    max_leaves=10,
)
message_strategy = st.builds(
    lambda flags, recent, size, uid_gap, headers, body: (flags, recent, size, uid_gap, headers, body),
    st.frozensets(st.sampled_from(FLAGS), max_size=3),
    st.booleans(),
    st.integers(0, 60),
    st.integers(1, 3),
    st.dictionaries(st.sampled_from(["from", "subject"]), st.lists(st.text(alphabet="abAB ", max_size=4), max_size=2),
                    max_size=2),
    st.text(alphabet="abAB ", max_size=6),
)


@settings(max_examples=400)
@given(search_key, st.lists(message_strategy, max_size=8))
def test_evaluator_agrees_with_naive_reference(search_key, specs):
    messages = []
    uid = 0
    for seq, (flags, recent, size, gap, headers, body) in enumerate(specs, 1):
        uid += gap
        messages.append(Msg(seq, uid, flags, recent, size, headers=headers, body=body))
    count, uid_max = len(messages), uid
    expected = [m.seq for m in messages if naive(search_key, m, count, uid_max)]
    assert search(search_key, messages, count=count, uid_max=uid_max) == expected
    for m in messages:
        assert len([r for r in m.reads if r[0] == "text"]) <= 1
        headers_read = [r for r in m.reads if r[0] == "header"]
        assert len(headers_read) == len(set(headers_read))


# --- Start-up cost ----------------------------------------------------------


def test_importing_does_not_load_the_email_package():
    root = Path(__file__).resolve().parents[2]
    code = "import sys, baremail.imapsearch, baremail.imapsyntax; print('email' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
