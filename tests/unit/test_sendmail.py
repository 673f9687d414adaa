import io

import pytest

from baremail.sendmail import Options, UsageError, complete, parse_args, read_message


def test_recipients_and_common_ignored_options():
    options = parse_args(["-oi", "-oem", "-odi", "-odb", "-bm", "-v", "root", "admin@example.org"])
    assert options.recipients == ["root", "admin@example.org"]
    assert options.dot_ends_input is False and options.mode == "m"


def test_sender_and_full_name_attached_or_separate():
    assert parse_args(["-fcron@host", "x"]).sender == "cron@host"
    assert parse_args(["-f", "cron@host", "x"]).sender == "cron@host"
    assert parse_args(["-r", "r@host", "x"]).sender == "r@host"
    assert parse_args(["-f", "<>", "x"]).sender == ""
    assert parse_args(["-F", "Cron Daemon", "x"]).full_name == "Cron Daemon"
    assert parse_args(["-FCron", "x"]).full_name == "Cron"


def test_t_and_i_flags_and_double_dash():
    options = parse_args(["-t", "-i", "--", "-notanoption"])
    assert options.from_headers and not options.dot_ends_input
    assert options.recipients == ["-notanoption"]


def test_o_with_separate_word_and_values_ignored():
    assert parse_args(["-o", "DeliveryMode=b", "-O", "x=y", "-N", "never", "-R", "hdrs", "-B", "8BITMIME",
                       "-X", "/dev/null", "-L", "cron", "root"]).recipients == ["root"]


@pytest.mark.parametrize("argv", [["-Z"], ["-f"], ["-bz"], ["-o"]])
def test_unknown_or_incomplete_options_are_usage_errors(argv):
    with pytest.raises(UsageError):
        parse_args(argv)


def test_lone_dot_ends_input_unless_i():
    data = b"Subject: x\n\nbefore\n.\nafter\n"
    assert read_message(io.BytesIO(data), dot_ends_input=True) == b"Subject: x\n\nbefore\n"
    assert read_message(io.BytesIO(data), dot_ends_input=False) == data


def test_missing_from_date_and_message_id_are_added():
    message, recipients = complete(b"Subject: hi\n\nbody\n", Options(recipients=["root"], full_name="Cron Daemon"),
                                   "cron@host.example", "host.example")
    assert recipients == ["root"]
    head, body = message.split(b"\r\n\r\n", 1)
    assert b"From: Cron Daemon <cron@host.example>" in head
    assert b"\r\nDate: " in head and b"\r\nMessage-ID: <" in head and b"@host.example>" in head
    assert body == b"body\r\n"


def test_existing_headers_are_kept_untouched():
    original = b"From: a@b\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <x@y>\r\n\r\nbody\r\n"
    message, _ = complete(original, Options(recipients=["r"]), "s@h", "h")
    assert message == original


def test_t_takes_to_cc_bcc_and_drops_bcc():
    original = (b"From: a@b\nTo: One <one@x>, two@x\nCc: three@x\nBcc: secret@x,\n  hidden@x\nSubject: t\n\nbody\n")
    message, recipients = complete(original, Options(recipients=["extra@x"], from_headers=True), "a@b", "h")
    assert recipients == ["extra@x", "one@x", "two@x", "three@x", "secret@x", "hidden@x"]
    assert b"Bcc" not in message and b"hidden" not in message
    assert b"To: One <one@x>, two@x\r\n" in message


def test_message_without_headers_gets_a_header_block():
    message, _ = complete(b"just text\n", Options(recipients=["r"]), "s@h", "h")
    assert message.startswith(b"From: s@h\r\n")
    assert message.endswith(b">\r\n\r\njust text\r\n")


def test_eight_bit_content_passes_through():
    message, _ = complete("Subject: ü\n\nGrüße\n".encode(), Options(recipients=["r"]), "s@h", "h")
    assert "Grüße\r\n".encode() in message and "Subject: ü".encode() in message


# -- handing over, with retries (a restarting service, an upgrade) ----------

import socket
import threading

from baremail.sendmail import EX_DATAERR, EX_OK, EX_TEMPFAIL, submit


class FakeSMTP:
    """A scripted SMTP server on loopback: `script(n)` tells, for the n-th
    connection (from 0), the reply to MAIL FROM and what to do after the
    message's 250 ("quit" answers QUIT, "drop" closes at once)."""

    def __init__(self, script):
        self.script = script
        self.messages: list = []
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                self._session(conn, self.script(self.connections - 1))

    def _session(self, conn, plan):
        mail_reply, after = plan
        reader = conn.makefile("rb")
        conn.sendall(b"220 fake ESMTP\r\n")
        while True:
            line = reader.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"EHLO":
                conn.sendall(b"250-fake\r\n250 8BITMIME\r\n")
            elif verb == b"MAIL":
                conn.sendall(mail_reply + b"\r\n")
            elif verb == b"RCPT":
                conn.sendall(b"250 ok\r\n")
            elif verb == b"DATA":
                conn.sendall(b"354 go\r\n")
                data = b""
                while not data.endswith(b"\r\n.\r\n"):
                    data += reader.readline()
                self.messages.append(data)
                conn.sendall(b"250 2.0.0 queued\r\n")
                if after == "drop":
                    return
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"250 ok\r\n")

    def close(self):
        self.sock.close()


def hand_over(server, retry_time=10.0, sleeps=None):
    return submit(("127.0.0.1", server.port), "a@b", ["root"], b"Subject: x\r\n\r\nx\r\n", "host",
                  retry_time=retry_time, sleep=(sleeps.append if sleeps is not None else lambda s: None))


def test_a_temporary_refusal_is_retried_until_the_message_is_stored(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    server = FakeSMTP(lambda n: (b"421 4.3.2 shutting down" if n < 3 else b"250 ok", "quit"))
    sleeps: list = []
    try:
        assert hand_over(server, sleeps=sleeps) == EX_OK
    finally:
        server.close()
    assert len(server.messages) == 1
    assert sleeps == [0.1, 0.2, 0.4]   # growing pauses between tries
    assert not (tmp_path / "dead.letter").exists()


def test_nothing_is_sent_again_after_a_250_even_if_the_session_then_breaks(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    server = FakeSMTP(lambda n: (b"250 ok", "drop"))
    try:
        assert hand_over(server) == EX_OK
    finally:
        server.close()
    assert len(server.messages) == 1 and server.connections == 1


def test_a_permanent_refusal_is_not_retried(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    server = FakeSMTP(lambda n: (b"550 5.7.1 no", "quit"))
    try:
        assert hand_over(server) == EX_DATAERR
    finally:
        server.close()
    assert server.connections == 1 and server.messages == []
    assert "550" in capsys.readouterr().err


def test_retrying_gives_up_after_the_retry_time_and_keeps_the_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    server = FakeSMTP(lambda n: (b"451 4.3.0 try later", "quit"))
    try:
        assert hand_over(server, retry_time=0.5) == EX_TEMPFAIL
    finally:
        server.close()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "451" in err and "tried" in err and "dead.letter" in err
    assert b"Subject: x" in (tmp_path / "dead.letter").read_bytes()
