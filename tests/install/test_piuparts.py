"""piuparts, the real one, on baremail and baremail-mta: install and purge,
and install of the previous version (0.1.0) from an apt repository,
upgrade to 0.1.1, purge, each time comparing the file system before and
after (piuparts fails on files left behind, modified or missing).

piuparts normally builds its chroot with debootstrap from a mirror. Here
its chroot is a copy of the container tests' cached bookworm root file
system (--existing-chroot), whose sources.list names only a local
repository holding the 0.1.0 .debs (bind-mounted into the chroot), so it
runs offline. In a chroot systemd does not run: the services never start
here (test_lifecycle.py covers a booted system).
"""

from __future__ import annotations

import re
import shutil
import subprocess

from container import CONTAINER_PATH, _clean_env, cached_rootfs


def test_piuparts_install_purge_and_upgrade_pass(debs, work, say):
    assert shutil.which("piuparts", path=CONTAINER_PATH), "piuparts is missing (make deps)"
    repo = work / "repo"
    repo.mkdir()
    for kind in ("current", "mta-current"):
        shutil.copy2(debs[kind], repo)
    packages = subprocess.run(["dpkg-scanpackages", "--multiversion", "."], cwd=repo,
                              capture_output=True, text=True, check=True).stdout
    (repo / "Packages").write_text(packages)

    base = work / "base"
    subprocess.run(["cp", "-a", "--reflink=auto", str(cached_rootfs(say)), str(base)], check=True)
    (base / "etc/apt/sources.list").write_text(f"deb [trusted=yes] file:{repo} ./\n")
    # As on any installed system (a debootstrap base has it): debconf's
    # scratch directory, made by the first package configured with debconf.
    # Without it, piuparts blames the package under test for it.
    (base / "var/cache/debconf/tmp.ci").mkdir(mode=0o700, exist_ok=True)

    tmp = work / "tmp"
    tmp.mkdir()
    log = work / "piuparts.log"
    command = ["piuparts", f"--existing-chroot={base}", "--keep-sources-list",
               f"--bindmount={repo}", "--distribution=bookworm", f"--tmpdir={tmp}",
               f"--log-file={log}", "--no-adequate", debs["upgrade"], debs["mta-upgrade"]]
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True,
                            env=_clean_env(TMPDIR=str(tmp)), stdin=subprocess.DEVNULL, timeout=600)
    text = log.read_text(errors="replace") if log.exists() else result.stdout + result.stderr
    verdicts = re.findall(r"^\S+ (?:INFO|ERROR): ((?:PASS|FAIL|SKIP)\b.*)$", text, re.M)
    say("piuparts (0.1.1, with 0.1.0 in the chroot's apt repository):")
    for verdict in verdicts:
        say("    " + verdict)
    assert result.returncode == 0, "\n".join(text.splitlines()[-60:])
    assert "PASS: Installation and purging test." in verdicts
    assert "PASS: Installation, upgrade and purging tests." in verdicts
    assert "PASS: All tests." in verdicts
