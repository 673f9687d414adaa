"""debian/tests, run by the real autopkgtest inside the booted container.

Debian's CI runs these tests in a container (lxc) testbed. Here the booted
systemd-nspawn container is the testbed, and autopkgtest runs inside it
with its `null` virtualisation server: the container is the throwaway,
isolated machine that `null` assumes (the tests declare
isolation-container, which `null` grants). autopkgtest installs the
packages under test from the .debs given to it (Depends: @), runs each
test as root, and fails a test on a non-zero exit status or any output on
stderr, as on ci.debian.net.

The source tree given to autopkgtest is the built tree the .debs came
from: for a built tree autopkgtest needs no dpkg-dev in the testbed.
"""

from __future__ import annotations

import re
import shutil

from container import DEBS_IN_CONTAINER

SRC_IN_CONTAINER = "/root/src/baremail"
OUT_IN_CONTAINER = "/root/autopkgtest-out"
TESTS = ("smtp-pop3", "sendmail")


def test_debian_tests_pass_under_autopkgtest(box, debs, say):
    built_tree = debs["current"].parent / "baremail"
    assert (built_tree / "debian" / "files").exists(), "autopkgtest would take it as unbuilt"
    shutil.copytree(built_tree, box.root / SRC_IN_CONTAINER.lstrip("/"), symlinks=True)
    # No network in the container: leave apt only autopkgtest's own local
    # repository of the .debs under test (no vain lookups of the mirror).
    box.run("mv", "/etc/apt/sources.list", "/etc/apt/sources.list.offline")
    packages = [box.debs["current"], box.debs["mta-current"]]
    assert all(path.startswith(DEBS_IN_CONTAINER) for path in packages)
    # Debian 12's null server grants isolation-machine by itself. Debian
    # 13's (autopkgtest 5.49) grants no isolation, and told to fake it
    # (--fake-capability) it fails an assertion of its own; the booted
    # container is the isolation the tests ask for, so there autopkgtest
    # is told to take that restriction as met.
    options = []
    if box.release != "bookworm":
        options.append("--ignore-restrictions=isolation-container")
    result = box.run("autopkgtest", *options, "--output-dir", OUT_IN_CONTAINER, SRC_IN_CONTAINER + "/",
                     *packages, "--", "null", check=False, timeout=600)
    log = result.stdout + result.stderr
    summary = box.run("cat", f"{OUT_IN_CONTAINER}/summary", check=False).stdout
    say("autopkgtest (null, in the container) summary:")
    for line in summary.splitlines():
        say("    " + line)
    for test in TESTS:
        stdout = box.run("cat", f"{OUT_IN_CONTAINER}/{test}-stdout", check=False).stdout
        for line in stdout.splitlines():
            say(f"    {test}: {line}")
    assert result.returncode == 0, f"autopkgtest exited {result.returncode}:\n{log[-6000:]}"
    results = dict(re.findall(r"^(\S+)\s+(PASS|FAIL|SKIP|FLAKY|BROKEN|ERROR)\b", summary, re.M))
    assert results == {test: "PASS" for test in TESTS}, summary
    assert "testing package baremail version" in log, log[-3000:]
