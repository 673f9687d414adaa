"""baremail-mta in a booted Debian 12: it takes the place of another mail
transport agent (one that held port 25, so that baremail-smtp.socket could
not listen until then), it is the MTA that bsd-mailx's dependency asks for
(so apt pulls in no exim4 or postfix, offline), and mail from mail(1), from
a cron job and from a failed systemd unit goes through /usr/sbin/sendmail
into the Maildir and comes back over POP3.

The tests share one container and build on each other in file order. The
cron job is set up early: cron notices it at the next full minute, and the
tests in between use that wait.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest

from container import ROOTFS_DEBS_DIR, Container
from mailtools import apt, journal, listening, pop3_messages, probe, show, wait_for

MAILDIR = "/var/lib/baremail/Maildir"
CRON_FILE = "/etc/cron.d/baremail-test"
CRON_DEADLINE = 90  # seconds from writing the cron file to the mail in the Maildir
BAREMAIL_SENDMAIL = "/usr/bin/baremail-sendmail"


@pytest.fixture(scope="module")
def shared(box) -> dict:
    """What one test learns and a later one checks (tokens, times)."""
    return {}


# The stand-in MTA's daemon: it listens on port 25, as exim4 does.
OTHER_MTA_SERVICE = """\
[Unit]
Description=Stand-in for another MTA's daemon, on port 25

[Service]
ExecStart=/usr/bin/python3 -c "import socket, time; s = socket.socket(); \\
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', 25)); \\
s.listen(); time.sleep(3600)"
"""
OTHER_MTA_SCRIPTS = {
    "postinst": "systemctl daemon-reload\nsystemctl start other-mta.service\n",
    "prerm": "systemctl stop other-mta.service || true\n",
    "postrm": "systemctl daemon-reload || true\n",
}


def other_mta_deb(work: Path) -> Path:
    """A stand-in for exim4 or postfix: a package that, as Debian Policy 11.6
    asks of every MTA, provides, conflicts with and replaces
    mail-transport-agent, ships /usr/sbin/sendmail and runs a daemon that
    listens on port 25."""
    if (work / "other-mta_1.0_all.deb").exists():   # built for the other release already
        return work / "other-mta_1.0_all.deb"
    root = work / "other-mta"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: other-mta\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: BareMail tests <tests@example.org>\n"
        "Provides: mail-transport-agent\nConflicts: mail-transport-agent\n"
        "Replaces: mail-transport-agent\n"
        "Description: stand-in for another mail transport agent\n"
        " It owns /usr/sbin/sendmail and port 25, as exim4 or postfix would.\n")
    for name, script in OTHER_MTA_SCRIPTS.items():
        path = root / "DEBIAN" / name
        path.write_text("#!/bin/sh\nset -e\n" + script)
        path.chmod(0o755)
    sendmail = root / "usr" / "sbin" / "sendmail"
    sendmail.parent.mkdir(parents=True)
    sendmail.write_text("#!/bin/sh\nexit 75\n")
    sendmail.chmod(0o755)
    unit = root / "lib" / "systemd" / "system" / "other-mta.service"
    unit.parent.mkdir(parents=True)
    unit.write_text(OTHER_MTA_SERVICE)
    deb = work / "other-mta_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)],
                   check=True, capture_output=True)
    return deb


def installed(box: Container, package: str) -> bool:
    out = box.run("dpkg-query", "-W", "-f=${db:Status-Abbrev}", package, check=False).stdout
    return out.startswith("ii")


def mta_providers(box: Container) -> list:
    """Installed packages that provide mail-transport-agent."""
    out = box.run("dpkg-query", "-W", "-f=${db:Status-Abbrev}|${Package}|${Provides}\n").stdout
    return sorted(line.split("|")[1] for line in out.splitlines()
                  if line.startswith("ii") and "mail-transport-agent" in line.split("|")[2])


def stored_with(box: Container, token: str) -> list:
    """Paths of the stored messages that contain `token`."""
    result = box.run("grep", "-rlF", token, f"{MAILDIR}/new", f"{MAILDIR}/cur", check=False)
    return result.stdout.split()


def key_of(path: str) -> str:
    return Path(path).name.split(":")[0]


def test_baremail_installs_next_to_another_mta_that_has_port_25(box, work):
    apt(box, "install", box.put(other_mta_deb(work), "/root/debs/other"))
    wait_for(lambda: "127.0.0.1:25" in listening(box), "the other MTA on port 25")
    result = apt(box, "install", box.debs["current"])
    assert "baremail-smtp.socket could not listen" in result.stdout + result.stderr
    assert installed(box, "baremail") and installed(box, "other-mta")
    assert show(box, "baremail-smtp.socket", "ActiveState") == "failed"
    assert box.run("dpkg", "-S", "/usr/sbin/sendmail").stdout.strip() == \
        "other-mta: /usr/sbin/sendmail"


def test_baremail_mta_takes_the_place_of_the_other_mta(box, shared):
    result = apt(box, "install", box.debs["mta-current"])
    assert "Removing other-mta" in result.stdout, result.stdout
    assert not installed(box, "other-mta")
    assert installed(box, "baremail-mta")
    assert mta_providers(box) == ["baremail-mta"]
    # Its port is free now, and baremail-mta had the SMTP socket try again.
    assert show(box, "baremail-smtp.socket", "ActiveState") == "active"
    assert probe(box, "127.0.0.1", 25).startswith("220 ")
    for path in ("/usr/sbin/sendmail", "/usr/lib/sendmail"):
        assert box.run("readlink", "-f", path).stdout.strip() == BAREMAIL_SENDMAIL, path
        assert box.run("dpkg", "-S", path).stdout.strip() == f"baremail-mta: {path}"
    # Debian Policy 11.6: every MTA has newaliases; BareMail has no aliases.
    result = box.run("newaliases")
    assert (result.stdout, result.stderr) == ("", "")
    assert box.run("sendmail", "-bp").stdout.strip() == "Mail queue is empty"
    # The manual pages: sendmail(8) and newaliases(8) are baremail-sendmail(8),
    # which the baremail package ships.
    for page in ("sendmail", "newaliases"):
        assert box.run("readlink", "-f", f"/usr/share/man/man8/{page}.8.gz").stdout.strip() == \
            "/usr/share/man/man8/baremail-sendmail.8.gz"
    assert box.run("dpkg", "-S", "/usr/share/man/man8/baremail-sendmail.8.gz").stdout.strip() == \
        "baremail: /usr/share/man/man8/baremail-sendmail.8.gz"


def test_cron_job_is_set_up(box, shared):
    # Its output is mailed to root through /usr/sbin/sendmail, as root.
    token = f"cron-{uuid.uuid4().hex[:12]}"
    (box.root / CRON_FILE.lstrip("/")).write_text(
        f"# BareMail install test: mail from cron through baremail-mta\n"
        f"* * * * * root echo {token}\n")
    (box.root / CRON_FILE.lstrip("/")).chmod(0o644)
    shared["cron"] = (token, time.monotonic())
    assert show(box, "cron.service", "ActiveState") == "active"


def test_bsd_mailx_installs_offline_with_baremail_mta_as_its_mta(box):
    debs = box.run("sh", "-c", f"ls {ROOTFS_DEBS_DIR}/*.deb").stdout.split()
    result = apt(box, "install", *debs)
    assert installed(box, "bsd-mailx")
    out = result.stdout + result.stderr
    assert "exim4" not in out and "postfix" not in out, out
    for other in ("exim4", "exim4-base", "exim4-daemon-light", "exim4-config", "postfix"):
        assert not installed(box, other), other
    assert mta_providers(box) == ["baremail-mta"]
    depends = box.run("dpkg-query", "-W", "-f=${Depends}", "bsd-mailx").stdout
    assert "mail-transport-agent" in depends, depends


def test_mail_command_delivers_into_the_maildir(box, say):
    token = f"mailx-{uuid.uuid4().hex[:12]}"
    box.run("sh", "-c", f"echo {token} | mail -s 'mail(1) via baremail-mta' root")
    paths = wait_for(lambda: stored_with(box, token), f"the mail with {token} in {MAILDIR}")
    assert len(paths) == 1, paths
    key = key_of(paths[0])
    retrieved = pop3_messages(box)
    assert token.encode() in retrieved[key]
    lines = wait_for(lambda: journal(box, "-u", "baremail-smtp", f"BAREMAIL_MAILID={key}",
                                     "BAREMAIL_LISTENER=smtp"),
                     f"the delivery of {key} in the journal")
    say(f"mail(1): {lines[0]}")
    assert lines[0].startswith(f"delivered {key} from=<root@"), lines


def test_cron_job_output_arrives_within_90_seconds(box, shared, say):
    if "cron" not in shared:
        pytest.skip("needs the cron job of test_cron_job_is_set_up")
    token, written = shared["cron"]
    left = CRON_DEADLINE - (time.monotonic() - written)
    paths = wait_for(lambda: stored_with(box, token), f"the mail of the cron job ({token})",
                     timeout=max(left, 0))
    arrived = time.monotonic() - written
    (box.root / CRON_FILE.lstrip("/")).unlink()
    key = key_of(paths[0])
    retrieved = pop3_messages(box)
    assert key in retrieved, f"{key} is in the Maildir but not over POP3"
    header, _, body = retrieved[key].partition(b"\r\n\r\n")
    assert body.strip() == token.encode(), body
    say(f"the cron job's mail arrived {arrived:.0f} s after the job was written, "
        f"and came back over POP3 as {key}; its header:")
    for line in header.decode().splitlines():
        say("    " + line)
    text = header.decode()
    assert "\r\nSubject: Cron <root@" in text, text
    assert f"echo {token}" in text, text
    assert journal(box, "-u", "baremail-smtp", f"BAREMAIL_MAILID={key}", "BAREMAIL_LISTENER=smtp")


# The README's example: a unit that mails its status to root when it fails.
MAIL_ON_FAILURE = """\
[Unit]
Description=Mail the status of %i to root

[Service]
Type=oneshot
ExecStart=/bin/sh -c '{ echo "Subject: %i failed on %H"; echo; systemctl status --full --no-pager %i; } | /usr/sbin/sendmail -i root'
"""
FAILING_JOB = """\
[Unit]
Description=A nightly job that fails
OnFailure=mail-on-failure@%n.service

[Service]
Type=oneshot
ExecStart=/bin/false
"""


def test_failed_systemd_unit_mails_its_status(box, say):
    units = box.root / "etc/systemd/system"
    (units / "mail-on-failure@.service").write_text(MAIL_ON_FAILURE)
    (units / "nightly-job.service").write_text(FAILING_JOB)
    box.run("systemctl", "daemon-reload")
    box.run("systemctl", "start", "nightly-job.service", check=False)
    token = "Subject: nightly-job.service failed on "
    paths = wait_for(lambda: stored_with(box, token), "the mail of mail-on-failure@")
    text = box.run("cat", paths[0]).stdout
    assert "nightly-job.service - A nightly job that fails" in text, text
    subject = next(line for line in text.splitlines() if line.startswith("Subject: "))
    say(f"OnFailure= mail in the Maildir: {subject}")


def test_removing_baremail_mta_leaves_baremail_serving(box):
    # bsd-mailx goes too: it needs an MTA.
    apt(box, "remove", "baremail-mta")
    assert not installed(box, "baremail-mta")
    assert box.run("test", "-e", "/usr/sbin/sendmail", check=False).returncode != 0
    assert box.run("test", "-e", "/usr/sbin/newaliases", check=False).returncode != 0
    assert installed(box, "baremail")
    for socket in ("baremail-smtp.socket", "baremail-submission.socket", "baremail-pop3.socket"):
        assert show(box, socket, "ActiveState") == "active", socket
    assert pop3_messages(box)
