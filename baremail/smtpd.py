"""baremail-smtp: performs the SMTP engine's events against the Maildir."""

from __future__ import annotations

import asyncio
import logging
import threading

from . import smtp
from .journal import fields, mail_event
from .maildir import Delivery, MaildirError
from .service import Server, Session

log = logging.getLogger("baremail-smtp")

_COMMAND_PIECE = 4096


class SMTPConnection(Session):
    def __init__(self, server: Server, listener: str):
        super().__init__(server, listener)
        self.engine: smtp.SMTPSession | None = None
        self._delivery: Delivery | None = None
        self._failure: MaildirError | None = None
        self._envelope: smtp.Envelope | None = None

    def refusal(self) -> bytes:
        return f"421 4.3.2 {self.config.host_name} Too many sessions, try again later\r\n".encode()

    def timeout_seconds(self) -> float:
        if self.engine is not None and self.engine.in_data:
            return self.config.data_timeout
        return self.config.command_timeout

    @property
    def at_rest(self) -> bool:
        return self.engine is None or self.engine.at_rest

    def begin(self) -> None:
        config = self.config
        self.engine = smtp.SMTPSession(config.host_name, peer=self.peer,
                                       max_message_size=config.max_message_size,
                                       max_recipients=config.max_recipients)
        self._perform(self.engine.start())

    def feed(self, data: bytes) -> None:
        self._perform(self.engine.receive(data))

    def piece_size(self, held) -> int:
        # Message data is never answered until its end; a command line is
        # answered by at most ~50 times its size (an empty line gets a 500),
        # so commands go in by the few kilobytes.
        if self.engine is not None and self.engine.in_data:
            return len(held)
        return min(len(held), _COMMAND_PIECE)

    def expire(self) -> None:
        self._drop_delivery()
        self._perform(self.engine.timeout())

    def stop(self) -> None:
        self._drop_delivery()
        if self.engine is not None:
            self._perform(self.engine.shutdown())
        else:
            self.close()

    def lost(self) -> None:
        if self._delivery is not None:
            log.info("connection from %s lost during DATA: nothing stored", self.peer,
                     extra=fields(PEER=self.peer))
        self._drop_delivery()

    # -- events -----------------------------------------------------------

    def _perform(self, events: list) -> None:
        for event in events:
            kind = type(event)
            if kind is smtp.Send:
                self.write(event.data)
            elif kind is smtp.MessageData:
                self._write(event.data)
            elif kind is smtp.StartMessage:
                self._start(event.envelope)
            elif kind is smtp.EndMessage:
                self._commit()
            elif kind is smtp.AbortMessage:
                self._drop_delivery()
            elif kind is smtp.Close:
                self.close()

    def _start(self, envelope: smtp.Envelope) -> None:
        self._envelope = envelope
        self._failure = None
        try:
            self._delivery = self.server.maildir.get().begin()
        except MaildirError as exc:
            self._fail(exc)

    def _write(self, data: bytes) -> None:
        if self._delivery is None:
            return
        try:
            self._delivery.write(data)
        except MaildirError as exc:
            self._delivery = None  # write() already removed the file
            self._fail(exc)

    def _fail(self, exc: MaildirError) -> None:
        if self._failure is None:
            self._failure = exc
            log.error("cannot store message from %s: %s", self.peer, exc,
                      extra=fields(PEER=self.peer))

    def _drop_delivery(self) -> None:
        if self._delivery is not None:
            self._delivery.abort()
            self._delivery = None

    def _commit(self) -> None:
        delivery, self._delivery = self._delivery, None
        if delivery is None:
            self._reply_failure()
            return
        # fsync takes milliseconds: the committer does it off the event loop
        # so that other sessions keep being served; nothing more is read
        # from this client until its message is durable and answered.
        self.pause()
        committer = self.server.committer
        if committer is None:
            committer = self.server.committer = Committer(asyncio.get_running_loop())
        committer.commit(delivery, lambda outcome: self._committed(outcome, delivery))

    def _committed(self, outcome, delivery: Delivery) -> None:
        if isinstance(outcome, MaildirError):
            self._fail(outcome)
            self._reply_failure()
        else:
            self._log_delivery(outcome, delivery)
            self.server.count("accepted")
            self._perform(self.engine.message_stored(outcome))
        self.resume()

    def _reply_failure(self) -> None:
        reason = "disk_full" if self._failure is not None and self._failure.disk_full else "io"
        self._failure = None
        self._perform(self.engine.message_failed(reason))

    def _log_delivery(self, key: str, delivery: Delivery) -> None:
        envelope = self._envelope
        sender = envelope.mail_from
        recipients = ",".join(f"<{rcpt}>" for rcpt in envelope.rcpt_to)
        mail_event(log, f"delivered {key} from=<{sender}> to={recipients} "
                        f"size={delivery.wire_size} peer={self.peer}",
                   MAILID=key, FROM=sender, RCPT=" ".join(envelope.rcpt_to),
                   SIZE=delivery.wire_size, PEER=self.peer, LISTENER=self.listener)


class Committer:
    """Makes deliveries durable in a thread of its own, a batch at a time.

    Every delivery handed over while a batch is being written joins the
    next batch, which then shares one fsync of new/ (group commit), and the
    event loop hears of a whole batch through one wake-up. One thread, not
    one per session: threads that each wake up for a few system calls spend
    more time handing the GIL to each other (futex calls, in the kernel)
    than the disk takes."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._lock = threading.Lock()
        self._waiting = threading.Condition(self._lock)
        self._queue: list = []
        self._thread: threading.Thread | None = None

    def commit(self, delivery: Delivery, done) -> None:
        """Commit `delivery` soon; then `done(key or MaildirError)` runs on the loop."""
        with self._lock:
            self._queue.append((delivery, done))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="commit", daemon=True)
                self._thread.start()
            else:
                self._waiting.notify()

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
                    results = maildir.commit_all(deliveries)
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


def make_server(load_config) -> Server:
    return Server("baremail-smtp", load_config, SMTPConnection, lambda config: config.smtp_listen)
