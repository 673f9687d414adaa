"""Maildir++ subfolders, and copying and moving messages between folders."""

import errno
import multiprocessing
import os
import signal
import time

import pytest

from baremail.maildir import Maildir, MaildirError


def deliver(box, tag):
    return box.deliver([b"X-Tag: %s\r\n\r\nbody\r\n" % tag.encode()])


def tags(box):
    out = []
    for message in box.snapshot():
        out.append(box.read_wire(message).split(b"\r\n", 1)[0].decode()[7:])
    return sorted(out)


def test_create_makes_a_maildir_plus_plus_folder(tmp_path):
    box = Maildir(str(tmp_path), "h")
    archive = box.create_folder("Archives.2024")
    folder = tmp_path / ".Archives.2024"
    assert sorted(os.listdir(folder)) == ["cur", "maildirfolder", "new", "tmp"]
    assert (folder / "maildirfolder").read_bytes() == b""
    assert oct(os.stat(folder).st_mode & 0o777) == "0o700"
    assert archive.path == str(folder) and archive.folder_name == "Archives.2024"
    assert box.folder_name == "INBOX"
    assert box.list_folders() == ["Archives.2024"]


def test_folder_names_are_utf8_on_disk(tmp_path):
    box = Maildir(str(tmp_path), "h")
    box.create_folder("Entw\u00fcrfe")
    assert os.listdir(os.fsencode(tmp_path)).count(".Entw\u00fcrfe".encode()) == 1
    assert box.list_folders() == ["Entw\u00fcrfe"]


@pytest.mark.parametrize("name", ["", "a/b", ".a", "a.", "a..b", "..", ".", "a\x00b", "a\nb", "INBOX", "inbox"])
def test_names_a_folder_cannot_have_are_refused(tmp_path, name):
    box = Maildir(str(tmp_path), "h")
    for attempt in (box.create_folder, box.folder, box.delete_folder,
                    lambda n: box.rename_folder("x", n), lambda n: box.rename_folder(n, "x")):
        if name.upper() == "INBOX" and attempt == box.folder:
            continue
        with pytest.raises(MaildirError) as caught:
            attempt(name)
        assert "\n" not in str(caught.value)
    assert sorted(os.listdir(tmp_path)) == ["cur", "new", "tmp"]


def test_inbox_is_the_maildir_itself(tmp_path):
    box = Maildir(str(tmp_path), "h")
    assert box.folder("INBOX") is box and box.folder("Inbox") is box
    trash = box.create_folder("Trash")
    assert trash.folder("inbox").path == box.path
    assert trash.folder("Trash").path == trash.path


def test_creating_an_existing_folder_and_opening_a_missing_one_are_errors(tmp_path):
    box = Maildir(str(tmp_path), "h")
    box.create_folder("Trash")
    with pytest.raises(MaildirError, match="already exists"):
        box.create_folder("Trash")
    with pytest.raises(MaildirError, match="does not exist"):
        box.folder("Spam")


def test_a_subfolder_has_the_whole_api_and_its_own_uids(tmp_path):
    box = Maildir(str(tmp_path), "h")
    deliver(box, "inbox")
    sent = box.create_folder("Sent")
    key = deliver(sent, "sent")
    message = sent.set_flags(sent.uid_listing().messages[0], add=["\\Seen", "Work"])
    listing = sent.uid_listing()
    assert listing.uids == [1] and listing.messages[0].flags == "Sa"
    assert sent.flag_names(message.flags) == ("\\Seen", "Work")
    assert (tmp_path / ".Sent" / "dovecot-keywords").exists() and not (tmp_path / "dovecot-keywords").exists()
    assert (tmp_path / ".Sent" / "baremail-uidlist").exists()
    assert box.uid_listing().uids == [1] and box.uid_listing().validity  # INBOX numbers on its own
    assert sent.read_wire(message).startswith(b"X-Tag: sent")
    assert sent.remove(message) and key


def test_pop3s_snapshot_of_inbox_lists_no_subfolder_messages(tmp_path):
    box = Maildir(str(tmp_path), "h")
    deliver(box, "inbox")
    deliver(box.create_folder("Trash"), "trash")
    deliver(box.create_folder("A.B"), "deep")
    assert tags(box) == ["inbox"]


def test_rename_takes_the_children_along(tmp_path):
    box = Maildir(str(tmp_path), "h")
    work = box.create_folder("Work")
    deliver(work, "w")
    listing = work.uid_listing()
    deliver(box.create_folder("Work.2024"), "w24")
    box.create_folder("Work.2024.Q1")
    box.create_folder("Workshop")   # a sibling sharing the prefix, not a child
    box.rename_folder("Work", "Old.Work")
    assert box.list_folders() == ["Old.Work", "Old.Work.2024", "Old.Work.2024.Q1", "Workshop"]
    moved = box.folder("Old.Work")
    assert tags(moved) == ["w"] and tags(box.folder("Old.Work.2024")) == ["w24"]
    again = moved.uid_listing()
    assert (again.validity, again.uids) == (listing.validity, listing.uids)


def test_rename_of_a_parent_that_is_only_a_hierarchy_level(tmp_path):
    box = Maildir(str(tmp_path), "h")
    box.create_folder("Lists.python")
    box.rename_folder("Lists", "Groups")
    assert box.list_folders() == ["Groups.python"]


def test_rename_refuses_an_existing_target_a_missing_source_and_itself(tmp_path):
    box = Maildir(str(tmp_path), "h")
    box.create_folder("A")
    box.create_folder("A.x")
    box.create_folder("B.x")
    with pytest.raises(MaildirError, match="already exists"):
        box.rename_folder("A", "B")          # B.x is in the way of A.x
    with pytest.raises(MaildirError, match="itself"):
        box.rename_folder("A", "A.sub")
    with pytest.raises(MaildirError, match="does not exist"):
        box.rename_folder("Nothing", "Else")
    assert box.list_folders() == ["A", "A.x", "B.x"]


def test_delete_removes_the_folder_but_not_its_children(tmp_path):
    box = Maildir(str(tmp_path), "h")
    deliver(box.create_folder("Old"), "old")
    deliver(box.create_folder("Old.Keep"), "keep")
    box.delete_folder("Old")
    assert box.list_folders() == ["Old.Keep"]
    assert tags(box.folder("Old.Keep")) == ["keep"]
    assert sorted(os.listdir(tmp_path)) == [".Old.Keep", "cur", "new", "tmp"]
    with pytest.raises(MaildirError, match="does not exist"):
        box.delete_folder("Old")


def test_copy_links_the_file_under_a_new_key_keeping_flags_and_date(tmp_path):
    box = Maildir(str(tmp_path), "h")
    key = box.deliver([b"X-Tag: a\r\n\r\nbody\r\n"], flags=["\\Seen", "\\Flagged"], internal_date=1_500_000_000)
    trash = box.create_folder("Trash")
    (message,) = box.uid_listing()
    (copied,) = box.copy_to([message], trash)
    assert copied != key and copied.endswith(key[key.index(",S="):])
    assert os.listdir(tmp_path / ".Trash" / "cur") == [f"{copied}:2,FS"]
    assert os.listdir(tmp_path / ".Trash" / "tmp") == []
    assert os.stat(message.path).st_ino == os.stat(tmp_path / ".Trash" / "cur" / f"{copied}:2,FS").st_ino
    (there,) = trash.uid_listing()
    assert trash.internal_date(there) == 1_500_000_000 and there.size == message.size
    assert tags(box) == ["a"] and tags(trash) == ["a"]


def test_copy_translates_keyword_letters_to_the_destination(tmp_path):
    box = Maildir(str(tmp_path), "h")
    deliver(box, "a")
    archive = box.create_folder("Archive")
    deliver(archive, "b")
    archive.set_flags(archive.snapshot()[0], add=["Beta"])          # Beta is 'a' there
    (message,) = box.snapshot()
    message = box.set_flags(message, add=["Alpha", "Beta", "\\Seen"])   # 'a' and 'b' here
    box.copy_to([message], archive)
    names = {archive.flag_names(m.flags) for m in archive.snapshot()}
    assert names == {("Beta",), ("\\Seen", "Beta", "Alpha")}
    assert archive.keywords() == ("Beta", "Alpha")


def test_copy_fails_whole_if_the_destination_cannot_take_a_keyword(tmp_path):
    box = Maildir(str(tmp_path), "h")
    deliver(box, "a")
    full = box.create_folder("Full")
    deliver(full, "f")
    full.set_flags(full.snapshot()[0], add=[f"k{n}" for n in range(26)])
    (message,) = box.snapshot()
    message = box.set_flags(message, add=["Other"])
    with pytest.raises(MaildirError) as caught:
        box.copy_to([message], full)
    assert caught.value.limit
    assert tags(full) == ["f"]


def test_copy_falls_back_to_a_byte_copy_across_file_systems(tmp_path, monkeypatch):
    box = Maildir(str(tmp_path), "h")
    box.deliver([b"X-Tag: a\r\n\r\nbody\r\n"], flags=["\\Answered"], internal_date=1_400_000_000)
    trash = box.create_folder("Trash")

    def cross_device(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    (message,) = box.snapshot()
    (copied,) = box.copy_to([message], trash)
    path = tmp_path / ".Trash" / "cur" / f"{copied}:2,R"
    assert os.stat(path).st_ino != os.stat(message.path).st_ino
    assert os.stat(path).st_mtime == 1_400_000_000
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert tags(trash) == ["a"]


def test_copy_of_a_gone_message_reports_none_and_fsyncs_the_destination(tmp_path, monkeypatch):
    box = Maildir(str(tmp_path), "h")
    deliver(box, "a")
    deliver(box, "b")
    trash = box.create_folder("Trash")
    first, second = box.snapshot()
    box.remove(first)
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_ino), real(fd))[1])
    keys = box.copy_to([first, second], trash)
    assert keys[0] is None and keys[1]
    assert os.stat(tmp_path / ".Trash" / "cur").st_ino in synced


def test_a_copy_that_fails_half_way_leaves_the_destination_as_it_was(tmp_path, monkeypatch):
    box = Maildir(str(tmp_path), "h")
    for tag in "abc":
        deliver(box, tag)
    trash = box.create_folder("Trash")
    real, calls = os.link, []

    def failing_second(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error")
        return real(*args, **kwargs)

    monkeypatch.setattr(os, "link", failing_second)
    with pytest.raises(MaildirError):
        box.copy_to(box.snapshot(), trash)
    assert os.listdir(tmp_path / ".Trash" / "cur") == [] and os.listdir(tmp_path / ".Trash" / "tmp") == []
    assert tags(box) == ["a", "b", "c"]


def test_copy_into_the_same_folder_makes_a_second_message(tmp_path):
    box = Maildir(str(tmp_path), "h")
    deliver(box, "a")
    (message,) = box.snapshot()
    box.copy_to([box.set_flags(message, add=["Kw"])], box)
    assert [m.flags for m in box.snapshot()] == ["a", "a"] and tags(box) == ["a", "a"]


def test_move_renames_into_the_destination_and_fsyncs_both(tmp_path, monkeypatch):
    box = Maildir(str(tmp_path), "h")
    deliver(box, "a")
    deliver(box, "b")
    trash = box.create_folder("Trash")
    listing = box.uid_listing()
    first = box.set_flags(listing.messages[0], add=["\\Seen", "Work"])
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_ino), real(fd))[1])
    keys = box.move_to([first, listing.messages[1]], trash)
    assert all(keys) and len(set(keys)) == 2
    assert tags(box) == [] and tags(trash) == ["a", "b"]
    for sub in ("new", "cur"):
        assert os.stat(tmp_path / sub).st_ino in synced
    assert os.stat(tmp_path / ".Trash" / "cur").st_ino in synced
    moved = trash.uid_listing()
    assert [moved.find(key).uid for key in keys] == [1, 2]
    assert trash.flag_names(moved.find(keys[0]).flags) == ("\\Seen", "Work")
    assert box.uid_listing().changes_since(listing).expunged == [1, 2]
    assert box.move_to([first], trash) == [None]


def _move_forever(root):
    box = Maildir(root, "h")
    trash = box.folder("Trash")
    while True:
        for message in box.snapshot():
            box.move_to([message], trash)
        for message in trash.snapshot():
            trash.move_to([message], box)


def test_a_move_killed_at_any_moment_leaves_each_message_exactly_once(tmp_path):
    box = Maildir(str(tmp_path), "h")
    box.create_folder("Trash")
    expected = sorted(f"m{n:03d}" for n in range(40))
    for tag in expected:
        deliver(box, tag)
    ctx = multiprocessing.get_context("fork")
    caught_moving = 0
    for delay in (0.05, 0.13, 0.21, 0.34, 0.47):
        worker = ctx.Process(target=_move_forever, args=(str(tmp_path),))
        worker.start()
        time.sleep(delay)
        os.kill(worker.pid, signal.SIGKILL)
        worker.join(10)
        trash = box.folder("Trash")
        assert sorted(tags(box) + tags(trash)) == expected
        assert os.listdir(tmp_path / "tmp") == [] and os.listdir(tmp_path / ".Trash" / "tmp") == []
        caught_moving += bool(tags(box)) and bool(tags(trash))
    assert caught_moving   # at least one kill landed in the middle of the moving
