"""The benchmark proper, run inside the booted container by bench/run.py.

    python3 inside.py setup                # configure the peers, install BareMail
    python3 inside.py measure OUT.json [--quick] [--only smtp,pop3,...]

Every server gets ports of its own on 127.0.0.1:
    BareMail  SMTP 25, POP3 110 (as installed: socket-activated, sandboxed)
    Postfix   SMTP 10025, delivering to /home/bench/Maildir (local(8), Maildir/)
    Dovecot   POP3 10110, serving /home/bench/Maildir (what Postfix delivered)
    aiosmtpd  SMTP 8025, its Mailbox handler into /var/lib/bench-aiosmtpd/Maildir

Progress goes to stderr; the results to OUT.json. Every load is bounded in
message count, and every wait in time.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pop3load  # noqa: E402

SMTP = {"baremail": 25, "postfix": 10025, "aiosmtpd": 8025}
POP3 = {"baremail": 110, "dovecot": 10110}
MAILDIR = {"baremail": Path("/var/lib/baremail/Maildir"),
           "postfix": Path("/home/bench/Maildir"),
           "aiosmtpd": Path("/var/lib/bench-aiosmtpd/Maildir")}
MAILDIR["dovecot"] = MAILDIR["postfix"]
UNIT = {"baremail": "baremail-smtp.service", "baremail-pop3": "baremail-pop3.service",
        "postfix": "postfix@-.service", "dovecot": "dovecot.service",
        "aiosmtpd": "bench-aiosmtpd.service"}
SENDER = RECIPIENT = "bench@localhost"

DOVECOT_CONF = """\
# The benchmark's Dovecot: POP3 only, any password (a static passdb, so no
# PAM round trip delays a login), the Maildir Postfix delivers to.
protocols = pop3
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
service pop3-login {
  inet_listener pop3 {
    port = 10110
  }
  inet_listener pop3s {
    port = 0
  }
}
"""

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
    # Dovecot: POP3 on 10110, any password.
    Path("/etc/dovecot/dovecot.conf").write_text(DOVECOT_CONF)
    sh("systemctl", "restart", "dovecot.service")
    # aiosmtpd as a service of its own.
    Path("/var/lib/bench-aiosmtpd").mkdir(exist_ok=True)
    Path("/etc/systemd/system/bench-aiosmtpd.service").write_text(AIOSMTPD_UNIT)
    sh("systemctl", "daemon-reload")
    sh("systemctl", "restart", "bench-aiosmtpd.service")
    # BareMail, as the package installs it (ports 25 and 110 are free now).
    sh("dpkg", "-i", *debs, timeout=300)
    missing = [name for name in ("smtp", "smtpd", "pop3", "pop3d", "service", "maildir")
               if not list(Path("/usr/lib/python3/dist-packages/baremail/__pycache__").glob(f"{name}.*.pyc"))]
    if missing:
        say(f"warning: no byte-code for {missing} after installing: every start would compile them")
    setup_floor()
    # 1,000 idle sessions plus fresh clients beside them: above the default cap.
    conf = Path("/etc/baremail/baremail.conf")
    conf.write_text(conf.read_text().replace("\nmax_sessions = 1000\n", "\nmax_sessions = 1100\n"))
    for port in (*SMTP.values(), *POP3.values()):
        wait_until(lambda: port_open(port), 30, f"port {port}")
    say("set up: " + ", ".join(f"{name} SMTP {port}" for name, port in SMTP.items()) + "; "
        + ", ".join(f"{name} POP3 {port}" for name, port in POP3.items()))


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
    return {"baremail": package("baremail"), "postfix": package("postfix"),
            "dovecot": package("dovecot-core"), "aiosmtpd": package("python3-aiosmtpd"),
            "python3": sys.version.split()[0]}


# -- helpers: mailboxes, queues, processes ------------------------------------

def empty_maildir(path: Path) -> None:
    for sub in ("new", "cur", "tmp"):
        directory = path / sub
        if directory.is_dir():
            for entry in os.scandir(directory):
                os.unlink(entry.path)
    for entry in os.scandir(path) if path.is_dir() else ():
        if entry.name.startswith("dovecot"):
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


def unit_pids(unit: str) -> list[int]:
    """Every process of a unit (Postfix's sits in a slice of its own)."""
    pids = []
    for path in Path("/sys/fs/cgroup/system.slice").rglob(unit):
        for procs in path.rglob("cgroup.procs"):
            pids += [int(pid) for pid in procs.read_text().split()]
    return pids


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


def restart_baremail(unit: str, port: int) -> int:
    """Stop the service (its socket stays), start it with one session; its PID."""
    stop(unit)
    greet(port)
    return wait_until(lambda: main_pid(unit), 10, f"{unit} to run")


def stop(unit: str) -> None:
    """Stop a socket-activated service; its socket stays. The start rate
    limit (5 starts in 10 s) is reset: the benchmark starts it often."""
    sh("systemctl", "stop", unit)
    sh("systemctl", "reset-failed", unit, check=False)


def greet(port: int) -> float:
    """Connect, read the greeting, QUIT; seconds until the greeting's line end."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                raise SystemExit(f"port {port} closed before its greeting")
            data += chunk
        took = time.perf_counter() - started
        sock.sendall(b"QUIT\r\n")
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
    for server in SMTP:  # warm up: processes started, caches filled
        smtp_run(server, 10, plan["warmup"])
    for repetition in range(plan["smtp_repetitions"]):
        for sessions, count in plan["smtp"]:
            for server in SMTP:
                rate = smtp_run(server, sessions, count)
                results.setdefault(f"{sessions}", {}).setdefault(server, []).append(rate)
                say(f"SMTP {server:9} {sessions:3} sessions, {count} x 2 KB: {rate:7.0f} msg/s")
    return {sessions: {server: summary(rates) for server, rates in by_server.items()}
            for sessions, by_server in results.items()}


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


def measure_idle_rss(plan: dict) -> dict:
    for server in SMTP:
        empty_maildir(MAILDIR[server])
    runs: dict = {}
    for _ in range(plan["repetitions"]):
        for name, value in idle_rss_once().items():
            runs.setdefault(name, []).append(value)
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
        pids = unit_pids(unit)
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


def send_big(port: int, size: int) -> bytes:
    line = b"x" * 98 + b"\r\n"
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
    sock.sendall(b"Subject: big\r\n\r\n")
    sent = 0
    while sent < size:
        sock.sendall(chunk)
        sent += len(chunk)
    sock.sendall(b".\r\n")
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


PLANS = {
    "full": {"repetitions": 3, "smtp_repetitions": 5, "pop3_repetitions": 5, "warmup": 300,
             "smtp": ((1, 2000), (10, 6000), (50, 8000)),
             "pop3_small": 5000, "pop3_large": 100, "starts": 10, "idle_sessions": 1000,
             "fresh_clients": 20, "big": 100_000_000},
    "quick": {"repetitions": 1, "smtp_repetitions": 1, "pop3_repetitions": 1, "warmup": 50, "smtp": ((1, 100), (10, 300), (50, 300)),
              "pop3_small": 300, "pop3_large": 5, "starts": 3, "idle_sessions": 100,
              "fresh_clients": 5, "big": 5_000_000},
}
PHASES = {"start": measure_start, "idle_rss": measure_idle_rss, "smtp": measure_smtp,
          "pop3": measure_pop3, "idle_sessions": measure_idle_sessions, "big": measure_big}


def measure(out: str, quick: bool, only: list[str]) -> None:
    plan = PLANS["quick" if quick else "full"]
    results = {"plan": plan, "versions": versions(), "quick": quick}
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
        measure(args[0], quick, only)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
