"""baremail-sendmail: the sendmail command line, submitting to baremail-smtp.

Most daemons do not speak SMTP: they pipe a message into /usr/sbin/sendmail.
This command takes that message and hands it over SMTP to the local BareMail
socket (systemd starts the service if it is not running). It never queues:
if the message cannot be handed over, it says so on stderr, saves it to
~/dead.letter when it can, and exits 75 (EX_TEMPFAIL) so the caller knows.
"""

from __future__ import annotations

import email.utils
import getpass
import os
import smtplib
import sys
import time
from dataclasses import dataclass, field

from . import config as configuration

EX_OK, EX_USAGE, EX_DATAERR, EX_UNAVAILABLE, EX_SOFTWARE, EX_TEMPFAIL = 0, 64, 65, 69, 70, 75
PROG = "baremail-sendmail"

# Options that take a value, attached (-fuser) or as the next word (-f user).
_WITH_VALUE = set("fFrNRBOXCLVhpA")
# Accepted and ignored: they tune delivery modes a direct hand-over does not have.
_IGNORED = set("vUnmeG")


class UsageError(Exception):
    pass


@dataclass
class Options:
    recipients: list = field(default_factory=list)
    from_headers: bool = False       # -t
    dot_ends_input: bool = True      # cleared by -i / -oi
    sender: str | None = None        # -f / -r
    full_name: str | None = None     # -F
    config: str | None = None        # -C
    mode: str = "m"                  # -b<mode>: m deliver, p queue list, ...


def parse_args(argv: list) -> Options:
    """Parse sendmail's command line the way Postfix and Sendmail accept it."""
    options = Options()
    words = list(argv)
    while words:
        word = words.pop(0)
        if word == "--":
            options.recipients += words
            break
        if not word.startswith("-") or word == "-":
            options.recipients.append(word)
            continue
        letter, rest = word[1:2], word[2:]
        if letter == "o":
            if rest in ("i", "i=true", "itrue"):
                options.dot_ends_input = False
            elif not rest:
                if not words:
                    raise UsageError("-o needs an option")
                words.pop(0)
            continue  # -oem, -odi, -odb, -oQ... : delivery tuning, nothing to tune
        if letter == "i":
            options.dot_ends_input = False
        elif letter == "t":
            options.from_headers = True
        elif letter == "b":
            if rest not in ("m", "p", "i", "v", "d", "D", "s"):
                raise UsageError(f"-b{rest}: unknown mode")
            options.mode = rest
        elif letter == "q":
            options.mode = "q"
        elif letter in _WITH_VALUE:
            if not rest:
                if not words:
                    raise UsageError(f"-{letter} needs a value")
                rest = words.pop(0)
            if letter in "fr":
                options.sender = "" if rest == "<>" else rest
            elif letter == "F":
                options.full_name = rest
            elif letter == "C":
                options.config = rest
        elif letter in _IGNORED:
            pass
        else:
            raise UsageError(f"-{letter}: unknown option")
    return options


def read_message(stream, dot_ends_input: bool) -> bytes:
    """Read the message from stdin; without -i a line holding only '.' ends it."""
    if not dot_ends_input:
        return stream.read()
    lines = []
    for line in stream:
        if line.rstrip(b"\r\n") == b".":
            break
        lines.append(line)
    return b"".join(lines)


def split_headers(message: bytes) -> tuple:
    """(header block lines with their line ends, the rest starting at the blank line)."""
    lines = message.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line in (b"\n", b"\r\n"):
            return lines[:index], b"".join(lines[index:])
        if not line[:1].isspace() and b":" not in line:
            # Not a header: the message has no header block of its own.
            return lines[:index], b"".join(lines[index:])
    return lines, b""


def _fields(headers: list) -> list:
    """Unfold header lines into (name lowercased, value, [raw lines])."""
    result = []
    for line in headers:
        if line[:1] in (b" ", b"\t") and result:
            result[-1][1] += b" " + line.strip()
            result[-1][2].append(line)
            continue
        name, _, value = line.partition(b":")
        result.append([name.strip().lower(), value.strip(), [line]])
    return result


def complete(message: bytes, options: Options, sender: str, hostname: str) -> tuple:
    """Add missing From:, Date:, Message-ID:; with -t collect recipients and drop Bcc:.

    Returns (message bytes, recipients)."""
    # smtplib sends bytes as they are: the wire needs CRLF everywhere.
    message = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    headers, rest = split_headers(message)
    fields = _fields(headers)
    names = {name for name, _, _ in fields}
    recipients = list(options.recipients)
    if options.from_headers:
        values = [value.decode("utf-8", "surrogateescape") for name, value, _ in fields
                  if name in (b"to", b"cc", b"bcc")]
        recipients += [address for _, address in email.utils.getaddresses(values) if address]
    kept = b"".join(b"".join(raw) for name, _, raw in fields if name != b"bcc")
    added = []
    if b"from" not in names:
        display = options.full_name
        address = sender or f"MAILER-DAEMON@{hostname}"
        added.append(("From", email.utils.formataddr((display, address)) if display else address))
    if b"date" not in names:
        added.append(("Date", email.utils.formatdate(localtime=True)))
    if b"message-id" not in names:
        added.append(("Message-ID", email.utils.make_msgid(domain=hostname)))
    extra = b"".join(f"{name}: {value}\r\n".encode("utf-8", "surrogateescape") for name, value in added)
    if not rest.startswith(b"\r\n"):
        rest = b"\r\n" + rest  # the blank line that ends the header block
    return kept + extra + rest, recipients


def default_sender(hostname: str) -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    return f"{user}@{hostname}"


def dead_letter(message: bytes) -> str | None:
    home = os.path.expanduser("~")
    path = os.path.join(home, "dead.letter")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "ab") as handle:
            handle.write(b"From MAILER-DAEMON " + email.utils.formatdate().encode() + b"\n" + message + b"\n")
        return path
    except OSError:
        return None


def fail(status: int, text: str, message: bytes | None = None) -> int:
    saved = dead_letter(message) if message is not None and status == EX_TEMPFAIL else None
    suffix = f"; message saved in {saved}" if saved else ""
    print(f"{PROG}: {text}{suffix}", file=sys.stderr)
    return status


class _Attempt(Exception):
    """One hand-over that did not end in 250: exit status, text, and whether
    trying again may help."""

    def __init__(self, status: int, text: str, retry: bool):
        super().__init__(text)
        self.status = status
        self.text = text
        self.retry = retry


def _hand_over(server: tuple, sender: str, recipients: list, message: bytes, hostname: str,
               timeout: float) -> None:
    """One SMTP session to the local service; _Attempt unless the message got its 250."""
    host, port = server
    try:
        with smtplib.SMTP(host or "127.0.0.1", port, local_hostname=hostname, timeout=timeout) as client:
            client.ehlo_or_helo_if_needed()
            options = ["BODY=8BITMIME"] if client.has_extn("8bitmime") else []
            if any(ord(ch) > 127 for ch in sender + "".join(recipients)) and client.has_extn("smtputf8"):
                options.append("SMTPUTF8")
            client.sendmail(sender, recipients, message, mail_options=options)
    except smtplib.SMTPRecipientsRefused as exc:
        code = min(code for code, _ in exc.recipients.values())
        raise _Attempt(EX_TEMPFAIL if code < 500 else EX_DATAERR,
                       f"recipients refused: {exc.recipients}", code < 500) from None
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        temporary = 400 <= exc.smtp_code < 500
        raise _Attempt(EX_TEMPFAIL if temporary else EX_DATAERR,
                       f"server said {exc.smtp_code} {text}", temporary) from None
    except (OSError, smtplib.SMTPException) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise _Attempt(EX_TEMPFAIL, f"cannot reach BareMail SMTP at {host or '127.0.0.1'}:{port}: {reason}",
                       True) from None


def submit(server: tuple, sender: str, recipients: list, message: bytes, hostname: str,
           retry_time: float = 60.0, clock=time.monotonic, sleep=time.sleep) -> int:
    """Hand the message over; on a refused or dropped connection or a 4xx
    reply, try again with a growing pause for `retry_time` seconds (the
    service restarting, or the package being upgraded), then exit 75 and
    keep the message in ~/dead.letter.

    Nothing is retried after a 250: the message is stored then. A session
    that breaks after the final dot but before the reply is retried, so a
    crash of the service at exactly that moment can store a message twice
    (RFC 5321 6.1: duplicates rather than losses)."""
    deadline = clock() + retry_time
    pause = 0.1
    tries = 0
    while True:
        tries += 1
        try:
            # Long enough for a restart that drains its sessions first
            # (stop_timeout), or a cold start; never past the retry time by much.
            _hand_over(server, sender, recipients, message, hostname,
                       timeout=max(30.0, min(120.0, deadline - clock())))
            return EX_OK
        except _Attempt as attempt:
            remaining = deadline - clock()
            if not attempt.retry or remaining <= 0:
                text = attempt.text
                if tries > 1:
                    text += f" (tried {tries} times in {retry_time:g} s)"
                return fail(attempt.status, text, message)
        sleep(min(pause, remaining))
        pause = min(pause * 2, 5.0)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        options = parse_args(argv)
    except UsageError as exc:
        return fail(EX_USAGE, f"{exc} (usage: {PROG} [-t] [-i] [-f sender] [-F name] [recipient ...])")
    if options.mode == "p":
        print("Mail queue is empty")
        return EX_OK
    if options.mode in ("q", "i", "v", "d", "D"):
        return EX_OK  # no queue, no aliases: nothing to do
    if options.mode == "s":
        return fail(EX_USAGE, "-bs (SMTP on stdin) is not supported; talk SMTP to the socket instead")
    try:
        settings = configuration.load(configuration.find_config_file(options.config))
    except configuration.ConfigError as exc:
        return fail(configuration.EX_CONFIG, str(exc))
    hostname = settings.host_name
    message = read_message(sys.stdin.buffer, options.dot_ends_input)
    sender = options.sender if options.sender is not None else default_sender(hostname)
    message, recipients = complete(message, options, sender, hostname)
    if not recipients:
        return fail(EX_USAGE, "no recipients: give them as arguments or use -t with To:/Cc:/Bcc: headers")
    return submit(configuration.parse_address(settings.sendmail_server), sender, recipients, message, hostname,
                  retry_time=settings.sendmail_retry_time)


if __name__ == "__main__":
    sys.exit(main())
