"""Retention from the .deb on a booted Debian 13 and 12: the timer is active
after install, a run of baremail-expire.service applies the configured
limits (and logs one line), its sandbox, an upgrade keeps an edited
[retention], and purge removes the units."""

from __future__ import annotations

import re

from mailtools import apt, enabled, journal, show, stored_keys

CONF = "/etc/baremail/baremail.conf"


def test_the_timer_is_enabled_and_active_after_install(box):
    apt(box, "install", box.debs["current"])
    assert enabled(box, "baremail-expire.timer") == "enabled"
    assert show(box, "baremail-expire.timer", "ActiveState") == "active"
    assert show(box, "baremail-expire.timer", "NextElapseUSecRealtime")
    verify = box.run("systemd-analyze", "verify", "--man=no", "baremail-expire.service",
                     "baremail-expire.timer", check=False)
    assert (verify.returncode, verify.stderr.strip()) == (0, ""), verify.stderr


def test_a_run_applies_the_configured_limits_and_keeps_flagged_mail(box, say):
    for n in range(5):
        box.run("swaks", "--server", "127.0.0.1:25", "--to", "root@localhost", "--header",
                f"Subject: expire {n}", "--body", f"message {n}", "--silent", "2")
    keys = sorted(stored_keys(box))
    assert len(keys) == 5
    maildir = box.root / "var/lib/baremail/Maildir"
    # flag the oldest (as an IMAP client would: F in its name)
    [oldest] = [path for path in (maildir / "new").iterdir() if path.name.startswith(keys[0])]
    oldest.rename(maildir / "cur" / (oldest.name + ":2,F"))
    box.sh(f"sed -i 's/^max_messages = 0$/max_messages = 2/' {CONF}")
    box.run("systemctl", "start", "baremail-expire.service", timeout=120)
    assert show(box, "baremail-expire.service", "Result") == "success"
    assert sorted(stored_keys(box)) == [keys[0], keys[3], keys[4]]
    lines = journal(box, "-u", "baremail-expire")
    [line] = [line for line in lines if line.startswith("removed ")]
    say(f"baremail-expire [Debian {box.release}]: {line}")
    assert re.match(r"removed 2 of 5 messages \(\d+ octets\) in [\d.]+ s; kept 1 flagged; "
                    r"limits: max_messages=2 max_size=10%", line), line
    out = box.run("systemd-analyze", "security", "--no-pager", "baremail-expire.service", check=False).stdout
    exposure = float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out).group(1))
    say(f"systemd-analyze security baremail-expire.service [Debian {box.release}]: {exposure}")
    assert exposure <= 0.5, out


def test_an_upgrade_keeps_the_edited_retention_settings(box):
    apt(box, "install", box.debs["upgrade"])
    box.run("grep", "-qx", "max_messages = 2", CONF)
    assert box.run("ls", "/etc/baremail").stdout.split() == ["baremail.conf"]
    assert show(box, "baremail-expire.timer", "ActiveState") == "active"


def test_purge_removes_the_units_and_keeps_the_mail(box):
    keys = stored_keys(box)
    apt(box, "purge", "baremail")
    box.run("systemctl", "daemon-reload")
    listed = box.run("systemctl", "list-unit-files", "--no-legend", "baremail-expire*", check=False).stdout
    assert listed.strip() == "", listed
    assert box.run("test", "-e", "/lib/systemd/system/baremail-expire.timer", check=False).returncode != 0
    assert stored_keys(box) == keys
