"""baremail-smtp as a real program, socket-activated, with real clients."""

import os
import shutil
import signal
import smtplib
import socket
import subprocess
import time
from email.message import EmailMessage

import pytest

from servicekit import PYTHON, ROOT, body_of, free_port, stored_messages


def recv_until(sock: socket.socket, marker: bytes, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def replies(sock: socket.socket, count: int) -> list[bytes]:
    """Read `count` complete SMTP replies (multi-line ones count once)."""
    sock.settimeout(10)
    data = b""
    while True:
        lines = data.split(b"\r\n")
        done = [line for line in lines[:-1] if line[3:4] == b" "]
        if len(done) >= count:
            return [line for line in lines[:-1]]
        chunk = sock.recv(65536)
        if not chunk:
            return [line for line in data.split(b"\r\n") if line]
        data += chunk


def simple_message(subject="hello", body="Hello from the test.\n") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "cron@example.org"
    msg["To"] = "root@localhost"
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def test_socket_activation_ready_status_and_stopping(smtp_service):
    with smtplib.SMTP("127.0.0.1", smtp_service.port, timeout=10) as client:
        smtp_service.wait_ready()
        client.send_message(simple_message())
    status = smtp_service.notify.wait_for(lambda line: line.startswith("STATUS=") and "1 accepted" in line)
    assert "session" in status
    smtp_service.signal(signal.SIGTERM)
    assert smtp_service.wait() == 0
    assert smtp_service.notify.seen("STOPPING=1")


def test_plain_message_is_stored_with_trace_headers(smtp_service):
    with smtplib.SMTP("127.0.0.1", smtp_service.port, timeout=10) as client:
        client.ehlo("sender.example")
        client.sendmail("cron@example.org", ["root@localhost", "admin@localhost"],
                        b"Subject: disk\r\n\r\nsda is failing\r\n")
    [stored] = stored_messages(smtp_service.maildir)
    assert stored.startswith(b"Return-Path: <cron@example.org>\n")
    assert b"Delivered-To: root@localhost\n" in stored
    assert b"Delivered-To: admin@localhost\n" in stored
    assert b"Received: from sender.example" in stored
    assert body_of(stored) == b"Subject: disk\n\nsda is failing\n"


def test_250_carries_the_key_of_a_file_already_in_new(smtp_service):
    with smtplib.SMTP("127.0.0.1", smtp_service.port, timeout=10) as client:
        client.ehlo()
        client.mail("a@b")
        client.rcpt("c@d")
        code, text = client.data(b"Subject: x\r\n\r\nx\r\n")
        assert code == 250
        key = text.decode().rsplit(" ", 1)[-1]
        assert (smtp_service.maildir / "new" / key).is_file()
    assert f"delivered {key}" in smtp_service.log()


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_any_credentials_are_accepted(smtp_service, mechanism):
    with smtplib.SMTP("127.0.0.1", smtp_service.port, timeout=10) as client:
        client.ehlo()
        client.login("anyone", "any password", initial_response_ok=(mechanism == "PLAIN"))
        client.sendmail("a@b", ["c@d"], b"Subject: auth\r\n\r\nok\r\n")
    [stored] = stored_messages(smtp_service.maildir)
    assert b"with ESMTPA" in stored


def test_smtplib_auth_login_mechanism_explicitly(smtp_service):
    with smtplib.SMTP("127.0.0.1", smtp_service.port, timeout=10) as client:
        client.ehlo()
        client.user, client.password = "u", "p"
        code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
        assert code == 235


def test_pipelined_batch_gets_every_reply_in_order(smtp_service):
    with smtp_service.connect() as sock:
        recv_until(sock, b"\r\n")
        sock.sendall(b"EHLO x\r\n")
        recv_until(sock, b"250 ")
        sock.sendall(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\nDATA\r\n")
        got = replies(sock, 4)
        assert [line[:3] for line in got] == [b"250", b"250", b"250", b"354"]
        sock.sendall(b"Subject: p\r\n\r\n..dot\r\n.\r\nMAIL FROM:<x@y>\r\nRSET\r\nQUIT\r\n")
        got = replies(sock, 4)
        assert [line[:3] for line in got] == [b"250", b"250", b"250", b"221"]
    [stored] = stored_messages(smtp_service.maildir)
    assert body_of(stored) == b"Subject: p\n\n.dot\n"


def test_utf8_addresses_and_8bit_body(smtp_service):
    body = "Grüße aus Köln – ½ °C\r\n".encode()
    with smtplib.SMTP("127.0.0.1", smtp_service.port, timeout=10) as client:
        client.ehlo()
        assert client.has_extn("smtputf8") and client.has_extn("8bitmime")
        client.sendmail("jörg@exämple.org", ["δοκιμή@παράδειγμα.δοκιμή"],
                        b"Subject: utf8\r\n\r\n" + body, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    [stored] = stored_messages(smtp_service.maildir)
    assert "Return-Path: <jörg@exämple.org>".encode() in stored
    assert "Delivered-To: δοκιμή@παράδειγμα.δοκιμή".encode() in stored
    assert body_of(stored).endswith(body.replace(b"\r\n", b"\n"))


def test_many_recipients_one_copy(smtp_service):
    recipients = [f"user{n}@localhost" for n in range(1000)]
    with smtplib.SMTP("127.0.0.1", smtp_service.port, timeout=30) as client:
        refused = client.sendmail("a@b", recipients, b"Subject: many\r\n\r\nx\r\n")
        assert refused == {}
    [stored] = stored_messages(smtp_service.maildir)
    assert stored.count(b"Delivered-To: ") == 1000


def test_recipient_over_the_limit_gets_452(start_service):
    service = start_service("smtp", **{"smtp.max_recipients": 3})
    with smtplib.SMTP("127.0.0.1", service.port, timeout=10) as client:
        client.ehlo()
        client.mail("a@b")
        for n in range(3):
            assert client.rcpt(f"r{n}@x")[0] == 250
        code, text = client.rcpt("r4@x")
        assert code == 452 and text.startswith(b"4.5.3")


def test_oversized_message_gets_552_and_nothing_is_stored(start_service):
    service = start_service("smtp", **{"smtp.max_message_size": 10000})
    with smtplib.SMTP("127.0.0.1", service.port, timeout=10) as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "10000"
        client.mail("a@b")
        client.rcpt("c@d")
        code, text = client.data(b"Subject: big\r\n\r\n" + b"x" * 20000 + b"\r\n")
        assert code == 552 and text.startswith(b"5.3.4")
        assert client.noop()[0] == 250  # the session goes on
    assert stored_messages(service.maildir) == []
    assert os.listdir(service.maildir / "tmp") == []


def test_twenty_megabyte_message_keeps_memory_flat(smtp_service):
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789\r\n"
    body = b"Subject: big\r\n\r\n" + line * (20 * 1024 * 1024 // len(line))
    with smtplib.SMTP("127.0.0.1", smtp_service.port, timeout=60) as client:
        smtp_service.wait_ready()
        client.sendmail("a@b", ["c@d"], b"Subject: warmup\r\n\r\nx\r\n")
        before = smtp_service.rss_kb()
        client.sendmail("a@b", ["c@d"], body)
        after = smtp_service.rss_kb()
    growth = after - before
    assert growth < 8 * 1024, f"RSS grew by {growth} KB for a 20 MB message"
    stored = stored_messages(smtp_service.maildir)[1]
    assert body_of(stored) == body.replace(b"\r\n", b"\n")


def test_client_vanishing_mid_data_leaves_nothing(smtp_service):
    with smtp_service.connect() as sock:
        recv_until(sock, b"220")
        sock.sendall(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
        recv_until(sock, b"354")
        sock.sendall(b"Subject: cut\r\n\r\n" + b"partial line\r\n" * 1000)
    # The service notices the closed connection, then still serves others.
    with smtplib.SMTP("127.0.0.1", smtp_service.port, timeout=10) as client:
        client.sendmail("a@b", ["c@d"], b"Subject: next\r\n\r\nok\r\n")
    deadline = time.monotonic() + 10
    while "lost during DATA" not in smtp_service.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "lost during DATA" in smtp_service.log()
    [stored] = stored_messages(smtp_service.maildir)
    assert b"Subject: next" in stored
    assert os.listdir(smtp_service.maildir / "tmp") == []


@pytest.mark.skipif(not shutil.which("swaks"), reason="swaks is installed by make test")
@pytest.mark.parametrize("extra", [[], ["--auth", "PLAIN", "--auth-user", "u", "--auth-password", "p"],
                                   ["--auth", "LOGIN", "--auth-user", "u", "--auth-password", "p"],
                                   ["--pipeline"]])
def test_swaks(smtp_service, extra):
    run = subprocess.run(["swaks", "--server", f"127.0.0.1:{smtp_service.port}", "--from", "swaks@example.org",
                          "--to", "root@localhost", "--header", "Subject: from swaks",
                          "--body", "swaks body line", *extra],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr
    [stored] = stored_messages(smtp_service.maildir)
    assert b"Subject: from swaks" in stored and b"swaks body line" in stored


def test_curl(smtp_service, tmp_path):
    mail = tmp_path / "mail.txt"
    mail.write_bytes(b"From: curl@example.org\r\nTo: root@localhost\r\nSubject: from curl\r\n\r\n"
                     b".leading dot\r\ncurl body\r\n")
    run = subprocess.run(["curl", "-sS", f"smtp://127.0.0.1:{smtp_service.port}", "--mail-from", "curl@example.org",
                          "--mail-rcpt", "root@localhost", "--upload-file", str(mail),
                          "--user", "any:thing"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    [stored] = stored_messages(smtp_service.maildir)
    assert body_of(stored).endswith(b"\n.leading dot\ncurl body\n")


def test_idle_exit_after_last_session(start_service):
    service = start_service("smtp", idle_exit=1)
    with smtplib.SMTP("127.0.0.1", service.port, timeout=10) as client:
        client.noop()
    assert service.wait(15) == 0
    assert service.notify.seen("STOPPING=1")


def test_sigterm_lets_transfer_finish_and_tells_idle_sessions_421(smtp_service):
    with smtp_service.connect() as idle, smtp_service.connect() as busy:
        recv_until(idle, b"220")
        recv_until(busy, b"220")
        smtp_service.wait_ready()
        busy.sendall(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
        recv_until(busy, b"354")
        busy.sendall(b"Subject: in flight\r\n\r\nfirst half\r\n")
        smtp_service.notify.wait_for(lambda line: line.startswith("STATUS=2 sessions"))
        smtp_service.signal(signal.SIGTERM)
        assert recv_until(idle, b"\r\n").startswith(b"421 4.3.2")
        smtp_service.notify.wait_for("STOPPING=1")
        busy.sendall(b"second half\r\n.\r\n")
        answer = recv_until(busy, b"421")
        assert answer.startswith(b"250 2.0.0") and b"421 4.3.2" in answer
    assert smtp_service.wait() == 0
    [stored] = stored_messages(smtp_service.maildir)
    assert stored.endswith(b"first half\nsecond half\n")


def test_sigterm_serves_a_transaction_in_progress_to_its_end(smtp_service):
    # A restart must cost a client latency, not a 421 in the middle of its
    # transaction: a session that has said MAIL when the stop begins is
    # served on, through RCPT, DATA and a second message, until it QUITs.
    with smtp_service.connect() as sock:
        recv_until(sock, b"220")
        smtp_service.wait_ready()
        sock.sendall(b"EHLO x\r\nMAIL FROM:<a@b>\r\n")
        assert replies(sock, 2)[-1].startswith(b"250 2.1.0")
        smtp_service.signal(signal.SIGTERM)
        smtp_service.notify.wait_for("STOPPING=1")
        time.sleep(1.5)   # longer than a resting session may stay quiet in a drain
        sock.sendall(b"RCPT TO:<c@d>\r\n")
        assert replies(sock, 1)[0].startswith(b"250 2.1.5")
        sock.sendall(b"DATA\r\n")
        assert replies(sock, 1)[0].startswith(b"354")
        sock.sendall(b"Subject: during the stop\r\n\r\none\r\n.\r\n"
                     b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
        got = replies(sock, 4)
        assert got[0].startswith(b"250 2.0.0") and got[-1].startswith(b"354"), got
        sock.sendall(b"Subject: second\r\n\r\ntwo\r\n.\r\nQUIT\r\n")
        got = replies(sock, 2)
        assert got[0].startswith(b"250 2.0.0") and got[1].startswith(b"221"), got
    assert smtp_service.wait() == 0
    stored = stored_messages(smtp_service.maildir)
    assert sorted(body_of(m) for m in stored) == [b"Subject: during the stop\n\none\n",
                                                 b"Subject: second\n\ntwo\n"]


def test_sigterm_ends_a_transaction_that_stalls_at_stop_timeout(start_service):
    service = start_service("smtp", stop_timeout=2)
    with service.connect() as sock:
        recv_until(sock, b"220")
        service.wait_ready()
        sock.sendall(b"EHLO x\r\nMAIL FROM:<a@b>\r\n")
        replies(sock, 2)
        started = time.monotonic()
        service.signal(signal.SIGTERM)
        assert recv_until(sock, b"\r\n", timeout=10).startswith(b"421 4.3.2")
        assert 1.5 < time.monotonic() - started < 8
    assert service.wait() == 0
    assert not (service.maildir / "new").exists() or stored_messages(service.maildir) == []


# baremail-smtp with one change: the stop begins right after its first
# accept(), before any of the connections it accepted has a session: the
# worst moment a SIGTERM (systemctl restart under load) can come.
STOP_AT_FIRST_ACCEPT = """
import sys
from baremail import cli, service
accept = service.Server._accept
def accept_then_stop(self, *args):
    accept(self, *args)
    self._begin_stop()
service.Server._accept = accept_then_stop
sys.exit(cli.smtp_main(sys.argv[1:]))
"""


def test_every_connection_accepted_as_a_stop_begins_is_greeted(tmp_path):
    # Each connection the service accepted becomes a session and is greeted
    # (then told 421 by the drain), never closed without a word, which a
    # client sees as a failed delivery ("Connection unexpectedly closed"):
    # asyncio's own Server.close() did that to connections it had accepted
    # in the same turn.
    port = free_port()
    config = tmp_path / "smtp.conf"
    config.write_text(f"[baremail]\nmaildir = {tmp_path / 'Maildir'}\nhostname = test.example\n")
    log = open(tmp_path / "smtp.log", "wb")
    process = subprocess.Popen(
        ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "-E", "PYTHONPATH",
         PYTHON, "-c", STOP_AT_FIRST_ACCEPT, "--config", str(config)],
        env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=log, stderr=log, start_new_session=True)
    clients = []
    try:
        deadline = time.monotonic() + 10
        while b"Listening on" not in (tmp_path / "smtp.log").read_bytes():
            assert process.poll() is None and time.monotonic() < deadline, "systemd-socket-activate did not listen"
            time.sleep(0.02)
        # All in the backlog before the program even starts (at the first one).
        clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(40)]
        heard = [recv_until(client, b"421", timeout=15) for client in clients]
        assert process.wait(15) == 0
    finally:
        for client in clients:
            client.close()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
    silent = [words for words in heard if not words.startswith(b"220 ")]
    assert not silent, f"{len(silent)} of {len(heard)} connections closed without a greeting"
    assert all(b"421 4.3.2" in words for words in heard)


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_descriptors_it_waits_without_spinning_and_serves_the_rest_later(smtp_service):
    # The soft and hard limit on open files lowered under the running
    # service: connections beyond it wait in the backlog (accept() gives
    # EMFILE), the service neither spins nor dies, and serves them as soon
    # as sessions end.
    with smtp_service.connect() as first:
        recv_until(first, b"220")
        smtp_service.wait_ready()
        pid = smtp_service.process.pid
        in_use = len(os.listdir(f"/proc/{pid}/fd"))
        subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={in_use + 6}:{in_use + 6}"], check=True)
        clients = [smtp_service.connect() for _ in range(12)]
        try:
            greeted = []
            for client in clients[:6]:
                assert recv_until(client, b"\r\n").startswith(b"220 ")
                greeted.append(client)
            waiting = clients[6:]
            for client in waiting:
                client.settimeout(0.3)
                with pytest.raises(socket.timeout):
                    client.recv(100)
            before = _cpu_seconds(pid)
            time.sleep(2)
            assert _cpu_seconds(pid) - before < 0.5, "spinning on accept()"
            for client in greeted:
                client.sendall(b"QUIT\r\n")
                assert b"221" in recv_until(client, b"221")
            for client in waiting:
                assert recv_until(client, b"\r\n", timeout=10).startswith(b"220 ")
        finally:
            for client in clients:
                client.close()
    assert "cannot accept connections on smtp" in smtp_service.log()
    with smtp_service.connect() as later:
        assert recv_until(later, b"\r\n").startswith(b"220 ")


def test_command_timeout_closes_with_421(start_service):
    service = start_service("smtp", **{"smtp.command_timeout": 1})
    with service.connect() as sock:
        recv_until(sock, b"220")
        started = time.monotonic()
        answer = recv_until(sock, b"421", timeout=10)
        assert answer.startswith(b"421 4.4.2")
        assert time.monotonic() - started >= 0.9
        assert sock.recv(100) == b""


def test_session_cap_gives_421(start_service):
    service = start_service("smtp", max_sessions=2)
    with service.connect() as one, service.connect() as two:
        recv_until(one, b"220")
        recv_until(two, b"220")
        with service.connect() as three:
            assert recv_until(three, b"\r\n").startswith(b"421 4.3.2")
    # after the two leave, new sessions are served again
    deadline = time.monotonic() + 5
    while True:
        with service.connect() as again:
            greeting = recv_until(again, b"\r\n")
        if greeting.startswith(b"220") or time.monotonic() > deadline:
            break
    assert greeting.startswith(b"220")


def test_sighup_rereads_the_config(start_service):
    service = start_service("smtp", **{"smtp.max_message_size": 5000})
    with smtplib.SMTP("127.0.0.1", service.port, timeout=10) as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "5000"
    service.config.write_text(service.config.read_text().replace("max_message_size = 5000",
                                                                  "max_message_size = 6000"))
    service.signal(signal.SIGHUP)
    service.notify.wait_for("RELOADING=1")
    with smtplib.SMTP("127.0.0.1", service.port, timeout=10) as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "6000"


def test_reloads_leak_no_file_descriptor(start_service, tmp_path):
    service = start_service("smtp")

    def send_one():
        with smtplib.SMTP("127.0.0.1", service.port, timeout=10) as client:
            client.sendmail("a@b", ["c@d"], b"Subject: x\r\n\r\nx\r\n")

    def open_fds() -> int:
        return len(os.listdir(f"/proc/{service.process.pid}/fd"))

    send_one()
    service.wait_ready()
    service.notify.wait_for(lambda line: line.startswith("STATUS=0 sessions"))
    before = open_fds()
    for round_ in range(1, 11):
        if round_ % 2 == 0:   # every other reload names another Maildir
            text = service.config.read_text()
            old = "Maildir2" if "Maildir2" in text else "Maildir"
            service.config.write_text(text.replace(f"/{old}\n", "/Maildir2\n" if old == "Maildir" else "/Maildir\n"))
        service.signal(signal.SIGHUP)
        service.notify.wait_for(lambda line, n=round_: line == "RELOADING=1" and
                                service.notify.messages.count("RELOADING=1") >= n)
        send_one()
    # The last client's socket may still be closing on the server's side.
    deadline = time.monotonic() + 5
    while open_fds() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_fds() == before, "descriptors leaked over ten reloads"
    assert len(stored_messages(tmp_path / "Maildir2")) == 5


def test_unusable_maildir_gives_451_and_an_error_line(start_service, tmp_path):
    (tmp_path / "plainfile").write_bytes(b"")
    service = start_service("smtp", maildir=tmp_path / "plainfile" / "Maildir")
    with smtplib.SMTP("127.0.0.1", service.port, timeout=10) as client:
        client.ehlo()
        client.mail("a@b")
        client.rcpt("c@d")
        code, text = client.data(b"Subject: x\r\n\r\nx\r\n")
        assert code == 451 and text.startswith(b"4.3.0")
        assert client.noop()[0] == 250
    assert "ERROR cannot use Maildir" in service.log()


def test_bad_config_exits_78_with_one_line(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("[smtp]\nmax_recipients = lots\n")
    run = subprocess.run([PYTHON, "-m", "baremail.cli", "smtp", "--config", str(conf)],
                         capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert run.returncode == 78
    assert run.stderr.strip() == f"baremail-smtp: {conf}: [smtp] max_recipients: 'lots' is not a number"


def test_several_passed_sockets_ipv4_and_ipv6_with_names(tmp_path):
    port4, port6 = free_port(), free_port()
    conf = tmp_path / "c.conf"
    conf.write_text(f"[baremail]\nmaildir = {tmp_path / 'Maildir'}\nidle_exit = 0\n")
    log = tmp_path / "log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["systemd-socket-activate", "-l", f"127.0.0.1:{port4}", "-l", f"[::1]:{port6}",
             "--fdname=smtp:submission", "-E", "PYTHONPATH",
             PYTHON, "-m", "baremail.cli", "smtp", "--config", str(conf)],
            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=out, stderr=out, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while log.read_bytes().count(b"Listening on") < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        with smtplib.SMTP("127.0.0.1", port4, timeout=10) as client:
            client.sendmail("a@b", ["c@d"], b"Subject: v4\r\n\r\nx\r\n")
        with smtplib.SMTP("::1", port6, timeout=10) as client:
            client.sendmail("a@b", ["c@d"], b"Subject: v6\r\n\r\nx\r\n")
    finally:
        process.terminate()
        process.wait(10)
    text = log.read_text()
    assert "peer=127.0.0.1:" in text and "peer=[::1]:" in text
    assert len(stored_messages(tmp_path / "Maildir")) == 2


def test_accept_yes_socket_serves_one_session_and_exits(tmp_path):
    port = free_port()
    conf = tmp_path / "c.conf"
    conf.write_text(f"[baremail]\nmaildir = {tmp_path / 'Maildir'}\n")
    log = tmp_path / "log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["systemd-socket-activate", "--accept", "-l", f"127.0.0.1:{port}", "-E", "PYTHONPATH",
             PYTHON, "-m", "baremail.cli", "smtp", "--config", str(conf)],
            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=out, stderr=out, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while b"Listening on" not in log.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.02)
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("a@b", ["c@d"], b"Subject: inetd style\r\n\r\nx\r\n")
        # the per-connection instance exits by itself once the session ends
        deadline = time.monotonic() + 10
        while "died with code" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "died with code 0" in log.read_text()
        assert len(stored_messages(tmp_path / "Maildir")) == 1
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)
