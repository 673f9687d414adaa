"""IMAP response data as plain Python values, and the one encoder for them.

Every module that builds IMAP response data (ENVELOPE, BODYSTRUCTURE,
FLAGS, LIST, STATUS...) builds *values*, and `encode()` turns them into
octets, so quoting, literals and NIL are decided in this one place
(RFC 3501 section 4):

    None                 NIL
    int                  a number
    Atom("\\Seen")       sent exactly as given (flags, keywords, atoms)
    str                  a string: UTF-8, then as bytes
    bytes                a quoted string when every octet allows it,
                         else a literal {n}CRLF<octets>
    list / tuple         a parenthesized list, items separated by one space
    Raw(b"...")          octets already encoded (a cached BODYSTRUCTURE)
"""

from __future__ import annotations

__all__ = ["Atom", "Literal", "Raw", "StreamedLiteral", "encode", "quoted_ok"]


class Atom(str):
    """Text sent as it is: a flag, a keyword, an atom such as BODY[]."""

    __slots__ = ()


class Raw(bytes):
    """Octets that are already valid IMAP data (e.g. a cached encoding)."""

    __slots__ = ()


class Literal(bytes):
    """A literal the client sent ({n} or {n+}), read whole. In a parsed
    command it stands wherever a string may (RFC 3501 section 4.3)."""

    __slots__ = ()


class StreamedLiteral:
    """A literal that went to storage as it arrived instead of into memory
    (APPEND's message): in a parsed command only its size is known, and
    `token` is whatever the receiving side needs to find the data again."""

    __slots__ = ("size", "token")

    def __init__(self, size: int, token: object = None):
        self.size = size
        self.token = token

    def __repr__(self) -> str:
        return f"StreamedLiteral(size={self.size})"


# A quoted string holds TEXT-CHARs only: 7-bit, no CR, LF or NUL
# (RFC 3501 section 9, "quoted"). Longer strings go as literals: some
# clients cope badly with very long quoted strings, and a literal needs no
# escaping.
_QUOTED_MAX = 1000
_NOT_QUOTABLE = frozenset(b"\r\n\0") | frozenset(range(0x80, 0x100))


def quoted_ok(data: bytes) -> bool:
    """True if `data` may be sent as a quoted string."""
    if len(data) > _QUOTED_MAX:
        return False
    if data.isascii():
        return b"\r" not in data and b"\n" not in data and b"\0" not in data
    return False


def _string(data: bytes, out: list) -> None:
    if quoted_ok(data):
        if b"\\" in data or b'"' in data:
            data = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        out.append(b'"' + data + b'"')
    else:
        out.append(b"{%d}\r\n" % len(data) + data)


def _encode(value, out: list) -> None:
    if value is None:
        out.append(b"NIL")
    elif isinstance(value, Raw):
        out.append(value)
    elif isinstance(value, Atom):
        out.append(value.encode("utf-8"))
    elif isinstance(value, bytes):
        _string(value, out)
    elif isinstance(value, str):
        _string(value.encode("utf-8", "surrogateescape"), out)
    elif isinstance(value, bool):
        raise TypeError("a bool is not IMAP data")
    elif isinstance(value, int):
        out.append(b"%d" % value)
    elif isinstance(value, (list, tuple)):
        out.append(b"(")
        for index, item in enumerate(value):
            if index:
                out.append(b" ")
            _encode(item, out)
        out.append(b")")
    else:
        raise TypeError(f"{type(value).__name__} is not IMAP data")


def encode(value) -> bytes:
    """The IMAP encoding of `value` (see the module docstring)."""
    out: list = []
    _encode(value, out)
    return b"".join(out)
