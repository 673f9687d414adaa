"""The manual pages document what the code does."""

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest

from baremail import config

MAN = Path(__file__).resolve().parents[2] / "docs" / "man"


def rendered(name: str) -> str:
    run = subprocess.run(["man", "--warnings", "-l", "-P", "cat", str(MAN / name)],
                         capture_output=True, text=True, env={"MANWIDTH": "200", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0 and not run.stderr, run.stderr
    return re.sub(r".\x08", "", run.stdout)


def test_baremail_conf_5_documents_every_key_with_its_default():
    text = rendered("baremail.conf.5")
    defaults = config.Config()
    sections = re.split(r"\n(?=SECTION \[)", text)
    by_section = {re.match(r"SECTION \[(\w+)\]", part).group(1): part
                  for part in sections if part.startswith("SECTION [")}
    for (section, key), (field, _) in config._KEYS.items():
        value = getattr(defaults, field)
        shown = " ".join(value) if isinstance(value, tuple) else \
            (f"{value:g}" if isinstance(value, float) else str(value))
        part = by_section[section]
        if key == "hostname":
            assert re.search(r"hostname \(default: empty", part)
        else:
            assert f"{key} (default: {shown})" in part, (section, key, shown)


@pytest.mark.parametrize("page", ["baremail-smtp.8", "baremail-pop3.8", "baremail-imap.8", "baremail-expire.8", "baremail-sendmail.8"])
def test_program_pages_render_without_warnings(page):
    assert "SYNOPSIS" in rendered(page)
