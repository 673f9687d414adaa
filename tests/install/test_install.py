"""The .deb in a booted Debian 12: install, socket activation, mail in and
out (and which socket it came in on), restarts, the sandbox's exposure,
remove, purge, reinstall, upgrade, and port 25 already taken.

How the harness works (all of it runs as root on a Debian 12 host):

* The packages (baremail, baremail-mta) are built from a copy of the working
  tree with ``dpkg-buildpackage``, once per test session for all modules
  (twice: as in debian/changelog, and once more with an added 0.1.1 entry
  for the upgrade tests). The tree itself is not touched.
* A bookworm root file system from ``mmdebstrap`` is cached under
  /var/cache/baremail-tests/rootfs-<hash of what goes into it>/. It is built
  in a ``.partial`` directory and renamed when complete, under a lock, so an
  interrupted build never leaves a cache that looks valid.
* Each test module copies it, boots the copy with ``systemd-nspawn --boot
  --private-network`` (no network but loopback inside: apt has to manage
  offline) and runs every command through ``nsenter`` into the container's
  PID 1. The container is powered off and its copy removed when the module
  ends, whatever the tests did.

The tests share one container and build on each other in file order, like
an administrator's session: install, use, restart, remove, reinstall,
upgrade, purge, install again with port 25 taken.
"""

from __future__ import annotations

import re
import uuid

import pytest

from container import Container, POP3_PORT, SMTP_PORTS, UPGRADE_VERSION
from mailtools import (apt, enabled, installed_status, journal, listening, pop3_messages, probe,
                       show, stored_keys, wait_for)

SOCKETS = ("baremail-smtp.socket", "baremail-submission.socket", "baremail-pop3.socket")
# The listener name in the journal (FileDescriptorName= of the socket unit) by port.
LISTENERS = {25: "smtp", 587: "submission"}
MAN_PAGES = ("/usr/share/man/man5/baremail.conf.5.gz", "/usr/share/man/man8/baremail-smtp.8.gz",
             "/usr/share/man/man8/baremail-pop3.8.gz", "/usr/share/man/man8/baremail-sendmail.8.gz")
# Issue 8: the most that `systemd-analyze security` may rate the services.
MAX_EXPOSURE = 0.5


def message(marker: str, client: str) -> bytes:
    """A message whose every line must come back unchanged."""
    return ("From: BareMail install test <sender@example.org>\r\n"
            "To: root@localhost\r\n"
            f"Subject: {marker} via {client}\r\n"
            f"Message-ID: <{marker}@example.org>\r\n"
            "\r\n"
            f"marker {marker}\r\n"
            ".a line that starts with a dot\r\n"
            "..and one with two\r\n"
            "trailing blanks   \r\n"
            "\ta tab, and non-ASCII: Gr\u00fc\u00dfe\r\n"
            "last line\r\n").encode()


# -- the tests, in the order an administrator would go ------------------------

@pytest.fixture(scope="module")
def shared(box) -> dict:
    """What one test learns and a later one checks (mail keys)."""
    return {}


def test_package_installs_offline(box):
    links = box.run("ip", "-o", "link").stdout.splitlines()
    assert [line.split(":")[1].strip() for line in links] == ["lo"], "only lo in the container"
    result = apt(box, "install", box.debs["current"])
    assert "Setting up baremail" in result.stdout
    assert installed_status(box) == "install ok installed"
    assert box.run("getent", "passwd", "baremail").stdout.split(":")[5] == "/var/lib/baremail"
    for path in ("/usr/bin/baremail-smtp", "/usr/bin/baremail-pop3", "/usr/bin/baremail-sendmail",
                 "/etc/baremail/baremail.conf", "/usr/lib/sysusers.d/baremail.conf",
                 "/usr/share/doc/baremail/README.Debian"):
        box.run("test", "-e", path)
    # /usr/sbin/sendmail is baremail-mta's, not installed here.
    assert box.run("test", "-e", "/usr/sbin/sendmail", check=False).returncode != 0
    units = [*SOCKETS, "baremail-smtp.service", "baremail-pop3.service"]
    verify = box.run("systemd-analyze", "verify", "--man=no", *units, check=False)
    assert (verify.returncode, verify.stderr.strip()) == (0, ""), verify.stderr


def test_all_four_manual_pages_are_in_the_package(box):
    # No man-db in the lean image: the files, and that dpkg has them as baremail's.
    owners = box.run("dpkg", "-S", *MAN_PAGES).stdout.splitlines()
    assert sorted(owners) == sorted(f"baremail: {page}" for page in MAN_PAGES), owners
    for page in MAN_PAGES:
        assert box.run("gzip", "-t", page, check=False).returncode == 0, page


def test_sockets_listen_and_services_wait_for_a_connection(box):
    expected = {f"{host}:{port}" for host in ("127.0.0.1", "[::1]")
                for port in (*SMTP_PORTS, POP3_PORT)}
    assert expected <= listening(box)
    for socket in SOCKETS:
        assert show(box, socket, "ActiveState") == "active", socket
        assert enabled(box, socket) == "enabled", socket
    for name in ("smtp", "pop3"):
        assert show(box, f"baremail-{name}.service", "ActiveState") == "inactive"


@pytest.mark.parametrize("name, port, greeting", [("smtp", 25, "220 "), ("pop3", 110, "+OK")])
def test_first_connection_starts_the_service_as_baremail(box, name, port, greeting):
    unit = f"baremail-{name}.service"
    assert probe(box, "127.0.0.1", port).startswith(greeting)
    assert show(box, unit, "ActiveState") == "active"
    assert show(box, unit, "Type") == "notify"
    pid = show(box, unit, "MainPID")
    assert box.run("ps", "-o", "user=", "-p", pid).stdout.strip() == "baremail"
    status = box.run("systemctl", "status", "--no-pager", unit).stdout
    assert re.search(r"^\s+Status: \".+\"$", status, re.MULTILINE), status
    assert show(box, unit, "WatchdogUSec") == "30s"
    wait_for(lambda: show(box, unit, "WatchdogTimestampMonotonic") not in ("", "0"),
             "the first WATCHDOG=1")


CONNECT = "import socket, sys; socket.create_connection(('127.0.0.1', 110), timeout=3)"


def test_container_enforces_ip_address_deny(box):
    # Only then do the tests above show that IPAddressDeny=any on the
    # services leaves the sockets passed in by systemd alone.
    denied = box.run("systemd-run", "--wait", "--pipe", "--quiet", "-p", "IPAddressDeny=any",
                     "python3", "-c", CONNECT, check=False)
    assert denied.returncode != 0, "IPAddressDeny= is not enforced in the test container"
    box.run("systemd-run", "--wait", "--pipe", "--quiet", "python3", "-c", CONNECT)


def test_enable_now_of_the_sockets_enables_and_starts_port_587_too(box):
    box.run("systemctl", "disable", "--now", "baremail-smtp.socket", "baremail-pop3.socket")
    for socket in SOCKETS:
        assert show(box, socket, "ActiveState") == "inactive", socket
        assert enabled(box, socket) == "disabled", socket
    assert not {"127.0.0.1:587", "[::1]:587"} & listening(box)
    box.run("systemctl", "enable", "--now", "baremail-smtp.socket", "baremail-pop3.socket")
    for socket in SOCKETS:
        assert show(box, socket, "ActiveState") == "active", socket
        assert enabled(box, socket) == "enabled", socket
    # Enabling a service enables its sockets (Also=).
    box.run("systemctl", "enable", "baremail-smtp.service", "baremail-pop3.service")
    for socket in SOCKETS:
        assert enabled(box, socket) == "enabled", socket
    assert probe(box, "::1", 587).startswith("220 ")


def _listeners_of(box: Container, pid: str) -> set:
    """The listening TCP addresses whose socket process `pid` holds."""
    out = box.run("ss", "-Hltnp").stdout
    return {line.split()[3] for line in out.splitlines() if f"pid={pid}," in line}


@pytest.mark.parametrize("port", [587, 25])
def test_service_started_by_either_socket_gets_all_four(box, port):
    unit = "baremail-smtp.service"
    box.run("systemctl", "stop", unit)
    assert probe(box, "127.0.0.1", port).startswith("220 ")
    pid = show(box, unit, "MainPID")
    assert _listeners_of(box, pid) == {f"{host}:{smtp_port}" for host in ("127.0.0.1", "[::1]")
                                       for smtp_port in SMTP_PORTS}


SENDS = [  # (client, server as the client is given it)
    ("swaks", "127.0.0.1:25"),
    ("curl", "127.0.0.1:587"),
    ("swaks", "[::1]:587"),
    ("curl", "[::1]:25"),
]


def _send(box: Container, client: str, server: str, data: bytes) -> None:
    host, port = server.rsplit(":", 1)
    path = f"/root/{uuid.uuid4().hex}.eml"
    (box.root / path.lstrip("/")).write_bytes(data)
    if client == "swaks":
        box.run("swaks", "--server", host.strip("[]"), "--port", port,
                "--from", "sender@example.org", "--to", "root@localhost",
                "--data", "@" + path, "--silent", "2")
    else:
        box.run("curl", "--silent", "--show-error", "--url", f"smtp://{server}",
                "--mail-from", "sender@example.org", "--mail-rcpt", "root@localhost",
                "--upload-file", path)


def test_mail_sent_over_smtp_comes_back_over_pop3_unchanged(box, shared):
    sent = {}
    for client, server in SENDS:
        marker = f"m{uuid.uuid4().hex[:12]}"
        sent[marker] = (client, server, message(marker, f"{client} {server}"))
        _send(box, client, server, sent[marker][2])
    retrieved = pop3_messages(box, "::1")
    keys = {}
    for marker, (client, server, data) in sent.items():
        found = [(uidl, body) for uidl, body in retrieved.items() if marker.encode() in body]
        assert len(found) == 1, f"{marker} ({client} to {server}) found {len(found)} times"
        uidl, body = found[0]
        start = body.index(b"From: BareMail install test")
        trace, rest = body[:start], body[start:]
        assert b"Received: " in trace, trace
        # swaks ends the data with one more empty line than it was given.
        allowed = (data, data + b"\r\n") if client == "swaks" else (data,)
        assert rest in allowed, f"{client} to {server}: sent {data!r}, got back {rest!r}"
        keys[marker] = uidl
        shared.setdefault("ports", {})[uidl] = int(server.rsplit(":", 1)[1])
    shared["keys"] = sorted(keys.values())


def test_journal_has_the_delivery_and_retrieval_lines(box, shared, say):
    if not shared.get("keys"):
        pytest.skip("needs the mail of the round-trip test")
    for key in shared["keys"]:
        port = shared["ports"][key]
        listener = LISTENERS[port]
        lines = wait_for(lambda: journal(box, "-u", "baremail-smtp", f"BAREMAIL_MAILID={key}",
                                          f"BAREMAIL_LISTENER={listener}"),
                         f"the delivery of {key} with BAREMAIL_LISTENER={listener} in the journal")
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"delivered {key} from=<sender@example.org> "
                                   f"to=<root@localhost> size="), lines
        other = LISTENERS[25 if port == 587 else 587]
        assert journal(box, "-u", "baremail-smtp", f"BAREMAIL_MAILID={key}",
                        f"BAREMAIL_LISTENER={other}") == []
        say(f"port {port}: BAREMAIL_LISTENER={listener}: {lines[0]}")
        assert lines[0] in journal(box, "-u", "baremail-smtp")
    # POP3 writes one line per session (not one per message retrieved): the
    # round trip's session read all four and deleted none. The journal's
    # per-message retrieval lines are at DEBUG only.
    sessions = wait_for(lambda: journal(box, "-u", "baremail-pop3", "BAREMAIL_USER=root",
                                        "BAREMAIL_RETRIEVED=4"), "the POP3 session's line")
    assert re.match(r"session from \[::1\]:\d+ ended \(quit\): user root, retrieved 4 \(\d+ octets\), "
                    r"deleted 0$", sessions[0]), sessions
    say(f"POP3: {sessions[0]}")
    assert not any(line.startswith("retrieved ") for line in journal(box, "-u", "baremail-pop3"))


def test_journal_has_one_line_per_deleted_message(box):
    box.run("swaks", "--server", "127.0.0.1:25", "--to", "root@localhost", "--header", "Subject: to delete",
            "--body", "gone soon", "--silent", "2")
    out = box.run("python3", "-c", "import poplib; p = poplib.POP3('127.0.0.1', 110); p.user('deleter'); "
                  "p.pass_('x'); n = p.stat()[0]; print(p.uidl(n).split()[2].decode()); p.dele(n); p.quit()").stdout
    key = out.strip()
    lines = wait_for(lambda: journal(box, "-u", "baremail-pop3", f"BAREMAIL_MAILID={key}"),
                     f"the deletion of {key} in the journal")
    assert lines == [f"deleted {key} peer=127.0.0.1:" + lines[0].rsplit(":", 1)[1]]
    assert wait_for(lambda: journal(box, "-u", "baremail-pop3", "BAREMAIL_USER=deleter", "BAREMAIL_DELETED=1"),
                    "the deleting session's line")


def test_reload_rereads_the_configuration(box):
    unit = "baremail-smtp.service"
    probe(box, "127.0.0.1", 25)
    pid = show(box, unit, "MainPID")
    box.run("systemctl", "reload", unit)
    wait_for(lambda: any(line.startswith("configuration reloaded")
                         for line in journal(box, "-u", "baremail-smtp", f"_PID={pid}")),
             "'configuration reloaded' in the journal")
    assert show(box, unit, "MainPID") == pid


@pytest.mark.parametrize("action", ["restart", "stop"])
def test_restart_and_stop_leave_the_socket_serving(box, action):
    unit = "baremail-smtp.service"
    probe(box, "127.0.0.1", 25)
    box.run("systemctl", action, unit)
    assert show(box, "baremail-smtp.socket", "ActiveState") == "active"
    assert probe(box, "127.0.0.1", 587).startswith("220 ")
    assert show(box, unit, "ActiveState") == "active"


def test_service_started_by_hand_pulls_in_its_sockets(box):
    # Takes port 587 (PartOf=) and the service (Requires=) with it.
    box.run("systemctl", "stop", "baremail-smtp.socket")
    assert show(box, "baremail-smtp.service", "ActiveState") == "inactive"
    assert show(box, "baremail-submission.socket", "ActiveState") == "inactive"
    box.run("systemctl", "start", "baremail-smtp.service")
    assert show(box, "baremail-smtp.socket", "ActiveState") == "active"
    assert show(box, "baremail-submission.socket", "ActiveState") == "active"
    assert show(box, "baremail-smtp.service", "ActiveState") == "active"
    assert probe(box, "::1", 25).startswith("220 ")
    assert probe(box, "::1", 587).startswith("220 ")


def test_stopping_the_submission_socket_stops_the_service(box):
    # Or the service would go on serving port 587 with its copy of the socket.
    probe(box, "127.0.0.1", 25)
    box.run("systemctl", "stop", "baremail-submission.socket")
    assert show(box, "baremail-smtp.service", "ActiveState") == "inactive"
    assert not {"127.0.0.1:587", "[::1]:587"} & listening(box)
    box.run("systemctl", "start", "baremail-smtp.socket")
    assert show(box, "baremail-submission.socket", "ActiveState") == "active"
    assert probe(box, "127.0.0.1", 587).startswith("220 ")


def test_killed_service_is_started_again(box):
    unit = "baremail-smtp.service"
    probe(box, "127.0.0.1", 25)
    old = show(box, unit, "MainPID")
    box.run("kill", "-9", old)
    wait_for(lambda: show(box, unit, "MainPID") != old, "the killed MainPID to go")
    assert probe(box, "127.0.0.1", 25).startswith("220 ")
    assert show(box, unit, "ActiveState") == "active"
    assert show(box, unit, "MainPID") not in ("0", old)
    assert show(box, "baremail-smtp.socket", "ActiveState") == "active"


@pytest.mark.parametrize("name, port", [("smtp", 25), ("pop3", 110)])
def test_security_exposure_is_at_most_half_a_point_while_mail_flows(box, say, record_property,
                                                                   name, port):
    unit = f"baremail-{name}.service"
    if name == "smtp":
        _send(box, "curl", "127.0.0.1:25", message(f"m{uuid.uuid4().hex[:12]}", "exposure"))
    else:
        pop3_messages(box)
    assert probe(box, "127.0.0.1", port)  # and the service stays up meanwhile
    assert show(box, unit, "ActiveState") == "active"
    out = box.run("systemd-analyze", "security", "--no-pager", unit, check=False).stdout
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert match, out
    exposure = float(match.group(1))
    record_property(f"exposure_{name}", exposure)
    say(f"systemd-analyze security {unit}: {match.group(1)}")
    for line in out.splitlines():
        if line.startswith("\u2717"):  # the settings that still cost points
            say("    " + " ".join(line.split()))
    assert exposure <= MAX_EXPOSURE, out


def test_remove_stops_everything_and_keeps_mail(box, shared):
    keys = stored_keys(box)
    assert keys
    probe(box, "127.0.0.1", 110)  # a running service has to be stopped too
    result = apt(box, "remove", "baremail")
    assert "Removing baremail" in result.stdout
    for unit in (*SOCKETS, "baremail-smtp.service", "baremail-pop3.service"):
        assert show(box, unit, "ActiveState") == "inactive", unit
    assert box.run("pgrep", "-u", "baremail", check=False).returncode == 1, "a process left"
    ports = {f"{host}:{port}" for host in ("127.0.0.1", "[::1]") for port in (25, 587, 110)}
    assert not ports & listening(box)
    assert stored_keys(box) == keys
    assert installed_status(box) == "deinstall ok config-files"
    box.run("test", "-f", "/etc/baremail/baremail.conf")
    shared["stored"] = keys


CONF_EDIT = "hostname = mail.install-test.example"


def _edit_conffile(box: Container) -> None:
    box.sh(f"sed -i 's/^hostname =$/{CONF_EDIT}/' /etc/baremail/baremail.conf")
    box.run("grep", "-qx", CONF_EDIT, "/etc/baremail/baremail.conf")


def _assert_edit_kept_and_used(box: Container) -> None:
    box.run("grep", "-qx", CONF_EDIT, "/etc/baremail/baremail.conf")
    # No .dpkg-dist / .dpkg-old: dpkg kept the edit without asking.
    assert box.run("ls", "/etc/baremail").stdout.split() == ["baremail.conf"]
    box.run("systemctl", "restart", "baremail-smtp.service")
    assert probe(box, "127.0.0.1", 25) == "220 mail.install-test.example ESMTP BareMail"


def test_reinstall_keeps_mail_and_conffile_edit(box, shared):
    _edit_conffile(box)
    apt(box, "install", box.debs["current"])  # after remove
    assert installed_status(box) == "install ok installed"
    _assert_edit_kept_and_used(box)
    apt(box, "install", "--reinstall", box.debs["current"])  # over itself
    _assert_edit_kept_and_used(box)
    assert set(pop3_messages(box)) >= shared.get("stored", set())


def test_upgrade_keeps_mail_and_conffile_edit_and_restarts_a_running_service(box):
    keys = stored_keys(box)
    probe(box, "127.0.0.1", 110)
    pid = show(box, "baremail-pop3.service", "MainPID")
    result = apt(box, "install", box.debs["upgrade"])
    assert f"Unpacking baremail ({UPGRADE_VERSION})" in result.stdout
    assert box.run("dpkg-query", "-W", "-f=${Version}", "baremail").stdout == UPGRADE_VERSION
    wait_for(lambda: show(box, "baremail-pop3.service", "MainPID") not in ("0", pid),
             "the upgrade to restart the running POP3 service")
    _assert_edit_kept_and_used(box)
    assert set(pop3_messages(box)) == keys


def test_purge_removes_the_configuration_and_keeps_the_mail(box):
    keys = stored_keys(box)
    result = apt(box, "purge", "baremail")
    assert box.run("test", "-e", "/etc/baremail", check=False).returncode != 0
    assert installed_status(box) in ("", "unknown ok not-installed")
    # apt runs dpkg with the maintainer scripts' stderr on its stdout.
    assert "kept the delivered mail in /var/lib/baremail" in result.stdout + result.stderr
    assert stored_keys(box) == keys
    assert box.run("getent", "passwd", "baremail", check=False).returncode == 0


HOLD_PORT_25 = r"""
import socket, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # earlier tests left TIME_WAITs
s.bind(("127.0.0.1", 25))
s.listen()
time.sleep(3600)
"""


def test_install_with_port_25_taken_completes_and_says_what_to_do(box):
    keys = stored_keys(box)
    box.run("systemd-run", "--unit=hold-port-25", "python3", "-c", HOLD_PORT_25)
    try:
        wait_for(lambda: "127.0.0.1:25" in listening(box), "the other program on port 25")
        result = apt(box, "install", box.debs["current"])
        out = result.stdout + result.stderr
        assert "baremail-smtp.socket could not listen" in out, out
        assert "systemctl edit baremail-smtp.socket" in out, out
        assert "baremail-submission.socket could not listen" not in out, out
        assert installed_status(box) == "install ok installed"
        assert show(box, "baremail-smtp.socket", "ActiveState") == "failed"
        assert show(box, "baremail-pop3.socket", "ActiveState") == "active"
        # The mail kept through the purge is served again.
        assert set(pop3_messages(box)) == keys
    finally:
        box.run("systemctl", "stop", "hold-port-25.service", check=False)
    box.run("systemctl", "restart", "baremail-smtp.socket")
    assert probe(box, "127.0.0.1", 25).startswith("220 ")
    assert probe(box, "127.0.0.1", 587).startswith("220 ")
