"""The disk reserve on a size-capped tmpfs: below `disk_reserve` free, SMTP
answers 452 4.3.1 (at MAIL FROM, or at the final dot for a message that
would take the space below it) and IMAP APPEND NO [OVERQUOTA]; the journal
(stderr here) has one WARNING for the episode, however many messages are
refused; STATUS= says so; delivery resumes by itself once space is freed,
and nothing partial is ever left."""

from __future__ import annotations

import imaplib
import smtplib
import time

from faults import free_bytes, tmpfs
from wire import files_in


def send(port: int, body: bytes):
    """(code, text) of the first refusal, or (250, ...) when stored."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
            client.sendmail("a@b", ["root@localhost"], body)
        return 250, b""
    except smtplib.SMTPResponseException as exc:
        return exc.smtp_code, exc.smtp_error


def test_below_the_reserve_mail_waits_with_452_and_flows_again_when_space_is_back(start_service, tmp_path):
    disk = tmp_path / "disk"
    with tmpfs(disk, "8m"):
        maildir = disk / "Maildir"
        smtp = start_service("smtp", maildir, disk_reserve="2M")
        imap = start_service("imap", maildir, disk_reserve="2M")
        assert send(smtp.port, b"Subject: before\r\n\r\nroom\r\n")[0] == 250
        smtp.wait_ready()
        ballast = disk / "ballast"
        ballast.write_bytes(b"\0" * (free_bytes(disk) - 1024 * 1024))   # 1 MiB left: below 2 MiB
        for n in range(5):
            code, text = send(smtp.port, b"Subject: refused %d\r\n\r\nwait\r\n" % n)
            assert (code, text[:5]) == (452, b"4.3.1"), (code, text)
        client = imaplib.IMAP4("127.0.0.1", imap.port, timeout=20)
        client.login("u", "p")
        typ, data = client.append("INBOX", None, None, b"Subject: appended\r\n\r\nwait\r\n")
        assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]"), data
        smtp.notify.wait_for(lambda line: line.startswith("STATUS=") and "refusing new mail" in line)
        assert smtp.log().count("WARNING only") == 1, smtp.log()
        # Just above the reserve: a message that would take it below is
        # refused at its final dot, after a MAIL FROM that was accepted.
        ballast.write_bytes(b"\0" * (ballast.stat().st_size - 1024 * 1024 - 200 * 1024))
        time.sleep(1.1)   # the reserve is looked at once a second
        big = b"Subject: big\r\n\r\n" + b"y" * 998 + b"\r\n"
        code, text = send(smtp.port, big * 400)
        assert (code, text[:5]) == (452, b"4.3.1"), (code, text)
        assert files_in(maildir / "tmp") == []
        # Space is back: mail flows again, with no restart.
        ballast.unlink()
        deadline = time.monotonic() + 5
        while send(smtp.port, b"Subject: after\r\n\r\nroom again\r\n")[0] != 250:
            assert time.monotonic() < deadline, "delivery did not resume"
            time.sleep(0.3)
        assert client.append("INBOX", None, None, b"Subject: appended\r\n\r\nnow\r\n")[0] == "OK"
        client.logout()
        assert "accepting mail" in smtp.log()
        stored = sorted(path.read_bytes() for path in (maildir / "new").iterdir()) + \
            sorted(path.read_bytes() for path in (maildir / "cur").iterdir())
        subjects = sorted(line for data in stored for line in data.split(b"\n") if line.startswith(b"Subject: "))
        assert subjects == [b"Subject: after", b"Subject: appended", b"Subject: before"]
        assert files_in(maildir / "tmp") == []
