"""baremail-smtp: performs the SMTP engine's events against the Maildir."""

from __future__ import annotations

import logging

from . import smtp
from . import committer
from .journal import fields, mail_event
from .maildir import Delivery, MaildirError
from .service import Server, Session

log = logging.getLogger("baremail-smtp")


class SMTPConnection(Session):
    engine_class = smtp.SMTPSession
    takes_mail = True
    def __init__(self, server: Server, listener: str):
        super().__init__(server, listener)
        self._delivery: Delivery | None = None
        self._failure: MaildirError | None = None
        self._envelope: smtp.Envelope | None = None

    @staticmethod
    def listen(config) -> tuple:
        return config.smtp_listen

    def make_engine(self) -> smtp.SMTPSession:
        config = self.config
        return smtp.SMTPSession(config.host_name, peer=self.peer,
                                max_message_size=config.max_message_size,
                                max_recipients=config.max_recipients,
                                storage=self.server.maildir.reserve)

    def timeout_seconds(self) -> float:
        if self.engine is not None and self.engine.in_data:
            return self.config.data_timeout
        return self.config.command_timeout

    def lost_work(self) -> None:
        self._drop_delivery()

    def lost(self) -> None:
        if self._delivery is not None:
            log.info("connection from %s lost during DATA: nothing stored", self.peer,
                     extra=fields(PEER=self.peer))
        self._drop_delivery()

    # -- events -----------------------------------------------------------

    def _start(self, event: smtp.StartMessage) -> None:
        envelope = event.envelope
        self._envelope = envelope
        self._failure = None
        try:
            self._delivery = self.server.maildir.get().begin()
        except MaildirError as exc:
            self._fail(exc)

    def _write(self, event: smtp.MessageData) -> None:
        if self._delivery is None:
            return
        try:
            self._delivery.write(event.data)
        except MaildirError as exc:
            self._delivery = None  # write() already removed the file
            self._fail(exc)

    def _fail(self, exc: MaildirError) -> None:
        if self._failure is None:
            self._failure = exc
            log.error("cannot store message from %s: %s", self.peer, exc,
                      extra=fields(PEER=self.peer))

    def _abort(self, event: smtp.AbortMessage) -> None:
        self._drop_delivery()

    def _drop_delivery(self) -> None:
        if self._delivery is not None:
            self._delivery.abort()
            self._delivery = None

    def _commit(self, event: smtp.EndMessage) -> None:
        delivery, self._delivery = self._delivery, None
        if delivery is None:
            self._reply_failure()
            return
        if not self.server.maildir.reserve.fits(delivery.wire_size):
            delivery.abort()
            log.info("refused a message of %d octets from %s: it would take the free disk space "
                     "below disk_reserve", delivery.wire_size, self.peer, extra=fields(PEER=self.peer))
            self._failure = MaildirError("below the disk reserve", disk_full=True)
            self._reply_failure()
            return
        # fsync takes milliseconds: the committer does it off the event loop
        # so that other sessions keep being served; nothing more is read
        # from this client until its message is durable and answered.
        self.pause()
        committer.shared().commit(delivery, lambda outcome: self._committed(outcome, delivery))

    def _committed(self, outcome, delivery: Delivery) -> None:
        if isinstance(outcome, MaildirError):
            self._fail(outcome)
            self._reply_failure()
        else:
            self._log_delivery(outcome, delivery)
            self.server.count("accepted")
            self.perform(self.engine.message_stored(outcome))
        self.resume()

    def _reply_failure(self) -> None:
        reason = "disk_full" if self._failure is not None and self._failure.disk_full else "io"
        self._failure = None
        self.perform(self.engine.message_failed(reason))

    handlers = {smtp.StartMessage: _start, smtp.MessageData: _write, smtp.EndMessage: _commit,
                smtp.AbortMessage: _abort}

    def _log_delivery(self, key: str, delivery: Delivery) -> None:
        envelope = self._envelope
        sender = envelope.mail_from
        recipients = ",".join(f"<{rcpt}>" for rcpt in envelope.rcpt_to)
        mail_event(log, f"delivered {key} from=<{sender}> to={recipients} "
                        f"size={delivery.wire_size} peer={self.peer}",
                   MAILID=key, FROM=sender, RCPT=" ".join(envelope.rcpt_to),
                   SIZE=delivery.wire_size, PEER=self.peer, LISTENER=self.listener)
