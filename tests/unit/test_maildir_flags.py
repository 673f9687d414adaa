"""Flags in Maildir names, dovecot-keywords, mark_seen and set_flags."""

import os

import pytest

from baremail import maildir as maildir_module
from baremail.maildir import Maildir, MaildirError


def deliver(box, n=0):
    return box.deliver([b"Subject: %d\r\n\r\nbody\r\n" % n])


def only(box):
    (message,) = box.snapshot()
    return message


def names_in(path, sub="cur"):
    return sorted(os.listdir(os.path.join(path, sub)))


def test_listing_reads_flags_from_the_info_after_2_comma(tmp_path):
    box = Maildir(str(tmp_path), "h")
    key = deliver(box)
    assert only(box).flags == ""
    os.rename(tmp_path / "new" / key, tmp_path / "cur" / f"{key}:2,FS")
    assert only(box).flags == "FS"
    assert box.flag_names("FS") == ("\\Flagged", "\\Seen")


def test_info_that_is_not_version_2_has_no_flags(tmp_path):
    box = Maildir(str(tmp_path), "h")
    key = deliver(box)
    os.rename(tmp_path / "new" / key, tmp_path / "cur" / f"{key}:1,experimental")
    assert only(box).flags == ""


def test_set_flags_changes_only_the_flags_named(tmp_path):
    box = Maildir(str(tmp_path), "h")
    key = deliver(box)
    # P (passed) and Z have no IMAP name: they stay whatever happens.
    os.rename(tmp_path / "new" / key, tmp_path / "cur" / f"{key}:2,PSZ")
    changed = box.set_flags(only(box), add=["\\Flagged"], remove=["\\Seen"])
    assert changed.flags == "FPZ"
    assert names_in(tmp_path) == [f"{key}:2,FPZ"]
    assert changed.path == str(tmp_path / "cur" / f"{key}:2,FPZ")
    assert (changed.key, changed.size) == (key, only(box).size)


def test_system_flag_names_are_case_insensitive(tmp_path):
    box = Maildir(str(tmp_path), "h")
    deliver(box)
    assert box.set_flags(only(box), add=["\\SEEN", "\\answered", "\\Draft", "\\deleted"]).flags == "DRST"


def test_set_flags_moves_a_message_from_new_to_cur_even_without_a_change(tmp_path):
    box = Maildir(str(tmp_path), "h")
    key = deliver(box)
    moved = box.set_flags(only(box))
    assert moved.flags == "" and names_in(tmp_path) == [f"{key}:2,"]
    assert names_in(tmp_path, "new") == []


@pytest.mark.parametrize("name", ["\\Recent", "\\Whatever", "two words", "", "a(b", 'q"uote', "br]acket",
                                  "per%cent", "st*ar", "caf\u00e9"])
def test_names_that_are_no_flag_are_refused(tmp_path, name):
    box = Maildir(str(tmp_path), "h")
    deliver(box)
    with pytest.raises(MaildirError) as caught:
        box.set_flags(only(box), add=[name])
    assert "\n" not in str(caught.value)
    assert names_in(tmp_path, "new") != []   # nothing moved


def test_replace_sets_exactly_the_flags_given_and_keeps_unnamed_letters(tmp_path):
    box = Maildir(str(tmp_path), "h")
    deliver(box)
    message = box.set_flags(only(box), add=["\\Seen", "Work"])
    key = message.key
    os.rename(message.path, tmp_path / "cur" / f"{key}:2,PSaz")   # z: a letter no keyword names
    replaced = box.set_flags(only(box), replace=["\\Flagged", "$Junk"])
    assert replaced.flags == "FPbz"
    assert box.flag_names(replaced.flags) == ("\\Flagged", "$Junk")


def test_a_change_is_reapplied_to_the_name_another_process_gave_the_message(tmp_path):
    mine, theirs = Maildir(str(tmp_path), "h"), Maildir(str(tmp_path), "h")
    deliver(mine)
    held = only(mine)
    theirs.set_flags(only(theirs), add=["\\Flagged", "Work"])
    changed = mine.set_flags(held, add=["\\Seen"])
    assert changed.flags == "FSa"
    assert mine.flag_names(changed.flags) == ("\\Flagged", "\\Seen", "Work")
    assert len(names_in(tmp_path)) == 1


def test_set_flags_of_a_removed_message_reports_it_gone(tmp_path):
    box = Maildir(str(tmp_path), "h")
    deliver(box)
    held = only(box)
    Maildir(str(tmp_path), "h").remove(held)
    assert box.set_flags(held, add=["\\Seen"]) is None
    assert names_in(tmp_path) == [] and names_in(tmp_path, "new") == []


def test_a_change_that_changes_nothing_makes_no_system_call(tmp_path, monkeypatch):
    box = Maildir(str(tmp_path), "h")
    deliver(box)
    message = box.set_flags(only(box), add=["\\Seen", "\\Flagged"])

    def forbidden(*args, **kwargs):
        raise AssertionError("system call")

    for name in ("rename", "stat", "listdir", "scandir", "open"):
        monkeypatch.setattr(os, name, forbidden)
    assert box.set_flags(message, add=["\\Seen"], remove=["\\Draft"]) is message
    box.mark_seen(message)


def test_mark_seen_adds_s_in_cur_and_keeps_every_other_flag(tmp_path):
    box = Maildir(str(tmp_path), "h")
    key = deliver(box)
    box.set_flags(only(box), add=["\\Flagged", "Work"])     # in cur/ without S, as IMAP leaves it
    box.mark_seen(only(box))
    assert names_in(tmp_path) == [f"{key}:2,FSa"]


def test_mark_seen_finds_a_message_flagged_elsewhere_since_the_snapshot(tmp_path):
    box = Maildir(str(tmp_path), "h")
    key = deliver(box)
    held = only(box)
    Maildir(str(tmp_path), "h").set_flags(held, add=["\\Answered"])
    box.mark_seen(held)
    assert names_in(tmp_path) == [f"{key}:2,RS"]


def test_keywords_are_kept_in_dovecot_keywords_with_letters_in_the_name(tmp_path):
    box = Maildir(str(tmp_path), "h")
    key = deliver(box)
    changed = box.set_flags(only(box), add=["$Junk", "Work", "\\Seen"])
    assert (tmp_path / "dovecot-keywords").read_text() == "0 $Junk\n1 Work\n"
    assert names_in(tmp_path) == [f"{key}:2,Sab"]
    assert box.flag_names(changed.flags) == ("\\Seen", "$Junk", "Work")
    assert box.keywords() == ("$Junk", "Work")
    assert oct(os.stat(tmp_path / "dovecot-keywords").st_mode & 0o777) == "0o600"
    assert not (tmp_path / "dovecot-keywords.tmp").exists()


def test_keywords_match_without_regard_to_case(tmp_path):
    box = Maildir(str(tmp_path), "h")
    deliver(box)
    box.set_flags(only(box), add=["Work"])
    assert box.set_flags(only(box), add=["WORK"]).flags == "a"
    assert box.set_flags(only(box), remove=["work"]).flags == ""
    assert box.keywords() == ("Work",)


def test_removing_a_keyword_the_folder_never_had_adds_nothing(tmp_path):
    box = Maildir(str(tmp_path), "h")
    deliver(box)
    assert box.set_flags(only(box), remove=["Nowhere"]).flags == ""
    assert not (tmp_path / "dovecot-keywords").exists()


def test_a_27th_keyword_is_a_clear_limit_error_and_changes_nothing(tmp_path):
    box = Maildir(str(tmp_path), "h")
    deliver(box)
    box.set_flags(only(box), add=[f"k{n}" for n in range(26)])
    table = (tmp_path / "dovecot-keywords").read_text()
    before = only(box)
    assert before.flags == maildir_module._KEYWORD_LETTERS
    with pytest.raises(MaildirError) as caught:
        box.set_flags(before, add=["\\Seen", "one-too-many"])
    assert caught.value.limit is True
    assert "26 keywords" in str(caught.value) and "one-too-many" in str(caught.value)
    assert (tmp_path / "dovecot-keywords").read_text() == table
    assert only(box) == before
    with pytest.raises(MaildirError):
        box.begin(flags=["another"])


def test_keywords_another_process_added_are_read_when_their_letter_shows_up(tmp_path):
    mine, theirs = Maildir(str(tmp_path), "h"), Maildir(str(tmp_path), "h")
    deliver(mine)
    mine.set_flags(only(mine), add=["First"])
    assert mine.flag_names(only(mine).flags) == ("First",)
    theirs.set_flags(only(theirs), add=["Second"])
    assert mine.flag_names(only(mine).flags) == ("First", "Second")
    assert mine.keywords() == ("First", "Second")


def test_keywords_file_is_reread_when_it_changes(tmp_path):
    box = Maildir(str(tmp_path), "h")
    (tmp_path / "dovecot-keywords").write_text("0 Old\n")
    assert box.keywords() == ("Old",)
    (tmp_path / "dovecot-keywords").write_text("0 Old\n3 Fourth\n")
    assert box.keywords() == ("Old", "Fourth")
    assert box.flag_names("ad") == ("Old", "Fourth")


def test_a_keywords_file_with_lines_it_cannot_use_is_still_read(tmp_path):
    box = Maildir(str(tmp_path), "h")
    (tmp_path / "dovecot-keywords").write_text("garbage\n0 Good\n26 OutOfRange\n1 \nx Bad\n0 Twice\n2 Also\n")
    assert box.keywords() == ("Good", "Also")
    deliver(box)
    assert box.set_flags(only(box), add=["New"]).flags == "b"   # the first free letter


def test_letters_without_a_keyword_are_kept_but_not_named(tmp_path):
    box = Maildir(str(tmp_path), "h")
    key = deliver(box)
    os.rename(tmp_path / "new" / key, tmp_path / "cur" / f"{key}:2,Tz")
    assert box.flag_names(only(box).flags) == ("\\Deleted",)
    assert box.set_flags(only(box), add=["\\Seen"]).flags == "STz"


def test_a_file_from_other_software_without_sizes_in_its_name(tmp_path):
    box = Maildir(str(tmp_path), "h")
    (tmp_path / "cur" / "1700000000.M12345P99.otherhost:2,S").write_bytes(b"a\nb\n")
    message = only(box)
    assert (message.key, message.size, message.flags) == ("1700000000.M12345P99.otherhost", 6, "S")
    changed = box.set_flags(message, add=["\\Flagged"])
    assert names_in(tmp_path) == ["1700000000.M12345P99.otherhost:2,FS"]
    assert box.read_wire(changed) == b"a\r\nb\r\n"
    box.mark_seen(changed)
    assert box.remove(changed) is True
