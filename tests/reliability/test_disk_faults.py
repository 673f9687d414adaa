"""A full disk and a read-only Maildir: refuse cleanly, keep serving, recover.

The Maildir lives on a 2 MiB tmpfs of its own. A full disk must give
452 4.3.1 and leave nothing in tmp/ or new/; a Maildir that cannot be
written must give 451 4.3.0 and an ERROR line; in both cases the service
stays up, earlier mail stays readable over POP3, and delivery works again
once the disk does.
"""

from __future__ import annotations

import pytest

from faults import free_bytes, remount, tmpfs
from ledger import data_section
from wire import SMTPClient, deliver, files_in, read_all_over_pop3, rss_kib

# (message size, free space left): the first fails on a write while DATA
# is still arriving, the second only when the last buffer is flushed at commit.
FULL_DISK_CASES = {
    "fails-mid-DATA": (900_000, 300_000),
    "fails-at-commit": (150_000, 60_000),
}


@pytest.mark.parametrize("case", FULL_DISK_CASES, ids=str)
def test_full_disk_gets_452_keeps_earlier_mail_and_recovers(start_service, outbox, tmp_path, case):
    size, leave_free = FULL_DISK_CASES[case]
    disk = tmp_path / "disk"
    with tmpfs(disk, "2m"):
        maildir = disk / "Maildir"
        # No disk reserve here: this is the disk that really fills, the path
        # the reserve normally keeps mail from reaching (test_disk_reserve.py).
        smtp = start_service("smtp", maildir, disk_reserve="0")
        pop3 = start_service("pop3", maildir)
        try:
            earlier = [deliver(smtp.port, outbox, size=20_000) for _ in range(3)]
            filler = disk / "filler"
            filler.write_bytes(b"\0" * (free_bytes(disk) - leave_free))
            assert free_bytes(disk) < size

            client = SMTPClient(smtp.port)
            mid, message = outbox.new(size)
            client.begin()
            client.send(data_section(message))
            reply = client.reply()
            outbox.refuse(mid)
            assert reply.startswith(b"452 4.3.1"), reply
            assert files_in(maildir / "tmp") == []
            assert "ERROR cannot store message" in smtp.log()

            # Earlier mail is still there and whole, with the disk still full.
            assert set(read_all_over_pop3(pop3.port)) == set(earlier)

            # Space returns: the same session delivers.
            filler.unlink()
            again, message = outbox.new(size)
            client.begin()
            client.send(data_section(message))
            reply = client.reply()
            assert reply.startswith(b"250 2.0.0"), reply
            outbox.ack(again)
            client.quit()
            assert smtp.process.poll() is None and "Traceback" not in smtp.log()
            outbox.rss(max(rss_kib(smtp.process.pid), rss_kib(pop3.process.pid)))
            outbox.settle(maildir)
        finally:
            smtp.stop()
            pop3.stop()


def test_read_only_maildir_gets_451_and_an_error_line_and_service_keeps_serving(start_service, outbox, tmp_path):
    disk = tmp_path / "disk"
    with tmpfs(disk, "2m"):
        maildir = disk / "Maildir"
        smtp = start_service("smtp", maildir)
        pop3 = start_service("pop3", maildir)
        try:
            earlier = deliver(smtp.port, outbox)
            remount(disk, "ro")
            try:
                for _ in range(3):     # one client after another: no crash, no restart
                    client = SMTPClient(smtp.port)
                    mid, message = outbox.new()
                    client.begin()
                    client.send(data_section(message))
                    reply = client.reply()
                    outbox.refuse(mid)
                    assert reply.startswith(b"451 4.3.0"), reply
                    assert client.command(b"NOOP").startswith(b"250")
                    client.quit()
                log = smtp.log()
                assert "ERROR cannot store message" in log and "Read-only file system" in log
                assert smtp.process.poll() is None
                # Reading still works (the move to cur/ fails, and is logged).
                assert set(read_all_over_pop3(pop3.port)) == {earlier}
            finally:
                remount(disk, "rw")
            deliver(smtp.port, outbox)
            assert "Traceback" not in smtp.log() + pop3.log()
            assert files_in(maildir / "tmp") == []
            outbox.rss(max(rss_kib(smtp.process.pid), rss_kib(pop3.process.pid)))
            outbox.settle(maildir)
        finally:
            smtp.stop()
            pop3.stop()
