"""The benchmark proper, run inside the booted container by bench/run.py.

    python3 inside.py setup                # configure the peers, install BareMail
    python3 inside.py measure OUT.json [--quick] [--only smtp,pop3,...] [--set KEY=VALUE ...]

Every server gets ports of its own on 127.0.0.1:
    BareMail  SMTP 25, POP3 110, IMAP 143 (as installed: socket-activated, sandboxed)
    Postfix   SMTP 10025, delivering to /home/bench/Maildir (local(8), Maildir/)
    Dovecot   POP3 10110, IMAP 10143, serving /home/bench/Maildir (what Postfix delivered)
    aiosmtpd  SMTP 8025, its Mailbox handler into /var/lib/bench-aiosmtpd/Maildir

--set overrides one count of the plan (e.g. --set imap_idle_sessions=1000
with --quick, to try one load at its full size); such figures are not kept.

Progress goes to stderr; the results to OUT.json. Every load is bounded in
message count, and every wait in time.
"""

from __future__ import annotations

import json
import os
import random
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import imapload  # noqa: E402
import pop3load  # noqa: E402

SMTP = {"baremail": 25, "postfix": 10025, "aiosmtpd": 8025}
POP3 = {"baremail": 110, "dovecot": 10110}
IMAP = {"baremail": 143, "dovecot": 10143}
MAILDIR = {"baremail": Path("/var/lib/baremail/Maildir"),
           "postfix": Path("/home/bench/Maildir"),
           "aiosmtpd": Path("/var/lib/bench-aiosmtpd/Maildir")}
MAILDIR["dovecot"] = MAILDIR["postfix"]
UNIT = {"baremail": "baremail-smtp.service", "baremail-pop3": "baremail-pop3.service",
        "baremail-imap": "baremail-imap.service",
        "postfix": "postfix@-.service", "dovecot": "dovecot.service",
        "aiosmtpd": "bench-aiosmtpd.service"}
SENDER = RECIPIENT = "bench@localhost"


def postfix_unit() -> str:
    """Debian 12 runs Postfix's main instance as postfix@-.service (postfix.service
    only starts the instances); Debian 13 runs it as postfix.service itself."""
    try:
        main = Path("/lib/systemd/system/postfix.service").read_text()
    except OSError:
        return "postfix@-.service"
    return "postfix.service" if "debian-systemd-start" in main else "postfix@-.service"


UNIT["postfix"] = postfix_unit()

# The benchmark's Dovecot: POP3 and IMAP, any password (a static passdb, so
# no PAM round trip delays a login), the Maildir Postfix delivers to; no SSL.
# Beyond Debian's defaults only what 1,000 IMAP sessions of one user from
# one address need: mail_max_userip_connections (default 10), the imap
# service's process_limit (default 1024; one process per session) and
# default_client_limit (1000: anvil, log, stats and config serve every
# imap process). Dovecot 2.4 (Debian 13) renamed the settings: one text
# per syntax.
DOVECOT_LISTENERS = """\
default_client_limit = 2000
service pop3-login {
  inet_listener pop3 {
    port = 10110
  }
  inet_listener pop3s {
    port = 0
  }
}
service imap-login {
  inet_listener imap {
    port = 10143
  }
  inet_listener imaps {
    port = 0
  }
}
service imap {
  process_limit = 1100
}
protocol imap {
  mail_max_userip_connections = 1100
}
"""
DOVECOT_CONF = {"2.3": """\
protocols = pop3 imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:~/Maildir
passdb {
  driver = static
  args = nopassword=y
}
userdb {
  driver = static
  args = uid=bench gid=bench home=/home/bench
}
""" + DOVECOT_LISTENERS, "2.4": """\
dovecot_config_version = 2.4.0
dovecot_storage_version = 2.4.0
protocols = pop3 imap
listen = 127.0.0.1
ssl = no
auth_allow_cleartext = yes
auth_mechanisms = plain
mail_driver = maildir
mail_path = ~/Maildir
passdb static {
  fields {
    nopassword = yes
  }
}
userdb static {
  fields {
    uid = bench
    gid = bench
    home = /home/bench
  }
}
""" + DOVECOT_LISTENERS}

# The cold-start floor: python3 importing asyncio and the systemd modules,
# then greeting one client on the socket systemd passed. Run socket-activated
# twice: as a plain unit, and under BareMail's own sandbox (its [Service]
# lines, copied at setup), to show what the sandbox alone adds.
FLOOR_PROGRAM = """\
import asyncio
from systemd import daemon, journal
import sdnotify
import socket
listener = socket.socket(fileno=3)
client, _ = listener.accept()
client.sendall(b"220 floor\\r\\n")
client.recv(100)
"""
FLOOR_UNITS = {"bench-floor-plain": 2601, "bench-floor-sandboxed": 2602}
# Lines of baremail-smtp.service's [Service] that are not its sandbox.
NOT_SANDBOX = ("ExecStart=", "ExecReload=", "Type=", "WatchdogSec=", "Sockets=", "Restart=",
               "RestartPreventExitStatus=", "#")

AIOSMTPD_UNIT = """\
[Unit]
Description=aiosmtpd for the benchmark (Mailbox handler)

[Service]
ExecStart=/usr/bin/python3 -m aiosmtpd -n -l 127.0.0.1:8025 -s 209715200 -c aiosmtpd.handlers.Mailbox /var/lib/bench-aiosmtpd/Maildir
LimitNOFILE=8192
"""


def say(message: str) -> None:
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


def sh(*command: str, check: bool = True, timeout: float = 120) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


# -- setup -------------------------------------------------------------------

def setup(debs: list[str]) -> None:
    if sh("id", "-u", "bench", check=False).strip() == "":
        sh("useradd", "--create-home", "--shell", "/usr/sbin/nologin", "bench")
    # Postfix: loopback port 10025 only, local delivery into ~/Maildir/.
    sh("postconf", "-e", "inet_interfaces = loopback-only", "inet_protocols = ipv4",
       "home_mailbox = Maildir/", "smtpd_tls_security_level = none",
       "message_size_limit = 209715200", "mailbox_size_limit = 0")
    sh("postconf", "-MX", "smtp/inet")
    sh("postconf", "-M", "127.0.0.1:10025/inet = 127.0.0.1:10025 inet n - y - - smtpd")
    sh("systemctl", "restart", "postfix.service")
    # Dovecot: POP3 on 10110, IMAP on 10143, any password.
    version = sh("dovecot", "--version").strip()
    syntax = "2.3" if version.startswith(("2.2", "2.3")) else "2.4"
    Path("/etc/dovecot/dovecot.conf").write_text(
        f"# Dovecot {version}: the benchmark's configuration (bench/inside.py)\n" + DOVECOT_CONF[syntax])
    sh("systemctl", "restart", "dovecot.service")
    # aiosmtpd as a service of its own.
    Path("/var/lib/bench-aiosmtpd").mkdir(exist_ok=True)
    Path("/etc/systemd/system/bench-aiosmtpd.service").write_text(AIOSMTPD_UNIT)
    sh("systemctl", "daemon-reload")
    sh("systemctl", "restart", "bench-aiosmtpd.service")
    # BareMail, as the package installs it (ports 25 and 110 are free now).
    sh("dpkg", "-i", *debs, timeout=300)
    missing = [name for name in ("smtp", "smtpd", "pop3", "pop3d", "service", "maildir", "imap", "imapd", "mime")
               if not list(Path("/usr/lib/python3/dist-packages/baremail/__pycache__").glob(f"{name}.*.pyc"))]
    if missing:
        say(f"warning: no byte-code for {missing} after installing: every start would compile them")
    setup_floor()
    # 1,000 idle sessions plus fresh clients beside them: above the default cap.
    conf = Path("/etc/baremail/baremail.conf")
    conf.write_text(conf.read_text().replace("\nmax_sessions = 1000\n", "\nmax_sessions = 1100\n"))
    for port in (*SMTP.values(), *POP3.values(), *IMAP.values()):
        wait_until(lambda: port_open(port), 30, f"port {port}")
    say("set up: " + ", ".join(f"{name} SMTP {port}" for name, port in SMTP.items()) + "; "
        + ", ".join(f"{name} POP3 {port}" for name, port in POP3.items()) + "; "
        + ", ".join(f"{name} IMAP {port}" for name, port in IMAP.items()))


def setup_floor() -> None:
    program = Path("/usr/local/lib/bench/floor.py")
    program.parent.mkdir(parents=True, exist_ok=True)
    program.write_text(FLOOR_PROGRAM)
    program.parent.chmod(0o755)
    program.chmod(0o644)
    service = Path("/lib/systemd/system/baremail-smtp.service").read_text()
    section = service.split("[Service]", 1)[1].split("\n[", 1)[0]
    sandbox = [line for line in section.strip().splitlines()
               if line.strip() and not line.startswith(NOT_SANDBOX)]
    for name, port in FLOOR_UNITS.items():
        lines = ["[Unit]", "StartLimitIntervalSec=0", "", "[Service]",
                 f"ExecStart=/usr/bin/python3 {program}"]
        if name.endswith("sandboxed"):
            lines += sandbox
        Path(f"/etc/systemd/system/{name}.service").write_text("\n".join(lines) + "\n")
        Path(f"/etc/systemd/system/{name}.socket").write_text(
            f"[Socket]\nListenStream=127.0.0.1:{port}\n")
    sh("systemctl", "daemon-reload")
    sh("systemctl", "start", *(f"{name}.socket" for name in FLOOR_UNITS))


def versions() -> dict:
    def package(name):
        return sh("dpkg-query", "-W", "-f=${Version}", name, check=False).strip()
    release = ""
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("PRETTY_NAME="):
            release = line.split("=", 1)[1].strip('"')
    return {"baremail": package("baremail"), "postfix": package("postfix"),
            "dovecot": package("dovecot-core"), "dovecot_imapd": package("dovecot-imapd"),
            "aiosmtpd": package("python3-aiosmtpd"), "python3": sys.version.split()[0],
            "container": release}


# -- helpers: mailboxes, queues, processes ------------------------------------

def empty_maildir(path: Path) -> None:
    for sub in ("new", "cur", "tmp"):
        directory = path / sub
        if directory.is_dir():
            for entry in os.scandir(directory):
                os.unlink(entry.path)
    for entry in os.scandir(path) if path.is_dir() else ():
        # Dovecot's index and UID list, BareMail's UID list (the IMAP
        # service is stopped before its Maildir is emptied).
        if entry.name.startswith(("dovecot", "baremail-uidlist")) and entry.is_file():
            os.unlink(entry.path)
    # Commit the deletions now: on a file system mounted with "discard"
    # (as this VM's is), the journal commit that frees thousands of files
    # also trims their blocks, and it must not land in the next timed run
    # (it would stall whichever server fsyncs first, and not the one that
    # does not fsync at all).
    os.sync()


def count_messages(path: Path) -> int:
    return sum(len(os.listdir(path / sub)) for sub in ("new", "cur") if (path / sub).is_dir())


def postfix_queue_empty() -> bool:
    spool = Path("/var/spool/postfix")
    return not any(any(True for _ in (spool / name).rglob("*") if _.is_file())
                   for name in ("maildrop", "incoming", "active", "deferred", "hold"))


def settle(server: str, path: Path, expected: int, timeout: float = 300) -> None:
    """Wait until `expected` messages are in the Maildir (Postfix delivers after its 250)."""
    wait_until(lambda: count_messages(path) >= expected, timeout,
               f"{expected} messages in {path} ({server})", interval=0.2)
    if server == "postfix":
        wait_until(postfix_queue_empty, timeout, "Postfix's queue to drain", interval=0.2)


def main_pid(unit: str) -> int:
    return int(sh("systemctl", "show", "-p", "MainPID", "--value", unit).strip() or 0)


def unit_pids(unit: str, exclude: tuple = ()) -> list[int]:
    """Every process of a unit (Postfix's sits in a slice of its own), but
    those whose command name is in `exclude`."""
    pids = []
    for path in Path("/sys/fs/cgroup/system.slice").rglob(unit):
        for procs in path.rglob("cgroup.procs"):
            pids += [int(pid) for pid in procs.read_text().split()]
    if exclude:
        pids = [pid for pid in pids if comm(pid) not in exclude]
    return pids


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


# Dovecot's IMAP processes: not counted in the POP3 rows' "idle RSS".
DOVECOT_IMAP = ("imap", "imap-login")


def status_kb(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_kb(pids) -> int:
    total = 0
    for pid in pids:
        try:
            total += status_kb(pid)
        except (OSError, ValueError):
            pass
    return total


def pss_kb(pids) -> int:
    """Proportional set size summed: each shared page counted once, in
    shares (for a server of many processes, RSS counts it in each)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                for line in rollup:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError):
            pass
    return total


def restart_baremail(unit: str, port: int) -> int:
    """Stop the service (its socket stays), start it with one session; its PID."""
    stop(unit)
    greet(port)
    return wait_until(lambda: main_pid(unit), 10, f"{unit} to run")


def stop(unit: str) -> None:
    """Stop a socket-activated service; its socket stays (the units have
    no start rate limit, and none is reset here: one would show)."""
    sh("systemctl", "stop", unit)


def greet(port: int) -> float:
    """Connect, read the greeting, QUIT (LOGOUT for IMAP); seconds until
    the greeting's line end."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                raise SystemExit(f"port {port} closed before its greeting")
            data += chunk
        took = time.perf_counter() - started
        sock.sendall(b"a LOGOUT\r\n" if port in IMAP.values() else b"QUIT\r\n")
        sock.recv(4096)
    return took


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": values}


# -- SMTP throughput with smtp-source ------------------------------------------

def smtp_source(port: int, sessions: int, count: int, size: int) -> float:
    command = ["smtp-source", "-d", "-s", str(sessions), "-m", str(count), "-l", str(size),
               "-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{port}"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"smtp-source against port {port}: {result.stderr.strip()}")
    return took


def smtp_run(server: str, sessions: int, count: int, size: int = 2048) -> float:
    path = MAILDIR[server]
    if server == "postfix":
        wait_until(postfix_queue_empty, 300, "Postfix's queue to drain", interval=0.2)
    empty_maildir(path)
    took = smtp_source(SMTP[server], sessions, count, size)
    settle(server, path, count)
    stored = count_messages(path)
    if stored != count:
        raise SystemExit(f"{server}: {stored} messages stored, {count} sent")
    return count / took


def measure_smtp(plan: dict) -> dict:
    results: dict = {}
    floor = []
    for server in SMTP:  # warm up: processes started, caches filled
        smtp_run(server, 10, plan["warmup"])
    for repetition in range(plan["smtp_repetitions"]):
        for sessions, count in plan["smtp"]:
            for server in SMTP:
                rate = smtp_run(server, sessions, count)
                results.setdefault(f"{sessions}", {}).setdefault(server, []).append(rate)
                say(f"SMTP {server:9} {sessions:3} sessions, {count} x 2 KB: {rate:7.0f} msg/s")
            if sessions == 1:
                floor.append(durable_creates(count))
                say(f"SMTP floor: {floor[-1]:7.0f} durable creates/s, one thread ({count} x 2 KB)")
    out = {sessions: {server: summary(rates) for server, rates in by_server.items()}
           for sessions, by_server in results.items()}
    if floor:
        out["durable_creates"] = summary(floor)
    return out


FLOOR_DIR = Path("/var/lib/bench-floor")


def durable_creates(count: int, size: int = 2048) -> float:
    """The physical floor of a one-session SMTP server that keeps the
    durability rule: per message, create a file in tmp/, write `size`
    octets, fsync it, close it, rename it into new/ and fsync new/; one
    thread, on the disk the Maildirs are on. Creates per second."""
    tmp, new = FLOOR_DIR / "tmp", FLOOR_DIR / "new"
    for directory in (tmp, new):
        directory.mkdir(parents=True, exist_ok=True)
        for entry in os.scandir(directory):
            os.unlink(entry.path)
    os.sync()
    data = (b"x" * 78 + b"\r\n") * (size // 80) + b"x" * (size % 80)
    tmp_path, new_path = str(tmp), str(new)
    new_fd = os.open(new_path, os.O_RDONLY | os.O_DIRECTORY)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        started = time.perf_counter()
        for number in range(count):
            name = f"/{number}.floor"
            fd = os.open(tmp_path + name, flags, 0o600)
            os.write(fd, data)
            os.fsync(fd)
            os.close(fd)
            os.rename(tmp_path + name, new_path + name)
            os.fsync(new_fd)
        took = time.perf_counter() - started
    finally:
        os.close(new_fd)
    for entry in os.scandir(new):
        os.unlink(entry.path)
    os.sync()
    return count / took


# -- POP3 --------------------------------------------------------------------

def fill(server: str, count: int, size: int, sessions: int = 10) -> None:
    """Store `count` messages of `size` through the system's own SMTP."""
    path = MAILDIR[server]
    if server == "postfix":
        wait_until(postfix_queue_empty, 300, "Postfix's queue to drain", interval=0.2)
    empty_maildir(path)
    smtp_source(SMTP[server], sessions, count, size)
    settle(server, path, count)


def measure_pop3(plan: dict) -> dict:
    results: dict = {}
    pairs = (("baremail", "baremail"), ("dovecot", "postfix"))   # POP3 server, its SMTP
    count = plan["pop3_small"]
    for pop3, smtp in pairs:
        fill(smtp, count, 2048)
    say(f"stored {count} x 2 KB in each Maildir through its own SMTP")
    # login + STAT: Dovecot cold (no index yet, then index removed) and warm.
    for pop3, _ in pairs:
        port = POP3[pop3]
        cold, warm = [], []
        for _ in range(plan["repetitions"]):
            if pop3 == "dovecot":
                for entry in os.scandir(MAILDIR[pop3]):
                    if entry.name.startswith("dovecot"):
                        os.unlink(entry.path)
            else:
                stop(UNIT["baremail-pop3"])
            cold.append(pop3load.login_stat(port)["seconds"])
            for _ in range(3):
                warm.append(pop3load.login_stat(port)["seconds"])
        results.setdefault("login_stat_cold", {})[pop3] = summary(cold)
        results.setdefault("login_stat_warm", {})[pop3] = summary(warm)
        say(f"POP3 {pop3:9} login+STAT on {count}: cold {statistics.median(cold) * 1000:.1f} ms, "
            f"warm {statistics.median(warm) * 1000:.1f} ms")
    for repetition in range(plan["pop3_repetitions"]):
        for pop3, _ in pairs:
            run = pop3load.run_pipelined(POP3[pop3], batch=50)
            assert run["messages"] == count, run
            results.setdefault("retr_small", {}).setdefault(pop3, []).append(run)
            say(f"POP3 {pop3:9} RETR {count} x 2 KB pipelined: {run['msg_per_s']:7.0f} msg/s "
                f"(client CPU {run['client_cpu_seconds'] / run['seconds']:.0%} of wall time)")
            run = pop3load.run_poplib(POP3[pop3])
            results.setdefault("retr_small_poplib", {}).setdefault(pop3, []).append(run)
            say(f"POP3 {pop3:9} RETR {count} x 2 KB poplib:    {run['msg_per_s']:7.0f} msg/s")
    count = plan["pop3_large"]
    for pop3, smtp in pairs:
        fill(smtp, count, 1 << 20, sessions=4)
    say(f"stored {count} x 1 MB in each Maildir through its own SMTP")
    for repetition in range(plan["pop3_repetitions"]):
        for pop3, _ in pairs:
            run = pop3load.run_pipelined(POP3[pop3], batch=50)
            assert run["messages"] == count, run
            results.setdefault("retr_large", {}).setdefault(pop3, []).append(run)
            say(f"POP3 {pop3:9} RETR {count} x 1 MB pipelined: {run['mb_per_s']:6.0f} MB/s "
                f"(client CPU {run['client_cpu_seconds'] / run['seconds']:.0%} of wall time)")
    out = {}
    for name, by_server in results.items():
        out[name] = {}
        for server, runs in by_server.items():
            if name.startswith("login"):
                out[name][server] = runs
                continue
            key = "mb_per_s" if name == "retr_large" else "msg_per_s"
            out[name][server] = summary([run[key] for run in runs])
            out[name][server]["client_cpu_share"] = max(
                run["client_cpu_seconds"] / run["seconds"] for run in runs)
    for pop3, smtp in pairs:
        empty_maildir(MAILDIR[smtp])
    return out


# -- start-up, memory ----------------------------------------------------------

FLOOR = "import asyncio; from systemd import daemon, journal; import sdnotify"


def measure_start(plan: dict) -> dict:
    def run_python(code: str) -> float:
        started = time.perf_counter()
        subprocess.run(["python3", "-c", code], check=True)
        return time.perf_counter() - started

    n = plan["starts"]
    floor = [run_python(FLOOR) for _ in range(n)]
    bare = [run_python("pass") for _ in range(n)]
    results = {"import_floor": summary(floor), "python_bare": summary(bare)}
    for name, unit, port in (("smtp", UNIT["baremail"], SMTP["baremail"]),
                             ("pop3", UNIT["baremail-pop3"], POP3["baremail"])):
        times = []
        for _ in range(n):
            stop(unit)
            time.sleep(0.2)
            times.append(greet(port))
        results[f"baremail_{name}"] = summary(times)
        say(f"cold start baremail-{name}: connect -> greeting {statistics.median(times) * 1000:.1f} ms "
            f"(import floor {statistics.median(floor) * 1000:.1f} ms)")
    for name, port in FLOOR_UNITS.items():
        times = []
        for _ in range(n):
            stop(f"{name}.service")
            time.sleep(0.2)
            times.append(greet(port))
        results[name.replace("bench-", "").replace("-", "_")] = summary(times)
        say(f"cold start of the floor program, {name.rsplit('-', 1)[1]}: "
            f"{statistics.median(times) * 1000:.1f} ms")
    return results


# What the interpreter and BareMail's dependencies alone occupy: the floor
# under the idle RSS rows. ssl is blocked as baremail's entry point does.
RSS_FLOORS = {
    "python_bare": "pass",
    "python_asyncio": "import sys; sys.modules['ssl'] = None; import asyncio",
    "python_floor": "import sys; sys.modules['ssl'] = None; import asyncio; "
                    "from systemd import daemon, journal; import sdnotify",
}


def import_rss_kb(code: str) -> int:
    report = "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"
    return int(subprocess.run(["python3", "-c", f"{code}\n{report}"], check=True,
                              capture_output=True, text=True).stdout)


def measure_idle_rss(plan: dict) -> dict:
    for server in SMTP:
        empty_maildir(MAILDIR[server])
    runs: dict = {}
    for _ in range(plan["repetitions"]):
        for name, value in idle_rss_once().items():
            runs.setdefault(name, []).append(value)
        for name, code in RSS_FLOORS.items():
            runs.setdefault(name, []).append({"rss_kb": import_rss_kb(code), "processes": 1})
    for name in RSS_FLOORS:
        say(f"RSS of {name}: {statistics.median(v['rss_kb'] for v in runs[name]) / 1024:.1f} MB")
    return {name: {**summary([value["rss_kb"] for value in values]),
                   "processes": [value["processes"] for value in values]}
            for name, values in runs.items()}


def idle_rss_once() -> dict:
    results = {}
    restart_baremail(UNIT["baremail"], SMTP["baremail"])
    restart_baremail(UNIT["baremail-pop3"], POP3["baremail"])
    for name in ("aiosmtpd", "postfix", "dovecot"):
        sh("systemctl", "restart", UNIT[name])
    for port in (SMTP["aiosmtpd"], SMTP["postfix"], POP3["dovecot"]):
        wait_until(lambda: port_open(port), 30, f"port {port}")
    # Freshly started, one session each (and a message for the SMTP servers), then idle.
    for server, port in SMTP.items():
        smtp_source(port, 1, 1, 2048)
        greet(port)
    for server, port in POP3.items():
        pop3load.login_stat(port)
    time.sleep(2)
    for name, unit in (("baremail-smtp", UNIT["baremail"]), ("baremail-pop3", UNIT["baremail-pop3"]),
                       ("aiosmtpd", UNIT["aiosmtpd"]), ("postfix", UNIT["postfix"]),
                       ("dovecot", UNIT["dovecot"])):
        pids = unit_pids(unit, exclude=DOVECOT_IMAP if name == "dovecot" else ())
        results[name] = {"rss_kb": rss_kb(pids), "processes": len(pids)}
        say(f"idle RSS {name}: {results[name]['rss_kb'] / 1024:.1f} MB in {len(pids)} process(es)")
    for server in SMTP:
        settle(server, MAILDIR[server], 1)
        empty_maildir(MAILDIR[server])
    return results


def open_idle(port: int, count: int) -> list:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        data = b""
        while not data.endswith(b"\r\n"):
            data += sock.recv(4096)
        if not data.startswith(b"220 "):
            raise SystemExit(f"port {port}: idle session {len(sockets)} refused: {data!r}")
        sockets.append(sock)
    return sockets


def measure_idle_sessions(plan: dict) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    count = plan["idle_sessions"]
    runs: dict = {}
    for _ in range(plan["repetitions"]):
        for server, result in idle_sessions_once(count, plan).items():
            runs.setdefault(server, []).append(result)
    return {server: {"per_session_kb": summary([run["per_session_kb"] for run in values]),
                     "greeting": summary([run["greeting"]["median"] for run in values]),
                     "runs": values}
            for server, values in runs.items()}


def idle_sessions_once(count: int, plan: dict) -> dict:
    results = {}
    for server in ("baremail", "aiosmtpd"):
        port = SMTP[server]
        if server == "baremail":
            pid = restart_baremail(UNIT["baremail"], port)
        else:
            sh("systemctl", "restart", UNIT[server])
            wait_until(lambda: port_open(port), 30, server)
            pid = main_pid(UNIT[server])
        for _ in range(3):
            greet(port)
        time.sleep(0.5)
        before = status_kb(pid)
        idle = open_idle(port, count)
        try:
            time.sleep(1.0)
            held = status_kb(pid)
            latencies = [greet(port) for _ in range(plan["fresh_clients"])]
        finally:
            for sock in idle:
                sock.close()
        results[server] = {"rss_before_kb": before, "rss_held_kb": held,
                           "per_session_kb": (held - before) / count,
                           "greeting": summary(latencies)}
        say(f"{server}: {count} idle sessions add {(held - before) / count:.2f} KB each; a fresh "
            f"client beside them is greeted in {statistics.median(latencies) * 1000:.2f} ms")
    return results


class Sampler:
    """Peak RSS of a process while something runs, sampled every millisecond,
    plus the kernel's own high-water mark (VmHWM, reset before)."""

    def __init__(self, pid: int):
        self.pid = pid
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM
            self.hwm = True
        except OSError:
            self.hwm = False
        self.before = status_kb(pid)
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            try:
                self.peak = max(self.peak, status_kb(self.pid))
            except OSError:
                return

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        peak = self.peak
        if self.hwm:
            peak = max(peak, status_kb(self.pid, "VmHWM"))
        return {"rss_before_kb": self.before, "rss_peak_kb": peak, "growth_kb": peak - self.before}


BIG_MIME_HEAD = (b"Subject: big\r\nMIME-Version: 1.0\r\n"
                 b"Content-Type: multipart/mixed; boundary=\"bench-boundary\"\r\n\r\n"
                 b"--bench-boundary\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
                 b"A large attachment follows.\r\n"
                 b"--bench-boundary\r\nContent-Type: application/octet-stream; name=\"big.bin\"\r\n"
                 b"Content-Disposition: attachment; filename=\"big.bin\"\r\n"
                 b"Content-Transfer-Encoding: base64\r\n\r\n")
BIG_MIME_TAIL = b"--bench-boundary--\r\n"


def send_big(port: int, size: int, mime: bool = False) -> bytes:
    """One message of about `size` octets over SMTP: "Subject: big" and
    lines of x; with `mime`, a multipart/mixed one, a text part and a
    base64 attachment (76-character lines). The server's last reply."""
    line = (b"QUJD" * 19 + b"\r\n") if mime else (b"x" * 98 + b"\r\n")
    chunk = line * 1000
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    conn = pop3load.Connection.__new__(pop3load.Connection)
    conn.sock, conn.buf = sock, bytearray()

    def reply() -> bytes:
        while True:
            text = conn.line()
            if text[3:4] != b"-":
                return text

    reply()
    for command in (b"EHLO bench", b"MAIL FROM:<bench@localhost>", b"RCPT TO:<bench@localhost>", b"DATA"):
        sock.sendall(command + b"\r\n")
        reply()
    sock.sendall(BIG_MIME_HEAD if mime else b"Subject: big\r\n\r\n")
    sent = 0
    while sent < size:
        sock.sendall(chunk)
        sent += len(chunk)
    sock.sendall((BIG_MIME_TAIL if mime else b"") + b".\r\n")
    answer = reply()
    sock.sendall(b"QUIT\r\n")
    sock.close()
    return answer


def measure_big(plan: dict) -> dict:
    runs: dict = {}
    for _ in range(plan["repetitions"]):
        for name, result in big_once(plan).items():
            runs.setdefault(name, []).append(result)
    return {name: {**summary([run["growth_kb"] for run in values]), "runs": values}
            for name, values in runs.items()}


def big_once(plan: dict) -> dict:
    size = plan["big"]
    results = {}
    for server in ("baremail", "aiosmtpd"):
        port = SMTP[server]
        empty_maildir(MAILDIR[server])
        if server == "baremail":
            pid = restart_baremail(UNIT["baremail"], port)
        else:
            sh("systemctl", "restart", UNIT[server])
            wait_until(lambda: port_open(port), 30, server)
            pid = main_pid(UNIT[server])
        greet(port)
        time.sleep(0.3)
        sampler = Sampler(pid)
        started = time.perf_counter()
        answer = send_big(port, size)
        took = time.perf_counter() - started
        results[f"{server}_smtp"] = sampler.stop()
        results[f"{server}_smtp"]["seconds"] = took
        if not answer.startswith(b"250"):
            raise SystemExit(f"{server}: the {size}-octet message got {answer!r}")
        say(f"{server} SMTP: a {size / 1e6:.0f} MB message grows RSS by "
            f"{results[f'{server}_smtp']['growth_kb'] / 1024:.1f} MB ({took:.1f} s)")
    pid = restart_baremail(UNIT["baremail-pop3"], POP3["baremail"])
    pop3load.login_stat(POP3["baremail"])
    time.sleep(0.3)
    sampler = Sampler(pid)
    run = pop3load.run_pipelined(POP3["baremail"], batch=1)
    results["baremail_pop3"] = sampler.stop()
    results["baremail_pop3"]["seconds"] = run["seconds"]
    say(f"baremail POP3: RETR of the {size / 1e6:.0f} MB message grows RSS by "
        f"{results['baremail_pop3']['growth_kb'] / 1024:.1f} MB ({run['mb_per_s']:.0f} MB/s)")
    for server in ("baremail", "aiosmtpd"):
        empty_maildir(MAILDIR[server])
    return results


# -- IMAP ----------------------------------------------------------------------

IMAP_PAIRS = (("baremail", "baremail"), ("dovecot", "postfix"))   # IMAP server, its SMTP


def imap_session(server: str) -> imapload.Connection:
    conn = imapload.Connection(IMAP[server], timeout=60)
    conn.login()
    return conn


def dovecot_imap_pids() -> list:
    return [pid for pid in unit_pids(UNIT["dovecot"]) if comm(pid) == "imap"]


def forget_imap(server: str) -> None:
    """Before a "first time": BareMail's IMAP service stopped (its socket
    stays: the next connection starts it, its caches empty); Dovecot's
    index files removed (dovecot-uidlist stays, as BareMail's
    baremail-uidlist does: both keep their UIDs)."""
    if server == "baremail":
        stop(UNIT["baremail-imap"])
        return
    wait_until(lambda: not dovecot_imap_pids(), 20, "Dovecot's imap processes to end")
    for entry in os.scandir(MAILDIR["dovecot"]):
        if entry.name.startswith(("dovecot.index", "dovecot.list.index")):
            os.unlink(entry.path)


def imap_fill(count: int, size: int, sessions: int = 10) -> None:
    """Both Maildirs emptied and filled through their own SMTP; BareMail's
    IMAP service stopped first (it must not keep a listing of what went)."""
    stop(UNIT["baremail-imap"])
    wait_until(lambda: not dovecot_imap_pids(), 20, "Dovecot's imap processes to end")
    for _, smtp in IMAP_PAIRS:
        fill(smtp, count, size, sessions)


# Both servers look at a folder's files again while its directory's mtime
# is younger than about 2 s (coarse timestamps can hide a change): timed
# runs start only after that.
SETTLE = 2.5


def first_select(count: int) -> dict:
    """Each server's first SELECT after the delivery (moving the messages
    from new/ to cur/, giving UIDs); seconds. Then SETTLE seconds of rest."""
    out = {}
    for imap, _ in IMAP_PAIRS:
        conn = imap_session(imap)
        run = imapload.timed_select(conn)
        conn.logout()
        if run["exists"] != count:
            raise SystemExit(f"IMAP {imap}: SELECT shows {run['exists']} messages, {count} stored")
        out[imap] = run["seconds"]
    time.sleep(SETTLE)
    return out


def check_fetch(server: str, what: str, run: dict, count: int) -> dict:
    if run["messages"] != count:
        raise SystemExit(f"IMAP {server}: {what} answered {run['messages']} messages of {count}")
    return run


def fetch_summary(runs: list, key: str) -> dict:
    return {**summary([run[key] for run in runs]),
            "client_cpu_share": max(run["client_cpu_seconds"] / run["seconds"] for run in runs),
            "receives": statistics.median(run["receives"] for run in runs)}


def open_files_limit(pid: int) -> str:
    """The process's soft and hard RLIMIT_NOFILE, as /proc/PID/limits shows them."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return " / ".join(line.split()[3:5])
    except OSError:
        pass
    return "?"


def measure_imap(plan: dict) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    results: dict = {}
    count = plan["imap_small"]
    imap_fill(count, 2048)
    say(f"stored {count} x 2 KB in each Maildir through its own SMTP")
    firsts = first_select(count)
    for imap, seconds in firsts.items():
        say(f"IMAP {imap:9} first SELECT after delivery ({count} in new/): {seconds * 1000:.0f} ms")
    results["select_first"] = {imap: summary([seconds]) for imap, seconds in firsts.items()}
    runs: dict = {}

    def keep(name: str, imap: str, value) -> None:
        runs.setdefault(name, {}).setdefault(imap, []).append(value)

    for _ in range(plan["imap_repetitions"]):
        for imap, _ in IMAP_PAIRS:
            forget_imap(imap)
            conn = imap_session(imap)   # BareMail: this connection starts the service
            keep("select_cold", imap, imapload.timed_select(conn)["seconds"])
            first = check_fetch(imap, "the header fetch", imapload.timed_fetch(conn, imapload.HEADERS), count)
            conn.logout()
            conn = imap_session(imap)
            keep("select_warm", imap, imapload.timed_select(conn)["seconds"])
            second = check_fetch(imap, "the header fetch", imapload.timed_fetch(conn, imapload.HEADERS), count)
            flags = check_fetch(imap, "the flag fetch", imapload.timed_fetch(conn, imapload.FLAGS), count)
            for _ in range(2):
                keep("select_again", imap, imapload.timed_select(conn)["seconds"])
            conn.logout()
            for _ in range(2):
                conn = imap_session(imap)
                keep("select_warm", imap, imapload.timed_select(conn)["seconds"])
                conn.logout()
            keep("headers_first", imap, first)
            keep("headers_second", imap, second)
            keep("flags", imap, flags)
            say(f"IMAP {imap:9} {count} x 2 KB: SELECT cold {runs['select_cold'][imap][-1] * 1000:.1f} ms, "
                f"warm {statistics.median(runs['select_warm'][imap][-3:]) * 1000:.2f} ms; header fetch "
                f"{first['msg_per_s']:.0f} msg/s first, {second['msg_per_s']:.0f} second (client CPU "
                f"{second['client_cpu_seconds'] / second['seconds']:.0%}, {second['receives']} receives); "
                f"FLAGS {flags['msg_per_s']:.0f} msg/s (client CPU "
                f"{flags['client_cpu_seconds'] / flags['seconds']:.0%}, {flags['receives']} receives); "
                f"SELECT again in the session {runs['select_again'][imap][-1] * 1000:.2f} ms")
    for name in ("select_cold", "select_warm", "select_again"):
        results[name] = {imap: summary(values) for imap, values in runs[name].items()}
    for name in ("headers_first", "headers_second", "flags"):
        results[name] = {imap: fetch_summary(values, "msg_per_s") for imap, values in runs[name].items()}
    results["wakeup"] = measure_wakeup(plan)
    results["idle_sessions_full"] = measure_imap_idle(plan, plan["imap_idle_full"])
    # The idle sessions proper: a small INBOX, as a client that has read its mail holds one.
    imap_fill(plan["imap_idle_inbox"], 2048, sessions=1)
    results["idle_sessions"] = measure_imap_idle(plan, plan["imap_idle_sessions"])
    count = plan["imap_large"]
    imap_fill(count, 1 << 20, sessions=4)
    say(f"stored {count} x 1 MB in each Maildir through its own SMTP")
    first_select(count)
    bodies: dict = {}
    for _ in range(plan["imap_repetitions"]):
        for imap, _ in IMAP_PAIRS:
            conn = imap_session(imap)
            conn.select()
            run = check_fetch(imap, "BODY[]", imapload.timed_fetch(conn, imapload.BODIES), count)
            conn.logout()
            bodies.setdefault(imap, []).append(run)
            say(f"IMAP {imap:9} BODY[] of {count} x 1 MB: {run['mb_per_s']:.0f} MB/s "
                f"(client CPU {run['client_cpu_seconds'] / run['seconds']:.0%})")
    results["bodies"] = {imap: fetch_summary(values, "mb_per_s") for imap, values in bodies.items()}
    results["big"] = measure_imap_big(plan)
    stop(UNIT["baremail-imap"])
    for _, smtp in IMAP_PAIRS:
        empty_maildir(MAILDIR[smtp])
    return results


# -- IMAP: IDLE wake-up ---------------------------------------------------------

WAKE_MESSAGE = (b"From: <bench@localhost>\r\nTo: <bench@localhost>\r\nSubject: wake up\r\n"
                b"Message-ID: <%d.wake@bench>\r\nDate: Thu, 01 Jan 2026 00:00:00 +0000\r\n\r\n"
                + (b"y" * 78 + b"\r\n") * 24)


class SMTPClient:
    """One SMTP session kept open; send() returns when the 250 after the
    message's end is read, and the time it was read."""

    def __init__(self, port: int):
        self.conn = pop3load.Connection.__new__(pop3load.Connection)
        self.conn.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn.buf = bytearray()
        self.reply(b"220")
        self.command(b"EHLO bench", b"250")

    def reply(self, code: bytes) -> bytes:
        while True:
            line = self.conn.line()
            if line[3:4] != b"-":
                if not line.startswith(code):
                    raise SystemExit(f"SMTP: expected {code!r}, got {line!r}")
                return line

    def command(self, text: bytes, code: bytes) -> bytes:
        self.conn.sock.sendall(text + b"\r\n")
        return self.reply(code)

    def send_parts(self, data: bytes) -> None:
        self.command(b"MAIL FROM:<bench@localhost>", b"250")
        self.command(b"RCPT TO:<bench@localhost>", b"250")
        self.command(b"DATA", b"354")
        self.conn.sock.sendall(data + b".\r\n")

    def close(self) -> None:
        try:
            self.command(b"QUIT", b"221")
        except (OSError, SystemExit, pop3load.ProtocolError):
            pass
        self.conn.sock.close()


def wait_exists(imap: imapload.Connection, smtp: SMTPClient | None, timeout: float = 15) -> tuple:
    """Until `* n EXISTS` arrives on the idling session (and, with `smtp`,
    the 250 on the SMTP session): the times each was received."""
    selector = selectors.DefaultSelector()
    selector.register(imap.sock, selectors.EVENT_READ, "imap")
    if smtp is not None:
        selector.register(smtp.conn.sock, selectors.EVENT_READ, "smtp")
    exists_at = accepted_at = None
    deadline = time.monotonic() + timeout
    try:
        while exists_at is None or (smtp is not None and accepted_at is None):
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit(f"no EXISTS within {timeout} s (received {bytes(imap.buf[-200:])!r})")
            for key, _ in selector.select(left):
                sock = key.fileobj
                chunk = sock.recv(65536)
                now = time.perf_counter()
                if not chunk:
                    raise SystemExit(f"the {key.data} session closed while waiting for EXISTS")
                if key.data == "imap":
                    imap.buf += chunk
                    if exists_at is None and b" EXISTS\r\n" in imap.buf:
                        exists_at = now
                else:
                    smtp.conn.buf += chunk
                    end = smtp.conn.buf.find(b"\r\n")
                    if accepted_at is None and end >= 0:
                        line = bytes(smtp.conn.buf[:end])
                        del smtp.conn.buf[:end + 2]
                        if not line.startswith(b"250"):
                            raise SystemExit(f"SMTP: the message got {line!r}")
                        accepted_at = now
    finally:
        selector.close()
    del imap.buf[:]
    return exists_at, accepted_at


def drop_into_new(maildir: Path, number: int) -> float:
    """A message written into tmp/ and renamed into new/, as an MDA does
    (owner and mode those of the Maildir's own files); the time of the rename."""
    info = os.stat(maildir)
    name = f"{int(time.time())}.M{number}P{os.getpid()}Q{number}.benchwake"
    temp = maildir / "tmp" / name
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, WAKE_MESSAGE % number)
    os.fchown(fd, info.st_uid, info.st_gid)
    os.fsync(fd)
    os.close(fd)
    os.rename(temp, maildir / "new" / name)
    return time.perf_counter()


def measure_wakeup(plan: dict) -> dict:
    """IDLE wake-up on the 10,000-message INBOX: one session in IDLE, a
    message arrives; from its arrival to `* n EXISTS` on the session.
    Arrival: BareMail's SMTP 250 (its 250 follows the message's fsync and
    rename); for both servers, the rename of a file into new/; and, for
    comparison, Postfix's 250 (its local delivery comes after it)."""
    methods = (("baremail", "smtp"), ("baremail", "rename"), ("dovecot", "rename"), ("dovecot", "postfix"))
    times: dict = {}
    number = 0
    for imap, method in methods:
        conn = imap_session(imap)
        conn.select()
        tag = conn.idle()
        smtp = SMTPClient(SMTP["baremail" if method == "smtp" else "postfix"]) if method != "rename" else None
        try:
            for _ in range(plan["wakeups"]):
                time.sleep(random.uniform(0.3, 0.6))   # not in step with a poll
                number += 1
                if smtp is None:
                    since = drop_into_new(MAILDIR[imap], number)
                    exists_at, _ = wait_exists(conn, None)
                else:
                    smtp.send_parts(WAKE_MESSAGE % number)
                    exists_at, since = wait_exists(conn, smtp)
                times.setdefault(f"{imap}_{method}", []).append(exists_at - since)
        finally:
            if smtp is not None:
                smtp.close()
        conn.done(tag)
        conn.logout()
        say(f"IMAP {imap:9} IDLE wake-up after {method}: "
            f"{statistics.median(times[f'{imap}_{method}']) * 1000:.1f} ms (median of {plan['wakeups']})")
    settle("postfix", MAILDIR["postfix"], 1)
    return {name: summary(values) for name, values in times.items()}


# -- IMAP: idle sessions, a large message ----------------------------------------

def imap_memory(server: str) -> dict:
    pids = unit_pids(UNIT["baremail-imap" if server == "baremail" else "dovecot"])
    return {"rss_kb": rss_kb(pids), "pss_kb": pss_kb(pids), "processes": len(pids)}


def measure_imap_idle(plan: dict, count: int) -> dict:
    """RSS per idle IMAP session: `count` sessions logged in, INBOX
    selected, in IDLE; for Dovecot all its processes summed (one imap
    process per session), in RSS and in PSS."""
    runs: dict = {}
    for _ in range(plan["repetitions"]):
        for imap, _ in IMAP_PAIRS:
            runs.setdefault(imap, []).append(imap_idle_once(imap, count))
    out = {}
    for imap, values in runs.items():
        out[imap] = {"per_session_kb": summary([run["per_session_kb"] for run in values]),
                     "per_session_pss_kb": summary([run["per_session_pss_kb"] for run in values]),
                     "processes_per_session": values[0]["processes_per_session"],
                     "open_files_limit": values[0]["open_files_limit"],
                     "exists": values[0]["exists"], "runs": values}
    return out


def imap_idle_once(imap: str, count: int) -> dict:
    if imap == "baremail":
        stop(UNIT["baremail-imap"])
    else:
        wait_until(lambda: not dovecot_imap_pids(), 30, "Dovecot's imap processes to end")
        sh("systemctl", "restart", UNIT["dovecot"])
        wait_until(lambda: port_open(IMAP["dovecot"]), 30, "Dovecot's IMAP port")
    warm = imap_session(imap)
    exists = warm.select()
    time.sleep(0.5)
    before = imap_memory(imap)
    sessions = []
    try:
        for _ in range(count):
            conn = imap_session(imap)
            conn.select()
            conn.idle()
            sessions.append(conn)
        time.sleep(1.0)
        held = imap_memory(imap)
    finally:
        for conn in sessions:
            conn.sock.close()
        warm.logout()
    limit = open_files_limit(main_pid(UNIT["baremail-imap" if imap == "baremail" else "dovecot"]))
    result = {"exists": exists, "before": before, "held": held, "open_files_limit": limit,
              "per_session_kb": (held["rss_kb"] - before["rss_kb"]) / count,
              "per_session_pss_kb": (held["pss_kb"] - before["pss_kb"]) / count,
              "processes_per_session": (held["processes"] - before["processes"]) / count}
    say(f"IMAP {imap:9} {count} sessions in IDLE on a {exists}-message INBOX add "
        f"{result['per_session_kb']:.1f} KB of RSS each ({result['per_session_pss_kb']:.1f} KB PSS, "
        f"{result['processes_per_session']:.1f} processes; open-files limit of the main process {limit})")
    if imap == "dovecot":
        wait_until(lambda: not dovecot_imap_pids(), 60, "Dovecot's imap processes to end", interval=0.5)
    return result


def measure_imap_big(plan: dict) -> dict:
    """BareMail's RSS growth for BODYSTRUCTURE, then BODY[], of one large
    multipart message (a text part and a base64 attachment), on a freshly
    started service; both against the RSS before the first."""
    size = plan["imap_big"]
    stop(UNIT["baremail-imap"])
    empty_maildir(MAILDIR["baremail"])
    answer = send_big(SMTP["baremail"], size, mime=True)
    if not answer.startswith(b"250"):
        raise SystemExit(f"baremail: the {size}-octet message got {answer!r}")
    runs: dict = {}
    for _ in range(plan["repetitions"]):
        stop(UNIT["baremail-imap"])
        conn = imap_session("baremail")
        pid = wait_until(lambda: main_pid(UNIT["baremail-imap"]), 10, "baremail-imap to run")
        conn.select()
        time.sleep(0.3)
        sampler = Sampler(pid)
        structure = check_fetch("baremail", "BODYSTRUCTURE", imapload.timed_fetch(conn, b"FETCH 1 (BODYSTRUCTURE)"), 1)
        first = sampler.stop()
        sampler = Sampler(pid)
        body = check_fetch("baremail", "BODY[]", imapload.timed_fetch(conn, b"FETCH 1 (BODY.PEEK[])"), 1)
        second = sampler.stop()
        conn.logout()
        second["growth_kb"] = second["rss_peak_kb"] - first["rss_before_kb"]
        first.update(seconds=structure["seconds"])
        second.update(seconds=body["seconds"], octets=body["literal_octets"])
        runs.setdefault("bodystructure", []).append(first)
        runs.setdefault("body", []).append(second)
        say(f"baremail IMAP: a {size / 1e6:.0f} MB message grows RSS by {first['growth_kb'] / 1024:.1f} MB "
            f"for BODYSTRUCTURE ({structure['seconds']:.2f} s), {second['growth_kb'] / 1024:.1f} MB with "
            f"BODY[] too ({body['mb_per_s']:.0f} MB/s)")
    stop(UNIT["baremail-imap"])
    empty_maildir(MAILDIR["baremail"])
    return {name: {**summary([run["growth_kb"] for run in values]), "runs": values}
            for name, values in runs.items()}


PLANS = {
    "full": {"repetitions": 3, "smtp_repetitions": 5, "pop3_repetitions": 5, "warmup": 300,
             "smtp": ((1, 2000), (10, 6000), (50, 8000)),
             "pop3_small": 5000, "pop3_large": 100, "starts": 10, "idle_sessions": 1000,
             "fresh_clients": 20, "big": 100_000_000,
             "imap_small": 10000, "imap_large": 100, "imap_repetitions": 5, "wakeups": 20,
             "imap_idle_sessions": 1000, "imap_idle_inbox": 10, "imap_idle_full": 100,
             "imap_big": 100_000_000},
    "quick": {"repetitions": 1, "smtp_repetitions": 1, "pop3_repetitions": 1, "warmup": 50, "smtp": ((1, 100), (10, 300), (50, 300)),
              "pop3_small": 300, "pop3_large": 5, "starts": 3, "idle_sessions": 100,
              "fresh_clients": 5, "big": 5_000_000,
              "imap_small": 300, "imap_large": 5, "imap_repetitions": 1, "wakeups": 3,
              "imap_idle_sessions": 100, "imap_idle_inbox": 10, "imap_idle_full": 10,
              "imap_big": 5_000_000},
}
PHASES = {"start": measure_start, "idle_rss": measure_idle_rss, "smtp": measure_smtp,
          "pop3": measure_pop3, "idle_sessions": measure_idle_sessions, "big": measure_big,
          "imap": measure_imap}


def measure(out: str, quick: bool, only: list[str], overrides: dict | None = None) -> None:
    plan = dict(PLANS["quick" if quick else "full"])
    for key, value in (overrides or {}).items():
        if key not in plan or not isinstance(plan[key], int):
            raise SystemExit(f"--set {key}: not a count of the plan ({', '.join(sorted(plan))})")
        plan[key] = int(value)
    results = {"plan": plan, "versions": versions(), "quick": quick, "overrides": overrides or {}}
    for name, phase in PHASES.items():
        if only and name not in only:
            continue
        started = time.monotonic()
        results[name] = phase(plan)
        results[name + "_seconds"] = time.monotonic() - started
        Path(out).write_text(json.dumps(results, indent=1))


def main() -> None:
    if sys.argv[1:2] == ["setup"]:
        setup(sys.argv[2:])
    elif sys.argv[1:2] == ["measure"]:
        args = sys.argv[2:]
        quick = "--quick" in args
        only = []
        if "--only" in args:
            only = args[args.index("--only") + 1].split(",")
        unknown = [name for name in only if name not in PHASES]
        if unknown:
            raise SystemExit(f"--only: no phase {', '.join(unknown)} (phases: {', '.join(PHASES)})")
        overrides = dict(args[i + 1].split("=", 1) for i, arg in enumerate(args) if arg == "--set")
        measure(args[0], quick, only, overrides)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
