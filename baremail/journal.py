"""Logging: native journald entries with fields under systemd, plain stderr otherwise.

Code logs with ``log.info("delivered %s ...", key, extra=fields(MAILID=key))``;
under journald (python-systemd's JournalHandler) the BAREMAIL_* fields become
searchable (``journalctl -u baremail-smtp BAREMAIL_MAILID=<key>``), on stderr
they are left out because the sentence already says everything.
"""

from __future__ import annotations

import logging
import os
import sys

PREFIX = "BAREMAIL_"


def fields(**values) -> dict:
    """Structured journal fields for `extra=`: MAILID=... -> BAREMAIL_MAILID=..."""
    return {PREFIX + name.upper(): str(value) for name, value in values.items()}


# The identifier journal entries carry, once setup() chose the journal.
_identifier: str | None = None


def mail_event(logger: logging.Logger, text: str, **values) -> None:
    """Log one line for a message moved (delivered, retrieved, deleted) at
    INFO, with `values` as BAREMAIL_* fields. Under journald the entry goes
    straight to python-systemd's journal.send(): a pipelined retrieval logs
    one line per message, and the logging machinery would cost more than
    serving a small message. Otherwise it goes through `logger`."""
    if _identifier is not None and logger.isEnabledFor(logging.INFO):
        from systemd import journal
        # Naming the code location spares send() a walk of the stack.
        journal.send(text, PRIORITY="6", SYSLOG_IDENTIFIER=_identifier, CODE_FUNC="mail_event",
                     **fields(**values))
    else:
        logger.info("%s", text, extra=fields(**values))


def _stderr_is_journal() -> bool:
    # systemd sets JOURNAL_STREAM=<dev>:<inode> of the stream it connected to
    # stdout/stderr; only trust it if stderr still is that stream.
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    if not device or not inode:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return f"{st.st_dev}:{st.st_ino}" == stream


def setup(service: str, debug: bool = False) -> logging.Logger:
    """Configure the root logger once for `service` ('baremail-smtp', ...)."""
    # No record needs thread or process names: skipping them makes each
    # record cheaper.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    global _identifier
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler: logging.Handler
    _identifier = None
    if _stderr_is_journal():
        from systemd.journal import JournalHandler
        handler = JournalHandler(SYSLOG_IDENTIFIER=service)
        _identifier = service
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{service}: %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    return logging.getLogger(service)
