"""IMAP4rev1 session engine (RFC 3501, with IDLE, UIDPLUS, MOVE, NAMESPACE,
ID, ENABLE, LITERAL+, SASL-IR, UNSELECT, CHILDREN, SPECIAL-USE): bytes in,
events out; no sockets.

The runtime feeds the client's bytes to `receive()` and performs the events
returned, in order (engine.py has the shape every engine shares):

    Send(data), Close()        the kit's two events
    Watch(mailbox)             the session now shows `mailbox` (None: none):
                               call changed() when it changes on disk, so
                               that an idling client hears of it at once
    Stream(chunks)             write the chunks in order, with flow control:
                               bytes, or a range of a message file (the
                               store's open_range(): read(n) until it gives
                               b"", then close()); then call
                               streamed(); until then nothing more is fed
    CommitAppend(handle)       make an APPENDed message durable (off the
                               event loop, like SMTP's deliveries); then call
                               appended(result) with the store's result or
                               the StoreError; nothing more is fed meanwhile

Storage is behind a `store` object the glue gives (imapd.py; tests use a
fake): the engine calls it directly for mailbox state, flags, listings and
message data, and decides everything the protocol says: sequence numbers,
when an EXPUNGE may be told (RFC 3501 7.4.1), which responses a command
gets and in what form. What the store must offer is the Store and Mailbox
protocol below.

Any user name and password log in; no STARTTLS (BareMail serves loopback
or a trusted LAN only).
"""

from __future__ import annotations

import bisect
import enum
import time
from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol

from . import imapsearch
from . import imapsyntax as syntax
from . import mime
from .engine import Close, Output, SaslExchange, Send
from .imapdata import Atom, Raw, encode
from .imapframe import CommandParts, Framer, Line, LiteralAnnounced, LiteralChunk, TooLong, tag_of

__all__ = ["CAPABILITIES", "CommitAppend", "FolderInfo", "IMAPSession", "MailboxStatus",
           "StoreError", "Stream", "Watch"]


# --- events ---------------------------------------------------------------------


@dataclass(frozen=True)
class Watch:
    mailbox: str | None


@dataclass
class Stream:
    chunks: Iterator


@dataclass(frozen=True)
class CommitAppend:
    handle: object


# --- what the store offers --------------------------------------------------------


class StoreError(Exception):
    """A storage operation that cannot be done: `code` is the RFC 5530
    response code to show (TRYCREATE, NONEXISTENT, ALREADYEXISTS, CANNOT,
    LIMIT, TOOBIG, OVERQUOTA, SERVERBUG...), `text` one sentence."""

    def __init__(self, code: str, text: str):
        super().__init__(text)
        self.code = code
        self.text = text


@dataclass(frozen=True)
class FolderInfo:
    name: str                 # "INBOX", "Trash", "Archives.2024" (delimiter ".")
    selectable: bool = True   # False: only a parent of other folders
    children: bool = False
    special_use: str | None = None   # "\\Trash", "\\Sent", ...


@dataclass(frozen=True)
class MailboxStatus:
    messages: int
    recent: int
    uidnext: int
    uidvalidity: int
    unseen: int


class Entry(Protocol):
    uid: int
    flags: frozenset    # IMAP flag names: "\\Seen", "$Forwarded", ...
    size: int           # RFC822.SIZE


@dataclass(frozen=True)
class Changes:
    """What Mailbox.refresh() found since the last look: UIDs gone, entries
    new (any order), entries whose flags may differ."""

    expunged: tuple = ()
    added: tuple = ()
    changed: tuple = ()


class Mailbox(Protocol):
    name: str
    readonly: bool
    uidvalidity: int

    recent: set                                        # UIDs \\Recent for this session
    def view(self) -> tuple: ...                       # (UIDs, entries) in UID order; copied
    first_unseen: int | None                           # index in view() of the first not \\Seen
    def refresh(self) -> Changes | None: ...           # what changed since the last look
    @property
    def uidnext(self) -> int: ...
    def keywords(self) -> Iterable[str]: ...           # keywords the folder knows
    def set_flags(self, entries: list, flags: frozenset, action: str) -> dict: ...
    # action "add" | "remove" | "replace"; -> {uid: the entry with its new flags}
    def expunge(self, entries: list) -> list: ...      # uids removed
    def copy(self, entries: list, target: str, move: bool) -> tuple: ...  # (uidvalidity, [src], [dst])
    def internal_date(self, entry) -> float: ...
    def structure(self, entry) -> mime.Part: ...       # StoreError if gone
    def header(self, entry) -> bytes: ...              # the header block
    def header_fields(self, entry, names: tuple, exclude: bool) -> bytes: ...  # mime.header_fields of it
    def read(self, entry, start: int, end: int) -> bytes: ...     # small ranges
    def open_range(self, entry, start: int, end: int): ...      # read(n) -> bytes, close()
    def search_view(self, entry, seq: int): ...         # an imapsearch.SearchMessage
    def close(self) -> None: ...


class Store(Protocol):
    def folders(self) -> list: ...                     # FolderInfo, INBOX first
    def exists(self, name: str) -> bool: ...
    def create(self, name: str) -> None: ...
    def delete(self, name: str) -> None: ...
    def rename(self, old: str, new: str) -> None: ...
    def subscriptions(self) -> set: ...
    def subscribe(self, name: str, on: bool) -> None: ...
    def status(self, name: str) -> MailboxStatus: ...
    def open(self, name: str, readonly: bool) -> Mailbox: ...
    def begin_append(self, name: str, flags: tuple, date: float | None, size: int): ...
    # -> a handle with write(data) and abort(); CommitAppend(handle) makes it
    # durable, and appended() gets (uidvalidity, uid) or the StoreError.


# --- capabilities, states, replies -----------------------------------------------

CAPABILITIES = ("IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE", "UIDPLUS",
                "MOVE", "UNSELECT", "CHILDREN", "SPECIAL-USE", "AUTH=PLAIN", "AUTH=LOGIN")
_CAPABILITY_TEXT = " ".join(CAPABILITIES)
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_PERMANENT = "(" + " ".join(SYSTEM_FLAGS) + " \\*)"
DELIMITER = "."

# Data read into memory for a FETCH response; larger sections are streamed
# from the file (Mailbox.open_range), so memory does not depend on message size.
_INLINE = 64 * 1024


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


_ANY = frozenset({"CAPABILITY", "NOOP", "LOGOUT", "ID"})
_AUTHENTICATED = _ANY | {"SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE",
                         "LIST", "LSUB", "STATUS", "APPEND", "NAMESPACE", "ENABLE", "IDLE"}
# The commands each state accepts (RFC 3501 6); a known command outside its
# state's row gets BAD and the session goes on.
ALLOWED = {
    State.NOT_AUTHENTICATED: _ANY | {"STARTTLS", "AUTHENTICATE", "LOGIN"},
    State.AUTHENTICATED: _AUTHENTICATED,
    State.SELECTED: _AUTHENTICATED | {"CHECK", "CLOSE", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY",
                                      "MOVE", "UNSELECT"},
    State.LOGOUT: frozenset(),
}
# RFC 3501 7.4.1: no EXPUNGE response while FETCH, STORE or SEARCH (by
# sequence number) are answered; new messages and flag changes are fine.
_NO_EXPUNGE = frozenset({"FETCH", "STORE", "SEARCH"})

# Special-use attributes (RFC 6154) for folders of these names, which
# Thunderbird, K-9 and Apple Mail create or look for.
SPECIAL_USE = {"trash": "\\Trash", "deleted messages": "\\Trash", "sent": "\\Sent",
               "sent messages": "\\Sent", "sent items": "\\Sent", "drafts": "\\Drafts",
               "junk": "\\Junk", "spam": "\\Junk", "archive": "\\Archive", "archives": "\\Archive"}

_ID = b'* ID ("name" "BareMail" "vendor" "BareMail")\r\n'


def special_use(name: str) -> str | None:
    """The special-use attribute of a top-level folder with this name."""
    return SPECIAL_USE.get(name.lower()) if DELIMITER not in name else None


_SIMPLE = {"UID": b"UID %d", "FLAGS": b"FLAGS %s", "RFC822.SIZE": b"RFC822.SIZE %d"}
# FLAGS text by flag set: a mailbox has few distinct sets.
_FLAG_TEXT: dict = {}


def _flag_text(flags) -> bytes:
    """_flags(), remembered by flag set."""
    text = _FLAG_TEXT.get(flags)
    if text is None:
        if len(_FLAG_TEXT) > 4096:
            _FLAG_TEXT.clear()
        text = _FLAG_TEXT[flags] = _flags(flags)
    return text


def _flags(flags) -> bytes:
    return b"(" + " ".join(sorted(flags)).encode("utf-8", "surrogateescape") + b")"


def _quoted_mailbox(name: str) -> bytes:
    return encode(syntax.encode_mailbox(name))


# --- the session -------------------------------------------------------------------


class IMAPSession:
    """The server side of one IMAP connection (see the module docstring).

    Every method returns a list of events; after Close every method returns
    []. While an Output or CommitAppend is outstanding, input is held and
    answered once output_done() / appended() is called, so responses
    always come out in command order.
    """

    def __init__(self, hostname: str, store: Store, max_message_size: int = 104857600,
                 clock=time.time):
        self.hostname = hostname
        self._store = store
        self.max_message_size = max_message_size
        self._clock = clock
        self._framer = Framer()
        self._out = Output()
        self.state = State.NOT_AUTHENTICATED
        self.user: str | None = None
        self._closed = False
        self._waiting = False        # a Stream or CommitAppend is outstanding
        self._after_stream = None    # (tag, verb) of the FETCH a Stream answers
        self._fetch_missed = False   # a message of this FETCH could not be read
        self._sasl: tuple | None = None   # (tag, SaslExchange) while AUTHENTICATE runs
        self._idle_tag: str | None = None
        self._appending = None       # (prefix, handle) while APPEND's message streams in
        self._append_failed: StoreError | None = None
        self._committing = None      # (prefix, handle) while CommitAppend is outstanding
        self._mailbox: Mailbox | None = None
        self._uids: list = []        # sequence number - 1 -> UID
        self._entries: list = []     # sequence number - 1 -> the entry as last told
        self._ghosts: set = set()    # UIDs expunged elsewhere, not yet told (7.4.1)

    # --- the face every engine shows ----------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def at_rest(self) -> bool:
        """No command half-received or being answered (an IDLE counts as at
        rest: a stopping server may end it)."""
        return not (self._waiting or self._sasl or self._appending or self._framer.in_command)

    @staticmethod
    def refusal(hostname: str) -> bytes:
        return b"* BYE [UNAVAILABLE] Too many sessions, try again later\r\n"

    def intake(self, held) -> int:
        # A command can ask for a great deal of output (FETCH 1:*), which
        # Stream events hand over with flow control; the input itself is
        # taken in pieces of a few lines.
        return min(len(held), 16384)

    def start(self) -> list:
        self._out.send(b"* OK [CAPABILITY " + _CAPABILITY_TEXT.encode() + b"] BareMail IMAP ready\r\n")
        return self._out.take()

    def receive(self, data: bytes) -> list:
        if self._closed:
            return []
        self._framer.feed(data)
        if not self._waiting:
            self._run()
        return self._out.take()

    def timeout(self) -> list:
        """RFC 3501 5.4: the autologout."""
        return self._bye(b"* BYE Autologout; idle for too long\r\n")

    def shutdown(self) -> list:
        return self._bye(b"* BYE [UNAVAILABLE] Server shutting down, try again in a moment\r\n")

    def changed(self) -> list:
        """The shown mailbox changed on disk. An idling client hears of it
        now; any other at its next command (RFC 3501 5.2)."""
        if self._idle_tag is not None and not self._closed:
            self._report_changes(expunges=True)
        return self._out.take()

    def streamed(self) -> list:
        """After a Stream event was performed: the tagged reply, then the
        input held meanwhile."""
        if self._closed:
            return []
        self._waiting = False
        tag, verb = self._after_stream
        self._after_stream = None
        self._fetch_done(tag, verb)
        self._run()
        return self._out.take()

    def appended(self, result) -> list:
        """After CommitAppend: `result` is (uidvalidity, uid) or a StoreError."""
        if self._closed:
            return []
        self._waiting = False
        prefix, _ = self._committing
        self._committing = None
        if isinstance(result, StoreError):
            self._no(prefix.tag, result)
        else:
            validity, uid = result
            if self._mailbox is not None and self._mailbox.name == prefix.mailbox:
                self._report_changes(expunges=False)
            self._tagged(prefix.tag, f"OK [APPENDUID {validity} {uid}] APPEND completed")
        self._run()
        return self._out.take()

    # --- replies -------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        self._out.send(data)

    def _tagged(self, tag: str, text: str) -> None:
        self._out.send(f"{tag} {text}\r\n".encode("utf-8", "surrogateescape"))

    def _bad(self, tag: str | None, text: str) -> None:
        self._out.send(f"{tag or '*'} BAD {text}\r\n".encode("utf-8", "surrogateescape"))

    def _no(self, tag: str, error: StoreError) -> None:
        self._tagged(tag, f"NO [{error.code}] {error.text}")

    def _bye(self, line: bytes) -> list:
        if self._closed:
            return []
        self._abort_append()
        if not self._waiting:   # not in the middle of a Stream
            self._send(line)
        self._close()
        return self._out.take()

    def _close(self) -> None:
        self._out.event(Close())
        self._closed = True
        self.state = State.LOGOUT
        if self._mailbox is not None:
            self._mailbox.close()
            self._mailbox = None

    # --- input -----------------------------------------------------------------------

    def _run(self) -> None:
        framer = self._framer
        while not (self._closed or self._waiting):
            framer.lines = self._sasl is not None or self._idle_tag is not None
            item = framer.next()
            if item is None:
                return
            kind = type(item)
            if kind is CommandParts:
                self._command(item.parts)
            elif kind is Line:
                if self._sasl is not None:
                    self._sasl_line(item.data)
                else:
                    self._idle_line(item.data)
            elif kind is LiteralAnnounced:
                self._literal(item)
            elif kind is LiteralChunk:
                self._append_chunk(item.data)
            elif kind is TooLong:
                self._bad(item.tag, "Command line too long")

    def _literal(self, item: LiteralAnnounced) -> None:
        framer = self._framer
        try:
            prefix = syntax.append_prefix(item.parts) if self.state in (State.AUTHENTICATED,
                                                                        State.SELECTED) else None
        except syntax.IMAPSyntaxError as exc:
            framer.refuse()
            self._bad(exc.tag, exc.text)
            return
        if prefix is not None:
            self._begin_append(prefix, item, framer)
            return
        if not framer.fits(item.size):
            framer.refuse()
            self._bad(tag_of(item.parts), "[TOOBIG] Literal too large")
            return
        framer.accept()
        if item.synchronizing:
            self._send(b"+ OK\r\n")

    def _begin_append(self, prefix, item: LiteralAnnounced, framer: Framer) -> None:
        if item.size > self.max_message_size:
            framer.refuse()
            self._tagged(prefix.tag, f"NO [TOOBIG] Message larger than {self.max_message_size} octets")
            return
        try:
            handle = self._store.begin_append(prefix.mailbox, prefix.flags, prefix.date, item.size)
        except StoreError as exc:
            framer.refuse()
            self._no(prefix.tag, exc)
            return
        self._appending = (prefix, handle)
        self._append_failed = None
        framer.stream()
        if item.synchronizing:
            self._send(b"+ OK\r\n")

    def _append_chunk(self, data: bytes) -> None:
        if self._appending is None or self._append_failed is not None:
            return
        try:
            self._appending[1].write(data)
        except StoreError as exc:
            self._append_failed = exc
            self._appending[1].abort()

    def _abort_append(self) -> None:
        if self._appending is not None:
            self._appending[1].abort()
            self._appending = None

    # --- commands ----------------------------------------------------------------

    def _command(self, parts: list) -> None:
        try:
            command = syntax.parse_command(parts)
        except syntax.BadCharset as exc:
            self._abort_append()
            self._tagged(exc.tag, f"NO [BADCHARSET (US-ASCII UTF-8)] {exc.text}")
            return
        except syntax.UnknownCommand as exc:
            self._abort_append()
            self._bad(exc.tag, "Unknown command")
            return
        except syntax.IMAPSyntaxError as exc:
            self._abort_append()
            self._bad(exc.tag, exc.text)
            return
        name = command.name
        if name not in ALLOWED[self.state]:
            self._abort_append()
            self._bad(command.tag, f"{name} is not valid in the {self.state.value} state")
            return
        if self.state is State.SELECTED and name not in ("APPEND", "IDLE", "LOGOUT"):
            uid_command = getattr(command, "uid", False)
            self._report_changes(expunges=uid_command or name not in _NO_EXPUNGE)
            if self._closed:
                return
        _HANDLERS[name](self, command)

    # any state

    def _capability(self, command) -> None:
        self._send(b"* CAPABILITY " + _CAPABILITY_TEXT.encode() + b"\r\n")
        self._tagged(command.tag, "OK CAPABILITY completed")

    def _noop(self, command) -> None:
        self._tagged(command.tag, "OK NOOP completed")

    def _logout(self, command) -> None:
        self._send(b"* BYE BareMail IMAP signing off\r\n")
        self._tagged(command.tag, "OK LOGOUT completed")
        self._close()

    def _id(self, command) -> None:
        self._send(_ID)
        self._tagged(command.tag, "OK ID completed")

    # not authenticated

    def _starttls(self, command) -> None:
        # Never advertised: BareMail serves loopback or a trusted LAN.
        self._tagged(command.tag, "NO [CANNOT] STARTTLS is not available: BareMail serves this machine only")

    def _login(self, command) -> None:
        self._logged_in(command.tag, command.userid)

    def _authenticate(self, command) -> None:
        try:
            exchange = SaslExchange(command.mechanism.encode("ascii", "replace"))
        except ValueError:
            self._tagged(command.tag, "NO [CANNOT] Unsupported mechanism; use PLAIN or LOGIN")
            return
        self._sasl = (command.tag, exchange)
        self._sasl_result(exchange.begin(command.initial_response))   # SASL-IR (RFC 4959)

    def _sasl_line(self, line: bytes) -> None:
        self._sasl_result(self._sasl[1].respond(line))

    def _sasl_result(self, result) -> None:
        tag = self._sasl[0]
        if result.challenge is not None:
            self._send(b"+ " + result.encoded + b"\r\n")
            return
        self._sasl = None
        if result.failure == "cancelled":
            self._bad(tag, "AUTHENTICATE cancelled")   # RFC 3501 6.2.2
        elif result.failure is not None:
            self._bad(tag, "Invalid SASL response")
        else:
            self._logged_in(tag, result.user)

    def _logged_in(self, tag: str, user: bytes) -> None:
        # Any credentials will do: the service trusts whoever can reach it.
        self.user = user.decode("utf-8", "replace")
        self.state = State.AUTHENTICATED
        self._tagged(tag, f"OK [CAPABILITY {_CAPABILITY_TEXT}] Logged in")

    # authenticated

    def _namespace(self, command) -> None:
        self._send(b'* NAMESPACE (("" ".")) NIL NIL\r\n')
        self._tagged(command.tag, "OK NAMESPACE completed")

    def _enable(self, command) -> None:
        # Nothing to enable (no CONDSTORE, no UTF8=ACCEPT): RFC 5161 3.
        self._send(b"* ENABLED\r\n")
        self._tagged(command.tag, "OK ENABLE completed")

    def _select(self, command) -> None:
        self._open(command, readonly=False)

    def _examine(self, command) -> None:
        self._open(command, readonly=True)

    def _open(self, command, readonly: bool) -> None:
        self._deselect()
        try:
            mailbox = self._store.open(command.mailbox, readonly)
        except StoreError as exc:
            self._no(command.tag, exc)
            return
        self._mailbox = mailbox
        self.state = State.SELECTED
        uids, entries = mailbox.view()
        # Copies (C-speed): this session's numbering changes only when it
        # tells the client, whatever the folder does meanwhile.
        self._uids, self._entries = list(uids), list(entries)
        self._ghosts = set()
        keywords = " ".join(sorted(mailbox.keywords()))
        flags = " ".join(SYSTEM_FLAGS) + (" " + keywords if keywords else "")
        out = [f"* FLAGS ({flags})\r\n",
               f"* OK [PERMANENTFLAGS {'()' if readonly else _PERMANENT}] Flags permitted\r\n",
               f"* {len(entries)} EXISTS\r\n",
               f"* {len(mailbox.recent)} RECENT\r\n"]
        if mailbox.first_unseen is not None:
            out.append(f"* OK [UNSEEN {mailbox.first_unseen + 1}] First unseen\r\n")
        out.append(f"* OK [UIDVALIDITY {mailbox.uidvalidity}] UIDs valid\r\n")
        out.append(f"* OK [UIDNEXT {mailbox.uidnext}] Predicted next UID\r\n")
        self._send("".join(out).encode("utf-8", "surrogateescape"))
        self._tagged(command.tag, f"OK [{'READ-ONLY' if readonly else 'READ-WRITE'}] "
                                  f"{'EXAMINE' if readonly else 'SELECT'} completed")
        self._out.event(Watch(mailbox.name))

    def _deselect(self) -> None:
        if self._mailbox is not None:
            self._mailbox.close()
            self._mailbox = None
            self._out.event(Watch(None))
        self._uids, self._entries, self._ghosts = [], [], set()
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED

    def _create(self, command) -> None:
        name = command.mailbox.rstrip(DELIMITER)   # a trailing delimiter announces children
        if not name or name.upper() == "INBOX":
            self._tagged(command.tag, "NO [ALREADYEXISTS] INBOX always exists")
            return
        self._storage(command.tag, "CREATE", self._store.create, name)

    def _delete(self, command) -> None:
        if command.mailbox == "INBOX":
            self._tagged(command.tag, "NO [CANNOT] INBOX cannot be deleted")
            return
        if self._mailbox is not None and self._mailbox.name == command.mailbox:
            self._deselect()
        self._storage(command.tag, "DELETE", self._store.delete, command.mailbox)

    def _rename(self, command) -> None:
        if command.new_name.upper() == "INBOX":
            self._tagged(command.tag, "NO [ALREADYEXISTS] INBOX always exists")
            return
        # Renaming INBOX moves its messages out and leaves it, empty
        # (RFC 3501 6.3.5): a session that has it selected stays in it and
        # hears the EXPUNGEs as for any other removal.
        if (command.mailbox != "INBOX" and self._mailbox is not None
                and self._mailbox.name == command.mailbox):
            self._deselect()
        self._storage(command.tag, "RENAME", self._store.rename, command.mailbox, command.new_name)

    def _subscribe(self, command) -> None:
        self._storage(command.tag, "SUBSCRIBE", self._store.subscribe, command.mailbox, True)

    def _unsubscribe(self, command) -> None:
        self._storage(command.tag, "UNSUBSCRIBE", self._store.subscribe, command.mailbox, False)

    def _storage(self, tag: str, name: str, operation, *args) -> None:
        try:
            operation(*args)
        except StoreError as exc:
            self._no(tag, exc)
            return
        self._tagged(tag, f"OK {name} completed")

    def _list(self, command) -> None:
        reference = command.reference
        if command.patterns == ("",) and not command.selection:
            # RFC 3501 6.3.8: the hierarchy delimiter and the root.
            self._send(b'* LIST (\\Noselect) "." ""\r\n')
            self._tagged(command.tag, "OK LIST completed")
            return
        matchers = [syntax.mailbox_matcher(reference, pattern, DELIMITER) for pattern in command.patterns]
        subscribed = self._store.subscriptions()
        selection, returns = command.selection, command.return_options
        lines = []
        for folder in self._store.folders():
            if not any(match(folder.name) for match in matchers):
                continue
            is_subscribed = folder.name in subscribed
            if "SUBSCRIBED" in selection and not is_subscribed:
                continue
            if "SPECIAL-USE" in selection and folder.special_use is None:
                continue
            attributes = []
            if not folder.selectable:
                attributes.append("\\Noselect")
            attributes.append("\\HasChildren" if folder.children else "\\HasNoChildren")
            if folder.special_use is not None:
                # Always, not only for RETURN (SPECIAL-USE): RFC 6154 2
                # allows it, and clients that do not ask still use it.
                attributes.append(folder.special_use)
            if is_subscribed and ("SUBSCRIBED" in returns):
                attributes.append("\\Subscribed")
            lines.append(b"* LIST (" + " ".join(attributes).encode() + b') "." '
                         + _quoted_mailbox(folder.name) + b"\r\n")
        self._send(b"".join(lines))
        self._tagged(command.tag, "OK LIST completed")

    def _lsub(self, command) -> None:
        match = syntax.mailbox_matcher(command.reference, command.pattern, DELIMITER)
        folders = {folder.name: folder for folder in self._store.folders()}
        lines = []
        for name in sorted(self._store.subscriptions(), key=lambda n: (n != "INBOX", n)):
            if not match(name):
                continue
            folder = folders.get(name)
            attributes = "" if folder is not None and folder.selectable else "\\Noselect"
            lines.append(b"* LSUB (" + attributes.encode() + b') "." ' + _quoted_mailbox(name) + b"\r\n")
        self._send(b"".join(lines))
        self._tagged(command.tag, "OK LSUB completed")

    def _status(self, command) -> None:
        if self._mailbox is not None and self._mailbox.name == command.mailbox:
            self._report_changes(expunges=True)
        try:
            status = self._store.status(command.mailbox)
        except StoreError as exc:
            self._no(command.tag, exc)
            return
        values = {"MESSAGES": status.messages, "RECENT": status.recent, "UIDNEXT": status.uidnext,
                  "UIDVALIDITY": status.uidvalidity, "UNSEEN": status.unseen}
        items = " ".join(f"{item} {values[item]}" for item in command.items)
        self._send(b"* STATUS " + _quoted_mailbox(command.mailbox) + f" ({items})\r\n".encode())
        self._tagged(command.tag, "OK STATUS completed")

    def _append(self, command) -> None:
        prefix, handle = self._appending or (None, None)
        self._appending = None
        if handle is None:
            # The message came as a small literal, not streamed: store it
            # through the same path.
            message = command.message
            if len(message) > self.max_message_size:
                self._tagged(command.tag, f"NO [TOOBIG] Message larger than {self.max_message_size} octets")
                return
            try:
                handle = self._store.begin_append(command.mailbox, command.flags, command.date, len(message))
                handle.write(bytes(message))
            except StoreError as exc:
                self._no(command.tag, exc)
                return
            prefix = syntax.AppendPrefix(command.tag, command.mailbox, command.flags, command.date)
        if self._append_failed is not None:
            failed, self._append_failed = self._append_failed, None
            self._no(command.tag, failed)
            return
        self._committing = (prefix, handle)
        self._waiting = True
        self._out.event(CommitAppend(handle))

    def _idle(self, command) -> None:
        self._idle_tag = command.tag
        self._send(b"+ idling\r\n")
        if self.state is State.SELECTED:
            self._report_changes(expunges=True)

    def _idle_line(self, line: bytes) -> None:
        tag, self._idle_tag = self._idle_tag, None
        if line.strip().upper() == b"DONE":
            self._tagged(tag, "OK IDLE terminated")
        else:
            self._bad(tag, "Expected DONE to end IDLE")

    # selected

    def _check(self, command) -> None:
        self._tagged(command.tag, "OK CHECK completed")

    def _close_command(self, command) -> None:
        if not self._mailbox.readonly:
            try:
                self._mailbox.expunge(self._deleted(self._live_entries()))
            except StoreError:
                pass   # RFC 3501 6.4.2: no untagged EXPUNGE either way
        self._deselect()
        self._tagged(command.tag, "OK CLOSE completed")

    def _unselect(self, command) -> None:
        self._deselect()
        self._tagged(command.tag, "OK UNSELECT completed")

    def _expunge(self, command) -> None:
        if self._mailbox.readonly:
            self._tagged(command.tag, "NO [READ-ONLY] The mailbox is open read-only")
            return
        entries = self._deleted(self._live_entries())
        if command.uid_set is not None:
            wanted = command.uid_set.resolve(self._uid_max())
            entries = [entry for entry in entries if entry.uid in wanted]
        try:
            removed = self._mailbox.expunge(entries)
        except StoreError as exc:
            self._no(command.tag, exc)
            return
        self._tell_expunged(removed)
        self._tagged(command.tag, "OK EXPUNGE completed")

    def _search(self, command) -> None:
        count = len(self._uids)
        mailbox = self._mailbox
        ghosts = self._ghosts
        messages = (mailbox.search_view(entry, seq) for seq, entry in enumerate(self._entries, 1)
                    if entry.uid not in ghosts)
        try:
            found = imapsearch.search(command.key, messages, count=count, uid_max=self._uid_max())
        except StoreError as exc:
            self._no(command.tag, exc)
            return
        if command.uid:
            found = [self._uids[seq - 1] for seq in found]
        self._send(b"* SEARCH" + b"".join(b" %d" % n for n in found) + b"\r\n")
        self._tagged(command.tag, f"OK {'UID ' if command.uid else ''}SEARCH completed")

    def _targets(self, command, writes: bool):
        """(sequence numbers, entries) a STORE, COPY or MOVE names, or None
        after answering why it cannot be done."""
        if writes and self._mailbox.readonly:
            self._tagged(command.tag, "NO [READ-ONLY] The mailbox is open read-only")
            return None
        seqs = self._resolve(command.sequence_set, command.uid)
        if seqs is None:
            self._bad(command.tag, "Invalid message sequence number")
            return None
        entries, ghosts = self._entries, self._ghosts
        return seqs, [entries[seq - 1] for seq in seqs if entries[seq - 1].uid not in ghosts]

    def _store_flags(self, command) -> None:
        verb = "UID STORE" if command.uid else "STORE"
        targets = self._targets(command, writes=True)
        if targets is None:
            return
        seqs, entries = targets
        try:
            changed = self._mailbox.set_flags(entries, frozenset(command.flags), command.action)
        except StoreError as exc:
            self._no(command.tag, exc)
            return
        self._update(changed)
        if not command.silent:
            uid_item = b"UID %d " if command.uid else b""
            lines = []
            for seq in seqs:
                uid = self._uids[seq - 1]
                entry = changed.get(uid)
                if entry is not None:
                    item = uid_item % uid if uid_item else b""
                    lines.append(b"* %d FETCH (%sFLAGS %s)\r\n" % (seq, item, _flags(entry.flags)))
            self._send(b"".join(lines))
        self._tagged(command.tag, f"OK {verb} completed")

    def _copy(self, command) -> None:
        self._transfer(command, move=False)

    def _move(self, command) -> None:
        self._transfer(command, move=True)

    def _transfer(self, command, move: bool) -> None:
        verb = ("UID " if command.uid else "") + ("MOVE" if move else "COPY")
        targets = self._targets(command, writes=move)
        if targets is None:
            return
        entries = targets[1]
        if not entries:
            self._tagged(command.tag, f"OK {verb} completed (nothing to {verb.split()[-1].lower()})")
            return
        try:
            validity, sources, targets = self._mailbox.copy(entries, command.mailbox, move)
        except StoreError as exc:
            self._no(command.tag, exc)
            return
        copyuid = (f"[COPYUID {validity} {syntax.format_sequence(sources)} "
                   f"{syntax.format_sequence(targets)}]") if sources else ""
        if not move:
            self._tagged(command.tag, f"OK {copyuid + ' ' if copyuid else ''}{verb} completed")
            return
        # RFC 6851 4.3: COPYUID in an untagged OK before the EXPUNGEs.
        if copyuid:
            self._send(f"* OK {copyuid} Moved\r\n".encode())
        self._tell_expunged(sources)
        if self._mailbox.name == command.mailbox:
            self._report_changes(expunges=True)
        self._tagged(command.tag, f"OK {verb} completed")

    def _fetch(self, command) -> None:
        seqs = self._resolve(command.sequence_set, command.uid)
        if seqs is None:
            self._bad(command.tag, "Invalid message sequence number")
            return
        items = list(command.items)
        if command.uid and "UID" not in items:
            items.insert(0, "UID")   # RFC 3501 6.4.8
        verb = "UID FETCH" if command.uid else "FETCH"
        seen_now = self._mark_seen(seqs) if command.sets_seen and not self._mailbox.readonly else set()
        self._fetch_missed = False
        chunks = self._fetch_chunks(seqs, items, seen_now)
        # Small answers go out at once; the rest through an Output event,
        # with flow control, a message at a time.
        first = []
        size = 0
        for chunk in chunks:
            if type(chunk) is not bytes:
                first.append(chunk)
                break
            first.append(chunk)
            size += len(chunk)
            if size >= _INLINE:
                break
        else:
            self._send(b"".join(first))
            self._fetch_done(command.tag, verb)
            return
        self._after_stream = (command.tag, verb)
        self._waiting = True
        self._out.event(Stream(_chain(first, chunks)))

    def _fetch_done(self, tag: str, verb: str) -> None:
        if self._fetch_missed:
            # RFC 5530: a message expunged elsewhere (not yet told) whose
            # data could no longer be read; the others were sent.
            self._tagged(tag, "NO [EXPUNGEISSUED] Some of the requested messages no longer exist")
        else:
            self._tagged(tag, f"OK {verb} completed")

    def _mark_seen(self, seqs) -> set:
        """BODY[...] without PEEK sets \\Seen (RFC 3501 6.4.5); the UIDs it
        was set on now."""
        entries = [self._entries[seq - 1] for seq in seqs
                   if self._uids[seq - 1] not in self._ghosts and "\\Seen" not in self._entries[seq - 1].flags]
        if not entries:
            return set()
        try:
            changed = self._mailbox.set_flags(entries, frozenset({"\\Seen"}), "add")
        except StoreError:
            return set()
        self._update(changed)
        return set(changed)

    def _fetch_chunks(self, seqs, items, seen_now: set) -> Iterator:
        mailbox = self._mailbox
        uids = self._uids
        known = self._entries
        ghosts = self._ghosts
        simple = all(type(item) is str and item in ("UID", "FLAGS", "RFC822.SIZE") for item in items)
        if simple:
            # The flag resync every client does (UID FETCH 1:* (FLAGS)):
            # no message is opened, one format per message, and the lines
            # go out a few hundred at a time.
            template = b"* %d FETCH (" + b" ".join(_SIMPLE[item] for item in items) + b")\r\n"
            fields = tuple(items)
            flag_text = _FLAG_TEXT
            lines = []
            for seq in seqs:
                entry = known[seq - 1]
                values = [seq]
                for item in fields:
                    if item == "FLAGS":
                        flags = entry.flags
                        text = flag_text.get(flags)
                        values.append(text if text is not None else _flag_text(flags))
                    elif item == "UID":
                        values.append(entry.uid)
                    else:
                        values.append(entry.size)
                lines.append(template % tuple(values))
                if len(lines) >= 512:
                    yield b"".join(lines)
                    lines = []
            if lines:
                yield b"".join(lines)
            return
        for seq in seqs:
            entry = known[seq - 1]
            uid = entry.uid
            try:
                yield from self._fetch_one(mailbox, seq, entry, items, uid in seen_now)
            except StoreError:
                ghosts.add(uid)   # gone from disk: told as EXPUNGE when allowed
                self._fetch_missed = True

    def _fetch_one(self, mailbox, seq: int, entry, items, seen_now: bool) -> Iterator:
        """One message's FETCH response: bytes, and open ranges of message
        sections too big to read into memory (streamed in between)."""
        out: list = [b"* %d FETCH (" % seq]
        add = out.append
        structure = None
        flags_sent = False
        first = True
        for item in items:
            if first:
                first = False
            else:
                add(b" ")
            if type(item) is str:
                if item == "UID":
                    add(b"UID %d" % entry.uid)
                elif item == "FLAGS":
                    add(b"FLAGS " + _flag_text(entry.flags))
                    flags_sent = True
                elif item == "RFC822.SIZE":
                    add(b"RFC822.SIZE %d" % entry.size)
                elif item == "INTERNALDATE":
                    # Always plain ASCII: quoted without the general encoder.
                    date = syntax.format_date_time(mailbox.internal_date(entry))
                    add(b'INTERNALDATE "' + date.encode("ascii") + b'"')
                elif item == "ENVELOPE":
                    structure = structure or mailbox.structure(entry)
                    add(b"ENVELOPE " + encode(mime.envelope(structure)))
                elif item == "BODYSTRUCTURE":
                    structure = structure or mailbox.structure(entry)
                    add(b"BODYSTRUCTURE " + encode(mime.body(structure, True)))
                elif item == "BODY":
                    structure = structure or mailbox.structure(entry)
                    add(b"BODY " + encode(mime.body(structure, False)))
                elif item == "RFC822":
                    self._section(mailbox, entry, b"RFC822", (0, entry.size), None, add)
                elif item == "RFC822.HEADER":
                    structure = structure or mailbox.structure(entry)
                    self._section(mailbox, entry, b"RFC822.HEADER",
                                  (structure.header_start, structure.header_end), None, add)
                elif item == "RFC822.TEXT":
                    structure = structure or mailbox.structure(entry)
                    self._section(mailbox, entry, b"RFC822.TEXT",
                                  (structure.body_start, structure.body_end), None, add)
                continue
            # BODY[section]<partial>
            section = item
            if section.kind in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
                exclude = section.kind == "HEADER.FIELDS.NOT"
                if section.part:
                    structure = structure or mailbox.structure(entry)
                    found = mime.section_range(structure, section.part, "HEADER")
                    header = mailbox.read(entry, *found) if found else b""
                    data = mime.header_fields(header, section.fields, exclude)
                else:
                    data = mailbox.header_fields(entry, section.fields, exclude)
                self._literal_item(section.echo, data, section.partial, add)
                continue
            if not section.part and section.kind == "":
                span = (0, entry.size)
            else:
                structure = structure or mailbox.structure(entry)
                span = mime.section_range(structure, section.part, section.kind)
            if span is None:
                self._literal_item(section.echo, b"", section.partial, add)
                continue
            self._section(mailbox, entry, bytes(section.echo), span, section.partial, add)
        if seen_now and not flags_sent:
            add(b" FLAGS " + _flag_text(entry.flags))   # RFC 3501 6.4.5: \Seen was set
        add(b")\r\n")
        # Bytes joined between the streamed ranges (usually: no range, one piece).
        run: list = []
        for piece in out:
            if type(piece) is bytes:
                run.append(piece)
                continue
            if run:
                yield b"".join(run)
                run = []
            yield piece
        if run:
            yield b"".join(run)

    @staticmethod
    def _literal_item(echo, data: bytes, partial, add) -> None:
        if partial is not None:
            origin, length = partial
            data = data[origin:origin + length]
        add(bytes(echo) + b" {%d}\r\n" % len(data) + data)

    @staticmethod
    def _section(mailbox, entry, echo: bytes, span, partial, add) -> None:
        start, end = span
        if partial is not None:
            origin, length = partial
            start = min(start + origin, end)
            end = min(start + length, end)
        size = end - start
        add(echo + b" {%d}\r\n" % size)
        add(mailbox.read(entry, start, end) if size <= _INLINE else mailbox.open_range(entry, start, end))

    # --- sequence numbers and changes ---------------------------------------------

    def _uid_max(self) -> int:
        return self._uids[-1] if self._uids else 0

    def _resolve(self, sequence_set, uid: bool) -> list | None:
        """Sequence numbers, ascending, that a set names; None if it names
        a sequence number beyond the mailbox (BAD, RFC 3501 9)."""
        uids = self._uids
        if uid:
            numbers = sequence_set.resolve(self._uid_max())
            return [index + 1 for index in numbers.indices_in(uids)]
        count = len(uids)
        if sequence_set.largest_number > count:
            return None
        return list(sequence_set.resolve(count))

    def _live_entries(self) -> list:
        ghosts = self._ghosts
        return [entry for entry in self._entries if entry.uid not in ghosts]

    def _index(self, uid: int) -> int | None:
        """The sequence number - 1 of a UID in this session's numbering."""
        uids = self._uids
        at = bisect.bisect_left(uids, uid)
        return at if at < len(uids) and uids[at] == uid else None

    def _update(self, changed: dict) -> None:
        """Entries the store changed for this session (uid -> entry)."""
        for uid, entry in changed.items():
            at = self._index(uid)
            if at is not None:
                self._entries[at] = entry

    @staticmethod
    def _deleted(entries: list) -> list:
        return [entry for entry in entries if "\\Deleted" in entry.flags]

    def _tell_expunged(self, removed_uids) -> None:
        """Drop these UIDs from the session's numbering, telling the client."""
        removed = set(removed_uids)
        if not removed:
            return
        uids = self._uids
        lines = []
        for index in range(len(uids) - 1, -1, -1):   # descending: no number shifts under another
            uid = uids[index]
            if uid in removed:
                lines.append(b"* %d EXPUNGE\r\n" % (index + 1))
        self._send(b"".join(lines))
        keep = [index for index, uid in enumerate(uids) if uid not in removed]
        self._uids = [uids[index] for index in keep]
        self._entries = [self._entries[index] for index in keep]
        self._ghosts -= removed

    def _report_changes(self, expunges: bool) -> None:
        """Bring the session's view up to date with the mailbox on disk and
        tell the client: new messages (EXISTS, RECENT), flag changes by
        others (FETCH FLAGS) and, where allowed, expunges."""
        mailbox = self._mailbox
        if mailbox is None:
            return
        try:
            current = mailbox.refresh()
        except StoreError as exc:
            if exc.code == "UIDVALIDITY":
                # RFC 3501 2.3.1.1: UIDs may not change under a session.
                self._send(b"* BYE [UNAVAILABLE] The mailbox's UIDs were reset; reconnect to resync\r\n")
                self._close()
            return
        if current is not None:
            lines = []
            entries = self._entries
            for entry in current.changed:
                at = self._index(entry.uid)
                if at is None:
                    continue
                if entry.flags != entries[at].flags:
                    lines.append(b"* %d FETCH (FLAGS %s)\r\n" % (at + 1, _flags(entry.flags)))
                entries[at] = entry
            self._send(b"".join(lines))
            self._ghosts.update(uid for uid in current.expunged if self._index(uid) is not None)
        if expunges and self._ghosts:
            self._tell_expunged(list(self._ghosts))
        if current is not None and current.added:
            last = self._uids[-1] if self._uids else 0
            new = sorted((entry for entry in current.added if entry.uid > last), key=_uid_of)
            if new:
                self._uids += [entry.uid for entry in new]
                self._entries += new
                recent = len(mailbox.recent)
                self._send(b"* %d EXISTS\r\n* %d RECENT\r\n" % (len(self._uids), recent))


def _uid_of(entry) -> int:
    return entry.uid


def _chain(first: list, rest: Iterator) -> Iterator:
    yield from first
    yield from rest


_HANDLERS = {
    "CAPABILITY": IMAPSession._capability, "NOOP": IMAPSession._noop, "LOGOUT": IMAPSession._logout,
    "ID": IMAPSession._id, "STARTTLS": IMAPSession._starttls, "LOGIN": IMAPSession._login,
    "AUTHENTICATE": IMAPSession._authenticate, "NAMESPACE": IMAPSession._namespace,
    "ENABLE": IMAPSession._enable, "SELECT": IMAPSession._select, "EXAMINE": IMAPSession._examine,
    "CREATE": IMAPSession._create, "DELETE": IMAPSession._delete, "RENAME": IMAPSession._rename,
    "SUBSCRIBE": IMAPSession._subscribe, "UNSUBSCRIBE": IMAPSession._unsubscribe,
    "LIST": IMAPSession._list, "LSUB": IMAPSession._lsub, "STATUS": IMAPSession._status,
    "APPEND": IMAPSession._append, "IDLE": IMAPSession._idle, "CHECK": IMAPSession._check,
    "CLOSE": IMAPSession._close_command, "UNSELECT": IMAPSession._unselect,
    "EXPUNGE": IMAPSession._expunge, "SEARCH": IMAPSession._search, "FETCH": IMAPSession._fetch,
    "STORE": IMAPSession._store_flags, "COPY": IMAPSession._copy, "MOVE": IMAPSession._move,
}
