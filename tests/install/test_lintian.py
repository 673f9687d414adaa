"""lintian (Debian 12's) on everything the build made: the source package,
both .debs and the .buildinfo, all named in the .changes. No error and no
warning may be reported; the pedantic, informational and experimental tags
it reports are shown. Overrides live in debian/*.lintian-overrides, each
with its reason.
"""

from __future__ import annotations

import shutil
import subprocess

from container import CONTAINER_PATH, _clean_env


def test_lintian_reports_no_errors_or_warnings(debs, say):
    assert shutil.which("lintian", path=CONTAINER_PATH), "lintian is missing (make deps)"
    changes = sorted(debs["current"].parent.glob("baremail_*.changes"))
    assert len(changes) == 1, changes
    listed = changes[0].read_text()
    for name in (".dsc", debs["current"].name, debs["mta-current"].name, ".buildinfo"):
        assert name in listed, f"{name} is not in {changes[0].name}"
    result = subprocess.run(
        ["lintian", "--pedantic", "--display-info", "--display-experimental", "--show-overrides",
         "--fail-on", "none", str(changes[0])],
        capture_output=True, text=True, env=_clean_env(), stdin=subprocess.DEVNULL, timeout=600)
    # lintian says on stderr that it runs as root; that is no finding.
    assert result.returncode == 0, result.stdout + result.stderr
    tags = [line for line in result.stdout.splitlines()
            if line[:2] in ("E:", "W:", "I:", "P:", "X:", "O:", "M:", "C:")]
    say(f"lintian --pedantic --display-info --display-experimental on {changes[0].name}: "
        f"{len(tags)} tag(s) (O: = overridden, M: = masked)")
    for line in tags:
        say("    " + line)
    failing = [line for line in tags if line.startswith(("E:", "W:"))]
    assert failing == [], "\n".join(failing)
