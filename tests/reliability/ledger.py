"""Test messages that prove their own completeness, and the suite's ledger.

Every message a reliability test sends starts with an id header and ends with
a trailer line giving the length and SHA-256 of everything from the id header
up to the trailer, in the stored (LF) form. A file is complete exactly when
its trailer checks out, so an audit of a Maildir needs no record of what was
sent to find a partial file, and no file can pass for another.

    X-Reliability-Id: <id>
    Subject: ...
    <body lines, some starting with "." to exercise dot-stuffing>
    X-Reliability-Trailer: <id> <length> <sha256>
"""

from __future__ import annotations

import hashlib
import random
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ID_HEADER = b"X-Reliability-Id: "
TRAILER = b"X-Reliability-Trailer: "
_LETTERS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "


def make_message(size: int = 2000, seed: int | None = None) -> tuple[str, bytes]:
    """A new message of about `size` octets: (id, message with LF line ends)."""
    rng = random.Random(seed)
    mid = uuid.uuid4().hex
    lines = [ID_HEADER + mid.encode(), b"Subject: reliability probe " + mid[:8].encode(),
             b"From: <probe@test.example>", b""]
    total = sum(len(line) + 1 for line in lines)
    number = 0
    while total < size:
        number += 1
        line = bytes(rng.choice(_LETTERS) for _ in range(rng.randint(0, 76)))
        if number % 7 == 0:
            line = b"." + line      # the client must stuff it, the server unstuff it
        lines.append(line)
        total += len(line) + 1
    text = b"\n".join(lines) + b"\n"
    digest = hashlib.sha256(text).hexdigest()
    return mid, text + TRAILER + f"{mid} {len(text)} {digest}".encode() + b"\n"


def data_section(message: bytes) -> bytes:
    """What a client sends after DATA's 354: CRLF, dot-stuffed, terminated."""
    lines = message.split(b"\n")[:-1]
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n"
                    for line in lines) + b".\r\n"


def check(stored: bytes) -> tuple[str | None, bool]:
    """(id, complete) for a stored file or a retrieved message in LF form."""
    start = stored.find(ID_HEADER)
    if start < 0:
        return None, False
    end = stored.find(b"\n", start)
    mid = stored[start + len(ID_HEADER):end].decode(errors="replace")
    cut = stored.rfind(b"\n" + TRAILER)
    if cut < 0 or not stored.endswith(b"\n"):
        return mid, False
    fields = stored[cut + 1 + len(TRAILER):-1].split()
    if len(fields) != 3 or fields[0].decode(errors="replace") != mid:
        return mid, False
    text = stored[start:cut + 1]
    return mid, len(text) == int(fields[1]) and hashlib.sha256(text).hexdigest() == fields[2].decode()


@dataclass
class Audit:
    """What a Maildir holds, checked file by file."""

    copies: Counter = field(default_factory=Counter)      # id -> complete copies in new/ + cur/
    partial: list = field(default_factory=list)           # incomplete files in new/ or cur/
    tmp_files: list = field(default_factory=list)         # leftovers in tmp/ (allowed after a kill)


def audit_maildir(maildir: Path) -> Audit:
    audit = Audit()
    for sub in ("new", "cur"):
        directory = Path(maildir) / sub
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            mid, complete = check(path.read_bytes())
            if complete:
                audit.copies[mid] += 1
            else:
                audit.partial.append(str(path))
    tmp = Path(maildir) / "tmp"
    if tmp.is_dir():
        audit.tmp_files = sorted(str(path) for path in tmp.iterdir())
    return audit


COLUMNS = ("sent", "acknowledged", "stored", "stored without ack", "duplicated", "lost",
           "sessions refused", "peak RSS (KiB)")


class Ledger:
    """Totals across the reliability suite, one row per test module."""

    def __init__(self):
        self.rows: dict[str, Counter] = {}
        self.notes: list[str] = []      # figures worth a line under the table
        self._lock = threading.Lock()

    def note(self, text: str) -> None:
        with self._lock:
            self.notes.append(text)

    def add(self, area: str, **counts: int) -> None:
        with self._lock:
            row = self.rows.setdefault(area, Counter())
            for name, value in counts.items():
                row[name.replace("_", " ")] += value

    def peak_rss(self, area: str, kib: int) -> None:
        with self._lock:
            row = self.rows.setdefault(area, Counter())
            row["peak RSS (KiB)"] = max(row["peak RSS (KiB)"], kib)

    def totals(self) -> Counter:
        total = Counter()
        for row in self.rows.values():
            for name in COLUMNS:
                if name == "peak RSS (KiB)":
                    total[name] = max(total[name], row[name])
                else:
                    total[name] += row[name]
        return total

    def table(self) -> list[str]:
        width = max([len("total")] + [len(area) for area in self.rows])
        header = f"{'':{width}}  " + "  ".join(f"{name:>{max(len(name), 6)}}" for name in COLUMNS)
        lines = [header]
        rows = list(sorted(self.rows.items())) + [("total", self.totals())]
        for area, row in rows:
            lines.append(f"{area:{width}}  " + "  ".join(
                f"{row[name]:>{max(len(name), 6)}}" for name in COLUMNS))
        return lines + self.notes


LEDGER = Ledger()


class Outbox:
    """The messages one test sends, and what became of them.

    `settle(maildir)` compares them with the Maildir: a message acknowledged
    with 250 must be there exactly once (unless the test deleted it through
    POP3); a message refused (4xx/5xx) must not be there; a message whose
    SMTP session died before its reply may be there at most once, which is
    counted as "stored without ack" (only when `unacknowledged_may_exist`).
    No file in new/ or cur/ may be partial. Raises AssertionError otherwise,
    after adding the counts to the ledger, so a failure is in the table too.
    """

    def __init__(self, ledger: Ledger, area: str, test: str):
        self.ledger = ledger
        self.area = area
        self.test = test
        self.messages: dict[str, bytes] = {}
        self.acknowledged: set[str] = set()
        self.refused: set[str] = set()
        self.deleted: set[str] = set()
        self._settled = False
        self._lock = threading.Lock()

    def new(self, size: int = 2000) -> tuple[str, bytes]:
        mid, message = make_message(size)
        with self._lock:
            self.messages[mid] = message
        return mid, message

    def ack(self, mid: str) -> None:
        with self._lock:
            self.acknowledged.add(mid)

    def refuse(self, mid: str) -> None:
        with self._lock:
            self.refused.add(mid)

    def sessions_refused(self, count: int) -> None:
        self.ledger.add(self.area, sessions_refused=count)

    def rss(self, kib: int) -> None:
        self.ledger.peak_rss(self.area, kib)

    def settle(self, maildir: Path, unacknowledged_may_exist: bool = False) -> Audit:
        assert not self._settled, "settle() twice would count messages twice"
        self._settled = True
        audit = audit_maildir(maildir)
        problems = [f"partial file {path}" for path in audit.partial]
        unknown = set(audit.copies) - set(self.messages)
        problems += [f"a message nobody sent: {mid}" for mid in sorted(unknown)]
        stored = without_ack = duplicated = lost = 0
        for mid in self.messages:
            copies = audit.copies[mid]
            # A message the test itself deleted over POP3 (after checking
            # it arrived whole) was stored, even though it is gone now.
            stored += 1 if copies or mid in self.deleted else 0
            if copies > 1:
                duplicated += 1
                problems.append(f"{mid} stored {copies} times")
            if mid in self.acknowledged:
                if copies == 0 and mid not in self.deleted:
                    lost += 1
                    problems.append(f"{mid} acknowledged with 250 but not in the Maildir")
            elif copies:
                without_ack += 1
                if mid in self.refused or not unacknowledged_may_exist:
                    problems.append(f"{mid} stored although the client was refused or never told")
        self.ledger.add(self.area, sent=len(self.messages), acknowledged=len(self.acknowledged),
                        stored=stored, stored_without_ack=without_ack, duplicated=duplicated,
                        lost=lost)
        assert not problems, f"{self.test}: " + "; ".join(problems)
        return audit


def wire_to_lf(wire: bytes) -> bytes:
    return wire.replace(b"\r\n", b"\n")
