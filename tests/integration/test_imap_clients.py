"""baremail-imap with real IMAP clients from Debian 12.

Every test runs the real programs: baremail-smtp delivers (so the Maildir
is exactly as production makes it) and baremail-imap serves, both
socket-activated through tests/servicekit.py; the client is the Debian
package's binary, run with its configuration and HOME in tmp_path and a
timeout, talking to the server through a recording proxy (imapclients.py)
so that any failure shows the IMAP exchange behind it.

mbsync (isync), offlineimap3, fetchmail (plain and --idle), getmail6,
curl and neomutt; `make test` installs them (see TEST_PACKAGES).
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from imapclients import (Imap, Recorder, client_env, deliver, differences, explain, flags_by_subject,
                         maildir_flags, maildir_messages, need, run, stored_by_subject, stored_files, tree, unwire,
                         wire)

# Messages with what tends to break: dot lines, 8-bit text, a folded header,
# a long line, and one large enough (about 400 KB) to be streamed in pieces.
BIG = ("Subject: {subject}\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
       "Content-Transfer-Encoding: base64\r\n\r\n").encode() + b"".join(
    (b"%076d\r\n" % n) for n in range(5200))


def payload(subject: str, kind: int = 0) -> bytes:
    if kind == 1:
        return (f"Subject: {subject}\r\nFrom: A <a@example.org>\r\nX-Folded: one\r\n\ttwo\r\n\r\n"
                ".\r\n..\r\n.leading dot\r\nGrüße, 8-bit\r\n" + "x" * 990 + "\r\nend\r\n").encode()
    if kind == 2:
        return BIG.replace(b"{subject}", subject.encode())
    return f"Subject: {subject}\r\nFrom: b@example.org\r\n\r\nbody of {subject}\r\n".encode()


@pytest.fixture
def imap_services(start_service, tmp_path):
    """baremail-smtp and baremail-imap on one Maildir."""
    maildir = tmp_path / "Maildir"
    return start_service("smtp", maildir), start_service("imap", maildir)


@pytest.fixture
def recorder():
    """recorder(service) -> a Recorder (recording proxy) in front of it; the
    clients connect to its port."""
    made: list[Recorder] = []

    def make(service) -> Recorder:
        made.append(Recorder(service))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


# --- mbsync --------------------------------------------------------------------------------

def without_tuid(data: bytes) -> bytes:
    """mbsync inserts one `X-TUID:` header into each message it copies
    (to find it again after storing it); everything else must be as
    stored."""
    header, sep, body = data.partition(b"\n\n")
    lines = header.split(b"\n")
    tuids = [line for line in lines if line.startswith(b"X-TUID: ")]
    assert len(tuids) == 1, f"expected one X-TUID header from mbsync in {header!r}"
    return b"\n".join(line for line in lines if not line.startswith(b"X-TUID: ")) + sep + body


def local_by_subject(path: Path) -> dict[str, Path]:
    result = {}
    for sub in ("new", "cur"):
        for entry in (path / sub).iterdir():
            match = re.search(rb"^Subject: (.*)$", entry.read_bytes(), re.M)
            result[match.group(1).decode()] = entry
    return result


def letters(path: Path) -> str:
    info = path.name.partition(":")[2]
    return info[2:] if info.startswith("2,") else ""


def mbsync_config(home: Path, port: int) -> Path:
    config = home / "mbsyncrc"
    local = home / "Mail"
    config.write_text(f"""\
IMAPAccount baremail
Host 127.0.0.1
Port {port}
User anyone
Pass secret
SSLType None
AuthMechs LOGIN
Timeout 10

IMAPStore far
Account baremail

MaildirStore near
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel mail
Far :far:
Near :near:
Patterns INBOX Trash
Create Both
Expunge Both
Sync All
CopyArrivalDate yes
SyncState {home}/state/
""")
    (home / "state").mkdir(exist_ok=True)
    local.mkdir(exist_ok=True)
    return config


@need("mbsync", "isync")
def test_mbsync_two_way_sync_of_inbox_and_trash(imap_services, start_service, recorder, tmp_path):
    smtp, imap = imap_services
    maildir = smtp.maildir
    home = tmp_path / "mbsync"
    env = client_env(home)
    local = home / "Mail"
    deliver(smtp, payload("mb-1"), payload("mb-2", 1), payload("mb-3", 2), payload("mb-4"))
    with Imap(imap) as server:
        server.ok(server.client.create("Trash"))
        server.select()
        server.ok(server.client.uid("MOVE", str(server.uid_of("mb-4")), "Trash"))
        validity = server.uidvalidity()
    stored = stored_by_subject(maildir)
    stored_trash = stored_by_subject(maildir, "Trash")

    def sync(proxy) -> subprocess.CompletedProcess:
        return run(["mbsync", "-c", str(mbsync_config(home, proxy.port)), "mail"], env, proxy)

    # 1: everything arrives, byte for byte
    proxy = recorder(imap)
    sync(proxy)
    mine, mine_trash = local_by_subject(local / "INBOX"), local_by_subject(local / "Trash")
    assert sorted(mine) == ["mb-1", "mb-2", "mb-3"] and sorted(mine_trash) == ["mb-4"], proxy.transcript()
    for subject, path in mine.items():
        assert without_tuid(path.read_bytes()) == stored[subject], subject
    assert without_tuid(mine_trash["mb-4"].read_bytes()) == stored_trash["mb-4"]
    assert f"FarUidValidity {validity}\n" in (home / "state" / "INBOX").read_text()

    # 2: changes on both sides, each propagated to the other
    seen = mine["mb-1"]
    seen.rename(local / "INBOX" / "cur" / (seen.name.partition(":")[0] + ":2,FS"))   # read + flagged here
    mine["mb-2"].unlink()                                                              # deleted here
    written = b"Subject: mb-local\nFrom: me@example.org\n\nwritten on the near side\n.\n"
    pushed = local / "INBOX" / "cur" / "1700000000.local1.host:2,S"
    pushed.write_bytes(written)                                                        # new here, read
    os.utime(pushed, (1600000000, 1600000000))                                         # (arrived in 2020)
    with Imap(imap) as server:
        server.store(server.uid_of("mb-3"), "+FLAGS", "(\\Answered)")                 # answered there
        trash_uid = server.uid_of("mb-4", "Trash")
        server.store(trash_uid, "+FLAGS", "(\\Deleted)")                              # deleted there
        server.ok(server.client.expunge())
    deliver(smtp, payload("mb-5", 1))                                                  # arrived there
    proxy = recorder(imap)
    sync(proxy)
    on_disk = stored_by_subject(maildir)
    assert sorted(on_disk) == ["mb-1", "mb-3", "mb-5", "mb-local"], proxy.transcript()
    flags = flags_by_subject(maildir)
    assert flags == {"mb-1": "FS", "mb-3": "R", "mb-5": "", "mb-local": "S"}, (flags, proxy.transcript())
    assert without_tuid(on_disk["mb-local"]) == written
    assert stored_by_subject(maildir, "Trash") == {}
    mine, mine_trash = local_by_subject(local / "INBOX"), local_by_subject(local / "Trash")
    assert sorted(mine) == ["mb-1", "mb-3", "mb-5", "mb-local"] and mine_trash == {}, proxy.transcript()
    assert "R" in letters(mine["mb-3"]), (mine["mb-3"].name, proxy.transcript())
    assert without_tuid(mine["mb-5"].read_bytes()) == on_disk["mb-5"]
    with Imap(imap) as server:   # CopyArrivalDate: INTERNALDATE both ways
        assert server.internal_date("mb-local") == 1600000000, proxy.transcript()
        assert mine["mb-5"].stat().st_mtime == server.internal_date("mb-5"), proxy.transcript()
    assert any("APPENDUID" in line for line in proxy.lines("S")), "no APPENDUID\n" + proxy.transcript()

    # 3: nothing changed since: a sync changes nothing, on either side.
    # 4: nor does one against a new baremail-imap process (a restart): the
    # UIDVALIDITY and UIDs mbsync's state holds are still the server's.
    for step in (3, 4):
        if step == 4:
            imap.stop()
            imap = start_service("imap", maildir)
        before = mbsync_snapshot(imap, home, maildir)
        assert before[2][0] == validity
        proxy = recorder(imap)
        sync(proxy)
        after = mbsync_snapshot(imap, home, maildir)
        assert differences(before[0], after[0]) == [], f"{step}: near side changed\n" + proxy.transcript()
        assert differences(before[1], after[1]) == [], f"{step}: server's Maildir changed\n" + proxy.transcript()
        assert after[2] == before[2], f"{step}: server's IMAP view changed\n" + proxy.transcript()
        assert proxy.changing_commands() == [], proxy.transcript()


def mbsync_snapshot(imap, home: Path, maildir: Path) -> tuple:
    """Both sides of the sync: the near side's files (mbsync's state
    included), the server's Maildir files, and the server's IMAP view."""
    with Imap(imap) as server:
        view = (server.uidvalidity(), server.messages(), server.uidvalidity("Trash"), server.messages("Trash"))
    return tree(home, skip=("mbsyncrc",)), tree(maildir), view


# --- offlineimap3 ----------------------------------------------------------------------------

@need("offlineimap", "offlineimap3")
def test_offlineimap_syncs_inbox_byte_identical_and_back(imap_services, recorder, tmp_path):
    smtp, imap = imap_services
    deliver(smtp, payload("oi-1"), payload("oi-2", 1), payload("oi-3", 2))
    stored = stored_by_subject(smtp.maildir)
    home = tmp_path / "offlineimap"
    env = client_env(home)
    proxy = recorder(imap)
    config = home / "offlineimaprc"
    config.write_text(f"""\
[general]
accounts = test
metadata = {home}/metadata
ui = quiet

[Account test]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {home}/Mail

[Repository remote]
type = IMAP
remotehost = 127.0.0.1
remoteport = {proxy.port}
remoteuser = anyone
remotepass = secret
ssl = no
starttls = no
folderfilter = lambda folder: folder == 'INBOX'
""")

    def sync():
        done = run(["offlineimap", "-c", str(config), "-o", "-u", "quiet"], env, proxy)
        assert b"ERROR" not in done.stdout + done.stderr, explain(done, proxy)

    sync()
    inbox = home / "Mail" / "INBOX"
    assert maildir_messages(inbox) == sorted(stored.values()), proxy.transcript()
    assert set(maildir_flags(inbox).values()) == {""}   # nothing read yet, on either side
    assert flags_by_subject(smtp.maildir) == {"oi-1": "", "oi-2": "", "oi-3": ""}, proxy.transcript()

    # read, deleted and written here -> \Seen, expunged and APPENDed there
    by_subject = {re.search(rb"^Subject: (.*)$", entry.read_bytes(), re.M).group(1).decode(): entry
                  for entry in (inbox / "new").iterdir()}
    read = by_subject["oi-2"]
    read.rename(inbox / "cur" / (read.name.partition(":")[0] + ":2,S"))
    by_subject["oi-1"].unlink()
    written = b"Subject: oi-local\nFrom: me@example.org\n\nwritten here\n.\n"
    (inbox / "new" / "1700000000.local.host").write_bytes(written)
    sync()
    assert flags_by_subject(smtp.maildir) == {"oi-2": "S", "oi-3": "", "oi-local": ""}, proxy.transcript()
    # as written: the APPENDUID told offlineimap the UID (no X-OfflineIMAP header needed)
    assert stored_by_subject(smtp.maildir)["oi-local"] == written, proxy.transcript()
    [appenduid] = [int(match.group(1)) for line in proxy.lines("S")
                   for match in [re.search(r"\[APPENDUID \d+ (\d+)\]", line)] if match]
    [mine] = [entry for entry in (inbox / "new").iterdir() if entry.read_bytes() == written]
    assert f",U={appenduid}," in mine.name, mine.name

    # a sync with nothing to do changes nothing, on either side
    before = tree(home, skip=("offlineimaprc",)), tree(smtp.maildir)
    sync()
    after = tree(home, skip=("offlineimaprc",)), tree(smtp.maildir)
    assert differences(before[0], after[0]) == [] and differences(before[1], after[1]) == [], proxy.transcript()


# --- fetchmail -------------------------------------------------------------------------------

def fetchmail_rc(home: Path, port: int, out: Path) -> Path:
    """An rcfile whose mda puts each message into a file of its own in
    `out`, under its final name only once it is complete."""
    out.mkdir(parents=True, exist_ok=True)
    mda = home / "mda"
    mda.write_text('#!/bin/sh\nf=$(mktemp "$1/.part.XXXXXX") && cat > "$f" && mv "$f" "$1/m${f##*.part}"\n')
    mda.chmod(0o755)
    rc = home / "fetchmailrc"
    rc.write_text(f"poll 127.0.0.1 protocol imap port {port} user anyone password secret "
                  f"mda \"{mda} {out}\" keep sslproto ''\n")
    rc.chmod(0o600)
    return rc


def delivered(directory: Path) -> list[bytes]:
    """What the mda delivered (complete files only), sorted."""
    return sorted(entry.read_bytes() for entry in directory.iterdir() if not entry.name.startswith("."))


@need("fetchmail", "fetchmail")
def test_fetchmail_over_imap_byte_identical_and_keep(imap_services, recorder, tmp_path):
    smtp, imap = imap_services
    deliver(smtp, payload("fm-1"), payload("fm-2", 1), payload("fm-3", 2))
    stored = stored_by_subject(smtp.maildir)
    home = tmp_path / "fetchmail"
    env = client_env(home, FETCHMAILHOME=str(home))   # its idfile too (the pidfile: see argv)
    out = tmp_path / "delivered"
    proxy = recorder(imap)
    rc = fetchmail_rc(home, proxy.port, out)
    argv = ["fetchmail", "-f", str(rc), "--pidfile", str(home / "fetchmail.pid"), "--nosyslog", "--invisible",
            "-N", "-v"]
    run(argv, env, proxy)
    assert delivered(out) == sorted(stored.values()), proxy.transcript()
    # keep: all still on the server, unchanged, now \Seen (that is how fetchmail knows them)
    after = stored_by_subject(smtp.maildir)
    assert after == stored
    assert flags_by_subject(smtp.maildir) == {"fm-1": "S", "fm-2": "S", "fm-3": "S"}, proxy.transcript()
    # a second poll finds nothing new (exit 1: no mail) and delivers nothing
    run(argv, env, proxy, ok=(1,))
    assert len(delivered(out)) == 3


@need("fetchmail", "fetchmail")
def test_fetchmail_idle_gets_a_new_message_within_seconds(imap_services, recorder, tmp_path):
    smtp, imap = imap_services
    deliver(smtp, payload("idle-1"))
    home = tmp_path / "fetchmail"
    env = client_env(home, FETCHMAILHOME=str(home))
    out = tmp_path / "delivered"
    proxy = recorder(imap)
    rc = fetchmail_rc(home, proxy.port, out)
    log = open(tmp_path / "fetchmail.log", "wb")
    daemon = subprocess.Popen(["fetchmail", "-f", str(rc), "--pidfile", str(home / "fetchmail.pid"), "--nosyslog",
                               "--invisible", "-N", "-v", "--idle"],
                              env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        def wait_for(predicate, seconds: float, what: str):
            deadline = time.monotonic() + seconds
            while not predicate():
                if daemon.poll() is not None:
                    raise AssertionError(f"fetchmail exited {daemon.returncode} while waiting for {what}\n"
                                         + (tmp_path / "fetchmail.log").read_text(errors="replace")
                                         + proxy.transcript())
                if time.monotonic() > deadline:
                    raise AssertionError(f"no {what} within {seconds} s\n" + proxy.transcript())
                time.sleep(0.02)

        # the first message is fetched, then fetchmail waits in IDLE
        wait_for(lambda: len(delivered(out)) == 1, 15, "first message")
        def idling() -> bool:
            lines = proxy.lines()
            idle = [n for n, line in enumerate(lines) if re.search(r" C: \S+ IDLE$", line)]
            return bool(idle) and any(re.search(r" S: \+ ", line) for line in lines[idle[-1]:])
        wait_for(idling, 10, "IDLE")
        time.sleep(0.3)
        sent = time.monotonic()
        deliver(smtp, payload("idle-2", 1))
        wait_for(lambda: len(delivered(out)) == 2, 5, "message pushed through IDLE")
        took = time.monotonic() - sent
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(5)
        log.close()
    stored = stored_by_subject(smtp.maildir)
    assert delivered(out) == sorted(stored.values())
    # it came through IDLE: the server's EXISTS ended the IDLE, not a poll
    lines = proxy.lines()
    idles = [n for n, line in enumerate(lines) if re.search(r" C: \S+ IDLE$", line)]
    exists = [n for n, line in enumerate(lines) if re.search(r" S: \* 2 EXISTS$", line)]
    assert idles and exists and idles[0] < exists[0], proxy.transcript()
    assert any(re.search(r" C: DONE$", line) for line in lines[exists[0]:]), proxy.transcript()
    assert took < 5


# --- getmail6 --------------------------------------------------------------------------------

@pytest.fixture
def delivery_maildir():
    """A Maildir getmail may deliver into. getmail refuses to deliver as
    root; when the tests run as root it delivers as `nobody`, which needs
    a directory outside tmp_path (pytest keeps that 0700)."""
    base = Path(tempfile.mkdtemp(prefix="baremail-getmail-"))
    try:
        base.chmod(0o755)
        target = base / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (target / sub).mkdir(parents=True)
        user = None
        if os.geteuid() == 0:
            user = "nobody"
            for path in (target, *(target / sub for sub in ("cur", "new", "tmp"))):
                shutil.chown(path, "nobody", "nogroup")
        yield target, user
    finally:
        shutil.rmtree(base, ignore_errors=True)


@need("getmail", "getmail6")
def test_getmail_simple_imap_retriever_into_a_maildir(imap_services, recorder, delivery_maildir, tmp_path):
    smtp, imap = imap_services
    target, user = delivery_maildir
    deliver(smtp, payload("gm-1"), payload("gm-2", 1))
    first = stored_by_subject(smtp.maildir)
    state = tmp_path / "getmail"
    state.mkdir()
    env = client_env(tmp_path / "home")
    proxy = recorder(imap)

    def getmail(delete: bool):
        rc = state / "getmailrc"
        rc.write_text(f"""\
[retriever]
type = SimpleIMAPRetriever
server = 127.0.0.1
port = {proxy.port}
username = anyone
password = secret
mailboxes = ("INBOX",)
record_mailbox = false

[destination]
type = Maildir
path = {target}/
{f"user = {user}" if user else ""}

[options]
read_all = false
delete = {str(delete).lower()}
delivered_to = false
received = false
verbose = 1
""")
        done = run(["getmail", f"--rcfile={rc}", f"--getmaildir={state}"], env, proxy)
        assert b"error" not in (done.stdout + done.stderr).lower(), explain(done, proxy)

    getmail(delete=False)
    assert maildir_messages(target) == sorted(first.values()), proxy.transcript()
    assert stored_by_subject(smtp.maildir) == first   # kept

    # only what is new since is retrieved (getmail remembers UIDVALIDITY/UID);
    # with delete, everything it has retrieved is deleted on the server
    deliver(smtp, payload("gm-3", 2))
    third = stored_by_subject(smtp.maildir)["gm-3"]
    getmail(delete=True)
    assert maildir_messages(target) == sorted([*first.values(), third]), proxy.transcript()
    assert stored_files(smtp.maildir) == {}, proxy.transcript()


# --- curl ------------------------------------------------------------------------------------

@need("curl", "curl")
def test_curl_list_fetch_by_uid_search_and_append(imap_services, recorder, tmp_path):
    smtp, imap = imap_services
    deliver(smtp, payload("curl-1"), payload("curl-2", 1), payload("curl-3", 2))
    with Imap(imap) as server:
        server.ok(server.client.create("Trash"))
        server.ok(server.client.create("Lists.2024"))
        uids = {subject: server.uid_of(subject) for subject in ("curl-1", "curl-2", "curl-3")}
    stored = stored_by_subject(smtp.maildir)
    env = client_env(tmp_path / "home")
    proxy = recorder(imap)
    url = f"imap://127.0.0.1:{proxy.port}"
    curl = ["curl", "-sS", "--max-time", "20", "--user", "anyone:secret"]

    listing = run([*curl, f"{url}/"], env, proxy).stdout
    assert listing == (b'* LIST (\\HasNoChildren) "." "INBOX"\r\n'
                       b'* LIST (\\Noselect \\HasChildren) "." "Lists"\r\n'
                       b'* LIST (\\HasNoChildren) "." "Lists.2024"\r\n'
                       b'* LIST (\\HasNoChildren \\Trash) "." "Trash"\r\n'), proxy.transcript()

    for subject in ("curl-2", "curl-3"):
        fetched = run([*curl, f"{url}/INBOX;UID={uids[subject]}"], env, proxy).stdout
        assert fetched == wire(stored[subject]), proxy.transcript()

    found = run([*curl, f"{url}/INBOX", "-X", "UID SEARCH SUBJECT curl-2"], env, proxy).stdout
    assert found == b"* SEARCH %d\r\n" % uids["curl-2"], proxy.transcript()
    found = run([*curl, f"{url}/INBOX", "-X", f"UID SEARCH UID {uids['curl-2']}:*"], env, proxy).stdout
    assert found == b"* SEARCH %d %d\r\n" % (uids["curl-2"], uids["curl-3"]), proxy.transcript()

    message = tmp_path / "append.eml"
    message.write_bytes(b"Subject: appended by curl\r\nFrom: c@example.org\r\n\r\n.\r\nGr\xc3\xbc\xc3\x9fe\r\n")
    run([*curl, f"{url}/Trash", "-T", str(message)], env, proxy)
    with Imap(imap) as server:
        [(uid, (flags, body))] = server.messages("Trash").items()
    assert body == message.read_bytes(), proxy.transcript()
    assert stored_by_subject(smtp.maildir, "Trash") == {"appended by curl": unwire(message.read_bytes())}
    assert any("APPENDUID" in line and f" {uid}] " in line for line in proxy.lines("S")), proxy.transcript()


# --- neomutt ---------------------------------------------------------------------------------

def run_in_pty(argv, env, seconds: float) -> tuple[int, bytes]:
    """Run a curses program on a pseudo-terminal of its own (it needs one)
    to its end, at most `seconds`; -> (exit status, what it drew)."""
    pid, fd = pty.fork()
    if pid == 0:   # the child: exec at once, nothing else
        try:
            os.execvpe(argv[0], argv, env)
        finally:
            os._exit(127)
    screen = b""
    deadline = time.monotonic() + seconds
    status = None
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:   # EIO: the child closed the terminal
                    data = b""
                screen += data
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(code)
                break
    finally:
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    if status is None:
        raise AssertionError(f"{argv[0]} still running after {seconds} s; its screen:\n"
                             + screen[-3000:].decode("utf-8", "replace"))
    return status, screen


@need("neomutt", "neomutt")
def test_neomutt_pipes_a_message_flags_one_and_deletes_one(imap_services, recorder, tmp_path):
    smtp, imap = imap_services
    deliver(smtp, payload("nm-1"), payload("nm-2", 1), payload("nm-3"))
    stored = stored_by_subject(smtp.maildir)
    home = tmp_path / "neomutt"
    env = client_env(home, TERM="vt100", LINES="24", COLUMNS="80")
    proxy = recorder(imap)
    out = tmp_path / "piped.eml"
    server = f"imap://127.0.0.1:{proxy.port}"
    # Keys pushed before the index opens: pipe nm-2 raw to a file, flag
    # nm-1, delete nm-3, write the changes back (sync) and quit.
    keys = (f"<limit>~s nm-2<enter><pipe-message>cat > {out}<enter>"
            "<limit>~s nm-1<enter><flag-message>"
            "<limit>~s nm-3<enter><delete-message><sync-mailbox><quit>")
    argv = ["neomutt", "-n", "-F", "/dev/null",
            "-e", f"set folder={server}/ spoolfile=+INBOX imap_user=anyone imap_pass=secret",
            "-e", "set ssl_starttls=no ssl_force_tls=no imap_check_subscribed=no imap_passive=yes",
            "-e", "set header_cache='' message_cachedir='' mbox_type=Maildir record='' postponed=''",
            "-e", "set pipe_decode=no wait_key=no quit=yes delete=yes move=no mark_old=no confirmappend=no",
            "-e", f"push '{keys}'",
            "-f", f"{server}/INBOX"]
    status, screen = run_in_pty(argv, env, 20)
    assert status == 0, screen[-2000:].decode("utf-8", "replace") + proxy.transcript()
    assert out.read_bytes() == stored["nm-2"], proxy.transcript()
    flags = flags_by_subject(smtp.maildir)
    assert sorted(flags) == ["nm-1", "nm-2"], proxy.transcript()          # nm-3 expunged
    assert "F" in flags["nm-1"] and "F" not in flags["nm-2"], (flags, proxy.transcript())
    assert stored_by_subject(smtp.maildir) == {key: stored[key] for key in ("nm-1", "nm-2")}
