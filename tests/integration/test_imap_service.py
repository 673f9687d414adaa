"""baremail-imap as a real program, socket-activated, over the Maildir the
real baremail-smtp fills: imaplib, a Thunderbird-like session, IDLE push,
IMAP and POP3 sessions on one Maildir at once, streaming, bad input."""

import imaplib
import os
import poplib
import re
import signal
import smtplib
import socket
import statistics
import time

import pytest

from servicekit import stored_messages


def deliver(smtp_service, *payloads: bytes):
    with smtplib.SMTP("127.0.0.1", smtp_service.port, timeout=60) as client:
        for payload in payloads:
            client.sendmail("cron@host.example", ["root@localhost"], payload)


def message(n: int) -> bytes:
    return (f"From: Cron Daemon <cron@host.example>\r\nTo: root@localhost\r\nSubject: job {n} done\r\n"
            f"Message-ID: <job{n}@host.example>\r\nDate: Wed, 02 Dec 2026 06:00:0{n % 10} +0000\r\n\r\n"
            f"output of job {n}\r\n.a line with a dot\r\n").encode()


@pytest.fixture
def services(start_service, tmp_path):
    maildir = tmp_path / "Maildir"
    return start_service("smtp", maildir), start_service("imap", maildir), start_service("pop3", maildir)


def imap(service) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", service.port, timeout=30)
    client.login("anyone", "anything")
    return client


def wire(stored: bytes) -> bytes:
    return stored.replace(b"\n", b"\r\n")


def test_ready_login_select_and_fetch_what_smtp_stored(services):
    smtp, imap_service, _ = services
    deliver(smtp, message(1), message(2))
    client = imap(imap_service)
    imap_service.wait_ready()
    assert client.select("INBOX") == ("OK", [b"2"])
    stored = stored_messages(smtp.maildir)
    for number, expected in enumerate(sorted(stored), 1):
        typ, data = client.fetch(str(number), "(BODY.PEEK[] RFC822.SIZE)")
        assert typ == "OK"
        assert data[0][1] == wire(expected)
        assert f"RFC822.SIZE {len(wire(expected))}".encode() in data[0][0] + data[1]
    client.logout()
    imap_service.notify.wait_for(lambda line: line.startswith("STATUS="))


THUNDERBIRD_FIELDS = ("From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups "
                      "In-Reply-To Content-Type Reply-To Received")


def test_a_thunderbird_like_session(services):
    # What Thunderbird 153 sends (shared/IMAP-CLIENTS.md): two connections,
    # one discovering folders (creating Trash), one holding INBOX in IDLE;
    # a delete moves the message to Trash.
    smtp, imap_service, _ = services
    deliver(smtp, message(1), message(2), message(3))
    folders = imap(imap_service)
    typ, data = folders._untagged_response(*folders._simple_command("NAMESPACE"), "NAMESPACE")
    assert (typ, data) == ("OK", [b'(("" ".")) NIL NIL'])
    typ, data = folders.xatom("ID", '("name" "Thunderbird" "version" "153.8.0")')
    assert typ == "OK" and b'"BareMail"' in folders.untagged_responses.pop("ID")[0]
    assert folders.lsub('""', "*") == ("OK", [None])
    assert folders.list('""', "INBOX")[1] == [b'(\\HasNoChildren) "." "INBOX"']
    assert folders.create("Trash")[0] == "OK" and folders.subscribe("Trash")[0] == "OK"
    inbox = imap(imap_service)
    assert inbox.select("INBOX")[0] == "OK"
    typ, data = inbox.uid("FETCH", "1:*", "(FLAGS)")
    assert typ == "OK" and len(data) == 3
    typ, data = inbox.uid("FETCH", "1:3", f"(UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS ({THUNDERBIRD_FIELDS})])")
    headers = [part[1] for part in data if isinstance(part, tuple)]
    assert [h.split(b"Subject: ")[1].split(b"\r\n")[0] for h in headers] == [b"job 1 done", b"job 2 done", b"job 3 done"]
    assert all(h.endswith(b"\r\n\r\n") and b"output of job" not in h for h in headers)
    # the offline body fetch, a set with a gap
    typ, data = inbox.uid("FETCH", "1,3", "(UID RFC822.SIZE BODY.PEEK[])")
    assert [part[1].endswith(b".a line with a dot\r\n") for part in data if isinstance(part, tuple)] == [True, True]
    # n:* past the last UID means the last one
    typ, data = inbox.uid("FETCH", "4:*", "(FLAGS)")
    assert data == [b"3 (UID 3 FLAGS ())"]
    # IDLE, then a delete = MOVE to Trash
    inbox.send(b"t1 IDLE\r\n")
    assert inbox.readline() == b"+ idling\r\n"
    inbox.send(b"DONE\r\n")
    assert inbox.readline() == b"t1 OK IDLE terminated\r\n"
    typ, data = inbox.uid("MOVE", "2", "Trash")
    assert typ == "OK"
    assert inbox.untagged_responses.get("EXPUNGE") == [b"2"]
    assert re.match(rb"\[COPYUID \d+ 2 1\]", inbox.untagged_responses["OK"][-1])
    assert inbox.uid("SEARCH", "ALL")[1] == [b"1 3"]
    trash = imap(imap_service)
    trash.select("Trash")
    assert trash.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1][0][1] == b"Subject: job 2 done\r\n\r\n"
    for client in (folders, inbox, trash):
        client.logout()


def test_idle_wakes_up_on_a_real_smtp_delivery(services, record_property):
    smtp, imap_service, _ = services
    deliver(smtp, message(0))
    client = imap(imap_service)
    client.select("INBOX")
    delays = []
    for n in range(1, 6):
        client.send(b"i%d IDLE\r\n" % n)
        assert client.readline() == b"+ idling\r\n"
        with smtplib.SMTP("127.0.0.1", smtp.port, timeout=30) as sender:
            sender.sendmail("a@b", ["root"], message(n))
            acked = time.monotonic()   # the 250 is in: the message is in new/
        client.sock.settimeout(5)
        line = client.readline()
        delays.append(time.monotonic() - acked)
        assert line == b"* %d EXISTS\r\n" % (n + 1)
        # \Recent stays for the session that saw a message first (RFC 3501 2.3.2)
        assert client.readline() == b"* %d RECENT\r\n" % (n + 1)
        client.send(b"DONE\r\n")
        assert client.readline() == b"i%d OK IDLE terminated\r\n" % n
    median = statistics.median(delays)
    record_property("idle_wakeup_median_ms", round(median * 1000, 1))
    print(f"IDLE wake-up after the 250: median {median * 1000:.1f} ms, max {max(delays) * 1000:.1f} ms")
    assert median < 0.5
    client.logout()


def test_two_imap_sessions_and_a_pop3_session_share_the_maildir(services):
    smtp, imap_service, pop3_service = services
    deliver(smtp, message(1), message(2), message(3))
    first, second = imap(imap_service), imap(imap_service)
    first.select("INBOX")
    second.select("INBOX")
    # a flag set in one session is told to the other as FETCH FLAGS
    first.store("1", "+FLAGS", "(\\Flagged $Label1)")
    second.noop()
    fetches = second.untagged_responses.pop("FETCH", [])
    assert any(b"\\Flagged" in item and b"$Label1" in item for item in fetches), fetches
    # POP3 RETR marks \Seen; IMAP flags survive it; POP3 DELE + QUIT is an EXPUNGE
    pop = poplib.POP3("127.0.0.1", pop3_service.port, timeout=30)
    pop.user("u")
    pop.pass_("p")
    pop.retr(1)
    pop.dele(3)
    pop.quit()
    first.noop()
    assert first.untagged_responses.pop("EXPUNGE", []) == [b"3"]
    assert first.untagged_responses.pop("FETCH") == [b"1 (FLAGS ($Label1 \\Flagged \\Seen))"]
    typ, data = first.fetch("1:*", "(FLAGS)")
    assert data == [b"1 (FLAGS ($Label1 \\Flagged \\Seen))", b"2 (FLAGS ())"]
    # the second session, which does not NOOP, still has 3 messages until it asks
    typ, data = second.fetch("1:3", "(FLAGS)")
    assert typ == "OK" and {item.split()[0] for item in data} == {b"1", b"2", b"3"}
    second.noop()
    assert second.untagged_responses.pop("EXPUNGE", []) == [b"3"]
    # and the other way round: IMAP's \Deleted + EXPUNGE is gone for POP3
    first.store("2", "+FLAGS", "(\\Deleted)")
    first.expunge()
    pop = poplib.POP3("127.0.0.1", pop3_service.port, timeout=30)
    pop.user("u")
    pop.pass_("p")
    assert pop.stat()[0] == 1
    pop.quit()
    first.logout()
    second.logout()


def test_append_is_stored_durably_with_flags_and_date_and_comes_back(services):
    smtp, imap_service, _ = services
    client = imap(imap_service)
    data = message(7)
    typ, resp = client.append("INBOX", "(\\Seen $Forwarded)", '"02-Dec-2026 06:00:00 +0000"', data)
    assert typ == "OK" and re.match(rb"\[APPENDUID \d+ 1\]", resp[0]), resp
    [path] = list((smtp.maildir / "cur").iterdir())
    assert path.read_bytes() == data.replace(b"\r\n", b"\n")
    assert path.name.endswith(":2,Sa") and (smtp.maildir / "dovecot-keywords").read_text() == "0 $Forwarded\n"
    assert int(path.stat().st_mtime) == 1796191200
    client.select("INBOX")
    typ, got = client.fetch("1", "(FLAGS INTERNALDATE BODY.PEEK[])")
    assert b"$Forwarded" in got[0][0] and b'INTERNALDATE "02-Dec-2026' in got[0][0]
    assert got[0][1] == data
    assert client.append("Nowhere", None, None, data)[0] == "NO"
    client.logout()


def test_rename_inbox_moves_its_messages_and_leaves_it_empty(services):
    # RFC 3501 6.3.5; another session with INBOX selected hears EXPUNGE.
    smtp, imap_service, _ = services
    deliver(smtp, message(1), message(2), message(3))
    client, watcher = imap(imap_service), imap(imap_service)
    assert watcher.select("INBOX") == ("OK", [b"3"])
    client.select("INBOX")
    client.store("2", "+FLAGS", "(\\Flagged)")
    client.create("Archives.Child")
    assert client.rename("INBOX", "Archives.Child")[0] == "NO"   # exists
    typ, data = client.rename("INBOX", '"Old mail"')
    assert typ == "OK", data
    assert client.status("INBOX", "(MESSAGES)")[1] == [b'"INBOX" (MESSAGES 0)']
    assert client.status('"Old mail"', "(MESSAGES)")[1] == [b'"Old mail" (MESSAGES 3)']
    watcher.noop()
    assert watcher.response("EXPUNGE") == ("EXPUNGE", [b"3", b"2", b"1"])
    assert watcher.select("INBOX") == ("OK", [b"0"])
    client.select('"Old mail"')
    typ, data = client.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    subjects = [item[1].strip() for item in data if isinstance(item, tuple)]
    assert subjects == [b"Subject: job 1 done", b"Subject: job 2 done", b"Subject: job 3 done"]
    assert b"\\Flagged" in data[2][0] and b"\\Flagged" not in data[0][0]
    # New mail goes on arriving in INBOX.
    deliver(smtp, message(4))
    assert client.status("INBOX", "(MESSAGES)")[1] == [b'"INBOX" (MESSAGES 1)']
    client.logout()
    watcher.logout()


def test_a_100_mb_body_streams_with_memory_flat(services):
    smtp, imap_service, _ = services
    line = b"x" * 998 + b"\r\n"
    big = b"Subject: big\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n" \
          b"Content-Type: text/plain\r\n\r\nhi\r\n--zz\r\nContent-Type: application/octet-stream\r\n\r\n" + \
          line * (100 * 1024) + b"--zz--\r\n"
    deliver(smtp, b"Subject: small\r\n\r\nx\r\n", big)
    with socket.create_connection(("127.0.0.1", imap_service.port), timeout=60) as sock:
        stream = sock.makefile("rb")
        stream.readline()
        sock.sendall(b"a LOGIN u p\r\nb SELECT INBOX\r\nc FETCH 1 BODY[]\r\n")
        while not stream.readline().startswith(b"c OK"):
            pass
        before = imap_service.rss_kb()
        sock.sendall(b"d FETCH 2 (BODYSTRUCTURE ENVELOPE)\r\n")
        answer = stream.readline()
        assert b'("TEXT" "PLAIN"' in answer and b'"MIXED"' in answer, answer[:300]
        assert stream.readline().startswith(b"d OK")
        sock.sendall(b"e FETCH 2 BODY.PEEK[]\r\n")
        head = stream.readline()
        size = int(re.search(rb"\{(\d+)\}", head).group(1))
        got = 0
        while got < size:
            got += len(stream.read(min(1 << 20, size - got)))
        assert stream.readline() == b")\r\n" and stream.readline().startswith(b"e OK")
        after = imap_service.rss_kb()
    [stored] = [m for m in stored_messages(smtp.maildir) if b"Subject: big" in m]
    assert size == len(wire(stored))
    assert after - before < 2048, f"RSS grew by {after - before} KB for BODYSTRUCTURE and BODY[] of 100 MB"


def test_bad_input_gets_bad_and_the_session_goes_on(services):
    _, imap_service, _ = services
    with socket.create_connection(("127.0.0.1", imap_service.port), timeout=10) as sock:
        stream = sock.makefile("rb")
        assert stream.readline().startswith(b"* OK [CAPABILITY")
        sock.sendall(b"a FROB\r\n\x00\xff junk\r\nb SELECT\r\nc LOGIN " + b"x" * 100000 + b"\r\nd NOOP\r\n")
        assert stream.readline() == b"a BAD Unknown command\r\n"
        assert stream.readline().startswith(b"* BAD")
        assert stream.readline().startswith(b"b BAD")
        assert stream.readline() == b"c BAD Command line too long\r\n"
        assert stream.readline() == b"d OK NOOP completed\r\n"


def test_a_literal_announced_but_never_sent_is_cut_by_the_timeout(start_service, tmp_path):
    service = start_service("imap", tmp_path / "Maildir", **{"imap.timeout": 1})
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        stream = sock.makefile("rb")
        stream.readline()
        sock.sendall(b"a LOGIN {5}\r\n")
        assert stream.readline() == b"+ OK\r\n"
        started = time.monotonic()
        assert stream.readline() == b"* BYE Autologout; idle for too long\r\n"
        assert stream.readline() == b""
        assert time.monotonic() - started < 5


def test_the_session_cap_says_bye(start_service, tmp_path):
    service = start_service("imap", tmp_path / "Maildir", max_sessions=1)
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as one:
        one.makefile("rb").readline()
        with socket.create_connection(("127.0.0.1", service.port), timeout=10) as two:
            stream = two.makefile("rb")
            assert stream.readline().startswith(b"* BYE [UNAVAILABLE] Too many sessions")
            assert stream.readline() == b""


def test_sigterm_ends_an_idle_session_with_bye_and_serves_a_busy_one(services):
    smtp, imap_service, _ = services
    deliver(smtp, message(1))
    idler, busy = imap(imap_service), imap(imap_service)
    idler.select("INBOX")
    busy.select("INBOX")
    idler.send(b"a IDLE\r\n")
    assert idler.readline() == b"+ idling\r\n"
    imap_service.signal(signal.SIGTERM)
    imap_service.notify.wait_for("STOPPING=1")
    for _ in range(5):   # keeps talking: served on
        assert busy.noop()[0] == "OK"
        time.sleep(0.3)
    idler.sock.settimeout(10)
    assert idler.readline().startswith(b"* BYE [UNAVAILABLE]")
    assert busy.fetch("1", "(FLAGS)")[0] == "OK"
    busy.logout()
    assert imap_service.wait() == 0
