"""The one Maildir both services share: durable delivery, listing, reading, removal.

On disk a message has LF line ends (the Maildir convention). Its *wire form*
is what SMTP received and POP3 sends: every LF not preceded by CR becomes
CRLF. Names carry both sizes (Maildir++): ``,S=`` octets on disk and ``,W=``
octets of the wire form, so listing a mailbox never opens a file.

Name layout: ``<sec>.M<usec>P<pid>Q<n>R<hex>.<host>,S=<n>,W=<n>`` in new/,
the same plus ``:2,<flags>`` in cur/. The part before ``:`` is the message's
*key*: unique, and unchanged by the move from new/ to cur/.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Iterable

TMP_MAX_AGE = 36 * 3600  # the Maildir convention's grace period for tmp/
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_NAME = re.compile(r"(\d+)(?:\.M(\d+))?")
_SIZE = re.compile(r",W=(\d+)")


class MaildirError(Exception):
    """A Maildir operation failed; the text is one sentence for a log line."""

    def __init__(self, message: str, disk_full: bool = False):
        super().__init__(message)
        self.disk_full = disk_full


@dataclass(frozen=True)
class Message:
    """One message as seen by a snapshot. `size` is its wire size (CRLF)."""

    key: str
    size: int
    path: str


def _host_part(name: str) -> str:
    # The Maildir convention escapes '/' and ':'; ',' is escaped too because
    # Maildir++ size fields are comma-separated.
    return name.replace("/", r"\057").replace(":", r"\072").replace(",", r"\054")


def _error(action: str, exc: OSError) -> MaildirError:
    where = f" {exc.filename}" if exc.filename else ""
    return MaildirError(f"cannot {action}{where}: {exc.strerror or exc}",
                        disk_full=exc.errno in _DISK_FULL)


class Delivery:
    """A message being written to tmp/. Feed it wire-form bytes, then commit or abort.

    Converting CRLF to LF happens here, so the caller hands over exactly
    what the client sent (dot-unstuffed)."""

    def __init__(self, maildir: "Maildir", base: str):
        self._maildir = maildir
        self._base = base
        self._tmp = os.path.join(maildir.path, "tmp", base)
        try:
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _error("create a file in", exc) from None
        self._file = open(fd, "wb", buffering=1 << 18)
        self._held_cr = False   # a wire chunk ended in CR: it may be half of a CRLF
        self._last_cr = False   # the last byte written to disk was CR
        self.disk_size = 0
        self.wire_size = 0
        self._done = False

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
        try:
            self._file.write(disk)
        except OSError as exc:
            self.abort()
            raise _error("write", exc) from None

    def commit(self) -> str:
        """Make the message durable in new/ and return its key.

        Returns only after the file's data and its directory entry in new/
        are on disk: a reply of 250 may follow."""
        if self._held_cr:
            self._held_cr = False
            self._put(b"\r")
        key = f"{self._base},S={self.disk_size},W={self.wire_size}"
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.rename(self._tmp, os.path.join(self._maildir.path, "new", key))
        except OSError as exc:
            self.abort()
            raise _error("store a message in", exc) from None
        self._done = True
        try:
            self._maildir.sync_new()
        except OSError as exc:
            # The name is in new/ but may not survive a crash: the message
            # must not be acknowledged, and must not be delivered twice
            # when the client retries.
            try:
                os.unlink(os.path.join(self._maildir.path, "new", key))
            except OSError:
                pass
            raise _error("sync", exc) from None
        return key

    def abort(self) -> None:
        """Forget the message; nothing of it stays in the Maildir. Idempotent."""
        if self._done:
            return
        self._done = True
        try:
            self._file.close()
        except OSError:
            pass
        try:
            os.unlink(self._tmp)
        except OSError:
            pass


class WireReader:
    """Reads a stored message in its wire form (CRLF line ends)."""

    def __init__(self, handle):
        self._handle = handle
        self._last_cr = False

    def read(self, size: int = 1 << 18) -> bytes:
        data = self._handle.read(size)
        if not data:
            return b""
        if b"\r" not in data:
            out = data.replace(b"\n", b"\r\n")
            if self._last_cr and data[:1] == b"\n":
                out = out[1:]
        else:
            out = re.sub(rb"(?<!\r)\n", b"\r\n", data)
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


class Maildir:
    """One Maildir directory. Safe to use from several processes at once."""

    _counter = itertools.count(1)

    def __init__(self, path: str, hostname: str | None = None):
        self.path = os.path.abspath(path)
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
        except OSError as exc:
            raise _error("use Maildir", exc) from None
        self._sync_lock = threading.Lock()
        self._sync_done = threading.Condition(self._sync_lock)
        self._sync_running = False
        self._syncs_started = 0
        self._syncs_done = 0

    # -- delivery ---------------------------------------------------------

    def _unique_base(self) -> str:
        now = time.time()
        sec = int(now)
        usec = int((now - sec) * 1_000_000)
        # pid + per-process counter make names unique between processes and
        # within one; the random part covers pid reuse after a restart.
        return (f"{sec}.M{usec:06d}P{os.getpid()}Q{next(self._counter)}"
                f"R{os.urandom(4).hex()}.{self._host}")

    def begin(self) -> Delivery:
        return Delivery(self, self._unique_base())

    def deliver(self, chunks: Iterable[bytes]) -> str:
        """Store a message given as wire-form chunks; returns its key once durable."""
        delivery = self.begin()
        try:
            for chunk in chunks:
                delivery.write(chunk)
        except BaseException:
            delivery.abort()
            raise
        return delivery.commit()

    def sync_new(self) -> None:
        """fsync new/ so that every rename into it done before this call survives a crash.

        Group commit: concurrent callers share one fsync of the directory,
        but each waits for an fsync that *started after* it was called, so
        its own rename is covered."""
        with self._sync_lock:
            needed = self._syncs_started + 1
            while self._syncs_done < needed:
                if self._sync_running:
                    self._sync_done.wait()
                    continue
                self._sync_running = True
                self._syncs_started += 1
                generation = self._syncs_started
                self._sync_lock.release()
                try:
                    os.fsync(self._new_fd)
                finally:
                    self._sync_lock.acquire()
                    self._sync_running = False
                    self._sync_done.notify_all()
                self._syncs_done = generation

    # -- reading ----------------------------------------------------------

    def snapshot(self) -> list[Message]:
        """Every message in new/ and cur/, oldest delivery first."""
        found = []
        for sub in ("new", "cur"):
            directory = os.path.join(self.path, sub)
            try:
                entries = list(os.scandir(directory))
            except OSError as exc:
                raise _error("list", exc) from None
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                key = name.split(":", 1)[0]
                match = _SIZE.search(key)
                if match:
                    size = int(match.group(1))
                else:
                    size = self._measure(entry.path)
                    if size is None:
                        continue
                found.append((_order(key), Message(key, size, entry.path)))
        found.sort(key=lambda pair: pair[0])
        return [message for _, message in found]

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

    def locate(self, message: Message) -> str | None:
        """The current path of `message` (it may have moved to cur/), or None."""
        if os.path.exists(message.path):
            return message.path
        for candidate in (os.path.join(self.path, "new", message.key),
                          os.path.join(self.path, "cur", message.key + ":2,S")):
            if os.path.exists(candidate):
                return candidate
        prefix = message.key + ":"
        try:
            for entry in os.scandir(os.path.join(self.path, "cur")):
                if entry.name.startswith(prefix):
                    return entry.path
        except OSError:
            pass
        return None

    def open_wire(self, message: Message) -> WireReader:
        """Open a message for reading in wire form; MaildirError if it is gone."""
        path = self.locate(message)
        try:
            if path is None:
                raise FileNotFoundError(errno.ENOENT, "no such message", message.key)
            return WireReader(open(path, "rb"))
        except OSError as exc:
            raise _error("open", exc) from None

    # -- upkeep -----------------------------------------------------------

    def mark_seen(self, message: Message) -> None:
        """Move a message from new/ to cur/ with the Seen flag. Silent if gone or done."""
        path = self.locate(message)
        if path is None or os.path.basename(os.path.dirname(path)) != "new":
            return
        try:
            os.rename(path, os.path.join(self.path, "cur", message.key + ":2,S"))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _error("move", exc) from None

    def remove(self, message: Message) -> bool:
        """Delete a message. False if it was already gone (another session)."""
        path = self.locate(message)
        if path is None:
            return False
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _error("delete", exc) from None
        return True

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

    def close(self) -> None:
        if self._new_fd >= 0:
            os.close(self._new_fd)
            self._new_fd = -1


def _order(key: str) -> tuple:
    """Delivery order from the name: seconds, microseconds, then the name itself."""
    match = _NAME.match(key)
    if not match:
        return (float("inf"), 0, key)
    return (int(match.group(1)), int(match.group(2) or 0), key)
