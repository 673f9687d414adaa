import multiprocessing
import os
import stat
import time

import pytest
from hypothesis import given, settings, strategies as st

from baremail.maildir import Maildir, MaildirError, Message, WireReader


def read_wire(maildir, message, size=7):
    with maildir.open_wire(message) as reader:
        out = b""
        while chunk := reader.read(size):
            out += chunk
    return out


def test_creates_directories_private(tmp_path):
    Maildir(str(tmp_path / "box"))
    for sub in ("", "tmp", "new", "cur"):
        mode = stat.S_IMODE(os.stat(tmp_path / "box" / sub).st_mode)
        assert mode == 0o700, sub


def test_delivered_file_is_private_and_in_new(tmp_path):
    box = Maildir(str(tmp_path))
    key = box.deliver([b"Subject: x\r\n\r\nhi\r\n"])
    path = tmp_path / "new" / key
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path / "tmp") == []


def test_stores_lf_line_ends_and_both_sizes_in_name(tmp_path):
    box = Maildir(str(tmp_path))
    wire = b"Subject: x\r\n\r\nline one\r\nline two\r\n"
    key = box.deliver([wire])
    disk = (tmp_path / "new" / key).read_bytes()
    assert disk == wire.replace(b"\r\n", b"\n")
    assert key.endswith(f",S={len(disk)},W={len(wire)}")


@pytest.mark.parametrize("split", range(1, 12))
def test_crlf_split_across_chunks_is_still_one_line_end(tmp_path, split):
    box = Maildir(str(tmp_path))
    wire = b"a\r\nbc\r\n\r\nd\r\n"
    key = box.deliver([wire[:split], wire[split:]])
    assert (tmp_path / "new" / key).read_bytes() == b"a\nbc\n\nd\n"
    [message] = box.snapshot()
    assert message.size == len(wire)
    assert read_wire(box, message) == wire


def test_bare_cr_and_bare_lf_survive_and_sizes_match_what_pop3_sends(tmp_path):
    box = Maildir(str(tmp_path))
    wire = b"a\rb\nc\r\r\nd\r"
    key = box.deliver([wire[:4], wire[4:8], wire[8:]])
    [message] = box.snapshot()
    sent = read_wire(box, message, size=3)
    assert message.size == len(sent)
    assert key.endswith(f",W={len(sent)}")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"\r", b"\n", b"a", b".", b"\r\n", b"xy"]), max_size=40),
       st.integers(min_value=1, max_value=9))
def test_wire_size_in_name_always_equals_wire_bytes_read(tmp_path_factory, pieces, read_size):
    box = Maildir(str(tmp_path_factory.mktemp("box")))
    box.deliver(pieces)
    [message] = box.snapshot()
    assert len(read_wire(box, message, size=read_size)) == message.size


def test_snapshot_lists_new_and_cur_in_delivery_order(tmp_path):
    box = Maildir(str(tmp_path))
    keys = [box.deliver([f"Subject: {n}\r\n\r\n".encode()]) for n in range(20)]
    box.mark_seen(box.snapshot()[3])
    assert [m.key for m in box.snapshot()] == keys


def test_snapshot_needs_no_file_reads_for_our_names(tmp_path):
    box = Maildir(str(tmp_path))
    box.deliver([b"x\r\n"])
    [message] = box.snapshot()
    os.chmod(message.path, 0)  # unreadable, yet listed with its size
    assert box.snapshot()[0].size == 3


def test_foreign_file_without_sizes_is_measured(tmp_path):
    box = Maildir(str(tmp_path))
    (tmp_path / "new" / "12345.foreign").write_bytes(b"a\nb\n")
    [message] = box.snapshot()
    assert message.key == "12345.foreign" and message.size == 6


def test_dot_files_are_ignored(tmp_path):
    box = Maildir(str(tmp_path))
    (tmp_path / "cur" / ".hidden").write_bytes(b"x")
    assert box.snapshot() == []


def test_mark_seen_moves_to_cur_keeping_the_key(tmp_path):
    box = Maildir(str(tmp_path))
    key = box.deliver([b"x\r\n"])
    [message] = box.snapshot()
    box.mark_seen(message)
    box.mark_seen(message)  # idempotent
    assert os.listdir(tmp_path / "cur") == [key + ":2,S"]
    [again] = box.snapshot()
    assert again.key == key
    assert read_wire(box, message) == b"x\r\n"  # old snapshot entry still readable


def test_remove_is_idempotent(tmp_path):
    box = Maildir(str(tmp_path))
    box.deliver([b"x\r\n"])
    [message] = box.snapshot()
    assert box.remove(message) is True
    assert box.remove(message) is False
    assert box.snapshot() == []


def test_remove_finds_message_moved_to_cur(tmp_path):
    box = Maildir(str(tmp_path))
    box.deliver([b"x\r\n"])
    [message] = box.snapshot()
    box.mark_seen(message)
    assert box.remove(message) is True
    assert os.listdir(tmp_path / "cur") == []


def test_open_wire_of_removed_message_is_a_maildir_error(tmp_path):
    box = Maildir(str(tmp_path))
    box.deliver([b"x\r\n"])
    [message] = box.snapshot()
    box.remove(message)
    with pytest.raises(MaildirError):
        box.open_wire(message)


def test_abort_leaves_nothing(tmp_path):
    box = Maildir(str(tmp_path))
    delivery = box.begin()
    delivery.write(b"partial")
    delivery.abort()
    delivery.abort()
    assert os.listdir(tmp_path / "tmp") == [] and os.listdir(tmp_path / "new") == []


def test_clean_tmp_removes_only_old_files(tmp_path):
    box = Maildir(str(tmp_path))
    old, fresh = tmp_path / "tmp" / "old", tmp_path / "tmp" / "fresh"
    old.write_bytes(b"x")
    fresh.write_bytes(b"x")
    long_ago = time.time() - 37 * 3600
    os.utime(old, (long_ago, long_ago))
    assert box.clean_tmp() == 1
    assert os.listdir(tmp_path / "tmp") == ["fresh"]


def test_unusable_path_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(MaildirError) as caught:
        Maildir(str(tmp_path / "file" / "box"))
    assert "cannot use Maildir" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_hostname_with_slash_and_colon_is_escaped(tmp_path):
    box = Maildir(str(tmp_path), hostname="a/b:c,d")
    key = box.deliver([b"x\r\n"])
    assert "/" not in key and ":" not in key
    assert r"a\057b\072c\054d" in key


def _deliver_many(path, count, tag):
    box = Maildir(path)
    for n in range(count):
        box.deliver([f"X-Tag: {tag}-{n}\r\n\r\nbody\r\n".encode()])


def test_two_processes_delivering_at_once_lose_nothing(tmp_path):
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_deliver_many, args=(str(tmp_path), 150, tag)) for tag in "ab"]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    box = Maildir(str(tmp_path))
    messages = box.snapshot()
    assert len(messages) == 300
    assert len({m.key for m in messages}) == 300
    tags = set()
    for message in messages:
        data = read_wire(box, message, size=1 << 16)
        tags.add(data.split(b"\r\n", 1)[0])
    assert len(tags) == 300
