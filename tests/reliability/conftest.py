"""Fixtures for the reliability suite (issue 7: nothing lost, nothing stuck).

The real programs are started exactly as the integration tests start them:
both use tests/servicekit.py, so there is one harness, not two.

Every test that sends mail does so through an `outbox`, which records what
was sent and acknowledged; at the end of the test it audits the Maildir and
adds the result to the session's ledger, printed as a table after the run.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))

from ledger import LEDGER, Outbox  # noqa: E402
from servicekit import start_service  # noqa: E402,F401 (the fixture, shared with tests/integration)

# 1,000 client sockets in this process plus as many in the service (which
# inherits this limit through systemd-socket-activate).
_WANTED_FILES = 4096
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft < _WANTED_FILES:
    resource.setrlimit(resource.RLIMIT_NOFILE,
                       (min(_WANTED_FILES, _hard) if _hard != resource.RLIM_INFINITY else _WANTED_FILES, _hard))


@pytest.fixture(scope="session")
def ledger():
    return LEDGER


@pytest.fixture
def outbox(request, ledger):
    """Send mail through this; `outbox.settle(maildir)` audits the Maildir.

    A test that never settles leaves nothing in the ledger; settling twice
    is an error (messages would be counted twice)."""
    area = request.module.__name__.rpartition(".")[2].removeprefix("test_").replace("_", " ")
    return Outbox(ledger, area, request.node.name)


def pytest_terminal_summary(terminalreporter):
    if LEDGER.rows:
        terminalreporter.write_sep("=", "reliability ledger")
        for line in LEDGER.table():
            terminalreporter.write_line(line)
