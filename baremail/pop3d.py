"""baremail-pop3: performs the POP3 engine's events against the Maildir."""

from __future__ import annotations

import asyncio
import logging

from . import pop3
from .journal import fields, mail_event
from .maildir import MaildirError
from .service import Server, Session

log = logging.getLogger("baremail-pop3")

# Messages up to this size are sent in one write without leaving the event
# loop's callback; larger ones are streamed with flow control.
_SMALL = 1 << 18
_CHUNK = 1 << 18


class POP3Connection(Session):
    engine_class = pop3.POP3Session

    def __init__(self, server: Server, listener: str):
        super().__init__(server, listener)
        self._deleted = 0
        self._task: asyncio.Task | None = None
        # Messages retrieved in full, marked \Seen at QUIT (or when the
        # session ends otherwise): one rename each, out of the way of the
        # RETR replies, and none for the messages the session deletes.
        self._to_mark: list = []
        self._removed: set = set()

    @staticmethod
    def listen(config) -> tuple:
        return config.pop3_listen

    def make_engine(self) -> pop3.POP3Session:
        return pop3.POP3Session(self.config.host_name, open_mailbox=self._snapshot)

    def timeout_seconds(self) -> float:
        return self.config.pop3_timeout

    def lost(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._mark_seen()
        # The one line per session (issue 15's decision): what an admin needs
        # to know of a mail client's visit, without a journal entry per
        # message retrieved. Deletions still get a line each (_update).
        engine = self.engine
        user = engine.user if engine.user is not None else "-"
        log.info("session from %s ended (%s): user %s, retrieved %d (%d octets), deleted %d",
                 self.peer, engine.ended_by, user, engine.retrieved_count, engine.retrieved_octets,
                 self._deleted,
                 extra=fields(PEER=self.peer, USER=user, ENDED=engine.ended_by,
                              RETRIEVED=engine.retrieved_count, OCTETS=engine.retrieved_octets,
                              DELETED=self._deleted, LISTENER=self.listener))

    # -- events -----------------------------------------------------------

    def _snapshot(self) -> list:
        # The engine calls this once, on entering TRANSACTION. A broken
        # Maildir shows as an empty one; the journal says why.
        try:
            maildir = self.server.maildir.get()
            maildir.clean_tmp()
            return maildir.snapshot()
        except MaildirError as exc:
            log.error("cannot list the Maildir for %s: %s", self.peer, exc, extra=fields(PEER=self.peer))
            return []

    def _retrieve(self, event: pop3.Retrieve) -> list:
        """Perform a Retrieve; the engine's next events if it finished at once."""
        message = event.message
        try:
            maildir = self.server.maildir.get()
            if message.size <= _SMALL and not self.backlogged:
                # Small, and the client keeps up: the whole reply at once.
                wire = maildir.read_wire(message)
                if wire is not None:
                    if event.lines is None:
                        self.write(event.ok_reply + pop3.stuff_message(wire))
                    else:
                        encoder = pop3.MultilineEncoder(event.lines)
                        self.write(event.ok_reply + encoder.feed(wire) + encoder.finish())
                    return self._retrieved_ok(event)
            reader = maildir.open_wire(message)
        except MaildirError:
            self.write(event.missing_reply)
            return self.engine.retrieved(False)
        # Big, or the client is behind with reading: stream with flow control.
        self.pause()
        self._task = asyncio.get_running_loop().create_task(self._stream(event, reader))
        return []

    async def _stream(self, event: pop3.Retrieve, reader) -> None:
        encoder = pop3.MultilineEncoder(event.lines)
        try:
            self.write(event.ok_reply)
            while not self.closed and not encoder.done:
                chunk = reader.read(_CHUNK)
                if not chunk:
                    break
                self.write(encoder.feed(chunk))
                await self.drain()
            self.write(encoder.finish())
        finally:
            reader.close()
        self._task = None
        if self.closed:
            return
        # Resume first: if the next pipelined command is another streamed
        # RETR, perform() pauses again, and reading must stay paused for it.
        self.resume()
        self.perform(self._retrieved_ok(event))

    def _retrieved_ok(self, event: pop3.Retrieve) -> list:
        message = event.message
        if event.lines is None:
            self.server.count("retrieved")
            if log.isEnabledFor(logging.DEBUG):   # per message at DEBUG: the session line says it
                log.debug("retrieved %s size=%d peer=%s", message.key, message.size, self.peer,
                          extra=fields(MAILID=message.key, SIZE=message.size, PEER=self.peer))
            self._to_mark.append(message)
        return self.engine.retrieved(True)

    def _mark_seen(self) -> None:
        marks, self._to_mark = self._to_mark, []
        if not marks:
            return
        try:
            maildir = self.server.maildir.get()
        except MaildirError:
            return
        for message in marks:
            if message.key in self._removed:
                continue
            try:
                maildir.mark_seen(message)
            except MaildirError as exc:
                log.error("cannot mark %s as seen: %s", message.key, exc)

    def _update(self, event: pop3.Update) -> None:
        maildir = self.server.maildir.get()
        self._removed = {message.key for message in event.deleted}
        for message in event.deleted:
            try:
                removed = maildir.remove(message)
            except MaildirError as exc:
                log.error("cannot delete %s: %s", message.key, exc, extra=fields(MAILID=message.key))
                continue
            if removed:
                self._deleted += 1
                self.server.count("deleted")
                mail_event(log, f"deleted {message.key} peer={self.peer}",
                           MAILID=message.key, PEER=self.peer)
        # Before QUIT's reply: a client that saw +OK finds its mail \Seen.
        self._mark_seen()

    handlers = {pop3.Retrieve: _retrieve, pop3.Update: _update}
