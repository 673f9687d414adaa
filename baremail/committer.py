"""Durable commits off the event loop: one thread commits, a few help it fsync.

smtpd hands it every message of an SMTP DATA, imapd every APPEND: both go
through Maildir.commit_all(), the one durable delivery path.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading

from .maildir import Delivery, MaildirError

log = logging.getLogger("baremail")

# fsyncs of one batch in flight together: on ext4 four together commit
# about 1.7 times as many files per second as one after another; more add
# nothing there and cost thread handoffs.
_FSYNC_THREADS = 4


class Committer:
    """Makes deliveries durable in a thread of its own, a batch at a time.

    Every delivery handed over while a batch is being written joins the
    next batch, which then shares one fsync of new/ (group commit), and the
    event loop hears of a whole batch through one wake-up. One thread, not
    one per session: threads that each wake up for a few system calls spend
    more time handing the GIL to each other (futex calls, in the kernel)
    than the disk takes. Only a batch's fsyncs, which wait for the disk,
    go to a few helper threads at once."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._lock = threading.Lock()
        self._waiting = threading.Condition(self._lock)
        self._queue: list = []
        self._thread: threading.Thread | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def commit(self, delivery: Delivery, done) -> None:
        """Commit `delivery` soon; then `done(key or MaildirError)` runs on the loop."""
        with self._lock:
            self._queue.append((delivery, done))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="commit", daemon=True)
                self._thread.start()
            else:
                self._waiting.notify()

    def _each(self, count: int):
        # A lone message gains nothing from helpers. A batch has its
        # fsyncs issued together (they release the GIL): the file system
        # then commits them in shared journal transactions.
        # Only the committing thread gets here: no lock needed.
        if count < 2:
            return map
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(_FSYNC_THREADS, "fsync")
        return self._pool.map

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._waiting.wait()
                batch, self._queue = self._queue, []
            outcomes = {}
            by_maildir: dict = {}
            for delivery, _ in batch:
                by_maildir.setdefault(delivery.maildir, []).append(delivery)
            for maildir, deliveries in by_maildir.items():
                try:
                    results = maildir.commit_all(deliveries, self._each(len(deliveries)))
                except Exception as exc:   # a bug; still answer every client
                    log.exception("committing %d message(s) failed", len(deliveries))
                    results = [MaildirError(f"cannot store a message: {exc}")] * len(deliveries)
                outcomes.update(zip(map(id, deliveries), results))
            try:
                self._loop.call_soon_threadsafe(self._finished, batch, outcomes)
            except RuntimeError:
                return   # the loop is closed: the service is exiting

    @staticmethod
    def _finished(batch: list, outcomes: dict) -> None:
        for delivery, done in batch:
            done(outcomes[id(delivery)])


_shared: Committer | None = None


def shared() -> Committer:
    """The process's one Committer (made at the first use, on the running loop)."""
    global _shared
    if _shared is None:
        _shared = Committer(asyncio.get_running_loop())
    return _shared
