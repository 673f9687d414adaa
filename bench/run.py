"""make bench: BareMail beside Postfix, Dovecot and aiosmtpd, in one container.

Builds BareMail's .deb from the working tree, boots the cached image of
the install test for the release asked (Debian 12 "bookworm" by default,
or 13 "trixie"; with postfix, dovecot-pop3d, dovecot-imapd and
python3-aiosmtpd added: a cache of its own), installs and configures
everything (bench/inside.py setup), runs every measurement inside the
container (bench/inside.py measure), and writes the results into
bench/README.md (between that release's "results" markers) and
bench/results.json (bookworm) or bench/results-trixie.json (full runs only).

    /usr/bin/python3 bench/run.py [--release trixie] [--quick] [--only smtp,pop3,imap,...]
                                  [--set KEY=VALUE ...] [--no-readme]

--quick runs every measurement once with small counts (a smoke run, a
few minutes); its figures mean nothing. --set changes one count of the
plan (inside.py's PLANS), to try one load at another size; such a run is
not kept either. Needs root, mmdebstrap, systemd-nspawn and
dpkg-buildpackage (make deps installs them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests" / "install"))

import container  # noqa: E402  (the install test's harness)
import report  # noqa: E402

# The same names in Debian 12 and 13.
EXTRA_PACKAGES = ("postfix", "dovecot-pop3d", "dovecot-imapd", "python3-aiosmtpd")
RELEASES = {"bookworm": "Debian 12 (bookworm)", "trixie": "Debian 13 (trixie)"}
DEFAULT_RELEASE = "bookworm"   # the release of the runs so far
WORK_PREFIX = "baremail-bench-"
IN_CONTAINER = "/root/bench"
SCRIPTS = ("inside.py", "pop3load.py", "imapload.py")
TIME_LIMIT = 45 * 60   # the whole measurement, inside the container
LAST_RUN = container.WORK_PARENT / "baremail-bench.last.json"   # not matched by WORK_PREFIX + "*"


def say(message: str) -> None:
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


def remove_stale_work_dirs() -> None:
    """Work directories of runs that died before cleaning up (and their
    containers, if those still run)."""
    for directory in container.WORK_PARENT.glob(WORK_PREFIX + "*"):
        try:
            pid, started = (directory / "owner.pid").read_text().split()
        except (OSError, ValueError):
            continue  # not made by this script: not ours to remove
        if container._started(int(pid)) == started:
            continue  # that run is still going
        say(f"removing the leftover {directory}")
        for name, first in (("nspawn.pid", 15), ("init.pid", 9)):
            try:
                pid, started = (directory / name).read_text().split()
                container._end_process(int(pid), started, first=first)
            except (OSError, ValueError):
                pass
        container.remove_tree(directory)


def machine() -> dict:
    """What the figures were measured on (host side)."""
    def out(*command: str) -> str:
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    source, fstype, options = (out("findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "-T",
                                   str(container.WORK_PARENT)).split() + ["", "", ""])[:3]
    device = re.sub(r"\[.*\]$", "", source)
    disk = ""
    if device.startswith("/dev/"):
        size = out("lsblk", "-ndo", "SIZE", device)
        disk_model = out("lsblk", "-ndo", "MODEL", device)
        name = Path(device).name
        kind = "virtio" if name.startswith("vd") else "block"
        disk = f"{device}, {size} {kind} disk{' ' + disk_model if disk_model else ''}"
    hypervisor = ""
    for line in out("lscpu").splitlines():
        if line.startswith("Hypervisor vendor:"):
            hypervisor = line.split(":", 1)[1].strip()
    memory = ""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": out("uname", "-r"), "memory": memory,
            "virtualization": hypervisor or out("systemd-detect-virt") or "none",
            "filesystem": f"{fstype} on {device} ({options})", "disk": disk,
            "os": out("sh", "-c", ". /etc/os-release && echo $PRETTY_NAME")}


def run(args) -> dict:
    remove_stale_work_dirs()
    work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=container.WORK_PARENT))
    (work / "owner.pid").write_text(f"{os.getpid()} {container._started(os.getpid())}")
    box = None
    try:
        started = time.monotonic()
        say("building the .deb from the working tree")
        deb = container.build_deb(work, "deb")
        image = container.cached_rootfs(say, args.release, extra_packages=EXTRA_PACKAGES)
        root = work / "root"
        subprocess.run(["cp", "-a", "--reflink=auto", str(image), str(root)], check=True)
        box = container.Container(root, work / "container.log")
        box.boot()
        say(f"container booted ({time.monotonic() - started:.0f} s so far)")
        deb_inside = box.put(deb, container.DEBS_IN_CONTAINER)
        for script in SCRIPTS:
            box.put(HERE / script, IN_CONTAINER)
        box.run("python3", f"{IN_CONTAINER}/inside.py", "setup", deb_inside, timeout=600)
        # The copy of the image and the installs left hundreds of megabytes
        # to write back: not during the timed runs, where every fsync would
        # wait behind them.
        synced = time.monotonic()
        os.sync()
        time.sleep(2)
        say(f"synced the disk ({time.monotonic() - synced:.0f} s); measuring")
        command = ["nsenter", "-t", str(box.init_pid), "-a",
                   "python3", f"{IN_CONTAINER}/inside.py", "measure", "/root/results.json"]
        if args.quick:
            command.append("--quick")
        if args.only:
            command += ["--only", args.only]
        for setting in args.set:
            command += ["--set", setting]
        load_before = os.getloadavg()
        measured = time.monotonic()
        result = subprocess.run(command, env=container._clean_env(), stdin=subprocess.DEVNULL,
                                timeout=TIME_LIMIT)
        if result.returncode != 0:
            raise SystemExit(f"the measurement failed (exit {result.returncode}); "
                             f"the container's log: {work / 'container.log'}")
        results = json.loads((root / "root" / "results.json").read_text())
        results["machine"] = machine()
        results["load_average"] = {"before": load_before, "after": os.getloadavg()}
        results["seconds"] = {"measuring": time.monotonic() - measured,
                              "total": time.monotonic() - started}
        results["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        results["release"] = args.release
        bench_args = ([f"--release {args.release}"] if args.release != DEFAULT_RELEASE else []) \
            + (["--quick"] if args.quick else [])
        results["command"] = "make bench" + (f" BENCH_ARGS='{' '.join(bench_args)}'" if bench_args else "")
        return results
    finally:
        if box is not None:
            box.stop()
        container.remove_tree(work)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", choices=sorted(RELEASES), default=DEFAULT_RELEASE,
                        help=f"the Debian release of the container (default: {DEFAULT_RELEASE})")
    parser.add_argument("--quick", action="store_true", help="small counts, once each: a smoke run")
    parser.add_argument("--only", help="comma-separated phases: start,idle_rss,smtp,pop3,idle_sessions,big,imap")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change one count of the plan (e.g. imap_idle_sessions=1000); not kept")
    parser.add_argument("--no-readme", action="store_true", help="leave bench/README.md alone")
    args = parser.parse_args()
    for setting in args.set:
        if "=" not in setting or not setting.split("=", 1)[1].isdigit():
            parser.error(f"--set {setting}: expected KEY=NUMBER")
    if os.geteuid() != 0:
        print("bench: needs root (mmdebstrap, systemd-nspawn)", file=sys.stderr)
        return 77
    missing = [tool for tool in ("mmdebstrap", "systemd-nspawn", "nsenter", "dpkg-buildpackage")
               if shutil.which(tool, path=container.CONTAINER_PATH) is None]
    if missing:
        print(f"bench: missing host tools: {', '.join(missing)} (make deps installs them)", file=sys.stderr)
        return 69
    results = run(args)
    # Every run's raw figures, smoke runs' too (python3 bench/report.py LAST_RUN renders them).
    LAST_RUN.write_text(json.dumps(results, indent=1) + "\n")
    say(f"raw figures of this run: {LAST_RUN}")
    table = report.render(results)
    print(report.release_line(results))
    print(table)
    if not args.quick and not args.only and not args.set:
        # Only a full run's figures are kept (a smoke run's mean nothing).
        report.results_path(args.release).write_text(json.dumps(results, indent=1) + "\n")
        if not args.no_readme:
            report.update_readme(HERE / "README.md", table, results)
            say("bench/README.md updated")
    say(f"done in {results['seconds']['total'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
