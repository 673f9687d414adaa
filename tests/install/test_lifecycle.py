"""The whole life of both packages on a booted Debian 12, with the services
running (piuparts' chroot never starts them): install 0.1.0, use, upgrade
to 0.1.1, use, remove, purge; then compare the file system with the one
before the installation.

Left behind on purpose, and nothing else: /var/lib/baremail (the delivered
mail: the users' data, see debian/README.Debian) and the system user
baremail (Debian keeps system users). No process, unit or listening socket
may outlive the removal.
"""

from __future__ import annotations

import uuid

import pytest

from container import Container
from mailtools import apt, journal, listening, pop3_messages, probe, show, wait_for

# Not compared: kernel and runtime file systems, logs and caches, apt's and
# dpkg's own bookkeeping, systemd's runtime state (random seed, timer
# stamps), the .debs the tests copied in, and the user database (the kept
# user is checked by name below).
VOLATILE = ("/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp", "/var/log", "/var/cache",
            "/var/lib/apt", "/var/lib/dpkg", "/var/lib/systemd", "/var/lib/private", "/root",
            "/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow", "/etc/subuid",
            "/etc/subgid", "/etc/passwd-", "/etc/group-", "/etc/shadow-", "/etc/gshadow-",
            "/etc/.pwd.lock", "/etc/machine-id", "/etc/ld.so.cache")
# Left behind on purpose (debian/README.Debian).
KEPT = "/var/lib/baremail"

# Each file: path, type, mode, owner, group, size (not for directories,
# which keep their size when entries go), symbolic link target.
LIST = ("find / -xdev \\( " + " -o ".join(f"-path {path}" for path in VOLATILE) + " \\) -prune "
        "-o -printf '%p\\t%y\\t%m\\t%u\\t%g\\t%s\\t%l\\n'")


def file_system(box: Container) -> dict:
    out = box.sh(LIST, timeout=300).stdout
    entries = {}
    for line in out.splitlines():
        path, kind, mode, user, group, size, target = line.split("\t")
        entries[path] = (kind, mode, user, group, "" if kind == "d" else size, target)
    return entries


def use_both_services(box: Container) -> None:
    token = f"lifecycle-{uuid.uuid4().hex[:12]}"
    box.run("sh", "-c", f"printf 'Subject: {token}\\n\\n{token}\\n' | sendmail -i root")
    box.run("swaks", "--server", "127.0.0.1", "--port", "587", "--to", "root@localhost",
            "--body", token, "--silent", "2")
    messages = wait_for(lambda: [key for key, data in pop3_messages(box).items()
                                 if token.encode() in data], f"both mails with {token}")
    assert len(messages) == 2, messages
    for name in ("smtp", "pop3"):
        assert show(box, f"baremail-{name}.service", "ActiveState") == "active"


def baremail_units(box: Container) -> dict:
    """unit -> (load, active, sub state) of every unit systemd knows as baremail*."""
    out = box.run("systemctl", "list-units", "--all", "--plain", "--no-legend",
                  "baremail*").stdout
    return {fields[0]: tuple(fields[1:4]) for fields in map(str.split, out.splitlines()) if fields}


@pytest.fixture(scope="module")
def shared(box) -> dict:
    return {}


def test_install_use_upgrade_use(box, shared, say):
    shared["before"] = file_system(box)
    say(f"file system before: {len(shared['before'])} entries")
    apt(box, "install", box.debs["current"], box.debs["mta-current"])
    use_both_services(box)
    result = apt(box, "install", box.debs["upgrade"], box.debs["mta-upgrade"])
    assert "Unpacking baremail (0.1.1) over (0.1.0)" in result.stdout
    assert "Unpacking baremail-mta (0.1.1) over (0.1.0)" in result.stdout
    use_both_services(box)
    assert journal(box, "-u", "baremail-smtp", "BAREMAIL_LISTENER=submission")


def test_remove_leaves_no_process_unit_or_socket(box, say):
    assert probe(box, "127.0.0.1", 110).startswith("+OK")  # a service runs while removing
    apt(box, "remove", "baremail-mta", "baremail")
    processes = box.run("pgrep", "-a", "-u", "baremail", check=False).stdout.strip()
    assert processes == "", processes
    # Still known to systemd by name until the purge (the enablement
    # symlinks are kept for a reinstall), but none loaded or running.
    units = baremail_units(box)
    assert all(state == ("not-found", "inactive", "dead") for state in units.values()), units
    assert not {f"{host}:{port}" for host in ("127.0.0.1", "[::1]") for port in (25, 587, 110)} \
        & listening(box)
    say("after remove: no process of user baremail, no baremail unit loaded or active, "
        "ports 25/587/110 closed")


def test_purge_leaves_only_the_mail_and_the_user(box, shared, say):
    apt(box, "purge", "baremail")
    assert box.run("dpkg-query", "-W", "baremail", "baremail-mta", check=False).stdout.split() \
        in ([], ["baremail", "baremail-mta"])  # unknown, or known without a version
    after = file_system(box)
    before = shared["before"]
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(path for path in set(before) & set(after) if before[path] != after[path])
    kept = [path for path in added if path == KEPT or path.startswith(KEPT + "/")]
    say(f"after purge: {len(kept)} entries left in {KEPT} (the mail, on purpose)")
    for path in kept[:6]:
        say(f"    {path}  {' '.join(after[path][:4])}")
    user = box.run("getent", "passwd", "baremail").stdout.strip()
    say(f"    user kept: {user}")
    others = {"added": [path for path in added if path not in kept], "removed": removed,
              "changed": [(path, before[path], after[path]) for path in changed]}
    say(f"    anything else added, removed or changed: "
        f"{others if any(others.values()) else 'nothing'}")
    assert not any(others.values()), others
    assert kept, f"{KEPT} is gone: purge must keep the mail"
    assert user.startswith("baremail:")
    assert box.run("pgrep", "-u", "baremail", check=False).returncode == 1
    # debhelper's postrm reloads systemd on remove, not on purge: until the
    # next reload systemd still names the units it saw, none loaded.
    units = baremail_units(box)
    assert all(state == ("not-found", "inactive", "dead") for state in units.values()), units
    box.run("systemctl", "daemon-reload")
    assert baremail_units(box) == {}
