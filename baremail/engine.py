"""The kit every protocol engine is built from (SMTP, POP3, IMAP).

An engine is a plain object with no I/O: the runtime (service.py) feeds it
the client's bytes and performs the events it returns, in order. What all
engines share lives here, bytes-typed throughout:

    Send, Close        the two events every engine returns; the runtime
                       performs them itself, any other event goes to the
                       protocol's glue (smtpd.py, pop3d.py, imapd.py)
    Output             collects an engine's events, coalescing consecutive
                       Sends into one (fifty pipelined replies, one write)
    LineReader         input buffer that hands out lines no longer than a
                       limit; an over-long line is dropped as it arrives and
                       reported once, when its line end comes
    SaslExchange       SASL PLAIN (RFC 4616) and LOGIN with any credentials,
                       and strict base64 for the responses (RFC 4954, 5034,
                       3501 section 6.2.2 frame them; each engine formats the
                       challenges and outcomes its own way)

Every engine also offers the same face to the runtime:

    start() -> events            the greeting
    receive(data) -> events      client bytes, continuing what came before
    timeout() -> events          the client was silent too long
    shutdown() -> events         the service is stopping
    at_rest -> bool              between transactions: a stopping service
                                 may end the session here
    intake(held) -> int          how many octets of `held` pipelined input
                                 to feed at once (flow control: the runtime
                                 stops feeding while replies back up)
    refusal(hostname) -> bytes   (static) the reply for a client over the
                                 session cap
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

__all__ = ["Close", "LineReader", "OVERLONG", "Output", "SaslExchange", "SaslResult", "Send"]


# Events are immutable by convention. Send is made for every reply of a
# busy session, and a frozen dataclass's __init__ costs three times a plain
# one's, so it is plain (with the hash a frozen one has).
@dataclass(unsafe_hash=True)
class Send:
    """Write these bytes to the client."""

    data: bytes


@dataclass(frozen=True)
class Close:
    """Flush pending writes, then close the connection."""


class Output:
    """An engine's events of one call, consecutive Send data coalesced."""

    __slots__ = ("events", "_pending")

    def __init__(self) -> None:
        self.events: list = []
        self._pending = bytearray()

    def send(self, data: bytes) -> None:
        self._pending += data

    def event(self, event: object) -> None:
        self._flush()
        self.events.append(event)

    def take(self) -> list:
        """The events so far (the Output is empty afterwards)."""
        self._flush()
        events, self.events = self.events, []
        return events

    def _flush(self) -> None:
        if self._pending:
            self.events.append(Send(bytes(self._pending)))
            self._pending.clear()


class _Overlong:
    def __repr__(self) -> str:
        return "OVERLONG"


OVERLONG = _Overlong()   # stands in for a line that exceeded the limit


class LineReader:
    """Client input, handed out a line at a time.

    A line ends with LF (CRLF, or leniently a bare LF); next_line() returns
    it without its line end. `limit` counts the line end too, and may be
    changed between lines (a SASL response may be longer than a command).
    The buffer never holds more than `limit` octets of an unfinished line:
    a longer one is dropped as it arrives, and next_line() returns OVERLONG
    once, when its LF comes, so the engine answers it in its place in the
    stream.
    """

    __slots__ = ("buffer", "limit", "dropped_head", "_discarding")

    def __init__(self, limit: int) -> None:
        self.buffer = bytearray()   # raw access for engines that read non-line data
        self.limit = limit
        self.dropped_head = b""     # the start of the last over-long line (its tag, say)
        self._discarding = False

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def __len__(self) -> int:
        return len(self.buffer)

    def clear(self) -> None:
        self.buffer.clear()
        self._discarding = False

    def next_line(self):
        """The next complete line (bytes, without its line end), OVERLONG,
        or None if no complete line is held."""
        buf = self.buffer
        if self._discarding:
            end = buf.find(b"\n")
            if end < 0:
                buf.clear()
                return None
            del buf[:end + 1]
            self._discarding = False
            return OVERLONG
        end = buf.find(b"\n", 0, self.limit)
        if end < 0:
            if len(buf) < self.limit:
                return None
            # Its LF, held already or still to come, is past the limit.
            self.dropped_head = bytes(buf[:64])
            self._discarding = True
            return self.next_line()
        line = bytes(buf[:end])
        del buf[:end + 1]
        return line[:-1] if line[-1:] == b"\r" else line


# --- SASL ----------------------------------------------------------------------


@dataclass(frozen=True)
class SaslResult:
    """What a SASL step comes to.

    challenge   not None: send it (raw octets; `encoded` is the base64) and
                feed the client's next line to respond()
    user        not None: authenticated as this name (any credentials do)
    failure     not None: the exchange is over without a login; one of
                "cancelled" (the client sent "*"), "bad_base64",
                "malformed" (a PLAIN response without its two NULs),
                "no_user" (an empty user name)
    """

    challenge: bytes | None = None
    user: bytes | None = None
    failure: str | None = None

    @property
    def encoded(self) -> bytes:
        return base64.b64encode(self.challenge or b"")


# The challenges a mechanism sends, one before each client response. LOGIN
# (draft-murchison-sasl-login) prompts "Username:", then "Password:".
_CHALLENGES = {
    b"PLAIN": (b"",),
    b"LOGIN": (b"Username:", b"Password:"),
}


class SaslExchange:
    """One AUTH / AUTHENTICATE exchange. Any credentials succeed: BareMail
    serves one mailbox to whoever may reach it (loopback or a trusted LAN).

    exchange = SaslExchange(b"PLAIN")      # ValueError for another mechanism
    result = exchange.begin(initial)       # initial: the base64 text given
                                           # with the command, b"=" for an
                                           # empty one, or None
    while result.challenge is not None:
        result = exchange.respond(line)    # the client's next line
    """

    MECHANISMS = tuple(_CHALLENGES)

    def __init__(self, mechanism: bytes) -> None:
        mechanism = mechanism.upper()
        if mechanism not in _CHALLENGES:
            raise ValueError(f"unknown SASL mechanism {mechanism!r}")
        self.mechanism = mechanism
        self._responses: list = []

    def begin(self, initial: bytes | None) -> SaslResult:
        if initial is None:
            return SaslResult(challenge=_CHALLENGES[self.mechanism][0])
        return self.respond(initial)

    def respond(self, line: bytes) -> SaslResult:
        text = line.strip()
        if text == b"*":   # RFC 4954 4, RFC 5034 4, RFC 3501 6.2.2: the client cancels
            return SaslResult(failure="cancelled")
        decoded = decode_base64(text)
        if decoded is None:
            return SaslResult(failure="bad_base64")
        self._responses.append(decoded)
        challenges = _CHALLENGES[self.mechanism]
        if len(self._responses) < len(challenges):
            return SaslResult(challenge=challenges[len(self._responses)])
        if self.mechanism == b"PLAIN":
            parts = self._responses[0].split(b"\0")   # [authzid] NUL authcid NUL passwd
            if len(parts) != 3:
                return SaslResult(failure="malformed")
            user = parts[1]
        else:
            user = self._responses[0]
        if not user:
            return SaslResult(failure="no_user")
        return SaslResult(user=user)


def decode_base64(text: bytes) -> bytes | None:
    """Strict base64 (no stray characters); "=" is the empty response of
    RFC 4954 section 4 and RFC 4959. None if it does not decode."""
    if text == b"=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
