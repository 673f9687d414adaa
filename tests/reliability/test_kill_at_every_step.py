"""SIGKILL at each step of a delivery or a POP3 update, then start again.

strace attaches to the running program and kills it on entry to a chosen
syscall, so each kill point is exact and the product has no test hooks.
After the kill the Maildir must hold each message whole or not at all; a
message killed after its rename into new/ but before its 250 may be there
once, and is counted as "stored without ack". The restarted service must
deliver again.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

import pytest

from faults import kill_at_syscall, wait_killed
from ledger import check, data_section
from wire import Gone, POP3Client, SMTPClient, deliver, read_all_over_pop3, rss_kib

SMALL = 20_000     # fits Delivery's write buffer: every write happens at commit, in a worker thread
LARGE = 700_000    # the event loop flushes it to tmp/ while DATA is still arriving


@dataclass(frozen=True)
class KillPoint:
    name: str
    size: int
    syscall: str
    when: int
    threads: bool         # count calls in every thread (strace -f), or the main thread only
    stored: bool          # the message is in new/ after this kill


SMTP_KILL_POINTS = [
    KillPoint("mid-DATA-first-write-to-tmp", LARGE, "write", 1, False, False),
    KillPoint("mid-DATA-second-write-to-tmp", LARGE, "write", 2, False, False),
    KillPoint("after-the-dot-last-write-to-tmp", SMALL, "write", 1, True, False),
    KillPoint("fsync-of-the-message-file", SMALL, "fsync", 1, True, False),
    KillPoint("close-of-the-message-file", SMALL, "close", 1, True, False),
    KillPoint("rename-from-tmp-to-new", SMALL, "rename", 1, True, False),
    KillPoint("fsync-of-new-after-the-rename", SMALL, "fsync", 2, True, True),
    KillPoint("event-loop-wakeup-after-commit", SMALL, "sendto", 1, True, True),
    KillPoint("logging-the-delivery", SMALL, "write", 1, False, True),
    KillPoint("sending-the-250", SMALL, "sendto", 1, False, True),
]


@pytest.mark.parametrize("point", SMTP_KILL_POINTS, ids=lambda point: point.name)
def test_smtp_killed_mid_transaction_leaves_whole_message_or_nothing(start_service, outbox, tmp_path, point):
    maildir = tmp_path / "Maildir"
    # Without NOTIFY_SOCKET the program sends no STATUS= datagrams, so its
    # only sendto calls are replies and event-loop wakeups: the ones counted.
    smtp = start_service("smtp", maildir, env={"NOTIFY_SOCKET": ""})
    client = SMTPClient(smtp.port)        # the greeting: the program runs
    client.begin()
    outbox.rss(rss_kib(smtp.process.pid))
    mid, message = outbox.new(point.size)
    with kill_at_syscall(smtp.process.pid, point.syscall, point.when, point.threads):
        try:
            client.send(data_section(message))
            reply = client.reply()
        except (Gone, OSError):
            reply = None
        assert reply is None, f"the kill point was never reached: the client got {reply!r}"
        assert wait_killed(smtp) == -signal.SIGKILL
    client.close()

    # Start again on the same Maildir: it works, and holds whole messages only.
    again = start_service("smtp", maildir)
    deliver(again.port, outbox)
    audit = outbox.settle(maildir, unacknowledged_may_exist=True)
    assert audit.copies[mid] == (1 if point.stored else 0), \
        f"after a kill at {point.name} the message has {audit.copies[mid]} copies"
    if point.stored:
        outbox.ledger.note(f"SIGKILL at {point.name}: stored without ack (no 250 sent)")
    # A kill before the rename leaves the message's file in tmp/ (clean_tmp
    # removes it after 36 h; it proves the kill hit inside the delivery);
    # after the rename, nothing is left there.
    assert len(audit.tmp_files) == (0 if point.stored else 1), audit.tmp_files


def _fill_mailbox(start_service, outbox, maildir, count=3) -> list[str]:
    smtp = start_service("smtp", maildir)
    ids = [deliver(smtp.port, outbox) for _ in range(count)]
    smtp.stop()
    return ids


def _ids_by_number(client: POP3Client, count: int) -> list[str]:
    """Message ids in POP3 order, through TOP (which leaves messages in new/)."""
    ids = []
    for number in range(1, count + 1):
        status, headers = client.multiline(b"TOP %d 0" % number)
        assert status.startswith(b"+OK"), status
        line = [item for item in headers.split(b"\r\n") if item.startswith(b"X-Reliability-Id: ")][0]
        ids.append(line.split(b": ", 1)[1].decode())
    return ids


@dataclass(frozen=True)
class PopKill:
    name: str
    syscall: str | None   # None: SIGKILL from the test after the DELEs were answered
    when: int
    deleted: int          # how many of the DELEd messages are gone after the kill


POP3_KILL_POINTS = [
    PopKill("after-DELE-before-QUIT", None, 0, 0),
    PopKill("QUIT-first-unlink", "unlink", 1, 0),
    PopKill("QUIT-second-unlink", "unlink", 2, 1),
    PopKill("QUIT-third-unlink", "unlink", 3, 2),
]


@pytest.mark.parametrize("point", POP3_KILL_POINTS, ids=lambda point: point.name)
def test_pop3_killed_during_update_deletes_whole_messages_or_nothing(start_service, outbox, tmp_path, point):
    maildir = tmp_path / "Maildir"
    sent = _fill_mailbox(start_service, outbox, maildir)
    pop3 = start_service("pop3", maildir)
    client = POP3Client(pop3.port)
    pop3.wait_ready()
    client.login()
    order = _ids_by_number(client, len(sent))
    assert sorted(order) == sorted(sent)
    for number in range(1, len(sent) + 1):
        assert client.command(b"DELE %d" % number).startswith(b"+OK")
    if point.syscall is None:
        os.kill(pop3.process.pid, signal.SIGKILL)
        assert wait_killed(pop3) == -signal.SIGKILL
    else:
        with kill_at_syscall(pop3.process.pid, point.syscall, point.when, threads=False):
            with pytest.raises(Gone):
                client.quit()
            assert wait_killed(pop3) == -signal.SIGKILL
    client.close()

    again = start_service("pop3", maildir)
    present = read_all_over_pop3(again.port)
    gone = order[:point.deleted]
    assert sorted(present) == sorted(order[point.deleted:])
    outbox.deleted.update(gone)
    outbox.settle(maildir)


def test_pop3_killed_while_moving_a_retrieved_message_to_cur_keeps_it_whole(start_service, outbox, tmp_path):
    maildir = tmp_path / "Maildir"
    sent = _fill_mailbox(start_service, outbox, maildir, count=2)
    pop3 = start_service("pop3", maildir)
    client = POP3Client(pop3.port)
    pop3.wait_ready()
    client.login()
    with kill_at_syscall(pop3.process.pid, "rename", 1, threads=False):
        # The move to cur/ (marking it seen) happens at QUIT, after the
        # message was sent; killed in that rename, the file must stay whole.
        try:
            status, body = client.multiline(b"RETR 1")
            if status.startswith(b"+OK"):
                assert check(body.replace(b"\r\n", b"\n"))[1]
            client.command(b"QUIT")
        except Gone:
            pass
        assert wait_killed(pop3) == -signal.SIGKILL
    client.close()
    again = start_service("pop3", maildir)
    assert sorted(read_all_over_pop3(again.port)) == sorted(sent)
    outbox.settle(maildir)
