"""The MIME structure of one message, read once, streaming: what IMAP FETCH and SEARCH need.

Pure: no sockets, no session state. `structure()` walks a message in its
*wire form* (CRLF line ends, as `Maildir.open_wire()` or `read_wire()` give
it) exactly once, in chunks, with memory bounded independently of the
message's size, and returns a small tree of `Part`s that the server may
cache by message key. Everything else works from that tree:

    structure(source) -> Part              the MIME tree with wire offsets
    envelope(part) -> value                RFC 3501 ENVELOPE (imapdata values)
    body(part, extended) -> value          BODY / BODYSTRUCTURE (imapdata values)
    find(part, numbers) -> Part | None     the part a section number names
    section_range(part, numbers, which)    (start, end) of BODY[<section>], or None
    header_fields(header, names, exclude)  HEADER.FIELDS / HEADER.FIELDS.NOT
    read_range(source, start, end)         stream those octets from a fresh reader
    header_bytes(source, part)             a part's header block (capped)
    header_values(header, name)            raw values of one field, unfolded
    decode_header_value(raw) -> str        RFC 2047 decoding for SEARCH
    decoded_header_values(header, name)    both of the above
    search_text(source, part, needles, include_header)   SEARCH BODY / TEXT

All offsets and sizes are in wire octets, because IMAP's RFC822.SIZE, body
sizes and partial fetches are (RFC 3501 section 2.3.4, 6.4.5).

Choices where the RFCs leave room (each is explained where it is made):
* Media types, subtypes, encodings, disposition types and parameter names
  are sent in upper case, as RFC 3501's own examples and Cyrus do; values
  (charset, boundary, filename...) exactly as in the message.
* RFC 2231 parameters: continuations are joined into one parameter, named
  NAME when no piece was extended and NAME* when one was, whose value keeps
  the charset'language'%XX form (what Dovecot and Cyrus send); see
  `_rfc2231`.
* Raw versus decoded: ENVELOPE and BODYSTRUCTURE carry header values raw
  (unfolded, NUL replaced by U+FFFD since IMAP strings cannot hold NUL),
  never RFC 2047-decoded (RFC 3501 section 7.4.2); SEARCH matches decoded
  text (RFC 2047 headers, transfer encodings, charsets).
* Content-* fields count with or without MIME-Version (as Python's email
  package and Cyrus do); the first occurrence of a field wins.
* Line counts are line ends (as Dovecot and Cyrus count); the CRLF before a
  boundary is the boundary's (RFC 2046 section 5.1.1), also after a close
  delimiter that an outer delimiter follows at once.
* A multipart without a boundary parameter is an invalid Content-Type, so
  TEXT/PLAIN (RFC 2045 section 5.2); one whose boundary never occurs keeps
  its type with one empty TEXT/PLAIN part (as Dovecot). Parts beyond
  MAX_DEPTH / MAX_PARTS become APPLICATION/OCTET-STREAM leaves (as Dovecot).
* A header ends at its blank line, or (best effort, as Python's email
  package does) before a line that is no field, or before a boundary line.
* An address without a domain ("root") has the host "" (NIL would mean a
  group); a comment names an address that has no display name.
"""

from __future__ import annotations

import binascii
import codecs
import functools
import re

from .imapdata import Raw, encode

__all__ = [
    "CHUNK", "HEADER_CAP", "MAX_DEPTH", "MAX_PARTS", "Part",
    "body", "decode_header_value", "decoded_header_values", "envelope", "find",
    "header_bytes", "header_fields", "header_values", "read_range",
    "search_text", "section_range", "structure",
]

CHUNK = 1 << 16             # octets asked of a reader at a time
HEADER_CAP = 256 * 1024     # octets of one header block kept for parsing; the rest is only counted
MAX_DEPTH = 50              # multipart / message nesting beyond this is a leaf
MAX_PARTS = 5000            # parts beyond this many are not listed (Dovecot stops at 10,000)
_LINE_PREFIX = 1024         # enough of an over-long line to classify it
_LINE_KEEP = 64 * 1024      # octets of one header line kept (RFC 5322 2.1.1 allows 998), so that
                            # one absurd line does not use up HEADER_CAP for the fields after it
_CAND_MAX = 1024            # a delimiter line is "--" + boundary (at most 70 octets,
                            # RFC 2046 section 5.1.1) + padding: longer lines are judged on this much
_KEEP = 8                   # octets kept before the scan position when the buffer is refilled
_NUL_REPLACEMENT = "\ufffd".encode()   # IMAP strings cannot carry NUL (RFC 3501 section 9, CHAR8)

_DEFAULT_CHARSET = ("CHARSET", "us-ascii")   # RFC 2045 section 5.2, RFC 2046 section 4.1.2


class Part:
    """One MIME entity: a whole message, a body part, or the message inside message/rfc822.

    Offsets are wire octets from the start of the message:
    `header_start` <= `header_end` (= `body_start`, just after the blank line
    when there is one) <= `body_end`. A body part's body ends before the CRLF
    that precedes the next boundary delimiter (RFC 2046 section 5.1.1).

    Text attributes are `str` decoded from the message's octets as UTF-8 with
    surrogateescape, so `imapdata.encode()` sends exactly those octets back.
    `type`/`subtype`/`encoding`/`disposition` and parameter names are upper
    case; defaults are applied (TEXT/PLAIN, MESSAGE/RFC822 inside
    multipart/digest, 7BIT). `params` and `disposition_params` are tuples of
    (NAME, value) pairs in message order, after RFC 2231 merging.

    `children` is a tuple (non-empty only for MULTIPART), `message` the
    encapsulated message's Part for MESSAGE/RFC822, `lines` the body's line
    count. A Part that begins a message (the root, and every `message`) has
    `envelope_fields`: the raw, unfolded values of Date, Subject, From,
    Sender, Reply-To, To, Cc, Bcc, In-Reply-To, Message-ID (bytes or None).
    Parts can be pickled and compared with ==.
    """

    __slots__ = ("header_start", "header_end", "body_end", "lines",
                 "type", "subtype", "params", "id", "description", "encoding", "md5",
                 "disposition", "disposition_params", "language", "location",
                 "children", "message", "envelope_fields")

    def __init__(self, header_start=0, header_end=0, body_end=0, lines=0,
                 type="TEXT", subtype="PLAIN", params=(), id=None, description=None,
                 encoding="7BIT", md5=None, disposition=None, disposition_params=(),
                 language=None, location=None, children=(), message=None,
                 envelope_fields=None):
        self.header_start = header_start
        self.header_end = header_end
        self.body_end = body_end
        self.lines = lines
        self.type = type
        self.subtype = subtype
        self.params = params
        self.id = id
        self.description = description
        self.encoding = encoding
        self.md5 = md5
        self.disposition = disposition
        self.disposition_params = disposition_params
        self.language = language
        self.location = location
        self.children = children
        self.message = message
        self.envelope_fields = envelope_fields

    @property
    def body_start(self) -> int:
        return self.header_end

    @property
    def size(self) -> int:
        """Octets of the body as stored (its transfer encoding): body-fld-octets."""
        return self.body_end - self.header_end

    @property
    def is_multipart(self) -> bool:
        return self.type == "MULTIPART"

    def param(self, name: str, default=None):
        """The Content-Type parameter `name` (case-insensitive), after RFC 2231 joining."""
        name = name.upper()
        for key, value in self.params:
            if key == name:
                return value
        return default

    @property
    def charset(self) -> str:
        return self.param("CHARSET") or "us-ascii"

    def walk(self):
        """This part and every part below it, in message order (encapsulated messages included)."""
        yield self
        if self.message is not None:
            yield from self.message.walk()
        for child in self.children:
            yield from child.walk()

    def _state(self):
        return tuple(getattr(self, name) for name in Part.__slots__)

    def __eq__(self, other):
        if not isinstance(other, Part):
            return NotImplemented
        return self._state() == other._state()

    __hash__ = None

    def __getstate__(self):
        return self._state()

    def __setstate__(self, state):
        for name, value in zip(Part.__slots__, state):
            setattr(self, name, value)

    def __repr__(self) -> str:
        return (f"Part({self.type}/{self.subtype} header={self.header_start}:{self.header_end}"
                f" body={self.header_end}:{self.body_end} lines={self.lines}"
                f" children={len(self.children)}{' message' if self.message else ''})")


# --------------------------------------------------------------------------
# Reading the message: one forward pass over a bounded buffer.

class _Scanner:
    """A window on the message. `buf` holds octets from absolute offset `base`;
    `more(keep)` reads the next chunk and forgets what lies before `keep`.
    LFs are counted as octets are forgotten, so `lf_at()` can tell the line
    count up to any offset still in the window."""

    __slots__ = ("buf", "base", "pos", "read", "eof", "lf_base", "lf_mark", "parts")

    def __init__(self, source):
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.buf = bytes(source)
            self.read = None
            self.eof = True
        else:
            self.buf = b""
            self.read = source.read
            self.eof = False
        self.base = 0
        self.pos = 0
        self.lf_base = 0    # LFs before offset lf_mark
        self.lf_mark = 0
        self.parts = 0

    @property
    def end(self) -> int:
        return self.base + len(self.buf)

    def more(self, keep: int) -> bool:
        if self.eof:
            return False
        data = self.read(CHUNK)
        if not data:
            self.eof = True
            return False
        drop = keep - self.base
        if drop > 0:
            drop = min(drop, len(self.buf))
            keep = self.base + drop
            if self.lf_mark < keep:
                self.lf_base += self.buf.count(b"\n", self.lf_mark - self.base, drop)
                self.lf_mark = keep
            self.buf = self.buf[drop:] + bytes(data)
            self.base = keep
        else:
            self.buf += bytes(data)
        return True

    def lf_at(self, offset: int) -> int:
        """LFs before `offset` (which must still be in the window)."""
        if offset <= self.lf_mark:
            return self.lf_base
        return self.lf_base + self.buf.count(b"\n", self.lf_mark - self.base, offset - self.base)

    def skip_to_lf(self, pos: int) -> int:
        """The offset after the next LF at or after `pos`, or the end of input."""
        while True:
            index = self.buf.find(b"\n", pos - self.base)
            if index >= 0:
                return self.base + index + 1
            pos = self.end
            if not self.more(pos - _KEEP):
                return self.end

    def line(self, pos: int, limit: int):
        """(octets, next) for the line at `pos`: at most `limit` octets of it
        (line end included when it fits) and the offset of the next line."""
        while True:
            buf = self.buf
            index = pos - self.base
            nl = buf.find(b"\n", index)
            if nl >= 0:
                if nl + 1 - index <= limit:
                    return buf[index:nl + 1], self.base + nl + 1
                return buf[index:index + limit], self.base + nl + 1
            if len(buf) - index >= limit:
                return buf[index:index + limit], self.skip_to_lf(pos + limit)
            if not self.more(pos - _KEEP):
                return buf[index:], self.end


class _Stop:
    """Where a body ended: at a boundary delimiter line of `level` (an index
    into the boundary stack; -1 for the end of input), `close` if it was the
    close delimiter; `next` is the offset after that line and `eol` the
    length of its line end; `end` the body's end and `lf` the number of LFs
    before it."""

    __slots__ = ("level", "close", "next", "eol", "end", "lf")

    def __init__(self, sc, level, close, next_, end):
        self.level = level
        self.close = close
        self.next = next_
        self.eol = 0
        self.end = end
        self.lf = sc.lf_at(end)


def _match_boundary(line: bytes, stack):
    """(level, close) if `line` (without its LF) is a delimiter line of one of
    the boundaries in `stack` (each b"--" + boundary), innermost first.

    RFC 2046 section 5.1.1: the delimiter may be followed by white space
    (transport padding); the close delimiter adds "--". A close delimiter
    followed by anything else still closes (real mail has such), but a
    delimiter followed by other text does not, so that boundary "b" does not
    claim the lines of an inner boundary "b1"."""
    fallback = None
    for level in range(len(stack) - 1, -1, -1):
        dash = stack[level]
        if line.startswith(dash):
            rest = line[len(dash):]
            if not rest.strip(b" \t\r"):
                return level, False
            if rest[:2] == b"--":
                if not rest[2:].strip(b" \t\r"):
                    return level, True
                if fallback is None:
                    fallback = (level, True)
    return fallback


def _find_delimiter(sc: _Scanner, stack, start: int) -> _Stop:
    """Consume a body from `start` up to the next delimiter line of any
    boundary in `stack`, or to the end of input."""
    if not stack:
        while sc.more(sc.end - _KEEP):
            pass
        end = sc.end
        return _Stop(sc, -1, False, end, end)
    check_start = True      # a delimiter may open the body itself
    search = start          # where to look for the next "\n--"
    while True:
        buf = sc.buf
        base = sc.base
        candidate = -1
        if check_start:
            index = start - base
            if len(buf) - index < 2 and not sc.eof:
                sc.more(start - _KEEP)
                continue
            check_start = False
            if buf.startswith(b"--", index):
                candidate = index
        if candidate < 0:
            nl = buf.find(b"\n--", search - base)
            if nl < 0:
                if sc.eof:
                    end = sc.end
                    return _Stop(sc, -1, False, end, end)
                search = max(start, base + len(buf) - 2)
                sc.more(search - _KEEP)
                continue
            candidate = nl + 1
        line_end = buf.find(b"\n", candidate + 2)
        if line_end < 0:
            if not sc.eof and len(buf) - candidate <= _CAND_MAX:
                # The line is not all here yet: read on, then look at it again.
                if candidate == start - base:
                    check_start = True
                else:
                    search = base + candidate - 1
                sc.more(base + candidate - _KEEP)
                continue
            line = buf[candidate:candidate + _CAND_MAX]
        else:
            # Judged on at most _CAND_MAX octets whether the whole line is
            # here or not, so that how the input was read cannot matter.
            line = buf[candidate:min(line_end, candidate + _CAND_MAX)]
        found = _match_boundary(line, stack)
        if found is None:
            search = base + candidate
            continue
        # The CRLF before the delimiter belongs to the delimiter (RFC 2046 5.1.1).
        at = base + candidate
        end = at
        if at > start:
            end = at - 1
            if end > start and candidate >= 2 and buf[candidate - 2] == 13:
                end -= 1
        stop = _Stop(sc, found[0], found[1], 0, end)
        if line_end >= 0:
            stop.next = base + line_end + 1
            stop.eol = 2 if line_end > candidate and buf[line_end - 1] == 13 else 1
        elif sc.eof and len(buf) - candidate <= _CAND_MAX:
            stop.next = sc.end
        else:
            stop.next = sc.skip_to_lf(at + _CAND_MAX)
        return stop


# A header block whose every line is a field or a continuation (RFC 5322
# section 2.2; white space before the colon is obsolete syntax, section 4.5).
_HEADER_LINES = re.compile(rb"(?:[!-9;-~]*[ \t]*:[^\n]*\n|[ \t][^\n]*\n)*")
_FIELD_START = re.compile(rb"[!-9;-~]*[ \t]*:")


def _read_header(sc: _Scanner, stack):
    """Consume the header block at sc.pos. Returns (block, header_end, stop):
    `block` the octets kept for parsing (at most HEADER_CAP), `header_end`
    the offset where the body starts, `stop` a _Stop when a delimiter line
    cut the header short (then the body is empty), else None.

    The header ends after the first blank line; also (best effort, as
    Python's email package does) before the first line that is neither a
    field nor a continuation, since that is body text of a message that
    lacks the blank line; and before a delimiter line of an enclosing
    multipart (the CRLF before it belongs to the delimiter)."""
    start = sc.pos
    while True:
        buf = sc.buf
        index = start - sc.base
        match = _HEADER_LINES.match(buf, index, index + HEADER_CAP)
        at = match.end()
        nl = buf.find(b"\n", at)
        if nl < 0 and not sc.eof and len(buf) - index < HEADER_CAP:
            sc.more(start - _KEEP)
            continue
        if nl >= 0 and nl - at <= 1 and buf[at:nl + 1] in (b"\r\n", b"\n"):
            block = buf[index:at]
            if not stack or (b"\n--" not in block and block[:2] != b"--"):
                return block, sc.base + nl + 1, None
        break
    return _read_header_lines(sc, stack, start)


def _read_header_lines(sc: _Scanner, stack, start: int):
    # The general case, line by line: malformed headers, delimiters inside a
    # header, headers longer than HEADER_CAP, an mbox "From " line.
    kept = []
    size = 0
    pos = start
    previous_end = 0    # length of the previous line's line end
    while True:
        line, next_ = sc.line(pos, max(min(HEADER_CAP - size, _LINE_KEEP), _LINE_PREFIX))
        if not line:
            return b"".join(kept), pos, None
        if line in (b"\r\n", b"\n"):
            return b"".join(kept), next_, None
        if stack and line[:2] == b"--":
            found = _match_boundary(line.rstrip(b"\r\n"), stack)
            if found is not None:
                end = pos - previous_end if pos > start else pos
                stop = _Stop(sc, found[0], found[1], next_, end)
                return b"".join(kept), end, stop
        first = line[:1]
        if first not in (b" ", b"\t") and not _FIELD_START.match(line) \
                and not (pos == 0 and line.startswith(b"From ")):
            return b"".join(kept), pos, None
        complete = line[-1:] == b"\n"
        if size + len(line) <= HEADER_CAP:
            kept.append(line if complete or next_ == sc.end else line + b"\r\n")
            size += len(line)
        if next_ == pos + len(line) and not complete:
            return b"".join(kept), next_, None     # last line, no line end
        previous_end = 2 if line[-2:] == b"\r\n" else (1 if complete else 0)
        pos = next_


# --------------------------------------------------------------------------
# Header fields.

_ENVELOPE_NAMES = (b"date", b"subject", b"from", b"sender", b"reply-to",
                   b"to", b"cc", b"bcc", b"in-reply-to", b"message-id")
_ENVELOPE_INDEX = {name: index for index, name in enumerate(_ENVELOPE_NAMES)}
# Anchored on a literal LF rather than ^ with re.M, which lets the regex
# engine jump from line to line instead of trying every offset.
_FIELDS = re.compile(
    rb"\n(content-(?:type|transfer-encoding|id|description|disposition|language|location|md5)"
    rb"|date|subject|from|sender|reply-to|to|cc|bcc|in-reply-to|message-id)"
    rb"[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)", re.I)


def _unfold(value: bytes) -> bytes:
    # RFC 5322 section 2.2.3: unfolding removes the CRLF before folding white
    # space. Within one field's value every line end is such a CRLF.
    if b"\n" in value:
        value = value.replace(b"\r\n", b"").replace(b"\n", b"")
    value = value.strip(b" \t\r")
    if b"\0" in value:
        value = value.replace(b"\0", _NUL_REPLACEMENT)
    return value


def _fields(block: bytes, is_message: bool):
    """({content field name: raw value}, envelope values or None); first occurrence wins."""
    content = {}
    env = [None] * 10 if is_message else None
    for match in _FIELDS.finditer(b"\n" + block):
        name = match.group(1).lower()
        if name[:8] == b"content-":
            if name not in content:
                content[name] = _unfold(match.group(2))
        elif env is not None:
            index = _ENVELOPE_INDEX[name]
            if env[index] is None:
                env[index] = _unfold(match.group(2))
    return content, (tuple(env) if env is not None else None)


def _str(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


_TOKENS: dict = {}
_TOKENS_MAX = 4096


def _token(value: bytes) -> str:
    """An upper-cased token (type, subtype, encoding, parameter name) as one
    shared str: cached Part trees then hold one "TEXT", not one per message.
    A bounded dict rather than sys.intern(), as the tokens come from mail."""
    text = _TOKENS.get(value)
    if text is None:
        text = _str(value.upper())
        if len(_TOKENS) < _TOKENS_MAX:
            _TOKENS[value] = text
    return text


# RFC 2045 section 5.1: token = 1*<any (US-ASCII) CHAR except SPACE, CTLs, or
# tspecials>; octets above 127 are let through, as real mail has them.
_TOKEN = rb"[^\x00-\x20\x7f()<>@,;:\\\"/\[\]?=]+"
_CFWS = rb"(?:[ \t\r\n]|\((?:[^()\\]|\\.)*\))*"
_TYPE = re.compile(_CFWS + rb"(" + _TOKEN + rb")" + _CFWS + rb"/" + _CFWS + rb"(" + _TOKEN + rb")" + _CFWS,
                   re.S)
_DISPOSITION = re.compile(_CFWS + rb"(" + _TOKEN + rb")" + _CFWS, re.S)
_ENCODING = re.compile(_CFWS + rb"(" + _TOKEN + rb")" + _CFWS + rb"\Z", re.S)
# A parameter; an unquoted value may (leniently) hold tspecials and inner
# spaces, an unterminated quoted string runs to the end of the field.
_PARAM = re.compile(
    rb";" + _CFWS + rb"(" + _TOKEN + rb")" + _CFWS + rb"=" + _CFWS
    + rb"(?:\"((?:[^\"\\]|\\.)*)(?:\"|\Z)|([^;\s\"()]+(?:[ \t]+[^;\s\"()]+)*)?)" + _CFWS, re.S)
_UNESCAPE = re.compile(rb"\\(.)", re.S)
_SECTION = re.compile(rb"(.*?)\*(\d{1,3})(\*?)\Z", re.S)


def _params(value: bytes, pos: int):
    """The parameters after offset `pos` of a Content-Type/-Disposition value,
    as (NAME, value) str pairs after RFC 2231 joining. Malformed parameters
    are skipped up to the next ';'."""
    raw = []
    end = len(value)
    while pos < end:
        match = _PARAM.match(value, pos)
        if match is not None and match.end() > pos:
            name, quoted, token = match.groups()
            if quoted is not None:
                if b"\\" in quoted:
                    quoted = _UNESCAPE.sub(rb"\1", quoted)
                raw.append((name.lower(), quoted))
            else:
                raw.append((name.lower(), token or b""))
            pos = match.end()
            continue
        following = value.find(b";", pos + 1)
        if following < 0:
            break
        pos = following
    if not raw:
        return ()
    return _rfc2231(raw)


# RFC 2231 section 7: attribute-char = any CHAR except SPACE, CTLs, "*", "'", "%" or tspecials.
_ATTRIBUTE_CHAR = frozenset(b"!#$&+-.^_`{|}~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _percent(value: bytes) -> bytes:
    return b"".join(bytes((octet,)) if octet in _ATTRIBUTE_CHAR else b"%%%02X" % octet for octet in value)


def _rfc2231(raw):
    """Join RFC 2231 continuations (section 3) into one parameter each.

    What other servers send, and why this choice: Dovecot (rfc2231-parser.c)
    and Cyrus (message_fold_params) both join `name*0`, `name*1`... into one
    parameter named `name` when no piece is extended and `name*` when any is,
    and keep the extended value's charset'language'%XX form as it is
    (percent-encoding the plain pieces so the value stays one RFC 2231
    extended value, with an empty charset and language if the first piece
    was plain). Clients that read BODYSTRUCTURE parameters (K-9/Thunderbird
    for Android rebuild a Content-Disposition header from them and decode
    it with their ordinary RFC 2231 decoder; Apple Mail; mutt) thus see a
    parameter their MIME decoder knows, whichever of the two servers they
    were written against; Thunderbird desktop takes attachment names from
    BODY[n.MIME], which is sent untouched. Decoding to 8-bit or re-encoding
    as RFC 2047 would each invent a form neither server sends. When pieces
    are missing or repeated the joined value would be wrong, so the pieces
    are kept as they came (as Dovecot does). The joined parameter takes the
    place of its first piece."""
    if not any([b"*" in name for name, _ in raw]):
        return tuple((_token(name), _str(value)) for name, value in raw)
    sections = {}       # base name -> [(number, extended, value)]
    order = []          # (name, value) or (base, None) placeholders
    for name, value in raw:
        match = _SECTION.match(name)
        if match is None:
            order.append((name, value))
            continue
        base = match.group(1)
        if base not in sections:
            sections[base] = []
            order.append((base, None))
        sections[base].append((int(match.group(2)), bool(match.group(3)), value))
    out = []
    for name, value in order:
        if value is not None:
            out.append((_token(name), _str(value)))
            continue
        pieces = sorted(sections[name], key=lambda piece: piece[0])
        if [piece[0] for piece in pieces] != list(range(len(pieces))):
            for number, extended, piece in sections[name]:
                key = b"%s*%d%s" % (name, number, b"*" if extended else b"")
                out.append((_str(key.upper()), _str(piece)))
            continue
        if not any(extended for _, extended, _ in pieces):
            out.append((_str(name.upper()), _str(b"".join(piece for _, _, piece in pieces))))
            continue
        joined = [] if pieces[0][1] else [b"''"]
        for _, extended, piece in pieces:
            joined.append(piece if extended else _percent(piece))
        out.append((_str(name.upper() + b"*"), _str(b"".join(joined))))
    return tuple(out)


def _content_type(value: bytes | None):
    """(TYPE, SUBTYPE, params, boundary) or None when absent or invalid."""
    if value is None:
        return None
    match = _TYPE.match(value)
    if match is None:
        # RFC 2045 section 5.2: a syntactically invalid Content-Type is
        # treated as absent.
        return None
    params = _params(value, match.end()) if match.end() < len(value) else ()

    boundary = None
    for key, param in params:
        if key == "BOUNDARY":
            boundary = param.encode("utf-8", "surrogateescape")
            break
    return _token(match.group(1)), _token(match.group(2)), params, boundary


def _language(value: bytes):
    # RFC 3282: Content-Language = 1#Language-tag (comments allowed).
    tags = re.findall(rb"[^\s,()]+", re.sub(rb"\((?:[^()\\]|\\.)*\)", b" ", value))
    return tuple(_str(tag) for tag in tags) or None


# --------------------------------------------------------------------------
# The walk.

def _apply_content(part: Part, content: dict, in_digest: bool):
    """Fill `part` from its Content-* fields; returns the boundary (bytes) for a multipart."""
    parsed = _content_type(content.get(b"content-type"))
    boundary = None
    if parsed is None:
        if in_digest:
            # RFC 2046 section 5.1.5: in a digest the default is message/rfc822.
            part.type, part.subtype = "MESSAGE", "RFC822"
    else:
        part.type, part.subtype, part.params, boundary = parsed
        if part.type == "MULTIPART" and not boundary:
            # RFC 2046 section 5.1.1 requires the boundary: without one the
            # field is invalid, and RFC 2045 section 5.2 says to read the
            # body as text/plain. Clients then show it instead of hiding it.
            part.type, part.subtype, part.params = "TEXT", "PLAIN", ()
    value = content.get(b"content-transfer-encoding")
    if value is not None:
        match = _ENCODING.match(value)
        # Dovecot too falls back to 7BIT for an encoding that is no token.
        if match is not None:
            part.encoding = _token(match.group(1))
    value = content.get(b"content-id")
    if value is not None:
        part.id = _str(value)
    value = content.get(b"content-description")
    if value is not None:
        part.description = _str(value)
    value = content.get(b"content-md5")
    if value is not None:
        part.md5 = _str(value)
    value = content.get(b"content-location")
    if value is not None:
        part.location = _str(value)
    value = content.get(b"content-language")
    if value is not None:
        part.language = _language(value)
    value = content.get(b"content-disposition")
    if value is not None:
        match = _DISPOSITION.match(value)
        if match is not None:
            part.disposition = _token(match.group(1))
            if match.end() < len(value):
                part.disposition_params = _params(value, match.end())
    return boundary


def _opaque(part: Part):
    # Beyond MAX_DEPTH / MAX_PARTS a multipart or message/rfc822 is sent as
    # an opaque leaf, as Dovecot does: a MESSAGE/RFC822 or MULTIPART body
    # without its inner structure would break the BODYSTRUCTURE grammar.
    part.type, part.subtype, part.params = "APPLICATION", "OCTET-STREAM", ()


def _parse(sc: _Scanner, stack, depth: int, in_digest: bool, is_message: bool):
    header_start = sc.pos
    block, header_end, stop = _read_header(sc, stack)
    content, env = _fields(block, is_message)
    part = Part(header_start, header_end, header_end, 0, envelope_fields=env)
    sc.parts += 1
    boundary = _apply_content(part, content, in_digest) if content or in_digest else None
    start = header_end
    lf_start = sc.lf_at(start)
    ptype = part.type
    if stop is not None:
        # A delimiter line cut the header short: the part has no body (a
        # multipart then has no children, a message an empty one).
        if ptype == "MESSAGE" and part.subtype == "RFC822":
            part.message = Part(start, start, start, 0, envelope_fields=(None,) * 10)
        return part, stop
    sc.pos = start
    if ptype == "MULTIPART":
        if depth >= MAX_DEPTH:
            _opaque(part)
            stop = _find_delimiter(sc, stack, start)
        else:
            inner = stack + (b"--" + boundary,)
            own = len(stack)
            stop = _find_delimiter(sc, inner, start)       # the preamble
            children = []
            while stop.level == own and not stop.close:
                sc.pos = stop.next
                if sc.parts >= MAX_PARTS:
                    stop = _find_delimiter(sc, inner, sc.pos)
                    continue
                child, stop = _parse(sc, inner, depth + 1, part.subtype == "DIGEST", False)
                children.append(child)
            part.children = tuple(children)
            if stop.level == own:
                # The epilogue: "close-delimiter transport-padding [CRLF
                # epilogue]" (RFC 2046 5.1.1), so the close delimiter's line
                # end opens it; when an outer delimiter follows at once, that
                # CRLF is the outer delimiter's and the epilogue is empty.
                sc.pos = stop.next - stop.eol
                stop = _find_delimiter(sc, stack, sc.pos)
    elif ptype == "MESSAGE" and part.subtype == "RFC822":
        if depth >= MAX_DEPTH or sc.parts >= MAX_PARTS:
            _opaque(part)
            stop = _find_delimiter(sc, stack, start)
        else:
            part.message, stop = _parse(sc, stack, depth + 1, False, True)
    else:
        stop = _find_delimiter(sc, stack, start)
    part.body_end = stop.end
    # body-fld-lines: the body's line ends, as Dovecot and Cyrus count them;
    # a last line without one (before a boundary, whose CRLF is the
    # boundary's, or at the end of input) is not counted.
    part.lines = stop.lf - lf_start
    return part, stop


def _structure(source, sc=None) -> Part:
    sc = sc or _Scanner(source)
    part, _ = _parse(sc, (), 0, False, True)
    return part


def structure(source) -> Part:
    """The MIME tree of one message in wire form.

    `source` is bytes, or an object whose read(n) returns the next octets of
    the wire form (b"" at the end), such as `Maildir.open_wire()`; it is
    read once, front to back, CHUNK octets at a time, and memory stays
    bounded whatever the message's size. Malformed MIME gives a best-effort
    tree, never an exception; only exceptions raised by `source.read`
    propagate (e.g. OSError when the file is gone)."""
    sc = _Scanner(source)
    try:
        return _structure(source, sc)
    except OSError:
        raise
    except Exception:   # a bug must not fail a FETCH of a whole mailbox: one flat part instead
        size = sc.end
        while sc.read is not None and not sc.eof:
            data = sc.read(CHUNK)
            if not data:
                break
            size += len(data)
        return Part(0, 0, size, 0, envelope_fields=(None,) * 10)


# --------------------------------------------------------------------------
# ENVELOPE (RFC 3501 section 7.4.2) and the address parser (RFC 5322 section 3.4).

_ADDRESS_TOKENS = re.compile(rb"""
  (?P<ws>[ \t\r\n]+)
| (?P<q>"(?:[^"\\]|\\.)*(?:"|\Z))
| (?P<c>\()
| (?P<d>\[(?:[^\[\]\\]|\\.)*(?:\]|\Z))
| (?P<s>[<>@,;:.\\\])])
| (?P<a>[^ \t\r\n"()\[\]<>@,;:.\\]+)
""", re.X | re.S)


def _comment_end(value: bytes, pos: int) -> int:
    """The offset after the comment opening at `pos` (comments nest, RFC 5322 3.2.2)."""
    depth = 0
    end = len(value)
    while pos < end:
        octet = value[pos]
        if octet == 92:         # backslash: quoted-pair
            pos += 2
            continue
        if octet == 40:
            depth += 1
        elif octet == 41:
            depth -= 1
            if depth == 0:
                return pos + 1
        pos += 1
    return end


def _tokens(value: bytes):
    """[(kind, text, space_before)]: kind is 'a' (atom; text as is), 'q'
    (quoted string; text = the raw form with quotes), 'd' (domain literal),
    'c' (comment; text = its content) or a special character."""
    out = []
    pos = 0
    end = len(value)
    space = False
    match_at = _ADDRESS_TOKENS.match
    while pos < end:
        match = match_at(value, pos)
        if match is None:       # cannot happen: every octet is some token
            pos += 1
            continue
        kind = match.lastgroup
        if kind == "ws":
            space = True
            pos = match.end()
            continue
        if kind == "c":
            stop = _comment_end(value, pos)
            closed = value[stop - 1:stop] == b")"
            out.append(("c", value[pos + 1:stop - 1 if closed else stop], space))
            space = True
            pos = stop
            continue
        text = match.group()
        out.append((text.decode("latin-1") if kind == "s" else kind, text, space))
        space = False
        pos = match.end()
    return out


def _unquote(raw: bytes) -> bytes:
    inner = raw[1:-1] if len(raw) >= 2 and raw[-1:] == b'"' else raw[1:]
    if b"\\" in inner:
        inner = _UNESCAPE.sub(rb"\1", inner)
    return inner


def _phrase(tokens) -> bytes | None:
    """A display name: words with quoted strings unquoted, comments dropped,
    runs of white space as one space (RFC 5322 3.2.5, obs-phrase's dots)."""
    words = []
    for kind, text, space in tokens:
        if kind == "c":
            continue
        word = _unquote(text) if kind == "q" else text
        if words and space:
            words.append(b" ")
        words.append(word)
    return b"".join(words).strip() or None


def _joined(tokens) -> bytes:
    # A local part or domain: its pieces without the (obsolete) CFWS around dots.
    return b"".join(text for kind, text, _ in tokens if kind != "c")


def _is_local_part(words) -> bool:
    # "root", "john.doe", "a . b": one word, or words joined by dots.
    for index, (kind, _, space) in enumerate(words):
        if kind not in ("a", "q", "."):
            return False
        if index and space and kind != "." and words[index - 1][0] != ".":
            return False
    return True


_WORD_KINDS = frozenset(("a", "q", ".", "c", "d", "\\", "]", ")"))


class _AddressParser:
    """Best-effort RFC 5322 address-list parser producing IMAP address
    structures (name adl mailbox host) as bytes / None, with group markers
    (RFC 3501 7.4.2: NIL host starts a group named by the mailbox field,
    all-NIL ends it)."""

    def __init__(self, value: bytes):
        self.toks = _tokens(value)
        self.pos = 0
        self.out = []

    def parse(self):
        toks = self.toks
        while self.pos < len(toks):
            if toks[self.pos][0] in (",", ";", ">", ":"):
                self.pos += 1       # separators, and stray specials
                continue
            self._address(in_group=False)
        return self.out

    def _address(self, in_group: bool):
        toks = self.toks
        start = self.pos
        pos = start
        while pos < len(toks) and toks[pos][0] in _WORD_KINDS:
            pos += 1
        phrase = toks[start:pos]
        kind = toks[pos][0] if pos < len(toks) else None
        if kind == ":" and not in_group:
            self.pos = pos + 1
            self._group(_phrase(phrase) or b"")
        elif kind == "<":
            self.pos = pos + 1
            self._angle(_phrase(phrase))
        elif kind == "@":
            self.pos = pos + 1
            domain = self._domain()
            local = [token for token in phrase if token[0] != "c"]
            comments = [text for kind_, text, _ in toks[start:self.pos] if kind_ == "c"]
            name = comments[-1].strip() if comments else None
            self.out.append((name or None, None, _joined(local), domain))
        else:
            self.pos = pos
            words = [token for token in phrase if token[0] != "c"]
            if not words:
                if pos == start:
                    self.pos += 1   # a stray special: skip it
                return
            if _is_local_part(words):
                # A mailbox without a domain ("root"): the host is the empty
                # string, since NIL would mean group syntax.
                self.out.append((None, None, _joined(words), b""))
            else:
                self.out.append((_phrase(words), None, b"", b""))

    def _domain(self) -> bytes:
        # domain = dot-atom / domain-literal, CFWS allowed around the dots
        # (obs-domain): a word after white space that follows no dot starts
        # the next address ("a@b c@d", missing its comma).
        toks = self.toks
        start = self.pos
        want_word = True
        while self.pos < len(toks):
            kind = toks[self.pos][0]
            if kind == "c" or kind == ".":
                want_word = want_word or kind == "."
            elif kind in ("a", "d") and want_word:
                want_word = False
            else:
                break
            self.pos += 1
        return _joined(toks[start:self.pos])

    def _angle(self, name):
        toks = self.toks
        route = None
        if self.pos < len(toks) and toks[self.pos][0] == "@":
            # obs-route (RFC 5322 4.4): "@a,@b:" before the addr-spec.
            start = self.pos
            while self.pos < len(toks) and toks[self.pos][0] not in (":", ">"):
                self.pos += 1
            if self.pos < len(toks) and toks[self.pos][0] == ":":
                route = b"".join(text for kind, text, _ in toks[start:self.pos] if kind != "c") or None
                self.pos += 1
            else:
                self.pos = start
        start = self.pos
        while self.pos < len(toks) and toks[self.pos][0] in ("a", "q", ".", "c"):
            self.pos += 1
        local = _joined(toks[start:self.pos])
        domain = b""
        if self.pos < len(toks) and toks[self.pos][0] == "@":
            self.pos += 1
            domain = self._domain()
        # Whatever is left up to ">" is garbage.
        while self.pos < len(toks) and toks[self.pos][0] not in (">", ",", ";"):
            self.pos += 1
        if self.pos < len(toks) and toks[self.pos][0] == ">":
            self.pos += 1
        if name is None and not local and not domain:
            return      # "<>" (a null path) names nobody
        self.out.append((name, route, local, domain))

    def _group(self, name: bytes):
        toks = self.toks
        self.out.append((None, None, name, None))
        while self.pos < len(toks):
            kind = toks[self.pos][0]
            if kind == ";":
                self.pos += 1
                break
            if kind in (",", ":", ">"):
                self.pos += 1
                continue
            before = self.pos
            self._address(in_group=True)
            if self.pos == before:
                self.pos += 1
        self.out.append((None, None, None, None))


# The common shapes, `a@b`, `Name <a@b>` and `"Name" <a@b>` separated by
# commas, without comments, groups, routes or escapes, take a regex instead
# of the tokenizer; the result is the same (tests check both on the same
# inputs), and envelope() costs half as much.
_ATEXT = rb"[^\x00-\x20\x7f\"(),.:;<>@\[\]\\]+"
_DOT_ATOM = _ATEXT + rb"(?:\." + _ATEXT + rb")*"
_SIMPLE_ADDRESS = re.compile(
    rb"[ \t]*(?:(?:\"([^\"\\\r\n]*)\"|(" + _ATEXT + rb"(?:[ \t]+" + _ATEXT + rb")*))?[ \t]*"
    rb"<(" + _DOT_ATOM + rb")@(" + _DOT_ATOM + rb")>"
    rb"|(" + _DOT_ATOM + rb")@(" + _DOT_ATOM + rb"))[ \t]*(?:,|\Z)")


def _simple_addresses(value: bytes):
    found = []
    pos = 0
    end = len(value)
    match_at = _SIMPLE_ADDRESS.match
    while pos < end:
        match = match_at(value, pos)
        if match is None:
            return None
        quoted, words, local, domain, bare_local, bare_domain = match.groups()
        if local is None:
            found.append((None, None, bare_local, bare_domain))
        else:
            if quoted is not None:
                name = quoted.strip(b" \t") or None
            elif words is not None:
                name = re.sub(rb"[ \t]+", b" ", words)
            else:
                name = None
            found.append((name, None, local, domain))
        pos = match.end()
        if pos == end and value[pos - 1:pos] == b",":
            return None     # a trailing comma: let the full parser decide
    return found


def _address_list(value: bytes | None):
    """The IMAP address list for a header value (one Raw item holding the
    encoded addresses), or None when absent, empty or unparsable."""
    if value is None:
        return None
    try:
        found = _simple_addresses(value)
        if found is None:
            found = _AddressParser(value).parse()
    except Exception:   # never fail an ENVELOPE over one odd address
        return None
    if not found:
        return None
    # env-from = "(" 1*address ")": the grammar puts no space between
    # addresses, so they go as one Raw item (RFC 3501 section 9).
    return [Raw(b"".join(encode(address) for address in found))]


def envelope(part: Part):
    """The ENVELOPE of the message that `part` begins (the root, or the
    `message` of a MESSAGE/RFC822 part; given the MESSAGE/RFC822 part itself,
    its encapsulated message is used), as imapdata values:
    [date, subject, from, sender, reply-to, to, cc, bcc, in-reply-to, message-id].

    Strings are the fields' raw octets, unfolded (RFC 3501 section 7.4.2:
    the server does not decode RFC 2047); absent fields are NIL, present but
    empty ones "" (address lists: NIL). Sender and Reply-To default to From."""
    fields = part.envelope_fields
    if fields is None and part.message is not None:
        fields = part.message.envelope_fields
    if fields is None:
        return [None] * 10
    date, subject, from_, sender, reply_to, to, cc, bcc, in_reply_to, message_id = fields
    from_list = _address_list(from_)
    sender_list = _address_list(sender) or from_list
    reply_list = _address_list(reply_to) or from_list
    return [date, subject, from_list, sender_list, reply_list,
            _address_list(to), _address_list(cc), _address_list(bcc),
            in_reply_to, message_id]


# --------------------------------------------------------------------------
# BODY and BODYSTRUCTURE (RFC 3501 section 7.4.2, the body grammar in section 9).

_EMPTY_BODY = ["TEXT", "PLAIN", ["CHARSET", "us-ascii"], None, None, "7BIT", 0, 0]


def _param_list(params, text: bool):
    if text and not any(name == "CHARSET" for name, _ in params):
        params = params + (_DEFAULT_CHARSET,)
    if not params:
        return None
    flat = []
    for name, value in params:
        flat.append(name)
        flat.append(value)
    return flat


def _extension(part: Part):
    disposition = None
    if part.disposition is not None:
        disposition = [part.disposition, _param_list(part.disposition_params, False)]
    language = list(part.language) if part.language else None
    return [disposition, language, part.location]


def body(part: Part, extended: bool):
    """BODY (extended=False) or BODYSTRUCTURE (extended=True) of `part`, as
    imapdata values ready for encode().

    A multipart's bodies are one Raw item: the grammar (body-type-mpart =
    1*body SP media-subtype) puts no space between them. Text parts get
    ("CHARSET" "us-ascii") when they name no charset (RFC 2046 4.1.2); a
    multipart whose boundary never occurs gets one empty TEXT/PLAIN body, as
    the grammar needs one (Dovecot does the same); body-fld-md5 is the
    Content-MD5 field when present, else NIL."""
    if part.type == "MULTIPART":
        if part.children:
            inner = Raw(b"".join(encode(body(child, extended)) for child in part.children))
        else:
            empty = _EMPTY_BODY + [None, None, None, None] if extended else _EMPTY_BODY
            inner = Raw(encode(empty))
        value = [inner, part.subtype]
        if extended:
            value.append(_param_list(part.params, False))
            value.extend(_extension(part))
        return value
    text = part.type == "TEXT"
    value = [part.type, part.subtype, _param_list(part.params, text),
             part.id, part.description, part.encoding, part.size]
    if text:
        value.append(part.lines)
    elif part.message is not None:
        value.append(envelope(part.message))
        value.append(body(part.message, extended))
        value.append(part.lines)
    if extended:
        value.append(part.md5)
        value.extend(_extension(part))
    return value


# --------------------------------------------------------------------------
# Sections (RFC 3501 section 6.4.5).

def find(part: Part, numbers) -> Part | None:
    """The part that section number `numbers` (e.g. (2, 1)) names in the
    message `part`, or None. A non-multipart entity has only part 1, itself
    (so, as in Dovecot, "1.1" of a leaf is the leaf, "1.1.1" nothing);
    numbers after a MESSAGE/RFC822 part continue inside its encapsulated
    message (as after the root)."""
    current = part
    last = len(numbers) - 1
    for index, number in enumerate(numbers):
        if number < 1:
            return None
        if current.type == "MULTIPART":
            if number > len(current.children):
                return None
            current = current.children[number - 1]
        elif number != 1:
            return None
        elif index < last and current.message is None:
            return None
        if index < last and current.message is not None:
            current = current.message
    return current


_HEADER_SECTIONS = frozenset(("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"))


def section_range(part: Part, numbers, which: str = ""):
    """(start, end) wire offsets of BODY[<numbers>.<which>] in the message
    `part`, or None when there is no such section (the server then sends an
    empty string). `which` is "", "HEADER" (HEADER.FIELDS[.NOT] give the same
    range, to be filtered with header_fields()), "TEXT" or "MIME".

    * numbers=(): "" the whole message, HEADER its header (blank line
      included), TEXT its body; MIME needs a part number (None).
    * with numbers: "" the part's body (for MESSAGE/RFC822 the whole
      encapsulated message), MIME the part's own MIME header, HEADER/TEXT
      the encapsulated message's header/body of a MESSAGE/RFC822 part
      (None for other parts)."""
    which = which.upper()
    if not numbers:
        if which == "":
            return part.header_start, part.body_end
        if which in _HEADER_SECTIONS:
            return part.header_start, part.header_end
        if which == "TEXT":
            return part.header_end, part.body_end
        return None
    target = find(part, numbers)
    if target is None:
        return None
    if which == "":
        return target.header_end, target.body_end
    if which == "MIME":
        return target.header_start, target.header_end
    inner = target.message
    if inner is None or not (which in _HEADER_SECTIONS or which == "TEXT"):
        return None
    if which == "TEXT":
        return inner.header_end, inner.body_end
    return inner.header_start, inner.header_end


def _split_fields(header: bytes):
    """[(lower-case name or None, octets)] for each field of a header block
    (continuation lines kept with their field); lines that are no field get
    the name None."""
    out = []
    lines = header.split(b"\n")
    last = len(lines) - 1
    for index, line in enumerate(lines):
        if index < last:
            line += b"\n"
        elif not line:
            break
        if line[:1] in (b" ", b"\t") and out:
            name, octets = out[-1]
            out[-1] = (name, octets + line)
            continue
        match = _FIELD_START.match(line)
        if match is not None and line[:1] not in (b" ", b"\t"):
            out.append((line[:match.end() - 1].rstrip(b" \t").lower(), line))
        else:
            out.append((None, line))
    return out


def header_fields(header: bytes, names, exclude: bool = False) -> bytes:
    """BODY[HEADER.FIELDS (names)] (or .NOT when `exclude`) from a header
    block (the octets of a HEADER or MIME section): the fields whose names
    match, case-insensitively, with their folded lines whole and in message
    order, then the blank line. RFC 3501 6.4.5: the blank line is always
    included, except for a message that has none (then neither is it here)."""
    wanted = {(name.encode("ascii", "replace") if isinstance(name, str) else bytes(name)).lower()
              for name in names}
    out = []
    has_blank = False
    for name, octets in _split_fields(header):
        if name is None:
            if octets in (b"\r\n", b"\n"):
                has_blank = True
            continue
        if (name in wanted) != exclude:
            if octets[-1:] != b"\n":
                octets += b"\r\n"
            out.append(octets)
    if has_blank:
        out.append(b"\r\n")
    return b"".join(out)


def read_range(source, start: int, end: int, chunk: int = CHUNK):
    """Yield the octets [start, end) of a message. `source` is bytes, or a
    reader positioned at the message's start (e.g. a fresh
    Maildir.open_wire()), which is read forward and not closed."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if start < end:
            yield bytes(source[start:end])
        return
    pos = 0
    while pos < end:
        data = source.read(chunk)
        if not data:
            return
        stop = pos + len(data)
        if stop > start:
            yield bytes(data[max(start - pos, 0):min(end, stop) - pos])
        pos = stop


def header_bytes(source, part: Part, cap: int = HEADER_CAP) -> bytes:
    """The header block of `part` (at most `cap` octets) from `source` (see read_range)."""
    end = min(part.header_end, part.header_start + cap)
    return b"".join(read_range(source, part.header_start, end))


@functools.lru_cache(maxsize=256)
def _field_pattern(name: bytes):
    return re.compile(rb"^" + re.escape(name) + rb"[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)", re.I | re.M)


def header_values(header: bytes, name) -> list[bytes]:
    """Raw, unfolded values of every `name` field (case-insensitive) in a header block."""
    if isinstance(name, str):
        name = name.encode("ascii", "replace")
    return [_unfold(match.group(1)) for match in _field_pattern(name.lower()).finditer(header)]


def decoded_header_values(header: bytes, name) -> list[str]:
    """header_values() decoded by decode_header_value(), for SEARCH HEADER / FROM / SUBJECT..."""
    return [decode_header_value(value) for value in header_values(header, name)]


# --------------------------------------------------------------------------
# Decoding for SEARCH.

# Labels that name a charset Python's codecs lack, or a stricter one than
# mail writers mean (the WHATWG Encoding Standard maps them the same way).
_CHARSET_ALIASES = {
    "us-ascii": "utf-8", "ascii": "utf-8", "ansi_x3.4-1968": "utf-8",
    "iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252",
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949", "euc-kr": "cp949",
    "iso-8859-8-i": "iso-8859-8", "x-sjis": "shift_jis", "shift-jis": "shift_jis",
    "windows-874": "cp874", "tis-620": "cp874", "x-mac-roman": "mac-roman",
    "unicode-1-1-utf-7": "utf-7", "utf8": "utf-8",
}


@functools.lru_cache(maxsize=64)
def _codec(charset: str) -> str | None:
    label = charset.strip().lower()
    label = _CHARSET_ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except (LookupError, ValueError):
        return None


def _decode_text(raw: bytes) -> str:
    # Unencoded header text: UTF-8 (RFC 6532) when it is, else the common
    # legacy guess, windows-1252 (which cannot fail on any octet... almost).
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", "replace")


_ENCODED_WORD = re.compile(rb"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
_SPACE_ONLY = re.compile(rb"[ \t\r\n]*\Z")


_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/]*={0,2}\Z")


def _decode_word(encoding: bytes, text: bytes):
    try:
        if encoding in (b"b", b"B"):
            if not _BASE64_TEXT.match(text):
                return None
            return binascii.a2b_base64(text + b"=" * (-len(text) % 4))
        return binascii.a2b_qp(text, header=True)
    except (binascii.Error, ValueError):
        return None


def decode_header_value(raw: bytes) -> str:
    """A header value as text for SEARCH: unfolded, RFC 2047 encoded words
    (B and Q, any charset Python has) decoded, white space between adjacent
    encoded words dropped (RFC 2047 section 6.2), consecutive words in one
    charset decoded together (a character may be split across them).
    Malformed or unknown-charset words stay as they are; other octets are
    read as UTF-8, else windows-1252."""
    if b"\n" in raw:
        raw = re.sub(rb"\r?\n(?=[ \t])", b"", raw).replace(b"\r\n", b" ").replace(b"\n", b" ")
    if b"=?" not in raw:
        return _decode_text(raw)
    out = []
    pending = []        # [codec, octets] of consecutive decoded words
    pos = 0
    previous_was_word = False

    def flush():
        if pending:
            out.append(pending[1].decode(pending[0], "replace"))
            pending.clear()

    for match in _ENCODED_WORD.finditer(raw):
        gap = raw[pos:match.start()]
        codec = _codec(_str(match.group(1)))
        decoded = _decode_word(match.group(2), match.group(3)) if codec else None
        if decoded is None:
            flush()
            out.append(_decode_text(raw[pos:match.end()]))
            previous_was_word = False
            pos = match.end()
            continue
        if not (previous_was_word and _SPACE_ONLY.match(gap)):
            flush()
            if gap:
                out.append(_decode_text(gap))
        if pending and pending[0] != codec:
            flush()
        if pending:
            pending[1] += decoded
        else:
            pending.extend((codec, decoded))
        previous_was_word = True
        pos = match.end()
    flush()
    if pos < len(raw):
        out.append(_decode_text(raw[pos:]))
    return "".join(out)


class _Base64:
    """Base64 for SEARCH, lenient and the same however the input is cut:
    everything but the alphabet (line ends, padding, junk) is dropped
    first, then whole groups of four decode."""

    __slots__ = ("carry",)

    def __init__(self):
        self.carry = b""

    def feed(self, data: bytes, final: bool = False) -> bytes:
        data = self.carry + data.translate(None, _NOT_BASE64)
        cut = len(data) - len(data) % 4
        self.carry = b"" if final else data[cut:]
        tail = data[cut:] if final and len(data) % 4 > 1 else b""
        data = data[:cut] + (tail + b"=" * (-len(tail) % 4) if tail else b"")
        if not data:
            return b""
        try:
            return binascii.a2b_base64(data)
        except (binascii.Error, ValueError):
            return b""


_NOT_BASE64 = bytes(c for c in range(256)
                    if not (chr(c).isascii() and (chr(c).isalnum() or chr(c) in "+/")))


class _QuotedPrintable:
    __slots__ = ("carry",)

    def __init__(self):
        self.carry = b""

    def feed(self, data: bytes, final: bool = False) -> bytes:
        data = self.carry + data
        self.carry = b""
        if not final:
            # "=XX" and the soft line break "=CRLF" may straddle chunks.
            cut = data.rfind(b"=", max(len(data) - 2, 0))
            if cut >= 0:
                self.carry = data[cut:]
                data = data[:cut]
        return binascii.a2b_qp(data)


class _Identity:
    __slots__ = ()

    def feed(self, data: bytes, final: bool = False) -> bytes:
        return data


class _Matcher:
    """Which needles occur in text fed piece by piece; a needle may straddle pieces."""

    __slots__ = ("pending", "found", "keep", "tail")

    def __init__(self, needles):
        self.pending = [needle for needle in needles if needle]
        self.found = {needle for needle in needles if not needle}
        self.keep = max((len(needle) for needle in self.pending), default=1) - 1
        self.tail = ""

    def reset(self):
        self.tail = ""

    def feed(self, text: str) -> bool:
        """True once every needle has been found."""
        if not text:
            return not self.pending
        window = self.tail + text.casefold()
        hits = [needle for needle in self.pending if needle in window]
        if hits:
            self.found.update(hits)
            self.pending = [needle for needle in self.pending if needle not in self.found]
        self.tail = window[-self.keep:] if self.keep else ""
        return not self.pending


def _segments(part: Part, out: list, with_header: bool):
    """(start, end, kind, encoding, charset) of what SEARCH reads, in message order."""
    if with_header:
        out.append((part.header_start, part.header_end, "header", None, None))
    if part.type == "MULTIPART":
        for child in part.children:
            _segments(child, out, False)
    elif part.message is not None:
        # The encapsulated message's header is body text of this message.
        _segments(part.message, out, True)
    elif part.type == "TEXT":
        out.append((part.header_end, part.body_end, "text", part.encoding, part.charset))


def _header_text(header: bytes) -> str:
    return "\n".join(decode_header_value(octets) for _, octets in _split_fields(header))


def search_text(source, part: Part, needles, include_header: bool = False) -> set:
    """The needles (str, already casefolded) that occur, case-insensitively,
    in the message `part` read from `source` (bytes, or a fresh reader at
    the message's start, read forward once in chunks; see read_range).

    SEARCH BODY (include_header=False) reads the text/* parts, with their
    Content-Transfer-Encoding (base64, quoted-printable) and charset decoded
    (Python's codecs; unknown charsets as UTF-8 with replacement), and the
    headers of encapsulated messages, RFC 2047-decoded. Other parts
    (images, archives, ...) are not read: matching their encoded octets
    would only find noise. SEARCH TEXT (include_header=True) reads the
    message's header too. A needle never matches across two parts.
    Memory is bounded by CHUNK and the longest needle."""
    needles = list(needles)
    matcher = _Matcher(needles)
    if not matcher.pending:
        return set(matcher.found)
    segments = []
    _segments(part, segments, include_header)
    forward = _Forward(source)
    for start, end, kind, encoding, charset in segments:
        if start >= end:
            continue
        matcher.reset()
        if kind == "header":
            collected = []
            size = 0
            for piece in forward.pieces(start, end):
                if size < HEADER_CAP:
                    collected.append(piece[:HEADER_CAP - size])
                    size += len(piece)
            done = matcher.feed(_header_text(b"".join(collected)))
        else:
            decoder = _DECODERS.get(encoding, _Identity)()
            text = codecs.getincrementaldecoder(_codec(charset) or "utf-8")(errors="replace")
            done = False
            pos = start
            for piece in forward.pieces(start, end):
                pos += len(piece)
                final = pos >= end
                if matcher.feed(text.decode(decoder.feed(piece, final), final)):
                    done = True
                    break
        if done:
            break
    return set(matcher.found)


_DECODERS = {"BASE64": _Base64, "QUOTED-PRINTABLE": _QuotedPrintable}


class _Forward:
    """Forward-only access to a message's octets: bytes, or a reader at its start."""

    __slots__ = ("reader", "data", "data_start")

    def __init__(self, source):
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.reader = None
            self.data = source
        else:
            self.reader = source
            self.data = b""
        self.data_start = 0

    def pieces(self, start: int, end: int):
        """The octets [start, end) in pieces of at most CHUNK; `start` must
        not lie before the end of the previous call's range."""
        if self.reader is None:
            end = min(end, len(self.data))
            for pos in range(start, end, CHUNK):
                yield bytes(self.data[pos:min(pos + CHUNK, end)])
            return
        pos = start
        while pos < end:
            offset = pos - self.data_start
            if offset >= len(self.data):
                self.data_start += len(self.data)
                self.data = self.reader.read(CHUNK)
                if not self.data:
                    return
                continue
            piece = self.data[offset:offset + (end - pos)]
            yield piece
            pos += len(piece)
