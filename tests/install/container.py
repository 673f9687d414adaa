"""Harness for tests that need a real systemd: a cached root file system of
Debian 13 (trixie) or Debian 12 (bookworm) from mmdebstrap, booted with
systemd-nspawn, commands run through nsenter, and BareMail's .debs built
from the working tree.

* The package is built from a copy of the working tree with
  ``dpkg-buildpackage``; the tree itself is not touched.
* Each release's root file system is cached under
  /var/cache/baremail-tests/rootfs-<release>-<kind>-<hash of what goes into it>/. It is built
  in a ``.partial`` directory and renamed when complete, under a lock, so an
  interrupted build never leaves a cache that looks valid.
* Each test module copies it, boots the copy with ``systemd-nspawn --boot
  --private-network`` (no network but loopback inside: apt has to manage
  offline) and runs every command through ``nsenter`` into the container's
  PID 1. The container is powered off and its copy removed when the module
  ends, whatever the tests did (see conftest.py's fixtures).
"""

from __future__ import annotations

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
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("BAREMAIL_TEST_CACHE", "/var/cache/baremail-tests"))
WORK_PARENT = Path("/var/tmp")
WORK_PREFIX = "baremail-install-"

# The Debian releases the install tests boot: 13 (trixie, the current
# stable release) and 12 (bookworm). Every container test runs on each.
RELEASES = ("trixie", "bookworm")
NUMBERS = {"bookworm": 12, "trixie": 13}
# The release of this build host: lintian and piuparts run there.
HOST_RELEASE = "bookworm"


def mirrors(suite: str) -> tuple:
    return (f"deb http://deb.debian.org/debian {suite} main",
            f"deb http://deb.debian.org/debian {suite}-updates main",
            f"deb http://deb.debian.org/debian-security {suite}-security main")


# Installed in the image. swaks needs libio-socket-inet6-perl for IPv6 and
# netbase (/etc/protocols) for anything. autopkgtest runs debian/tests inside
# the booted container (test_autopkgtest.py).
ROOTFS_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "python3", "python3-systemd",
    "python3-sdnotify", "swaks", "libio-socket-inet6-perl", "curl", "cron",
    "procps", "iproute2", "netbase", "autopkgtest",
)
# Only downloaded, into /opt/baremail-test-debs in the image: bsd-mailx
# depends on a mail-transport-agent, and installing it now would drag in
# exim4, which takes port 25. test_mta.py installs it next to baremail-mta
# (with its dependencies: liblockfile1 needs liblockfile-bin).
ROOTFS_DOWNLOADS = ("bsd-mailx", "liblockfile1", "liblockfile-bin")
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


def copy_tree(target: Path) -> Path:
    """A copy of the working tree (without .git and build leftovers) at `target`."""
    shutil.copytree(REPO, target, symlinks=True, ignore=_TREE_IGNORE)
    return target


def build_deb(work: Path, name: str, version: str | None = None, source: bool = False) -> Path:
    """Build the .debs from a copy of the working tree; returns the path of
    baremail's (the others lie beside it: see sibling_deb()). With `source`,
    the source package too (.dsc, .tar.xz), all named in the .changes.

    Debian's /usr/bin/python3 comes first in PATH: pybuild must not pick up
    another python3. The unit tests run separately (make test), so nocheck."""
    out = work / name
    src = copy_tree(out / "baremail")
    if version is not None:
        _add_changelog_entry(src / "debian" / "changelog", version)
    log = out / "build.log"
    with open(log, "wb") as output:
        result = subprocess.run(
            ["dpkg-buildpackage", "-us", "-uc", "-F" if source else "-b", "-Pnocheck"], cwd=src,
            env=_clean_env(DEB_BUILD_OPTIONS="nocheck"), stdin=subprocess.DEVNULL,
            stdout=output, stderr=subprocess.STDOUT, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"dpkg-buildpackage failed ({result.returncode}); {log}:\n{_tail(log)}")
    debs = sorted(out.glob("baremail_*_all.deb"))
    assert len(debs) == 1, f"expected one .deb in {out}, found {debs}"
    return debs[0]


def sibling_deb(deb: Path, package: str) -> Path:
    """The .deb of another binary package of the same build as `deb`
    (e.g. baremail-mta beside baremail)."""
    version = deb.name.split("_")[1]
    sibling = deb.with_name(f"{package}_{version}_all.deb")
    assert sibling.exists(), f"{package} was not built beside {deb}"
    return sibling


# -- the cached root file system -------------------------------------------

def _mmdebstrap_command(suite: str, target: Path, extra_packages: tuple = ()) -> tuple:
    hooks = [
        f'systemctl --root="$1" mask {" ".join(ROOTFS_MASKED)}',
        f'mkdir -p "$1{ROOTFS_DEBS_DIR}" && chroot "$1" sh -c '
        f'"cd {ROOTFS_DEBS_DIR} && apt-get -q download {" ".join(ROOTFS_DOWNLOADS)}"',
    ]
    command = ["mmdebstrap", "--mode=root", "--format=directory", "--variant=apt",
               "--include=" + ",".join(ROOTFS_PACKAGES + tuple(extra_packages))]
    command += [f"--customize-hook={hook}" for hook in hooks]
    return command + [suite, str(target), *mirrors(suite)], hooks


def rootfs_key(suite: str, extra_packages: tuple = ()) -> str:
    _, hooks = _mmdebstrap_command(suite, Path("/x"))
    recipe = [suite, mirrors(suite), ROOTFS_PACKAGES, ROOTFS_DOWNLOADS, hooks]
    if extra_packages:
        recipe.append(sorted(extra_packages))
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]


def _image_prefix(suite: str, extra_packages: tuple) -> str:
    # With extra packages (the benchmark's Postfix, Dovecot, aiosmtpd; the
    # build tools of the Debian 13 build test) an image is cached under a
    # name of its own. Each (release, kind) only replaces its own outdated
    # builds: plain and extended images of both releases live side by side.
    kind = "plus-" + hashlib.sha256(json.dumps(sorted(extra_packages)).encode()).hexdigest()[:6] \
        if extra_packages else "plain"
    return f"rootfs-{suite}-{kind}-"


def cached_rootfs(say: Reporter, suite: str = HOST_RELEASE, extra_packages: tuple = ()) -> Path:
    """The cached root file system of `suite`; with `extra_packages`, one
    that has those installed as well (built once, cached under its own name)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    extra_packages = tuple(extra_packages)
    prefix = _image_prefix(suite, extra_packages)
    final = CACHE_DIR / f"{prefix}{rootfs_key(suite, extra_packages)}"
    with open(CACHE_DIR / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; others wait, then reuse
        if (final / "etc" / "os-release").exists():
            say(f"using the cached root file system {final}")
            return final
        # Partial builds and outdated recipes of this kind; images from
        # before images were named by release go too.
        stale = [path for path in CACHE_DIR.glob(prefix + "*")]
        stale += [path for path in CACHE_DIR.glob("rootfs-*")
                  if not path.name.startswith(tuple(f"rootfs-{r}-" for r in RELEASES))]
        for path in stale:
            say(f"removing {path}")
            remove_tree(path)
        partial = CACHE_DIR / f"{final.name}.partial"
        command, _ = _mmdebstrap_command(suite, partial, extra_packages)
        say(f"building the {suite} root file system (a few minutes; cached afterwards in {final})")
        started = time.monotonic()
        log = CACHE_DIR / f"mmdebstrap-{suite}.log"
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


def _new_cgroup(name: str) -> Path | None:
    """A new, empty cgroup (v2) `name` below this process's own; None on a
    host without the unified hierarchy.

    systemd-nspawn --keep-unit puts its container into "payload" below the
    cgroup it was started in: two containers started from the same cgroup
    (this test run and another one, or a benchmark, on the same machine)
    would share one cgroup tree, and each container's systemd would see, and
    try to stop, the other's services. So each nspawn starts in a cgroup of
    its own."""
    with open("/proc/self/mountinfo") as mountinfo:
        mounts = [line.split() for line in mountinfo]
    # The file system type follows the " - " separator.
    points = [fields[4] for fields in mounts if fields[fields.index("-") + 1] == "cgroup2"]
    own = [line.strip()[3:] for line in Path("/proc/self/cgroup").read_text().splitlines()
           if line.startswith("0::")]
    if not points or not own:
        return None
    path = Path(points[0]) / own[0].lstrip("/") / name
    path.mkdir()
    return path


def _remove_cgroup(path: Path) -> None:
    """rmdir a cgroup and those below it, deepest first (a cgroup holding a
    process stays)."""
    for directory in sorted((p for p in path.rglob("*") if p.is_dir()),
                            key=lambda p: len(p.parts), reverse=True) + [path]:
        try:
            directory.rmdir()
        except OSError:
            pass


class Container:
    """A booted copy of the root file system; commands run through nsenter."""

    def __init__(self, root: Path, log: Path):
        self.root = root
        self.log = log
        self.process: subprocess.Popen | None = None
        self.init_pid: int | None = None
        self.debs: dict = {}
        self.cgroup: Path | None = None

    def boot(self, timeout: float = BOOT_TIMEOUT) -> None:
        env = _clean_env(
            # Debian 12's default is the unified cgroup hierarchy; with it
            # (and the bpf() system call) systemd enforces IPAddressDeny=.
            SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
        machine = f"baremail-{uuid.uuid4().hex[:8]}"
        self.cgroup = _new_cgroup(machine)
        if self.cgroup is not None:
            (self.root.parent / "cgroup").write_text(str(self.cgroup))
        procs = None if self.cgroup is None else str(self.cgroup / "cgroup.procs")

        def enter_own_cgroup():  # in the child, before systemd-nspawn runs
            if procs is not None:
                with open(procs, "w") as handle:
                    handle.write(str(os.getpid()))

        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(
                ["systemd-nspawn", "-q", "-D", str(self.root), "--boot", "--register=no",
                 "--keep-unit", "--private-network", "--system-call-filter=bpf",
                 f"--machine={machine}"],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, preexec_fn=enter_own_cgroup)
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
        if self.cgroup is not None:
            _remove_cgroup(self.cgroup)


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
        try:
            _remove_cgroup(Path((directory / "cgroup").read_text()))
        except OSError:
            pass
        remove_tree(directory)


