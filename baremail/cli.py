"""Entry points: baremail-smtp, baremail-pop3, baremail-imap (and `python3 -m baremail.cli smtp|pop3|imap`)."""

from __future__ import annotations

import sys
import types

from . import __version__
from . import config as configuration


def _arguments(service: str, argv):
    if argv is None:
        argv = sys.argv[1:]
    if not argv:
        # How systemd starts the service. argparse would cost milliseconds
        # of every socket-activated start, which the first client waits for.
        return types.SimpleNamespace(config=None, maildir=None, listen=None, idle_exit=None,
                                     debug=False)
    import argparse
    parser = argparse.ArgumentParser(
        prog=f"baremail-{service}",
        description=f"BareMail {service.upper()} service. Normally started by systemd "
                    f"(baremail-{service}.socket); without sockets from systemd it binds --listen.")
    parser.add_argument("--config", metavar="FILE",
                        help=f"configuration file (default: $BAREMAIL_CONFIG, then {configuration.SYSTEM_CONFIG})")
    parser.add_argument("--maildir", metavar="DIR", help="the Maildir (overrides the config file)")
    parser.add_argument("--listen", metavar="ADDR:PORT", action="append",
                        help="address to bind when not socket-activated (repeatable)")
    parser.add_argument("--idle-exit", metavar="SECONDS", type=float,
                        help="exit after this long without sessions when socket-activated (0: never)")
    parser.add_argument("--debug", action="store_true", help="log sessions as they start and end")
    parser.add_argument("--version", action="version", version=f"BareMail {__version__}")
    return parser.parse_args(argv)


def _main(service: str, argv=None) -> int:
    args = _arguments(service, argv)
    overrides = {"maildir": args.maildir, "idle_exit": args.idle_exit,
                 f"{service}_listen": tuple(args.listen) if args.listen else None}
    if args.listen:
        for address in args.listen:
            try:
                configuration.parse_address(address)
            except ValueError as exc:
                print(f"baremail-{service}: --listen: {exc}", file=sys.stderr)
                return configuration.EX_CONFIG
    load = configuration.loader(args.config, overrides)
    try:
        load()
    except configuration.ConfigError as exc:
        print(f"baremail-{service}: {exc}", file=sys.stderr)
        return configuration.EX_CONFIG

    # BareMail speaks no TLS by design. asyncio imports ssl only if it can;
    # keeping OpenSSL out of the process saves megabytes of RSS and
    # milliseconds of every socket-activated start.
    sys.modules.setdefault("ssl", None)
    from . import journal
    journal.setup(f"baremail-{service}", debug=args.debug)
    from .service import Server
    if service == "smtp":
        from .smtpd import SMTPConnection as connection
    elif service == "pop3":
        from .pop3d import POP3Connection as connection
    else:
        from .imapd import IMAPConnection as connection
    return Server(load, connection).run()


def smtp_main(argv=None) -> int:
    return _main("smtp", argv)


def pop3_main(argv=None) -> int:
    return _main("pop3", argv)


def imap_main(argv=None) -> int:
    return _main("imap", argv)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("smtp", "pop3", "imap"):
        print("usage: python3 -m baremail.cli smtp|pop3|imap [options]", file=sys.stderr)
        sys.exit(64)
    sys.exit(_main(sys.argv[1], sys.argv[2:]))
