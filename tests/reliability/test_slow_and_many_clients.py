"""Many idle clients, a session cap, and clients that send one byte a second."""

from __future__ import annotations

import resource
import select
import socket
import threading
import time

import pytest

from wire import Bystander, RssSampler, SMTPClient, deliver, files_in, rss_kib, wait_until

IDLE_SESSIONS = 1000
SLOW_TIMEOUT = 2.0


def open_sessions(port: int, count: int) -> list[tuple[socket.socket, bytes]]:
    """`count` connections, each with the first line the server sent it."""
    opened = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            opened.append((sock, _first_line(sock)))
    except BaseException:
        for sock, _ in opened:
            sock.close()
        raise
    return opened


def _first_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
    return data


def test_thousand_idle_sessions_leave_room_for_a_fresh_client(start_service, outbox, tmp_path):
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < IDLE_SESSIONS + 200:
        pytest.skip("RLIMIT_NOFILE too low for 1,000 sessions (conftest raises it where the hard limit allows)")
    smtp = start_service("smtp", tmp_path / "Maildir", max_sessions=IDLE_SESSIONS + 100)
    deliver(smtp.port, outbox)            # starts the program and warms it up
    smtp.wait_ready()
    before = rss_kib(smtp.process.pid)
    started = time.monotonic()
    idle = open_sessions(smtp.port, IDLE_SESSIONS)
    try:
        opened_in = time.monotonic() - started
        assert all(line.startswith(b"220 ") for _, line in idle)
        smtp.notify.wait_for(f"STATUS={IDLE_SESSIONS} sessions open")
        with_idle = rss_kib(smtp.process.pid)
        per_session = (with_idle - before) / IDLE_SESSIONS
        figures = (f"baremail-smtp VmRSS: {before} KiB with no session, {with_idle} KiB with "
                   f"{IDLE_SESSIONS} idle sessions ({per_session:.1f} KiB per session); "
                   f"opened in {opened_in:.2f} s")
        print("\n" + figures)
        outbox.ledger.note(figures)
        outbox.rss(with_idle)

        greeted = time.monotonic()
        fresh = SMTPClient(smtp.port)
        greeting_took = time.monotonic() - greeted
        assert fresh.greeting.startswith(b"220 ") and greeting_took < 1.0, greeting_took
        outbox.ledger.note(f"a fresh client beside {IDLE_SESSIONS} idle sessions: greeted in "
                           f"{greeting_took * 1000:.1f} ms")
        mid, message = outbox.new()
        reply = fresh.send_message(message)
        assert reply.startswith(b"250 2.0.0"), reply
        outbox.ack(mid)
        fresh.quit()
        assert per_session < 40, f"{per_session:.1f} KiB per idle session"
    finally:
        for sock, _ in idle:
            sock.close()
    outbox.settle(tmp_path / "Maildir")


@pytest.mark.parametrize("kind,refusal", [("smtp", b"421 4.3.2 "), ("pop3", b"-ERR [SYS/TEMP] ")],
                         ids=["smtp", "pop3"])
def test_sessions_beyond_max_sessions_are_refused_cleanly(start_service, outbox, tmp_path, kind, refusal):
    service = start_service(kind, tmp_path / "Maildir", max_sessions=100)
    admitted = open_sessions(service.port, 100)
    try:
        service.wait_ready()
        assert all(not line.startswith(refusal) for _, line in admitted)
        refused = open_sessions(service.port, 20)
        for sock, line in refused:
            assert line.startswith(refusal), line
            assert sock.recv(1024) == b"", "a refused session must be closed"
            sock.close()
        outbox.sessions_refused(len(refused))
        # One leaves: a newcomer gets in again.
        admitted.pop()[0].close()

        def newcomer_admitted():
            [(sock, line)] = open_sessions(service.port, 1)
            sock.close()
            return not line.startswith(refusal)
        wait_until(newcomer_admitted, 10, "a free session slot")
        assert service.process.poll() is None
    finally:
        for sock, _ in admitted:
            sock.close()
    assert service.log().count("refused session") >= 20


class Slowloris(threading.Thread):
    """Sends `text` one byte a second and records when the server cut it off."""

    def __init__(self, port: int, prelude: bytes, text: bytes):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.prelude, self.text = prelude, text
        self.received = b""
        self.slow_since = 0.0
        self.cut_after: float | None = None
        self.start()

    def run(self) -> None:
        try:
            self.sock.sendall(self.prelude)
            self.slow_since = time.monotonic()
            for index in range(len(self.text) + 1):
                # One byte a second; in between, whatever the server says.
                deadline = time.monotonic() + 1.0
                while (left := deadline - time.monotonic()) > 0:
                    if select.select([self.sock], [], [], left)[0]:
                        chunk = self.sock.recv(65536)
                        if not chunk:
                            self.cut_after = time.monotonic() - self.slow_since
                            return
                        self.received += chunk
                if index < len(self.text):
                    self.sock.sendall(self.text[index:index + 1])
        except OSError:
            self.cut_after = time.monotonic() - self.slow_since
        finally:
            self.sock.close()


def test_slowloris_clients_are_cut_at_the_command_and_data_timeouts(start_service, outbox, tmp_path):
    maildir = tmp_path / "Maildir"
    settings = {"smtp.command_timeout": SLOW_TIMEOUT, "smtp.data_timeout": SLOW_TIMEOUT,
                "pop3.timeout": SLOW_TIMEOUT}
    smtp = start_service("smtp", maildir, **settings)
    pop3 = start_service("pop3", maildir, **settings)
    deliver(smtp.port, outbox)
    smtp.wait_ready()
    in_data = b"EHLO slow\r\nMAIL FROM:<slow@test.example>\r\nRCPT TO:<root@localhost>\r\nDATA\r\n"
    slow_text = b"NOOP NOOP NOOP NOOP NOOP\r\n"
    with RssSampler(smtp.process.pid) as rss, Bystander("smtp", smtp.port, outbox) as bystander:
        clients = ([Slowloris(smtp.port, b"", slow_text) for _ in range(5)]
                   + [Slowloris(smtp.port, in_data, b"Subject: slow\r\n\r\nvery slow\r\n.\r\n") for _ in range(5)]
                   + [Slowloris(pop3.port, b"", b"STAT STAT STAT\r\n") for _ in range(5)])
        for client in clients:
            client.join(SLOW_TIMEOUT + 15)
        bystander.wait_for_sessions(1)
    outbox.rss(rss.peak)
    bystander.check()
    for client in clients:
        assert client.cut_after is not None, f"never cut; got {client.received!r}"
        # The data clients wait for four replies to their pipelined commands
        # first, which takes no time at all.
        assert SLOW_TIMEOUT - 0.5 < client.cut_after < SLOW_TIMEOUT + 1.5, client.cut_after
        last = client.received.rstrip(b"\r\n").split(b"\r\n")[-1]
        assert last.startswith((b"421 4.4.2", b"-ERR autologout")), client.received
    assert files_in(maildir / "tmp") == []
    outbox.settle(maildir)
