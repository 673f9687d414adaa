"""baremail-expire: retention for years of notification mail.

Run daily by baremail-expire.timer. It removes, from INBOX and every
folder, the messages that `[retention]` in baremail.conf says are too many,
too old or too big together, oldest first by delivery time; a message
flagged \\Flagged (Maildir flag F) is kept whatever its age ("flag it to
keep it"), and counts toward no limit. tmp/ only loses files older than
36 hours, as always.

    max_age_days   remove messages delivered longer ago than this (0: off)
    max_messages   keep at most this many unflagged messages per folder (0: off)
    max_size       keep the whole Maildir, every folder together, at most
                   this big (octets, K/M/G/T, or a percentage of the file
                   system; default 10 %, the safety cap; 0: off)

Removal goes through the Maildir library, the same as an IMAP EXPUNGE or a
POP3 QUIT: a running IMAP session sees each removal as EXPUNGE, a POP3
session that listed a message now gone gets "-ERR ... removed" for it. One
INFO line per run goes to the journal (counts, octets, flagged kept, time),
one DEBUG line per message removed.
"""

from __future__ import annotations

import argparse
import heapq
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import NamedTuple

from . import config as configuration
from .maildir import Maildir, MaildirError, delivery_order

log = logging.getLogger("baremail-expire")

PROG = "baremail-expire"


@dataclass(frozen=True)
class Limits:
    max_age: float = 0.0        # seconds; 0: off
    max_messages: int = 0       # per folder; 0: off
    max_size: int = 0           # octets, all folders; 0: off


class Candidate(NamedTuple):
    """What selection needs of a message (no file is read). A tuple: a run
    over 100,000 messages makes 100,000 of them."""

    order: tuple                 # delivery order: (seconds, microseconds, key)
    folder: str
    size: int
    flagged: bool
    message: object = None

    @property
    def delivered(self) -> float:
        return self.order[0] + self.order[1] / 1e6


def select(folders: dict, limits: Limits, now: float) -> list:
    """The candidates to remove, oldest first.

    `folders` maps a folder name to its candidates (any order). Flagged
    messages are never selected and count toward no limit. max_age and
    max_messages apply per folder, then max_size to what all folders keep
    together, the oldest going first wherever they are. Ties in delivery
    time go by key, so the same Maildir always gives the same answer."""
    doomed = []
    kept = []
    for name in sorted(folders):
        unflagged = [c for c in folders[name] if not c.flagged]
        if limits.max_age > 0:
            cutoff = now - limits.max_age
            old = [c for c in unflagged if c.delivered < cutoff]
            if old:
                doomed += old
                old_ids = {id(c) for c in old}
                unflagged = [c for c in unflagged if id(c) not in old_ids]
        if 0 < limits.max_messages < len(unflagged):
            newest = heapq.nlargest(limits.max_messages, unflagged, key=_order)
            keep = {id(c) for c in newest}
            doomed += [c for c in unflagged if id(c) not in keep]
            unflagged = newest
        kept += unflagged
    if limits.max_size > 0:
        flagged = sum(c.size for name in folders for c in folders[name] if c.flagged)
        total = flagged + sum(c.size for c in kept)
        if total > limits.max_size:
            for candidate in sorted(kept, key=_order):
                if total <= limits.max_size:
                    break
                doomed.append(candidate)
                total -= candidate.size
    doomed.sort(key=_order)
    return doomed


def _order(candidate: Candidate) -> tuple:
    return candidate.order


def limits_of(config: configuration.Config, file_system_size: int) -> Limits:
    return Limits(max_age=config.retention_max_age_days * 86400,
                  max_messages=config.retention_max_messages,
                  max_size=config.retention_max_size.octets(file_system_size))


def _file_system_size(path: str) -> int:
    stat = os.statvfs(path)
    return stat.f_blocks * stat.f_frsize


def candidates(maildir: Maildir, name: str) -> list:
    return [Candidate(delivery_order(message.key), name, message.size, "F" in message.flags, message)
            for message in maildir.snapshot()]


@dataclass
class Outcome:
    removed: int = 0
    octets: int = 0
    flagged_kept: int = 0
    gone: int = 0            # removed by someone else meanwhile
    tmp_removed: int = 0
    messages: int = 0


def run(config: configuration.Config, dry_run: bool = False, out=None) -> Outcome:
    root = Maildir(config.maildir, config.host_name)
    limits = limits_of(config, _file_system_size(root.path))
    boxes = {"INBOX": root}
    for name in root.list_folders():
        try:
            boxes[name] = root.folder(name)
        except MaildirError as exc:   # renamed or deleted meanwhile
            log.debug("skipping folder %s: %s", name, exc)
    listing = {name: candidates(box, name) for name, box in boxes.items()}
    outcome = Outcome(messages=sum(len(c) for c in listing.values()),
                      flagged_kept=sum(c.flagged for found in listing.values() for c in found))
    for candidate in select(listing, limits, time.time()):
        message = candidate.message
        if dry_run:
            print(f"would remove {message.key} from {candidate.folder} ({candidate.size} octets, "
                  f"delivered {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(candidate.delivered))})",
                  file=out or sys.stdout)
            outcome.removed += 1
            outcome.octets += candidate.size
            continue
        try:
            removed = boxes[candidate.folder].remove(message)
        except MaildirError as exc:
            log.error("cannot remove %s from %s: %s", message.key, candidate.folder, exc)
            continue
        if not removed:
            outcome.gone += 1
            continue
        outcome.removed += 1
        outcome.octets += candidate.size
        log.debug("expired %s from %s size=%d", message.key, candidate.folder, candidate.size,
                  extra={"BAREMAIL_MAILID": message.key, "BAREMAIL_FOLDER": candidate.folder,
                         "BAREMAIL_SIZE": str(candidate.size)})
    if not dry_run:
        for box in boxes.values():
            try:
                outcome.tmp_removed += box.clean_tmp()
            except MaildirError:
                pass
    return outcome


def describe(limits_config: configuration.Config) -> str:
    parts = []
    if limits_config.retention_max_age_days:
        parts.append(f"max_age_days={limits_config.retention_max_age_days:g}")
    if limits_config.retention_max_messages:
        parts.append(f"max_messages={limits_config.retention_max_messages}")
    if limits_config.retention_max_size.value:
        parts.append(f"max_size={limits_config.retention_max_size}")
    return " ".join(parts) or "no limits"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Remove old mail as [retention] in baremail.conf says.")
    parser.add_argument("--config", metavar="FILE",
                        help=f"configuration file (default: $BAREMAIL_CONFIG, then {configuration.SYSTEM_CONFIG})")
    parser.add_argument("--maildir", metavar="DIR", help="the Maildir (overrides the config file)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be removed; remove nothing")
    parser.add_argument("--debug", action="store_true", help="log every message removed")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = configuration.load(configuration.find_config_file(args.config), {"maildir": args.maildir})
    except configuration.ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return configuration.EX_CONFIG
    from . import journal
    journal.setup(PROG, debug=args.debug)
    started = time.monotonic()
    try:
        outcome = run(config, args.dry_run)
    except MaildirError as exc:
        log.error("%s", exc)
        return 74   # EX_IOERR
    took = time.monotonic() - started
    verb = "would remove" if args.dry_run else "removed"
    text = (f"{verb} {outcome.removed} of {outcome.messages} messages ({outcome.octets} octets) "
            f"in {took:.2f} s; kept {outcome.flagged_kept} flagged; limits: {describe(config)}")
    if outcome.gone:
        text += f"; {outcome.gone} removed meanwhile by another session"
    if outcome.tmp_removed:
        text += f"; {outcome.tmp_removed} stale files removed from tmp/"
    if args.dry_run:
        print(text)
    else:
        log.info("%s", text, extra=journal.fields(REMOVED=outcome.removed, OCTETS=outcome.octets,
                                                   FLAGGED_KEPT=outcome.flagged_kept, MESSAGES=outcome.messages,
                                                   SECONDS=f"{took:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
