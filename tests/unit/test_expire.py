"""Retention (baremail/expire.py): which messages go, and a Maildir that
changes while expiry runs."""

import multiprocessing
import os
import time

import pytest

from baremail import config as configuration
from baremail.expire import Candidate, Limits, run, select
from baremail.maildir import Maildir, delivery_order

NOW = 1_800_000_000.0
DAY = 86400


def candidate(folder: str, age_days: float, size: int = 100, flagged: bool = False, tie: int = 0) -> Candidate:
    delivered = NOW - age_days * DAY
    sec = int(delivered)
    return Candidate((sec, int((delivered - sec) * 1e6), f"{sec}.M{tie:06d}.{folder}{age_days}{tie}"),
                     folder, size, flagged)


def names(doomed) -> list:
    return [(c.folder, round((NOW - c.delivered) / DAY, 3)) for c in doomed]


def test_nothing_goes_without_limits():
    folders = {"INBOX": [candidate("INBOX", days) for days in range(10)]}
    assert select(folders, Limits(), NOW) == []


def test_age_limit_removes_what_is_older_in_every_folder():
    folders = {"INBOX": [candidate("INBOX", days) for days in (1, 5, 31, 400)],
               "Trash": [candidate("Trash", days) for days in (29, 30.5)]}
    doomed = select(folders, Limits(max_age=30 * DAY), NOW)
    assert names(doomed) == [("INBOX", 400), ("INBOX", 31), ("Trash", 30.5)]   # oldest first


def test_count_limit_keeps_the_newest_per_folder():
    folders = {"INBOX": [candidate("INBOX", days) for days in range(10)],
               "Trash": [candidate("Trash", days) for days in range(3)]}
    doomed = select(folders, Limits(max_messages=4), NOW)
    assert names(doomed) == [("INBOX", d) for d in (9, 8, 7, 6, 5, 4)]


def test_size_limit_removes_the_oldest_across_all_folders():
    folders = {"INBOX": [candidate("INBOX", days, size=100) for days in (1, 3, 5)],
               "Archive": [candidate("Archive", days, size=100) for days in (2, 4, 6)]}
    doomed = select(folders, Limits(max_size=350), NOW)
    assert names(doomed) == [("Archive", 6), ("INBOX", 5), ("Archive", 4)]


def test_flagged_messages_stay_whatever_their_age_and_count_toward_no_limit():
    folders = {"INBOX": [candidate("INBOX", 900, flagged=True), candidate("INBOX", 800, flagged=True)]
               + [candidate("INBOX", days) for days in range(5)]}
    doomed = select(folders, Limits(max_age=30 * DAY, max_messages=2), NOW)
    assert names(doomed) == [("INBOX", 4), ("INBOX", 3), ("INBOX", 2)]
    assert all(not c.flagged for c in doomed)


def test_flagged_messages_take_space_the_size_limit_then_takes_from_the_others():
    folders = {"INBOX": [candidate("INBOX", 100, size=300, flagged=True)]
               + [candidate("INBOX", days, size=100) for days in (1, 2, 3)]}
    doomed = select(folders, Limits(max_size=450), NOW)
    assert names(doomed) == [("INBOX", 3), ("INBOX", 2)]


def test_limits_combine():
    folders = {"INBOX": [candidate("INBOX", days, size=10) for days in range(1, 21)]}
    doomed = select(folders, Limits(max_age=15.5 * DAY, max_messages=10, max_size=80), NOW)
    # age takes 16..20, the count 11..15, the size 9 and 10
    assert names(doomed) == [("INBOX", d) for d in range(20, 8, -1)]


def test_ties_in_delivery_time_go_by_key_the_same_every_time():
    folders = {"INBOX": [candidate("INBOX", 5, tie=t) for t in (3, 1, 2, 0)]}
    doomed = select(folders, Limits(max_messages=2), NOW)
    assert [c.order[2] for c in doomed] == sorted(c.order[2] for c in folders["INBOX"])[:2]
    assert select(folders, Limits(max_messages=2), NOW) == doomed


# -- against a real Maildir -----------------------------------------------------------

def settings(maildir, **retention) -> configuration.Config:
    values = {"maildir": str(maildir), "hostname": "test.example",
              "retention_max_size": configuration.Amount(0)}
    values.update({f"retention_{name}": value for name, value in retention.items()})
    return configuration.load(None, values)


def test_run_removes_through_the_library_and_keeps_flagged(tmp_path):
    box = Maildir(str(tmp_path / "Maildir"), "test.example")
    keys = [box.deliver([b"Subject: %d\r\n\r\nx\r\n" % n]) for n in range(6)]
    [first] = [m for m in box.snapshot() if m.key == keys[0]]
    box.set_flags(first, add=["\\Flagged"])
    trash = box.create_folder("Trash")
    [trash.deliver([b"Subject: t%d\r\n\r\nx\r\n" % n]) for n in range(3)]
    outcome = run(settings(tmp_path / "Maildir", max_messages=2))
    assert outcome.removed == 3 + 1 and outcome.flagged_kept == 1
    assert sorted(m.key for m in box.snapshot()) == sorted([keys[0], keys[4], keys[5]])
    assert len(trash.snapshot()) == 2


def test_dry_run_removes_nothing_and_says_what_it_would(tmp_path, capsys):
    box = Maildir(str(tmp_path / "Maildir"), "test.example")
    for n in range(5):
        box.deliver([b"Subject: %d\r\n\r\nx\r\n" % n])
    outcome = run(settings(tmp_path / "Maildir", max_messages=1), dry_run=True)
    assert outcome.removed == 4 and len(box.snapshot()) == 5
    assert capsys.readouterr().out.count("would remove ") == 4


def _churn(path: str, stop_at: float, seed: int, record: str, old: list) -> None:
    """Another process: delivers new mail, and removes old mail meanwhile."""
    box = Maildir(path, f"churn{seed}.example")
    with open(record, "a") as out:
        n = 0
        while time.time() < stop_at:
            out.write(box.deliver([b"Subject: new\r\n\r\nx\r\n"]) + "\n")
            out.flush()
            n += 1
            if n % 3 == 0:
                present = {m.key: m for m in box.snapshot()}
                victim = present.get(old[(n * 7 + seed) % len(old)])
                if victim is not None and "F" not in victim.flags:
                    box.remove(victim)


def test_a_maildir_changing_while_expiry_runs_loses_nothing_that_should_stay(tmp_path):
    path = str(tmp_path / "Maildir")
    box = Maildir(path, "test.example")
    for n in range(300):
        box.deliver([b"Subject: old %d\r\n\r\n" % n])
    old = [m.key for m in box.snapshot()]
    flagged = set()
    for message in box.snapshot()[::15]:
        box.set_flags(message, add=["\\Flagged"])
        flagged.add(message.key)
    record = str(tmp_path / "delivered")
    stop_at = time.time() + 2.5
    workers = [multiprocessing.Process(target=_churn, args=(path, stop_at, seed, record, old))
               for seed in range(2)]
    for worker in workers:
        worker.start()
    runs = []
    try:
        while time.time() < stop_at - 0.3:
            started = time.time()
            outcome = run(settings(path, max_messages=5))   # never raises, whatever vanishes
            runs.append((started, outcome))
    finally:
        for worker in workers:
            worker.join(10)
    assert len(runs) >= 2 and all(worker.exitcode == 0 for worker in workers)
    present = {m.key for m in box.snapshot()}
    assert flagged <= present, "a flagged message was expired"
    delivered = open(record).read().split()
    assert len(delivered) > 20
    last_start = runs[-1][0]
    # What the last run could not have listed (delivered after it began) is all still there.
    def delivered_at(key: str) -> float:
        sec, usec, _ = delivery_order(key)
        return sec + usec / 1e6

    after_last = [key for key in delivered if delivered_at(key) > last_start + 0.05]
    assert after_last and set(after_last) <= present
