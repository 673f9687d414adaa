"""The asyncio runtime both services share.

It takes the listening sockets systemd passes (or binds its own in dev mode),
runs one `Session` per connection, tells systemd how it is doing (READY=1,
STATUS=, WATCHDOG=1, STOPPING=1), exits when idle so that socket activation
starts it again on demand, stops gracefully on SIGTERM and re-reads its
configuration on SIGHUP. What a session *does* lives in the protocol glue
(smtpd.py, pop3d.py); this module knows nothing of SMTP or POP3.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import time
from typing import Callable

from . import config as configuration
from .engine import Close, Send
from .journal import fields
from .maildir import Maildir, MaildirError
from .reserve import DiskReserve

log = logging.getLogger("baremail")

EX_OK = 0
EX_SOFTWARE = 70
EX_OSERR = 71

_PIECES_PER_TURN = 64   # pieces of pipelined input fed before other sessions' turn
_PROGRESS = 64 * 1024   # octets without a line end that still count as activity
_HELD_MAX = 64 * 1024   # replies held back to go out in one write (see write())
# A stopping service ends a session that rests between transactions once
# its client has been quiet this long: a client that is still sending has
# its next command in flight within milliseconds, one that holds an idle
# connection must not hold up a restart until stop_timeout.
_DRAIN_QUIET = 1.0
_DRAIN_TICK = 0.1
_ACCEPTS_PER_TURN = 64   # connections accepted from one socket before others get a turn
_ACCEPT_RETRY = 1.0      # seconds without accepting after running out of descriptors


class _ReceiveBuffer:
    """The one buffer every connection of the process reads into
    (asyncio.BufferedProtocol): the event loop runs one read at a time, and
    each read's octets are copied out before the next. One buffer per
    process, not per connection, so that a thousand idle sessions cost no
    read buffer at all; it starts small and grows once if a read fills it
    (a message arriving in bulk)."""

    _SIZES = (64 * 1024, 256 * 1024)

    def __init__(self) -> None:
        self.data = bytearray(self._SIZES[0])
        self.view = memoryview(self.data)

    def filled(self, nbytes: int) -> bytes:
        octets = bytes(self.view[:nbytes])
        if nbytes == len(self.data) and len(self.data) < self._SIZES[-1]:
            self.view.release()
            self.data = bytearray(self._SIZES[-1])
            self.view = memoryview(self.data)
        return octets


class Session(asyncio.BufferedProtocol):
    """One client connection, driving one protocol engine (engine.py).

    The runtime performs the engine's Send and Close events itself; every
    other event type goes to the handler the subclass (the protocol's glue)
    names in its `handlers` table: {EventType: function(session, event)}.
    A handler that finished its work at once may return the engine's next
    events; they are performed after the rest of the batch. A handler that
    starts work that takes time calls pause() and, when done, feeds the
    engine's answer to perform() and calls resume().

    A subclass sets `handlers` and implements make_engine() and
    timeout_seconds(); it may extend lost() and resting. Everything else
    (registration, timeouts, flow control, draining, bookkeeping) is here.
    """

    handlers: dict = {}
    takes_mail = False   # SMTP and IMAP (APPEND) store new mail: the disk reserve applies

    def __init__(self, server: "Server", listener: str):
        self.server = server
        self.config = server.config
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.engine = None
        self.peer = "unknown"
        self.closed = False
        self._last_activity = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._paused = False        # pause() by the protocol glue, until resume()
        self._unfed = bytearray()   # input not yet fed: the client is behind with reading
        self._unfinished = 0        # octets received since the last line end (about)
        self._eof = False           # the client shut down its side; close once answered
        self._holding = False       # replies are being collected for one write
        self._held: list[bytes] = []
        self._held_size = 0

    # -- for the protocol glue --------------------------------------------

    def make_engine(self):
        """The engine for this connection (called once the session is admitted)."""
        raise NotImplementedError

    def timeout_seconds(self) -> float:
        """Seconds of client silence after which the session expires (0: never)."""
        raise NotImplementedError

    def lost(self) -> None:
        """The connection is gone: drop whatever was in progress."""

    def perform(self, events: list) -> None:
        """Carry out the engine's events in order (see the class docstring)."""
        # A loop, not recursion: a handler that finishes at once hands back
        # the engine's next events (POP3's next pipelined RETR), and a
        # client may pipeline thousands of them.
        handlers = self.handlers
        while events:
            follow: list = []
            for event in events:
                kind = type(event)
                if kind is Send:
                    self.write(event.data)
                elif kind is Close:
                    self.close()
                else:
                    more = handlers[kind](self, event)
                    if more:
                        follow += more
            events = follow

    # -- asyncio.BufferedProtocol ----------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.peer = _format_peer(transport.get_extra_info("peername"))
        if not self.server.admit(self):
            engine_class = self.server.engine_class
            self.write(engine_class.refusal(self.config.host_name))
            self.close()
            return
        log.debug("session from %s on %s", self.peer, self.listener,
                  extra=fields(PEER=self.peer, LISTENER=self.listener))
        self._arm_timer()
        self.engine = self.make_engine()
        self.perform(self.engine.start())

    def get_buffer(self, sizehint: int):
        return self.server.receive_buffer.view

    def buffer_updated(self, nbytes: int) -> None:
        self._received(self.server.receive_buffer.filled(nbytes))

    def _received(self, data: bytes) -> None:
        # Activity, for the timeouts, is a line end or a good deal of a line:
        # a client trickling a byte at a time must not hold its session
        # (and a slot under max_sessions) open forever.
        self._unfinished += len(data)
        if self._unfinished >= _PROGRESS or b"\n" in data:
            self._unfinished = 0
            self._last_activity = time.monotonic()
        if self.closed or self.engine is None:
            return
        if not (self._unfed or self._paused or self.backlogged) and self.engine.intake(data) >= len(data):
            self._holding = True
            try:
                self.perform(self.engine.receive(data))   # the usual case, without copying
            finally:
                self._release()
            return
        self._unfed += data
        self._feed_unfed()

    def _feed_unfed(self) -> None:
        # Pipelined input is fed in pieces the engine sizes (intake()), and
        # feeding stops while the client is behind with reading: a few bytes
        # of command can ask for a long reply, so feeding a whole read at
        # once could pile up replies here without bound. Nothing is fed
        # while the glue has paused input (resume() carries on). After a
        # few dozen pieces the other sessions get their turn. The replies
        # go out together, in one write, when feeding stops.
        outer = not self._holding
        self._holding = True
        try:
            for _ in range(_PIECES_PER_TURN):
                if not self._feedable():
                    break
                # Answering pipelined input is not the client being silent.
                self._last_activity = time.monotonic()
                size = self.engine.intake(self._unfed)
                piece = bytes(self._unfed[:size])
                del self._unfed[:size]
                self.perform(self.engine.receive(piece))
            else:
                if self._feedable():
                    asyncio.get_running_loop().call_soon(self._feed_unfed)
        finally:
            if outer:
                self._release()
        self._set_reading()
        self._close_after_eof()

    def _feedable(self) -> bool:
        return bool(self._unfed) and not (self.closed or self.backlogged or self._paused)

    def pause_writing(self) -> None:
        # The client is not reading our replies: stop reading its commands
        # too, or replies to pipelined input pile up here without bound.
        self._writable.clear()
        self._set_reading()

    def resume_writing(self) -> None:
        self._writable.set()
        # Not from inside this callback: the transport calls it halfway
        # through its own write handling, where feeding (which may write
        # and close) would have it report the connection lost twice.
        asyncio.get_running_loop().call_soon(self._feed_unfed)

    @property
    def backlogged(self) -> bool:
        """Replies are waiting for the client to read them (transport above its high-water mark)."""
        return not self._writable.is_set()

    async def drain(self) -> None:
        """Wait until the transport's buffer has room (flow control for big writes)."""
        await self._writable.wait()

    def eof_received(self):
        # A half-closed client is done, but may still be owed answers: a
        # transaction pipelined whole, then shut down, still gets its 250
        # (closing first would leave it a message it believes failed).
        if self._paused or self._unfed:
            self._eof = True
            return True
        return False

    def _close_after_eof(self) -> None:
        if self._eof and not self._paused and not self._unfed:
            self.close()

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._writable.set()  # wake a writer waiting in drain(): it checks `closed`
        if self.engine is not None:
            self.lost()
        self.server.release(self)

    # -- writing, pausing ------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send `data` after everything written before. While input is fed,
        replies are held and go out in one write when feeding stops (or once
        _HELD_MAX octets are held): answering fifty pipelined commands takes
        one system call, not fifty."""
        if self.closed or self.transport is None:
            return
        if not self._holding:
            self.transport.write(data)
            return
        self._held.append(data)
        self._held_size += len(data)
        if self._held_size >= _HELD_MAX:
            self._flush_held()

    def _flush_held(self) -> None:
        held = self._held
        if not held:
            return
        data = held[0] if len(held) == 1 else b"".join(held)
        held.clear()
        self._held_size = 0
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def _release(self) -> None:
        self._holding = False
        self._flush_held()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self._flush_held()
            self.closed = True
            self.transport.close()

    def pause(self) -> None:
        """Feed the engine nothing more until resume() (work under way).

        Reading goes on until input actually arrives meanwhile (then it
        waits in _unfed, and the transport stops reading): a client that
        waits for its reply, as most do, costs no epoll changes at all."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        # The client waited for this work (a commit, a long RETR): its
        # silence, for the timeouts and a draining stop, counts from now.
        self._last_activity = time.monotonic()
        self._set_reading()
        if self._unfed or self._eof:
            # Later, not now: the caller may still have events of the
            # engine to perform, which come before this input.
            asyncio.get_running_loop().call_soon(self._feed_unfed)

    def _set_reading(self) -> None:
        # Read while the client is not behind with our replies
        # (pause_writing) and all that was read is fed.
        if self.closed or self.transport is None or self._eof:
            return
        if not self._writable.is_set() or self._unfed:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    # -- stopping ---------------------------------------------------------

    @property
    def resting(self) -> bool:
        """Between transactions (the engine's at_rest), and nothing of the
        client's waiting to be fed or being worked on: a draining stop may
        end the session here."""
        return not self._unfed and not self._paused and (self.engine is None or self.engine.at_rest)

    @property
    def quiet_for(self) -> float:
        """Seconds since the client last sent a line (or a good deal of one)."""
        return time.monotonic() - self._last_activity

    def stop(self) -> None:
        """The service is stopping: the engine's last word, then close."""
        if self.engine is not None:
            self.lost_work()
            self.perform(self.engine.shutdown())
        self.close()

    def lost_work(self) -> None:
        """Drop work in progress before the session is cut short (stop, expiry)."""

    # -- timeouts ---------------------------------------------------------

    def _arm_timer(self) -> None:
        # One timer per session, re-armed only when it fires: buffer_updated
        # just records the time, which keeps the hot path cheap.
        limit = self.timeout_seconds()
        if limit <= 0:
            return
        remaining = self._last_activity + limit - time.monotonic()
        self._timer = asyncio.get_running_loop().call_later(max(remaining, 0.01), self._check_timeout)

    def _check_timeout(self) -> None:
        self._timer = None
        if self.closed:
            return
        limit = self.timeout_seconds()
        if limit > 0 and time.monotonic() - self._last_activity >= limit:
            log.info("session from %s timed out after %g s of silence", self.peer, limit,
                     extra=fields(PEER=self.peer))
            self.lost_work()
            self.perform(self.engine.timeout())
            # A client that does not even read lets our replies pile up
            # unsent: closing would wait for them forever, holding a session
            # slot. Drop it.
            if self.transport is not None and self.transport.get_write_buffer_size():
                self.transport.abort()
        else:
            self._arm_timer()


def _format_peer(address) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address or "local")


class MaildirHolder:
    """The service's Maildir, opened lazily so that a broken path gives each
    client a 451 and the journal an error, instead of a crash loop."""

    def __init__(self, server: Server):
        self._server = server
        self._maildir: Maildir | None = None
        self._failed: str | None = None
        self._reserve: DiskReserve | None = None

    @property
    def reserve(self) -> DiskReserve:
        """The disk reserve of the configured Maildir's file system."""
        config = self._server.config
        reserve = self._reserve
        if reserve is None or (reserve.path, reserve.amount) != (config.maildir, config.disk_reserve):
            reserve = self._reserve = DiskReserve(config.maildir, config.disk_reserve)
        return reserve

    def reset(self) -> None:
        """After a reload: the same Maildir is kept if the configuration still
        names it; another one is opened at the next get(). The old object
        closes its directories itself once no delivery or session holds it
        (Maildir.__del__)."""
        config = self._server.config
        current = self._maildir
        if current is not None and (current.path, current.hostname) == \
                (os.path.abspath(config.maildir), config.host_name):
            return
        self._maildir = None
        self._failed = None

    def get(self) -> Maildir:
        if self._maildir is None:
            config = self._server.config
            try:
                self._maildir = Maildir(config.maildir, config.host_name)
            except MaildirError as exc:
                if str(exc) != self._failed:
                    log.error("%s", exc)
                    self._failed = str(exc)
                raise
        return self._maildir


class Notifier:
    """sd_notify through the `sdnotify` package; silent without NOTIFY_SOCKET
    (then the package is not even imported)."""

    def __init__(self):
        self._notifier = None
        if os.environ.get("NOTIFY_SOCKET"):
            import sdnotify
            self._notifier = sdnotify.SystemdNotifier()

    def __call__(self, state: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(state)


class Server:
    """Runs one service: sockets in, sessions out, systemd kept informed."""

    def __init__(self, load_config: Callable[[], configuration.Config], session_factory: type):
        """`session_factory` is the protocol's Session subclass: it names its
        engine class (`engine_class`, for the session cap's refusal) and
        `listen(config)`, the addresses to bind when systemd passed none."""
        self._load_config = load_config
        self._session_factory = self.session_factory = session_factory
        self._listen = session_factory.listen
        self.config = load_config()
        self.sessions: set[Session] = set()
        self.counters: dict[str, int] = {}
        self.notify = Notifier()
        self.stopping = False
        self._opening = False       # the sockets are being set up
        self._stop_pending = False  # SIGTERM came while they were
        self._listeners: list[socket.socket] = []
        self._arriving: set[asyncio.Task] = set()   # accepted, their sessions not made yet
        self._done: asyncio.Future | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._status_pending = False
        self._single = False
        self.socket_activated = False
        self.maildir = MaildirHolder(self)
        self.engine_class = session_factory.engine_class
        self.receive_buffer = _ReceiveBuffer()

    # -- sessions ---------------------------------------------------------

    def admit(self, session: Session) -> bool:
        # A connection that arrives while stopping was accepted just before
        # the listening socket closed: it is served like the others (the
        # drain ends it), since it cannot be handed back to the socket.
        if len(self.sessions) >= self.config.max_sessions:
            self.count("refused")
            log.warning("refused session from %s: %d sessions open (max_sessions)", session.peer,
                        len(self.sessions), extra=fields(PEER=session.peer))
            return False
        self.sessions.add(session)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self.status_changed()
        return True

    def release(self, session: Session) -> None:
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        self.status_changed()
        if not self.sessions:
            if self._single:
                self._finish()
            elif not self.stopping:   # a stopping service finishes in _drain()
                self._arm_idle()

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount
        self.status_changed()

    # -- systemd status ---------------------------------------------------

    def status_text(self) -> str:
        parts = [f"{len(self.sessions)} session{'s' if len(self.sessions) != 1 else ''} open"]
        parts += [f"{value} {name}" for name, value in self.counters.items()]
        if self.session_factory.takes_mail and self.maildir.reserve.low:
            parts.append("refusing new mail: free disk space below disk_reserve")
        return ", ".join(parts)

    def status_changed(self) -> None:
        # Coalesce: under load, one STATUS= datagram per 200 ms is plenty.
        if self._status_pending or self._done is None:
            return
        self._status_pending = True
        asyncio.get_running_loop().call_later(0.2, self._send_status)

    def _send_status(self) -> None:
        self._status_pending = False
        if not self.stopping:
            self.notify("STATUS=" + self.status_text())

    def _start_watchdog(self) -> None:
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return
        try:
            interval = int(usec) / 2e6
        except ValueError:
            return
        loop = asyncio.get_running_loop()

        def ping() -> None:
            # Runs on the event loop: a stalled loop stops pinging, which is
            # exactly what systemd's watchdog is meant to notice.
            self.notify("WATCHDOG=1")
            loop.call_later(interval, ping)

        ping()

    # -- idle exit, stop, reload ------------------------------------------

    def _arm_idle(self) -> None:
        # Only a socket-activated service may exit when idle: systemd keeps
        # the listening socket and starts us again on the next connection.
        idle = self.config.idle_exit
        if idle <= 0 or not self.socket_activated or self.stopping:
            return
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer = asyncio.get_running_loop().call_later(idle, self._idle_exit)

    def _idle_exit(self) -> None:
        self._idle_timer = None
        if self.sessions or self.stopping:
            return
        log.debug("no session for %g s: exiting until the next connection", self.config.idle_exit)
        self._begin_stop()

    def _begin_stop(self) -> None:
        # A draining stop (systemctl stop/restart, an upgrade, idle exit):
        # no new connection is accepted here; they wait in the listening
        # socket, which systemd keeps open, for the next instance. Every
        # session already open is served normally until it ends by itself,
        # or rests between transactions for _DRAIN_QUIET seconds, or
        # stop_timeout runs out; only then does it hear "shutting down".
        # So a restart costs clients latency, not errors.
        if self.stopping:
            return
        if self._opening:
            self._stop_pending = True   # serve() stops once every socket is open
            return
        self.stopping = True
        self.notify("STOPPING=1")
        self._stop_listening()
        if self.sessions:
            grace = self.config.stop_timeout
            log.info("stopping: serving %d open session(s) to their end, for at most %g s",
                     len(self.sessions), grace)
            self.notify(f"STATUS=stopping, serving {len(self.sessions)} open session(s) to their end")
            asyncio.get_running_loop().call_later(grace, self._stop_now)
        # Not done yet even without sessions: connections the loop accepted
        # just before the socket closed get their sessions a moment later.
        asyncio.get_running_loop().call_later(_DRAIN_TICK, self._drain)

    def _drain(self) -> None:
        if not self.sessions and not self._arriving:
            self._finish()
            return
        for session in list(self.sessions):
            if session.resting and session.quiet_for >= _DRAIN_QUIET:
                session.stop()
        asyncio.get_running_loop().call_later(_DRAIN_TICK, self._drain)

    def _stop_now(self) -> None:
        busy = len(self.sessions)
        if busy:
            log.info("stopping: stop_timeout reached, closing %d session(s)", busy)
        for session in list(self.sessions):
            session.stop()
        # Sessions whose transport never drains still must not keep us alive.
        asyncio.get_running_loop().call_later(2.0, self._finish)

    def _finish(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _reload(self) -> None:
        try:
            new = self._load_config()
        except configuration.ConfigError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            return
        self.config = new
        self.maildir.reset()
        log.info("configuration reloaded from %s", new.source)
        self.notify("RELOADING=1")
        self.notify("READY=1\nSTATUS=" + self.status_text())

    # -- sockets ----------------------------------------------------------

    def _passed_sockets(self) -> list[tuple[socket.socket, str]]:
        if not os.environ.get("LISTEN_FDS"):
            return []
        from systemd import daemon
        names = os.environ.get("LISTEN_FDNAMES", "").split(":")
        fds = daemon.listen_fds(unset_environment=True)
        os.environ.pop("LISTEN_FDNAMES", None)
        passed = []
        for index, fd in enumerate(fds):
            sock = socket.socket(fileno=fd)
            name = names[index] if index < len(names) and names[index] else f"fd{fd}"
            passed.append((sock, name))
        return passed

    async def _open(self, loop: asyncio.AbstractEventLoop, addresses: tuple) -> None:
        passed = self._passed_sockets()
        factory = self._session_factory
        if passed:
            self.socket_activated = True
            for sock, name in passed:
                sock.setblocking(False)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    self._listen_on(loop, sock, name)
                    log.debug("serving on %s (%s)", _format_peer(sock.getsockname()), name)
                else:
                    # Accept=yes: systemd accepted the connection for us.
                    self._single = True
                    await loop.connect_accepted_socket(lambda name=name: factory(self, name), sock=sock)
            return
        for address in addresses:
            for sock in _bind(address):
                self._listen_on(loop, sock, address)
            log.info("listening on %s", address)

    # The runtime accepts connections itself rather than through
    # loop.create_server(): asyncio's Server.close() makes every connection
    # it accepted in the same turn but has not yet given a protocol fail
    # without a word (the client sees the connection closed before the
    # greeting), and a restart under load always has some. Here a stop
    # only stops accepting; what was accepted becomes a session and drains.

    def _listen_on(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, name: str) -> None:
        sock.setblocking(False)
        self._listeners.append(sock)
        loop.add_reader(sock.fileno(), self._accept, loop, sock, name)

    def _accept(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, name: str) -> None:
        for _ in range(_ACCEPTS_PER_TURN):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue   # the client gave up before we got to it
                # Out of descriptors (EMFILE) or memory: trying again at
                # once would spin; the connections wait in the backlog.
                log.warning("cannot accept connections on %s for %g s: %s", name, _ACCEPT_RETRY,
                            exc.strerror)
                loop.remove_reader(sock.fileno())
                loop.call_later(_ACCEPT_RETRY, self._resume_accepting, loop, sock, name)
                return
            # Held here too: the loop keeps only weak references to tasks.
            task = loop.create_task(self._arrive(loop, conn, name))
            self._arriving.add(task)
            task.add_done_callback(self._arriving.discard)

    def _resume_accepting(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, name: str) -> None:
        if not self.stopping and sock.fileno() >= 0:
            loop.add_reader(sock.fileno(), self._accept, loop, sock, name)

    async def _arrive(self, loop: asyncio.AbstractEventLoop, conn: socket.socket, name: str) -> None:
        factory = self._session_factory
        try:
            await loop.connect_accepted_socket(lambda: factory(self, name), sock=conn)
        except OSError as exc:   # reset by the client before it was served
            log.debug("connection on %s lost before its session began: %s", name, exc)
            conn.close()

    def _stop_listening(self) -> None:
        # The sockets systemd passed stay open in systemd: connections that
        # arrive from now on wait there for the next instance.
        loop = asyncio.get_running_loop()
        for sock in self._listeners:
            if sock.fileno() >= 0:
                loop.remove_reader(sock.fileno())
                sock.close()
        self._listeners = []

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        # Handlers first: the first socket accepts connections while the
        # next is being set up, and a SIGTERM then (systemctl restart of a
        # starting service) must drain them, not kill the process by
        # default action.
        loop.add_signal_handler(signal.SIGTERM, self._begin_stop)
        loop.add_signal_handler(signal.SIGINT, self._begin_stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        self._opening = True
        try:
            await self._open(loop, self._listen(self.config))
        except OSError as exc:
            log.error("cannot listen: %s", exc)
            return EX_OSERR
        finally:
            self._opening = False
        if self._stop_pending:
            self._begin_stop()   # systemd is stopping us already: no READY
        else:
            self._start_watchdog()
            self.notify("READY=1\nSTATUS=" + self.status_text())
            if not self.sessions and not self._single:
                self._arm_idle()
        await self._done
        self._stop_listening()
        return EX_OK

    def run(self) -> int:
        _room_for_sessions(self.config.max_sessions)
        try:
            return asyncio.run(self.serve())
        except KeyboardInterrupt:
            return EX_OK


def _bind(address: str) -> list[socket.socket]:
    """Listening sockets for a host:port of the configuration (every
    address the host name has; all interfaces for an empty host)."""
    host, port = configuration.parse_address(address)
    found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets = []
    try:
        for family, kind, proto, _, where in dict.fromkeys(found):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # Each family its own socket, as getaddrinfo lists both for "".
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(where)
            except OSError as exc:
                raise OSError(exc.errno, f"{address}: {exc.strerror}") from None
            sock.listen(1024)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _room_for_sessions(sessions: int) -> None:
    """A descriptor per session and a few for the Maildir: raise the soft
    limit on open files towards the hard one (the units set LimitNOFILE=;
    this is for a service started by hand, e.g. make run)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = sessions * 2 + 256
    if soft >= wanted:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard) if hard != resource.RLIM_INFINITY
                                                    else wanted, hard))
    except (ValueError, OSError):
        pass   # the sandbox's system call filter may forbid it: the unit's limit stands
