"""An in-memory Store for the IMAP engine's tests (the real one is imapd's,
over the Maildir library): folders of messages with UIDs and flags, which a
test can change "from elsewhere" as another session or SMTP would."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from baremail import mime
from baremail.imap import Changes, FolderInfo, MailboxStatus, StoreError, special_use


@dataclass(frozen=True)
class Entry:
    uid: int
    flags: frozenset
    size: int
    recent: bool
    data: bytes
    date: float


class Folder:
    def __init__(self, name: str, validity: int):
        self.name = name
        self.validity = validity
        self.next_uid = 1
        self.entries: dict = {}
        self.keywords: set = set()
        self.version = 0

    def add(self, data: bytes, flags=(), date=None, recent=True) -> int:
        uid = self.next_uid
        self.next_uid += 1
        self.entries[uid] = Entry(uid, frozenset(flags), len(data), recent, data, date or time.time())
        self.keywords |= {flag for flag in flags if not flag.startswith("\\")}
        self.version += 1
        return uid

    def remove(self, uid: int) -> None:
        del self.entries[uid]
        self.version += 1

    def set(self, uid: int, flags) -> None:
        self.entries[uid] = replace(self.entries[uid], flags=frozenset(flags))
        self.keywords |= {flag for flag in flags if not flag.startswith("\\")}
        self.version += 1


class Range:
    def __init__(self, data: bytes):
        self.data = data
        self.closed = False

    def read(self, n: int) -> bytes:
        chunk, self.data = self.data[:n], self.data[n:]
        return chunk

    def close(self) -> None:
        self.closed = True


class View:
    def __init__(self, store: "FakeStore", folder: Folder, readonly: bool):
        self.store = store
        self.folder = folder
        self.name = folder.name
        self.readonly = readonly
        self.uidvalidity = folder.validity
        self._version = folder.version
        self._seen = dict(folder.entries)   # what the last look saw
        self.recent = {uid for uid, entry in folder.entries.items() if entry.recent}
        self.closed = False

    @property
    def uidnext(self) -> int:
        return self.folder.next_uid

    def view(self):
        entries = sorted(self.folder.entries.values(), key=lambda e: e.uid)
        return [entry.uid for entry in entries], entries

    @property
    def first_unseen(self):
        return next((index for index, entry in enumerate(self.view()[1]) if "\\Seen" not in entry.flags), None)

    def refresh(self):
        if self.folder.version == self._version:
            return None
        self._version = self.folder.version
        now, before = self.folder.entries, self._seen
        self._seen = dict(now)
        added = tuple(entry for uid, entry in now.items() if uid not in before)
        self.recent |= {entry.uid for entry in added if entry.recent}
        self.recent &= set(now)
        return Changes(expunged=tuple(uid for uid in before if uid not in now), added=added,
                       changed=tuple(entry for uid, entry in now.items()
                                     if uid in before and before[uid] != entry))

    def keywords(self):
        return self.folder.keywords

    def set_flags(self, entries, flags, action):
        changed = {}
        for entry in entries:
            current = self.folder.entries.get(entry.uid)
            if current is None:
                continue
            if action == "add":
                new = current.flags | flags
            elif action == "remove":
                new = current.flags - flags
            else:
                new = frozenset(flags)
            self.folder.set(entry.uid, new)
            changed[entry.uid] = self.folder.entries[entry.uid]
        self._version = self.folder.version
        return changed

    def expunge(self, entries):
        removed = []
        for entry in entries:
            if entry.uid in self.folder.entries:
                self.folder.remove(entry.uid)
                removed.append(entry.uid)
        self._version = self.folder.version
        return removed

    def copy(self, entries, target, move):
        if target not in self.store.folders_by_name:
            raise StoreError("TRYCREATE", "No such mailbox")
        dest = self.store.folders_by_name[target]
        sources, targets = [], []
        for entry in entries:
            current = self.folder.entries.get(entry.uid)
            if current is None:
                continue
            targets.append(dest.add(current.data, current.flags, current.date, recent=True))
            sources.append(entry.uid)
            if move:
                self.folder.remove(entry.uid)
        self._version = self.folder.version
        return dest.validity, sources, targets

    def _data(self, entry) -> bytes:
        current = self.folder.entries.get(entry.uid)
        if current is None:
            raise StoreError("EXPUNGEISSUED", "gone")
        return current.data

    def internal_date(self, entry) -> float:
        return entry.date

    def structure(self, entry):
        return mime.structure(self._data(entry))

    def header(self, entry) -> bytes:
        part = self.structure(entry)
        return self._data(entry)[:part.header_end]

    def header_fields(self, entry, names, exclude) -> bytes:
        return mime.header_fields(self.header(entry), names, exclude)

    def read(self, entry, start, end) -> bytes:
        return self._data(entry)[start:end]

    def open_range(self, entry, start, end):
        return Range(self._data(entry)[start:end])

    def search_view(self, entry, seq):
        view = self

        class Message:
            uid = entry.uid
            flags = entry.flags
            recent = entry.uid in view.recent
            size = entry.size
            internal_date = entry.date

            def __init__(self):
                self.seq = seq

            def header_values(self, name):
                data = view._data(entry)
                part = mime.structure(data)
                return mime.decoded_header_values(data[:part.header_end], name)

            def find_text(self, needles):
                data = view._data(entry)
                part = mime.structure(data)
                found = set()
                for body_only in (True, False):
                    group = [n for n in needles if n.body_only == body_only]
                    if group:
                        hits = mime.search_text(data, part, [n.text for n in group], not body_only)
                        found |= {n for n in group if n.text in hits}
                return found

        return Message()

    def close(self) -> None:
        self.closed = True


class Handle:
    def __init__(self, store, folder, flags, date, size):
        self.store, self.folder, self.flags, self.date, self.size = store, folder, flags, date, size
        self.data = bytearray()
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.data += data

    def abort(self) -> None:
        self.aborted = True

    def commit(self):
        if len(self.data) != self.size:
            raise StoreError("SERVERBUG", "size mismatch")
        uid = self.folder.add(bytes(self.data), self.flags, self.date, recent=True)
        return self.folder.validity, uid


class FakeStore:
    def __init__(self):
        self.folders_by_name = {"INBOX": Folder("INBOX", 1000)}
        self.subscribed = set()
        self.views: list = []

    @property
    def inbox(self) -> Folder:
        return self.folders_by_name["INBOX"]

    def folders(self):
        names = sorted(self.folders_by_name, key=lambda n: (n != "INBOX", n))
        return [FolderInfo(name, True, any(other.startswith(name + ".") for other in names),
                           special_use(name)) for name in names]

    def exists(self, name):
        return name in self.folders_by_name

    def create(self, name):
        if name in self.folders_by_name:
            raise StoreError("ALREADYEXISTS", "Mailbox exists")
        self.folders_by_name[name] = Folder(name, 2000 + len(self.folders_by_name))

    def delete(self, name):
        if name not in self.folders_by_name:
            raise StoreError("NONEXISTENT", "No such mailbox")
        del self.folders_by_name[name]

    def rename(self, old, new):
        if old not in self.folders_by_name:
            raise StoreError("NONEXISTENT", "No such mailbox")
        if new in self.folders_by_name:
            raise StoreError("ALREADYEXISTS", "Mailbox exists")
        if old == "INBOX":   # its messages move; INBOX stays, empty
            self.create(new)
            inbox, dest = self.folders_by_name["INBOX"], self.folders_by_name[new]
            for uid, entry in sorted(inbox.entries.items()):
                dest.add(entry.data, entry.flags, entry.date, recent=False)
                inbox.remove(uid)
            return
        folder = self.folders_by_name.pop(old)
        folder.name = new
        self.folders_by_name[new] = folder

    def subscriptions(self):
        return set(self.subscribed)

    def subscribe(self, name, on):
        (self.subscribed.add if on else self.subscribed.discard)(name)

    def status(self, name):
        folder = self.folders_by_name.get(name)
        if folder is None:
            raise StoreError("NONEXISTENT", "No such mailbox")
        entries = folder.entries.values()
        return MailboxStatus(len(entries), sum(e.recent for e in entries), folder.next_uid, folder.validity,
                             sum("\\Seen" not in e.flags for e in entries))

    def open(self, name, readonly):
        folder = self.folders_by_name.get(name)
        if folder is None:
            raise StoreError("NONEXISTENT", "No such mailbox")
        view = View(self, folder, readonly)
        self.views.append(view)
        return view

    def begin_append(self, name, flags, date, size):
        folder = self.folders_by_name.get(name)
        if folder is None:
            raise StoreError("TRYCREATE", "No such mailbox")
        return Handle(self, folder, flags, date, size)
