"""SMTP session engine (RFC 5321): bytes in, events out, no I/O.

One `SMTPSession` per connection. The runtime feeds it what the client sent
(`receive`) and the outcome of the work it asked for (`message_stored`,
`message_failed`), and performs the returned events in order:

    Send(data)              write these bytes to the client
    Close()                 flush pending writes, then close the connection
    StartMessage(envelope)  begin a delivery for this envelope
    MessageData(data)       append these octets (wire form: CRLF line ends,
                            dot-unstuffed; the first one holds trace headers)
    EndMessage()            commit the delivery, then call message_stored(key)
                            or message_failed(reason)
    AbortMessage()          discard the delivery begun by StartMessage

No input makes the engine raise: bad input gets a reply. Every reply comes
from the REPLIES table; the commands a transaction stage accepts come from
the ALLOWED table.
"""

from __future__ import annotations

import enum
import re
import time
from dataclasses import dataclass

from .engine import OVERLONG, Close, LineReader, Output, SaslExchange, Send

__all__ = ["AbortMessage", "Close", "EndMessage", "Envelope", "MessageData", "SMTPSession", "Send",
           "StartMessage", "scan_data"]


# --- events (Send and Close come from the engine kit) --------------------

@dataclass(frozen=True)
class Envelope:
    """What the client said around the message.

    Addresses are the text between the angle brackets (source routes dropped),
    decoded as UTF-8 with surrogateescape, so 8-bit bytes survive a round trip
    through `.encode("utf-8", "surrogateescape")`. `mail_from` is "" for the
    null sender. `helo` is "" if the client never sent HELO/EHLO. `body` is
    "7BIT", "8BITMIME" or None (no BODY= parameter).
    """

    mail_from: str
    rcpt_to: tuple[str, ...]
    helo: str
    peer: str
    auth_user: str | None
    body: str | None = None
    smtputf8: bool = False


@dataclass(frozen=True)
class StartMessage:
    envelope: Envelope


@dataclass(frozen=True)
class MessageData:
    data: bytes


@dataclass(frozen=True)
class EndMessage:
    pass


@dataclass(frozen=True)
class AbortMessage:
    pass


# --- replies ----------------------------------------------------------------

# name -> (code, enhanced status code, text). Enhanced codes per RFC 3463,
# sent per RFC 2034 on every 2xx/4xx/5xx reply except the greeting and the
# positive replies to HELO/EHLO (RFC 2034 section 4 excludes those; 3xx
# replies carry none either). `{name}` fields are filled in by the engine.
REPLIES: dict[str, tuple[int, str | None, str]] = {
    "greeting": (220, None, "{host} ESMTP BareMail"),
    "helo": (250, None, "{host} Hello {helo}"),
    "ok": (250, "2.0.0", "Ok"),
    "sender_ok": (250, "2.1.0", "Ok"),
    "recipient_ok": (250, "2.1.5", "Ok"),
    "queued": (250, "2.0.0", "Ok: queued as {key}"),
    "bye": (221, "2.0.0", "{host} Bye"),
    "help": (214, "2.0.0", "Commands: AUTH DATA EHLO EXPN HELO HELP MAIL "
                           "NOOP QUIT RCPT RSET VRFY"),
    "cannot_vrfy": (252, "2.5.0", "Cannot VRFY user, but will accept "
                                  "message and attempt delivery"),
    "auth_ok": (235, "2.7.0", "Authentication successful"),
    "auth_challenge": (334, None, "{challenge}"),
    "start_data": (354, None, "End data with <CR><LF>.<CR><LF>"),
    "timeout": (421, "4.4.2", "{host} Error: timeout exceeded"),
    "shutting_down": (421, "4.3.2", "{host} Service shutting down"),
    "too_many_sessions": (421, "4.3.2", "{host} Too many sessions, try again later"),
    "delivery_failed": (451, "4.3.0", "Error: local delivery failed, "
                                      "try again later"),
    "storage_full": (452, "4.3.1", "Insufficient system storage"),
    # RFC 5321 4.5.3.1.10: 452 (not 552) so the client retries the rest later.
    "too_many_recipients": (452, "4.5.3", "Too many recipients"),
    "unknown_command": (500, "5.5.1", "Error: command not recognized"),
    "line_too_long": (500, "5.5.2", "Line too long"),
    "bad_character": (500, "5.5.2", "Error: bad character in command"),
    "syntax": (501, "5.5.4", "Syntax: {usage}"),
    "bad_parameter": (501, "5.5.4", "Bad value for parameter {param}"),
    "bad_sender": (501, "5.1.7", "Bad sender address syntax"),
    "bad_recipient": (501, "5.1.3", "Bad recipient address syntax"),
    "cannot_decode": (501, "5.5.2", "Cannot decode response"),
    "auth_cancelled": (501, "5.7.0", "Authentication cancelled"),
    "no_expn": (502, "5.5.1", "EXPN not available"),
    "no_tls": (502, "5.5.1", "STARTTLS not available: BareMail serves "
                             "this machine only"),
    "bad_sequence": (503, "5.5.1", "Error: bad sequence of commands"),
    "need_mail": (503, "5.5.1", "Error: need MAIL command"),
    "nested_mail": (503, "5.5.1", "Error: nested MAIL command"),
    "auth_in_transaction": (503, "5.5.1", "Error: AUTH not allowed during "
                                          "a mail transaction"),
    "already_authenticated": (503, "5.5.1", "Error: already authenticated"),
    "unknown_mechanism": (504, "5.5.4", "Unrecognized authentication type"),
    "bad_credentials": (535, "5.7.8", "Authentication credentials invalid"),
    "message_too_big": (552, "5.3.4", "Message size exceeds fixed maximum "
                                      "message size"),
    "no_valid_recipients": (554, "5.5.1", "No valid recipients"),
    "unknown_parameter": (555, "5.5.4", "Unsupported parameter {param}"),
}


# What EHLO advertises, in this order (RFC 2920, 1870, 6152, 6531, 2034,
# 4954). No STARTTLS: the service listens on this machine only.
EHLO_KEYWORDS = ("PIPELINING", "SIZE {size}", "8BITMIME", "SMTPUTF8",
                 "ENHANCEDSTATUSCODES", "AUTH PLAIN LOGIN")


def format_reply(name: str, **fields: str) -> bytes:
    """One reply line from REPLIES, CRLF-terminated."""
    code, status, text = REPLIES[name]
    text = text.format(**fields)
    line = f"{code} {status} {text}" if status else f"{code} {text}"
    # RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with its CRLF.
    # Only an echoed HELO/EHLO argument can make it longer; it is cut.
    return line.encode("utf-8", "surrogateescape")[:510] + b"\r\n"


# --- states -------------------------------------------------------------

class _Stage(enum.Enum):
    """Where the mail transaction stands (RFC 5321 3.3)."""

    IDLE = "idle"    # no transaction, before or after HELO/EHLO
    MAIL = "mail"    # sender accepted, no recipient yet
    RCPT = "rcpt"    # at least one recipient accepted


class _Input(enum.Enum):
    """What the engine does with the bytes it holds."""

    COMMAND = "command"  # read command lines
    AUTH = "auth"        # read one SASL response line (RFC 4954)
    DATA = "data"        # read message content up to CRLF.CRLF
    AWAIT = "await"      # EndMessage emitted: hold input until the result
    CLOSED = "closed"    # Close emitted: ignore input


_ANYTIME = frozenset({b"EHLO", b"EXPN", b"HELO", b"HELP", b"NOOP", b"QUIT", b"RSET",
                      b"STARTTLS", b"VRFY"})

# The commands each stage accepts. MAIL is accepted before HELO/EHLO although
# RFC 5321 4.1.4 lets a server answer 503: minimal local senders (scripts,
# sendmail shims) skip the greeting, and a service that only takes mail from
# this machine gains nothing by refusing them.
ALLOWED: dict[_Stage, frozenset[str]] = {
    _Stage.IDLE: _ANYTIME | {b"AUTH", b"MAIL"},
    _Stage.MAIL: _ANYTIME | {b"RCPT"},
    _Stage.RCPT: _ANYTIME | {b"DATA", b"RCPT"},
}
KNOWN_COMMANDS = frozenset().union(*ALLOWED.values())

# The reply to a known command its stage does not accept; "bad_sequence"
# (503 5.5.1) when not listed.
REFUSALS: dict[tuple[_Stage, bytes], str] = {
    (_Stage.IDLE, b"RCPT"): "need_mail",
    (_Stage.IDLE, b"DATA"): "need_mail",
    (_Stage.MAIL, b"MAIL"): "nested_mail",
    (_Stage.RCPT, b"MAIL"): "nested_mail",
    (_Stage.MAIL, b"DATA"): "no_valid_recipients",
    (_Stage.MAIL, b"AUTH"): "auth_in_transaction",
    (_Stage.RCPT, b"AUTH"): "auth_in_transaction",
}

# A pipelined command is answered by at most ~50 times its size (an empty
# line gets a 500): commands are fed by the few kilobytes, so that replies
# to a flood of them back up before much more is read.
_COMMAND_PIECE = 4096

# Longest line, terminator included: RFC 5321 4.5.3.1.4 for commands,
# RFC 4954 section 4 for SASL responses.
_LINE_LIMIT = {_Input.COMMAND: 512, _Input.AUTH: 12288}

# Controls other than TAB have no place in a command (CR/LF would let a
# client inject reply lines or header lines through HELO or an address).
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

# A path: "<...>" (quoted strings may hold spaces and brackets) or, leniently,
# a bare address without brackets; then optional space-separated parameters.
_PATH = re.compile(r"""
    (?: < (?P<bracketed> (?: "(?:[^"\\]|\\.)*" | [^<>"\s] )* ) >
      | (?P<bare> (?: "(?:[^"\\]|\\.)*" | [^<>"\s] )+ )
    )
    (?P<params> (?:[ \t].*)? ) $
""", re.VERBOSE)

# Replies to the outcomes of a SASL exchange that ended without a login.
_SASL_FAILURES = {"cancelled": "auth_cancelled", "bad_base64": "cannot_decode",
                  "malformed": "cannot_decode", "no_user": "bad_credentials"}


def _parse_path(text: str) -> tuple[str, str] | None:
    """Split '<address> PARAMS' into (address, params); None if malformed."""
    match = _PATH.match(text)
    if match is None:
        return None
    address = match["bracketed"]
    if address is None:
        address = match["bare"]
    if address.startswith("@"):
        # RFC 5321 4.1.1.3 / appendix C: accept and ignore a source route.
        _, colon, address = address.partition(":")
        if not colon or not address:
            return None
    return address, match["params"].strip(" \t")


def rfc5322_date(when: float) -> str:
    """Local time as an RFC 5322 date. time.strftime, not email.utils: the
    email package costs start-up time, and LC_TIME is "C" in Python, so
    day and month names are always English."""
    return time.strftime("%a, %d %b %Y %H:%M:%S %z", time.localtime(when))


_END_OF_DATA = b"\r\n.\r\n"
# Tails of a read that may be the start of _END_OF_DATA, longest first.
_POSSIBLE_END = (b"\r\n.\r", b"\r\n.", b"\r\n", b"\r")


def scan_data(buf: bytes) -> tuple[bytes, int, bool]:
    """Find message content and its end in `buf` (RFC 5321 4.1.1.4, 4.5.2).

    `buf` must begin where a previous call stopped, or with the CRLF of the
    DATA command line (the caller supplies one), because the end of data is
    CRLF "." CRLF and the CRLF before the dot is content.

    Returns (content, consumed, ended): the dot-unstuffed content octets, how
    many octets of `buf` they (and the terminator, if `ended`) account for.
    The rest of `buf` must be offered again with more input: it is input
    after the terminator, or a tail (CR, CRLF, CRLF ".", CRLF "." CR) that may
    turn out to be the terminator. Such a tail always starts with CR, so no
    CRLF "." ever straddles two calls.

    Only CRLF "." CRLF ends the data; a bare LF never does (SMTP smuggling).
    Every other CRLF "." loses its dot: "If the first character is a period
    and there are other characters on the line, the first character is
    deleted" (4.5.2). Both are single C-level passes (find, replace).
    """
    end = buf.find(_END_OF_DATA)
    if end >= 0:
        return buf[:end + 2].replace(b"\r\n.", b"\r\n"), end + 5, True
    cut = len(buf)
    for tail in _POSSIBLE_END:
        if buf.endswith(tail):
            cut -= len(tail)
            break
    return buf[:cut].replace(b"\r\n.", b"\r\n"), cut, False


# --- the session ----------------------------------------------------------

class SMTPSession:
    """The server side of one SMTP connection.

    Every method returns a list of events for the runtime to perform in
    order. Consecutive replies share one Send; a Send always precedes the
    events that follow its replies. After EndMessage the engine holds further
    input until `message_stored` or `message_failed` is called; after Close
    every method returns [].
    """

    def __init__(self, hostname: str, peer: str = "unknown",
                 max_message_size: int = 104857600,
                 max_recipients: int = 1000, clock=time.time, storage=None):
        self.hostname = hostname
        self.peer = peer
        self.max_message_size = max_message_size
        self.max_recipients = max_recipients
        self._clock = clock
        # An object whose `low` is True while new mail must wait (the disk
        # reserve): MAIL FROM then gets 452 4.3.1, a reply senders retry.
        self._storage = storage
        self._reader = LineReader(_LINE_LIMIT[_Input.COMMAND])
        self._buf = self._reader.buffer   # raw input, for message content
        self._input = _Input.COMMAND
        self._helo = ""
        self._greeted_with = None      # "HELO" or "EHLO"
        self._auth_user: str | None = None
        self._sasl: SaslExchange | None = None   # the AUTH exchange under way
        self._data_prefix = False
        self._size = 0
        self._oversize = False
        self._out = Output()
        self._reset_transaction()

    # --- public API -------------------------------------------------------

    @property
    def in_data(self) -> bool:
        """True from DATA's 354 until the message's final reply is known."""
        return self._input in (_Input.DATA, _Input.AWAIT)

    @property
    def at_rest(self) -> bool:
        """Between mail transactions: no MAIL, AUTH or DATA under way and
        no input held (RFC 5321 3.8: the point where a server that must
        shut down can send 421 without cutting a transaction short)."""
        return self._input is _Input.COMMAND and self._stage is _Stage.IDLE and not self._buf

    @property
    def closed(self) -> bool:
        return self._input is _Input.CLOSED

    @staticmethod
    def refusal(hostname: str) -> bytes:
        """The reply to a client over the session cap."""
        return format_reply("too_many_sessions", host=hostname)

    def intake(self, held) -> int:
        """How many octets of pipelined `held` input to feed at once: all of
        it in message content (never answered before its end), commands by
        _COMMAND_PIECE."""
        if self._input is _Input.DATA:
            return len(held)
        return min(len(held), _COMMAND_PIECE)

    def start(self) -> list:
        """The greeting."""
        self._reply("greeting", host=self.hostname)
        return self._take()

    def receive(self, data: bytes) -> list:
        """Events answering `data`, which continues what came before."""
        if self._input is _Input.CLOSED:
            return []
        if self._input is _Input.DATA and not self._buf:
            # Message content with nothing held before it: scan it where it
            # is, without first copying it into the buffer and out again
            # (a large message arrives in reads of up to 256 KiB).
            self._read_data(data)
        else:
            self._buf += data
        self._run()
        return self._take()

    def message_stored(self, key: str) -> list:
        """After EndMessage: the message is safe under `key`.

        Returns the 250 reply and the answers to any input held meanwhile;
        [] if no message awaits its result (e.g. the session closed).
        """
        if self._input is not _Input.AWAIT:
            return []
        return self._finish_message("queued", key=key)

    def message_failed(self, reason: str) -> list:
        """After EndMessage: the message could not be stored.

        `reason` "disk_full" answers 452 4.3.1, anything else 451 4.3.0;
        either way the transaction is over and held input is processed.
        """
        if self._input is not _Input.AWAIT:
            return []
        name = "storage_full" if reason == "disk_full" else "delivery_failed"
        return self._finish_message(name)

    def timeout(self) -> list:
        """The client was idle too long: 421 4.4.2 and Close."""
        return self._close_with("timeout")

    def shutdown(self) -> list:
        """The service is stopping: 421 4.3.2 and Close."""
        return self._close_with("shutting_down")

    # --- event plumbing ------------------------------------------------------

    def _reply(self, name: str, **fields: str) -> None:
        self._out.send(format_reply(name, **fields))

    def _emit(self, event) -> None:
        self._out.event(event)

    def _take(self) -> list:
        return self._out.take()

    def _close(self) -> None:
        self._emit(Close())
        self._input = _Input.CLOSED
        self._reader.clear()

    def _close_with(self, name: str) -> list:
        if self._input is _Input.CLOSED:
            return []
        if self._input is _Input.DATA and not self._oversize:
            self._emit(AbortMessage())
        self._reply(name, host=self.hostname)
        self._close()
        return self._take()

    def _finish_message(self, name: str, **fields: str) -> list:
        self._reply(name, **fields)
        self._reset_transaction()
        self._input = _Input.COMMAND
        self._run()
        return self._take()

    # --- input ---------------------------------------------------------------

    def _run(self) -> None:
        """Consume held input until more is needed or input must wait."""
        while True:
            if self._input is _Input.DATA:
                progressed = self._read_data()
            elif self._input in (_Input.COMMAND, _Input.AUTH):
                progressed = self._read_line()
            else:
                return
            if not progressed:
                return

    def _read_line(self) -> bool:
        """Handle one command or SASL line; False if none is complete."""
        self._reader.limit = _LINE_LIMIT[self._input]
        line = self._reader.next_line()
        if line is None:
            return False
        if line is OVERLONG:
            self._reply("line_too_long")
            if self._input is _Input.AUTH:
                self._input = _Input.COMMAND
                self._sasl = None
        elif self._input is _Input.AUTH:
            self._auth_response(line)
        else:
            self._command(line)
        return True

    def _read_data(self, fresh: bytes | None = None) -> bool:
        """Emit the content held (or `fresh` input, when nothing is held);
        True once the terminating dot was read."""
        if fresh is None:
            chunk, used, ended = scan_data(bytes(self._buf))
            del self._buf[:used]
        else:
            chunk, used, ended = scan_data(fresh)
            self._buf += fresh[used:]
        if self._data_prefix and used:
            chunk = chunk[2:]            # the CRLF that _cmd_data put there
            self._data_prefix = False
        if not self._oversize:
            self._size += len(chunk)
            if self._size > self.max_message_size:
                self._oversize = True
                self._emit(AbortMessage())
            elif chunk:
                self._emit(MessageData(chunk))
        if not ended:
            return False
        if self._oversize:
            self._reply("message_too_big")
            self._reset_transaction()
            self._input = _Input.COMMAND
        else:
            self._emit(EndMessage())
            self._input = _Input.AWAIT
        return True

    # --- commands ------------------------------------------------------------

    def _command(self, raw: bytes) -> None:
        if _CONTROL.search(raw):
            self._reply("bad_character")
            return
        verb, _, arg = raw.strip(b" \t").partition(b" ")
        verb = verb.upper()   # ASCII only for bytes: an 8-bit verb stays unknown
        if verb not in KNOWN_COMMANDS:
            self._reply("unknown_command")
        elif verb not in ALLOWED[self._stage]:
            self._reply(REFUSALS.get((self._stage, verb), "bad_sequence"))
        else:
            _HANDLERS[verb](self, arg.strip(b" \t").decode("utf-8", "surrogateescape"))

    def _reset_transaction(self) -> None:
        self._stage = _Stage.IDLE
        self._mail_from = ""
        self._rcpt_to: list[str] = []
        self._body: str | None = None
        self._smtputf8 = False

    def _cmd_helo(self, arg: str) -> None:
        if not arg:
            self._reply("syntax", usage="HELO hostname")
            return
        self._greet("HELO", arg)
        self._reply("helo", host=self.hostname, helo=arg)

    def _cmd_ehlo(self, arg: str) -> None:
        if not arg:
            self._reply("syntax", usage="EHLO hostname")
            return
        self._greet("EHLO", arg)
        # The "helo" reply, continued with one line per extension keyword.
        first = format_reply("helo", host=self.hostname, helo=arg)
        keywords = [keyword.format(size=self.max_message_size)
                    for keyword in EHLO_KEYWORDS]
        self._out.send(first[:3] + b"-" + first[4:])
        for keyword in keywords[:-1]:
            self._out.send(f"250-{keyword}\r\n".encode())
        self._out.send(f"250 {keywords[-1]}\r\n".encode())

    def _greet(self, verb: str, helo: str) -> None:
        # RFC 5321 4.1.4: HELO/EHLO also clears any transaction in progress.
        self._reset_transaction()
        self._greeted_with = verb
        self._helo = helo

    def _cmd_mail(self, arg: str) -> None:
        if arg[:5].upper() != "FROM:":
            self._reply("syntax", usage="MAIL FROM:<address>")
            return
        parsed = _parse_path(arg[5:].lstrip(" \t"))
        if parsed is None:
            self._reply("bad_sender")
            return
        address, params = parsed
        size, body, smtputf8 = 0, None, False
        for param in params.split():
            key, eq, value = param.partition("=")
            key = key.upper()
            if key == "SIZE":
                if not (eq and value.isascii() and value.isdigit()):
                    self._reply("bad_parameter", param=key)
                    return
                size = int(value)
            elif key == "BODY":
                body = value.upper()
                if body not in ("7BIT", "8BITMIME"):
                    self._reply("bad_parameter", param=key)
                    return
            elif key == "SMTPUTF8":
                if eq:
                    self._reply("bad_parameter", param=key)
                    return
                smtputf8 = True
            elif key == "AUTH":
                # RFC 4954 section 5: the submitter's identity; only a
                # relay would pass it on, so it is accepted and ignored.
                pass
            else:
                self._reply("unknown_parameter", param=key)
                return
        if size > self.max_message_size:
            # RFC 1870: refuse at once rather than after the transfer.
            self._reply("message_too_big")
            return
        if self._storage is not None and self._storage.low:
            self._reply("storage_full")   # RFC 5321 4.5.3.1.10 / RFC 3463 4.3.1
            return
        self._mail_from, self._body, self._smtputf8 = address, body, smtputf8
        self._stage = _Stage.MAIL
        self._reply("sender_ok")

    def _cmd_rcpt(self, arg: str) -> None:
        if arg[:3].upper() != "TO:":
            self._reply("syntax", usage="RCPT TO:<address>")
            return
        parsed = _parse_path(arg[3:].lstrip(" \t"))
        if parsed is None or not parsed[0]:
            self._reply("bad_recipient")
            return
        address, params = parsed
        if params:
            # No DSN (RFC 3461), so no RCPT parameter is known.
            name = params.split()[0].partition("=")[0].upper()
            self._reply("unknown_parameter", param=name)
            return
        if len(self._rcpt_to) >= self.max_recipients:
            self._reply("too_many_recipients")
            return
        self._rcpt_to.append(address)
        self._stage = _Stage.RCPT
        self._reply("recipient_ok")

    def _cmd_data(self, arg: str) -> None:
        if arg:
            self._reply("syntax", usage="DATA")
            return
        envelope = Envelope(
            mail_from=self._mail_from, rcpt_to=tuple(self._rcpt_to),
            helo=self._helo, peer=self.peer, auth_user=self._auth_user,
            body=self._body, smtputf8=self._smtputf8)
        self._reply("start_data")
        self._emit(StartMessage(envelope))
        self._emit(MessageData(self._trace_headers(envelope)))
        self._input = _Input.DATA
        # The DATA line's own CRLF is the one before a dot that ends an
        # empty message; scan_data needs to see it, the content must not.
        self._buf[:0] = b"\r\n"
        self._data_prefix = True
        self._size = 0
        self._oversize = False

    def _trace_headers(self, envelope: Envelope) -> bytes:
        """Return-Path, Delivered-To and Received (RFC 5321 4.4, RFC 3848)."""
        if envelope.auth_user is not None:
            protocol = "ESMTPA"
        elif self._greeted_with == "EHLO":
            protocol = "ESMTP"
        else:
            protocol = "SMTP"
        lines = [f"Return-Path: <{envelope.mail_from}>"]
        lines += [f"Delivered-To: {rcpt}" for rcpt in envelope.rcpt_to]
        received = (f"Received: from {envelope.helo or 'unknown'} "
                    f"({envelope.peer})\r\n"
                    f"\tby {self.hostname} (BareMail) with {protocol}")
        if len(envelope.rcpt_to) == 1:
            received += f"\r\n\tfor <{envelope.rcpt_to[0]}>"
        received += f"; {rfc5322_date(self._clock())}"
        lines.append(received)
        return "".join(line + "\r\n" for line in lines).encode(
            "utf-8", "surrogateescape")

    def _cmd_rset(self, arg: str) -> None:
        if arg:
            self._reply("syntax", usage="RSET")
            return
        self._reset_transaction()
        self._reply("ok")

    def _cmd_noop(self, arg: str) -> None:
        self._reply("ok")   # RFC 5321 4.1.1.9: an argument is allowed

    def _cmd_quit(self, arg: str) -> None:
        # Arguments are ignored: a client that wants out should get out.
        self._reply("bye", host=self.hostname)
        self._close()

    def _cmd_vrfy(self, arg: str) -> None:
        if not arg:
            self._reply("syntax", usage="VRFY address")
            return
        self._reply("cannot_vrfy")

    def _cmd_expn(self, arg: str) -> None:
        self._reply("no_expn")   # no mailing lists to expand (RFC 5321 7.3)

    def _cmd_help(self, arg: str) -> None:
        self._reply("help")

    def _cmd_starttls(self, arg: str) -> None:
        # Not advertised and never will be: the service listens on this
        # machine only. 502 (not 454 4.7.0) because retrying cannot help.
        self._reply("no_tls")

    # --- AUTH (RFC 4954, PLAIN RFC 4616, LOGIN) ------------------------------

    def _cmd_auth(self, arg: str) -> None:
        if self._auth_user is not None:
            self._reply("already_authenticated")
            return
        mechanism, _, initial = arg.partition(" ")
        mechanism, initial = mechanism.upper(), initial.strip(" \t")
        if not mechanism:
            self._reply("syntax", usage="AUTH mechanism [initial-response]")
            return
        try:
            self._sasl = SaslExchange(mechanism.encode("utf-8", "surrogateescape"))
        except ValueError:
            self._reply("unknown_mechanism")
            return
        self._sasl_step(self._sasl.begin(initial.encode("utf-8", "surrogateescape") if initial else None))

    def _auth_response(self, raw: bytes) -> None:
        self._input = _Input.COMMAND
        self._sasl_step(self._sasl.respond(raw))

    def _sasl_step(self, result) -> None:
        if result.challenge is not None:
            self._reply("auth_challenge", challenge=result.encoded.decode("ascii"))
            self._input = _Input.AUTH
            return
        self._sasl = None
        if result.failure is not None:
            self._reply(_SASL_FAILURES[result.failure])
            return
        # Any credentials will do: the service trusts whoever can reach it.
        self._auth_user = result.user.decode("utf-8", "surrogateescape")
        self._reply("auth_ok")


# Command verb -> the SMTPSession method that performs it.
_HANDLERS = {verb: getattr(SMTPSession, "_cmd_" + verb.decode("ascii").lower()) for verb in KNOWN_COMMANDS}
