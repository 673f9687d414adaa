"""The disk reserve: new mail is refused for now while the Maildir's file
system has less free space than `[baremail] disk_reserve`.

/var usually shares its file system with the rest of the machine: mail
that filled it would make other services fail too, and the one message
that mattered (the disk-full alert) would be refused anyway, by a full
disk. So mail stops a little earlier, with a temporary reply senders retry
(SMTP 452 4.3.1, IMAP NO [OVERQUOTA]), and flows again by itself as soon as
space is back (retention, baremail-expire, frees it daily).

The default, 1 % of the file system, scales with it: a file system of a
few megabytes that is nearly empty still takes mail (its reserve is tens
of kilobytes); one with well under 1 % free does not.
"""

from __future__ import annotations

import logging
import os
import time

from .config import Amount
from .journal import fields

log = logging.getLogger("baremail")

_RECHECK = 1.0   # seconds a look at the free space is trusted for
# Further than this from the reserve, a message is let through on the last
# look (at most a second old): no system call per message when there is room.
_MARGIN = 256 * 1024 * 1024


class DiskReserve:
    """Free space of the file system holding `path`, against `amount`."""

    def __init__(self, path: str, amount: Amount, clock=time.monotonic):
        self.path = path
        self.amount = amount
        self._clock = clock
        self._checked = -1e9
        self._low = False
        self.free = 0
        self.reserve = 0

    def _look(self) -> None:
        # The Maildir may not exist yet (it is made at the first delivery):
        # its nearest existing parent is on the same file system.
        path = self.path
        while not os.path.exists(path) and os.path.dirname(path) != path:
            path = os.path.dirname(path)
        try:
            stat = os.statvfs(path)
        except OSError:
            # A Maildir that cannot be used says so when it is used.
            self._low, self.free, self.reserve = False, 1 << 62, 0
            return
        size = stat.f_blocks * stat.f_frsize
        self.free = stat.f_bavail * stat.f_frsize
        self.reserve = self.amount.octets(size)
        low = self.free < self.reserve
        if low and not self._low:
            # Once per episode, not once per refused message.
            log.warning("only %s free on the Maildir's file system (reserve %s, disk_reserve = %s): "
                        "refusing new mail until space is freed", _size(self.free), _size(self.reserve),
                        self.amount, extra=fields(FREE=self.free, RESERVE=self.reserve))
        elif self._low and not low:
            log.info("%s free on the Maildir's file system again: accepting mail", _size(self.free),
                     extra=fields(FREE=self.free, RESERVE=self.reserve))
        self._low = low

    @property
    def low(self) -> bool:
        """True while new mail must be refused (looked at at most once a second)."""
        if not self.amount.value:
            return False   # disk_reserve = 0: off
        now = self._clock()
        if now - self._checked >= _RECHECK:
            self._checked = now
            self._look()
        return self._low

    def fits(self, size: int) -> bool:
        """Whether a message of `size` octets leaves the reserve intact
        (looked at now)."""
        if not self.amount.value:
            return True    # disk_reserve = 0: off
        if self.low:       # looked at within the last second
            return False
        if self.free - size - self.reserve > _MARGIN:
            return True    # far from the reserve: the last look will do
        self._checked = self._clock()
        self._look()
        return not self._low and self.free - size >= self.reserve


def _size(octets: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if octets < 1024 or unit == "GiB":
            return f"{octets:.0f} {unit}" if unit == "bytes" else f"{octets:.1f} {unit}"
        octets /= 1024
    return f"{octets:.1f} TiB"
