"""The .deb in a booted Debian 12: install, socket activation, mail in and
out, restarts, remove, purge, reinstall, upgrade, and port 25 already taken.

How the harness works (all of it runs as root on a Debian 12 host):

* The package is built from a copy of the working tree with
  ``dpkg-buildpackage`` (twice: as in debian/changelog, and once more with an
  added 0.1.1 entry for the upgrade test). The tree itself is not touched.
* A bookworm root file system from ``mmdebstrap`` is cached under
  /var/cache/baremail-tests/rootfs-<hash of what goes into it>/. It is built
  in a ``.partial`` directory and renamed when complete, under a lock, so an
  interrupted build never leaves a cache that looks valid.
* Each test run copies it, boots the copy with ``systemd-nspawn --boot
  --private-network`` (no network but loopback inside: apt has to manage
  offline) and runs every command through ``nsenter`` into the container's
  PID 1. The container is powered off and its copy removed when the module
  ends, whatever the tests did.

The tests share one container and build on each other in file order, like
an administrator's session: install, use, restart, remove, reinstall,
upgrade, purge, install again with port 25 taken.
"""

from __future__ import annotations

import base64
import email.utils
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("BAREMAIL_TEST_CACHE", "/var/cache/baremail-tests"))
WORK_PARENT = Path("/var/tmp")
WORK_PREFIX = "baremail-install-"

SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# Installed in the image. swaks needs libio-socket-inet6-perl for IPv6 and
# netbase (/etc/protocols) for anything.
ROOTFS_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "python3", "python3-systemd",
    "python3-sdnotify", "swaks", "libio-socket-inet6-perl", "curl", "cron",
    "procps", "iproute2", "netbase",
)
# Only downloaded, into /opt/baremail-test-debs in the image: bsd-mailx
# depends on a mail-transport-agent, and installing it now would drag in
# exim4, which takes port 25. A later test installs it next to BareMail.
ROOTFS_DOWNLOADS = ("bsd-mailx", "liblockfile1")
ROOTFS_DEBS_DIR = "/opt/baremail-test-debs"
# Masked in the image: they would take the dpkg lock in the middle of a test.
ROOTFS_MASKED = ("apt-daily.timer", "apt-daily-upgrade.timer")

BOOT_TIMEOUT = 120
CONTAINER_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
DEBS_IN_CONTAINER = "/root/debs"  # not /tmp: nspawn mounts a tmpfs there
UPGRADE_VERSION = "0.1.1"

SMTP_PORTS = (25, 587)
POP3_PORT = 110


# -- output that shows even while pytest captures ---------------------------

class Reporter:
    def __init__(self, config):
        self._capman = config.pluginmanager.getplugin("capturemanager")

    def __call__(self, message: str) -> None:
        line = f"[install-test] {message}\n"
        if self._capman is None:
            sys.stderr.write(line)
            return
        with self._capman.global_and_fixture_disabled():
            sys.stderr.write(line)
            sys.stderr.flush()


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"({path}: {exc})"
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)  # the boot log's colours
    return "\n".join(text.splitlines()[-lines:])


def _clean_env(**extra) -> dict:
    env = {"PATH": CONTAINER_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": "/root"}
    # A proxy the host needs to reach the Debian archive (mmdebstrap).
    env.update({name: value for name, value in os.environ.items()
                if name.lower() in ("http_proxy", "https_proxy", "no_proxy")})
    env.update(extra)
    return env


def _mounts_below(path: Path) -> list:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mountinfo") as mountinfo:
        points = [line.split()[4].replace("\\040", " ") for line in mountinfo]
    return sorted((point for point in points if point.startswith(prefix)), key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """rm -r that first detaches anything mounted below `path` (an mmdebstrap
    killed midway leaves /proc, /sys and /dev/pts mounted in its chroot), and
    never descends into a mount it could not detach."""
    for point in _mounts_below(path):
        subprocess.run(["umount", "--lazy", point], check=False)
    left = _mounts_below(path)
    if left:
        pytest.fail(f"cannot remove {path}: still mounted there: {', '.join(left)}")
    shutil.rmtree(path, ignore_errors=True)


# -- the package -------------------------------------------------------------

_TREE_IGNORE = shutil.ignore_patterns(
    ".git", "dist", "build", ".pybuild", "__pycache__", "*.egg-info", ".pytest_cache",
    ".hypothesis", "Maildir", "*.deb",
)


def _add_changelog_entry(changelog: Path, version: str) -> None:
    text = changelog.read_text()
    maintainer = re.search(r"^ -- (.+?)  ", text, re.MULTILINE).group(1)
    entry = (f"baremail ({version}) unstable; urgency=medium\n\n"
             f"  * Upgrade test build.\n\n"
             f" -- {maintainer}  {email.utils.formatdate()}\n\n")
    changelog.write_text(entry + text)


def build_deb(work: Path, name: str, version: str | None = None) -> Path:
    """Build the .deb from a copy of the working tree; returns its path.

    Debian's /usr/bin/python3 comes first in PATH: pybuild must not pick up
    another python3. The unit tests run separately (make test), so nocheck."""
    out = work / name
    src = out / "baremail"
    shutil.copytree(REPO, src, symlinks=True, ignore=_TREE_IGNORE)
    if version is not None:
        _add_changelog_entry(src / "debian" / "changelog", version)
    log = out / "build.log"
    with open(log, "wb") as output:
        result = subprocess.run(
            ["dpkg-buildpackage", "-us", "-uc", "-b", "-Pnocheck"], cwd=src,
            env=_clean_env(DEB_BUILD_OPTIONS="nocheck"), stdin=subprocess.DEVNULL,
            stdout=output, stderr=subprocess.STDOUT, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"dpkg-buildpackage failed ({result.returncode}); {log}:\n{_tail(log)}")
    debs = sorted(out.glob("baremail_*_all.deb"))
    assert len(debs) == 1, f"expected one .deb in {out}, found {debs}"
    return debs[0]


# -- the cached root file system -------------------------------------------

def _mmdebstrap_command(target: Path) -> tuple:
    hooks = [
        f'systemctl --root="$1" mask {" ".join(ROOTFS_MASKED)}',
        f'mkdir -p "$1{ROOTFS_DEBS_DIR}" && chroot "$1" sh -c '
        f'"cd {ROOTFS_DEBS_DIR} && apt-get -q download {" ".join(ROOTFS_DOWNLOADS)}"',
    ]
    command = ["mmdebstrap", "--mode=root", "--format=directory", "--variant=apt",
               "--include=" + ",".join(ROOTFS_PACKAGES)]
    command += [f"--customize-hook={hook}" for hook in hooks]
    return command + [SUITE, str(target), *MIRRORS], hooks


def rootfs_key() -> str:
    _, hooks = _mmdebstrap_command(Path("/x"))
    recipe = json.dumps([SUITE, MIRRORS, ROOTFS_PACKAGES, ROOTFS_DOWNLOADS, hooks])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def cached_rootfs(say: Reporter) -> Path:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    final = CACHE_DIR / f"rootfs-{rootfs_key()}"
    with open(CACHE_DIR / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; others wait, then reuse
        if (final / "etc" / "os-release").exists():
            say(f"using the cached root file system {final}")
            return final
        for stale in CACHE_DIR.glob("rootfs-*"):  # partial builds, outdated recipes
            say(f"removing {stale}")
            remove_tree(stale)
        partial = CACHE_DIR / f"{final.name}.partial"
        command, _ = _mmdebstrap_command(partial)
        say(f"building the {SUITE} root file system (a few minutes; cached afterwards in {final})")
        started = time.monotonic()
        log = CACHE_DIR / "mmdebstrap.log"
        with open(log, "w") as output:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True, env=_clean_env())
            for line in process.stdout:
                output.write(line)
                if line.startswith(("I: ", "E: ")):
                    say(f"  mmdebstrap: {line.strip()}")
            returncode = process.wait()
        if returncode != 0:
            remove_tree(partial)
            pytest.fail(f"mmdebstrap failed ({returncode}); {log}:\n{_tail(log)}")
        os.rename(partial, final)
        say(f"root file system built in {time.monotonic() - started:.0f} s")
        return final


# -- the container -----------------------------------------------------------

def _started(pid: int) -> str | None:
    """The start time of process `pid` (with the PID, it names one process for
    good); None once it has ended."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


def _end_process(pid: int, started: str | None, first: int = signal.SIGTERM,
                 grace: float = 30.0) -> None:
    """Send `first` to `pid` if it still is the process that started at
    `started`, then SIGKILL if it outlives `grace` seconds; bounded in time."""
    for sig, wait in ((first, grace), (signal.SIGKILL, 10.0)):
        if started is None or _started(pid) != started:
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while _started(pid) == started and time.monotonic() < deadline:
            time.sleep(0.1)


class Container:
    """A booted copy of the root file system; commands run through nsenter."""

    def __init__(self, root: Path, log: Path):
        self.root = root
        self.log = log
        self.process: subprocess.Popen | None = None
        self.init_pid: int | None = None
        self.debs: dict = {}

    def boot(self, timeout: float = BOOT_TIMEOUT) -> None:
        env = _clean_env(
            # Debian 12's default is the unified cgroup hierarchy; with it
            # (and the bpf() system call) systemd enforces IPAddressDeny=.
            SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(
                ["systemd-nspawn", "-q", "-D", str(self.root), "--boot", "--register=no",
                 "--keep-unit", "--private-network", "--system-call-filter=bpf",
                 f"--machine=baremail-{uuid.uuid4().hex[:8]}"],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                env=env, start_new_session=True)
        (self.root.parent / "nspawn.pid").write_text(
            f"{self.process.pid} {_started(self.process.pid)}")
        deadline = time.monotonic() + timeout
        state = "no PID 1 yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self.init_pid is None:
                self.init_pid = self._find_init()
                if self.init_pid is not None:
                    (self.root.parent / "init.pid").write_text(
                        f"{self.init_pid} {_started(self.init_pid)}")
            if self.init_pid is not None:
                result = self.run("systemctl", "is-system-running", check=False, timeout=10)
                state = (result.stdout.strip() or result.stderr.strip() or state)
                if state in ("running", "degraded"):
                    return
            time.sleep(0.3)
        pytest.fail(f"container did not boot within {timeout} s (last state: {state}, "
                    f"nspawn exit code: {self.process.poll()}); {self.log}:\n{_tail(self.log)}")

    def _find_init(self) -> int | None:
        children = []
        for task in Path(f"/proc/{self.process.pid}/task").glob("*/children"):
            try:
                children += task.read_text().split()
            except OSError:
                pass
        for pid in children:
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
            except OSError:
                pass
        return None

    def run(self, *command: str, check: bool = True, timeout: float = 120,
            input: str | None = None, **env) -> subprocess.CompletedProcess:
        assert self.init_pid is not None, "container not booted"
        result = subprocess.run(
            ["nsenter", "-t", str(self.init_pid), "-a", *command],
            env=_clean_env(DEBIAN_FRONTEND="noninteractive", SYSTEMD_COLORS="0", **env),
            input=input, stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            pytest.fail(f"in the container, {' '.join(command)!r} exited {result.returncode}\n"
                        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result

    def sh(self, script: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run("sh", "-c", script, **kwargs)

    def put(self, source: Path, directory: str) -> str:
        """Copy a host file into the container (from the host side); returns its path inside."""
        target = self.root / directory.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / source.name)
        return f"{directory}/{source.name}"

    def stop(self) -> None:
        """Power off (SIGTERM to nspawn), else kill; bounded in time."""
        if self.process is None:
            return
        init = (self.init_pid, _started(self.init_pid)) if self.init_pid else None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        # nspawn killed hard leaves its container's init (and so the whole
        # container) running: end it too.
        if init is not None:
            _end_process(*init, first=signal.SIGKILL, grace=10)


def _remove_stale_work_dirs(say: Reporter) -> None:
    """Work directories of earlier runs that died before cleaning up, and
    their containers if those still run."""
    for directory in WORK_PARENT.glob(WORK_PREFIX + "*"):
        try:
            pid, started = (directory / "owner.pid").read_text().split()
            if _started(int(pid)) == started:
                continue  # its test run is still going
        except (OSError, ValueError):
            pass
        say(f"removing the leftover {directory}")
        for name, first in (("nspawn.pid", signal.SIGTERM), ("init.pid", signal.SIGKILL)):
            try:
                pid, started = (directory / name).read_text().split()
                _end_process(int(pid), started, first=first)
            except (OSError, ValueError):
                pass
        remove_tree(directory)


# -- fixtures ---------------------------------------------------------------

@pytest.fixture(scope="module")
def say(pytestconfig) -> Reporter:
    return Reporter(pytestconfig)


@pytest.fixture(scope="module")
def work(say):
    if os.geteuid() != 0:
        pytest.skip("the install test needs root (mmdebstrap, systemd-nspawn)")
    missing = [tool for tool in ("mmdebstrap", "systemd-nspawn", "nsenter", "dpkg-buildpackage")
               if shutil.which(tool, path=CONTAINER_PATH) is None]
    if missing:
        pytest.fail(f"missing host tools: {', '.join(missing)} (make deps installs them)")
    _remove_stale_work_dirs(say)
    directory = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=WORK_PARENT))
    (directory / "owner.pid").write_text(f"{os.getpid()} {_started(os.getpid())}")
    try:
        yield directory
    finally:
        remove_tree(directory)


@pytest.fixture(scope="module")
def debs(work, say) -> dict:
    started = time.monotonic()
    built = {"current": build_deb(work, "deb-current"),
             "upgrade": build_deb(work, "deb-upgrade", UPGRADE_VERSION)}
    say(f"built {built['current'].name} and {built['upgrade'].name} "
        f"in {time.monotonic() - started:.0f} s")
    return built


@pytest.fixture(scope="module")
def box(work, debs, say):
    """The booted container, with both .debs in /root/debs."""
    image = cached_rootfs(say)
    started = time.monotonic()
    root = work / "root"
    subprocess.run(["cp", "-a", "--reflink=auto", str(image), str(root)], check=True)
    container = Container(root, work / "container.log")
    try:
        container.boot()
        say(f"container copied and booted in {time.monotonic() - started:.1f} s")
        container.debs.update({kind: container.put(path, DEBS_IN_CONTAINER)
                               for kind, path in debs.items()})
        yield container
    finally:
        container.stop()
        remove_tree(root)


# -- helpers that run in the container ---------------------------------------

# Connects, reads the greeting, says QUIT (both protocols have it), prints the greeting.
PROBE = r"""
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30) as s:
    f = s.makefile("rb")
    greeting = f.readline()
    s.sendall(b"QUIT\r\n")
    f.readline()
print(greeting.decode().strip())
"""

# Every message over POP3 (nothing deleted), as JSON: uidl -> base64 of the
# message with CRLF line ends, exactly as a client reassembles it.
POP3_DUMP = r"""
import base64, json, poplib, sys
p = poplib.POP3(sys.argv[1], int(sys.argv[2]), timeout=30)
p.user("root")
p.pass_("anything")
count, _ = p.stat()
uidls = dict(line.decode().split(" ", 1) for line in p.uidl()[1])
messages = {}
for number in range(1, count + 1):
    lines = p.retr(number)[1]
    messages[uidls[str(number)]] = base64.b64encode(b"\r\n".join(lines) + b"\r\n").decode()
p.quit()
print(json.dumps(messages))
"""


def probe(box: Container, host: str, port: int) -> str:
    return box.run("python3", "-c", PROBE, host, str(port)).stdout.strip()


def pop3_messages(box: Container, host: str = "127.0.0.1") -> dict:
    out = box.run("python3", "-c", POP3_DUMP, host, str(POP3_PORT)).stdout
    return {uidl: base64.b64decode(data) for uidl, data in json.loads(out).items()}


def enabled(box: Container, unit: str) -> str:
    return box.run("systemctl", "is-enabled", unit, check=False).stdout.strip()


def show(box: Container, unit: str, prop: str) -> str:
    return box.run("systemctl", "show", "-P", prop, unit).stdout.strip()


def wait_for(condition, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def listening(box: Container) -> set:
    out = box.run("ss", "-Hltn").stdout
    return {line.split()[3] for line in out.splitlines() if line.strip()}


def apt(box: Container, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return box.run("apt-get", "-y", "-q", *args, check=check, timeout=300)


def stored_keys(box: Container) -> set:
    """Keys (= UIDLs) of the stored messages; a key survives the new/ -> cur/ move."""
    out = box.sh("cd /var/lib/baremail/Maildir && find new cur -type f").stdout
    return {Path(path).name.split(":")[0] for path in out.split()}


def installed_status(box: Container) -> str:
    return box.run("dpkg-query", "-W", "-f=${Status}", "baremail", check=False).stdout


def reset_start_limits(box: Container) -> None:
    # Tests start the services faster than any real use; keep systemd's start
    # rate limit (5 per 10 s) from turning a test into a false failure.
    box.run("systemctl", "reset-failed", "baremail-smtp.service", "baremail-pop3.service",
            check=False)


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
def shared() -> dict:
    """What one test learns and a later one checks (mail keys)."""
    return {}


def test_package_installs_offline(box):
    links = box.run("ip", "-o", "link").stdout.splitlines()
    assert [line.split(":")[1].strip() for line in links] == ["lo"], "only lo in the container"
    result = apt(box, "install", box.debs["current"])
    assert "Setting up baremail" in result.stdout
    assert installed_status(box) == "install ok installed"
    assert box.run("getent", "passwd", "baremail").stdout.split(":")[5] == "/var/lib/baremail"
    for path in ("/usr/bin/baremail-smtp", "/usr/bin/baremail-pop3",
                 "/etc/baremail/baremail.conf", "/usr/lib/sysusers.d/baremail.conf",
                 "/usr/share/doc/baremail/README.Debian"):
        box.run("test", "-e", path)
    units = [f"baremail-{name}.{kind}" for name in ("smtp", "pop3")
             for kind in ("socket", "service")]
    verify = box.run("systemd-analyze", "verify", "--man=no", *units, check=False)
    assert (verify.returncode, verify.stderr.strip()) == (0, ""), verify.stderr


def test_sockets_listen_and_services_wait_for_a_connection(box):
    expected = {f"{host}:{port}" for host in ("127.0.0.1", "[::1]")
                for port in (*SMTP_PORTS, POP3_PORT)}
    assert expected <= listening(box)
    for name in ("smtp", "pop3"):
        assert show(box, f"baremail-{name}.socket", "ActiveState") == "active"
        assert enabled(box, f"baremail-{name}.socket") == "enabled"
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


def test_enable_now_of_the_sockets_succeeds(box):
    box.run("systemctl", "enable", "--now", "baremail-smtp.socket", "baremail-pop3.socket")
    # Enabling a service enables its socket (Also=).
    box.run("systemctl", "enable", "baremail-smtp.service", "baremail-pop3.service")
    for name in ("smtp", "pop3"):
        assert show(box, f"baremail-{name}.socket", "ActiveState") == "active"
        assert enabled(box, f"baremail-{name}.socket") == "enabled"


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
    shared["keys"] = sorted(keys.values())


def _journal(box: Container, *args: str) -> list:
    out = box.run("journalctl", "--no-pager", "-o", "cat", *args).stdout
    return [line for line in out.splitlines() if line.strip()]


def test_journal_has_the_delivery_and_retrieval_lines(box, shared):
    if not shared.get("keys"):
        pytest.skip("needs the mail of the round-trip test")
    for key in shared["keys"]:
        lines = wait_for(lambda: _journal(box, "-u", "baremail-smtp", f"BAREMAIL_MAILID={key}"),
                         f"the delivery of {key} in the journal")
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"delivered {key} from=<sender@example.org> "
                                   f"to=<root@localhost> size="), lines
        assert lines[0] in _journal(box, "-u", "baremail-smtp")
        wait_for(lambda: any(line.startswith(f"retrieved {key} ")
                             for line in _journal(box, "-u", "baremail-pop3")),
                 f"'retrieved {key}' in the journal")


def test_reload_rereads_the_configuration(box):
    unit = "baremail-smtp.service"
    probe(box, "127.0.0.1", 25)
    pid = show(box, unit, "MainPID")
    box.run("systemctl", "reload", unit)
    wait_for(lambda: any(line.startswith("configuration reloaded")
                         for line in _journal(box, "-u", "baremail-smtp", f"_PID={pid}")),
             "'configuration reloaded' in the journal")
    assert show(box, unit, "MainPID") == pid


@pytest.mark.parametrize("action", ["restart", "stop"])
def test_restart_and_stop_leave_the_socket_serving(box, action):
    unit = "baremail-smtp.service"
    reset_start_limits(box)
    probe(box, "127.0.0.1", 25)
    box.run("systemctl", action, unit)
    assert show(box, "baremail-smtp.socket", "ActiveState") == "active"
    assert probe(box, "127.0.0.1", 587).startswith("220 ")
    assert show(box, unit, "ActiveState") == "active"


def test_service_started_by_hand_pulls_in_its_socket(box):
    reset_start_limits(box)
    box.run("systemctl", "stop", "baremail-smtp.socket")  # takes the service with it
    assert show(box, "baremail-smtp.service", "ActiveState") == "inactive"
    box.run("systemctl", "start", "baremail-smtp.service")
    assert show(box, "baremail-smtp.socket", "ActiveState") == "active"
    assert show(box, "baremail-smtp.service", "ActiveState") == "active"
    assert probe(box, "::1", 25).startswith("220 ")


def test_killed_service_is_started_again(box):
    unit = "baremail-smtp.service"
    reset_start_limits(box)
    probe(box, "127.0.0.1", 25)
    old = show(box, unit, "MainPID")
    box.run("kill", "-9", old)
    wait_for(lambda: show(box, unit, "MainPID") != old, "the killed MainPID to go")
    assert probe(box, "127.0.0.1", 25).startswith("220 ")
    assert show(box, unit, "ActiveState") == "active"
    assert show(box, unit, "MainPID") not in ("0", old)
    assert show(box, "baremail-smtp.socket", "ActiveState") == "active"


def test_security_exposure_is_recorded(box, say, record_property):
    # A later issue asserts <= 0.5; for now the numbers go into the output.
    for name in ("smtp", "pop3"):
        out = box.run("systemd-analyze", "security", "--no-pager", f"baremail-{name}.service",
                      check=False).stdout
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
        assert match, out
        record_property(f"exposure_{name}", float(match.group(1)))
        say(f"systemd-analyze security baremail-{name}.service: {match.group(1)}")
        for line in out.splitlines():
            if line.startswith("\u2717"):  # the settings that still cost points
                say("    " + " ".join(line.split()))


def test_remove_stops_everything_and_keeps_mail(box, shared):
    keys = stored_keys(box)
    assert keys
    probe(box, "127.0.0.1", 110)  # a running service has to be stopped too
    result = apt(box, "remove", "baremail")
    assert "Removing baremail" in result.stdout
    for unit in ("baremail-smtp.socket", "baremail-pop3.socket",
                 "baremail-smtp.service", "baremail-pop3.service"):
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
    reset_start_limits(box)
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
    reset_start_limits(box)
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
        assert installed_status(box) == "install ok installed"
        assert show(box, "baremail-smtp.socket", "ActiveState") == "failed"
        assert show(box, "baremail-pop3.socket", "ActiveState") == "active"
        # The mail kept through the purge is served again.
        assert set(pop3_messages(box)) == keys
    finally:
        box.run("systemctl", "stop", "hold-port-25.service", check=False)
    box.run("systemctl", "restart", "baremail-smtp.socket")
    assert probe(box, "127.0.0.1", 25).startswith("220 ")
