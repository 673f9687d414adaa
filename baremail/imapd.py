"""baremail-imap: the IMAP engine's storage, events and push, over the Maildir.

The engine (imap.py) decides the protocol; this module gives it the store
it asks (folders, UIDs, flags, message data, through the Maildir library)
and performs its events: Stream (FETCH output with flow control), Watch
(which folder a session shows) and CommitAppend (the same durable path as
SMTP's deliveries, in the committer thread).

Change detection: a session in IDLE must hear of new mail within a second
(Thunderbird, K-9 and Apple Mail show it when it comes). The folders some
session shows are polled every 50 ms: one fstat() of new/ and of cur/ each,
which costs about 2 us per folder and tick, with no new dependency (inotify
would need ctypes) and no file descriptors per watch. A change in either
directory's mtime, or the end of the 2 s in which a directory's coarse
timestamp cannot be trusted (see Maildir.uid_listing), wakes the sessions
showing that folder, and each asks the library what changed.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import time
from collections import OrderedDict

from . import committer, imap, mime
from .imap import Changes, FolderInfo, MailboxStatus, StoreError
from .imapsearch import TextNeedle
from .journal import fields, mail_event
from .maildir import Maildir, MaildirError, Message
from .service import Server, Session

log = logging.getLogger("baremail-imap")

SUBSCRIPTIONS = "baremail-subscriptions"
_POLL = 0.05              # seconds between looks at the watched folders
_SETTLE_NS = 2_100_000_000  # a directory mtime younger than this may still hide a change
_STRUCTURES = 2048        # MIME structures kept per folder (by key)
_HEADER_FIELDS = 20000    # HEADER.FIELDS answers kept per folder (a few hundred octets each)
_SMALL = 256 * 1024       # messages read whole, not streamed
_CHUNK = 256 * 1024
_BATCH = 64 * 1024        # FETCH responses gathered into one write


def _store_error(exc: MaildirError, default: str = "SERVERBUG") -> StoreError:
    if exc.disk_full:
        return StoreError("OVERQUOTA", str(exc))
    if exc.limit:
        return StoreError("LIMIT", str(exc))
    return StoreError(default, str(exc))


def _in_new(message: Message) -> bool:
    """Whether the message's file is in new/ (no client has seen it yet)."""
    return message.path.rsplit(os.sep, 2)[-2] == "new"


# --- folders shared by the sessions of the process ----------------------------------


class Folder:
    """One Maildir folder as the process sees it: the library's Maildir
    (which keeps the UID listing warm between sessions), its MIME
    structures by key, and the sessions that show it."""

    def __init__(self, maildir: Maildir):
        self.maildir = maildir
        self.name = maildir.folder_name
        self.structures: OrderedDict = OrderedDict()
        self.header_cache: OrderedDict = OrderedDict()   # (key, fields, exclude) -> HEADER.FIELDS
        self.flag_sets: dict = {}           # letters -> frozenset of IMAP names
        self.sessions: set = set()          # IMAPConnections showing it
        self.stamps = None                  # (new mtime, cur mtime) when last looked at
        self.settling_until = 0             # ns: look once more then
        # The folder as the process last listed it, shared by every session:
        # a SELECT copies two lists instead of building an entry per message.
        self.listing = None
        self.uids: list = []
        self.entries: list = []
        self.in_new: set = set()            # UIDs still in new/ (no client saw them)
        self._first_unseen: int | None = None
        self._unseen_known = False

    def current(self):
        """The folder's listing now (the library's uid_listing()), with
        `uids` and `entries` brought up to date: from the listing before by
        its changes, so a change costs what it touches."""
        try:
            listing = self.maildir.uid_listing()
        except MaildirError as exc:
            raise _store_error(exc) from None
        before = self.listing
        if listing is before:
            return listing
        self.listing = listing
        self._unseen_known = False
        changes = None if before is None else listing.changes_since(before)
        if changes is None or changes.new_validity:
            self.uids = [message.uid for message in listing]
            self.entries = [self.entry(message) for message in listing]
            self.in_new = {message.uid for message in listing if _in_new(message)}
            return listing
        if changes.expunged:
            gone = set(changes.expunged)
            keep = [index for index, uid in enumerate(self.uids) if uid not in gone]
            self.uids = [self.uids[index] for index in keep]
            self.entries = [self.entries[index] for index in keep]
            self.in_new -= gone
        for message in changes.flags_changed:
            self.note(message)
        for message in changes.added:
            uid = message.uid
            at = bisect.bisect_left(self.uids, uid)
            if at < len(self.uids) and self.uids[at] == uid:
                self.entries[at] = self.entry(message)
            else:
                self.uids.insert(at, uid)
                self.entries.insert(at, self.entry(message))
            if _in_new(message):
                self.in_new.add(uid)
        return listing

    def entry(self, message: Message) -> "_Entry":
        return _Entry(message.uid, self.flags_of(message.flags), message.size, message)

    def find(self, uid: int) -> "_Entry | None":
        at = bisect.bisect_left(self.uids, uid)
        return self.entries[at] if at < len(self.uids) and self.uids[at] == uid else None

    def note(self, message: Message) -> "_Entry":
        """A message as changed (by this process or found changed): its entry."""
        entry = self.entry(message)
        at = bisect.bisect_left(self.uids, message.uid)
        if at < len(self.uids) and self.uids[at] == message.uid:
            self.entries[at] = entry
            self._unseen_known = False
        if not _in_new(message):
            self.in_new.discard(message.uid)
        return entry

    @property
    def first_unseen(self) -> int | None:
        if not self._unseen_known:
            self._first_unseen = next((index for index, entry in enumerate(self.entries)
                                       if "\\Seen" not in entry.flags), None)
            self._unseen_known = True
        return self._first_unseen

    def flags_of(self, letters: str) -> frozenset:
        names = self.flag_sets.get(letters)
        if names is None:
            names = frozenset(self.maildir.flag_names(letters))
            self.flag_sets[letters] = names
        return names

    def structure(self, message: Message) -> mime.Part:
        part = self.structures.get(message.key)
        if part is not None:
            self.structures.move_to_end(message.key)
            return part
        data = self.maildir.read_wire(message) if message.size <= _SMALL else None
        if data is None:
            reader = self.maildir.open_wire(message)
            try:
                part = mime.structure(reader)
            finally:
                reader.close()
        else:
            part = mime.structure(data)
        self.structures[message.key] = part
        if len(self.structures) > _STRUCTURES:
            self.structures.popitem(last=False)
        return part

    def stamp(self):
        path = self.maildir.path
        return (os.stat(os.path.join(path, "new")).st_mtime_ns, os.stat(os.path.join(path, "cur")).st_mtime_ns)


class Folders:
    """The process's folders by name, and the poll that wakes idling sessions."""

    def __init__(self):
        self.root: Maildir | None = None
        self.by_name: dict = {}
        self._polling = False

    def get(self, root: Maildir, name: str) -> Folder:
        if root is not self.root:   # the Maildir was reopened (SIGHUP): start afresh
            self.root, self.by_name = root, {}
        folder = self.by_name.get(name)
        if folder is None:
            maildir = root if name == "INBOX" else root.folder(name)
            folder = self.by_name[name] = Folder(maildir)
        return folder

    def forget(self, name: str) -> None:
        """A folder was deleted or renamed (or a parent of it)."""
        # Dropped, not closed: a session may still hold it for a moment
        # (Maildir.__del__ closes it when none does).
        for known in list(self.by_name):
            if known == name or known.startswith(name + imap.DELIMITER):
                del self.by_name[known]

    def watch(self, folder: Folder, session) -> None:
        folder.sessions.add(session)
        if folder.stamps is None:
            folder.stamps = folder.stamp()
        if not self._polling:
            self._polling = True
            asyncio.get_running_loop().call_later(_POLL, self._poll)

    def unwatch(self, folder: Folder, session) -> None:
        folder.sessions.discard(session)

    def _poll(self) -> None:
        watched = [folder for folder in self.by_name.values() if folder.sessions]
        if not watched:
            self._polling = False
            return
        now = time.time_ns()
        for folder in watched:
            try:
                stamps = folder.stamp()
            except OSError:
                continue
            due = folder.settling_until and now >= folder.settling_until
            if stamps != folder.stamps or due:
                folder.settling_until = 0 if due and stamps == folder.stamps else now + _SETTLE_NS
                folder.stamps = stamps
                for session in list(folder.sessions):
                    session.folder_changed()
        asyncio.get_running_loop().call_later(_POLL, self._poll)


FOLDERS = Folders()


# --- what a session's engine sees ---------------------------------------------------


class _Entry:
    """A message as the engine sees it (imap.Entry); shared by the sessions
    of the process, never changed (a change makes a new one)."""

    __slots__ = ("uid", "flags", "size", "message")

    def __init__(self, uid: int, flags: frozenset, size: int, message: Message):
        self.uid, self.flags, self.size, self.message = uid, flags, size, message


class _Range:
    """Octets [start, end) of a message, read as they are written out."""

    def __init__(self, reader, start: int, end: int):
        self._chunks = mime.read_range(reader, start, end, _CHUNK)
        self._reader = reader
        self.remaining = end - start

    def read(self, size: int) -> bytes:
        if self.remaining <= 0:
            return b""
        data = next(self._chunks, b"")
        if not data:
            # The file is shorter than its name says: keep the literal's
            # promised length, so the client does not lose the framing.
            data = b" " * min(size, self.remaining)
        self.remaining -= len(data)
        return data

    def close(self) -> None:
        self._reader.close()


class _SearchView:
    """One message for imapsearch, reading the file only when asked."""

    __slots__ = ("seq", "uid", "flags", "recent", "size", "_mailbox", "_entry", "_header")

    def __init__(self, mailbox: "Mailbox", entry: _Entry, seq: int):
        self.seq, self.uid, self.flags, self.size = seq, entry.uid, entry.flags, entry.size
        self.recent = entry.uid in mailbox.recent
        self._mailbox, self._entry, self._header = mailbox, entry, None

    @property
    def internal_date(self) -> float:
        return self._mailbox.internal_date(self._entry)

    def header_values(self, name: str) -> list:
        if self._header is None:
            self._header = self._mailbox.header(self._entry)
        return mime.decoded_header_values(self._header, name)

    def find_text(self, needles) -> set:
        mailbox, entry = self._mailbox, self._entry
        part = mailbox.structure(entry)
        found = set()
        for body_only in (True, False):
            group = [needle for needle in needles if needle.body_only == body_only]
            if not group:
                continue
            reader = mailbox.open_reader(entry)
            try:
                hits = mime.search_text(reader, part, [needle.text for needle in group], not body_only)
            finally:
                reader.close()
            found |= {needle for needle in group if needle.text in hits}
        return found


class Mailbox:
    """A session's view of one folder (imap.Mailbox)."""

    def __init__(self, session: "IMAPConnection", folder: Folder, readonly: bool):
        self._session = session
        self.folder = folder
        self.maildir = folder.maildir
        self.name = folder.name
        self.readonly = readonly
        listing = folder.current()
        self.uidvalidity = listing.validity
        self._listing = listing
        self.recent: set = set()
        self._claim(sorted(folder.in_new))

    @property
    def uidnext(self) -> int:
        return self._listing.next_uid

    @property
    def first_unseen(self) -> int | None:
        return self.folder.first_unseen

    def view(self) -> tuple:
        return self.folder.uids, self.folder.entries

    def _claim(self, uids) -> None:
        """\\Recent is for the first session to see a message (RFC 3501
        2.3.2): the one whose rename takes it from new/ to cur/."""
        folder = self.folder
        for uid in uids:
            if uid not in folder.in_new:
                continue
            if self.readonly:
                self.recent.add(uid)   # EXAMINE moves nothing
                continue
            entry = folder.find(uid)
            if entry is None:
                continue
            try:
                moved = self.maildir.set_flags(entry.message)
            except MaildirError:
                continue
            if moved is not None:
                folder.note(moved)
                self.recent.add(uid)

    def refresh(self):
        folder = self.folder
        listing = folder.current()
        if listing is self._listing:
            return None
        changes = listing.changes_since(self._listing)
        self._listing = listing
        if changes.new_validity:
            raise StoreError("UIDVALIDITY", "The mailbox's UIDs were reset")
        self.recent.difference_update(changes.expunged)
        self._claim([message.uid for message in changes.added])
        find = folder.find
        added = tuple(entry for entry in map(find, (m.uid for m in changes.added)) if entry is not None)
        changed = tuple(entry for entry in map(find, (m.uid for m in changes.flags_changed)) if entry is not None)
        return Changes(tuple(changes.expunged), added, changed)

    def keywords(self):
        try:
            return self.maildir.keywords()
        except MaildirError:
            return ()

    def set_flags(self, entries: list, flags: frozenset, action: str) -> dict:
        changed = {}
        args = {"add": {"add": flags}, "remove": {"remove": flags}, "replace": {"replace": flags}}[action]
        for entry in entries:
            try:
                message = self.maildir.set_flags(entry.message, **args)
            except MaildirError as exc:
                raise _store_error(exc) from None
            if message is None:
                continue   # gone meanwhile: the next refresh tells
            changed[message.uid] = self.folder.note(message)
        return changed

    def expunge(self, entries: list) -> list:
        removed = []
        for entry in entries:
            try:
                gone = self.maildir.remove(entry.message)
            except MaildirError as exc:
                log.error("cannot expunge %s from %s: %s", entry.message.key, self.name, exc)
                continue
            if gone:
                removed.append(entry.uid)
                self._session.deleted += 1
                mail_event(log, f"expunged {entry.message.key} from {self.name} peer={self._session.peer}",
                           MAILID=entry.message.key, FOLDER=self.name, PEER=self._session.peer)
        return removed

    def copy(self, entries: list, target: str, move: bool) -> tuple:
        store = self._session.store
        if not store.exists(target):
            raise StoreError("TRYCREATE", f"There is no mailbox {target!r}")
        destination = store.folder(target)
        messages = [entry.message for entry in entries]
        try:
            keys = (self.maildir.move_to if move else self.maildir.copy_to)(messages, destination.maildir)
            listing = destination.maildir.uid_listing()
        except MaildirError as exc:
            raise _store_error(exc) from None
        sources, targets = [], []
        for entry, key in zip(entries, keys):
            if key is None:
                continue
            copied = listing.find(key)
            if copied is None:
                continue
            sources.append(entry.uid)
            targets.append(copied.uid)
            log.debug("%s %s from %s to %s as %s", "moved" if move else "copied", entry.message.key,
                      self.name, target, key)
        return listing.validity, sources, targets

    def internal_date(self, entry: _Entry) -> float:
        try:
            return float(self.maildir.internal_date(entry.message))
        except MaildirError as exc:
            raise StoreError("EXPUNGEISSUED", str(exc)) from None

    def structure(self, entry: _Entry) -> mime.Part:
        try:
            return self.folder.structure(entry.message)
        except MaildirError as exc:
            raise StoreError("EXPUNGEISSUED", str(exc)) from None

    def open_reader(self, entry: _Entry):
        try:
            return self.maildir.open_wire(entry.message)
        except MaildirError as exc:
            raise StoreError("EXPUNGEISSUED", str(exc)) from None

    def header(self, entry: _Entry) -> bytes:
        part = self.folder.structures.get(entry.message.key)
        if part is not None:
            return self.read(entry, part.header_start, part.header_end)
        reader = self.open_reader(entry)
        try:
            # Most header blocks fit in the first read; a longer one, or one
            # without an end, is read by the MIME walker.
            data = reader.read(16384)
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                return data[:end + 4]
            if len(data) < 16384:
                return data
        finally:
            reader.close()
        part = self.structure(entry)
        return self.read(entry, part.header_start, part.header_end)

    def header_fields(self, entry: _Entry, names: tuple, exclude: bool) -> bytes:
        # What sync clients ask of every message on every sync (Thunderbird's
        # header fetch): kept per folder, so a second time reads no file.
        cache = self.folder.header_cache
        key = (entry.message.key, names, exclude)
        data = cache.get(key)
        if data is None:
            data = mime.header_fields(self.header(entry), names, exclude)
            cache[key] = data
            if len(cache) > _HEADER_FIELDS:
                cache.popitem(last=False)
        return data

    def read(self, entry: _Entry, start: int, end: int) -> bytes:
        message = entry.message
        if message.size <= _SMALL:
            try:
                data = self.maildir.read_wire(message)
            except MaildirError as exc:
                raise StoreError("EXPUNGEISSUED", str(exc)) from None
            if data is not None:
                return data[start:end]
        reader = self.open_reader(entry)
        try:
            return b"".join(mime.read_range(reader, start, end))
        finally:
            reader.close()

    def open_range(self, entry: _Entry, start: int, end: int) -> _Range:
        return _Range(self.open_reader(entry), start, end)

    def search_view(self, entry: _Entry, seq: int) -> _SearchView:
        return _SearchView(self, entry, seq)

    def close(self) -> None:
        pass


class _AppendHandle:
    def __init__(self, folder: Folder, delivery):
        self.folder = folder
        self.delivery = delivery

    def write(self, data: bytes) -> None:
        try:
            self.delivery.write(data)
        except MaildirError as exc:
            raise _store_error(exc) from None

    def abort(self) -> None:
        self.delivery.abort()


class Store:
    """A session's store (imap.Store) over the service's Maildir."""

    def __init__(self, session: "IMAPConnection"):
        self._session = session

    @property
    def root(self) -> Maildir:
        try:
            return self._session.server.maildir.get()
        except MaildirError as exc:
            raise StoreError("UNAVAILABLE", str(exc)) from None

    def folder(self, name: str) -> Folder:
        try:
            return FOLDERS.get(self.root, name)
        except MaildirError as exc:
            raise StoreError("NONEXISTENT", f"There is no mailbox {name!r}") from exc

    def _names(self) -> list:
        try:
            return self.root.list_folders()
        except MaildirError as exc:
            raise StoreError("UNAVAILABLE", str(exc)) from None

    def folders(self) -> list:
        names = set(self._names())
        parents = set()
        for name in names:
            parts = name.split(imap.DELIMITER)
            for depth in range(1, len(parts)):
                parents.add(imap.DELIMITER.join(parts[:depth]))
        result = [FolderInfo("INBOX", True, False, None)]
        for name in sorted(names | parents):
            has_children = any(other.startswith(name + imap.DELIMITER) for other in names)
            # A parent that is no folder itself gets no special use: a client
            # must not pick a mailbox it cannot store mail in as its Archive.
            result.append(FolderInfo(name, name in names, has_children,
                                     imap.special_use(name) if name in names else None))
        return result

    def exists(self, name: str) -> bool:
        return name == "INBOX" or name in self._names()

    def create(self, name: str) -> None:
        try:
            self.root.create_folder(name)
        except MaildirError as exc:
            code = "ALREADYEXISTS" if "already exists" in str(exc) else "CANNOT"
            raise StoreError(code, str(exc)) from None
        log.info("created folder %s", name, extra=fields(FOLDER=name, PEER=self._session.peer))

    def delete(self, name: str) -> None:
        if not self.exists(name):
            raise StoreError("NONEXISTENT", f"There is no mailbox {name!r}")
        try:
            self.root.delete_folder(name)
        except MaildirError as exc:
            raise StoreError("CANNOT", str(exc)) from None
        FOLDERS.forget(name)
        log.info("deleted folder %s with its messages", name, extra=fields(FOLDER=name, PEER=self._session.peer))

    def rename(self, old: str, new: str) -> None:
        if self.exists(new):
            raise StoreError("ALREADYEXISTS", f"There is a mailbox {new!r} already")
        if old == "INBOX":
            self._rename_inbox(new)
            return
        try:
            self.root.rename_folder(old, new)
        except MaildirError as exc:
            code = "NONEXISTENT" if "does not exist" in str(exc) else "CANNOT"
            raise StoreError(code, str(exc)) from None
        FOLDERS.forget(old)
        subscribed = self.subscriptions()
        moved = {name for name in subscribed if name == old or name.startswith(old + imap.DELIMITER)}
        if moved:
            self._write_subscriptions((subscribed - moved) | {new + name[len(old):] for name in moved})
        log.info("renamed folder %s to %s", old, new, extra=fields(FOLDER=new, PEER=self._session.peer))

    def _rename_inbox(self, new: str) -> None:
        # RFC 3501 6.3.5: every message in INBOX moves to a new mailbox of
        # that name, and INBOX stays, empty (SMTP goes on delivering there);
        # INBOX's own subfolders stay where they are. Each message is one
        # rename(2) (Maildir.move_to): none is ever in both or neither.
        self.create(new)
        try:
            folder = self.root.folder(new)
            moved = self.root.move_to(self.root.snapshot(), folder)
        except MaildirError as exc:
            raise StoreError("CANNOT", str(exc)) from None
        folder.close()
        count = sum(key is not None for key in moved)
        log.info("renamed INBOX to %s: %d messages moved there, INBOX empty", new, count,
                 extra=fields(FOLDER=new, PEER=self._session.peer))

    def subscriptions(self) -> set:
        try:
            with open(os.path.join(self.root.path, SUBSCRIPTIONS), encoding="utf-8") as handle:
                return {line.rstrip("\n") for line in handle if line.strip()}
        except FileNotFoundError:
            return set()
        except (OSError, UnicodeDecodeError):
            return set()

    def subscribe(self, name: str, on: bool) -> None:
        names = self.subscriptions()
        if (name in names) == on:
            return
        self._write_subscriptions(names | {name} if on else names - {name})

    def _write_subscriptions(self, names: set) -> None:
        path = os.path.join(self.root.path, SUBSCRIPTIONS)
        temp = f"{path}.{os.getpid()}.tmp"
        try:
            with open(temp, "w", encoding="utf-8") as handle:
                handle.write("".join(name + "\n" for name in sorted(names)))
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(temp, path)
        except OSError as exc:
            raise StoreError("SERVERBUG", f"cannot write {path}: {exc.strerror}") from None

    def status(self, name: str) -> MailboxStatus:
        if not self.exists(name):
            raise StoreError("NONEXISTENT", f"There is no mailbox {name!r}")
        folder = self.folder(name)
        try:
            listing = folder.maildir.uid_listing()
        except MaildirError as exc:
            raise _store_error(exc) from None
        recent = unseen = 0
        for message in listing:
            if _in_new(message):
                recent += 1
            if "S" not in message.flags:
                unseen += 1
        return MailboxStatus(len(listing), recent, listing.next_uid, listing.validity, unseen)

    def open(self, name: str, readonly: bool) -> Mailbox:
        if not self.exists(name):
            raise StoreError("NONEXISTENT", f"There is no mailbox {name!r}")
        return Mailbox(self._session, self.folder(name), readonly)

    def begin_append(self, name: str, flags: tuple, date: float | None, size: int) -> _AppendHandle:
        if not self.exists(name):
            raise StoreError("TRYCREATE", f"There is no mailbox {name!r}")
        if not self._session.server.maildir.reserve.fits(size):
            raise StoreError("OVERQUOTA", "Not enough free disk space for new mail now; try again later")
        folder = self.folder(name)
        try:
            delivery = folder.maildir.begin(flags=list(flags), internal_date=date)
        except MaildirError as exc:
            raise _store_error(exc, "CANNOT") from None
        return _AppendHandle(folder, delivery)


# --- the connection ----------------------------------------------------------------


class IMAPConnection(Session):
    engine_class = imap.IMAPSession
    takes_mail = True

    def __init__(self, server: Server, listener: str):
        super().__init__(server, listener)
        self.store = Store(self)
        self._folder: Folder | None = None
        self._task: asyncio.Task | None = None
        self.appended = 0
        self.deleted = 0

    @staticmethod
    def listen(config) -> tuple:
        return config.imap_listen

    def make_engine(self) -> imap.IMAPSession:
        return imap.IMAPSession(self.config.host_name, self.store, max_message_size=self.config.max_message_size)

    def timeout_seconds(self) -> float:
        return self.config.imap_timeout

    def lost(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._watch(imap.Watch(None))
        self.engine._abort_append()
        log.info("session from %s ended: user %s, appended %d, expunged %d", self.peer,
                 self.engine.user or "-", self.appended, self.deleted,
                 extra=fields(PEER=self.peer, USER=self.engine.user or "", APPENDED=self.appended,
                              DELETED=self.deleted))

    def folder_changed(self) -> None:
        if not self.closed:
            self.perform(self.engine.changed())

    # -- events -------------------------------------------------------------

    def _watch(self, event: imap.Watch) -> None:
        if self._folder is not None:
            FOLDERS.unwatch(self._folder, self)
            self._folder = None
        if event.mailbox is not None:
            try:
                self._folder = self.store.folder(event.mailbox)
            except StoreError:
                return
            FOLDERS.watch(self._folder, self)

    def _stream(self, event: imap.Stream) -> None:
        self.pause()
        self._task = asyncio.get_running_loop().create_task(self._write_out(event.chunks))

    async def _write_out(self, chunks) -> None:
        # Responses are small (a FETCH line per message): they go out
        # gathered, a write per _BATCH octets, not a system call each.
        pending: list = []
        size = 0
        try:
            for chunk in chunks:
                if self.closed:
                    break
                if type(chunk) is bytes:
                    pending.append(chunk)
                    size += len(chunk)
                    if size < _BATCH:
                        continue
                    self.write(b"".join(pending))
                    pending, size = [], 0
                    if self.backlogged:
                        await self.drain()
                    else:
                        await asyncio.sleep(0)   # other sessions' turn
                    continue
                else:
                    if pending:
                        self.write(b"".join(pending))
                        pending, size = [], 0
                    try:
                        while data := chunk.read(_CHUNK):
                            self.write(data)
                            await self.drain()
                            if self.closed:
                                break
                    finally:
                        chunk.close()
            if pending and not self.closed:
                self.write(b"".join(pending))
        except StoreError as exc:   # a bug: the engine handles what it knows
            log.error("FETCH for %s failed: %s", self.peer, exc)
            self.close()
        self._task = None
        if self.closed:
            return
        self.resume()
        self.perform(self.engine.streamed())

    def _commit(self, event: imap.CommitAppend) -> None:
        self.pause()
        handle = event.handle
        committer.shared().commit(handle.delivery, lambda outcome: self._committed(handle, outcome))

    def _committed(self, handle: _AppendHandle, outcome) -> None:
        if self.closed:
            return
        if isinstance(outcome, MaildirError):
            log.error("cannot store an APPENDed message in %s: %s", handle.folder.name, outcome)
            result = _store_error(outcome)
        else:
            try:
                listing = handle.folder.maildir.uid_listing()
                uid = listing.find(outcome).uid
                result = (listing.validity, uid)
            except (MaildirError, AttributeError) as exc:
                result = StoreError("SERVERBUG", f"stored as {outcome}, but its UID is unknown: {exc}")
            else:
                self.appended += 1
                mail_event(log, f"appended {outcome} to {handle.folder.name} size={handle.delivery.wire_size} "
                                f"peer={self.peer}", MAILID=outcome, FOLDER=handle.folder.name,
                           SIZE=handle.delivery.wire_size, PEER=self.peer, LISTENER=self.listener)
        self.resume()
        self.perform(self.engine.appended(result))

    handlers = {imap.Watch: _watch, imap.Stream: _stream, imap.CommitAppend: _commit}
