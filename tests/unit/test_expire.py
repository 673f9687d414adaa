"""Retention (baremail/expire.py): which messages go, and a Maildir that
changes while expiry runs."""

import itertools
import multiprocessing
import os
import time

from hypothesis import given, settings as hypothesis_settings, strategies as st

from baremail import config as configuration
from baremail.expire import find_cut, run
from baremail.maildir import Maildir, delivery_order

DAY = 86400
_serial = itertools.count()


# -- finding a cut --------------------------------------------------------------------

def greedy(messages: list, cap: int) -> set:
    """What a sort of everything gives: the oldest go until the rest fit."""
    total = sum(weight for _, _, weight in messages)
    doomed = set()
    for micros, key, weight in sorted(m for m in messages if m[0] is not None):
        if total <= cap:
            break
        doomed.add(key)
        total -= weight
    return doomed


messages = st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 5000)), st.integers(1, 50)), max_size=60)


@hypothesis_settings(max_examples=300, deadline=None)
@given(messages, st.integers(0, 1500), st.sampled_from([1, 7, 64, 10_000]), st.sampled_from([1, 3, 1000]))
def test_a_cut_removes_exactly_what_sorting_everything_would(found, cap, first_width, sorted_at_most):
    # Small buckets and a small sorting limit make it refine several times.
    listing = [(micros, f"k{n:03d}", weight) for n, (micros, weight) in enumerate(found)]
    passes = []

    def lister():
        passes.append(1)
        return iter(listing)

    cut = find_cut(lister, cap, first_width=first_width, sorted_at_most=sorted_at_most)
    doomed = set() if cut is None else {key for micros, key, _ in listing
                                        if micros is not None and (micros, key) < cut}
    assert doomed == greedy(listing, cap)
    assert len(passes) <= 8


def test_a_cut_needs_few_passes_over_a_dense_maildir():
    # 100,000 messages delivered within one second: still a handful of passes.
    listing = [(1_700_000_000_000_000 + n * 10, f"k{n:06d}", 1) for n in range(100_000)]
    passes = []

    def lister():
        passes.append(1)
        return iter(listing)

    cut = find_cut(lister, 1000)
    assert cut == listing[-1000][:2]
    assert len(passes) <= 6


# -- against a real Maildir -----------------------------------------------------------

def put(root, folder: str, age_days: float, size: int = 100, flagged: bool = False, tie: int = 0) -> str:
    """A message file delivered `age_days` ago (its name says when, as
    BareMail's do); returns its key."""
    if not (root / "cur").exists():
        Maildir(str(root), "test.example").close()
    path = root if folder == "INBOX" else root / f".{folder}"
    if folder != "INBOX" and not path.exists():
        Maildir(str(root), "test.example").create_folder(folder).close()
    delivered = time.time() - age_days * DAY
    sec = int(delivered)
    key = f"{sec}.M{int((delivered - sec) * 1e6):06d}P{tie}Q{next(_serial)}R0.test.example,S={size},W={size}"
    (path / "cur" / f"{key}:2,{'F' if flagged else ''}S").write_bytes(b"x" * size)
    return key


def expired(root, **retention) -> list:
    """Runs expiry; returns the (folder, age in days) of what it removed, oldest first."""
    listed = {}
    for folder in ["INBOX"] + [p.name[1:] for p in root.iterdir() if p.name.startswith(".")]:
        path = root if folder == "INBOX" else root / f".{folder}"
        for name in os.listdir(path / "cur"):
            listed[(folder, name)] = delivery_order(name)
    now = time.time()
    run(settings(root, **retention))
    gone = [(order, folder) for (folder, name), order in listed.items()
            if not os.path.exists((root if folder == "INBOX" else root / f".{folder}") / "cur" / name)]
    return [(folder, round((now - sec - usec / 1e6) / DAY, 1)) for (sec, usec, _), folder in sorted(gone)]


def test_nothing_goes_without_limits(tmp_path):
    for days in range(10):
        put(tmp_path, "INBOX", days)
    assert expired(tmp_path) == []


def test_age_limit_removes_what_is_older_in_every_folder(tmp_path):
    for days in (1, 5, 31, 400):
        put(tmp_path, "INBOX", days)
    for days in (29, 30.5):
        put(tmp_path, "Trash", days)
    assert expired(tmp_path, max_age_days=30) == [("INBOX", 400), ("INBOX", 31), ("Trash", 30.5)]


def test_count_limit_keeps_the_newest_per_folder(tmp_path):
    for days in range(10):
        put(tmp_path, "INBOX", days)
    for days in range(3):
        put(tmp_path, "Trash", days)
    assert expired(tmp_path, max_messages=4) == [("INBOX", d) for d in (9, 8, 7, 6, 5, 4)]


def test_size_limit_removes_the_oldest_across_all_folders(tmp_path):
    for days in (1, 3, 5):
        put(tmp_path, "INBOX", days, size=100)
    for days in (2, 4, 6):
        put(tmp_path, "Archive", days, size=100)
    assert expired(tmp_path, max_size=350) == [("Archive", 6), ("INBOX", 5), ("Archive", 4)]


def test_flagged_messages_stay_whatever_their_age_and_count_toward_no_limit(tmp_path):
    put(tmp_path, "INBOX", 900, flagged=True)
    put(tmp_path, "INBOX", 800, flagged=True)
    for days in range(5):
        put(tmp_path, "INBOX", days)
    assert expired(tmp_path, max_age_days=30, max_messages=2) == [("INBOX", 4), ("INBOX", 3), ("INBOX", 2)]


def test_flagged_messages_take_space_the_size_limit_then_takes_from_the_others(tmp_path):
    put(tmp_path, "INBOX", 100, size=300, flagged=True)
    for days in (1, 2, 3):
        put(tmp_path, "INBOX", days, size=100)
    assert expired(tmp_path, max_size=450) == [("INBOX", 3), ("INBOX", 2)]


def test_limits_combine(tmp_path):
    for days in range(1, 21):
        put(tmp_path, "INBOX", days, size=10)
    # age takes 16..20, the count 11..15, the size 9 and 10
    assert expired(tmp_path, max_age_days=15.5, max_messages=10, max_size=80) == [
        ("INBOX", d) for d in range(20, 8, -1)]


def test_ties_in_delivery_time_go_by_key_the_same_every_time(tmp_path):
    put(tmp_path, "INBOX", 5)
    [name] = os.listdir(tmp_path / "cur")
    when = name.split("P")[0]   # four messages delivered in the same microsecond
    for tie in (3, 1, 2, 0):
        (tmp_path / "cur" / f"{when}P{tie}Q1R0.test.example,S=10,W=10:2,S").write_bytes(b"x" * 10)
    os.unlink(tmp_path / "cur" / name)
    named = sorted(os.listdir(tmp_path / "cur"))
    run(settings(tmp_path, max_messages=2))
    assert sorted(os.listdir(tmp_path / "cur")) == named[2:]
    run(settings(tmp_path, max_messages=2))
    assert sorted(os.listdir(tmp_path / "cur")) == named[2:]


def test_mail_delivered_while_expiry_runs_is_neither_counted_nor_removed(tmp_path):
    for days in range(5):
        put(tmp_path, "INBOX", days)
    later = put(tmp_path, "INBOX", -1)   # "delivered" after the run begins
    outcome = run(settings(tmp_path, max_messages=2))
    assert outcome.messages == 5 and outcome.removed == 3
    assert any(name.startswith(later) for name in os.listdir(tmp_path / "cur"))


def test_a_message_with_no_time_in_its_name_counts_as_newest_and_stays(tmp_path):
    for days in range(4):
        put(tmp_path, "INBOX", days)
    (tmp_path / "cur" / "foreign-message:2,S").write_bytes(b"Subject: x\r\n\r\nx\r\n")
    assert expired(tmp_path, max_messages=2) == [("INBOX", 3), ("INBOX", 2), ("INBOX", 1)]
    assert (tmp_path / "cur" / "foreign-message:2,S").exists()


# -- against a real Maildir -----------------------------------------------------------

def settings(maildir, **retention) -> configuration.Config:
    values = {"maildir": str(maildir), "hostname": "test.example",
              "retention_max_size": configuration.Amount(0)}
    values.update({f"retention_{name}": configuration.Amount(value) if name == "max_size" else value
                   for name, value in retention.items()})
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
