"""baremail/journal.py: which sink a line goes to, and with which fields."""

import logging
import os

from baremail import journal


def test_fields_are_prefixed_and_upper_case():
    assert journal.fields(mailid="k", SIZE=3) == {"BAREMAIL_MAILID": "k", "BAREMAIL_SIZE": "3"}


def test_mail_event_goes_through_logging_when_not_under_journald(caplog, monkeypatch):
    monkeypatch.setattr(journal, "_identifier", None)
    with caplog.at_level(logging.INFO):
        journal.mail_event(logging.getLogger("baremail-pop3"), "deleted k4 peer=p", MAILID="k4")
    assert caplog.records[0].getMessage() == "deleted k4 peer=p"
    assert caplog.records[0].BAREMAIL_MAILID == "k4"


def test_mail_event_under_journald_sends_one_entry_with_the_fields(monkeypatch):
    from systemd import journal as systemd_journal
    sent = []
    monkeypatch.setattr(systemd_journal, "send", lambda message, **kw: sent.append((message, kw)))
    monkeypatch.setattr(journal, "_identifier", "baremail-smtp")
    logger = logging.getLogger("baremail-smtp")
    logger.setLevel(logging.INFO)
    journal.mail_event(logger, "delivered k1 size=12", MAILID="k1", SIZE=12)
    [(message, values)] = sent
    assert message == "delivered k1 size=12"
    assert values["BAREMAIL_MAILID"] == "k1" and values["BAREMAIL_SIZE"] == "12"
    assert values["SYSLOG_IDENTIFIER"] == "baremail-smtp" and values["PRIORITY"] == "6"


def test_journal_is_used_only_when_stderr_is_the_journal_stream(monkeypatch, tmp_path):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    assert journal._stderr_is_journal() is False
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert journal._stderr_is_journal() is True
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    assert journal._stderr_is_journal() is False
