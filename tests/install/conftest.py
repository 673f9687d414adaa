"""Fixtures for the container tests: `box` is a booted Debian 13 or 12 with
the .debs in /root/debs, one per test module and release (every container
test runs on both), always stopped and removed."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from container import (CONTAINER_PATH, DEBS_IN_CONTAINER, NUMBERS, RELEASES, UPGRADE_VERSION,
                       WORK_PARENT, WORK_PREFIX, Container, Reporter, _remove_stale_work_dirs, _started,
                       build_deb, cached_rootfs, remove_tree, sibling_deb)


# -- fixtures ---------------------------------------------------------------

@pytest.fixture(scope="module")
def say(pytestconfig) -> Reporter:
    return Reporter(pytestconfig)


@contextlib.contextmanager
def _work_dir(say: Reporter):
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
def work(say):
    """A directory of this test module's own (its container's copy lives there)."""
    with _work_dir(say) as directory:
        yield directory


@pytest.fixture(scope="session")
def _built(pytestconfig) -> dict:
    """The packages, built once for all test modules: baremail and
    baremail-mta as in debian/changelog (with the source package, for
    lintian), and again with an added 0.1.1 entry (the upgrade)."""
    say = Reporter(pytestconfig)
    with _work_dir(say) as directory:
        started = time.monotonic()
        built = {"current": build_deb(directory, "deb-current", source=True),
                 "upgrade": build_deb(directory, "deb-upgrade", UPGRADE_VERSION)}
        built["mta-current"] = sibling_deb(built["current"], "baremail-mta")
        built["mta-upgrade"] = sibling_deb(built["upgrade"], "baremail-mta")
        say(f"built {', '.join(path.name for path in built.values())} "
            f"in {time.monotonic() - started:.0f} s")
        yield built


@pytest.fixture(scope="module")
def debs(work, _built) -> dict:
    """kind -> .deb on the host: current, upgrade (baremail), mta-current,
    mta-upgrade (baremail-mta). The .changes of the current build lies
    beside debs["current"]."""
    return dict(_built)


@pytest.fixture(scope="module", params=RELEASES, ids=[f"debian{NUMBERS[r]}" for r in RELEASES])
def release(request) -> str:
    """The Debian release the module's container runs (its codename)."""
    return request.param


@pytest.fixture(scope="module")
def box(release, work, debs, say):
    """The booted container of `release`, with all the .debs in /root/debs
    (box.debs: kind -> path in the container, as in `debs`)."""
    image = cached_rootfs(say, release)
    started = time.monotonic()
    root = work / f"root-{release}"
    subprocess.run(["cp", "-a", "--reflink=auto", str(image), str(root)], check=True)
    container = Container(root, work / f"container-{release}.log")
    container.release = release
    try:
        container.boot()
        say(f"Debian {NUMBERS[release]} ({release}) container copied and booted in "
            f"{time.monotonic() - started:.1f} s")
        container.debs.update({kind: container.put(path, DEBS_IN_CONTAINER)
                               for kind, path in debs.items()})
        yield container
    finally:
        container.stop()
        remove_tree(root)
