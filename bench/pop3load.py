"""POP3 load clients for the benchmark: a pipelining one that only counts
octets, and a plain poplib one for comparison.

The pipelining client logs in, then asks for every message with RETR
commands sent in batches (RFC 2449 PIPELINING): one write of `batch`
commands, and the next batch is written as soon as the one before the
previous has been answered in full, so the server never waits for the
client. Replies are not parsed beyond finding where each ends: the status
line's CRLF, then the CRLF "." CRLF that closes the multi-line body
(byte-stuffing guarantees that sequence appears nowhere else). That is a
couple of bytes.find() calls per message on a large receive buffer, so the
client spends little CPU per octet; `run_pipelined` reports the client's
own CPU time beside the wall time to show it is not the bottleneck.

Usable on its own:
    python3 pop3load.py --port 110 [--batch 50] [--poplib]
"""

from __future__ import annotations

import argparse
import json
import poplib
import socket
import time

RECV = 1 << 20


class ProtocolError(Exception):
    pass


def _cpu() -> float:
    return time.process_time()


class Connection:
    """A raw POP3 connection with a receive buffer."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 60.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def line(self) -> bytes:
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[:end + 2]
                return line
            self._fill()

    def _fill(self) -> None:
        chunk = self.sock.recv(RECV)
        if not chunk:
            raise ProtocolError("connection closed by the server")
        self.buf += chunk

    def command(self, text: bytes) -> bytes:
        self.sock.sendall(text + b"\r\n")
        reply = self.line()
        if not reply.startswith(b"+OK"):
            raise ProtocolError(f"{text!r}: {reply!r}")
        return reply

    def login(self, user: bytes = b"bench", password: bytes = b"anything") -> tuple[int, int]:
        greeting = self.line()
        if not greeting.startswith(b"+OK"):
            raise ProtocolError(f"greeting {greeting!r}")
        self.command(b"USER " + user)
        self.command(b"PASS " + password)
        stat = self.command(b"STAT").split()
        return int(stat[1]), int(stat[2])

    def quit(self) -> None:
        try:
            self.sock.sendall(b"QUIT\r\n")
            self.line()
        except (OSError, ProtocolError):
            pass
        self.sock.close()

    def read_multiline(self) -> int:
        """Skip one multi-line reply (status line already due); its body octets."""
        buf = self.buf
        while True:
            end = buf.find(b"\r\n")
            if end >= 0:
                break
            self._fill()
            buf = self.buf
        if not buf.startswith(b"+OK"):
            raise ProtocolError(f"RETR: {bytes(buf[:end])!r}")
        body = end + 2
        # The terminator's CRLF may be the status line's own (empty body).
        start = end
        while True:
            stop = buf.find(b"\r\n.\r\n", start)
            if stop >= 0:
                break
            start = max(end, len(buf) - 4)
            self._fill()
            buf = self.buf
        octets = stop + 2 - body
        del buf[:stop + 5]
        return max(octets, 0)


def run_pipelined(port: int, batch: int = 50, window: int = 2, first: int = 1,
                  last: int | None = None, host: str = "127.0.0.1") -> dict:
    """RETR every message (or first..last), `batch` commands per write with
    up to `window` batches unanswered. Returns counts and timings."""
    started = time.perf_counter()
    cpu0 = _cpu()
    conn = Connection(port, host)
    count, _ = conn.login()
    last = count if last is None else last
    numbers = list(range(first, last + 1))
    batches = [b"".join(b"RETR %d\r\n" % n for n in numbers[i:i + batch])
               for i in range(0, len(numbers), batch)]
    sizes = [len(numbers[i:i + batch]) for i in range(0, len(numbers), batch)]
    logged_in = time.perf_counter()
    sent = 0
    octets = 0
    messages = 0
    for index in range(len(batches)):
        while sent < len(batches) and sent < index + window:
            conn.sock.sendall(batches[sent])
            sent += 1
        for _ in range(sizes[index]):
            octets += conn.read_multiline()
            messages += 1
    done = time.perf_counter()
    cpu = _cpu() - cpu0
    conn.quit()
    seconds = done - logged_in
    return {"messages": messages, "octets": octets, "seconds": seconds,
            "login_seconds": logged_in - started, "client_cpu_seconds": cpu,
            "msg_per_s": messages / seconds, "mb_per_s": octets / seconds / 1e6}


def run_poplib(port: int, host: str = "127.0.0.1") -> dict:
    """The plain way: poplib, one RETR at a time, every line split out."""
    started = time.perf_counter()
    cpu0 = _cpu()
    client = poplib.POP3(host, port, timeout=60)
    client.user("bench")
    client.pass_("anything")
    count, _ = client.stat()
    logged_in = time.perf_counter()
    octets = 0
    for number in range(1, count + 1):
        _, lines, size = client.retr(number)
        octets += size
    done = time.perf_counter()
    cpu = _cpu() - cpu0
    client.quit()
    seconds = done - logged_in
    return {"messages": count, "octets": octets, "seconds": seconds,
            "login_seconds": logged_in - started, "client_cpu_seconds": cpu,
            "msg_per_s": count / seconds, "mb_per_s": octets / seconds / 1e6}


def login_stat(port: int, host: str = "127.0.0.1") -> dict:
    """Connect, greeting, USER, PASS, STAT: the time until STAT's answer."""
    started = time.perf_counter()
    conn = Connection(port, host)
    count, octets = conn.login()
    seconds = time.perf_counter() - started
    conn.quit()
    return {"seconds": seconds, "messages": count, "octets": octets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=110)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--window", type=int, default=2)
    parser.add_argument("--poplib", action="store_true", help="use the plain poplib client")
    args = parser.parse_args()
    if args.poplib:
        result = run_poplib(args.port, args.host)
    else:
        result = run_pipelined(args.port, args.batch, args.window, host=args.host)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
