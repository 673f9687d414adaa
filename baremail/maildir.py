"""The one Maildir the services share: durable delivery, listing, reading,
flags, UIDs, folders, removal.

On disk a message has LF line ends (the Maildir convention). Its *wire form*
is what SMTP received and POP3 sends: every LF not preceded by CR becomes
CRLF. Names carry both sizes (Maildir++): ``,S=`` octets on disk and ``,W=``
octets of the wire form, so listing a mailbox never opens a file.

Name layout: ``<sec>.M<usec>P<pid>Q<n>R<hex>.<host>,S=<n>,W=<n>`` in new/,
the same plus ``:2,<flags>`` in cur/. The part before ``:`` is the message's
*key*: unique, and unchanged by the move from new/ to cur/ and by flag
changes. Within one process keys are made in strictly ascending
(sec, usec) order, which is delivery order.

Flags are the letters after ``:2,``, in ASCII order: D F R S T are \\Draft
\\Flagged \\Answered \\Seen \\Deleted; a..z are keywords, named in the
folder's ``dovecot-keywords`` file (Dovecot's convention: one
``<index> <name>`` line per keyword, index 0..25 standing for a..z); any
other letter is kept as found. A message's INTERNALDATE is its file's
mtime (Dovecot's convention for Maildir).

Folders are Maildir++: ``.Name/`` beside cur/ new/ tmp/, with an empty
``maildirfolder`` file inside; ``.`` separates levels (IMAP
``Archives.2024`` is ``.Archives.2024/``); names are UTF-8 on disk; INBOX
is the Maildir itself. IMAP UIDs live in each folder's
``baremail-uidlist`` (see uidlist.py), assigned by whoever asks for them:
delivery never touches it.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import socket
import threading
import time
from bisect import bisect_left
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from typing import Iterable, Iterator

TMP_MAX_AGE = 36 * 3600  # the Maildir convention's grace period for tmp/
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_NAME = re.compile(r"(\d+)(?:\.M(\d+))?")
_SIZE = re.compile(r",W=(\d+)")
_DISK_SIZE = re.compile(r",S=(\d+)")
_BARE_LF = re.compile(rb"(?<!\r)\n")

SYSTEM_FLAGS = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S", "\\Deleted": "T"}
_LETTER_OF_FLAG = {name.lower(): letter for name, letter in SYSTEM_FLAGS.items()}
_FLAG_OF_LETTER = {letter: name for name, letter in SYSTEM_FLAGS.items()}
_KEYWORD_LETTERS = "abcdefghijklmnopqrstuvwxyz"
KEYWORDS_NAME = "dovecot-keywords"
_KEYWORDS_TEMP = "dovecot-keywords.tmp"
FOLDER_MARK = "maildirfolder"
# IMAP keywords are atoms (RFC 3501 section 9): no SP, CTL or atom-specials.
_ATOM_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - frozenset('(){%*"\\]')
_SEEN = frozenset("S")
_NOTHING: frozenset = frozenset()
_UNKNOWN = object()
_GONE = object()
_first = itemgetter(0)
_last_stamp = 0   # microseconds of the last name made in this process

# A directory's mtime moves in coarse steps (ext4: one jiffy), so "mtime
# unchanged" proves nothing changed only if the listing was made well after
# the directory's last change; 2 s also covers coarser file systems.
_SETTLE_NS = 2_000_000_000
# A listing is taken as complete (nothing renamed under it unseen) if the
# directory's mtime was the same before and after it and this much older.
_STILL_NS = 20_000_000
_RESCANS = 5   # listings to find a message others keep renaming, before it counts as gone


class MaildirError(Exception):
    """A Maildir operation failed; the text is one sentence for a log line.
    `disk_full`: out of space or quota; `limit`: a fixed limit was reached
    (26 keywords in a folder), which IMAP answers with NO [LIMIT]."""

    def __init__(self, message: str, disk_full: bool = False, limit: bool = False):
        super().__init__(message)
        self.disk_full = disk_full
        self.limit = limit


@dataclass(unsafe_hash=True, slots=True)
class Message:
    """One message as a listing saw it. `size` is its wire size (CRLF);
    `flags` the letters of its name's ``:2,`` info, as in the name ("" in
    new/); `uid` its IMAP UID in a uid_listing(), 0 elsewhere.
    Immutable by convention: not a frozen dataclass because a snapshot makes
    one per message at every login, and a frozen __init__ costs three times
    as much."""

    key: str
    size: int
    path: str
    flags: str = ""
    uid: int = 0


def _host_part(name: str) -> str:
    # The Maildir convention escapes '/' and ':'; ',' is escaped too because
    # Maildir++ size fields are comma-separated.
    return name.replace("/", r"\057").replace(":", r"\072").replace(",", r"\054")


def _error(action: str, exc: OSError) -> MaildirError:
    where = f" {exc.filename}" if exc.filename else ""
    return MaildirError(f"cannot {action}{where}: {exc.strerror or exc}",
                        disk_full=exc.errno in _DISK_FULL)


def _is_keyword(name: str) -> bool:
    return bool(name) and all(char in _ATOM_CHARS for char in name)


_WRITE_AT = 1 << 18   # octets of message held in memory before they go to tmp/


class Delivery:
    """A message being written to tmp/. Feed it wire-form bytes, then commit or abort.

    Converting CRLF to LF happens here, so the caller hands over exactly
    what the client sent (dot-unstuffed). Up to 256 KiB are held in memory;
    the file in tmp/ is created and written when more arrive, or at commit:
    a small message touches the file system only in whoever commits it (an
    event loop that created files would wait whenever the file system waits
    for a journal commit, which the fsyncs of other messages start).

    Committing is Maildir.commit_all()'s job, for one delivery or a batch:
    flush(), start_writeback(), finish(), then Maildir.publish()."""

    # Defaults for what an SMTP delivery never sets: set per instance only
    # when given, as SMTP makes one Delivery per message in its event loop.
    _letters: str | None = None   # None: into new/; else into cur/ with these flags
    _mtime: float | None = None   # INTERNALDATE to give the file, if not now
    key: str | None = None        # once finished
    name: str | None = None       # its file name in `directory`, once finished

    def __init__(self, maildir: "Maildir", base: str, letters: str | None = None,
                 mtime: float | None = None):
        self._maildir = maildir
        self._base = base
        self._tmp = os.path.join(maildir.path, "tmp", base)
        if letters is not None:
            self._letters = letters
        if mtime is not None:
            self._mtime = mtime
        self._fd = -1             # the file in tmp/, once created
        self._held = bytearray()  # disk form not yet written
        self._held_cr = False   # a wire chunk ended in CR: it may be half of a CRLF
        self._last_cr = False   # the last byte written to disk was CR
        self.disk_size = 0
        self.wire_size = 0
        self._done = False

    @property
    def maildir(self) -> "Maildir":
        return self._maildir

    @property
    def directory(self) -> str:
        """'new' or 'cur': where finish() puts the message."""
        return "new" if self._letters is None else "cur"

    def write(self, data: bytes) -> None:
        if self._held_cr:
            data = b"\r" + data
            self._held_cr = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self._held_cr = True
        if not data:
            return
        disk = data.replace(b"\r\n", b"\n")
        self._put(disk)

    def _put(self, disk: bytes) -> None:
        lf = disk.count(b"\n")
        crlf = disk.count(b"\r\n") + (self._last_cr and disk[:1] == b"\n")
        self.disk_size += len(disk)
        self.wire_size += len(disk) + lf - crlf
        self._last_cr = disk[-1:] == b"\r"
        if not self._held and len(disk) >= _WRITE_AT:
            self._write_out(disk)   # a large piece goes out as it is, not copied first
            return
        self._held += disk
        if len(self._held) >= _WRITE_AT:
            self._write_held()

    def _create(self) -> None:
        try:
            self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            self._done = True
            raise _error("create a file in", exc) from None

    def _write_held(self) -> None:
        held, self._held = self._held, bytearray()
        self._write_out(held)

    def _write_out(self, data) -> None:
        if self._fd < 0:
            self._create()
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            self.abort()
            raise _error("write", exc) from None
        finally:
            view.release()

    def flush(self) -> None:
        """Everything written so far goes to the file in tmp/ (created now
        if need be). MaildirError if that fails (the delivery is then
        aborted) or the delivery was already finished or aborted."""
        if self._done:
            raise MaildirError("cannot store a message that was already stored or aborted")
        if self._held_cr:
            self._held_cr = False
            self._put(b"\r")
        if self._held or self._fd < 0:
            self._write_held()

    def start_writeback(self) -> None:
        """A hint, for a batch after flush(): on Linux, POSIX_FADV_DONTNEED
        starts writing the file's dirty pages at once. Started for every
        message of a batch before the first fsync, their blocks are all
        allocated in the journal transaction that fsync commits, so the
        fsyncs after it find their work done instead of each committing a
        transaction of its own. Durability still comes from finish()."""
        if self._fd < 0:
            return
        try:
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except (OSError, AttributeError):
            pass

    def finish(self) -> str:
        """The first half of commit(): the message's data is on disk and its
        name in new/ (or cur/ with its flags), returned as its key, but that
        name is not yet durable: Maildir.publish() makes it so, for any
        number of messages at once. Until then the message must not be
        acknowledged."""
        self.flush()
        key = f"{self._base},S={self.disk_size},W={self.wire_size}"
        name = key if self._letters is None else f"{key}:2,{self._letters}"
        try:
            if self._mtime is not None:
                # After the last write, which sets the mtime, and before
                # the fsync that makes it durable with the data.
                os.utime(self._fd, (self._mtime, self._mtime))
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            os.rename(self._tmp, os.path.join(self._maildir.path, self.directory, name))
        except OSError as exc:
            self.abort()
            raise _error("store a message in", exc) from None
        self._done = True
        self.key, self.name = key, name
        return key

    def commit(self) -> str:
        """Make the message durable and return its key: Maildir.commit_all()
        for this one delivery.

        Returns only after the file's data and its directory entry in new/
        (cur/) are on disk: a reply of 250 may follow."""
        (outcome,) = self._maildir.commit_all([self])
        if isinstance(outcome, MaildirError):
            raise outcome
        return outcome

    def abort(self) -> None:
        """Forget the message; nothing of it stays in the Maildir. Idempotent."""
        if self._done:
            return
        self._done = True
        self._held = bytearray()
        if self._fd < 0:
            return   # never created
        try:
            os.close(self._fd)
        except OSError:
            pass
        self._fd = -1
        try:
            os.unlink(self._tmp)
        except OSError:
            pass


def _finish(delivery: Delivery) -> MaildirError | None:
    try:
        delivery.finish()
    except MaildirError as exc:
        return exc
    return None


def to_wire(data: bytes) -> bytes:
    """A whole stored message (or its start) in wire form: every LF not
    preceded by CR becomes CRLF."""
    if b"\r" not in data:
        return data.replace(b"\n", b"\r\n")
    return _BARE_LF.sub(b"\r\n", data)


class WireReader:
    """Reads a stored message in its wire form (CRLF line ends)."""

    def __init__(self, handle):
        self._handle = handle
        self._last_cr = False

    def read(self, size: int = 1 << 18) -> bytes:
        data = self._handle.read(size)
        if not data:
            return b""
        out = to_wire(data)
        if self._last_cr and data[:1] == b"\n":
            out = out[1:]
        self._last_cr = data[-1:] == b"\r"
        return out

    def close(self) -> None:
        self._handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _DirSync:
    """fsync of one directory, shared by concurrent callers (group commit):
    each caller waits for an fsync that *started after* it called, so its
    own rename is covered."""

    def __init__(self, fd: int):
        self.fd = fd
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._running = False
        self._started = 0
        self._finished = 0

    def sync(self) -> None:
        with self._lock:
            needed = self._started + 1
            while self._finished < needed:
                if self._running:
                    self._done.wait()
                    continue
                self._running = True
                self._started += 1
                generation = self._started
                self._lock.release()
                try:
                    os.fsync(self.fd)
                finally:
                    self._lock.acquire()
                    self._running = False
                    self._done.notify_all()
                self._finished = generation


class _NameScan:
    """What one listing of new/ and cur/ showed, to find a message's current
    name by key. The table by key is built only if a look-up needs it."""

    __slots__ = ("_parts", "_paths", "whole")

    def __init__(self, parts: list, whole: bool):
        self._parts = parts    # [(directory prefix, names)]
        self._paths: dict | None = None
        # A key the listing lacks is gone. A file can be missed only by being
        # renamed while its directory is read; new/ is read first, so one
        # that leaves new/ meanwhile is found in cur/, and it is enough that
        # cur/ did not change during its reading or just before it.
        self.whole = whole

    def path_of(self, key: str) -> str | None:
        paths = self._paths
        if paths is None:
            paths = {}
            for prefix, names in self._parts:
                for name in names:
                    if name[:1] != ".":
                        paths[name.partition(":")[0]] = prefix + name
            self._paths, self._parts = paths, None
        return paths.get(key)


class _Keywords:
    """A folder's dovecot-keywords table: keyword names by letter a..z."""

    def __init__(self, dir_fd: int):
        self._dir_fd = dir_fd
        self._stamp: object = _UNKNOWN
        self.names: dict[str, str] = {}     # letter -> name
        self._letters: dict[str, str] = {}  # casefolded name -> letter
        self.version = 0

    def letter_of(self, name: str) -> str | None:
        return self._letters.get(name.casefold())

    def refresh(self) -> bool:
        """Reread the file if it changed since last read (one stat); returns whether it did."""
        try:
            st = os.stat(KEYWORDS_NAME, dir_fd=self._dir_fd)
            stamp: object = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        except OSError as exc:
            raise _error("read the keywords in", exc) from None
        if stamp == self._stamp:
            return False
        try:
            fd = os.open(KEYWORDS_NAME, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._dir_fd)
            try:
                data = b""
                while piece := os.read(fd, 1 << 16):
                    data += piece
            finally:
                os.close(fd)
        except FileNotFoundError:
            data = b""
        except OSError as exc:
            raise _error("read the keywords in", exc) from None
        names: dict[str, str] = {}
        letters: dict[str, str] = {}
        # Dovecot's reader is lenient too: a line it cannot use is skipped.
        for line in data.decode("utf-8", "replace").split("\n"):
            index, _, name = line.partition(" ")
            if not (index.isdigit() and index.isascii() and int(index) < 26 and _is_keyword(name)):
                continue
            letter = _KEYWORD_LETTERS[int(index)]
            if letter not in names and name.casefold() not in letters:
                names[letter] = name
                letters[name.casefold()] = letter
        self.names, self._letters, self._stamp = names, letters, stamp
        self.version += 1
        return True

    def add(self, names: list[str], lock) -> None:
        """Give letters to keywords that have none: the file is rewritten
        (temp file, fsync, rename, fsync of the directory) under the
        folder's lock. MaildirError(limit=True) past 26 keywords."""
        with lock:
            self.refresh()
            missing: list[str] = []
            for name in names:
                if self.letter_of(name) is None and name.casefold() not in (m.casefold() for m in missing):
                    missing.append(name)
            if not missing:
                return
            free = [letter for letter in _KEYWORD_LETTERS if letter not in self.names]
            if len(missing) > len(free):
                raise MaildirError(f"cannot add keyword {missing[len(free)]}: this folder already has "
                                   f"26 keywords, the most Maildir file names can carry", limit=True)
            table = dict(self.names)
            table.update(zip(free, missing))
            text = "".join(f"{_KEYWORD_LETTERS.index(letter)} {name}\n" for letter, name in sorted(table.items()))
            try:
                fd = os.open(_KEYWORDS_TEMP, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600,
                             dir_fd=self._dir_fd)
                try:
                    os.write(fd, text.encode())
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.rename(_KEYWORDS_TEMP, KEYWORDS_NAME, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
                # The keyword must be durable before any file name uses its letter.
                os.fsync(self._dir_fd)
            except OSError as exc:
                raise _error("write the keywords in", exc) from None
            self.refresh()


@dataclass
class ListingChanges:
    """From one UidListing to a later one: UIDs gone (ascending), messages
    new since (UID order), messages whose flags differ. `new_validity`: the
    UIDVALIDITY changed, so every UID of the older listing is void and
    `added` is everything."""

    expunged: list
    added: list
    flags_changed: list
    new_validity: bool = False


def _uid_of(message: Message) -> int:
    return message.uid


class UidListing:
    """A folder's messages in UID order at one moment, as
    Maildir.uid_listing() returns it: `validity` (UIDVALIDITY), `next_uid`
    (every UID below it is listed here or was expunged) and `messages`,
    each with uid, key, flags, size, path. Never changes; uid_listing()
    returns the same object for as long as nothing changed."""

    __slots__ = ("validity", "next_uid", "messages", "_uids", "_by_key", "_previous", "_changes")

    def __init__(self, validity: int, next_uid: int, messages: list,
                 previous: "UidListing | None" = None, changes: ListingChanges | None = None):
        self.validity = validity
        self.next_uid = next_uid
        self.messages = messages
        self._uids: list | None = None
        self._by_key: dict | None = None
        self._previous = previous   # the listing just before, whose difference is `changes`
        self._changes = changes

    def __len__(self) -> int:
        return len(self.messages)

    def __iter__(self):
        return iter(self.messages)

    @property
    def uids(self) -> list:
        if self._uids is None:
            self._uids = [message.uid for message in self.messages]
        return self._uids

    def find(self, key: str) -> Message | None:
        """The message with this key, or None."""
        if self._by_key is None:
            self._by_key = {message.key: message for message in self.messages}
        return self._by_key.get(key)

    def by_uid(self, uid: int) -> Message | None:
        """The message with this UID, or None."""
        uids = self.uids
        at = bisect_left(uids, uid)
        return self.messages[at] if at < len(uids) and uids[at] == uid else None

    def changes_since(self, older: "UidListing") -> ListingChanges:
        """What happened between `older` and this listing (of the same folder)."""
        if older is self:
            return ListingChanges([], [], [])
        if self._previous is older and self._changes is not None:
            return self._changes
        if older.validity != self.validity:
            return ListingChanges([m.uid for m in older.messages], list(self.messages), [], True)
        expunged, added, changed = [], [], []
        old, new = older.messages, self.messages
        i = j = 0
        while i < len(old) and j < len(new):
            before, after = old[i], new[j]
            if before.uid == after.uid:
                if before.flags != after.flags:
                    changed.append(after)
                i += 1
                j += 1
            elif before.uid < after.uid:
                expunged.append(before.uid)
                i += 1
            else:
                added.append(after)
                j += 1
        expunged.extend(m.uid for m in old[i:])
        added.extend(new[j:])
        return ListingChanges(expunged, added, changed)


class _UidIndex:
    """What uid_listing() knows of a folder between calls: its files by
    name per directory, by key, and the directories' mtimes when listed."""

    def __init__(self, uidlist):
        self.uidlist = uidlist
        self.forget()

    def forget(self) -> None:
        self.tables: dict[str, dict] = {"new": {}, "cur": {}}   # name -> Message, or None: not a message
        self.by_key: dict[str, Message] = {}
        self.stamps: dict[str, tuple | None] = {"new": None, "cur": None}   # (mtime_ns, settled)
        self.whole = False
        self.validity: int | None = None
        self.generation = -1          # of the uidlist's content the UIDs were checked against
        self.listing: UidListing | None = None
        self.listed: dict[str, Message] = {}   # by_key as the listing shows it

    def path_of(self, key: str) -> str | None:
        message = self.by_key.get(key)
        return None if message is None else message.path


# [pid, random hex] of the process that drew it (a forked child draws anew).
_process_token: list = [0, ""]


class Maildir:
    """One Maildir folder directory (INBOX, or a Maildir++ subfolder from
    folder()). Safe to use from several processes at once, and from
    several threads of one."""

    _counter = itertools.count(1)

    def __init__(self, path: str, hostname: str | None = None):
        self.path = os.path.abspath(path)
        self._hostname = hostname
        self._host = _host_part(hostname or socket.gethostname())
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(self.path, sub), mode=0o700, exist_ok=True)
        except OSError as exc:
            raise _error("use Maildir", exc) from None
        if not os.path.isdir(os.path.join(self.path, "new")):
            raise MaildirError(f"cannot use Maildir {self.path}: new/ is not a directory")
        try:
            self._new_fd = os.open(os.path.join(self.path, "new"), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self._cur_fd = os.open(os.path.join(self.path, "cur"), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise _error("use Maildir", exc) from None
        self._new_prefix = os.path.join(self.path, "new", "")
        self._cur_prefix = os.path.join(self.path, "cur", "")
        self._new_sync = _DirSync(self._new_fd)
        self._cur_sync = _DirSync(self._cur_fd)
        # A Maildir++ subfolder says so with a maildirfolder file; its
        # parent directory is the Maildir that holds INBOX and all folders.
        is_folder = os.path.exists(os.path.join(self.path, FOLDER_MARK))
        self._root = os.path.dirname(self.path) if is_folder else self.path
        self._dir_fd = -1            # the folder's own directory, once needed
        self._lock = None            # uidlist.FolderLock, once needed
        self._keywords: _Keywords | None = None
        self._names_cache: dict[str, tuple] = {}
        self._names_version = -1
        self._latest = None          # the last listing of new/ and cur/: _NameScan or _UidIndex
        self._moved: dict = {}       # key -> path (None: removed) for changes made here since
        self._dates: dict[str, int] = {}
        self._uid_index: _UidIndex | None = None
        self._index_lock = threading.RLock()

    @property
    def hostname(self) -> str | None:
        """The host name given for new keys (None: this machine's)."""
        return self._hostname

    @property
    def folder_name(self) -> str:
        """'INBOX' for the Maildir itself, else the subfolder's IMAP name."""
        if self._root == self.path:
            return "INBOX"
        return os.path.basename(self.path)[1:]

    def _folder_fd(self) -> int:
        if self._dir_fd < 0:
            try:
                self._dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                raise _error("use Maildir", exc) from None
        return self._dir_fd

    def _folder_lock(self):
        if self._lock is None:
            from .uidlist import FolderLock
            self._lock = FolderLock(self.path)
        return self._lock

    # -- delivery ---------------------------------------------------------

    def _unique_base(self) -> str:
        global _last_stamp
        now = time.time_ns() // 1000
        # Ascending within the process, so that the order of keys (what
        # snapshot() and UIDs go by) is the order they were made in, even
        # within one microsecond. No lock: names made by two threads at the
        # same moment have no order to keep, and stay unique by Q.
        if now <= _last_stamp:
            now = _last_stamp + 1
        _last_stamp = now
        sec, usec = divmod(now, 1_000_000)
        # pid + per-process counter make names unique between processes and
        # within one; the random part, drawn once per process (a system call
        # per message saved), covers pid reuse after a restart.
        pid = os.getpid()
        if _process_token[0] != pid:
            _process_token[:] = [pid, os.urandom(4).hex()]
        return (f"{sec}.M{usec:06d}P{pid}Q{next(self._counter)}"
                f"R{_process_token[1]}.{self._host}")

    def begin(self, flags: Iterable[str] | None = None, internal_date=None) -> Delivery:
        """A new message to write. Without `flags` it will go to new/ (SMTP);
        with flags (IMAP names, possibly none: IMAP APPEND) to cur/ with
        them. `internal_date` (seconds since the epoch, or an aware
        datetime) becomes the file's mtime, its INTERNALDATE. MaildirError
        if a flag cannot be stored (see set_flags)."""
        if flags is None and internal_date is None:
            return Delivery(self, self._unique_base())   # SMTP's, once per message
        letters = None
        if flags is not None:
            letters = "".join(sorted(self._letters_for(flags, create=True)))
        mtime = None
        if internal_date is not None:
            mtime = internal_date.timestamp() if hasattr(internal_date, "timestamp") else float(internal_date)
        return Delivery(self, self._unique_base(), letters, mtime)

    def deliver(self, chunks: Iterable[bytes], flags: Iterable[str] | None = None, internal_date=None) -> str:
        """Store a message given as wire-form chunks; returns its key once durable."""
        delivery = self.begin(flags, internal_date)
        try:
            for chunk in chunks:
                delivery.write(chunk)
        except BaseException:
            delivery.abort()
            raise
        return delivery.commit()

    def publish(self, items: list) -> list:
        """After Delivery.finish() for each of `items` (the Delivery objects,
        or keys of messages finished into new/): one fsync of each directory
        they went to makes them all durable. Returns, per item, the key or
        the MaildirError that keeps it from being acknowledged (then its
        name is gone again, so a retrying client does not get it stored
        twice)."""
        keys, new_names, cur_names = [], [], []
        for item in items:
            if isinstance(item, Delivery):
                keys.append(item.key)
                (cur_names if item.directory == "cur" else new_names).append(item.name)
            else:
                keys.append(item)
                new_names.append(item)
        try:
            if new_names or not cur_names:
                self._new_sync.sync()
            if cur_names:
                self._cur_sync.sync()
        except OSError as exc:
            error = _error("sync", exc)
            for directory, names in (("new", new_names), ("cur", cur_names)):
                for name in names:
                    try:
                        os.unlink(os.path.join(self.path, directory, name))
                    except OSError:
                        pass
            return [error] * len(keys)
        return keys

    def commit_all(self, deliveries: list, each=map) -> list:
        """Commit deliveries of this Maildir: the one path every commit
        takes, Delivery.commit() included. Every message written, their
        writeback started (for a batch), each fsync'd and renamed, then
        one fsync per directory for the batch. Returns, per delivery, its
        key or the MaildirError it failed with.

        `each(function, items)` runs the per-message fsyncs: the committer
        passes a thread pool's map for a batch, because fsyncs issued
        together share the file system's journal commits where fsyncs one
        after another each wait for their own."""
        outcomes: list = [None] * len(deliveries)
        for index, delivery in enumerate(deliveries):
            try:
                delivery.flush()
            except MaildirError as exc:
                outcomes[index] = exc
        if len(deliveries) > 1:
            for index, delivery in enumerate(deliveries):
                if outcomes[index] is None:
                    delivery.start_writeback()
        pending = [index for index, outcome in enumerate(outcomes) if outcome is None]
        finished = []
        for index, error in zip(pending, each(_finish, [deliveries[i] for i in pending])):
            if error is None:
                finished.append(index)
            else:
                outcomes[index] = error
        if finished:
            for index, outcome in zip(finished, self.publish([deliveries[i] for i in finished])):
                outcomes[index] = outcome
        return outcomes

    def sync_new(self) -> None:
        """fsync new/ so that every rename into it done before this call survives a crash.

        Group commit: concurrent callers share one fsync of the directory,
        but each waits for an fsync that *started after* it was called, so
        its own rename is covered."""
        self._new_sync.sync()

    # -- reading ----------------------------------------------------------

    def snapshot(self) -> list[Message]:
        """Every message in new/ and cur/, oldest delivery first. Only this
        folder's directory: subfolders' messages are not listed."""
        found = []
        by_name = True
        parts = []
        whole = False
        for prefix, fd in ((self._new_prefix, self._new_fd), (self._cur_prefix, self._cur_fd)):
            try:
                before = os.fstat(fd).st_mtime_ns
                started = time.time_ns()
                names = os.listdir(prefix)
                # Ends as cur/'s (read last): see _NameScan.whole.
                whole = os.fstat(fd).st_mtime_ns == before and started - before >= _STILL_NS
            except OSError as exc:
                raise _error("list", exc) from None
            parts.append((prefix, names))
            for name in names:
                if name[:1] == ".":
                    continue
                key, _, info = name.partition(":")
                # The size from ",W=<digits>" in the name, as _SIZE finds it;
                # str methods first because this runs for every message at
                # every login.
                at = key.find(",W=")
                digits = key[at + 3:] if at >= 0 else ""
                if digits.isdigit() and digits.isascii():
                    size = int(digits)
                else:
                    match = _SIZE.search(key)
                    size = int(match.group(1)) if match else self._measure(prefix + name)
                    if size is None:
                        continue
                message = Message(key, size, prefix + name, info[2:] if info[:2] == "2," else "")
                if by_name:
                    # BareMail's own keys, "<10-digit sec>.M<6-digit usec>P...",
                    # sort as strings exactly as _order() sorts them, without
                    # parsing two numbers per message.
                    head = key[:19]
                    if (head[10:12] == ".M" and head[18:] == "P" and head[:10].isdigit()
                            and head[12:18].isdigit() and head.isascii()):
                        found.append((key, message))
                        continue
                    by_name = False   # a name from other software: _order() for all
                    found = [(_order(pair[0]), pair[1]) for pair in found]
                found.append((_order(key), message))
        found.sort(key=_first)   # itemgetter(0): no Python call per message
        self._latest = _NameScan(parts, whole)
        self._moved = {}
        return [message for _, message in found]

    def scan(self) -> Iterator[Message]:
        """Every message in cur/, then new/, in no particular order, as the
        directories are read: unlike snapshot(), nothing is kept, so memory
        stays flat however big the folder is (baremail-expire). A message
        moved from new/ to cur/ meanwhile may be missed, never seen twice."""
        for prefix in (self._cur_prefix, self._new_prefix):
            try:
                entries = os.scandir(prefix)
            except OSError as exc:
                raise _error("list", exc) from None
            with entries:
                for entry in entries:
                    name = entry.name
                    if name[:1] == ".":
                        continue
                    key, _, info = name.partition(":")
                    size = _wire_size(key, prefix + name)
                    if size is not None:
                        yield Message(key, size, prefix + name, info[2:] if info[:2] == "2," else "")

    @staticmethod
    def _measure(path: str) -> int | None:
        # A file without ,W= came from another program: count its wire size.
        try:
            with WireReader(open(path, "rb")) as reader:
                total = 0
                while chunk := reader.read(1 << 20):
                    total += len(chunk)
                return total
        except OSError:
            return None

    def _split(self, path: str) -> tuple:
        """(directory fd or None, name relative to it, whether in cur/) of a message path."""
        if path.startswith(self._cur_prefix):
            return self._cur_fd, path[len(self._cur_prefix):], True
        if path.startswith(self._new_prefix):
            return self._new_fd, path[len(self._new_prefix):], False
        return None, path, os.path.basename(os.path.dirname(path)) == "cur"

    def _list_dir(self, fd: int, prefix: str) -> tuple:
        """(names, mtime_ns, settled, whole) of one directory: `settled` if
        its unchanged mtime can later prove nothing changed, `whole` if
        nothing was renamed in it while it was being read."""
        for _ in range(2):
            try:
                before = os.fstat(fd).st_mtime_ns
                started = time.time_ns()
                names = os.listdir(prefix)
                after = os.fstat(fd).st_mtime_ns
            except OSError as exc:
                raise _error("list", exc) from None
            if after == before:
                age = started - before
                return names, before, age >= _SETTLE_NS, age >= _STILL_NS
        return names, before, False, False

    def _rescan(self) -> _NameScan:
        parts = []
        for fd, prefix in ((self._new_fd, self._new_prefix), (self._cur_fd, self._cur_prefix)):
            names, _, _, whole = self._list_dir(fd, prefix)   # cur/'s counts (_NameScan.whole)
            parts.append((prefix, names))
        scan = self._latest = _NameScan(parts, whole)
        self._moved = {}
        return scan

    def _whereabouts(self, message: Message):
        """Paths where `message` may be now that its own path failed, most
        likely first: where a change made here put it, where the last
        listing saw it, its name in new/, its name in cur/ with the flags
        it had (and with S, as a POP3 RETR leaves it). Then, only if the
        last listing does not settle it, one new listing of new/ and cur/:
        a key the last complete listing lacked is gone (keys never come
        back), and one listing serves every later look-up of a batch."""
        key = message.key
        tried = {message.path}
        moved = self._moved.get(key, _UNKNOWN)
        if moved is None:
            return   # removed here
        guesses = []
        rescan = False
        if moved is not _UNKNOWN:
            guesses.append(moved)
            rescan = True
        latest = self._latest
        if latest is None or not latest.whole:
            rescan = True
        else:
            known = latest.path_of(key)
            if known is not None:
                guesses.append(known)
                rescan = True   # if that fails, it changed since: look again
        guesses += self._likely_names(message)
        for path in guesses:
            if path not in tried:
                tried.add(path)
                yield path
        if rescan:
            # Another listing while it is there under yet another name each
            # time (others keep changing its flags), a few times at most.
            for _ in range(_RESCANS):
                known = self._rescan().path_of(key)
                if known is None:
                    return
                yield known

    def _likely_names(self, message: Message) -> list:
        """Where a message most likely is if not at its path: in new/, in
        cur/ with the flags it had, and with S too (as a POP3 RETR or an
        IMAP FETCH leaves it)."""
        key, flags = message.key, message.flags
        names = [self._new_prefix + key, f"{self._cur_prefix}{key}:2,{flags}"]
        if "S" not in flags:
            names.append(f"{self._cur_prefix}{key}:2,{''.join(sorted(flags + 'S'))}")
        return names

    def _act(self, message: Message, act):
        """act(path, first) on the message's current file: its result, or
        _GONE if no file of the message remains. `act` raises
        FileNotFoundError when `path` is not (or no longer) the message's."""
        try:
            return act(message.path, True)
        except FileNotFoundError:
            pass
        for path in self._whereabouts(message):
            try:
                return act(path, False)
            except FileNotFoundError:
                continue
        return _GONE

    def _open_at(self, path: str, first: bool) -> int:
        fd, name, _ = self._split(path)
        try:
            return os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=fd)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise _error("open", exc) from None

    def _stat_at(self, path: str, first: bool):
        fd, name, _ = self._split(path)
        try:
            return path, os.stat(name, dir_fd=fd)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise _error("look at", exc) from None

    def locate(self, message: Message) -> str | None:
        """The current path of `message` (it may have moved to cur/, or had
        its flags changed), or None if it is gone. No scan of cur/ unless
        the last listing cannot tell (see _whereabouts)."""
        found = self._act(message, self._stat_at)
        return None if found is _GONE else found[0]

    def read_wire(self, message: Message) -> bytes | None:
        """The whole wire form of a message in one piece, or None if the file
        holds more than `message.size` octets (then stream it with
        open_wire()). For small messages: one open, one read. MaildirError
        if it is gone."""
        path = message.path
        try:
            # Relative to the directory already open: no walk down the path.
            if path.startswith(self._cur_prefix):
                fd = os.open(path[len(self._cur_prefix):], os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._cur_fd)
            elif path.startswith(self._new_prefix):
                fd = os.open(path[len(self._new_prefix):], os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._new_fd)
            else:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            # Moved to cur/ (or flagged) since the snapshot, or gone.
            fd = self._act(message, self._open_at)
            if fd is _GONE:
                raise MaildirError(f"cannot open {message.key}: no such message") from None
        except OSError as exc:
            raise _error("open", exc) from None
        try:
            # The wire form is never shorter than the file, so a read of
            # size + 1 octets that comes back short has reached its end
            # (a regular file reads short only at its end).
            data = os.read(fd, message.size + 1)
        except OSError as exc:
            raise _error("read", exc) from None
        finally:
            os.close(fd)
        if len(data) > message.size:
            return None
        return to_wire(data)

    def open_wire(self, message: Message) -> WireReader:
        """Open a message for reading in wire form; MaildirError if it is gone."""
        fd = self._act(message, self._open_at)
        if fd is _GONE:
            raise MaildirError(f"cannot open {message.key}: no such message")
        return WireReader(open(fd, "rb"))

    def internal_date(self, message: Message) -> int:
        """A message's INTERNALDATE: its file's mtime, in whole seconds since
        the epoch. Cached by key (renames do not change it); MaildirError if
        the message is gone."""
        date = self._dates.get(message.key)
        if date is None:
            found = self._act(message, self._stat_at)
            if found is _GONE:
                raise MaildirError(f"cannot read the date of {message.key}: no such message")
            date = self._dates[message.key] = int(found[1].st_mtime)
        return date

    # -- flags ------------------------------------------------------------

    def _keyword_table(self) -> _Keywords:
        table = self._keywords
        if table is None:
            table = self._keywords = _Keywords(self._folder_fd())
            table.refresh()
        return table

    def _letters_for(self, names: Iterable[str], create: bool) -> set:
        """The letters for IMAP flag names; keywords get a letter if `create`."""
        if isinstance(names, str):
            names = (names,)
        letters = set()
        keywords = []
        for name in names:
            letter = _LETTER_OF_FLAG.get(name.lower())
            if letter is not None:
                letters.add(letter)
            elif name[:1] == "\\" or not _is_keyword(name):
                raise MaildirError(f"cannot store flag {name!r}: it is not a system flag a Maildir keeps "
                                   f"nor a valid keyword")
            else:
                keywords.append(name)
        if keywords:
            table = self._keyword_table()
            found = [table.letter_of(name) for name in keywords]
            if None in found and table.refresh():
                found = [table.letter_of(name) for name in keywords]
            if None in found and create:
                table.add([name for name, letter in zip(keywords, found) if letter is None], self._folder_lock())
                found = [table.letter_of(name) for name in keywords]
            letters.update(letter for letter in found if letter is not None)
        return letters

    def keywords(self) -> tuple:
        """The keywords defined in this folder, in letter order (for IMAP
        FLAGS and PERMANENTFLAGS); dovecot-keywords is reread if it changed."""
        table = self._keyword_table()
        table.refresh()
        return tuple(table.names[letter] for letter in sorted(table.names))

    def flag_names(self, flags: str) -> tuple:
        """IMAP names of a message's flag letters (Message.flags): system
        flags, then keywords, in letter order. Letters that name nothing
        (no keyword for them, or a flag IMAP has no name for, such as P)
        are left out. Cached per distinct `flags`."""
        table = self._keyword_table()
        if self._names_version != table.version:
            self._names_cache = {}
            self._names_version = table.version
        names = self._names_cache.get(flags)
        if names is None:
            unknown = any("a" <= char <= "z" and char not in table.names for char in flags)
            if unknown and table.refresh():
                self._names_cache = {}
                self._names_version = table.version
                unknown = any("a" <= char <= "z" and char not in table.names for char in flags)
            names = tuple(name for name in (_FLAG_OF_LETTER.get(char) or table.names.get(char) for char in flags)
                          if name is not None)
            if not unknown:   # else looked up again next time: the keyword may yet be named
                self._names_cache[flags] = names
        return names

    def set_flags(self, message: Message, add: Iterable[str] = (), remove: Iterable[str] = (),
                  replace: Iterable[str] | None = None) -> Message | None:
        """Change a message's flags by IMAP name (\\Seen, \\Answered,
        \\Flagged, \\Deleted, \\Draft or a keyword); returns the message
        as it now is (in cur/, `flags` as stored, same key, size and uid),
        or None if it is gone. Only the flags named change: letters others
        set meanwhile, and letters this library does not know, stay (the
        change is re-applied to whatever name the message has now).
        `replace` (IMAP STORE FLAGS) sets exactly those flags, keeping only
        letters no IMAP name stands for. A message in new/ moves to cur/
        even if no flag changes. MaildirError for a name that is no flag,
        or (limit=True) a 27th keyword in the folder."""
        add_letters = self._letters_for(add, create=True)
        remove_letters = self._letters_for(remove, create=False)
        replace_letters = None if replace is None else self._letters_for(replace, create=True)
        return self._change_flags(message, add_letters, remove_letters, replace_letters)

    def _change_flags(self, message: Message, add, remove, replace) -> Message | None:
        expressible = None
        if replace is not None:
            # Letters no IMAP name stands for cannot be in `replace`: kept.
            expressible = set(_FLAG_OF_LETTER).union(self._keyword_table().names)
        try:
            return self._rename_flags(message, message.path, True, add, remove, replace, expressible)
        except FileNotFoundError:
            pass
        for path in self._whereabouts(message):
            try:
                return self._rename_flags(message, path, False, add, remove, replace, expressible)
            except FileNotFoundError:
                continue
        return None

    def _rename_flags(self, message: Message, path: str, first: bool, add, remove, replace,
                      expressible) -> Message:
        """Rename the file at `path` (FileNotFoundError if it is not there)
        to carry its flags as changed; the message as it then is."""
        if path.startswith(self._cur_prefix):
            fd, name, in_cur = self._cur_fd, path[len(self._cur_prefix):], True
            base = name
        else:
            fd, name, in_cur = self._split(path)
            base = name if fd is not None else os.path.basename(name)
        key, _, info = base.partition(":")
        current = info[2:] if info[:2] == "2," else ""
        if replace is not None:
            flags = "".join(sorted(replace.union(char for char in current if char not in expressible)))
        elif current:
            flags = "".join(sorted(set(current).difference(remove).union(add)))
        else:
            flags = "".join(sorted(add))
        target = f"{key}:2,{flags}"
        if in_cur and target == base:
            if first:
                return message
            os.stat(name, dir_fd=fd)   # only a guess so far: is it really there?
        else:
            try:
                os.rename(path, self._cur_prefix + target)
            except FileNotFoundError:
                raise
            except OSError as exc:
                raise _error("rename", exc) from None
            self._moved[key] = path = self._cur_prefix + target
        return Message(message.key, message.size, path, flags, message.uid)

    def mark_seen(self, message: Message) -> None:
        """Add the Seen flag: a message in new/ moves to cur/ with :2,S; one
        in cur/ keeps its other flags. No system call if the name the
        caller holds has S already; silent if the message is gone."""
        flags = message.flags
        if "S" in flags:
            return
        path = message.path
        if not flags and path.startswith(self._new_prefix):
            # set_flags(message, add=["\\Seen"]) for what a POP3 RETR
            # leaves, a name in new/ without flags: the same rename, minus
            # the general path's work, as this runs once per message sent.
            target = f"{self._cur_prefix}{message.key}:2,S"
            try:
                os.rename(path, target)
            except FileNotFoundError:
                pass   # moved by another session, or gone: the general path finds out
            except OSError as exc:
                raise _error("move", exc) from None
            else:
                self._moved[message.key] = target
                return
        self._change_flags(message, _SEEN, _NOTHING, None)

    # -- removal and upkeep -----------------------------------------------

    @staticmethod
    def _unlink_at(path: str, first: bool) -> bool:
        try:
            os.unlink(path)   # unlink(2) by path, as POP3 has always removed
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise _error("delete", exc) from None
        return True

    def remove(self, message: Message) -> bool:
        """Delete a message (POP3 DELE, IMAP EXPUNGE). False if it was
        already gone (another session)."""
        if self._act(message, self._unlink_at) is _GONE:
            return False
        self._moved[message.key] = None
        self._dates.pop(message.key, None)
        return True

    def discard(self, message: Message) -> bool:
        """remove() for removals by the thousand (baremail-expire): nothing
        is remembered per message, and a message renamed since it was listed
        is looked for only under the names it most likely has now (in cur/,
        seen), never by listing the folder again. False if it is not found:
        gone, or renamed otherwise (flagged meanwhile, say): it stays."""
        for path in dict.fromkeys([message.path, *self._likely_names(message)]):
            try:
                self._unlink_at(path, False)
            except FileNotFoundError:
                continue
            self._dates.pop(message.key, None)
            return True
        return False

    def clean_tmp(self, max_age: float = TMP_MAX_AGE) -> int:
        """Remove files left in tmp/ by deliveries that died; returns how many."""
        limit = time.time() - max_age
        removed = 0
        try:
            entries = list(os.scandir(os.path.join(self.path, "tmp")))
        except OSError as exc:
            raise _error("list", exc) from None
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < limit:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                continue
        return removed

    def __del__(self) -> None:
        # A Maildir dropped (a SIGHUP that changed maildir=, a folder
        # forgotten) closes its directories once nothing uses it any more:
        # never earlier, as a closed descriptor's number may be reused for
        # another file by the time a late user reaches for it.
        try:
            self.close()
        except (OSError, AttributeError):
            pass

    def close(self) -> None:
        for fd in (self._new_fd, self._cur_fd, self._dir_fd):
            if fd >= 0:
                os.close(fd)
        self._new_fd = self._cur_fd = self._dir_fd = -1
        self._new_sync.fd = self._cur_sync.fd = -1
        if self._uid_index is not None:
            self._uid_index.uidlist.close()
            self._uid_index = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- copy and move (IMAP COPY, MOVE) ----------------------------------

    def copy_to(self, messages: Iterable[Message], destination: "Maildir") -> list:
        """Copy messages into `destination` (IMAP COPY): a hard link (or,
        where none can be made, a byte copy with the mtime kept) in its
        cur/ under a new key, flags kept, keywords translated to the
        destination's letters. Returns per message its new key, or None if
        it was gone; durable (destination's cur/ fsync'd) on return.
        MaildirError, before anything is copied, if the destination cannot
        take the messages' keywords."""
        return self._transfer(list(messages), destination, move=False)

    def move_to(self, messages: Iterable[Message], destination: "Maildir") -> list:
        """Move messages into `destination` (IMAP MOVE): each is one
        rename(2) into its cur/ under a new key, so whenever the process
        dies the message is in exactly one of the two folders. Flags as
        copy_to(). Returns per message its new key, or None if it was gone;
        both folders' directories are fsync'd on return. (Only across file
        systems is it a copy, then a removal.)"""
        return self._transfer(list(messages), destination, move=True)

    def _transfer(self, messages: list, destination: "Maildir", move: bool) -> list:
        translate = self._translation(messages, destination)
        keys: list = []
        made: list = []   # names made in the destination's cur/
        touched = set()   # whether a source file left cur/ (True) or new/ (False)

        def act(path: str, first: bool, message: Message) -> str:
            fd, name, in_cur = self._split(path)
            base = name if fd is not None else os.path.basename(name)
            info = base.partition(":")[2]
            key = destination._key_for_copy(message, fd, name)
            target = f"{key}:2,{translate(info[2:] if info[:2] == '2,' else '')}"
            if move:
                self._move_file(path, destination, key, target)
                touched.add(in_cur)
            else:
                self._copy_file(path, destination, key, target)
            made.append(target)
            return key

        try:
            for message in messages:
                key = self._act(message, partial(act, message=message))
                if key is _GONE:
                    keys.append(None)
                    continue
                if move:
                    self._moved[message.key] = None
                    self._dates.pop(message.key, None)
                keys.append(key)
        except MaildirError:
            if not move:
                # A failed COPY leaves the destination as it was (RFC 3501
                # section 6.4.7); what a failed MOVE moved stays moved.
                for target in made:
                    try:
                        os.unlink(target, dir_fd=destination._cur_fd)
                    except OSError:
                        pass
                raise
            self._sync_transfer(destination, touched)
            raise
        self._sync_transfer(destination, touched)
        return keys

    def _sync_transfer(self, destination: "Maildir", touched: set) -> None:
        try:
            destination._cur_sync.sync()
            if True in touched:
                self._cur_sync.sync()
            if False in touched:
                self._new_sync.sync()
        except OSError as exc:
            raise _error("sync", exc) from None

    def _key_for_copy(self, message: Message, fd, name: str) -> str:
        found = _DISK_SIZE.search(message.key)
        disk = found.group(1) if found else os.stat(name, dir_fd=fd).st_size
        return f"{self._unique_base()},S={disk},W={message.size}"

    def _translation(self, messages: list, destination: "Maildir"):
        """A function from this folder's flag letters to the destination's."""
        if destination.path == self.path:
            return _same
        source = self._keyword_table()
        wanted = sorted({char for message in messages for char in message.flags if "a" <= char <= "z"})
        if any(char not in source.names for char in wanted):
            source.refresh()
        mapping: dict[str, str | None] = {}
        names = [source.names[char] for char in wanted if char in source.names]
        if names:
            destination._letters_for(names, create=True)   # every keyword at once, before any copy
            table = destination._keyword_table()
            for char in wanted:
                if char in source.names:
                    mapping[char] = table.letter_of(source.names[char])

        def translate(flags: str) -> str:
            out = set()
            for char in flags:
                if not "a" <= char <= "z":
                    out.add(char)
                    continue
                if char not in mapping:   # set since the caller's listing
                    name = source.names.get(char)
                    if name is None and source.refresh():
                        name = source.names.get(char)
                    letters = destination._letters_for((name,), create=True) if name else ()
                    mapping[char] = next(iter(letters), None)
                if mapping[char]:
                    out.add(mapping[char])
            return "".join(sorted(out))

        return translate

    def _copy_file(self, path: str, destination: "Maildir", key: str, target: str) -> None:
        temp = os.path.join(destination.path, "tmp", key)
        try:
            os.link(path, temp)
        except FileNotFoundError:
            if not os.path.isdir(os.path.dirname(temp)):
                raise MaildirError(f"cannot copy into {destination.path}: tmp/ is missing") from None
            raise
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP):
                raise _error("copy", exc) from None
            self._copy_bytes(path, temp)
        try:
            os.rename(temp, destination._cur_prefix + target)
        except OSError as exc:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise _error("copy", exc) from None

    @staticmethod
    def _copy_bytes(path: str, temp: str) -> None:
        source = os.open(path, os.O_RDONLY | os.O_CLOEXEC)   # FileNotFoundError: look elsewhere
        try:
            st = os.fstat(source)
            try:
                out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise _error("copy", exc) from None
            try:
                offset = 0
                while offset < st.st_size:
                    sent = os.sendfile(out, source, offset, st.st_size - offset)
                    if not sent:
                        break
                    offset += sent
                os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))   # the INTERNALDATE goes along
                os.fsync(out)
            except OSError as exc:
                try:
                    os.unlink(temp)
                except OSError:
                    pass
                raise _error("copy", exc) from None
            finally:
                os.close(out)
        finally:
            os.close(source)

    def _move_file(self, path: str, destination: "Maildir", key: str, target: str) -> None:
        try:
            os.rename(path, destination._cur_prefix + target)
            return
        except FileNotFoundError:
            raise
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise _error("move", exc) from None
        self._copy_file(path, destination, key, target)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _error("delete", exc) from None

    # -- folders (Maildir++) ----------------------------------------------

    def _folder_path(self, name: str, action: str) -> str:
        problem = _folder_name_problem(name)
        if problem:
            raise MaildirError(f"cannot {action} folder {name!r}: {problem}")
        return os.path.join(self._root, "." + name)

    def _open_folder(self, path: str) -> "Maildir":
        box = Maildir(path, self._hostname)
        box._root = self._root
        return box

    def folder(self, name: str) -> "Maildir":
        """The folder `name` as a Maildir with this whole API: INBOX (any
        case) is the Maildir itself, any other name an existing subfolder
        ("Archives.2024" is .Archives.2024/). MaildirError if none."""
        if name.upper() == "INBOX":
            return self if self._root == self.path else Maildir(self._root, self._hostname)
        path = self._folder_path(name, "open")
        if not os.path.isdir(path):
            raise MaildirError(f"cannot open folder {name!r}: it does not exist")
        return self._open_folder(path)

    def create_folder(self, name: str) -> "Maildir":
        """Create subfolder `name` (IMAP CREATE): .Name/ with cur/ new/ tmp/
        and an empty maildirfolder file, durable on return. Its parents need
        not exist. MaildirError if it exists or the name is not allowed."""
        path = self._folder_path(name, "create")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            raise MaildirError(f"cannot create folder {name!r}: it already exists") from None
        except OSError as exc:
            raise _error("create a folder in", exc) from None
        try:
            for sub in ("cur", "new", "tmp"):
                os.mkdir(os.path.join(path, sub), 0o700)
            os.close(os.open(os.path.join(path, FOLDER_MARK), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            _fsync_dir(path)
            _fsync_dir(self._root)
        except OSError as exc:
            raise _error("create a folder in", exc) from None
        return self._open_folder(path)

    def list_folders(self) -> list[str]:
        """The names of all subfolders (INBOX not among them), sorted.
        Directories whose names are no valid folder name are left out."""
        try:
            entries = list(os.scandir(self._root))
        except OSError as exc:
            raise _error("list folders in", exc) from None
        names = []
        for entry in entries:
            if entry.name[:1] == "." and _folder_name_problem(entry.name[1:]) is None:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        names.append(entry.name[1:])
                except OSError:
                    continue
        return sorted(names)

    def rename_folder(self, old: str, new: str) -> None:
        """Rename a subfolder and its children (IMAP RENAME): "a" -> "b"
        also makes "a.x" "b.x". One rename(2) per directory, so each moves
        whole, with its UIDs. MaildirError if `old` has neither folder nor
        children, a target exists, either is INBOX, or `new` is inside
        `old`."""
        source = self._folder_path(old, "rename")
        target = self._folder_path(new, "rename to")
        if new == old or new.startswith(old + "."):
            raise MaildirError(f"cannot rename folder {old!r} to {new!r}: a folder cannot move into itself")
        prefix = "." + old + "."
        try:
            children = sorted(name for name in os.listdir(self._root)
                              if name.startswith(prefix) and _folder_name_problem(name[1:]) is None)
        except OSError as exc:
            raise _error("list folders in", exc) from None
        moves = [(source, target)] if os.path.isdir(source) else []
        moves += [(os.path.join(self._root, child), os.path.join(self._root, "." + new + child[len(prefix) - 1:]))
                  for child in children]
        if not moves:
            raise MaildirError(f"cannot rename folder {old!r}: it does not exist")
        for _, path in moves:
            if os.path.lexists(path):
                raise MaildirError(f"cannot rename folder {old!r} to {new!r}: "
                                   f"{os.path.basename(path)[1:]!r} already exists")
        try:
            for before, after in moves:
                os.rename(before, after)
            _fsync_dir(self._root)
        except OSError as exc:
            raise _error("rename a folder in", exc) from None

    def delete_folder(self, name: str) -> None:
        """Delete a subfolder and its messages (IMAP DELETE): its own
        directory only, its children stay. The directory is first renamed
        out of sight, so the folder vanishes at once and whole. MaildirError
        if it does not exist or is INBOX."""
        path = self._folder_path(name, "delete")
        if os.path.islink(path) or not os.path.isdir(path):
            raise MaildirError(f"cannot delete folder {name!r}: it does not exist")
        # A name starting ".." is no folder name: list_folders() skips it.
        doomed = os.path.join(self._root, f"..deleted.{os.getpid()}.{os.urandom(4).hex()}")
        try:
            os.rename(path, doomed)
            _fsync_dir(self._root)
        except OSError as exc:
            raise _error("delete a folder in", exc) from None
        import shutil
        shutil.rmtree(doomed, ignore_errors=True)

    # -- UIDs (IMAP) ------------------------------------------------------

    def uid_listing(self) -> UidListing:
        """The folder's messages in UID order, with UIDVALIDITY and next UID.

        Messages not yet numbered get UIDs now, in delivery order, durable
        before this returns; a lost or corrupt uidlist gives a new
        UIDVALIDITY and fresh numbering. Returns the very same object as
        last time while nothing changed: once the folder has been still for
        2 s that costs two fstat()s and one stat(). After a change, one
        listing of each directory that changed, and work only for the names
        that differ."""
        with self._index_lock:
            index = self._uid_index
            if index is None:
                from .uidlist import UidList
                index = self._uid_index = _UidIndex(UidList(self.path, self._folder_fd()))
            listing = index.listing
            if listing is not None:
                new_stamp, cur_stamp = index.stamps["new"], index.stamps["cur"]
                try:
                    if (new_stamp[1] and cur_stamp[1]
                            and os.fstat(self._new_fd).st_mtime_ns == new_stamp[0]
                            and os.fstat(self._cur_fd).st_mtime_ns == cur_stamp[0]
                            and not index.uidlist.stale()):
                        return listing
                except OSError as exc:
                    raise _error("list", exc) from None
            try:
                listing = self._refresh_index(index)
            except BaseException:
                index.forget()
                raise
            self._latest = index
            self._moved = {}
            return listing

    def _refresh_index(self, index: _UidIndex) -> UidListing:
        from .uidlist import OK
        uidlist = index.uidlist
        if uidlist.stale():
            # Read before listing: every UID read is then one of a file the
            # listing shows, or of one expunged, so next_uid is safe to show.
            uidlist.read()
        touched: dict = {}   # key -> its entry before this refresh, or None
        self._index_scan(index, touched, force=False)
        if index.generation != uidlist.generation or index.validity != uidlist.validity:
            unnumbered = not index.by_key.keys() <= uidlist.uids.keys()
        else:
            uids, by_key = uidlist.uids, index.by_key
            unnumbered = any(key not in uids for key in touched if key in by_key)
        if uidlist.state != OK or unnumbered or self._compactable(index):
            with self._folder_lock():
                if uidlist.stale():
                    uidlist.read()
                # Listed again under the lock, so that no one numbers other
                # files meanwhile: UIDs follow delivery order, and every
                # UID below next_uid is listed or expunged.
                self._index_scan(index, touched, force=True)
                if uidlist.state != OK:
                    uidlist.reset(sorted(index.by_key, key=_order))
                else:
                    try:
                        uidlist.append(sorted(index.by_key.keys() - uidlist.uids.keys(), key=_order))
                    except OverflowError:
                        uidlist.reset(sorted(index.by_key, key=_order))
                if self._compactable(index):
                    present = set(index.by_key)
                    if not index.whole:
                        # A file hides from a listing only while renamed:
                        # a line is kept if another listing shows its key.
                        for prefix in (self._new_prefix, self._cur_prefix):
                            try:
                                present.update(name.partition(":")[0] for name in os.listdir(prefix))
                            except OSError as exc:
                                raise _error("list", exc) from None
                    uidlist.compact(present)
        self._adopt_uids(index, touched)
        return self._index_listing(index, touched)

    @staticmethod
    def _compactable(index: _UidIndex) -> bool:
        live = len(index.by_key)
        return len(index.uidlist.uids) - live > live

    def _index_scan(self, index: _UidIndex, touched: dict, force: bool) -> None:
        """List new/ and cur/ (those that may have changed, unless `force`)
        and bring the index's tables in line, noting every key touched."""
        by_key = index.by_key
        whole = True
        for which, fd, prefix in (("new", self._new_fd, self._new_prefix), ("cur", self._cur_fd, self._cur_prefix)):
            stamp = index.stamps[which]
            table = index.tables[which]
            if not force and stamp is not None and stamp[1]:
                try:
                    if os.fstat(fd).st_mtime_ns == stamp[0]:
                        continue
                except OSError as exc:
                    raise _error("list", exc) from None
            names, mtime, settled, complete = self._list_dir(fd, prefix)
            index.stamps[which] = (mtime, settled)
            if which == "cur":
                whole = complete   # see _NameScan.whole
            listed = set(names)
            departed, arrived = table.keys() - listed, listed - table.keys()
            for name in departed:
                entry = table.pop(name)
                if entry is not None and by_key.get(entry.key) is entry:
                    del by_key[entry.key]
                    touched.setdefault(entry.key, entry)
            for name in arrived:
                entry = table[name] = self._index_entry(index, prefix, name, touched)
                if entry is not None:
                    by_key[entry.key] = entry
                    touched.setdefault(entry.key, None)
        index.whole = whole

    def _index_entry(self, index: _UidIndex, prefix: str, name: str, touched: dict) -> Message | None:
        if name[:1] == "." or "\n" in name:
            return None   # not a message; a newline could not go into the uidlist
        key, _, info = name.partition(":")
        if not key:
            return None
        known = index.by_key.get(key)
        if known is not None:
            # Two names for one key: a rename seen before and after, or a
            # copy made by other software. The one that is there wins; if
            # both are, the first.
            if self._exists(known.path):
                return None
            self._index_drop(index, known)
            touched.setdefault(key, known)
        flags = info[2:] if info[:2] == "2," else ""
        before = touched.get(key) or index.listed.get(key)
        if before is not None:   # the same file under a new name: its size and UID stay
            return Message(key, before.size, prefix + name, flags, before.uid)
        size = _wire_size(key, prefix + name)
        if size is None:
            return None
        return Message(key, size, prefix + name, flags, index.uidlist.uids.get(key, 0))

    def _exists(self, path: str) -> bool:
        fd, name, _ = self._split(path)
        try:
            os.stat(name, dir_fd=fd)
        except FileNotFoundError:
            return False
        except OSError:
            return True
        return True

    def _index_table(self, index: _UidIndex, entry: Message) -> tuple:
        if entry.path.startswith(self._cur_prefix):
            return index.tables["cur"], entry.path[len(self._cur_prefix):]
        return index.tables["new"], entry.path[len(self._new_prefix):]

    def _index_drop(self, index: _UidIndex, entry: Message) -> None:
        table, name = self._index_table(index, entry)
        if table.get(name) is entry:
            del table[name]
        if index.by_key.get(entry.key) is entry:
            del index.by_key[entry.key]

    def _index_put(self, index: _UidIndex, entry: Message) -> None:
        table, name = self._index_table(index, entry)
        table[name] = entry
        index.by_key[entry.key] = entry

    def _adopt_uids(self, index: _UidIndex, touched: dict) -> None:
        """Give every entry the UID the uidlist has for its key."""
        uidlist = index.uidlist
        if index.validity != uidlist.validity or index.generation != uidlist.generation:
            keys = list(index.by_key)   # the file was read whole: check them all
            index.validity, index.generation = uidlist.validity, uidlist.generation
        else:
            keys = [key for key in touched if key in index.by_key]
        uids = uidlist.uids
        for key in keys:
            entry = index.by_key[key]
            uid = uids.get(key, 0)
            if entry.uid != uid:
                self._index_put(index, Message(key, entry.size, entry.path, entry.flags, uid))
                touched.setdefault(key, None)

    def _index_listing(self, index: _UidIndex, touched: dict) -> UidListing:
        by_key, listed, previous = index.by_key, index.listed, index.listing
        if not index.whole:
            # A name may have been renamed under the listing unseen: a key
            # it lacks is gone only if its last known file is.
            for key in touched:
                if key not in by_key and key in listed and self._exists(listed[key].path):
                    self._index_put(index, listed[key])
        next_uid = index.uidlist.next_uid
        if previous is None or previous.validity != index.validity:
            messages = sorted(by_key.values(), key=_uid_of)
            uids = None
            changes = None
            if previous is not None:
                changes = ListingChanges(list(previous.uids), list(messages), [], True)
        else:
            expunged, added, changed = [], [], []
            for key in touched:
                now, before = by_key.get(key), listed.get(key)
                if now == before:
                    continue
                if now is None:
                    expunged.append(before.uid)
                elif before is None:
                    added.append(now)
                elif now.uid != before.uid:
                    expunged.append(before.uid)
                    added.append(now)
                elif now.flags != before.flags:
                    changed.append(now)
                else:
                    changed.append(None)   # moved (e.g. new/ to cur/), flags as they were
            if not (expunged or added or changed) and next_uid == previous.next_uid:
                return previous
            changed = [entry for entry in changed if entry is not None]
            expunged.sort()
            added.sort(key=_uid_of)
            changed.sort(key=_uid_of)
            changes = ListingChanges(expunged, added, changed)
            # The previous listing patched, not rebuilt: a few changes in
            # 10,000 messages should not cost 10,000 steps of Python.
            messages, uids = list(previous.messages), list(previous.uids)
            for key in touched:
                entry = by_key.get(key)
                if entry is not None and key in listed and entry.uid == listed[key].uid:
                    messages[bisect_left(uids, entry.uid)] = entry
            for uid in reversed(expunged):
                at = bisect_left(uids, uid)
                del messages[at], uids[at]
            if added and uids and added[0].uid < uids[-1]:
                messages = sorted(messages + added, key=_uid_of)
                uids = None
            else:
                messages += added
                uids += [entry.uid for entry in added]
        listing = UidListing(index.validity, next_uid, messages, previous, changes)
        listing._uids = uids
        if previous is not None:
            previous._previous = previous._changes = None   # one step of history, not a chain
        index.listing = listing
        index.listed = dict(by_key)
        return listing


def _same(flags: str) -> str:
    return flags


def _order(key: str) -> tuple:
    """Delivery order from the name: seconds, microseconds, then the name itself."""
    # BareMail's own names, "<sec>.M<usec>P...", without a regular expression.
    dot = key.find(".M")
    if dot > 0:
        sec = key[:dot]
        end = key.find("P", dot)
        usec = key[dot + 2:end]
        if end > dot + 2 and sec.isdigit() and sec.isascii() and usec.isdigit() and usec.isascii():
            return (int(sec), int(usec), key)
    match = _NAME.match(key)
    if not match:
        return (float("inf"), 0, key)
    return (int(match.group(1)), int(match.group(2) or 0), key)


def delivery_order(key: str) -> tuple:
    """The sort key of a message in delivery order: (seconds, microseconds,
    key) from BareMail's names; a name with no time in it sorts last (it
    is treated as just delivered)."""
    return _order(key)


def _wire_size(key: str, path: str) -> int | None:
    """A message's wire size from ,W= in its key, else counted from the file."""
    at = key.find(",W=")
    digits = key[at + 3:] if at >= 0 else ""
    if digits.isdigit() and digits.isascii():
        return int(digits)
    match = _SIZE.search(key)
    return int(match.group(1)) if match else Maildir._measure(path)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _folder_name_problem(name: str) -> str | None:
    """Why `name` cannot be a subfolder's name, or None if it can."""
    if not name:
        return "a folder name cannot be empty"
    if "/" in name:
        return "a folder name cannot contain '/'"
    if any(char < " " or char == "\x7f" for char in name):
        return "a folder name cannot contain NUL or other control characters"
    if name[0] == "." or name[-1] == "." or ".." in name:
        return "'.' separates levels, so a folder name cannot start or end with '.' or have an empty level"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "a folder name must be valid UTF-8"
    if name.upper() == "INBOX":
        return "INBOX is the Maildir itself"
    return None
