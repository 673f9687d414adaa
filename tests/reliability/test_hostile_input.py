"""Hostile input over the wire, against the real baremail-smtp and baremail-pop3.

Each attack must end in a protocol error or a timeout, the service's memory
(VmRSS from /proc) must stay within a fixed allowance over its warmed-up
size, and a bystander client must keep being served while it goes on.
"""

from __future__ import annotations

import random
import re
import socket
import ssl
import threading
import time
from contextlib import contextmanager

import pytest

from ledger import data_section
from wire import (Bystander, POP3Client, RssSampler, SMTPClient, deliver, files_in, read_until_closed,
                  wait_until)

TIMEOUT = 2.0               # command, data and POP3 timeouts of the services under attack
SETTINGS = {"smtp.command_timeout": TIMEOUT, "smtp.data_timeout": TIMEOUT, "pop3.timeout": TIMEOUT,
            "smtp.max_message_size": 1_000_000}
MEMORY_ALLOWANCE_KIB = 12 * 1024
SMTP_REPLY = re.compile(rb"[2-5][0-9][0-9][ -][^\r\n]*")
POP3_STATUS = re.compile(rb"(\+OK|-ERR)( [^\r\n]*)?")
KINDS = ("smtp", "pop3")


@pytest.fixture
def services(start_service, tmp_path, outbox):
    """Both services on one Maildir holding one message, started and warmed up."""
    maildir = tmp_path / "Maildir"
    smtp = start_service("smtp", maildir, **SETTINGS)
    pop3 = start_service("pop3", maildir, **SETTINGS)
    deliver(smtp.port, outbox, size=50_000)
    POP3Client(pop3.port).quit()
    smtp.wait_ready()
    pop3.wait_ready()
    return {"smtp": smtp, "pop3": pop3, "maildir": maildir}


@contextmanager
def watched(service, kind, outbox):
    """Sample the service's memory and run a bystander while the block runs."""
    with RssSampler(service.process.pid) as rss:
        with Bystander(kind, service.port, outbox) as bystander:
            yield bystander
            bystander.wait_for_sessions(1)
    outbox.rss(rss.peak)
    growth = rss.peak - rss.start_kib
    print(f"\n{kind}: VmRSS {rss.start_kib} KiB before, peak {rss.peak} KiB (+{growth} KiB); "
          f"bystander: {len(bystander.latencies)} sessions, slowest {max(bystander.latencies, default=0):.2f} s")
    assert growth < MEMORY_ALLOWANCE_KIB, f"{kind} grew by {growth} KiB"
    bystander.check()
    assert service.process.poll() is None, "the service died"
    assert "Traceback" not in service.log()


def well_formed(kind: str, data: bytes) -> list[bytes]:
    """The reply lines in `data`, each checked against the protocol's reply syntax."""
    assert data.endswith(b"\r\n") or not data, f"unterminated reply {data[-80:]!r}"
    lines = data.split(b"\r\n")[:-1]
    pattern = SMTP_REPLY if kind == "smtp" else POP3_STATUS
    bad = [line for line in lines if not pattern.fullmatch(line)]
    assert not bad, f"malformed {kind} replies: {bad[:3]!r}"
    return lines


def connect(kind: str, port: int):
    return SMTPClient(port) if kind == "smtp" else POP3Client(port)


def is_error(kind: str, line: bytes) -> bool:
    return line[:1] == b"5" if kind == "smtp" else line.startswith(b"-ERR")


def timeout_reply(kind: str) -> bytes:
    return b"421 4.4.2" if kind == "smtp" else b"-ERR autologout"


def alive(kind: str, client) -> bool:
    reply = client.command(b"NOOP")
    return reply.startswith(b"250" if kind == "smtp" else b"+OK")


class Reader(threading.Thread):
    """Reads everything a socket receives, as a patient client would."""

    def __init__(self, sock: socket.socket, until: bytes | None = None, limit: int = 64 << 20):
        super().__init__(daemon=True)
        self.sock, self.until, self.limit = sock, until, limit
        self.data = bytearray()
        self.start()

    def run(self) -> None:
        try:
            while len(self.data) < self.limit:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    return
                self.data += chunk
                if self.until is not None and self.until in self.data[-4096:]:
                    return
        except OSError:
            return


# --- both services ------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_megabyte_line_without_newline_is_refused_and_the_session_goes_on(services, outbox, kind):
    service = services[kind]
    with watched(service, kind, outbox) as bystander:
        client = connect(kind, service.port)
        for _ in range(16):
            client.send(b"A" * 65536)
        bystander.wait_for_sessions(1)      # served while the line is still open
        client.send(b"\r\n")
        reply = client.reader.line()
        assert is_error(kind, reply) and b"too long" in reply.lower(), reply
        assert alive(kind, client)
        client.quit()


@pytest.mark.parametrize("kind", KINDS)
def test_nul_and_8bit_bytes_in_commands_get_errors(services, outbox, kind):
    service = services[kind]
    hostile = [b"NO\x00OP", b"\x00\x00\x00", b"\xff\xfe\xfd", b"HELO \x00evil", b"MAIL FROM:<a\x00b@c>",
               b"\xc3\xa9\xc3\xa9", b"QU\xffIT", b"RETR \x001", b"USER \x80\x81", b"\x1b[2J"]
    with watched(service, kind, outbox) as bystander:
        client = connect(kind, service.port)
        for line in hostile:
            reply = client.command(line)
            well_formed(kind, reply + b"\r\n")
            if line not in (b"USER \x80\x81",):     # POP3 takes any user name
                assert is_error(kind, reply), (line, reply)
        bystander.wait_for_sessions(1)
        assert alive(kind, client)
        client.quit()


@pytest.mark.parametrize("kind", KINDS)
def test_pipelined_garbage_gets_well_formed_errors_only(services, outbox, kind):
    service = services[kind]
    rng = random.Random(7)
    words = [b"MAIL", b"RCPT", b"DATA", b"USER", b"PASS", b"RETR", b"DELE", b"TOP", b"AUTH", b"\r\n", b"\n",
             b"\r", b"\x00", b".", b" ", b"\xff"]
    garbage = bytearray()
    while len(garbage) < 2_000_000:
        if rng.random() < 0.5:
            garbage += rng.choice(words)
        else:
            garbage += rng.randbytes(rng.randint(1, 300))
    # No command of the garbage may end the session, or start a transaction.
    garbage = garbage.replace(b"QUIT", b"QUTI").replace(b"DATA", b"DADA").replace(b"AUTH", b"AUHT")
    with watched(service, kind, outbox):
        client = connect(kind, service.port)
        reader = Reader(client.sock, until=b"221 2.0.0" if kind == "smtp" else b"signing off")
        client.send(bytes(garbage) + b"\r\nRSET\r\nQUIT\r\n")
        reader.join(30)
        assert not reader.is_alive(), "no answer to QUIT after the garbage"
        lines = well_formed(kind, bytes(reader.data))
        assert sum(is_error(kind, line) for line in lines) > 1000
        client.close()


def client_hello() -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("kind", KINDS)
def test_tls_client_hello_on_the_plain_port_gets_an_error_or_the_timeout(services, outbox, kind):
    service = services[kind]
    hello = client_hello()
    assert hello[:1] == b"\x16"
    with watched(service, kind, outbox):
        sock = socket.create_connection(("127.0.0.1", service.port), timeout=10)
        sock.sendall(hello)         # a TLS client speaks first, without reading a greeting
        data, took = read_until_closed(sock, TIMEOUT + 5)
        sock.close()
        lines = well_formed(kind, data)
        assert len(lines) >= 2 and (is_error(kind, lines[-1]) or lines[-1].startswith(timeout_reply(kind))), lines
        assert took < TIMEOUT + 3


@pytest.mark.parametrize("kind", KINDS)
def test_half_closed_idle_client_is_closed_promptly(services, outbox, kind):
    service = services[kind]
    with watched(service, kind, outbox):
        sock = socket.create_connection(("127.0.0.1", service.port), timeout=10)
        sock.sendall(b"NOOP\r\n")
        sock.shutdown(socket.SHUT_WR)
        data, took = read_until_closed(sock, TIMEOUT + 5)
        sock.close()
        lines = well_formed(kind, data)
        assert len(lines) == 2 and not is_error(kind, lines[1]), lines    # greeting, NOOP's reply
        assert took < TIMEOUT / 2, f"closed after {took:.2f} s"


@pytest.mark.parametrize("kind", KINDS)
def test_unfinished_command_line_is_cut_at_the_timeout(services, outbox, kind):
    service = services[kind]
    with watched(service, kind, outbox):
        client = connect(kind, service.port)
        client.send(b"NOO")
        data, took = read_until_closed(client.sock, TIMEOUT + 5)
        client.close()
        assert data.startswith(timeout_reply(kind)), data
        assert TIMEOUT - 0.5 < took < TIMEOUT + 1.5


# --- SMTP ---------------------------------------------------------------------------

def test_million_pipelined_rcpts_get_452_beyond_the_limit_with_memory_bounded(services, outbox):
    smtp = services["smtp"]
    count, batch, time_limit = 1_000_000, 5000, 40.0
    with watched(smtp, "smtp", outbox):
        client = SMTPClient(smtp.port, timeout=20)
        assert client.command(b"MAIL FROM:<flood@test.example>").startswith(b"250")
        reader = Reader(client.sock, limit=1 << 30)
        started = time.monotonic()
        sent = 0
        while sent < count and time.monotonic() - started < time_limit:
            client.send(b"".join(b"RCPT TO:<u%07d@example.org>\r\n" % n for n in range(sent, sent + batch)))
            sent += batch
        expected = 1000 * len(b"250 2.1.5 Ok\r\n") + (sent - 1000) * len(b"452 4.5.3 Too many recipients\r\n")
        deadline = time.monotonic() + time_limit
        while len(reader.data) < expected and time.monotonic() < deadline and reader.is_alive():
            time.sleep(0.02)
        took = time.monotonic() - started
        print(f"\n{sent} RCPTs pipelined and answered in {took:.1f} s")
        outbox.ledger.note(f"{sent} pipelined RCPTs answered in {took:.1f} s (1000 x 250, the rest 452 4.5.3)")
        assert sent == count, f"only {sent} RCPTs within {time_limit} s"
        lines = bytes(reader.data).split(b"\r\n")[:-1]
        assert len(lines) == sent
        assert set(lines[:1000]) == {b"250 2.1.5 Ok"}
        assert set(lines[1000:]) == {b"452 4.5.3 Too many recipients"}
        client.send(b"QUIT\r\n")
        client.close()


def test_client_that_never_reads_replies_is_pushed_back_then_dropped_at_the_timeout(services, outbox):
    """Pipelined commands whose replies are never read: the server must stop
    reading once its replies back up, not keep them all in memory."""
    smtp = services["smtp"]
    with watched(smtp, "smtp", outbox):
        client = SMTPClient(smtp.port)
        client.sock.settimeout(2.0)
        batch = b"".join(b"RCPT TO:<u%07d@example.org>\r\n" % n for n in range(5000))
        started, sent = time.monotonic(), 0
        try:
            while sent < 60_000_000 and time.monotonic() - started < 10:
                client.sock.sendall(batch)
                sent += len(batch)
        except (socket.timeout, ConnectionResetError, BrokenPipeError):
            pass        # the server stopped reading, or then dropped us: what we want
        print(f"\nserver took {sent / 1e6:.1f} MB of commands before pushing back")
        assert sent < 60_000_000, "the server kept reading although nobody read its replies"
        # Nothing stuck: at the command timeout the server lets go of a
        # client that still has not read a thing (the TCP state leaves
        # ESTABLISHED: the server reset or closed the connection).
        wait_until(lambda: tcp_state(client.sock) != TCP_ESTABLISHED, TIMEOUT + 5,
                   "the server to drop a client that never reads")
        client.close()


TCP_ESTABLISHED = 1


def tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


def test_data_that_never_ends_is_cut_at_the_data_timeout_and_stores_nothing(services, outbox):
    smtp = services["smtp"]
    with watched(smtp, "smtp", outbox):
        client = SMTPClient(smtp.port)
        client.begin()
        mid, message = outbox.new(5000)
        outbox.refuse(mid)
        client.send(data_section(message)[:3000])   # no final dot, ever
        data, took = read_until_closed(client.sock, TIMEOUT + 5)
        client.close()
        assert data.startswith(b"421 4.4.2"), data
        assert TIMEOUT - 0.5 < took < TIMEOUT + 1.5
    assert files_in(services["maildir"] / "tmp") == []
    outbox.settle(services["maildir"])


def test_endless_data_beyond_the_size_limit_is_discarded_then_gets_552(services, outbox):
    smtp = services["smtp"]
    with watched(smtp, "smtp", outbox):
        client = SMTPClient(smtp.port)
        client.begin()
        line = b"x" * 998 + b"\r\n"
        chunk = line * 1000                          # 1 MB per send
        started, sent = time.monotonic(), 0
        while sent < 30 and time.monotonic() - started < 5:   # up to 30 times max_message_size
            client.send(chunk)
            sent += 1
        assert files_in(services["maildir"] / "tmp") == []
        client.send(b".\r\n")
        assert client.reply().startswith(b"552 5.3.4")
        assert client.command(b"NOOP").startswith(b"250")
        client.quit()
    outbox.settle(services["maildir"])


def test_half_close_mid_data_stores_nothing(services, outbox):
    smtp = services["smtp"]
    with watched(smtp, "smtp", outbox):
        client = SMTPClient(smtp.port)
        client.begin()
        mid, message = outbox.new(5000)
        outbox.refuse(mid)
        client.send(data_section(message)[:-3])     # all but the final dot
        client.sock.shutdown(socket.SHUT_WR)
        data, took = read_until_closed(client.sock, TIMEOUT + 5)
        client.close()
        assert b"250" not in data and took < TIMEOUT / 2
    assert files_in(services["maildir"] / "tmp") == []
    outbox.settle(services["maildir"])


def test_pipelined_transaction_then_half_close_still_gets_its_250_and_221(services, outbox):
    """A client may send everything, shut down its write side and read the
    replies. Closing before the 250 would leave a stored message the client
    believes failed: a duplicate when it retries."""
    smtp = services["smtp"]
    with watched(smtp, "smtp", outbox):
        mid, message = outbox.new(5000)
        sock = socket.create_connection(("127.0.0.1", smtp.port), timeout=10)
        sock.sendall(b"EHLO half.close\r\nMAIL FROM:<a@test.example>\r\nRCPT TO:<root@localhost>\r\nDATA\r\n"
                     + data_section(message) + b"QUIT\r\n")
        sock.shutdown(socket.SHUT_WR)
        data, took = read_until_closed(sock, TIMEOUT + 5)
        sock.close()
        lines = well_formed("smtp", data)
        assert [line[:3] for line in lines if line[3:4] == b" "] == \
            [b"220", b"250", b"250", b"250", b"354", b"250", b"221"], lines
        outbox.ack(mid)
    outbox.settle(services["maildir"])


# --- POP3 ------------------------------------------------------------------------------

def test_pipelined_retr_flood_without_reading_keeps_pop3_memory_bounded(services, outbox):
    """Each RETR of a 50 kB message answers 8 bytes of input with 50 kB: a
    client that pipelines thousands and reads nothing must not make the
    server hold all the answers."""
    pop3 = services["pop3"]
    with watched(pop3, "pop3", outbox):
        client = POP3Client(pop3.port)
        # 32 kB of commands: the socket buffers take them all at once, so
        # the server has every command before the client reads anything.
        client.send(b"RETR 1\r\n" * 4000 + b"QUIT\r\n")
        reader = Reader(client.sock, limit=1 << 30)
        reader.join(60)
        client.close()
        data = bytes(reader.data)
        assert data.count(b"\r\n.\r\n") == 4000 and data.endswith(b"signing off (0 messages deleted)\r\n")


def test_pipelined_list_flood_without_reading_keeps_pop3_memory_bounded(services, outbox, start_service):
    """LIST answers 6 bytes with a line per message: pipelined LISTs that
    nobody reads must not pile up their replies in the server."""
    pop3 = services["pop3"]
    smtp = services["smtp"]
    client = SMTPClient(smtp.port)
    for _ in range(300):
        mid, message = outbox.new(300)
        reply = client.send_message(message)
        assert reply.startswith(b"250"), reply
        outbox.ack(mid)
    client.quit()
    with watched(pop3, "pop3", outbox):
        client = POP3Client(pop3.port)
        client.send(b"LIST\r\n" * 20000 + b"QUIT\r\n")      # 120 kB in, 70 MB out
        reader = Reader(client.sock, limit=1 << 30)
        reader.join(60)
        client.close()
        data = bytes(reader.data)
        assert data.count(b"\r\n.\r\n") == 20000 and data.endswith(b"signing off (0 messages deleted)\r\n")
    outbox.settle(services["maildir"])


def test_empty_line_flood_without_reading_keeps_smtp_memory_bounded(services, outbox):
    """An empty line is 1 byte in and a 41-byte 500 reply out."""
    smtp = services["smtp"]
    with watched(smtp, "smtp", outbox):
        client = SMTPClient(smtp.port)
        client.send(b"\n" * 500_000 + b"QUIT\r\n")
        reader = Reader(client.sock, limit=1 << 30)
        reader.join(60)
        client.close()
        assert bytes(reader.data).count(b"500 5.5.1") == 500_000
