"""A mutation fuzzer for the protocol engines (SMTPSession, POP3Session, IMAPSession).

Valid sessions are mutated (bit flips, inserted protocol tokens, random
bytes, deleted, duplicated and spliced ranges, lost CRs), cut into chunks
at random places, and fed to an engine through a simulated runtime that
checks every event: no exception escapes, replies are well-formed lines of
at most 512 octets, the event order is legal (no message data outside a
message, nothing after Close, at most one Update), and the engine holds
no more input than one line (or a possible end-of-data marker).

Hypothesis drives the mutations (and shrinks a failure to a small case);
a seeded, bounded campaign then runs many more of the same mutations.
atheris is not used: it is not packaged for Debian, and its PyPI wheel
would have to be forced into Debian's python3 (PEP 668).
"""

from __future__ import annotations

import random
import re
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baremail import imap, pop3, smtp
from baremail.engine import Close, Send
from imapfake import FakeStore

SMTP_SEEDS = [
    b"EHLO client.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<root@localhost>\r\nDATA\r\n"
    b"Subject: x\r\n\r\nbody\r\n..dot line\r\n.\r\nQUIT\r\n",
    b"HELO h\r\nMAIL FROM:<> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<x@y>\r\nRCPT TO:<z@y>\r\nDATA\r\n.\r\n"
    b"RSET\r\nNOOP\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nline\r\n.\r\n",
    b"EHLO e\r\nAUTH PLAIN AHVzZXIAcGFzcw==\r\nMAIL FROM:<a@b> SMTPUTF8\r\nRCPT TO:<\xc3\xbc@x>\r\nDATA\r\n"
    b"\xff\xfe 8-bit\r\n.\r\n",
    b"EHLO e\r\nAUTH LOGIN\r\ndXNlcg==\r\ncGFzcw==\r\nMAIL FROM:a@b\r\nRCPT TO:c@d\r\nDATA\r\n\r\n.\r\n",
    b"VRFY x\r\nEXPN y\r\nHELP\r\nSTARTTLS\r\nMAIL FROM:<@route:a@b>\r\nRCPT TO:<c@d> NOTIFY=NEVER\r\n"
    b"RCPT TO:<\"quoted name\"@d>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n",
]

POP3_SEEDS = [
    b"USER u\r\nPASS p\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 2 1\r\nDELE 1\r\nRSET\r\nDELE 2\r\nQUIT\r\n",
    b"CAPA\r\nAUTH PLAIN\r\nAHUAcA==\r\nLIST 2\r\nRETR 3\r\nDELE 3\r\nQUIT\r\n",
    b"AUTH LOGIN\r\ndQ==\r\ncA==\r\nNOOP\r\nUIDL 1\r\nAUTH\r\nQUIT\r\n",
    b"APOP u 0123456789abcdef0123456789abcdef\r\nRETR 1\r\nRETR 1\r\nTOP 1 0\r\nQUIT\r\n",
    b"STAT\r\nDELE 1\r\nDELE 1\r\nLIST 1\r\nDELE 4\r\nQUIT\r\n",
]

IMAP_SEEDS = [
    b"a LOGIN u p\r\nb SELECT INBOX\r\nc FETCH 1:* (FLAGS UID RFC822.SIZE)\r\nd UID FETCH 2:* "
    b"(UID BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)])\r\ne STORE 1 +FLAGS (\\Seen $Junk)\r\nf LOGOUT\r\n",
    b"a AUTHENTICATE PLAIN AHUAcA==\r\nb CREATE Trash\r\nc SELECT INBOX\r\nd UID MOVE 1 Trash\r\n"
    b"e EXPUNGE\r\nf IDLE\r\nDONE\r\ng CLOSE\r\n",
    b"a LOGIN {1}\r\nu {1+}\r\np\r\nb APPEND INBOX (\\Seen) {20+}\r\nSubject: x\r\n\r\nbody\r\n"
    b"\r\nc SELECT INBOX\r\nd FETCH 1:* (ENVELOPE BODYSTRUCTURE BODY[] INTERNALDATE)\r\n",
    b"a LOGIN u p\r\nb EXAMINE INBOX\r\nc SEARCH OR UNSEEN FROM x NOT BODY y\r\nd UID SEARCH UID 1:*\r\n"
    b"e LIST \"\" \"*\"\r\nf STATUS INBOX (MESSAGES UIDNEXT UNSEEN)\r\ng NAMESPACE\r\nh ID NIL\r\n",
    b"a AUTHENTICATE LOGIN\r\ndQ==\r\ncA==\r\nb SELECT INBOX\r\nc COPY 1:2 INBOX\r\nd FETCH 2 "
    b"(BODY[1] BODY[TEXT]<0.5> RFC822.HEADER)\r\ne UNSELECT\r\nf LOGOUT\r\n",
]

TOKENS = [b"\r\n", b"\n", b"\r", b".", b"\r\n.\r\n", b"\r\n..", b"\x00", b"\xff", b" ", b"\t", b"<", b">",
          b'"', b"\\", b"=", b"*", b"DATA\r\n", b"RSET\r\n", b"QUIT\r\n", b"AUTH PLAIN\r\n", b"AUTH LOGIN\r\n",
          b"MAIL FROM:<x@y>\r\n", b"RCPT TO:<z@w>\r\n", b"EHLO x\r\n", b"SIZE=99999999999999", b"BODY=8BITMIME",
          b"USER a\r\n", b"PASS\r\n", b"RETR 2\r\n", b"TOP 1 3\r\n", b"DELE 2\r\n", b"LIST\r\n", b"UIDL\r\n",
          b"A" * 600, b"B" * 5000, b"\r\n" * 50, b"-1", b"99999999999999999999999",
          b"EHLO " + b"h" * 500 + b"\r\n", b"HELO \xc3\xa9" + b"h" * 496 + b"\r\n", b"a" * 250,
          b"{5}\r\n", b"{0+}\r\n", b"{99999999}\r\n", b"{3+}\r\n", b"1:*", b"*:4", b"(", b")",
          b"BODY[1.2.MIME]<0.10>", b"IDLE\r\n", b"DONE\r\n", b"z FETCH 1 BODY[]\r\n", b"&AOQ-", b"%"]

OPERATIONS = ("flip", "token", "bytes", "delete", "duplicate", "lose_cr", "truncate", "swap")


def mutate(data: bytes, operations) -> bytes:
    """Apply (operation, a, b, blob, token) mutations in order."""
    data = bytearray(data)
    for operation, a, b, blob, token in operations:
        at = a % (len(data) + 1)
        length = b % 64 + 1
        if operation == "flip" and data:
            data[at % len(data)] ^= 1 << (b % 8)
        elif operation == "token":
            data[at:at] = token
        elif operation == "bytes":
            data[at:at] = blob
        elif operation == "delete":
            del data[at:at + length]
        elif operation == "duplicate":
            data[at:at] = data[at:at + length]
        elif operation == "lose_cr":
            data = bytearray(data.replace(b"\r\n", b"\n", 1 + b % 4))
        elif operation == "truncate":
            del data[at:]
        elif operation == "swap" and data:
            other = b % len(data)
            data[at % len(data)], data[other] = data[other], data[at % len(data)]
    return bytes(data)


def chunks_of(data: bytes, cuts) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[start:end] for start, end in zip(points, points[1:])]


operation = st.tuples(st.sampled_from(OPERATIONS), st.integers(0, 1 << 16), st.integers(0, 1 << 16),
                      st.binary(max_size=40), st.sampled_from(TOKENS))


@st.composite
def mutated_sessions(draw, seeds):
    data = draw(st.sampled_from(seeds))
    if draw(st.booleans()):
        data += draw(st.sampled_from(seeds))      # splice two sessions
    data = mutate(data, draw(st.lists(operation, max_size=8)))
    cuts = draw(st.lists(st.integers(0, 1 << 16), max_size=10))
    outcomes = draw(st.lists(st.sampled_from(["stored", "disk_full", "io", "gone"]), min_size=1, max_size=4))
    return chunks_of(data, cuts), outcomes


def random_operations(rng: random.Random, count: int) -> list:
    return [(rng.choice(OPERATIONS), rng.randrange(1 << 16), rng.randrange(1 << 16),
             rng.randbytes(rng.randrange(41)), rng.choice(TOKENS)) for _ in range(count)]


# --- a checking runtime for each engine -------------------------------------------------

SMTP_LINE = re.compile(rb"([2-5][0-9][0-9])([ -])[^\r\n]*")
MAX_REPLY_LINE = 512        # octets with CRLF: RFC 5321 4.5.3.1.5, RFC 2449 section 4


def reply_lines(data: bytes) -> list[bytes]:
    assert data.endswith(b"\r\n"), f"reply without CRLF: {data[-60:]!r}"
    lines = data.split(b"\r\n")[:-1]
    for line in lines:
        assert b"\r" not in line and b"\n" not in line, f"bare CR or LF in reply {line!r}"
        assert len(line) + 2 <= MAX_REPLY_LINE, f"reply line of {len(line) + 2} octets: {line[:80]!r}..."
    return lines


class SMTPRuntime:
    MAX_SIZE, MAX_RCPT = 2000, 5

    def __init__(self, outcomes):
        self.session = smtp.SMTPSession("fuzz.example", peer="127.0.0.1:1", max_message_size=self.MAX_SIZE,
                                        max_recipients=self.MAX_RCPT, clock=lambda: 1_732_480_000.0)
        self.outcomes = outcomes
        self.results = 0
        self.in_message = False
        self.content = 0
        self.closed = False
        self.continued: bytes | None = None     # code of an unfinished multi-line reply
        self.perform(self.session.start())

    def perform(self, events) -> None:
        queue = list(events)
        while queue:
            event = queue.pop(0)
            assert not self.closed, f"{event!r} after Close"
            kind = type(event)
            if kind is smtp.Send:
                for line in reply_lines(event.data):
                    match = SMTP_LINE.fullmatch(line)
                    assert match, f"malformed reply {line!r}"
                    assert self.continued in (None, match[1]), f"multi-line reply changed code: {line!r}"
                    self.continued = match[1] if match[2] == b"-" else None
            elif kind is smtp.StartMessage:
                assert not self.in_message, "StartMessage inside a message"
                assert 1 <= len(event.envelope.rcpt_to) <= self.MAX_RCPT, event.envelope
                self.in_message, self.content, self.first = True, 0, True
            elif kind is smtp.MessageData:
                assert self.in_message, "MessageData outside a message"
                if self.first:
                    assert event.data.startswith(b"Return-Path: <"), event.data[:60]
                    self.first = False
                else:
                    self.content += len(event.data)
                    assert self.content <= self.MAX_SIZE, "more data than max_message_size"
            elif kind is smtp.AbortMessage:
                assert self.in_message, "AbortMessage outside a message"
                self.in_message = False
            elif kind is smtp.EndMessage:
                assert self.in_message and not queue, "EndMessage out of place"
                self.in_message = False
                outcome = self.outcomes[self.results % len(self.outcomes)]
                self.results += 1
                queue += (self.session.message_stored(f"key{self.results}") if outcome == "stored"
                          else self.session.message_failed(outcome))
            elif kind is smtp.Close:
                self.closed = True
            else:
                raise AssertionError(f"unknown event {event!r}")
        assert self.continued is None, "a multi-line reply was left unfinished"

    def feed(self, chunk: bytes) -> None:
        events = self.session.receive(chunk)
        if self.closed:
            assert events == [], "events after Close"
        self.perform(events)
        held = len(self.session._buf)
        assert held <= (5 if self.session.in_data else 12288), f"engine holds {held} octets"

    def finish(self) -> None:
        self.perform(self.session.timeout())
        assert self.closed and not self.in_message and self.session.receive(b"NOOP\r\n") == []


class FakeMessage:
    def __init__(self, number: int):
        self.key = f"1732480000.M{number}P1Q{number}.fuzz,S={number * 100},W={number * 103}"
        self.size = number * 103
        self.path = f"/nonexistent/{number}"


class POP3Runtime:
    def __init__(self, outcomes):
        self.mailbox = [FakeMessage(number) for number in range(1, 4)]
        self.gone = {self.mailbox[1].key} if "gone" in outcomes else set()
        self.snapshots = 0
        self.session = pop3.POP3Session("fuzz.example", open_mailbox=self.open_mailbox,
                                        clock=lambda: 1_732_480_000.0, pid=1)
        self.closed = False
        self.updated = False
        self.perform(self.session.start())

    def open_mailbox(self):
        self.snapshots += 1
        assert self.snapshots == 1, "the mailbox was opened twice"
        return list(self.mailbox)

    def perform(self, events) -> None:
        queue = list(events)
        while queue:
            event = queue.pop(0)
            assert not self.closed, f"{event!r} after Close"
            kind = type(event)
            if kind is pop3.Send:
                lines = reply_lines(event.data)
                assert lines[0].startswith((b"+OK", b"-ERR", b"+ ")), f"reply starts {lines[0]!r}"
            elif kind is pop3.Retrieve:
                assert self.session.busy and not queue, "Retrieve out of place"
                assert event.message in self.mailbox
                reply_lines(event.ok_reply)
                assert event.ok_reply.startswith(b"+OK") and event.missing_reply.startswith(b"-ERR")
                queue += self.session.retrieved(event.message.key not in self.gone)
            elif kind is pop3.Update:
                assert not self.updated, "a second Update"
                self.updated = True
                keys = [message.key for message in event.deleted]
                assert len(set(keys)) == len(keys) and all(m in self.mailbox for m in event.deleted)
            elif kind is pop3.Close:
                self.closed = True
            else:
                raise AssertionError(f"unknown event {event!r}")

    def feed(self, chunk: bytes) -> None:
        events = self.session.receive(chunk)
        if self.closed:
            assert events == [], "events after Close"
        self.perform(events)
        assert self.session.pending_input <= pop3.MAX_SASL_LINE, \
            f"engine holds {self.session.pending_input} octets"

    def finish(self) -> None:
        self.perform(self.session.timeout())
        assert self.closed and self.session.receive(b"STAT\r\n") == []


class IMAPRuntime:
    """Performs the IMAP engine's events over an in-memory store; checks
    that every response line starts as RFC 3501 section 7 says and that
    the engine never holds more than a command line of input."""

    def __init__(self, outcomes):
        self.store = FakeStore()
        for number in range(1, 4):
            self.store.inbox.add(b"Subject: %d\r\nFrom: a@b\r\n\r\nbody %d\r\n" % (number, number))
        self.session = imap.IMAPSession("fuzz.example", self.store, max_message_size=100_000,
                                        clock=lambda: 1_732_480_000.0)
        self.outcomes = outcomes
        self.closed = False
        self.perform(self.session.start())

    def perform(self, events) -> None:
        queue = list(events)
        while queue:
            event = queue.pop(0)
            assert not self.closed, f"{event!r} after Close"
            kind = type(event)
            if kind is Send:
                assert event.data.endswith(b"\r\n"), event.data[-40:]
                first = event.data[:2]
                assert first in (b"* ", b"+ ") or re.match(rb"[^ ]+ (OK|NO|BAD) ", event.data), event.data[:80]
            elif kind is imap.Stream:
                for chunk in event.chunks:
                    if not isinstance(chunk, bytes):
                        while chunk.read(4096):
                            pass
                        chunk.close()
                queue += self.session.streamed()
            elif kind is imap.CommitAppend:
                if "disk_full" in self.outcomes:
                    result = imap.StoreError("OVERQUOTA", "full")
                else:
                    try:
                        result = event.handle.commit()
                    except imap.StoreError as exc:
                        result = exc
                queue += self.session.appended(result)
            elif kind is imap.Watch:
                pass
            elif kind is Close:
                self.closed = True
            else:
                raise AssertionError(f"unknown event {event!r}")

    def feed(self, chunk: bytes) -> None:
        events = self.session.receive(chunk)
        if self.closed:
            assert events == [], "events after Close"
        self.perform(events)
        held = len(self.session._framer)
        assert held <= 64 * 1024 + 1024 * 1024, f"engine holds {held} octets"

    def finish(self) -> None:
        self.perform(self.session.timeout())
        assert self.closed and self.session.receive(b"a NOOP\r\n") == []


RUNTIMES = {"smtp": (SMTPRuntime, SMTP_SEEDS), "pop3": (POP3Runtime, POP3_SEEDS),
            "imap": (IMAPRuntime, IMAP_SEEDS)}


def run_session(kind: str, chunks, outcomes) -> None:
    runtime = RUNTIMES[kind][0](outcomes)
    for chunk in chunks:
        runtime.feed(chunk)
    runtime.finish()


FUZZ = settings(max_examples=500, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(mutated_sessions(SMTP_SEEDS))
def test_smtp_engine_survives_mutated_sessions(case):
    run_session("smtp", *case)


@FUZZ
@given(mutated_sessions(POP3_SEEDS))
def test_pop3_engine_survives_mutated_sessions(case):
    run_session("pop3", *case)


@FUZZ
@given(mutated_sessions(IMAP_SEEDS))
def test_imap_engine_survives_mutated_sessions(case):
    run_session("imap", *case)


@settings(max_examples=200, deadline=None, database=None)
@given(st.sampled_from(sorted(RUNTIMES)), st.lists(st.binary(max_size=3000), max_size=12))
def test_engines_survive_random_bytes(kind, chunks):
    run_session(kind, chunks, ["stored", "disk_full"])


def test_engines_survive_a_bounded_mutation_campaign():
    """Many more mutated sessions than Hypothesis runs, seeded, within a time bound."""
    rng = random.Random(20241125)
    for kind, (_, seeds) in sorted(RUNTIMES.items()):
        started, count = time.monotonic(), 0
        while count < 20_000 and time.monotonic() - started < 6.0:
            data = rng.choice(seeds) + (rng.choice(seeds) if rng.random() < 0.3 else b"")
            data = mutate(data, random_operations(rng, rng.randrange(1, 9)))
            chunks = chunks_of(data, [rng.randrange(1 << 16) for _ in range(rng.randrange(11))])
            outcomes = [rng.choice(["stored", "disk_full", "io", "gone"]) for _ in range(3)]
            try:
                run_session(kind, chunks, outcomes)
            except Exception as exc:
                raise AssertionError(f"{kind} session {count} failed on {data!r} in chunks "
                                     f"{[len(c) for c in chunks]}: {exc}") from exc
            count += 1
        print(f"\n{kind}: {count} mutated sessions in {time.monotonic() - started:.1f} s")
        assert count >= 1000
