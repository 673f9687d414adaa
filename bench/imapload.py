"""IMAP load client for the benchmark: raw sockets, replies counted, not parsed.

The client sends one command and reads its answer with as little Python
per octet as it can: the text between literals is scanned in bulk (one
`bytes.count` of " FETCH (" per received piece, one `find` for the tagged
line), and a literal (`{n}` CRLF, then n octets) is skipped by its
announced size, its octets received into a scratch buffer and dropped. So
`UID FETCH 1:* (FLAGS)` over 10,000 messages costs the client a handful of
calls per 64 KiB received, and a 1 MB `BODY[]` a few `recv_into` calls;
every run reports the client's own CPU time beside the wall time, to show
it is not the bottleneck. The octets of a literal not yet received are
dropped by the kernel itself (recv with MSG_TRUNC, which Linux's TCP
supports: nothing is copied to the client), so a 1 MB BODY[] costs the
client little more than the server's writes cost the server.

    python3 imapload.py --port 143 [--fetch "1:* (FLAGS)"] [--select-only]

The benchmark (inside.py) uses `Connection`: login(), select(), fetch(),
idle() and logout().
"""

from __future__ import annotations

import argparse
import json
import socket
import time

RECV = 1 << 20
HEADERS = b"UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (From To Subject Date Message-ID)])"
FLAGS = b"UID FETCH 1:* (FLAGS)"
BODIES = b"UID FETCH 1:* (BODY.PEEK[])"


_DISCARD = getattr(socket, "MSG_TRUNC", 0)


def _no_discard() -> None:
    global _DISCARD
    _DISCARD = 0


class ProtocolError(Exception):
    pass


class Connection:
    """One IMAP connection: a receive buffer and a tag counter."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 60.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self._scratch: bytearray | None = None   # for skipping literals; made when first needed
        self._tags = 0
        self.receives = 0    # recv calls so far: how finely the server cut its output
        self.greeting = self.line()
        if not self.greeting.startswith(b"* OK"):
            raise ProtocolError(f"greeting {self.greeting!r}")

    # -- reading ---------------------------------------------------------------

    def _fill(self) -> None:
        chunk = self.sock.recv(RECV)
        self.receives += 1
        if not chunk:
            raise ProtocolError("connection closed by the server")
        self.buf += chunk

    def line(self) -> bytes:
        """The next line, without its CRLF (for answers without literals)."""
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[:end + 2]
                return line
            self._fill()

    def _tag(self) -> bytes:
        self._tags += 1
        return b"t%d" % self._tags

    def command(self, text: bytes) -> tuple[list, bytes]:
        """Send a command whose answer has no literal; (untagged lines, tagged line)."""
        tag = self._tag()
        self.sock.sendall(tag + b" " + text + b"\r\n")
        lines = []
        while True:
            line = self.line()
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise ProtocolError(f"{text!r}: {line!r}")
                return lines, line
            lines.append(line)

    def _skip(self, count: int) -> None:
        """Drop `count` octets from the stream (the buffer first)."""
        held = min(count, len(self.buf))
        del self.buf[:held]
        count -= held
        if count and self._scratch is None:
            self._scratch = bytearray(RECV)
        view = memoryview(self._scratch) if count else None
        while count > 0:
            try:
                # Linux's TCP discards the octets in the kernel with MSG_TRUNC.
                got = self.sock.recv_into(view, min(count, RECV), _DISCARD)
            except OSError:
                if not _DISCARD:
                    raise
                _no_discard()
                continue
            self.receives += 1
            if not got:
                raise ProtocolError("connection closed inside a literal")
            count -= got

    def fetch(self, text: bytes) -> dict:
        """Send a FETCH; count its FETCH responses and literal octets until
        the tagged OK. Nothing else is parsed."""
        tag = self._tag()
        tagged = b"\r\n" + tag + b" "
        self.sock.sendall(tag + b" " + text + b"\r\n")
        buf = self.buf
        pos = 0              # where the unscanned text starts
        line_start = True    # whether a line starts at pos (not so after a literal)
        responses = literals = literal_octets = 0
        while True:
            limit = buf.rfind(b"\r\n", pos)
            if limit < 0:
                if pos:
                    del buf[:pos]
                    pos = 0
                self._fill()
                continue
            limit += 2
            # The text up to the first literal announced, or to the last
            # whole line received, is scanned at once.
            mark = buf.find(b"}\r\n", pos, limit)
            stop = limit if mark < 0 else mark + 3
            responses += buf.count(b" FETCH (", pos, stop)
            if line_start and buf.startswith(tag + b" ", pos):
                done = pos
            else:
                done = buf.find(tagged, pos, stop)
                done = done + 2 if done >= 0 else -1
            if done >= 0:
                end = buf.find(b"\r\n", done)
                line = bytes(buf[done:end])
                del buf[:end + 2]
                if not line.startswith(tag + b" OK"):
                    raise ProtocolError(f"{text!r}: {line!r}")
                return {"responses": responses, "literals": literals, "literal_octets": literal_octets}
            if mark < 0:
                pos, line_start = limit, True
                continue
            opening = buf.rfind(b"{", pos, mark)
            size = int(bytes(buf[opening + 1:mark]).rstrip(b"+"))
            literals += 1
            literal_octets += size
            # What follows a literal continues its response line.
            line_start = False
            if len(buf) - stop >= size:
                pos = stop + size
            else:
                missing = size - (len(buf) - stop)
                del buf[:]
                self._skip(missing)
                pos = 0
            if pos >= RECV:
                del buf[:pos]
                pos = 0

    # -- commands ----------------------------------------------------------------

    def login(self, user: bytes = b"bench", password: bytes = b"anything") -> None:
        self.command(b"LOGIN " + user + b" " + password)

    def select(self, mailbox: bytes = b"INBOX") -> int:
        """SELECT; the EXISTS count."""
        lines, _ = self.command(b"SELECT " + mailbox)
        for line in lines:
            if line.endswith(b" EXISTS"):
                return int(line.split()[1])
        raise ProtocolError(f"SELECT {mailbox!r}: no EXISTS in {lines!r}")

    def idle(self) -> bytes:
        """Start IDLE; the tag, for done()."""
        tag = self._tag()
        self.sock.sendall(tag + b" IDLE\r\n")
        while True:
            line = self.line()
            if line.startswith(b"+"):
                return tag
            if line.startswith(tag + b" "):
                raise ProtocolError(f"IDLE: {line!r}")

    def done(self, tag: bytes) -> None:
        self.sock.sendall(b"DONE\r\n")
        while True:
            line = self.line()
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise ProtocolError(f"DONE: {line!r}")
                return

    def logout(self) -> None:
        try:
            self.command(b"LOGOUT")
        except (OSError, ProtocolError):
            pass
        self.sock.close()


def timed_fetch(conn: Connection, text: bytes) -> dict:
    """One FETCH, timed: wall and client CPU seconds, messages and octets."""
    receives = conn.receives
    cpu0 = time.process_time()
    started = time.perf_counter()
    counts = conn.fetch(text)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    return {"messages": counts["responses"], "literal_octets": counts["literal_octets"],
            "seconds": seconds, "client_cpu_seconds": cpu, "receives": conn.receives - receives,
            "msg_per_s": counts["responses"] / seconds,
            "mb_per_s": counts["literal_octets"] / seconds / 1e6}


def timed_select(conn: Connection, mailbox: bytes = b"INBOX") -> dict:
    started = time.perf_counter()
    exists = conn.select(mailbox)
    return {"seconds": time.perf_counter() - started, "exists": exists}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=143)
    parser.add_argument("--fetch", help='what follows "UID FETCH", e.g. "1:* (FLAGS)"; '
                                        "default: the header fetch")
    parser.add_argument("--select-only", action="store_true")
    args = parser.parse_args()
    conn = Connection(args.port, args.host)
    conn.login()
    result = {"select": timed_select(conn)}
    if not args.select_only:
        command = b"UID FETCH " + args.fetch.encode() if args.fetch else HEADERS
        result["fetch"] = timed_fetch(conn, command)
    conn.logout()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
