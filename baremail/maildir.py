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
_BARE_LF = re.compile(rb"(?<!\r)\n")


class MaildirError(Exception):
    """A Maildir operation failed; the text is one sentence for a log line."""

    def __init__(self, message: str, disk_full: bool = False):
        super().__init__(message)
        self.disk_full = disk_full


@dataclass(unsafe_hash=True)
class Message:
    """One message as seen by a snapshot. `size` is its wire size (CRLF).
    Immutable by convention: not a frozen dataclass because a snapshot makes
    one per message at every login, and a frozen __init__ costs three times
    as much."""

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


_WRITE_AT = 1 << 18   # octets of message held in memory before they go to tmp/


class Delivery:
    """A message being written to tmp/. Feed it wire-form bytes, then commit or abort.

    Converting CRLF to LF happens here, so the caller hands over exactly
    what the client sent (dot-unstuffed). Up to 256 KiB are held in memory;
    the file in tmp/ is created and written when more arrive, or at commit:
    a small message touches the file system only in whoever commits it (an
    event loop that created files would wait whenever the file system waits
    for a journal commit, which the fsyncs of other messages start)."""

    def __init__(self, maildir: "Maildir", base: str):
        self._maildir = maildir
        self._base = base
        self._tmp = os.path.join(maildir.path, "tmp", base)
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

    def finish(self) -> str:
        """The first half of commit(): the message's data is on disk and its
        name in new/ (returned as its key), but that name is not yet durable:
        Maildir.sync_new() makes it so, for any number of messages at once.
        Until then the message must not be acknowledged."""
        self._write_all()
        return self._seal()

    def _write_all(self) -> None:
        """Everything held goes to the file (created now if need be)."""
        if self._held_cr:
            self._held_cr = False
            self._put(b"\r")
        if self._held or self._fd < 0:
            self._write_held()

    def _start_writeback(self) -> None:
        # A hint, for Maildir.commit_all(): on Linux, POSIX_FADV_DONTNEED
        # starts writing the file's dirty pages at once. Started for every
        # message of a batch before the first fsync, their blocks are all
        # allocated in the journal transaction that fsync commits, so the
        # fsyncs after it find their work done instead of each committing
        # a transaction of its own. Durability still comes from _seal().
        try:
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except (OSError, AttributeError):
            pass

    def _seal(self) -> str:
        key = f"{self._base},S={self.disk_size},W={self.wire_size}"
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            os.rename(self._tmp, os.path.join(self._maildir.path, "new", key))
        except OSError as exc:
            self.abort()
            raise _error("store a message in", exc) from None
        self._done = True
        return key

    def commit(self) -> str:
        """Make the message durable in new/ and return its key.

        Returns only after the file's data and its directory entry in new/
        are on disk: a reply of 250 may follow."""
        (outcome,) = self._maildir.publish([self.finish()])
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
            self._cur_fd = os.open(os.path.join(self.path, "cur"), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise _error("use Maildir", exc) from None
        self._new_prefix = os.path.join(self.path, "new", "")
        self._cur_prefix = os.path.join(self.path, "cur", "")
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

    def publish(self, keys: list) -> list:
        """After Delivery.finish() for each of `keys`: one sync_new() makes
        them all durable. Returns, per key, the key or the MaildirError that
        keeps it from being acknowledged (then its name is gone from new/
        again, so a retrying client does not get it stored twice)."""
        try:
            self.sync_new()
        except OSError as exc:
            error = _error("sync", exc)
            for key in keys:
                try:
                    os.unlink(os.path.join(self.path, "new", key))
                except OSError:
                    pass
            return [error] * len(keys)
        return list(keys)

    def commit_all(self, deliveries: list) -> list:
        """Commit several deliveries of this Maildir with one fsync of new/.
        Returns, per delivery, its key or the MaildirError it failed with;
        each key is as durable as Delivery.commit() makes it."""
        outcomes: list = [None] * len(deliveries)
        for index, delivery in enumerate(deliveries):
            try:
                delivery._write_all()
            except MaildirError as exc:
                outcomes[index] = exc
        if len(deliveries) > 1:
            for index, delivery in enumerate(deliveries):
                if outcomes[index] is None:
                    delivery._start_writeback()
        for index, delivery in enumerate(deliveries):
            if outcomes[index] is None:
                try:
                    outcomes[index] = delivery._seal()
                except MaildirError as exc:
                    outcomes[index] = exc
        keys = [outcome for outcome in outcomes if isinstance(outcome, str)]
        if keys:
            published = iter(self.publish(keys))
            outcomes = [next(published) if isinstance(outcome, str) else outcome for outcome in outcomes]
        return outcomes

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
        for prefix in (self._new_prefix, self._cur_prefix):
            try:
                names = os.listdir(prefix)
            except OSError as exc:
                raise _error("list", exc) from None
            for name in names:
                if name[:1] == ".":
                    continue
                key = name.partition(":")[0]
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
                found.append((_order(key), Message(key, size, prefix + name)))
        found.sort(key=_first)
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
            fd = None
        except OSError as exc:
            raise _error("open", exc) from None
        if fd is None:
            # Moved to cur/ (or flagged) since the snapshot, or gone.
            path = self.locate(message)
            try:
                if path is None:
                    raise FileNotFoundError(errno.ENOENT, "no such message", message.key)
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
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
        if message.path.startswith(self._cur_prefix):
            return  # seen in cur/ by the snapshot: nothing moves it back
        if message.path.startswith(self._new_prefix):
            try:
                os.rename(message.path, self._cur_prefix + message.key + ":2,S")
                return
            except FileNotFoundError:
                pass  # moved by another session, or gone: find out below
            except OSError as exc:
                raise _error("move", exc) from None
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
        for fd in (self._new_fd, self._cur_fd):
            if fd >= 0:
                os.close(fd)
        self._new_fd = self._cur_fd = -1


def _first(pair: tuple):
    return pair[0]


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
