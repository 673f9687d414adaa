"""SIGKILL of baremail-imap in the middle of APPEND, MOVE and EXPUNGE: every
message is afterwards in the Maildir exactly once (in the source or the
destination of a MOVE, never in neither, never in both) or, for APPEND and
EXPUNGE, whole or not at all; a restarted service serves the folders with
their UIDs. Also: a client that never reads, and 1,000 sessions in IDLE.

strace kills the program on entry to a chosen system call (faults.py), so
each kill point is exact and the product has no test hooks.
"""

from __future__ import annotations

import re
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from baremail.maildir import Maildir
from faults import kill_at_syscall, wait_killed
from wire import rss_kib


def body(marker: str) -> bytes:
    return (f"Subject: {marker}\r\nX-Marker: {marker}\r\n\r\n" + "line of text\r\n" * 200 +
            f"END {marker}\r\n").encode()


def fill(maildir: Path, markers) -> None:
    box = Maildir(str(maildir), "test.example")
    for marker in markers:
        box.deliver([body(marker)])
    box.close()


def census(maildir: Path) -> dict:
    """marker -> list of (folder, whole?) for every stored copy."""
    found: dict = {}
    for folder in [maildir] + [path for path in maildir.glob(".*") if path.is_dir()]:
        name = "INBOX" if folder == maildir else folder.name[1:]
        for sub in ("new", "cur"):
            for path in (folder / sub).iterdir():
                data = path.read_bytes()
                marker = re.search(rb"^X-Marker: (\S+)$", data, re.M).group(1).decode()
                found.setdefault(marker, []).append((name, data.endswith(f"END {marker}\n".encode())))
    return found


class Client:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.stream = self.sock.makefile("rb")
        assert self.stream.readline().startswith(b"* OK")
        self.tag = 0

    def command(self, line: bytes) -> list:
        """Send a tagged command; the response lines, the tagged one (or a
        continuation request) last. ConnectionError if the server went away."""
        self.tag += 1
        self.sock.sendall(b"t%d " % self.tag + line + b"\r\n")
        return self.responses()

    def continue_with(self, data: bytes) -> list:
        """The rest of the command after a "+" (a literal and the line's end)."""
        self.sock.sendall(data)
        return self.responses()

    def responses(self) -> list:
        tag = b"t%d" % self.tag
        lines = []
        while True:
            response = self.stream.readline()
            if not response:
                raise ConnectionError("the server closed the connection")
            lines.append(response)
            if response.startswith(tag + b" ") or response.startswith(b"+ "):
                return lines

    def close(self) -> None:
        self.stream.close()
        self.sock.close()


def session_on(start_service, tmp_path, markers) -> tuple:
    """A Maildir holding `markers`, baremail-imap on it (no STATUS=
    datagrams: only the calls being counted), a client logged in."""
    maildir = tmp_path / "Maildir"
    fill(maildir, markers)
    service = start_service("imap", maildir, env={"NOTIFY_SOCKET": ""})
    client = Client(service.port)
    client.command(b"LOGIN u p")
    return maildir, service, client


def killed_during(service, client, kill, send) -> None:
    """SIGKILL at `kill` while `send()` runs a command: the client must get
    no answer, the service must die of the signal."""
    with kill_at_syscall(service.process.pid, kill.syscall, kill.when, kill.threads):
        try:
            answer = send()
        except (ConnectionError, OSError):
            answer = None
        assert answer is None, f"the kill point was never reached: {answer!r}"
        assert wait_killed(service) == -signal.SIGKILL
    client.close()


@dataclass(frozen=True)
class Kill:
    name: str
    syscall: str
    when: int
    threads: bool


APPEND_KILLS = [
    Kill("writing-the-file", "write", 1, True),
    Kill("fsync-of-the-file", "fsync", 1, True),
    Kill("rename-into-cur", "rename", 1, True),
    Kill("fsync-of-cur", "fsync", 2, True),
    Kill("numbering-it", "fdatasync", 1, True),
]


@pytest.mark.parametrize("kill", APPEND_KILLS, ids=lambda kill: kill.name)
def test_append_killed_at_any_step_leaves_the_message_whole_or_absent(start_service, tmp_path, kill):
    maildir, service, client = session_on(start_service, tmp_path, ["old"])
    client.command(b"SELECT INBOX")   # numbered now: the kill point is the APPEND's own work
    data = body("appended")
    assert client.command(b"APPEND INBOX (\\Seen) {%d}" % len(data)) == [b"+ OK\r\n"]
    # the literal, then the command's end
    killed_during(service, client, kill, lambda: client.continue_with(data + b"\r\n"))
    copies = census(maildir)
    assert copies["old"] == [("INBOX", True)]
    assert copies.get("appended", []) in ([], [("INBOX", True)]), copies.get("appended")
    # The service serves again, and the message, if kept, has a UID.
    again = start_service("imap", maildir)
    client = Client(again.port)
    client.command(b"LOGIN u p")
    client.command(b"SELECT INBOX")
    lines = client.command(b"UID SEARCH ALL")
    uids = lines[0].split()[2:]
    assert len(uids) == 1 + len(copies.get("appended", []))
    assert len(set(uids)) == len(uids)
    client.close()


MOVE_KILLS = [
    Kill("first-rename", "rename", 1, False),
    Kill("second-rename", "rename", 2, False),
    Kill("third-rename", "rename", 3, False),
    Kill("fsync-of-the-destination", "fsync", 1, False),
    Kill("fsync-of-the-source", "fsync", 2, False),
]


@pytest.mark.parametrize("kill", MOVE_KILLS, ids=lambda kill: kill.name)
def test_move_killed_at_any_step_leaves_each_message_in_exactly_one_folder(start_service, tmp_path, kill):
    markers = [f"m{n}" for n in range(4)]
    maildir, service, client = session_on(start_service, tmp_path, markers)
    client.command(b"CREATE Trash")
    client.command(b"SELECT INBOX")
    client.command(b"FETCH 1:* (UID)")
    killed_during(service, client, kill, lambda: client.command(b"UID MOVE 1:4 Trash"))
    copies = census(maildir)
    assert sorted(copies) == markers
    for marker, places in copies.items():
        assert len(places) == 1 and places[0][1], (marker, places)
    again = start_service("imap", maildir)
    client = Client(again.port)
    client.command(b"LOGIN u p")
    counts = [client.command(b"STATUS %s (MESSAGES)" % name)[0] for name in (b"INBOX", b"Trash")]
    assert sum(int(re.search(rb"MESSAGES (\d+)", line).group(1)) for line in counts) == 4
    client.close()


@pytest.mark.parametrize("when", [1, 2, 3])
def test_expunge_killed_at_any_unlink_removes_only_deleted_messages_whole(start_service, tmp_path, when):
    markers = [f"e{n}" for n in range(5)]
    maildir, service, client = session_on(start_service, tmp_path, markers)
    client.command(b"SELECT INBOX")
    client.command(b"STORE 1,3,5 +FLAGS.SILENT (\\Deleted)")
    killed_during(service, client, Kill("unlink", "unlink", when, False), lambda: client.command(b"EXPUNGE"))
    copies = census(maildir)
    assert {"e1", "e3"} <= set(copies)                       # never \Deleted: kept
    assert len(set(copies) & {"e0", "e2", "e4"}) == 3 - (when - 1)
    assert all(places == [("INBOX", True)] for places in copies.values())


def test_a_client_that_never_reads_its_fetch_is_cut_by_the_timeout(start_service, tmp_path):
    maildir = tmp_path / "Maildir"
    fill(maildir, [f"r{n}" for n in range(200)])
    service = start_service("imap", maildir, **{"imap.timeout": 2})
    Client(service.port).close()   # the program runs (socket activation)
    service.wait_ready()
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"a LOGIN u p\r\nb SELECT INBOX\r\n" + b"c FETCH 1:* BODY.PEEK[]\r\n" * 20)
    before = rss_kib(service.process.pid)
    deadline = time.monotonic() + 20
    while "timed out" not in service.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    log = service.log()
    assert "timed out" in log and " ended: " in log, log[-2000:]
    assert rss_kib(service.process.pid) - before < 16 * 1024
    # and the service still serves
    client = Client(service.port)
    assert client.command(b"NOOP")[-1].startswith(b"t1 OK")
    client.close()
    sock.close()


def test_a_thousand_sessions_in_idle(start_service, tmp_path, record_property):
    maildir = tmp_path / "Maildir"
    fill(maildir, ["one"])
    service = start_service("imap", maildir, max_sessions=1100)
    warm = Client(service.port)
    warm.command(b"LOGIN u p")
    warm.command(b"SELECT INBOX")
    before = rss_kib(service.process.pid)
    sockets = []
    try:
        for _ in range(1000):
            sock = socket.create_connection(("127.0.0.1", service.port), timeout=20)
            sock.sendall(b"a LOGIN u p\r\nb SELECT INBOX\r\nc IDLE\r\n")
            sockets.append(sock)
        for sock in sockets:
            data = b""
            while b"+ idling\r\n" not in data:
                chunk = sock.recv(4096)
                assert chunk, "a session closed"
                data += chunk
        held = rss_kib(service.process.pid)
        per_session = (held - before) / 1000
        record_property("imap_rss_per_idle_session_kb", round(per_session, 2))
        print(f"baremail-imap: {before} KiB with one session, {held} KiB with 1000 more in IDLE "
              f"({per_session:.1f} KiB per session)")
        # A delivery wakes them all.
        fill(maildir, ["two"])
        woken = 0
        deadline = time.monotonic() + 20
        for sock in sockets:
            sock.settimeout(max(deadline - time.monotonic(), 0.1))
            data = b""
            while b"EXISTS" not in data:
                data += sock.recv(4096)
            woken += 1
        assert woken == 1000
        assert per_session < 40
    finally:
        for sock in sockets:
            sock.close()
        warm.close()
