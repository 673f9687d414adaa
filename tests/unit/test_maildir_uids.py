"""Persistent IMAP UIDs: baremail-uidlist, uid_listing() and its change check."""

import os
import random
import time

import pytest

from baremail import uidlist as uidlist_module
from baremail.maildir import Maildir, _order


def age(path, seconds=60):
    then = time.time() - seconds
    for sub in ("new", "cur"):
        os.utime(os.path.join(path, sub), (then, then))


def deliver(box, count):
    return [box.deliver([b"Subject: %d\r\n\r\nbody\r\n" % n]) for n in range(count)]


def lines(path):
    return (path / "baremail-uidlist").read_text().splitlines()


def pairs(listing):
    return [(message.uid, message.key) for message in listing]


def test_uids_ascend_in_delivery_order_and_are_written_down(tmp_path):
    started = int(time.time())
    box = Maildir(str(tmp_path), "h")
    keys = deliver(box, 5)
    listing = box.uid_listing()
    assert pairs(listing) == list(zip(range(1, 6), keys))
    assert listing.next_uid == 6
    header, *rest = lines(tmp_path)
    assert header == f"1 V{listing.validity} N6"
    assert rest == [f"{uid} {key}" for uid, key in zip(range(1, 6), keys)]
    # From the clock, but never one the process has seen: each uidlist
    # made within the same second takes the next second (the suite makes
    # hundreds, so this one may be ahead of the clock by that many).
    assert started <= listing.validity <= time.time() + len(uidlist_module._validities_seen)


def test_each_message_carries_uid_key_flags_size_and_path(tmp_path):
    box = Maildir(str(tmp_path), "h")
    (key,) = deliver(box, 1)
    box.set_flags(box.snapshot()[0], add=["\\Seen", "Work"])
    (message,) = box.uid_listing()
    assert (message.uid, message.key, message.flags, message.size) == (1, key, "Sa", 20)
    assert message.path == str(tmp_path / "cur" / f"{key}:2,Sa")
    assert box.read_wire(message).startswith(b"Subject: 0")


def test_another_maildir_object_sees_the_same_uids(tmp_path):
    box = Maildir(str(tmp_path), "h")
    deliver(box, 4)
    first = box.uid_listing()
    again = Maildir(str(tmp_path), "h").uid_listing()
    assert (again.validity, again.next_uid, pairs(again)) == (first.validity, first.next_uid, pairs(first))


def test_keys_found_together_are_numbered_in_delivery_order_whatever_their_creation_order(tmp_path):
    box = Maildir(str(tmp_path), "h")
    keys = [f"{1_700_000_000 + n}.M{n:06d}P7Q{n}R00.h,S=2,W=3" for n in range(30)]
    for key in random.Random(5).sample(keys, len(keys)):
        (tmp_path / "new" / key).write_bytes(b"x\n")
    assert pairs(box.uid_listing()) == list(zip(range(1, 31), keys))


def test_uids_are_never_reused_and_next_uid_only_grows(tmp_path):
    box = Maildir(str(tmp_path), "h")
    deliver(box, 3)
    listing = box.uid_listing()
    box.remove(listing.messages[-1])   # UID 3
    after = box.uid_listing()
    assert after.uids == [1, 2] and after.next_uid == 4
    (key,) = deliver(box, 1)
    assert box.uid_listing().find(key).uid == 4


def test_a_message_moving_from_new_to_cur_keeps_its_uid(tmp_path):
    box = Maildir(str(tmp_path), "h")
    deliver(box, 3)
    listing = box.uid_listing()
    box.mark_seen(listing.messages[1])
    after = box.uid_listing()
    assert pairs(after) == pairs(listing)
    assert after.messages[1].flags == "S"
    changes = after.changes_since(listing)
    assert changes.flags_changed == [after.messages[1]] and not changes.expunged and not changes.added


def test_unchanged_listing_is_the_same_object_and_costs_no_listing(tmp_path, monkeypatch):
    box = Maildir(str(tmp_path), "h")
    deliver(box, 3)
    age(tmp_path)
    listing = box.uid_listing()
    monkeypatch.setattr(os, "listdir", lambda *args: pytest.fail("listed again"))
    for _ in range(3):
        assert box.uid_listing() is listing


def test_a_listing_made_soon_after_a_change_is_checked_again(tmp_path, monkeypatch):
    box = Maildir(str(tmp_path), "h")
    deliver(box, 2)
    listing = box.uid_listing()       # new/ changed moments ago: not to be trusted later
    stamp = os.stat(tmp_path / "new").st_mtime_ns
    # A delivery in the same clock tick leaves the mtime as it was:
    (tmp_path / "new" / "1800000000.M000001P1Q1R0.h,S=2,W=3").write_bytes(b"x\n")
    os.utime(tmp_path / "new", ns=(stamp, stamp))
    after = box.uid_listing()
    assert after is not listing and after.uids == [1, 2, 3]
    calls = []
    real = os.listdir
    monkeypatch.setattr(os, "listdir", lambda path: (calls.append(path), real(path))[1])
    assert box.uid_listing() is after   # looked again, found nothing new
    assert calls


def test_changes_between_listings(tmp_path):
    box = Maildir(str(tmp_path), "h")
    deliver(box, 4)
    first = box.uid_listing()
    box.set_flags(first.messages[0], add=["\\Flagged"])
    box.remove(first.messages[2])
    (key,) = deliver(box, 1)
    second = box.uid_listing()
    changes = second.changes_since(first)
    assert changes.expunged == [3]
    assert [m.key for m in changes.added] == [key] and changes.added[0].uid == 5
    assert [(m.uid, m.flags) for m in changes.flags_changed] == [(1, "F")]
    assert not changes.new_validity
    box.set_flags(second.messages[1], add=["\\Seen"])
    third = box.uid_listing()
    # Not the listing just before: worked out from both, the same answer.
    later = third.changes_since(first)
    assert later.expunged == [3] and [m.uid for m in later.added] == [5]
    assert [(m.uid, m.flags) for m in later.flags_changed] == [(1, "F"), (2, "S")]
    assert third.changes_since(third).expunged == []


def test_by_uid_and_find(tmp_path):
    box = Maildir(str(tmp_path), "h")
    keys = deliver(box, 3)
    listing = box.uid_listing()
    assert listing.by_uid(2).key == keys[1] and listing.by_uid(9) is None
    assert listing.find(keys[2]).uid == 3 and listing.find("nope") is None
    assert len(listing) == 3 and [m.uid for m in listing] == [1, 2, 3]


def test_a_torn_last_line_is_ignored_and_cut_off_by_the_next_writer(tmp_path):
    box = Maildir(str(tmp_path), "h")
    keys = deliver(box, 3)
    listing = box.uid_listing()
    with open(tmp_path / "baremail-uidlist", "a") as handle:
        handle.write("4 1800000000.M1P1Q1R0.h,S=1")   # a writer died mid-line
    reader = Maildir(str(tmp_path), "h").uid_listing()
    assert (reader.validity, pairs(reader)) == (listing.validity, pairs(listing))
    (key,) = deliver(box, 1)
    after = Maildir(str(tmp_path), "h").uid_listing()
    assert after.validity == listing.validity
    assert pairs(after) == list(zip(range(1, 5), keys + [key]))
    assert lines(tmp_path)[-1] == f"4 {key}"


CORRUPTIONS = {
    "bad header": lambda text: "2 V1 N2\n" + text.split("\n", 1)[1],
    "garbage header": lambda text: "hello\n" + text.split("\n", 1)[1],
    "empty file": lambda text: "",
    "unparsable line": lambda text: text.replace("\n2 ", "\nx2 ", 1),
    "duplicate uid": lambda text: text.replace("\n3 ", "\n2 ", 1),
    "descending uid": lambda text: text.replace("\n2 ", "\n9 ", 1),
    "duplicate key": lambda text: text + "7 " + text.splitlines()[1].split(" ", 1)[1] + "\n",
    "uid zero": lambda text: text.replace("\n1 ", "\n0 ", 1),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupt_uidlist_gives_a_new_uidvalidity_and_fresh_numbering(tmp_path, corruption):
    box = Maildir(str(tmp_path), "h")
    keys = deliver(box, 3)
    old = box.uid_listing()
    text = (tmp_path / "baremail-uidlist").read_text()
    (tmp_path / "baremail-uidlist").write_text(CORRUPTIONS[corruption](text))
    for reader in (box, Maildir(str(tmp_path), "h")):
        listing = reader.uid_listing()
        assert listing.validity > old.validity
        assert pairs(listing) == list(zip(range(1, 4), keys))
        assert listing.changes_since(old).new_validity or reader is not box
    assert box.uid_listing().validity == Maildir(str(tmp_path), "h").uid_listing().validity
    assert lines(tmp_path)[0] == f"1 V{box.uid_listing().validity} N4"


def test_a_lost_uidlist_gives_a_new_uidvalidity(tmp_path):
    box = Maildir(str(tmp_path), "h")
    deliver(box, 2)
    old = box.uid_listing()
    os.unlink(tmp_path / "baremail-uidlist")
    new = box.uid_listing()
    assert new.validity > old.validity and new.uids == [1, 2]
    assert new.changes_since(old).new_validity


def test_a_new_uidvalidity_is_old_plus_one_when_the_clock_says_less(tmp_path):
    box = Maildir(str(tmp_path), "h")
    deliver(box, 1)
    (tmp_path / "baremail-uidlist").write_text("1 V4000000000 N2\n1 x\n1 y\n")   # readable header, bad line
    assert box.uid_listing().validity == 4000000001


def test_a_new_uidvalidity_never_repeats_one_seen_in_this_process(tmp_path, monkeypatch):
    monkeypatch.setattr(uidlist_module.time, "time", lambda: 1_234_567_890.5)
    seen = set()
    for n in range(3):
        folder = tmp_path / str(n)
        box = Maildir(str(folder), "h")
        deliver(box, 1)
        box.uid_listing()
        (folder / "baremail-uidlist").write_text("garbage\n")   # the old one is unreadable
        seen.add(box.uid_listing().validity)
    assert len(seen) == 3 and min(seen) >= 1_234_567_890


def test_compaction_when_dead_lines_outnumber_live_ones_keeps_next_uid(tmp_path):
    box = Maildir(str(tmp_path), "h")
    deliver(box, 10)
    listing = box.uid_listing()
    inode = os.stat(tmp_path / "baremail-uidlist").st_ino
    for message in listing.messages[:5]:
        box.remove(message)
    age(tmp_path)
    box.uid_listing()
    assert os.stat(tmp_path / "baremail-uidlist").st_ino == inode   # 5 dead, 5 live: kept
    box.remove(listing.messages[5])
    age(tmp_path)
    after = box.uid_listing()
    assert os.stat(tmp_path / "baremail-uidlist").st_ino != inode
    assert lines(tmp_path) == [f"1 V{listing.validity} N11"] + [f"{m.uid} {m.key}" for m in after]
    assert after.uids == [7, 8, 9, 10] and after.validity == listing.validity
    (key,) = deliver(box, 1)
    assert Maildir(str(tmp_path), "h").uid_listing().find(key).uid == 11
    assert not (tmp_path / "baremail-uidlist.tmp").exists()


def test_uids_running_out_start_a_new_uidvalidity(tmp_path):
    box = Maildir(str(tmp_path), "h")
    deliver(box, 1)
    first = box.uid_listing()
    text = (tmp_path / "baremail-uidlist").read_text().splitlines()
    (tmp_path / "baremail-uidlist").write_text(
        f"1 V{first.validity} N4294967295\n4294967294 {text[1].split(' ', 1)[1]}\n")
    deliver(box, 2)
    listing = box.uid_listing()
    assert listing.validity > first.validity and listing.uids == [1, 2, 3]


def test_names_that_cannot_go_into_the_uidlist_are_left_out(tmp_path):
    box = Maildir(str(tmp_path), "h")
    deliver(box, 1)
    (tmp_path / "cur" / "bad\nname:2,S").write_bytes(b"x\n")
    (tmp_path / "cur" / ".hidden").write_bytes(b"x\n")
    assert box.uid_listing().uids == [1]


def test_a_foreign_name_with_spaces_keeps_its_uid(tmp_path):
    box = Maildir(str(tmp_path), "h")
    (tmp_path / "cur" / "1700000000.odd name here:2,S").write_bytes(b"x\n")
    deliver(box, 1)
    first = box.uid_listing()
    again = Maildir(str(tmp_path), "h").uid_listing()
    assert pairs(first) == pairs(again) and first.messages[0].key == "1700000000.odd name here"


def test_copies_get_destination_uids_in_copy_order(tmp_path):
    box = Maildir(str(tmp_path), "h")
    deliver(box, 3)
    trash = box.create_folder("Trash")
    deliver(trash, 2)
    trash.uid_listing()
    source = box.uid_listing().messages
    new_keys = box.copy_to([source[2], source[0], source[1]], trash)
    listing = trash.uid_listing()
    assert [listing.find(key).uid for key in new_keys] == [3, 4, 5]


def test_the_order_of_our_names_sorts_like_order(tmp_path):
    box = Maildir(str(tmp_path), "h")
    names = ["1700000000.M000001P1Q1R0.h", "1700000000.M000001P1Q10R0.h", "999999999.M5P1.h",
             "1700000000.M12P3.dovecot", "foreign", "1700000001.M000000P2Q1R0.h", "1700000000.M000002P1Q2R0.h"]
    for name in names:
        (tmp_path / "new" / name).write_bytes(b"x\n")
    assert [m.key for m in box.snapshot()] == sorted(names, key=_order)
    for name in names:
        if "dovecot" in name or "foreign" in name or name.startswith("9"):
            os.unlink(tmp_path / "new" / name)
    assert [m.key for m in box.snapshot()] == sorted((n for n in names if (tmp_path / "new" / n).exists()),
                                                     key=_order)
