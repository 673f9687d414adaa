"""Helpers for driving real third-party IMAP clients against baremail-imap.

Shared by test_imap_clients.py: mail goes in through the real baremail-smtp
(so the Maildir is exactly as production makes it), the server side is
inspected both on disk and over imaplib, and every client talks to the
server through a recording proxy, so that a failing assertion shows the
IMAP exchange that led to it.
"""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import smtplib
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

CLIENT_TIMEOUT = 30   # seconds any one client run may take


def need(program: str, package: str):
    """Skip marker for a client that `make test` installs."""
    return pytest.mark.skipif(shutil.which(program) is None, reason=f"{program} ({package}) is installed by make test")


# --- mail in, mail on the server ------------------------------------------------------------


def deliver(smtp_service, *payloads: bytes, rcpt=("root@localhost",)) -> None:
    with smtplib.SMTP("127.0.0.1", smtp_service.port, timeout=30) as client:
        for payload in payloads:
            client.sendmail("sender@example.org", list(rcpt), payload)


def wire(stored: bytes) -> bytes:
    """The wire form of a stored (LF) message: what IMAP serves."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", stored)


def unwire(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def folder_path(maildir: Path, folder: str) -> Path:
    return maildir if folder == "INBOX" else maildir / ("." + folder)


def stored_files(maildir: Path, folder: str = "INBOX") -> dict[str, tuple[str, bytes]]:
    """The server's Maildir folder on disk: key -> (Maildir flag letters, bytes)."""
    result = {}
    path = folder_path(maildir, folder)
    for sub in ("new", "cur"):
        for entry in sorted((path / sub).iterdir()):
            key, _, info = entry.name.partition(":")
            result[key] = (info[2:] if info.startswith("2,") else "", entry.read_bytes())
    return result


def stored_by_subject(maildir: Path, folder: str = "INBOX") -> dict[str, bytes]:
    """The stored messages of a folder by their Subject (tests give each a unique one)."""
    result = {}
    for _, data in stored_files(maildir, folder).values():
        match = re.search(rb"^Subject: (.*)$", data, re.M)
        result[match.group(1).decode()] = data
    return result


def flags_by_subject(maildir: Path, folder: str = "INBOX") -> dict[str, str]:
    """The Maildir flag letters of a folder's stored messages, by Subject."""
    result = {}
    for flags, data in stored_files(maildir, folder).values():
        result[re.search(rb"^Subject: (.*)$", data, re.M).group(1).decode()] = flags
    return result


def tree(root: Path, skip=()) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes): a before/after snapshot."""
    result = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not any(part in skip for part in path.relative_to(root).parts):
            result[str(path.relative_to(root))] = path.read_bytes()
    return result


class Imap:
    """imaplib, logged in, for arranging and checking the server side."""

    def __init__(self, service):
        self.client = imaplib.IMAP4("127.0.0.1", service.port, timeout=30)
        self.ok(self.client.login("checker", "anything"))

    @staticmethod
    def ok(reply):
        status, data = reply
        assert status == "OK", reply
        return data

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.client.logout()
        except (OSError, imaplib.IMAP4.error):
            pass

    def select(self, folder: str = "INBOX", readonly: bool = False) -> None:
        self.ok(self.client.select(folder, readonly=readonly))

    def uidvalidity(self, folder: str = "INBOX") -> int:
        data = self.ok(self.client.status(folder, "(UIDVALIDITY)"))
        return int(re.search(rb"UIDVALIDITY (\d+)", data[0]).group(1))

    def messages(self, folder: str = "INBOX") -> dict[int, tuple[frozenset, bytes]]:
        """UID -> (flags, BODY[]) of every message, read with EXAMINE (changes nothing)."""
        self.select(folder, readonly=True)
        data = self.ok(self.client.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])"))
        result = {}
        for item in data:
            if not isinstance(item, tuple):
                continue
            head, body = item
            uid = int(re.search(rb"UID (\d+)", head).group(1))
            flags = frozenset(re.search(rb"FLAGS \(([^)]*)\)", head).group(1).decode().split())
            result[uid] = (flags, body)
        self.ok(self.client.unselect())
        return result

    def uid_of(self, subject: str, folder: str = "INBOX") -> int:
        self.select(folder)
        data = self.ok(self.client.uid("SEARCH", "HEADER", "Subject", subject))
        [uid] = data[0].split()
        return int(uid)

    def internal_date(self, subject: str, folder: str = "INBOX") -> float:
        """The INTERNALDATE of the message with this Subject, as a timestamp."""
        uid = self.uid_of(subject, folder)
        data = self.ok(self.client.uid("FETCH", str(uid), "(INTERNALDATE)"))
        return time.mktime(imaplib.Internaldate2tuple(data[0]))

    def store(self, uid: int, action: str, flags: str) -> None:
        self.ok(self.client.uid("STORE", str(uid), action, flags))


# --- a recording proxy ----------------------------------------------------------------------


class Recorder:
    """A TCP proxy on a loopback port of its own, in front of the service,
    that keeps the IMAP exchange (C: client, S: server) of every
    connection through it: the evidence a failing client test shows."""

    def __init__(self, service):
        self.target = ("127.0.0.1", service.port)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._log: list[tuple[int, str, bytes]] = []
        self._connections = 0
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._connections += 1
                number = self._connections
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(number, "C", client, server), daemon=True).start()
            threading.Thread(target=self._pump, args=(number, "S", server, client), daemon=True).start()

    def _pump(self, number: int, side: str, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                try:
                    sink.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            with self._lock:
                self._log.append((number, side, data))
            try:
                sink.sendall(data)
            except OSError:
                return

    def lines(self, side: str | None = None) -> list[str]:
        """The exchange as lines, 'n C: ...' / 'n S: ...' (literals cut short)."""
        with self._lock:
            log = list(self._log)
        pending: dict[tuple, bytes] = {}
        result = []

        def emit(key, line: bytes) -> None:
            if side is None or key[1] == side:
                result.append(f"{key[0]} {key[1]}: {line[:160].decode('utf-8', 'replace')}")

        for number, who, data in log:   # in the order it went through
            key = (number, who)
            *complete, pending[key] = (pending.get(key, b"") + data).split(b"\r\n")
            for line in complete:
                emit(key, line)
        for key, rest in pending.items():
            if rest:
                emit(key, rest)
        return result

    def changing_commands(self) -> list[str]:
        """The commands that change a mailbox or fetch a whole message."""
        return [command for command in self.commands()
                if re.match(r"(UID )?(STORE|APPEND|EXPUNGE|COPY|MOVE|CREATE|DELETE|RENAME)\b"
                            r"|.*BODY(\.PEEK)?\[\]|.*RFC822[ )]", command, re.I)]

    def commands(self) -> list[str]:
        """The client's command lines without tags (e.g. 'UID FETCH 1:* (FLAGS)')."""
        found = []
        for line in self.lines("C"):
            words = line.split(": ", 1)[1].split(" ", 1)
            if len(words) == 2 and re.fullmatch(r"[A-Za-z0-9.]+", words[0]):
                found.append(words[1])
            else:
                found.append(words[0])
        return found

    def transcript(self, last: int = 120) -> str:
        lines = self.lines()
        cut = lines[-last:]
        return ("IMAP exchange" + (f" (last {last} of {len(lines)} lines)" if len(lines) > last else "")
                + ":\n" + "\n".join(cut))

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.close()
                except OSError:
                    pass


# --- running clients ------------------------------------------------------------------------


def client_env(home: Path, **extra) -> dict:
    """A hermetic environment: HOME of the test's own, no inherited mail settings."""
    home.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items()
           if key not in ("MAIL", "MAILDIR", "MAILRC", "MUTTRC", "NETRC", "FETCHMAILHOME", "FETCHMAILUSER", "HOME_ETC",
                          "http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")}
    env.update(HOME=str(home), LC_ALL="C.UTF-8", TZ="UTC", **extra)
    return env


def run(argv, env, recorder: Recorder | None = None, ok=(0,), timeout: float = CLIENT_TIMEOUT,
        **kwargs) -> subprocess.CompletedProcess:
    """Run a client to its end (bounded), asserting its exit status is one of `ok`."""
    try:
        done = subprocess.run(argv, env=env, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              **kwargs)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{argv[0]} did not finish in {timeout} s\n{explain(exc, recorder)}") from None
    assert done.returncode in ok, f"{argv[0]} exited {done.returncode}\n{explain(done, recorder)}"
    # Captured by pytest; `pytest -rP` shows what each client printed.
    print(f"$ {os.path.basename(str(argv[0]))} (exit {done.returncode})\n{explain(done)}")
    return done


def explain(done, recorder: Recorder | None = None) -> str:
    def text(data) -> str:
        if data is None:
            return ""
        if isinstance(data, bytes):
            data = data.decode("utf-8", "replace")
        return data[-6000:]
    return (f"--- stdout\n{text(done.stdout)}\n--- stderr\n{text(done.stderr)}\n"
            + (recorder.transcript() if recorder is not None else ""))


def maildir_messages(path: Path) -> list[bytes]:
    """The messages (bytes) of a local Maildir, sorted."""
    return sorted(entry.read_bytes() for sub in ("new", "cur") if (path / sub).is_dir()
                  for entry in (path / sub).iterdir())


def maildir_flags(path: Path) -> dict[bytes, str]:
    """Local Maildir: message bytes -> flag letters from its name."""
    result = {}
    for sub in ("new", "cur"):
        for entry in (path / sub).iterdir():
            info = entry.name.partition(":")[2]
            result[entry.read_bytes()] = info[2:] if info.startswith("2,") else ""
    return result


def differences(before: dict, after: dict) -> list[str]:
    """What changed between two tree() snapshots, one line per file."""
    lines = []
    for name in sorted(set(before) | set(after)):
        if name not in after:
            lines.append(f"removed {name}")
        elif name not in before:
            lines.append(f"added {name}: {after[name][:300]!r}")
        elif before[name] != after[name]:
            lines.append(f"changed {name}: {before[name][:300]!r} -> {after[name][:300]!r}")
    return lines
