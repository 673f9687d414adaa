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
_COMMAND_PIECE = 4096


class POP3Connection(Session):
    def __init__(self, server: Server, listener: str):
        super().__init__(server, listener)
        self.engine: pop3.POP3Session | None = None
        self._retrieved = 0
        self._octets = 0
        self._deleted = 0
        self._task: asyncio.Task | None = None

    def refusal(self) -> bytes:
        return b"-ERR [SYS/TEMP] Too many sessions, try again later\r\n"

    def timeout_seconds(self) -> float:
        return self.config.pop3_timeout

    @property
    def at_rest(self) -> bool:
        return self.engine is None or self.engine.at_rest

    def begin(self) -> None:
        self.engine = pop3.POP3Session(self.config.host_name, open_mailbox=self._snapshot)
        self._perform(self.engine.start())

    def feed(self, data: bytes) -> None:
        self._perform(self.engine.receive(data))

    def piece_size(self, held) -> int:
        # Whole lines, up to a few kilobytes at once: the replies to most
        # commands are short, and RETR and TOP hand a message that would
        # back up to flow control themselves (_retrieve), so a pipelined
        # batch of fifty RETRs is one piece. But LIST and UIDL answer a few
        # octets with a line per message: such a line ends its piece, so
        # that pipelined commands wait while their replies back up.
        size = min(len(held), _COMMAND_PIECE)
        end = held.rfind(b"\n", 0, size)
        if end < 0:
            return size
        lines = bytes(held[:end + 1]).upper()
        listing = [at for at in (lines.find(b"LIST"), lines.find(b"UIDL")) if at >= 0]
        if listing:
            end = lines.find(b"\n", min(listing))
        return end + 1

    def expire(self) -> None:
        self._perform(self.engine.timeout())

    def stop(self) -> None:
        if self.engine is not None:
            self._perform(self.engine.shutdown())
        else:
            self.close()

    def lost(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.engine is not None:
            log.info("session from %s ended: retrieved %d (%d octets), deleted %d",
                     self.peer, self._retrieved, self._octets, self._deleted,
                     extra=fields(PEER=self.peer, RETRIEVED=self._retrieved,
                                  OCTETS=self._octets, DELETED=self._deleted))

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

    def _perform(self, events: list) -> None:
        # A loop, not recursion: a message sent at once hands back the
        # engine's next events (the next pipelined RETR), and a client may
        # pipeline thousands of them.
        while events:
            follow: list = []
            for event in events:
                kind = type(event)
                if kind is pop3.Send:
                    self.write(event.data)
                elif kind is pop3.Retrieve:
                    follow = self._retrieve(event)
                elif kind is pop3.Update:
                    self._update(event.deleted)
                elif kind is pop3.Close:
                    self.close()
            events = follow

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
        # RETR, _perform pauses again, and reading must stay paused for it.
        self.resume()
        self._perform(self._retrieved_ok(event))

    def _retrieved_ok(self, event: pop3.Retrieve) -> list:
        message = event.message
        if event.lines is None:
            self._retrieved += 1
            self._octets += message.size
            self.server.count("retrieved")
            mail_event(log, f"retrieved {message.key} size={message.size} peer={self.peer}",
                       MAILID=message.key, SIZE=message.size, PEER=self.peer, LISTENER=self.listener)
            try:
                self.server.maildir.get().mark_seen(message)
            except MaildirError as exc:
                log.error("cannot mark %s as seen: %s", message.key, exc)
        return self.engine.retrieved(True)

    def _update(self, deleted: tuple) -> None:
        maildir = self.server.maildir.get()
        for message in deleted:
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


def make_server(load_config) -> Server:
    return Server("baremail-pop3", load_config, POP3Connection, lambda config: config.pop3_listen)
