"""The packages build on Debian 13 (trixie) itself, not only on this Debian
12 build host: dpkg-buildpackage from the source tree inside a booted
trixie container that has the Build-Depends (debian/control) installed,
unit tests included (they then run on trixie's Python), and the .deb it
makes installs there and serves.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from container import Container, cached_rootfs, copy_tree, remove_tree
from mailtools import apt, probe

# debian/control's Build-Depends (the <!nocheck> ones too: the unit tests
# run during the build), and build-essential, which dpkg-buildpackage
# requires of every build.
BUILD_DEPENDS = ("build-essential", "debhelper", "dh-python", "man-db", "pybuild-plugin-pyproject",
                 "python3-all", "python3-hypothesis", "python3-pytest", "python3-sdnotify",
                 "python3-setuptools", "python3-systemd", "dpkg-dev")
SOURCE = "/root/src/baremail"


@pytest.fixture(scope="module")
def builder(work, say):
    image = cached_rootfs(say, "trixie", BUILD_DEPENDS)
    root = work / "root-builder"
    subprocess.run(["cp", "-a", "--reflink=auto", str(image), str(root)], check=True)
    container = Container(root, work / "container-builder.log")
    container.release = "trixie"
    try:
        container.boot()
        yield container
    finally:
        container.stop()
        remove_tree(root)


def test_packages_build_on_debian13_and_the_result_serves(builder, say):
    copy_tree(builder.root / SOURCE.lstrip("/"))
    python = builder.run("python3", "--version").stdout.strip()
    started = time.monotonic()
    result = builder.run("sh", "-c", f"cd {SOURCE} && dpkg-buildpackage -us -uc -b", check=False,
                         timeout=900)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    tests = [line for line in log.splitlines() if " passed" in line]
    say(f"dpkg-buildpackage on Debian 13 ({python}) in {time.monotonic() - started:.0f} s; "
        f"unit tests during the build: {tests[-1].strip() if tests else 'none reported'}")
    assert tests, "the unit tests did not run during the build"
    debs = builder.run("sh", "-c", "ls /root/src/*.deb").stdout.split()
    assert sorted(path.rsplit("/", 1)[1].split("_")[0] for path in debs) == ["baremail", "baremail-mta"]
    baremail = next(path for path in debs if "/baremail_" in path)
    apt(builder, "install", baremail)
    assert probe(builder, "127.0.0.1", 25).startswith("220 ")
    assert probe(builder, "127.0.0.1", 110).startswith("+OK")
