"""The baremail-uidlist file: persistent IMAP UIDs for one Maildir folder.

Format (UTF-8, LF line ends), in the folder's own directory:

    1 V<uidvalidity> N<next uid>
    <uid> <key>
    <uid> <key>
    ...

The first line holds the format version (1), UIDVALIDITY and the next UID
as of the last rewrite. Each further line gives one message's UID by its
key (the file name up to ':'), UIDs strictly ascending. Lines are only
appended, with O_APPEND and fdatasync before any of their UIDs reaches a
caller; the next UID is max(N, last UID + 1), so it only grows. When lines
of vanished messages outnumber live ones the file is rewritten compactly
(temp file, fsync, rename over it, fsync of the directory).

Every change happens under an exclusive flock of baremail-uidlist.lock:
the list itself cannot carry the lock because a rewrite replaces it.
Readers take no lock. They use complete lines only (a torn last line is
an append in progress, or the remnant of a writer that died, which the
next writer cuts off) and fdatasync the file before using lines they did
not write, so that a UID anyone has seen is a UID on disk.

A file that cannot be trusted (bad header, unparsable line, duplicate key,
UID not ascending) is never partly used: the folder gets a new
UIDVALIDITY and fresh numbering, so UIDs may be renumbered but are never
wrong.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time

from .maildir import _error

LIST_NAME = "baremail-uidlist"
LOCK_NAME = "baremail-uidlist.lock"
_TEMP_NAME = "baremail-uidlist.tmp"
_VERSION = "1"
MAX_UID = 2**32 - 1          # RFC 3501 nz-number: UIDs and UIDVALIDITY are 32 bits

OK, MISSING, BROKEN = "ok", "missing", "broken"

# Every UIDVALIDITY this process has read or issued: a new one must differ
# from all of them, or a client could keep UIDs from before a reset.
_validities_seen: set[int] = set()
_validities_lock = threading.Lock()


class FolderLock:
    """The folder's exclusive lock: flock on baremail-uidlist.lock, and one
    thread of this process at a time. Re-entrant within a thread. Guards
    the uidlist and dovecot-keywords of the folder."""

    def __init__(self, directory: str):
        self._path = os.path.join(directory, LOCK_NAME)
        self._fd = -1
        self._threads = threading.RLock()
        self._depth = 0

    def __enter__(self) -> "FolderLock":
        self._threads.acquire()
        if self._depth == 0:
            try:
                if self._fd < 0:
                    self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except OSError as exc:
                self._threads.release()
                raise _error("lock", exc) from None
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        try:
            if self._depth == 0:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class UidList:
    """The uidlist of one folder as this process last read it.

    `uids` maps key -> UID, in ascending UID order; `validity` and
    `next_uid` are the file's; `state` is OK, MISSING or BROKEN. read()
    never raises for bad content (it sets BROKEN); append(), reset() and
    compact() need the folder's lock held and raise MaildirError."""

    def __init__(self, directory: str, dir_fd: int):
        self.directory = directory
        self._dir_fd = dir_fd
        self.state = MISSING
        self.validity: int | None = None
        self.next_uid = 1
        self.uids: dict[str, int] = {}
        self._known_validity: int | None = None   # the last readable one, for a reset
        self._fd = -1          # the file read, held open: its inode cannot be reused meanwhile
        self._ino: int | None = None
        self._stamp: tuple | None = None   # (ino, size, mtime, ctime) as last read or written
        self._size = -1        # the file's size when last read, torn line included
        self._offset = 0       # end of the last complete line taken in
        self._last_uid = 0
        self._header_next = 1
        self._read_once = False
        self.generation = 0    # goes up whenever `uids` is started afresh

    # -- reading ----------------------------------------------------------

    def stale(self) -> bool:
        """Whether the file may hold something read() has not taken in (one stat)."""
        try:
            st = os.stat(LIST_NAME, dir_fd=self._dir_fd)
        except FileNotFoundError:
            return self.state != MISSING or not self._read_once
        except OSError:
            return True
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) != self._stamp

    def read(self) -> None:
        """Take in what others wrote: new lines, or the whole file if it was replaced."""
        self._read_once = True
        try:
            fd = os.open(LIST_NAME, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._dir_fd)
        except FileNotFoundError:
            self._forget(MISSING)
            return
        except OSError as exc:
            raise _error("open the uidlist in", exc) from None
        try:
            st = os.fstat(fd)
            if self._fd >= 0 and st.st_ino == self._ino and st.st_size > self._size and self.state == OK:
                os.close(fd)
                start = self._offset   # the file we hold has grown: only its tail is new
            else:
                # Replaced, or changed in place (never by a BareMail writer):
                # read it all again.
                self._forget(MISSING)
                self._fd, self._ino, start = fd, st.st_ino, 0
            # Taken before reading: anything written meanwhile makes it stale.
            self._stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            data = _read_from(self._fd, start)
        except OSError as exc:
            raise _error("read the uidlist in", exc) from None
        taken = self._take(data, start)
        if taken and self.state == OK:
            try:
                # Lines another process appended may not be on disk yet if
                # it died between write and fdatasync: make them durable
                # before anyone is told their UIDs.
                os.fdatasync(self._fd)
            except OSError as exc:
                raise _error("sync the uidlist in", exc) from None

    def _take(self, data: bytes, start: int) -> int:
        """Parse complete lines of `data` (file content from `start`); returns how many."""
        self._size = start + len(data)
        end = data.rfind(b"\n") + 1
        lines = data[:end].decode("utf-8", "surrogateescape").split("\n")
        lines.pop()
        if start == 0:
            if not lines or not self._header(lines[0]):
                self._broken()
                return 0
            del lines[0]
        uids = self.uids
        last = self._last_uid
        for line in lines:
            number, space, key = line.partition(" ")
            if not (space and key and number.isdigit() and number.isascii()):
                self._broken()
                return 0
            uid = int(number)
            if uid <= last or uid > MAX_UID or key in uids:
                self._broken()
                return 0
            uids[key] = uid
            last = uid
        self._last_uid = last
        self._offset = start + end
        self.next_uid = max(self._header_next, last + 1)
        return len(lines)

    def _header(self, line: str) -> bool:
        fields = line.split(" ")
        if (len(fields) != 3 or fields[0] != _VERSION or fields[1][:1] != "V" or fields[2][:1] != "N"
                or not (fields[1][1:].isdigit() and fields[1][1:].isascii())
                or not (fields[2][1:].isdigit() and fields[2][1:].isascii())):
            return False
        validity, next_uid = int(fields[1][1:]), int(fields[2][1:])
        if not (0 < validity <= MAX_UID and 0 < next_uid <= MAX_UID + 1):
            return False
        self.state = OK
        self.validity = self._known_validity = validity
        with _validities_lock:
            _validities_seen.add(validity)
        self._header_next = self.next_uid = next_uid
        return True

    def _broken(self) -> None:
        known = self._known_validity
        self._forget(BROKEN)
        self._known_validity = known

    def _forget(self, state: str) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._ino, self._size, self._offset, self._stamp = -1, None, -1, 0, None
        self.state = state
        self.validity = None
        self.uids = {}
        self.generation += 1
        self._last_uid = 0
        self._header_next = self.next_uid = 1

    # -- writing (the folder's lock held, after read()) -------------------

    def append(self, keys: list[str]) -> None:
        """Give the next UIDs to `keys`, in that order; durable when it returns.
        Raises OverflowError (nothing written) when UIDs would pass 2^32-1."""
        if not keys:
            return
        first = self.next_uid
        if first + len(keys) - 1 > MAX_UID:
            raise OverflowError("UIDs exhausted")
        data = "".join(f"{first + n} {key}\n" for n, key in enumerate(keys)).encode("utf-8", "surrogateescape")
        try:
            fd = os.open(LIST_NAME, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC, dir_fd=self._dir_fd)
            try:
                if os.fstat(fd).st_size > self._offset:
                    os.ftruncate(fd, self._offset)   # a torn line from a writer that died
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fdatasync(fd)
                st = os.fstat(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _error("write the uidlist in", exc) from None
        for n, key in enumerate(keys):
            self.uids[key] = first + n
        self._last_uid = first + len(keys) - 1
        self.next_uid = self._last_uid + 1
        self._offset += len(data)
        self._size = self._offset
        self._stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def reset(self, keys: list[str]) -> None:
        """A new UIDVALIDITY and UIDs 1..n for `keys` (every key the folder
        holds, in delivery order): for a uidlist that is missing or broken."""
        old = self._known_validity
        validity = max(old + 1, int(time.time())) if old else int(time.time())
        with _validities_lock:
            while validity in _validities_seen or validity > MAX_UID:
                validity = validity + 1 if validity < MAX_UID else 1
            _validities_seen.add(validity)
        self._rewrite(validity, len(keys) + 1, [(n + 1, key) for n, key in enumerate(keys)])

    def compact(self, present: set[str]) -> bool:
        """Rewrite without the lines of keys not in `present`, if those
        outnumber the rest; returns whether it did."""
        live = [(uid, key) for key, uid in self.uids.items() if key in present]
        if len(self.uids) - len(live) <= len(live) or self.state != OK:
            return False
        self._rewrite(self.validity, self.next_uid, live)
        return True

    def _rewrite(self, validity: int, next_uid: int, lines: list) -> None:
        text = f"{_VERSION} V{validity} N{next_uid}\n" + "".join(f"{uid} {key}\n" for uid, key in lines)
        data = text.encode("utf-8", "surrogateescape")
        try:
            fd = os.open(_TEMP_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600,
                         dir_fd=self._dir_fd)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(_TEMP_NAME, LIST_NAME, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
            os.fsync(self._dir_fd)
        except OSError as exc:
            raise _error("rewrite the uidlist in", exc) from None
        self.read()

    def close(self) -> None:
        self._forget(MISSING)
        self._read_once = False


def _read_from(fd: int, start: int) -> bytes:
    pieces = []
    while True:
        piece = os.pread(fd, 1 << 20, start)
        if not piece:
            return b"".join(pieces)
        pieces.append(piece)
        start += len(piece)

