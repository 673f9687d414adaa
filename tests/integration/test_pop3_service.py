"""baremail-pop3 as a real program, socket-activated, with real clients."""

import base64
import os
import poplib
import shutil
import re
import signal
import smtplib
import socket
import subprocess
import time
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from servicekit import stored_messages


def deliver(smtp_service, *payloads: bytes, sender="a@b", rcpt=("root@localhost",)):
    with smtplib.SMTP("127.0.0.1", smtp_service.port, timeout=60) as client:
        for payload in payloads:
            client.sendmail(sender, list(rcpt), payload)


def pop(service, user="anyone", password="anything") -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", service.port, timeout=30)
    client.user(user)
    client.pass_(password)
    return client


def retr_bytes(client: poplib.POP3, number: int) -> bytes:
    _, lines, _ = client.retr(number)
    return b"".join(line + b"\r\n" for line in lines)


def wire(stored: bytes) -> bytes:
    return stored.replace(b"\n", b"\r\n")


def test_ready_then_list_stat_and_retr_are_exactly_what_was_stored(mail_services):
    smtp, pop3 = mail_services
    deliver(smtp, b"Subject: one\r\n\r\nfirst\r\n", b"Subject: two\r\n\r\nsecond\r\n..dotted\r\n")
    stored = stored_messages(smtp.maildir)
    client = pop(pop3)
    pop3.wait_ready()
    count, octets = client.stat()
    assert count == 2 and octets == sum(len(wire(s)) for s in stored)
    _, listing, _ = client.list()
    assert [int(line.split()[1]) for line in listing] == [len(wire(s)) for s in stored]
    for number, expected in enumerate(stored, 1):
        assert retr_bytes(client, number) == wire(expected)
    client.quit()
    pop3.notify.wait_for(lambda line: line.startswith("STATUS=") and "2 retrieved" in line)
    assert pop3.log().count("retrieved ") >= 2


def test_apop_login_with_any_secret(mail_services):
    smtp, pop3 = mail_services
    deliver(smtp, b"Subject: apop\r\n\r\nx\r\n")
    client = poplib.POP3("127.0.0.1", pop3.port, timeout=10)
    assert b"<" in client.getwelcome()
    client.apop("someone", "whatever")
    assert client.stat()[0] == 1
    client.quit()


@pytest.mark.parametrize("dialogue", [
    [b"AUTH PLAIN " + base64.b64encode(b"\0user\0pass") + b"\r\n"],
    [b"AUTH PLAIN\r\n", base64.b64encode(b"\0user\0pass") + b"\r\n"],
    [b"AUTH LOGIN\r\n", base64.b64encode(b"user") + b"\r\n", base64.b64encode(b"pass") + b"\r\n"],
])
def test_sasl_logins_through_raw_commands(mail_services, dialogue):
    smtp, pop3 = mail_services
    deliver(smtp, b"Subject: sasl\r\n\r\nx\r\n")
    client = poplib.POP3("127.0.0.1", pop3.port, timeout=10)
    for line in dialogue[:-1]:
        client._putline(line.rstrip(b"\r\n"))
        assert client._getline()[0].startswith(b"+ ")
    client._putline(dialogue[-1].rstrip(b"\r\n"))
    assert client._getline()[0].startswith(b"+OK")
    assert client.stat()[0] == 1
    client.quit()


def test_commands_without_login_work_on_the_open_mailbox(mail_services):
    smtp, pop3 = mail_services
    deliver(smtp, b"Subject: open\r\n\r\nx\r\n")
    client = poplib.POP3("127.0.0.1", pop3.port, timeout=10)
    assert client.stat()[0] == 1
    client.quit()


def test_capa_top_and_uidl(mail_services):
    smtp, pop3 = mail_services
    deliver(smtp, b"Subject: top\r\nX-A: 1\r\n\r\nbody 1\r\nbody 2\r\nbody 3\r\n")
    client = pop(pop3)
    capabilities = client.capa()
    for name in ("TOP", "UIDL", "USER", "SASL", "RESP-CODES", "PIPELINING"):
        assert name in capabilities
    _, lines, _ = client.top(1, 0)
    assert lines[-1] == b"" and b"Subject: top" in lines and b"body 1" not in lines
    _, lines, _ = client.top(1, 2)
    assert lines[-2:] == [b"body 1", b"body 2"]
    _, uidls, _ = client.uidl()
    uid = uidls[0].split()[1]
    client.quit()
    # stable across sessions and across the new/ -> cur/ move (TOP moves nothing, RETR does)
    client = pop(pop3)
    client.retr(1)
    client.quit()
    assert os.listdir(smtp.maildir / "new") == [] and len(os.listdir(smtp.maildir / "cur")) == 1
    client = pop(pop3)
    assert client.uidl(1).split()[2] == uid
    client.quit()


def test_dele_then_rset_keeps_and_dele_then_quit_removes(mail_services):
    smtp, pop3 = mail_services
    deliver(smtp, b"Subject: 1\r\n\r\nx\r\n", b"Subject: 2\r\n\r\ny\r\n")
    client = pop(pop3)
    client.dele(1)
    assert client.stat()[0] == 1
    with pytest.raises(poplib.error_proto):
        client.dele(1)
    client.rset()
    assert client.stat()[0] == 2
    client.dele(2)
    client.quit()
    remaining = stored_messages(smtp.maildir)
    assert len(remaining) == 1 and b"Subject: 1" in remaining[0]
    assert "deleted " in pop3.log()


def test_dropped_connection_after_dele_deletes_nothing(mail_services):
    smtp, pop3 = mail_services
    deliver(smtp, b"Subject: keep\r\n\r\nx\r\n")
    client = pop(pop3)
    client.dele(1)
    # shutdown(), not just close(): poplib's file object keeps the socket open.
    client.sock.shutdown(socket.SHUT_RDWR)
    client.sock.close()
    # The line the service writes once it has handled the drop (not the
    # --debug line it writes at connect): only then has it decided.
    deadline = time.monotonic() + 10
    while " ended (dropped)" not in pop3.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert " ended (dropped)" in pop3.log()
    assert len(stored_messages(smtp.maildir)) == 1


def test_two_sessions_deleting_the_same_message(mail_services):
    smtp, pop3 = mail_services
    deliver(smtp, b"Subject: shared\r\n\r\nx\r\n", b"Subject: other\r\n\r\ny\r\n")
    first, second = pop(pop3), pop(pop3)
    first.dele(1)
    first.quit()
    # second's message 1 is gone now: RETR of it is a clear error ...
    with pytest.raises(poplib.error_proto, match="removed"):
        second.retr(1)
    # ... and deleting it too is skipped silently at QUIT
    second.dele(1)
    assert second.quit().startswith(b"+OK")
    remaining = stored_messages(smtp.maildir)
    assert len(remaining) == 1 and b"Subject: other" in remaining[0]


def test_message_delivered_mid_session_appears_next_session(mail_services):
    smtp, pop3 = mail_services
    deliver(smtp, b"Subject: early\r\n\r\nx\r\n")
    client = pop(pop3)
    deliver(smtp, b"Subject: late\r\n\r\ny\r\n")
    assert client.stat()[0] == 1
    client.quit()
    client = pop(pop3)
    assert client.stat()[0] == 2
    client.quit()


def test_pipelined_retr_batch(mail_services):
    smtp, pop3 = mail_services
    deliver(smtp, *[f"Subject: {n}\r\n\r\n.line {n}\r\n".encode() for n in range(30)])
    with socket.create_connection(("127.0.0.1", pop3.port), timeout=10) as sock:
        batch = b"USER a\r\nPASS b\r\n" + b"".join(b"RETR %d\r\n" % n for n in range(1, 31)) + b"QUIT\r\n"
        sock.sendall(batch)
        data = b""
        while not data.endswith(b"+OK BareMail POP3 server signing off (0 messages deleted)\r\n"[-2:]) \
                or b"signing off" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.count(b"\r\n..line ") == 30
    assert data.count(b"+OK") == 1 + 2 + 30 + 1


def test_curl_pop3(mail_services):
    smtp, pop3 = mail_services
    deliver(smtp, b"Subject: curl\r\n\r\ncurl reads this\r\n")
    run = subprocess.run(["curl", "-sS", f"pop3://127.0.0.1:{pop3.port}/1", "--user", "x:y"],
                         capture_output=True, timeout=30)
    assert run.returncode == 0, run.stderr
    [stored] = stored_messages(smtp.maildir)
    assert run.stdout == wire(stored)


@pytest.mark.skipif(not shutil.which("mpop"), reason="mpop is installed by make test")
def test_mpop_fetches_every_message_byte_identical(mail_services, tmp_path):
    smtp, pop3 = mail_services
    payloads = [b"Subject: a\r\n\r\nplain\r\n", b"Subject: b\r\n\r\n.\r\n..\r\n.x\r\n",
                "Subject: c\r\n\r\nÜmlaut 8-bit\r\n".encode()]
    deliver(smtp, *payloads)
    stored = stored_messages(smtp.maildir)
    target = tmp_path / "fetched"
    for sub in ("cur", "new", "tmp"):
        (target / sub).mkdir(parents=True)
    run = subprocess.run(["mpop", "--host=127.0.0.1", f"--port={pop3.port}", "--user=any",
                          "--passwordeval=echo secret", "--auth=user", "--tls=off",
                          f"--deliver=maildir,{target}", "--keep=off", "--received-header=off",
                          "--uidls-file=" + str(tmp_path / "uidls")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    fetched = sorted(path.read_bytes() for path in (target / "new").iterdir())
    assert fetched == sorted(stored)
    assert stored_messages(smtp.maildir) == []  # --keep=off deleted them at QUIT


@pytest.mark.skipif(not shutil.which("fetchmail"), reason="fetchmail is installed by make test")
def test_fetchmail_fetches_into_an_mbox(mail_services, tmp_path):
    smtp, pop3 = mail_services
    deliver(smtp, b"Subject: fm\r\n\r\nfetched by fetchmail\r\n")
    [stored] = stored_messages(smtp.maildir)
    out = tmp_path / "out"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(f"poll 127.0.0.1 protocol pop3 port {pop3.port} user any password secret "
                  f"mda \"cat > {out}\" keep sslproto ''\n")
    rc.chmod(0o600)
    run = subprocess.run(["fetchmail", "-f", str(rc), "--nosyslog", "-s", "--invisible", "-N"],
                         capture_output=True, text=True, timeout=60, env=dict(os.environ, HOME=str(tmp_path)))
    assert run.returncode == 0, run.stdout + run.stderr
    assert out.read_bytes() == stored


def test_round_trip_through_both_services(mail_services):
    smtp, pop3 = mail_services
    attachment = os.urandom(20 * 1024 * 1024)
    big = EmailMessage()
    big["Subject"] = "backup report"
    big.set_content("Attached.\n")
    big.add_attachment(attachment, maintype="application", subtype="octet-stream", filename="dump.bin")
    messages = [
        b"Subject: dots\r\n\r\n.\r\n..\r\n. leading\r\nend\r\n",
        "Subject: utf8\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße – ½\r\n".encode(),
        big.as_bytes(policy=policy.SMTP),
        b"Subject: empty\r\n\r\n",
    ]
    with smtplib.SMTP("127.0.0.1", smtp.port, timeout=120) as client:
        for payload in messages:
            client.sendmail("a@b", ["c@d"], payload, mail_options=["BODY=8BITMIME"])
    client = pop(pop3)
    got = [retr_bytes(client, n) for n in range(1, len(messages) + 1)]
    client.quit()
    for sent, received in zip(messages, got):
        assert received.endswith(sent)
    parsed = message_from_bytes(got[2], policy=policy.default)
    [part] = list(parsed.iter_attachments())
    assert part.get_content() == attachment


def test_retr_of_a_big_message_keeps_memory_flat(mail_services):
    smtp, pop3 = mail_services
    line = b"x" * 998 + b"\r\n"
    body = b"Subject: big\r\n\r\n" + line * (50 * 1024)  # 50 MB
    deliver(smtp, b"Subject: warmup\r\n\r\nx\r\n", body)
    with socket.create_connection(("127.0.0.1", pop3.port), timeout=30) as sock:
        sock.sendall(b"RETR 1\r\n")
        data = b""
        while not data.endswith(b"\r\n.\r\n"):
            data += sock.recv(65536)
        before = pop3.rss_kb()
        sock.sendall(b"RETR 2\r\n")
        total = 0
        tail = b""
        while not tail.endswith(b"\r\n.\r\n"):
            chunk = sock.recv(1 << 20)
            assert chunk
            total += len(chunk)
            tail = (tail + chunk)[-5:]
        after = pop3.rss_kb()
    assert total > len(body)
    assert after - before < 8 * 1024, f"RSS grew by {after - before} KB while sending 50 MB"


def test_sigterm_serves_an_active_session_to_its_quit_and_ends_a_quiet_one(mail_services):
    # A restart drains: the session that keeps talking is served to its
    # QUIT, deletions included; the one that sits quiet is told
    # [SYS/TEMP] and closed, and its DELE marks delete nothing.
    smtp, pop3 = mail_services
    deliver(smtp, b"Subject: 1\r\n\r\none\r\n", b"Subject: 2\r\n\r\ntwo\r\n", b"Subject: 3\r\n\r\nthree\r\n")
    active, quiet = pop(pop3), pop(pop3)
    pop3.wait_ready()
    quiet.dele(3)
    active.dele(1)
    pop3.signal(signal.SIGTERM)
    pop3.notify.wait_for("STOPPING=1")
    for _ in range(6):   # 1.8 s of commands, each within the drain's quiet limit
        assert active.noop().startswith(b"+OK")
        time.sleep(0.3)
    assert retr_bytes(active, 2).endswith(b"two\r\n")
    assert quiet.sock.recv(1024).startswith(b"-ERR [SYS/TEMP]")
    assert active.quit().startswith(b"+OK")
    assert pop3.wait() == 0
    remaining = stored_messages(smtp.maildir)
    assert sorted(m.split(b"\n\n", 1)[1] for m in remaining) == [b"three\n", b"two\n"]


def test_one_line_per_session_says_how_it_ended_and_one_per_deletion(start_service, tmp_path):
    maildir = tmp_path / "Maildir"
    smtp = start_service("smtp", maildir)
    pop3 = start_service("pop3", maildir, **{"pop3.timeout": 1})
    deliver(smtp, b"Subject: 1\r\n\r\none\r\n", b"Subject: 2\r\n\r\ntwo\r\n", b"Subject: 3\r\n\r\nthree\r\n")
    client = pop(pop3, user="reader")
    client.retr(1)
    client.retr(2)
    client.dele(3)
    client.quit()
    dropped = pop(pop3, user="dropper")
    dropped.retr(1)
    dropped.sock.shutdown(socket.SHUT_RDWR)
    dropped.sock.close()
    idle = pop(pop3, user="sleeper")
    deadline = time.monotonic() + 10
    while pop3.log().count(" ended (") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [line for line in pop3.log().splitlines() if " ended (" in line]
    assert any(re.search(r"ended \(quit\): user reader, retrieved 2 \(\d+ octets\), deleted 1$", l) for l in lines), lines
    assert any(re.search(r"ended \(dropped\): user dropper, retrieved 1 \(\d+ octets\), deleted 0$", l) for l in lines), lines
    assert any(re.search(r"ended \(timeout\): user sleeper, retrieved 0 \(0 octets\), deleted 0$", l) for l in lines), lines
    assert len([line for line in pop3.log().splitlines() if " INFO deleted " in line]) == 1
    idle.sock.close()
