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


# read_wire and the snapshot's name parsing: the fast paths agree with the slow ones

from baremail import maildir as maildir_module  # noqa: E402


def test_read_wire_is_what_open_wire_yields(tmp_path):
    box = maildir_module.Maildir(str(tmp_path / "md"), "host")
    box.deliver([b"Subject: a\r\n\r\nline\r\n.dot\r\nbare\nlf\r\n"])
    box.deliver([b""])
    for message in box.snapshot():
        with box.open_wire(message) as reader:
            streamed = reader.read(1 << 20)
        assert box.read_wire(message) == streamed
        assert len(streamed) == message.size
        box.mark_seen(message)
        assert box.read_wire(message) == streamed      # found again in cur/
        box.remove(message)
        try:
            box.read_wire(message)
        except maildir_module.MaildirError:
            pass
        else:
            raise AssertionError("read_wire of a removed message did not fail")


def test_read_wire_declines_a_file_larger_than_its_name_says(tmp_path):
    box = maildir_module.Maildir(str(tmp_path / "md"), "host")
    box.deliver([b"short\r\n"])
    (message,) = box.snapshot()
    with open(message.path, "ab") as handle:
        handle.write(b"grown\n")
    assert box.read_wire(message) is None


def test_order_fast_path_agrees_with_the_pattern():
    for key in ("1700000000.M000123P42Q1R00.host,S=1,W=2", "12.M5P", "12.M5", "1.2.M3P", "x.M1P",
                "123.M456X789P1", "99", "", "007.M010P9.h"):
        match = maildir_module._NAME.match(key)
        expected = ((float("inf"), 0, key) if not match
                    else (int(match.group(1)), int(match.group(2) or 0), key))
        assert maildir_module._order(key) == expected, key


def test_commit_all_stores_a_batch_and_reports_each_failure(tmp_path):
    box = maildir_module.Maildir(str(tmp_path / "md"), "host")
    deliveries = [box.begin() for _ in range(3)]
    for number, delivery in enumerate(deliveries):
        delivery.write(b"Subject: %d\r\n\r\nbody\r\n" % number)
    deliveries[1].abort()                   # e.g. the client went away meanwhile
    deliveries[1]._done = False             # ...yet it reaches the batch: it must fail alone
    deliveries[1]._tmp = str(tmp_path / "md" / "no-such-dir" / "x")
    outcomes = box.commit_all(deliveries)
    assert isinstance(outcomes[1], maildir_module.MaildirError)
    stored = sorted(message.key for message in box.snapshot())
    assert sorted([outcomes[0], outcomes[2]]) == stored
    assert [open(m.path, "rb").read() for m in box.snapshot()] == [b"Subject: 0\n\nbody\n",
                                                                   b"Subject: 2\n\nbody\n"]
    assert os.listdir(tmp_path / "md" / "tmp") == []


def test_a_small_message_creates_no_file_before_commit(tmp_path):
    box = maildir_module.Maildir(str(tmp_path / "md"), "host")
    delivery = box.begin()
    delivery.write(b"x" * 1000 + b"\r\n")
    assert os.listdir(tmp_path / "md" / "tmp") == []
    delivery.abort()
    assert os.listdir(tmp_path / "md" / "tmp") == []
    delivery = box.begin()
    delivery.write(b"y" * 300_000)          # past what is held in memory: written to tmp/
    assert len(os.listdir(tmp_path / "md" / "tmp")) == 1
    key = delivery.commit()
    assert os.path.getsize(tmp_path / "md" / "new" / key) == 300_000
