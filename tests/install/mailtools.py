"""Helpers for the container tests: they run commands in a booted `Container`
(probe a port, read all mail over POP3, ask systemd, run apt, read the
journal)."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path

import pytest

from container import POP3_PORT, Container

# Connects, reads the greeting, says QUIT (both protocols have it), prints the greeting.
PROBE = r"""
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30) as s:
    f = s.makefile("rb")
    greeting = f.readline()
    s.sendall(b"QUIT\r\n")
    f.readline()
print(greeting.decode().strip())
"""

# Every message over POP3 (nothing deleted), as JSON: uidl -> base64 of the
# message with CRLF line ends, exactly as a client reassembles it.
POP3_DUMP = r"""
import base64, json, poplib, sys
p = poplib.POP3(sys.argv[1], int(sys.argv[2]), timeout=30)
p.user("root")
p.pass_("anything")
count, _ = p.stat()
uidls = dict(line.decode().split(" ", 1) for line in p.uidl()[1])
messages = {}
for number in range(1, count + 1):
    lines = p.retr(number)[1]
    messages[uidls[str(number)]] = base64.b64encode(b"\r\n".join(lines) + b"\r\n").decode()
p.quit()
print(json.dumps(messages))
"""


def probe(box: Container, host: str, port: int) -> str:
    return box.run("python3", "-c", PROBE, host, str(port)).stdout.strip()


def pop3_messages(box: Container, host: str = "127.0.0.1") -> dict:
    out = box.run("python3", "-c", POP3_DUMP, host, str(POP3_PORT)).stdout
    return {uidl: base64.b64decode(data) for uidl, data in json.loads(out).items()}


def enabled(box: Container, unit: str) -> str:
    return box.run("systemctl", "is-enabled", unit, check=False).stdout.strip()


def show(box: Container, unit: str, prop: str) -> str:
    return box.run("systemctl", "show", "-P", prop, unit).stdout.strip()


def wait_for(condition, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def listening(box: Container) -> set:
    out = box.run("ss", "-Hltn").stdout
    return {line.split()[3] for line in out.splitlines() if line.strip()}


def apt(box: Container, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return box.run("apt-get", "-y", "-q", *args, check=check, timeout=300)


def stored_keys(box: Container) -> set:
    """Keys (= UIDLs) of the stored messages; a key survives the new/ -> cur/ move."""
    out = box.sh("cd /var/lib/baremail/Maildir && find new cur -type f").stdout
    return {Path(path).name.split(":")[0] for path in out.split()}


def installed_status(box: Container) -> str:
    return box.run("dpkg-query", "-W", "-f=${Status}", "baremail", check=False).stdout


def journal(box: Container, *args: str) -> list:
    out = box.run("journalctl", "--no-pager", "-o", "cat", *args).stdout
    return [line for line in out.splitlines() if line.strip()]
