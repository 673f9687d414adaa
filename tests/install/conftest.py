"""Fixtures for the container tests: `box` is a booted Debian 12 with the
.debs in /root/debs, one per test module, always stopped and removed."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from container import (CONTAINER_PATH, DEBS_IN_CONTAINER, UPGRADE_VERSION, WORK_PARENT, WORK_PREFIX,
                       Container, Reporter, _remove_stale_work_dirs, _started, build_deb,
                       cached_rootfs, remove_tree)


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


