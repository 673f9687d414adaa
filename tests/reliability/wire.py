"""Raw SMTP and POP3 clients, a memory sampler and a bystander client.

The clients speak bytes on a socket, so a test decides exactly what is sent
and when, and sees a vanished server as `Gone` instead of a library's guess.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from ledger import check, data_section, wire_to_lf


class Gone(Exception):
    """The server closed or reset the connection before a complete reply."""


class LineReader:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError) as exc:
                raise Gone(str(exc)) from None
            if not chunk:
                raise Gone(f"connection closed; unfinished {self.buffer[:80]!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line


class SMTPClient:
    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.reader = LineReader(self.sock)
        self.greeting = self.reply()

    def reply(self) -> bytes:
        """One complete reply; a multi-line reply comes back as its last line."""
        while True:
            line = self.reader.line()
            if line[3:4] != b"-":
                return line

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise Gone(str(exc)) from None

    def command(self, line: bytes) -> bytes:
        self.send(line + b"\r\n")
        return self.reply()

    def begin(self, rcpt: bytes = b"root@localhost") -> None:
        """EHLO, MAIL, RCPT, DATA; ready for the message data."""
        for line, code in ((b"EHLO reliability.test", b"250"), (b"MAIL FROM:<probe@test.example>", b"250"),
                           (b"RCPT TO:<" + rcpt + b">", b"250"), (b"DATA", b"354")):
            reply = self.command(line)
            assert reply.startswith(code), f"{line!r} got {reply!r}"

    def send_message(self, message: bytes) -> bytes:
        """A whole transaction; returns the reply to the final dot."""
        self.begin()
        self.send(data_section(message))
        return self.reply()

    def quit(self) -> None:
        try:
            self.command(b"QUIT")
        except (Gone, OSError):
            pass
        self.close()

    def close(self) -> None:
        self.sock.close()


def deliver(port: int, outbox, size: int = 2000, timeout: float = 10.0) -> str:
    """Send one new message through `outbox` and insist on its 250."""
    mid, message = outbox.new(size)
    client = SMTPClient(port, timeout)
    try:
        reply = client.send_message(message)
    finally:
        client.quit()
    assert reply.startswith(b"250 2.0.0"), reply
    outbox.ack(mid)
    return mid


class POP3Client:
    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.reader = LineReader(self.sock)
        self.greeting = self.reader.line()

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise Gone(str(exc)) from None

    def command(self, line: bytes) -> bytes:
        self.send(line + b"\r\n")
        return self.reader.line()

    def multiline(self, line: bytes) -> tuple[bytes, bytes]:
        """(status line, body in wire form, unstuffed)."""
        status = self.command(line)
        if not status.startswith(b"+OK"):
            return status, b""
        body = []
        while True:
            item = self.reader.line()
            if item == b".":
                return status, b"".join(body)
            body.append((item[1:] if item.startswith(b".") else item) + b"\r\n")

    def login(self) -> None:
        assert self.command(b"USER reliability").startswith(b"+OK")
        assert self.command(b"PASS anything").startswith(b"+OK")

    def uidls(self) -> list[bytes]:
        status, body = self.multiline(b"UIDL")
        assert status.startswith(b"+OK"), status
        return [line.split()[1] for line in body.split(b"\r\n") if line]

    def retrieve(self, number: int) -> bytes:
        """Message `number` in LF form."""
        status, body = self.multiline(b"RETR %d" % number)
        assert status.startswith(b"+OK"), status
        return wire_to_lf(body)

    def quit(self) -> bytes:
        try:
            return self.command(b"QUIT")
        finally:
            self.sock.close()

    def close(self) -> None:
        self.sock.close()


def read_all_over_pop3(port: int) -> dict[str, bytes]:
    """Every message the POP3 service offers, checked complete: id -> LF form."""
    client = POP3Client(port)
    try:
        client.login()
        found = {}
        for number in range(1, len(client.uidls()) + 1):
            message = client.retrieve(number)
            mid, complete = check(message)
            assert complete, f"message {number} ({mid}) is not complete over POP3"
            found[mid] = message
        return found
    finally:
        client.quit()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


class RssSampler:
    """Samples a process's VmRSS every `interval` seconds; `.peak` in KiB."""

    def __init__(self, pid: int, interval: float = 0.02):
        self.pid = pid
        self.interval = interval
        self.start_kib = rss_kib(pid)
        self.peak = self.start_kib
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except (OSError, AssertionError):
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        try:
            self.peak = max(self.peak, rss_kib(self.pid))
        except (OSError, AssertionError):
            pass
        return self.peak

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Bystander:
    """An ordinary client using a service while a test attacks it.

    In a thread it runs one session after another (SMTP: a whole delivery
    through `outbox`; POP3: login, STAT, QUIT) until stopped, at most
    `max_sessions` of them. `check()` insists that each was served, none
    took longer than `max_latency` seconds, and at least one completed."""

    def __init__(self, kind: str, port: int, outbox=None, max_sessions: int = 200,
                 max_latency: float = 3.0):
        self.kind = kind
        self.port = port
        self.outbox = outbox
        self.max_sessions = max_sessions
        self.max_latency = max_latency
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.latencies) + len(self.failures) < self.max_sessions:
            started = time.monotonic()
            try:
                if self.kind == "smtp":
                    deliver(self.port, self.outbox, size=600, timeout=self.max_latency + 5)
                else:
                    client = POP3Client(self.port, timeout=self.max_latency + 5)
                    assert client.command(b"STAT").startswith(b"+OK")
                    client.quit()
            except Exception as exc:  # noqa: BLE001 - recorded and reported by check()
                self.failures.append(f"{type(exc).__name__}: {exc}")
            else:
                self.latencies.append(time.monotonic() - started)
            self._stop.wait(0.05)

    def wait_for_sessions(self, count: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.latencies) + len(self.failures) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    def check(self) -> None:
        assert not self.failures, f"bystander failed: {self.failures[:3]}"
        assert self.latencies, "the bystander completed no session"
        assert max(self.latencies) < self.max_latency, \
            f"bystander waited {max(self.latencies):.2f} s (limit {self.max_latency} s)"


def wait_until(predicate, timeout: float, what: str, interval: float = 0.01):
    """Poll `predicate` until it returns something true; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def read_until_closed(sock: socket.socket, timeout: float, limit: int = 1 << 20) -> tuple[bytes, float]:
    """Everything the server sends until it closes: (data, seconds it took)."""
    started = time.monotonic()
    sock.settimeout(timeout)
    data = b""
    try:
        while len(data) < limit:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    except socket.timeout:
        raise AssertionError(f"server did not close within {timeout} s; got {data[-200:]!r}") from None
    return data, time.monotonic() - started


def files_in(directory: Path) -> list[str]:
    return sorted(path.name for path in Path(directory).iterdir()) if Path(directory).is_dir() else []
