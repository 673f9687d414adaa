"""Faults from outside the product: strace kills at a chosen syscall, small or read-only disks.

Nothing here needs a hook in BareMail: strace attaches to the running
program and delivers SIGKILL on entry to the N-th call of one syscall
(counted per thread, as strace does), and the Maildir is put on a tmpfs
that the test fills up or remounts read-only.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

STRACE = shutil.which("strace")


def _traced(pid: int, threads: bool) -> bool:
    tasks = os.listdir(f"/proc/{pid}/task") if threads else [str(pid)]
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/status") as status:
                for line in status:
                    if line.startswith("TracerPid:") and line.split()[1] == "0":
                        return False
        except FileNotFoundError:
            continue
    return True


@contextmanager
def kill_at_syscall(pid: int, syscall: str, when: int, threads: bool):
    """SIGKILL `pid` on entering its `when`-th `syscall`.

    threads=True follows every thread (present and future, strace -f), each
    counting its own calls; threads=False traces the main thread only, so
    calls made by worker threads do not count. Returns once strace is
    attached; on exit, strace is stopped if the kill never happened."""
    if STRACE is None:
        pytest.skip("strace is not installed (make deps installs it)")
    command = [STRACE, "-o", "/dev/null", "-qq", "-e", f"trace={syscall}",
               "-e", f"inject={syscall}:signal=SIGKILL:when={when}", "-p", str(pid)]
    if threads:
        command.insert(1, "-f")
    tracer = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not _traced(pid, threads):
            if tracer.poll() is not None:
                raise AssertionError(f"strace exited: {tracer.stderr.read().decode(errors='replace')}")
            if time.monotonic() > deadline:
                raise AssertionError("strace did not attach within 10 s")
            time.sleep(0.005)
        yield tracer
    finally:
        if tracer.poll() is None:
            tracer.send_signal(signal.SIGINT)   # detaches, leaving the tracee running
            try:
                tracer.wait(10)
            except subprocess.TimeoutExpired:
                tracer.kill()
                tracer.wait(5)
        tracer.stderr.close()


def wait_killed(service, timeout: float = 10.0) -> int:
    """The service's exit status; -9 means the SIGKILL landed."""
    return service.process.wait(timeout)


@contextmanager
def tmpfs(path: Path, size: str = "2m"):
    """A fresh tmpfs of `size` at `path`, unmounted on exit."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True, capture_output=True)


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize
