"""IMAP framing: the client's byte stream cut into whole commands, before
any grammar (RFC 3501 sections 2.2, 4.3; RFC 7888 LITERAL+).

A command is one line, or several when literals are in it: a line ending
in "{n}" (synchronizing: the client waits for "+" first) or "{n+}" (it
does not) is followed by exactly n octets of literal data and then the
rest of the command. Cutting commands first, the way imap-codec's
fragmentizer does, gives clear message boundaries even for malformed input:
a bad command is discarded whole, and literal octets are never read as
commands. Sizes are capped here, in one place.

The framer keeps no session state; the engine tells it what to do:

    framer.feed(data)
    item = framer.next()           # None: more input is needed
        CommandParts(parts)        a complete command: text segments (the
                                   literal announcements cut off) with a
                                   Literal or StreamedLiteral where each
                                   literal was (imapsyntax.parse_command
                                   takes these)
        LiteralAnnounced(parts, size, synchronizing)
                                   a line ended in a literal announcement;
                                   the engine must call accept(), stream()
                                   or refuse() before next() goes on
        LiteralChunk(data)         octets of a streamed literal
        TooLong(tag)               a command line or command over the cap
                                   was dropped (tag if it could be read)
    framer.lines = True            hand out raw lines as Line(data)
                                   instead (IDLE's DONE, SASL responses)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .engine import OVERLONG, LineReader
from .imapdata import Literal, StreamedLiteral

__all__ = ["CommandParts", "Framer", "Line", "LiteralAnnounced", "LiteralChunk", "TooLong"]

# A command line (between literals) of up to 64 KiB: long sequence sets
# of UIDs, which sync clients send, fit easily.
MAX_LINE = 64 * 1024
# A whole command with its (non-streamed) literals: LOGIN passwords,
# SEARCH strings, mailbox names. APPEND's message is streamed, not held.
MAX_COMMAND = 1024 * 1024

_ANNOUNCEMENT = re.compile(rb"\{([0-9]{1,20})(\+?)\}\Z")
_TAG = re.compile(rb"[^ \x00-\x1f\x7f(){%*\"\\+\]]+")


@dataclass
class CommandParts:
    parts: list


@dataclass
class LiteralAnnounced:
    parts: list          # the command so far (text, literals), this line's text last
    size: int
    synchronizing: bool


@dataclass
class LiteralChunk:
    data: bytes


@dataclass
class Line:
    data: bytes


@dataclass
class TooLong:
    tag: str | None


def tag_of(parts: list) -> str | None:
    """The tag at the start of a command's first text segment, if any."""
    first = parts[0] if parts and isinstance(parts[0], bytes) else b""
    match = _TAG.match(first)
    if match is None or first[match.end():match.end() + 1] not in (b" ", b""):
        return None
    return match.group().decode("ascii", "replace")


class Framer:
    """Cuts client input into commands; see the module docstring."""

    def __init__(self, max_line: int = MAX_LINE, max_command: int = MAX_COMMAND):
        self._reader = LineReader(max_line)
        self._max_command = max_command
        self.lines = False
        self._parts: list = []       # the command being read
        self._size = 0               # octets of it so far
        self._literal = 0            # octets of literal data still to come
        self._literal_size = 0       # octets of the literal being read
        self._literal_data = bytearray()
        self._mode = "line"          # line | decide | literal | stream | discard
        self._announced: LiteralAnnounced | None = None
        self._dropping = False       # the command is being discarded to its end

    def feed(self, data: bytes) -> None:
        self._reader.feed(data)

    def __len__(self) -> int:
        return len(self._reader)

    @property
    def in_command(self) -> bool:
        """True while part of a command (or a literal) has been read."""
        return bool(self._parts) or self._mode != "line" or len(self._reader) > 0

    # -- the engine's decisions on a literal ------------------------------

    def accept(self) -> None:
        """Read the announced literal into memory (a Literal in the parts)."""
        self._decided("literal")

    def stream(self) -> None:
        """Hand the announced literal out as LiteralChunks; a
        StreamedLiteral(size, token) stands for it in the parts."""
        self._decided("stream")

    def refuse(self) -> None:
        """The command is refused. A synchronizing literal is then never
        sent (the client waits for "+"): the command just ends. A
        non-synchronizing one is read and dropped, with the rest of its
        command."""
        announced = self._announced
        self._announced = None
        self._parts, self._size = [], 0
        if announced.synchronizing:
            self._mode = "line"
        else:
            self._literal = announced.size
            self._mode = "discard"
            self._dropping = True

    def _decided(self, mode: str) -> None:
        size = self._announced.size
        self._literal = self._literal_size = size
        self._announced = None
        self._literal_data = bytearray()
        if size == 0:
            self._parts.append(Literal(b"") if mode == "literal" else StreamedLiteral(0))
            self._mode = "line"
        else:
            self._mode = mode

    # -- reading ----------------------------------------------------------

    def next(self):
        while True:
            mode = self._mode
            if mode == "decide":
                return None   # waiting for accept/stream/refuse
            if mode in ("literal", "stream", "discard"):
                item = self._read_literal()
                if item is None:
                    if self._mode == mode:
                        return None
                    continue
                return item
            line = self._reader.next_line()
            if line is None:
                return None
            if line is OVERLONG:
                tag = tag_of(self._parts or [self._reader.dropped_head])
                dropping = self._dropping
                self._parts, self._size, self._dropping = [], 0, False
                if self.lines:
                    return Line(b"")
                if dropping:
                    continue
                return TooLong(tag)
            if self.lines and not self._parts:
                return Line(line)
            item = self._line(line)
            if item is not None:
                return item

    def _line(self, line: bytes):
        self._size += len(line) + 2
        match = _ANNOUNCEMENT.search(line)
        if self._size > self._max_command and not self._dropping:
            tag = tag_of(self._parts or [line])
            self._parts, self._size = [], 0
            if match is not None and match.group(2):   # its data comes anyway: drop it
                self._literal = int(match.group(1))
                self._mode = "discard"
                self._dropping = True
            return TooLong(tag)
        if self._dropping:
            if match is not None and match.group(2):
                # The dropped command goes on with another literal that
                # comes unasked: drop it too.
                self._literal = int(match.group(1))
                self._mode = "discard"
            else:
                # Its end (or a synchronizing literal, which the client
                # will not send unasked: it has its answer already).
                self._dropping = False
            return None
        if match is None:
            parts, self._parts, self._size = self._parts + [line], [], 0
            return CommandParts(parts)
        size = int(match.group(1))
        self._parts.append(line[:match.start()])
        self._announced = LiteralAnnounced(list(self._parts), size, not match.group(2))
        self._mode = "decide"
        return self._announced

    def fits(self, size: int) -> bool:
        """Whether a literal of `size` octets may be held in memory as part
        of the command being read (the MAX_COMMAND cap)."""
        return self._size + size <= self._max_command

    def _read_literal(self):
        buf = self._reader.buffer
        if not buf:
            return None
        take = min(self._literal, len(buf))
        data = bytes(buf[:take])
        del buf[:take]
        self._literal -= take
        mode = self._mode
        done = self._literal == 0
        if mode == "literal":
            self._literal_data += data
            if done:
                self._parts.append(Literal(bytes(self._literal_data)))
                self._literal_data = bytearray()
                self._size += take
                self._mode = "line"
            return None
        if mode == "stream":
            if done:
                self._parts.append(StreamedLiteral(self._literal_size))
                self._mode = "line"
            return LiteralChunk(data) if data else None
        # discard
        if done:
            self._mode = "line"
        return None
