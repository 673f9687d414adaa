"""One delivery path for SMTP, IMAP APPEND and tests; finding messages without scanning."""

import datetime
import os
import time

import pytest

from baremail.maildir import Delivery, Maildir, MaildirError


def age(path, seconds=60):
    """Make new/ and cur/ look untouched for a while, as a quiet mailbox is."""
    then = time.time() - seconds
    for sub in ("new", "cur"):
        os.utime(os.path.join(path, sub), (then, then))


@pytest.fixture
def fsyncs(monkeypatch):
    """Every fd passed to os.fsync, as (st_dev, st_ino) of what it is."""
    seen = []
    real = os.fsync

    def record(fd):
        st = os.fstat(fd)
        seen.append((st.st_dev, st.st_ino))
        return real(fd)

    monkeypatch.setattr(os, "fsync", record)
    return seen


def ident(path):
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def test_commit_is_commit_all_of_one_delivery(tmp_path, monkeypatch):
    box = Maildir(str(tmp_path), "h")
    batches = []
    real = Maildir.commit_all

    def spy(self, deliveries):
        batches.append(list(deliveries))
        return real(self, deliveries)

    monkeypatch.setattr(Maildir, "commit_all", spy)
    delivery = box.begin()
    delivery.write(b"x\r\n")
    key = delivery.commit()
    assert batches == [[delivery]]
    assert os.listdir(tmp_path / "new") == [key]
    box.deliver([b"y\r\n"])
    assert len(batches) == 2


def test_a_batch_goes_through_public_steps_with_one_fsync_of_new(tmp_path, monkeypatch, fsyncs):
    box = Maildir(str(tmp_path), "h")
    steps = []
    for name in ("flush", "start_writeback", "finish"):
        real = getattr(Delivery, name)
        monkeypatch.setattr(Delivery, name,
                            lambda self, _real=real, _name=name: (steps.append(_name), _real(self))[1])
    advised = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, offset, length, advice: advised.append(advice))
    deliveries = [box.begin() for _ in range(3)]
    for n, delivery in enumerate(deliveries):
        delivery.write(b"Subject: %d\r\n\r\n" % n)
    outcomes = box.commit_all(deliveries)
    assert sorted(outcomes) == sorted(os.listdir(tmp_path / "new"))
    assert steps[:6] == ["flush"] * 3 + ["start_writeback"] * 3
    assert steps[6:].count("finish") == 3
    assert advised == [os.POSIX_FADV_DONTNEED] * 3
    assert fsyncs.count(ident(tmp_path / "new")) == 1
    assert ident(tmp_path / "cur") not in fsyncs


def test_a_single_commit_starts_no_writeback(tmp_path, monkeypatch):
    box = Maildir(str(tmp_path), "h")
    monkeypatch.setattr(os, "posix_fadvise", lambda *args: pytest.fail("a hint for one message"))
    box.deliver([b"x\r\n"])


def test_commit_after_abort_stores_nothing(tmp_path):
    box = Maildir(str(tmp_path), "h")
    delivery = box.begin()
    delivery.write(b"x\r\n")
    delivery.abort()
    with pytest.raises(MaildirError):
        delivery.commit()
    assert os.listdir(tmp_path / "new") == [] and os.listdir(tmp_path / "tmp") == []


def test_append_goes_to_cur_with_flags_and_internal_date_durably(tmp_path, fsyncs):
    box = Maildir(str(tmp_path), "h")
    when = datetime.datetime(2021, 3, 4, 5, 6, 7, tzinfo=datetime.timezone.utc)
    delivery = box.begin(flags=["\\Seen", "$Label1", "\\Draft"], internal_date=when)
    delivery.write(b"Subject: appended\r\n\r\nhi\r\n")
    key = delivery.commit()
    assert os.listdir(tmp_path / "cur") == [f"{key}:2,DSa"]
    assert os.listdir(tmp_path / "new") == []
    path = tmp_path / "cur" / f"{key}:2,DSa"
    assert os.stat(path).st_mtime == when.timestamp()
    assert ident(tmp_path / "cur") in fsyncs and ident(tmp_path / "new") not in fsyncs
    (message,) = box.snapshot()
    assert box.internal_date(message) == int(when.timestamp())
    assert box.read_wire(message) == b"Subject: appended\r\n\r\nhi\r\n"


def test_append_without_flags_is_in_cur_with_empty_info(tmp_path):
    box = Maildir(str(tmp_path), "h")
    key = box.deliver([b"x\r\n"], flags=[], internal_date=1_600_000_000)
    assert os.listdir(tmp_path / "cur") == [f"{key}:2,"]
    (message,) = box.snapshot()
    assert box.internal_date(message) == 1_600_000_000


def test_a_large_append_is_written_before_commit_and_dated_after_the_last_write(tmp_path):
    box = Maildir(str(tmp_path), "h")
    delivery = box.begin(flags=["\\Flagged"], internal_date=1_500_000_000)
    delivery.write(b"y" * 300_000)
    delivery.write(b"\r\nend\r\n")
    key = delivery.commit()
    assert os.stat(tmp_path / "cur" / f"{key}:2,F").st_mtime == 1_500_000_000


def test_finish_then_publish_covers_cur(tmp_path, fsyncs):
    box = Maildir(str(tmp_path), "h")
    delivery = box.begin(flags=["\\Seen"])
    delivery.write(b"x\r\n")
    key = delivery.finish()
    assert box.publish([delivery]) == [key]
    assert ident(tmp_path / "cur") in fsyncs


def test_internal_date_of_an_smtp_delivery_is_its_arrival_and_is_cached(tmp_path, monkeypatch):
    box = Maildir(str(tmp_path), "h")
    before = int(time.time())
    box.deliver([b"x\r\n"])
    (message,) = box.snapshot()
    date = box.internal_date(message)
    assert before <= date <= time.time()
    monkeypatch.setattr(os, "stat", lambda *args, **kwargs: pytest.fail("not cached"))
    box.mark_seen(message)
    assert box.internal_date(message) == date


def test_internal_date_of_a_removed_message_is_a_maildir_error(tmp_path):
    box = Maildir(str(tmp_path), "h")
    box.deliver([b"x\r\n"])
    (message,) = box.snapshot()
    box.remove(message)
    with pytest.raises(MaildirError):
        box.internal_date(message)


def test_smtp_delivery_never_touches_the_uidlist(tmp_path):
    box = Maildir(str(tmp_path), "h")
    box.deliver([b"x\r\n"])
    assert sorted(os.listdir(tmp_path)) == ["cur", "new", "tmp"]
    box.uid_listing()
    before = {name: os.stat(tmp_path / name) for name in ("baremail-uidlist", "baremail-uidlist.lock")}
    other = Maildir(str(tmp_path), "h")
    for n in range(5):
        other.deliver([b"%d\r\n" % n])
    for name, st in before.items():
        now = os.stat(tmp_path / name)
        assert (now.st_ino, now.st_size, now.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)


def test_keys_made_in_one_process_ascend(tmp_path):
    from baremail.maildir import _order
    box = Maildir(str(tmp_path), "h")
    keys = [box.begin()._base for _ in range(2000)]
    assert sorted(keys, key=_order) == keys
    assert len({key.split(".M")[1].split("P")[0] for key in keys}) == 2000   # distinct microseconds


def count_listings(monkeypatch):
    calls = []
    real = os.listdir
    monkeypatch.setattr(os, "listdir", lambda path=".": (calls.append(path), real(path))[1])
    monkeypatch.setattr(os, "scandir", lambda *args: pytest.fail("scandir"))
    return calls


def test_removing_messages_others_removed_costs_one_listing_at_most(tmp_path, monkeypatch):
    box = Maildir(str(tmp_path), "h")
    for n in range(60):
        box.deliver([b"%d\r\n" % n])
    age(tmp_path)
    messages = box.snapshot()
    other = Maildir(str(tmp_path), "h")
    for message in messages[::2]:
        other.remove(message)
    age(tmp_path)
    calls = count_listings(monkeypatch)
    removed = [box.remove(message) for message in messages]
    assert removed == [n % 2 == 1 for n in range(60)]
    assert len(calls) == 2        # new/ and cur/, once: the gone ones after it cost nothing


def test_messages_renamed_elsewhere_are_found_with_one_listing(tmp_path, monkeypatch):
    box = Maildir(str(tmp_path), "h")
    for n in range(40):
        box.deliver([b"%d\r\n" % n])
    age(tmp_path)
    messages = box.snapshot()
    other = Maildir(str(tmp_path), "h")
    for message in messages:
        other.set_flags(message, add=["\\Flagged"])
    age(tmp_path)
    calls = count_listings(monkeypatch)
    flags = [box.set_flags(message, add=["\\Seen"]).flags for message in messages]
    assert flags == ["FS"] * 40
    assert len(calls) == 2        # new/ and cur/, once for all 40


def test_a_message_read_after_the_pop3_move_is_found_without_listing(tmp_path, monkeypatch):
    box = Maildir(str(tmp_path), "h")
    box.deliver([b"x\r\n"])
    (message,) = box.snapshot()
    Maildir(str(tmp_path), "h").mark_seen(message)   # another session
    calls = count_listings(monkeypatch)
    assert box.read_wire(message) == b"x\r\n"
    with box.open_wire(message) as reader:
        assert reader.read() == b"x\r\n"
    assert box.locate(message).endswith(":2,S")
    assert box.remove(message) is True
    assert calls == []
