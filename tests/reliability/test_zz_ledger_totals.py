"""Runs last (files are collected in name order): the suite-wide ledger."""

import pytest

from ledger import LEDGER


def test_no_message_was_lost_or_duplicated_across_the_suite():
    if not LEDGER.rows:
        pytest.skip("no reliability test sent mail in this run")
    totals = LEDGER.totals()
    print("\n" + "\n".join(LEDGER.table()))
    assert totals["lost"] == 0 and totals["duplicated"] == 0, totals
    assert totals["stored"] == totals["acknowledged"] + totals["stored without ack"], totals
