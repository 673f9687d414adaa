"""baremail.conf -> one frozen Config.

One INI file serves both services. Every problem is reported as a ConfigError
whose text names the file, the key and what is wrong, so the runtime can print
it as one line and exit with EX_CONFIG (78).
"""

from __future__ import annotations

import configparser
import dataclasses
import functools
import os
import socket
from dataclasses import dataclass
from typing import Callable, Mapping

SYSTEM_CONFIG = "/etc/baremail/baremail.conf"
EX_CONFIG = 78


class ConfigError(Exception):
    """A configuration problem, worded as one line for the admin."""


@dataclass(frozen=True)
class Amount:
    """A size given in octets, or as a percentage of the file system that
    holds the Maildir ("10%")."""

    value: float
    percent: bool = False

    def octets(self, file_system_size: int) -> int:
        return int(file_system_size * self.value / 100) if self.percent else int(self.value)

    def __str__(self) -> str:
        if self.percent:
            return f"{self.value:g}%"
        return str(int(self.value))


@dataclass(frozen=True)
class Config:
    source: str = "(built-in defaults)"
    maildir: str = "/var/lib/baremail/Maildir"
    hostname: str = ""
    idle_exit: float = 300.0
    max_sessions: int = 1000
    stop_timeout: float = 20.0
    smtp_listen: tuple = ("127.0.0.1:2525",)
    max_message_size: int = 104857600
    max_recipients: int = 1000
    command_timeout: float = 300.0
    data_timeout: float = 180.0
    pop3_listen: tuple = ("127.0.0.1:1100",)
    pop3_timeout: float = 600.0
    imap_listen: tuple = ("127.0.0.1:1143",)
    imap_timeout: float = 1800.0
    sendmail_server: str = "127.0.0.1:25"
    sendmail_retry_time: float = 60.0
    # Below this much free space on the Maildir's file system, SMTP and IMAP
    # APPEND refuse new mail for now (452 4.3.1, NO [OVERQUOTA]).
    disk_reserve: Amount = Amount(1, percent=True)
    retention_max_age_days: float = 0.0
    retention_max_messages: int = 0
    retention_max_size: Amount = Amount(10, percent=True)

    @functools.cached_property
    def host_name(self) -> str:
        # gethostname(), not getfqdn(): a DNS lookup could stall start-up on
        # a machine whose resolver is down, which is when mail matters most.
        return self.hostname or socket.gethostname()


def _number(kind, text: str):
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not a number") from None


def _positive_int(text: str) -> int:
    value = _number(int, text)
    if value <= 0:
        raise ValueError("must be a whole number above 0")
    return value


def _seconds(text: str) -> float:
    value = _number(float, text)
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be a number of seconds, 0 or more")
    return value


def _count(text: str) -> int:
    value = _number(int, text)
    if value < 0:
        raise ValueError("must be a whole number, 0 or more")
    return value


def _days(text: str) -> float:
    value = _number(float, text)
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be a number of days, 0 or more")
    return value


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _amount(text: str) -> Amount:
    """'10%', '500M', '2G', '1048576' (octets); 0 switches a limit off."""
    raw = text.strip()
    if raw.endswith("%"):
        value = _number(float, raw[:-1])
        if not 0 <= value <= 100:
            raise ValueError(f"{raw!r}: a percentage must be from 0 to 100")
        return Amount(value, percent=True)
    unit = raw[-1:].upper() if raw[-1:].isalpha() else ""
    if unit not in _UNITS:
        raise ValueError(f"{raw!r} is not a size (octets, or with K, M, G, T, or a percentage such as 10%)")
    value = _number(float, raw[:-1] if unit else raw)
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{raw!r}: a size must be 0 or more")
    return Amount(value * _UNITS[unit])


def _addresses(text: str) -> tuple:
    items = tuple(text.split())
    for item in items:
        parse_address(item)
    return items


def _address(text: str) -> str:
    parse_address(text.strip())
    return text.strip()


def _text(text: str) -> str:
    return text.strip()


def _path(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return os.path.expanduser(text.strip())


# (section, key) -> (Config field, parser). Keys not listed here are errors:
# a typo in a config file must not silently keep the default.
_KEYS: Mapping[tuple, tuple] = {
    ("baremail", "maildir"): ("maildir", _path),
    ("baremail", "hostname"): ("hostname", _text),
    ("baremail", "idle_exit"): ("idle_exit", _seconds),
    ("baremail", "max_sessions"): ("max_sessions", _positive_int),
    ("baremail", "stop_timeout"): ("stop_timeout", _seconds),
    ("baremail", "disk_reserve"): ("disk_reserve", _amount),
    ("smtp", "listen"): ("smtp_listen", _addresses),
    ("smtp", "max_message_size"): ("max_message_size", _positive_int),
    ("smtp", "max_recipients"): ("max_recipients", _positive_int),
    ("smtp", "command_timeout"): ("command_timeout", _seconds),
    ("smtp", "data_timeout"): ("data_timeout", _seconds),
    ("pop3", "listen"): ("pop3_listen", _addresses),
    ("pop3", "timeout"): ("pop3_timeout", _seconds),
    ("imap", "listen"): ("imap_listen", _addresses),
    ("imap", "timeout"): ("imap_timeout", _seconds),
    ("sendmail", "server"): ("sendmail_server", _address),
    ("sendmail", "retry_time"): ("sendmail_retry_time", _seconds),
    ("retention", "max_age_days"): ("retention_max_age_days", _days),
    ("retention", "max_messages"): ("retention_max_messages", _count),
    ("retention", "max_size"): ("retention_max_size", _amount),
}


def parse_address(text: str) -> tuple:
    """'127.0.0.1:25', '[::1]:25', ':25' or '25' -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"{text!r} is not host:port") from None
    if not 0 < number < 65536:
        raise ValueError(f"{text!r}: port must be 1-65535")
    return host, number


def find_config_file(explicit: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """--config, then $BAREMAIL_CONFIG, then the system file if it exists."""
    if explicit:
        return explicit
    if environ.get("BAREMAIL_CONFIG"):
        return environ["BAREMAIL_CONFIG"]
    if os.path.exists(SYSTEM_CONFIG):
        return SYSTEM_CONFIG
    return None


def load(path: str | None, overrides: Mapping[str, object] | None = None) -> Config:
    """Read `path` (None: built-in defaults) and apply command-line overrides."""
    values: dict = {}
    if path is not None:
        values["source"] = path
        values.update(_read(path))
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = value
    return dataclasses.replace(Config(), **values)


def _read(path: str) -> dict:
    parser = configparser.ConfigParser(interpolation=None, default_section="\0none")
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not a valid INI file: {first}") from None
    values = {}
    for section in parser.sections():
        for key, raw in parser.items(section):
            entry = _KEYS.get((section, key))
            if entry is None:
                raise ConfigError(f"{path}: [{section}] {key}: unknown key")
            field, convert = entry
            try:
                values[field] = convert(raw)
            except ValueError as exc:
                raise ConfigError(f"{path}: [{section}] {key}: {exc}") from None
    return values


def loader(explicit: str | None, overrides: Mapping[str, object]) -> Callable[[], Config]:
    """A function that (re)loads the configuration the same way each time (SIGHUP)."""
    return lambda: load(find_config_file(explicit), overrides)
