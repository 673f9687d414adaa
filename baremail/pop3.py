"""POP3 session engine (RFC 1939, RFC 2449, RFC 5034): bytes in, events out; no I/O.

The runtime feeds client bytes to `POP3Session.receive()` and performs the
returned events in order:

    Send(data)     write these bytes to the client
    Close()        flush pending writes, then close the connection
    Retrieve(...)  stream one message (RETR, TOP); then call `retrieved(ok)`
    Update(...)    QUIT in TRANSACTION: remove these messages (skip missing)

After a Retrieve the session consumes no more input until `retrieved()` is
called; pipelined commands stay buffered and are answered by that call, so
replies always come out in command order (RFC 2449 section 6.6).

The maildrop is open by design (BareMail serves one local Maildir to the
machine's own mail reader): any credentials log in, and a mailbox command
sent before login logs in implicitly.

`MultilineEncoder` turns a message's CRLF wire form into the byte-stuffed
body of a multi-line reply; the runtime uses it to perform a Retrieve.
"""

from __future__ import annotations

import enum
import os
import re
import time
from dataclasses import dataclass
from typing import Callable

from .engine import OVERLONG, Close, LineReader, Output, SaslExchange, Send

__all__ = [
    "Close",
    "MAX_COMMAND_LINE",
    "MAX_PENDING_INPUT",
    "MAX_SASL_LINE",
    "MultilineEncoder",
    "POP3Session",
    "Retrieve",
    "Send",
    "State",
    "Update",
    "stuff_message",
    "unique_id",
]


# --- Events (Send and Close come from the engine kit) -------------------------


# Events are immutable by convention. A Retrieve is made for every message
# of a retrieval, and a frozen dataclass's __init__ costs three times a
# plain one's, so it is plain (with the hash a frozen one has).
@dataclass(unsafe_hash=True)
class Retrieve:
    """Stream one message to the client, then call `POP3Session.retrieved()`.

    If the message has vanished: send `missing_reply`, call retrieved(False).
    Otherwise: send `ok_reply`, the message's wire form through
    `MultilineEncoder(lines)` (which ends it with b".\\r\\n"), call
    retrieved(True). `lines` is None for RETR, the body line count for TOP;
    `number` is the message's number in the session.
    """

    message: object
    lines: int | None
    ok_reply: bytes
    number: int

    @property
    def missing_reply(self) -> bytes:
        # Made only when needed: the usual RETR finds its message.
        return _reply("message_gone", number=self.number)


@dataclass(frozen=True)
class Update:
    """QUIT from TRANSACTION: remove these messages (skip any already gone).

    Emitted exactly once per such QUIT, even when `deleted` is empty, so the
    runtime can log the end of every session that opened the maildrop.
    """

    deleted: tuple


# --- Limits -----------------------------------------------------------------

# RFC 2449 section 4: a command line is at most 255 octets including CRLF.
MAX_COMMAND_LINE = 255
# A SASL response line (RFC 5034 section 4) is not a command; a PLAIN response
# with long credentials can exceed 255 octets, so it gets its own, still
# bounded, limit.
MAX_SASL_LINE = 4096
# Input held while a Retrieve is outstanding. The runtime normally stops
# reading while it streams a message; past this, the session is closed rather
# than buffering without bound.
MAX_PENDING_INPUT = 256 * 1024
# RFC 1939 section 7 (UIDL): a unique-id is 1 to 70 octets in 0x21..0x7E.
_MAX_UNIQUE_ID = 70


# --- States and commands as data ----------------------------------------------


class State(enum.Enum):
    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"


_LOGIN_VERBS = frozenset({b"USER", b"PASS", b"APOP", b"AUTH"})
_MAILBOX_VERBS = frozenset(
    {b"STAT", b"LIST", b"RETR", b"DELE", b"RSET", b"NOOP", b"TOP", b"UIDL"}
)
_ANY_STATE_VERBS = frozenset({b"CAPA", b"QUIT"})

# Which commands each state accepts. A known command absent from its state's
# row is refused with that state's reply and the session goes on. Mailbox
# commands are in the AUTHORIZATION row because the maildrop is open: one
# arriving before login first enters TRANSACTION (takes the snapshot).
ALLOWED = {
    State.AUTHORIZATION: _LOGIN_VERBS | _MAILBOX_VERBS | _ANY_STATE_VERBS,
    State.TRANSACTION: _MAILBOX_VERBS | _ANY_STATE_VERBS,
    State.UPDATE: frozenset(),
}
_REFUSAL = {
    State.AUTHORIZATION: "not_in_this_state",
    State.TRANSACTION: "already_logged_in",
    State.UPDATE: "not_in_this_state",
}


@dataclass(frozen=True)
class _Syntax:
    min_args: int
    max_args: int  # -1: the rest of the line is one argument, spaces included
    usage: str


_COMMANDS = {
    b"USER": _Syntax(1, -1, "USER name"),
    b"PASS": _Syntax(0, -1, "PASS password"),
    b"APOP": _Syntax(2, 2, "APOP name digest"),
    b"AUTH": _Syntax(0, 2, "AUTH [mechanism [initial-response]]"),
    b"STAT": _Syntax(0, 0, "STAT"),
    b"LIST": _Syntax(0, 1, "LIST [msg]"),
    b"RETR": _Syntax(1, 1, "RETR msg"),
    b"DELE": _Syntax(1, 1, "DELE msg"),
    b"RSET": _Syntax(0, 0, "RSET"),
    b"NOOP": _Syntax(0, 0, "NOOP"),
    b"TOP": _Syntax(2, 2, "TOP msg n"),
    b"UIDL": _Syntax(0, 1, "UIDL [msg]"),
    b"CAPA": _Syntax(0, 0, "CAPA"),
    b"QUIT": _Syntax(0, 0, "QUIT"),
}

# A LIST or UIDL answers a few octets with a line per message: in
# pipelined input, such a line ends the piece fed at once (intake()), so
# that the commands after it wait while its reply backs up. Other commands
# go in whole lines up to _COMMAND_PIECE at once.
_LISTINGS = frozenset({b"LIST", b"UIDL"})
_COMMAND_PIECE = 4096

# The replies to a SASL exchange that ended without a login.
_SASL_FAILURES = {"cancelled": "auth_cancelled", "bad_base64": "bad_base64",
                  "malformed": "bad_plain", "no_user": "bad_plain"}

# RFC 2449 section 5: capabilities of the AUTHORIZATION state MUST be
# announced in both states, so one list serves CAPA everywhere.
_CAPABILITIES = (
    "TOP",
    "UIDL",
    "USER",
    "SASL PLAIN LOGIN",
    "RESP-CODES",
    "PIPELINING",
    "EXPIRE NEVER",
    "LOGIN-DELAY 0",
    "IMPLEMENTATION BareMail",
)

# --- Replies as data -------------------------------------------------------------
# Every status line the session sends, by name. Fields are numbers or text
# the server chose; client bytes are never echoed. [SYS/TEMP] is an RFC 3206
# response code (announced through RESP-CODES, RFC 2449 section 6.4).

_REPLIES = {
    "greeting": "+OK BareMail POP3 server ready {stamp}",
    "capabilities": "+OK capability list follows",
    "user_accepted": "+OK send PASS",
    "pass_without_user": "-ERR send USER first",
    "logged_in": "+OK maildrop has {count} messages ({octets} octets)",
    "already_logged_in": "-ERR already logged in",
    "not_in_this_state": "-ERR command not valid in this state",
    "mechanisms": "+OK SASL mechanisms follow",
    "unknown_mechanism": "-ERR unsupported SASL mechanism; use PLAIN or LOGIN",
    "auth_cancelled": "-ERR authentication cancelled",
    "bad_base64": "-ERR SASL response is not valid base64",
    "bad_plain": "-ERR malformed PLAIN response",
    "no_user_name": "-ERR a user name is needed",
    "stat": "+OK {count} {octets}",
    "listing": "+OK {count} messages ({octets} octets)",
    "list_one": "+OK {number} {size}",
    "uidl_listing": "+OK unique-id listing follows",
    "uidl_one": "+OK {number} {uid}",
    "retr_ok": "+OK {size} octets",
    "top_ok": "+OK top of message follows",
    "message_gone": "-ERR message {number} was removed by another session",
    "deleted": "+OK message {number} deleted",
    "already_deleted": "-ERR message {number} already deleted",
    "no_such_message": "-ERR no such message, maildrop has {count} messages",
    "bad_message_number": "-ERR message number must be a positive integer",
    "bad_line_count": "-ERR line count must be a non-negative integer",
    "reset": "+OK maildrop has {count} messages ({octets} octets)",
    "noop": "+OK",
    "goodbye": "+OK BareMail POP3 server signing off",
    "goodbye_update": "+OK BareMail POP3 server signing off ({deleted} messages deleted)",
    "syntax": "-ERR syntax: {usage}",
    "unknown_command": "-ERR unknown command",
    "line_too_long": "-ERR command line too long (limit 255 octets)",
    "input_overflow": "-ERR too much pipelined input; closing connection",
    "timeout": "-ERR autologout; idle for too long",
    "shutdown": "-ERR [SYS/TEMP] server shutting down",
    "too_many_sessions": "-ERR [SYS/TEMP] Too many sessions, try again later",
}


def _reply(name: str, **fields: object) -> bytes:
    return _REPLIES[name].format(**fields).encode("ascii") + b"\r\n"


# RETR's reply is made for every message retrieved: one %-format of bytes.
_RETR_OK = _REPLIES["retr_ok"].replace("{size}", "%d").encode("ascii") + b"\r\n"


def _multiline(name: str, lines, **fields: object) -> bytes:
    body = "".join(line + "\r\n" for line in lines)
    return _reply(name, **fields) + body.encode("ascii") + b".\r\n"


_NUMBER = re.compile(rb"[0-9]{1,20}")


def unique_id(key: str) -> str:
    """The UIDL unique-id of a message with this Maildir key.

    RFC 1939 section 7 allows 1 to 70 characters in 0x21..0x7E. A Maildir key
    (`<sec>.M<usec>P<pid>Q<n>R<random>.<host>,S=<n>,W=<n>`) usually fits and
    is used as is, so the id is readable and matches the file name. A long
    host name can push it past 70, and a file name may hold other bytes;
    such keys become the SHA-1 hex digest of the key: stable across sessions
    (it depends on the key alone, which survives new/ -> cur/) and unique in
    practice.
    """
    if 0 < len(key) <= _MAX_UNIQUE_ID and all(0x21 <= ord(c) <= 0x7E for c in key):
        return key
    import hashlib  # rarely needed: only for keys that are not valid UIDLs

    return hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()


# --- The session ---------------------------------------------------------------


class POP3Session:
    """One POP3 conversation, from greeting to Close.

    `open_mailbox()` returns the maildrop's messages (objects with `.key`, a
    unique str, and `.size`, the octets RETR sends before byte-stuffing). It
    is called exactly once, when the session enters TRANSACTION; that list is
    the session's snapshot and message numbers index it from 1.

    Every method returns a list of events; after Close every method returns
    []. `timeout()` and `shutdown()` while a Retrieve is outstanding return
    only [Close()]: a reply then would land inside the multi-line response.
    """

    def __init__(
        self,
        hostname: str,
        open_mailbox: Callable[[], list],
        clock: Callable[[], float] = time.time,
        pid: int | None = None,
    ) -> None:
        self._hostname = hostname
        self._open_mailbox = open_mailbox
        self._clock = clock
        self._pid = os.getpid() if pid is None else pid
        self._state = State.AUTHORIZATION
        self._reader = LineReader(MAX_COMMAND_LINE)
        self._overflowed = False
        self._busy = False
        self._retrieving: Retrieve | None = None
        self._closed = False
        self._user: str | None = None
        self._sasl: SaslExchange | None = None  # the AUTH exchange under way
        self._messages: tuple = ()
        self._deleted: set = set()  # indexes into _messages
        self._ended_by = "dropped"   # until QUIT, a timeout or a shutdown says otherwise
        self._retrieved_count = 0
        self._retrieved_octets = 0
        self._deleted_count = 0

    # --- Read-only views for the runtime and its logs --------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def busy(self) -> bool:
        """A Retrieve is outstanding; the runtime must call retrieved()."""
        return self._busy

    @property
    def at_rest(self) -> bool:
        """Between commands: no Retrieve outstanding, no SASL exchange under
        way, no input held; a stopping server may close here."""
        return not self._busy and self._sasl is None and not self._reader

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending_input(self) -> int:
        """Octets of client input held. Below the line limit after receive()
        returns, unless a Retrieve is outstanding: then the rest of the data
        that started it plus at most MAX_PENDING_INPUT."""
        return len(self._reader)

    @property
    def user(self) -> str | None:
        """The name given at login (USER, APOP, AUTH), if any; for logs only."""
        return self._user

    @property
    def message_count(self) -> int:
        """Messages in the snapshot (0 before TRANSACTION)."""
        return len(self._messages)

    @property
    def ended_by(self) -> str:
        """How the session ended (for logs): "quit", "timeout", "shutdown",
        or "dropped" (the client went away without QUIT)."""
        return self._ended_by

    @property
    def retrieved_count(self) -> int:
        """Messages fully sent by RETR (retrieved(True)); TOP does not count."""
        return self._retrieved_count

    @property
    def retrieved_octets(self) -> int:
        """Sum of the sizes of those messages, before byte-stuffing."""
        return self._retrieved_octets

    @property
    def deleted_count(self) -> int:
        """Messages handed to the runtime in Update (0 until QUIT)."""
        return self._deleted_count

    @staticmethod
    def refusal(hostname: str) -> bytes:
        """The reply to a client over the session cap."""
        return _reply("too_many_sessions")

    def intake(self, held) -> int:
        """How many octets of pipelined `held` input to feed at once: whole
        lines, up to _COMMAND_PIECE, and a LIST or UIDL command ends its
        piece (see _LISTINGS)."""
        size = min(len(held), _COMMAND_PIECE)
        start = 0
        while True:
            end = held.find(b"\n", start, size)
            if end < 0:
                return start or size
            verb = bytes(held[start:end]).rstrip(b"\r").partition(b" ")[0].upper()
            start = end + 1
            if verb in _LISTINGS:
                return start

    # --- Entry points ------------------------------------------------------------

    def start(self) -> list:
        """The greeting; its <pid.clock@hostname> is the APOP timestamp."""
        stamp = "<{}.{}@{}>".format(self._pid, int(self._clock()), self._hostname)
        return [Send(_reply("greeting", stamp=stamp.encode("ascii", "replace").decode()))]

    def receive(self, data: bytes) -> list:
        """Consume client bytes; reply to every complete command line."""
        if self._closed:
            return []
        if self._busy:
            if self._overflowed or len(self._reader) + len(data) > MAX_PENDING_INPUT:
                self._overflowed = True
            else:
                self._reader.feed(data)
            return []
        self._reader.feed(data)
        return self._run(Output())

    def retrieved(self, ok: bool) -> list:
        """The runtime performed the outstanding Retrieve; `ok` is False if the
        message was gone. Continues with buffered input."""
        if self._closed:
            return []
        if not self._busy:
            raise RuntimeError("retrieved() called without an outstanding Retrieve")
        retrieve = self._retrieving
        self._busy = False
        self._retrieving = None
        if ok and retrieve.lines is None:
            self._retrieved_count += 1
            self._retrieved_octets += retrieve.message.size
        out = Output()
        if self._overflowed:
            out.send(_reply("input_overflow"))
            self._close(out)
            return out.take()
        return self._run(out)

    def timeout(self) -> list:
        """The client was idle too long: close without entering UPDATE."""
        return self._end("timeout")

    def shutdown(self) -> list:
        """The server is stopping: close without entering UPDATE."""
        return self._end("shutdown")

    # --- Input ---------------------------------------------------------------------

    def _run(self, out: Output) -> list:
        reader = self._reader
        while not self._busy and not self._closed:
            reader.limit = MAX_SASL_LINE if self._sasl is not None else MAX_COMMAND_LINE
            line = reader.next_line()
            if line is None:
                break
            if line is OVERLONG:
                out.send(_reply("line_too_long"))
            elif self._sasl is not None:
                self._sasl_step(self._sasl.respond(line), out)
            else:
                self._command(line, out)
        return out.take()

    # --- Commands ------------------------------------------------------------------

    def _command(self, line: bytes, out: Output) -> None:
        verb, _, rest = line.partition(b" ")
        verb = verb.upper()  # ASCII-only for bytes: 8-bit verbs stay unknown
        syntax = _COMMANDS.get(verb)
        if syntax is None:
            out.send(_reply("unknown_command"))
            return
        if verb not in ALLOWED[self._state]:
            out.send(_reply(_REFUSAL[self._state]))
            return
        if syntax.max_args < 0:
            args = [rest] if rest else []
        else:
            args = rest.split()
            if len(args) > syntax.max_args:
                args = None
        if args is None or len(args) < syntax.min_args:
            out.send(_reply("syntax", usage=syntax.usage))
            return
        if self._state is State.AUTHORIZATION and verb in _MAILBOX_VERBS:
            self._enter_transaction()
        _HANDLERS[verb](self, args, out)

    # AUTHORIZATION

    def _do_user(self, args: list, out: Output) -> None:
        self._user = _text(args[0])
        out.send(_reply("user_accepted"))

    def _do_pass(self, args: list, out: Output) -> None:
        if self._user is None:
            out.send(_reply("pass_without_user"))
            return
        self._log_in(out)  # any password opens the maildrop

    def _do_apop(self, args: list, out: Output) -> None:
        self._user = _text(args[0])
        self._log_in(out)  # any digest opens the maildrop

    def _do_auth(self, args: list, out: Output) -> None:
        if not args:  # not in RFC 5034, but common clients probe with it
            out.send(_multiline("mechanisms", [m.decode() for m in SaslExchange.MECHANISMS]))
            return
        try:
            self._sasl = SaslExchange(args[0])
        except ValueError:
            out.send(_reply("unknown_mechanism"))
            return
        # RFC 5034 section 4: "=" is an empty initial response (the kit knows).
        self._sasl_step(self._sasl.begin(args[1] if len(args) > 1 else None), out)

    def _sasl_step(self, result, out: Output) -> None:
        if result.challenge is not None:
            out.send(b"+ " + result.encoded + b"\r\n")
            return
        mechanism, self._sasl = self._sasl.mechanism, None
        if result.failure is not None:
            failure = result.failure
            if failure == "no_user" and mechanism == b"LOGIN":
                failure = "no_user_name"
            out.send(_reply(_SASL_FAILURES.get(failure, failure)))
            return
        self._user = _text(result.user)
        self._log_in(out)  # any credentials open the maildrop

    def _log_in(self, out: Output) -> None:
        self._enter_transaction()
        count, octets = self._totals()
        out.send(_reply("logged_in", count=count, octets=octets))

    def _enter_transaction(self) -> None:
        self._messages = tuple(self._open_mailbox())
        self._state = State.TRANSACTION

    # TRANSACTION

    def _do_stat(self, args: list, out: Output) -> None:
        count, octets = self._totals()
        out.send(_reply("stat", count=count, octets=octets))

    def _do_list(self, args: list, out: Output) -> None:
        if args:
            index = self._message_index(args[0], out)
            if index is not None:
                size = self._messages[index].size
                out.send(_reply("list_one", number=index + 1, size=size))
            return
        count, octets = self._totals()
        lines = ["{} {}".format(i + 1, m.size) for i, m in self._live()]
        out.send(_multiline("listing", lines, count=count, octets=octets))

    def _do_uidl(self, args: list, out: Output) -> None:
        if args:
            index = self._message_index(args[0], out)
            if index is not None:
                uid = unique_id(self._messages[index].key)
                out.send(_reply("uidl_one", number=index + 1, uid=uid))
            return
        lines = ["{} {}".format(i + 1, unique_id(m.key)) for i, m in self._live()]
        out.send(_multiline("uidl_listing", lines))

    def _do_retr(self, args: list, out: Output) -> None:
        index = self._message_index(args[0], out)
        if index is not None:
            message = self._messages[index]
            self._retrieve(index, None, _RETR_OK % message.size, out)

    def _do_top(self, args: list, out: Output) -> None:
        index = self._message_index(args[0], out)
        if index is None:
            return
        if not _NUMBER.fullmatch(args[1]):
            out.send(_reply("bad_line_count"))
            return
        self._retrieve(index, int(args[1]), _reply("top_ok"), out)

    def _retrieve(self, index: int, lines: int | None, ok_reply: bytes, out: Output) -> None:
        self._retrieving = Retrieve(
            message=self._messages[index],
            lines=lines,
            ok_reply=ok_reply,
            number=index + 1,
        )
        self._busy = True
        out.event(self._retrieving)

    def _do_dele(self, args: list, out: Output) -> None:
        index = self._message_index(args[0], out)
        if index is not None:
            self._deleted.add(index)
            out.send(_reply("deleted", number=index + 1))

    def _do_rset(self, args: list, out: Output) -> None:
        self._deleted.clear()
        count, octets = self._totals()
        out.send(_reply("reset", count=count, octets=octets))

    def _do_noop(self, args: list, out: Output) -> None:
        out.send(_reply("noop"))

    # Any state

    def _do_capa(self, args: list, out: Output) -> None:
        out.send(_multiline("capabilities", _CAPABILITIES))

    def _do_quit(self, args: list, out: Output) -> None:
        if self._state is State.TRANSACTION:
            # RFC 1939 section 6: only QUIT from TRANSACTION enters UPDATE.
            self._state = State.UPDATE
            deleted = tuple(self._messages[i] for i in sorted(self._deleted))
            self._deleted_count = len(deleted)
            out.event(Update(deleted))
            out.send(_reply("goodbye_update", deleted=len(deleted)))
        else:
            out.send(_reply("goodbye"))
        self._ended_by = "quit"
        self._close(out)

    # --- Helpers -----------------------------------------------------------------

    def _message_index(self, arg: bytes, out: Output) -> int | None:
        """The snapshot index for a message-number argument, or None after
        sending the -ERR that explains why it is not usable."""
        if not (arg.isdigit() and len(arg) <= 20):   # _NUMBER, without a regex call
            out.send(_reply("bad_message_number"))
            return None
        number = int(arg)
        if not 1 <= number <= len(self._messages):
            out.send(_reply("no_such_message", count=len(self._messages)))
            return None
        if number - 1 in self._deleted:
            out.send(_reply("already_deleted", number=number))
            return None
        return number - 1

    def _live(self):
        return ((i, m) for i, m in enumerate(self._messages) if i not in self._deleted)

    def _totals(self) -> tuple:
        sizes = [m.size for _, m in self._live()]
        return len(sizes), sum(sizes)

    def _end(self, reply: str) -> list:
        if self._closed:
            return []
        out = Output()
        if not self._busy:
            out.send(_reply(reply))
        self._ended_by = reply
        self._close(out)
        return out.take()

    def _close(self, out: Output) -> None:
        out.event(Close())
        self._closed = True
        self._busy = False
        self._retrieving = None
        self._reader.clear()


# Command -> the POP3Session method that performs it.
_HANDLERS = {verb: getattr(POP3Session, "_do_" + verb.decode("ascii").lower()) for verb in _COMMANDS}


def _text(raw: bytes) -> str:
    """Client bytes as text for logs; never raises."""
    return raw.decode("utf-8", "replace")


# --- Multi-line reply encoding -----------------------------------------------------


def stuff_message(wire: bytes) -> bytes:
    """A whole message's wire form as a multi-line reply body, terminator
    included: exactly MultilineEncoder().feed(wire) + finish(), in one go."""
    stuffed = wire.replace(b"\n.", b"\n..")
    if wire[:1] == b".":
        stuffed = b"." + stuffed
    if wire and wire[-2:] != b"\r\n":
        return stuffed + b"\r\n.\r\n"
    return stuffed + b".\r\n"


class MultilineEncoder:
    """Byte-stuffs a message's CRLF wire form for a POP3 multi-line reply.

    RFC 1939 section 3: a line starting with "." is sent with an extra ".",
    and the reply ends with ".\\r\\n" on a line of its own. Feed the wire form
    in chunks of any size, send what feed() returns, then what finish()
    returns. Nothing is held back between chunks, so memory does not depend
    on message size.

    lines=None sends the whole message (RETR). lines=n sends the headers, the
    blank line after them, and at most n body lines (TOP); `done` turns True
    once that is all out, and the caller may stop reading the message. A
    message without a blank line is all headers and is sent whole.

    Stuffing is applied after every LF, not only after CRLF: in a CRLF wire
    form the two are the same, and should a bare LF ever slip through, a
    lenient client that ends lines at LF still cannot see a premature
    terminator.
    """

    def __init__(self, lines: int | None = None) -> None:
        if lines is not None and lines < 0:
            raise ValueError("lines must be None or >= 0")
        self._lines_left = lines
        self._at_line_start = True  # the next byte begins a line
        self._tail = b""  # the last two octets passed through, unstuffed
        self._done = False
        # TOP: still in the headers. The carry holds the last two octets seen
        # so a blank line split across chunks is found; it starts as a virtual
        # LF so a message opening with a blank line has empty headers.
        self._in_headers = lines is not None
        self._carry = b"\n"

    @property
    def done(self) -> bool:
        """TOP has sent everything it needs; further input is ignored."""
        return self._done

    def feed(self, chunk: bytes) -> bytes:
        """The stuffed output for this chunk of the wire form."""
        if self._done or not chunk:
            return b""
        if self._lines_left is not None:
            chunk = self._top_part(chunk)
            if not chunk:
                return b""
        self._tail = (self._tail + chunk[-2:])[-2:]
        stuffed = chunk.replace(b"\n.", b"\n..")
        if self._at_line_start and chunk[:1] == b".":
            stuffed = b"." + stuffed
        self._at_line_start = chunk[-1:] == b"\n"
        return stuffed

    def finish(self) -> bytes:
        """End the reply: CRLF if the last line lacks one, then ".\\r\\n"."""
        self._done = True
        if self._tail and self._tail != b"\r\n":
            return b"\r\n.\r\n"
        return b".\r\n"

    def _top_part(self, chunk: bytes) -> bytes:
        """The prefix of `chunk` that TOP sends; sets done when complete."""
        if self._in_headers:
            # A blank line starting in the carry, else one inside the chunk.
            blank = (self._carry + chunk[:2]).find(b"\n\r\n")
            if blank >= 0:
                end = blank + 3 - len(self._carry)
            else:
                blank = chunk.find(b"\n\r\n")
                if blank < 0:
                    self._carry = (self._carry + chunk[-2:])[-2:]
                    return chunk
                end = blank + 3
            self._in_headers = False  # `end` is just past the blank line
            return chunk[:end] + self._body_part(chunk[end:])
        return self._body_part(chunk)

    def _body_part(self, body: bytes) -> bytes:
        newlines = body.count(b"\n")
        if newlines < self._lines_left:  # all of this chunk is wanted
            self._lines_left -= newlines
            return body
        position = 0
        for _ in range(self._lines_left):  # the chunk holds that many LFs
            position = body.find(b"\n", position) + 1
        self._lines_left = 0
        self._done = True
        return body[:position]
