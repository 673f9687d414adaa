"""Run the real baremail-smtp / baremail-pop3 under systemd-socket-activate.

Shared by tests/integration and tests/reliability (their conftest.py files
import the fixtures from here).

systemd-socket-activate binds the port, waits for the first connection,
then execs the program with LISTEN_FDS set: real fd passing, as systemd does.
Each service gets its own NOTIFY_SOCKET that the test reads, so readiness is
observed, never guessed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON = "/usr/bin/python3"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NotifyListener:
    """A NOTIFY_SOCKET: collects every sd_notify datagram."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            with self._cond:
                self.messages.extend(data.decode().split("\n"))
                self._cond.notify_all()

    def wait_for(self, predicate, timeout: float = 15.0) -> str:
        if isinstance(predicate, str):
            prefix = predicate
            predicate = lambda line: line.startswith(prefix)  # noqa: E731
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.messages:
                    if predicate(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no matching sd_notify message; got {self.messages}")
                self._cond.wait(remaining)

    def seen(self, prefix: str) -> bool:
        with self._cond:
            return any(line.startswith(prefix) for line in self.messages)

    def close(self) -> None:
        self.sock.close()


class Service:
    """One BareMail program under systemd-socket-activate."""

    def __init__(self, kind: str, workdir: Path, maildir: Path, settings: dict, env: dict | None = None,
                 port: int | None = None):
        self.kind = kind
        self.port = port or free_port()
        self.maildir = maildir
        self.config = workdir / f"{kind}.conf"
        sections: dict[str, dict] = {"baremail": {"maildir": str(maildir), "hostname": "test.example",
                                                  "idle_exit": "0"}, "smtp": {}, "pop3": {}, "imap": {}}
        for key, value in settings.items():
            section, _, name = key.rpartition(".")
            sections[section or "baremail"][name] = str(value)
        self.config.write_text("".join(
            f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
            for name, values in sections.items()))
        self.notify = NotifyListener(workdir / f"{kind}-{self.port}.notify")
        self.stderr_path = workdir / f"{kind}-{self.port}.log"
        environment = dict(os.environ, PYTHONPATH=str(ROOT), NOTIFY_SOCKET=self.notify.path)
        environment.pop("JOURNAL_STREAM", None)
        environment.update(env or {})
        self._stderr = open(self.stderr_path, "wb")
        self.process = subprocess.Popen(
            ["systemd-socket-activate", "-l", f"127.0.0.1:{self.port}", f"--fdname={kind}",
             "-E", "NOTIFY_SOCKET", "-E", "PYTHONPATH",
             *[item for name in (env or {}) for item in ("-E", name)],
             PYTHON, "-m", "baremail.cli", kind, "--config", str(self.config), "--debug"],
            env=environment, stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr,
            start_new_session=True)
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 10
        while b"Listening on" not in self.stderr_path.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("systemd-socket-activate did not listen:\n" + self.log())
            time.sleep(0.02)

    def connect(self, timeout: float = 10.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def wait_ready(self) -> None:
        """The program starts at the first connection; wait for its READY=1."""
        self.notify.wait_for("READY=1")

    def log(self) -> str:
        return self.stderr_path.read_bytes().decode(errors="replace")

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signum)

    def wait(self, timeout: float = 15.0) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait(5)
        self._stderr.close()
        self.notify.close()

    def rss_kb(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")


@pytest.fixture
def start_service(tmp_path):
    started: list[Service] = []

    def start(kind: str, maildir: Path | None = None, env: dict | None = None, port: int | None = None,
              **settings) -> Service:
        service = Service(kind, tmp_path, maildir or tmp_path / "Maildir", settings, env, port)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def smtp_service(start_service):
    return start_service("smtp")


@pytest.fixture
def mail_services(start_service, tmp_path):
    """SMTP and POP3 sharing one Maildir."""
    maildir = tmp_path / "Maildir"
    return start_service("smtp", maildir), start_service("pop3", maildir)


def stored_messages(maildir: Path) -> list[bytes]:
    """Every stored message's bytes, in delivery order (name order suffices in a test)."""
    files = sorted((maildir / "new").iterdir()) + sorted((maildir / "cur").iterdir())
    return [path.read_bytes() for path in files]


def body_of(stored: bytes) -> bytes:
    """The part after BareMail's trace headers: what the client sent (LF line ends)."""
    lines = stored.split(b"\n")
    index = 0
    while index < len(lines) and (lines[index].startswith((b"Return-Path:", b"Delivered-To:", b"Received:"))
                                  or lines[index][:1] in (b" ", b"\t")):
        index += 1
    return b"\n".join(lines[index:])

