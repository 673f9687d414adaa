"""baremail-smtp: performs the SMTP engine's events against the Maildir."""

from __future__ import annotations

import asyncio
import logging

from . import smtp
from .journal import fields
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
    def busy(self) -> bool:
        return self.engine is not None and self.engine.in_data

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
        # fsync takes milliseconds: run it off the event loop so that other
        # sessions keep being served, and read nothing more from this client
        # until its message is durable and answered.
        self.pause()
        future = asyncio.get_running_loop().run_in_executor(None, delivery.commit)
        future.add_done_callback(lambda done: self._committed(done, delivery))

    def _committed(self, done: asyncio.Future, delivery: Delivery) -> None:
        try:
            key = done.result()
        except MaildirError as exc:
            self._fail(exc)
            self._reply_failure()
        else:
            self._log_delivery(key, delivery)
            self.server.count("accepted")
            self._perform(self.engine.message_stored(key))
        self.resume()
        self.server.stop_if_idle(self)

    def _reply_failure(self) -> None:
        reason = "disk_full" if self._failure is not None and self._failure.disk_full else "io"
        self._failure = None
        self._perform(self.engine.message_failed(reason))

    def _log_delivery(self, key: str, delivery: Delivery) -> None:
        envelope = self._envelope
        sender = envelope.mail_from
        recipients = ",".join(f"<{rcpt}>" for rcpt in envelope.rcpt_to)
        log.info("delivered %s from=<%s> to=%s size=%d peer=%s", key, sender, recipients,
                 delivery.wire_size, self.peer,
                 extra=fields(MAILID=key, FROM=sender, RCPT=" ".join(envelope.rcpt_to),
                              SIZE=delivery.wire_size, PEER=self.peer, LISTENER=self.listener))


def make_server(load_config) -> Server:
    return Server("baremail-smtp", load_config, SMTPConnection, lambda config: config.smtp_listen)
