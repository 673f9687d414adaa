"""baremail-expire as a real program, beside the real IMAP and POP3 services."""

import imaplib
import os
import poplib
import subprocess
import time

from baremail.maildir import Maildir
from servicekit import PYTHON, ROOT


def fill(path, count: int, subject: str = "n", batch: int = 500) -> list:
    """`count` messages, committed in batches (one fsync of new/ each); their keys in delivery order."""
    box = Maildir(str(path), "test.example")
    keys = []
    for start in range(0, count, batch):
        deliveries = []
        for n in range(start, min(start + batch, count)):
            delivery = box.begin()
            delivery.write(f"Subject: {subject} {n}\r\n\r\nbody {n}\r\n".encode())
            deliveries.append(delivery)
        keys += box.commit_all(deliveries)
    box.close()
    return keys


def expire(tmp_path, maildir, *args, **retention):
    config = tmp_path / "expire.conf"
    lines = [f"[baremail]\nmaildir = {maildir}\nhostname = test.example\n[retention]\n"]
    retention.setdefault("max_size", "0")
    lines += [f"{key} = {value}\n" for key, value in retention.items()]
    config.write_text("".join(lines))
    out_path, err_path = tmp_path / "expire.out", tmp_path / "expire.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        started = time.monotonic()
        process = subprocess.run([PYTHON, "-c", MEASURED, str(tmp_path / "expire.hwm"), "--config", str(config),
                                  *args], env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=out, stderr=err,
                                 timeout=300)
        took = time.monotonic() - started
    peak_kib = int((tmp_path / "expire.hwm").read_text())
    return process.returncode, out_path.read_text(), err_path.read_text(), took, peak_kib


# baremail-expire's main(), then its own peak RSS (VmHWM: of this program
# alone; the rusage of a child would count the forked test process too).
MEASURED = """
import sys
from baremail.expire import main
out = sys.argv.pop(1)
try:
    code = main(sys.argv[1:])
finally:
    hwm = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
    open(out, "w").write(hwm)
sys.exit(code)
"""


def keys_in(maildir) -> set:
    return {name.split(":")[0] for sub in ("new", "cur") for name in os.listdir(maildir / sub)}


def test_a_count_limit_leaves_exactly_the_newest_plus_the_flagged(tmp_path):
    maildir = tmp_path / "Maildir"
    keys = fill(maildir, 20_000)
    box = Maildir(str(maildir), "test.example")
    listing = {m.key: m for m in box.snapshot()}
    flagged = keys[:5] + keys[10_000:10_003]
    for key in flagged:
        box.set_flags(listing[key], add=["\\Flagged"])
    code, out, err, took, rss = expire(tmp_path, maildir, "--dry-run", max_messages=1000)
    assert code == 0, err
    assert sum(line.startswith("would remove ") and " from INBOX " in line
               for line in out.splitlines()) == 20_000 - 1000 - len(flagged)
    assert keys_in(maildir) == set(keys), "--dry-run removed something"
    code, out, err, took, rss = expire(tmp_path, maildir, max_messages=1000)
    assert code == 0, err
    assert keys_in(maildir) == set(keys[-1000:]) | set(flagged)
    assert f"removed {20_000 - 1000 - len(flagged)} of 20000 messages" in err
    assert "kept 8 flagged" in err
    print(f"baremail-expire: 20,000 messages, count limit 1,000: {took:.2f} s, peak RSS {rss / 1024:.1f} MiB")


def _cur_filled(maildir, count: int) -> None:
    box = Maildir(str(maildir), "test.example")
    box.close()
    # Files written straight into cur/ (no fsync): the run is what is measured.
    for n in range(count):
        name = f"{1_700_000_000 + n}.M{n % 1_000_000:06d}P1Q{n}R0.test.example,S=40,W=42:2,S"
        with open(maildir / "cur" / name, "wb") as handle:
            handle.write(b"Subject: %d\n\nbody of message %d\n" % (n, n))


def test_a_100000_message_maildir_expires_in_seconds_with_memory_flat(tmp_path, record_property):
    small, big = tmp_path / "small", tmp_path / "big"
    small.mkdir()
    big.mkdir()
    _cur_filled(small / "Maildir", 1_000)
    _cur_filled(big / "Maildir", 100_000)
    code, out, err, took_small, rss_small = expire(small, small / "Maildir", max_messages=100)
    assert code == 0, err
    code, out, err, took, rss = expire(big, big / "Maildir", max_messages=10_000)
    assert code == 0, err
    assert len(os.listdir(big / "Maildir" / "cur")) == 10_000
    assert len(os.listdir(small / "Maildir" / "cur")) == 100
    record_property("expire_100k_seconds", round(took, 2))
    record_property("expire_100k_peak_rss_mib", round(rss / 1024, 1))
    print(f"baremail-expire: 100,000 messages, 90,000 removed in {took:.2f} s, peak RSS {rss / 1024:.1f} MiB; "
          f"1,000 messages, 900 removed: {took_small:.2f} s, peak RSS {rss_small / 1024:.1f} MiB")
    assert took < 30
    # Flat: a hundred times the messages, (about) the same memory.
    assert rss - rss_small < 4 * 1024, (rss_small, rss)


def test_an_idling_imap_session_sees_the_removals_and_pop3_finishes_normally(start_service, tmp_path):
    maildir = tmp_path / "Maildir"
    keys = fill(maildir, 6)
    imap = start_service("imap", maildir)
    pop3 = start_service("pop3", maildir)
    client = imaplib.IMAP4("127.0.0.1", imap.port, timeout=30)
    client.login("u", "p")
    client.select("INBOX")
    pop = poplib.POP3("127.0.0.1", pop3.port, timeout=30)
    pop.user("u")
    pop.pass_("p")
    assert pop.stat()[0] == 6
    client.send(b"i IDLE\r\n")
    assert client.readline() == b"+ idling\r\n"
    code, _, err, _, _ = expire(tmp_path, maildir, max_messages=2)
    assert code == 0, err
    client.sock.settimeout(10)
    expunged = [client.readline() for _ in range(4)]
    # However the removals fall between the server's looks at the folder,
    # the EXPUNGEs, applied in order, must take away exactly the 4 oldest.
    shown = [1, 2, 3, 4, 5, 6]
    for line in expunged:
        number, word = line.split()[1:3]
        assert word == b"EXPUNGE", expunged
        del shown[int(number) - 1]
    assert shown == [5, 6], expunged
    client.send(b"DONE\r\n")
    assert client.readline() == b"i OK IDLE terminated\r\n"
    assert client.uid("SEARCH", "ALL")[1] == [b"5 6"]
    client.logout()
    # POP3: the messages it listed and that are gone answer "removed"; the rest as before.
    try:
        pop.retr(1)
        raise AssertionError("RETR of an expired message succeeded")
    except poplib.error_proto as exc:
        assert b"removed" in exc.args[0]
    assert pop.retr(6)[1][-1] == b"body 5"
    pop.dele(5)
    assert pop.quit().startswith(b"+OK")
    assert keys_in(maildir) == {keys[5]}
