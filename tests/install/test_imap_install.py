"""baremail-imap from the .deb on a booted Debian 13 and 12: the socket on
port 143, socket activation, a client session, IDLE woken by mail to port
25, the sandbox, and reinstall and purge keeping the mail."""

from __future__ import annotations

import re

from mailtools import apt, enabled, listening, probe, show, stored_keys, wait_for

UNIT = "baremail-imap.service"
SOCKET = "baremail-imap.socket"

SESSION = r"""
import imaplib, json, smtplib, sys, time
m = imaplib.IMAP4(sys.argv[1], 143, timeout=30)
m.login("anyone", "anything")
typ, count = m.select("INBOX")
m.create("Trash")
typ, listing = m.list('""', "*")
m.send(b"i IDLE\r\n")
assert m.readline() == b"+ idling\r\n"
with smtplib.SMTP("127.0.0.1", 25, timeout=30) as s:
    s.sendmail("cron@box", ["root@localhost"], b"Subject: pushed\r\n\r\nwoke the IDLE\r\n")
    acked = time.monotonic()
m.sock.settimeout(10)
pushed = m.readline().decode().strip()
delay = time.monotonic() - acked
m.send(b"DONE\r\n")
m.readline()
m.readline()
typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
subjects = [part[1].decode().strip() for part in data if isinstance(part, tuple)]
m.uid("MOVE", "1", "Trash")
m.logout()
print(json.dumps({"count": count[0].decode(), "list": [l.decode() for l in listing], "pushed": pushed,
                  "delay": delay, "subjects": subjects}))
"""


def test_imap_socket_listens_and_starts_the_service_as_baremail(box):
    apt(box, "install", box.debs["current"])
    assert {"127.0.0.1:143", "[::1]:143"} <= listening(box)
    assert show(box, SOCKET, "ActiveState") == "active" and enabled(box, SOCKET) == "enabled"
    assert show(box, UNIT, "ActiveState") == "inactive"
    assert probe(box, "::1", 143).startswith("* OK [CAPABILITY IMAP4rev1")
    assert show(box, UNIT, "ActiveState") == "active"
    assert box.run("ps", "-o", "user=", "-p", show(box, UNIT, "MainPID")).stdout.strip() == "baremail"
    for page in ("/usr/share/man/man8/baremail-imap.8.gz",):
        assert box.run("dpkg", "-S", page).stdout.startswith("baremail: ")
    verify = box.run("systemd-analyze", "verify", "--man=no", SOCKET, UNIT, check=False)
    assert (verify.returncode, verify.stderr.strip()) == (0, ""), verify.stderr


def test_a_client_session_with_idle_woken_by_mail_to_port_25(box, say):
    box.run("swaks", "--server", "127.0.0.1:25", "--to", "root@localhost", "--header", "Subject: first",
            "--body", "before the session", "--silent", "2")
    import json
    result = json.loads(box.run("python3", "-c", SESSION, "127.0.0.1").stdout)
    assert result["count"] == "1"
    assert '(\\HasNoChildren \\Trash) "." "Trash"' in result["list"]
    assert result["pushed"] == "* 2 EXISTS"
    assert result["subjects"] == ["Subject: first", "Subject: pushed"]
    say(f"IMAP on Debian {box.release}: IDLE woke {result['delay'] * 1000:.0f} ms after the 250 on port 25")
    assert result["delay"] < 1.0
    trash = box.root / "var/lib/baremail/Maildir/.Trash/cur"
    assert len(list(trash.iterdir())) == 1
    lines = box.run("journalctl", "-u", UNIT, "--no-pager", "-o", "cat").stdout
    assert re.search(r"session from \S+ ended: user anyone", lines), lines[-2000:]


def test_imap_sandbox_exposure_is_at_most_half_a_point(box, say):
    probe(box, "127.0.0.1", 143)
    out = box.run("systemd-analyze", "security", "--no-pager", UNIT, check=False).stdout
    exposure = float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out).group(1))
    say(f"systemd-analyze security {UNIT} [Debian {box.release}]: {exposure}")
    assert exposure <= 0.5, out


def test_reinstall_and_purge_keep_the_mail_and_the_folders(box):
    keys = stored_keys(box)
    apt(box, "install", "--reinstall", box.debs["current"])
    assert probe(box, "127.0.0.1", 143).startswith("* OK")
    apt(box, "purge", "baremail")
    assert stored_keys(box) == keys
    box.run("test", "-d", "/var/lib/baremail/Maildir/.Trash/cur")
    apt(box, "install", box.debs["current"])
    wait_for(lambda: show(box, SOCKET, "ActiveState") == "active", "the IMAP socket after reinstall")
    import json
    out = box.run("python3", "-c", "import imaplib, json; m = imaplib.IMAP4('127.0.0.1', 143); "
                  "m.login('a', 'b'); print(json.dumps([m.status(n, '(MESSAGES)')[1][0].decode() "
                  "for n in ('INBOX', 'Trash')]))").stdout
    assert json.loads(out) == ['"INBOX" (MESSAGES 1)', '"Trash" (MESSAGES 1)']


HOLD_PORT_143 = r"""
import socket, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 143))
s.listen()
time.sleep(3600)
"""


def test_install_with_port_143_taken_completes_and_says_what_to_do(box):
    apt(box, "purge", "baremail")
    box.run("systemd-run", "--unit=hold-port-143", "python3", "-c", HOLD_PORT_143)
    try:
        wait_for(lambda: "127.0.0.1:143" in listening(box), "the other IMAP server on port 143")
        result = apt(box, "install", box.debs["current"])
        out = result.stdout + result.stderr
        assert "baremail-imap.socket could not listen" in out and "ListenStream=127.0.0.1:1143" in out, out
        assert show(box, SOCKET, "ActiveState") == "failed"
        assert show(box, "baremail-smtp.socket", "ActiveState") == "active"
    finally:
        box.run("systemctl", "stop", "hold-port-143.service", check=False)
    box.run("systemctl", "restart", SOCKET)
    assert probe(box, "127.0.0.1", 143).startswith("* OK")
