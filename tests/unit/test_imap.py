"""The IMAP session engine (baremail/imap.py) driven with bytes, over an
in-memory store (imapfake.py): every command and response form."""

import base64
import re

import pytest
from hypothesis import given, settings, strategies as st

from baremail.engine import Close, Send
from baremail.imap import CommitAppend, IMAPSession, State, StoreError, Stream, Watch
from imapfake import FakeStore

PLAIN = b"Subject: hello\r\nFrom: Cron Daemon <root@host.example>\r\nTo: root@host.example\r\n" \
        b"Date: Wed, 02 Dec 2026 06:00:00 +0000\r\nMessage-ID: <a1@host.example>\r\n\r\nThe body.\r\n"


def message(n: int, body: bytes = b"text") -> bytes:
    return (f"Subject: message {n}\r\nFrom: sender{n}@example.org\r\nTo: root@localhost\r\n"
            f"Date: Wed, 02 Dec 2026 06:0{n % 10}:00 +0000\r\n\r\n").encode() + body + b"\r\n"


class Client:
    """Performs the engine's events as the runtime and glue would."""

    def __init__(self, store=None, **kwargs):
        self.store = store or FakeStore()
        self.session = IMAPSession("host.example", self.store, **kwargs)
        self.watching = None
        self.closed = False
        self.greeting = self.perform(self.session.start())

    def perform(self, events) -> bytes:
        out = b""
        while events:
            follow = []
            for event in events:
                if isinstance(event, Send):
                    out += event.data
                elif isinstance(event, Close):
                    self.closed = True
                elif isinstance(event, Watch):
                    self.watching = event.mailbox
                elif isinstance(event, Stream):
                    for chunk in event.chunks:
                        if isinstance(chunk, bytes):
                            out += chunk
                        else:
                            while data := chunk.read(7):
                                out += data
                            chunk.close()
                    follow += self.session.streamed()
                elif isinstance(event, CommitAppend):
                    try:
                        result = event.handle.commit()
                    except StoreError as exc:
                        result = exc
                    follow += self.session.appended(result)
                else:
                    raise AssertionError(f"unexpected event {event!r}")
            events = follow
        return out

    def send(self, data: bytes) -> bytes:
        return self.perform(self.session.receive(data))

    def cmd(self, line: str) -> bytes:
        return self.send(line.encode() + b"\r\n")

    def tagged(self, line: str) -> list:
        """Response lines of one command (tag "a"), the tagged one last."""
        return self.cmd("a " + line).decode("utf-8", "replace").split("\r\n")[:-1]


def logged_in(**kwargs) -> Client:
    client = Client(**kwargs)
    assert client.tagged("LOGIN any thing")[-1].startswith("a OK")
    return client


def selected(count: int = 3, **kwargs) -> Client:
    client = logged_in(**kwargs)
    for n in range(1, count + 1):
        client.store.inbox.add(message(n))
    assert client.tagged("SELECT INBOX")[-1] == "a OK [READ-WRITE] SELECT completed"
    return client


# -- greeting, capabilities, login ---------------------------------------------

def test_greeting_carries_the_capabilities_so_clients_need_not_ask():
    client = Client()
    assert client.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    for capability in ("IDLE", "UIDPLUS", "MOVE", "NAMESPACE", "ID", "ENABLE", "LITERAL+", "SASL-IR",
                       "UNSELECT", "CHILDREN", "SPECIAL-USE", "AUTH=PLAIN", "AUTH=LOGIN"):
        assert f" {capability}".encode() in client.greeting.split(b"]")[0], capability
    assert b"STARTTLS" not in client.greeting


def test_capability_command():
    lines = Client().tagged("CAPABILITY")
    assert lines[0].startswith("* CAPABILITY IMAP4rev1") and lines[-1] == "a OK CAPABILITY completed"


@pytest.mark.parametrize("login", ['LOGIN joe secret', 'LOGIN "joe doe" "p w"', "LOGIN {3+}\r\njoe {1+}\r\nx"])
def test_any_login_succeeds_with_capabilities(login):
    client = Client()
    lines = client.tagged(login)
    assert lines[-1].startswith("a OK [CAPABILITY IMAP4rev1") and client.session.state is State.AUTHENTICATED


def test_login_with_synchronizing_literals_asks_for_each():
    client = Client()
    assert client.send(b"a LOGIN {3}\r\n") == b"+ OK\r\n"
    assert client.send(b"joe {6}\r\n") == b"+ OK\r\n"
    assert client.send(b"secret\r\n").startswith(b"a OK")
    assert client.session.user == "joe"


def test_authenticate_plain_with_and_without_initial_response():
    client = Client()
    response = base64.b64encode(b"\0joe\0pw").decode()
    assert client.tagged(f"AUTHENTICATE PLAIN {response}")[-1].startswith("a OK [CAPABILITY")
    client = Client()
    assert client.cmd("a AUTHENTICATE PLAIN") == b"+ \r\n"
    assert client.send(response.encode() + b"\r\n").startswith(b"a OK [CAPABILITY")
    assert client.session.user == "joe"


def test_authenticate_login_and_cancel():
    client = Client()
    assert client.cmd("a AUTHENTICATE LOGIN") == b"+ VXNlcm5hbWU6\r\n"
    assert client.send(base64.b64encode(b"joe") + b"\r\n") == b"+ UGFzc3dvcmQ6\r\n"
    assert client.send(b"*\r\n") == b"a BAD AUTHENTICATE cancelled\r\n"
    assert client.session.state is State.NOT_AUTHENTICATED
    assert client.tagged("NOOP") == ["a OK NOOP completed"]


def test_unknown_mechanism_and_starttls_are_refused():
    client = Client()
    assert client.tagged("AUTHENTICATE CRAM-MD5")[-1].startswith("a NO")
    assert client.tagged("STARTTLS")[-1].startswith("a NO")


def test_commands_outside_their_state_get_bad_and_the_session_goes_on():
    client = Client()
    assert client.tagged("SELECT INBOX")[-1].startswith("a BAD SELECT is not valid")
    assert client.tagged("FETCH 1 FLAGS")[-1].startswith("a BAD")
    client.tagged("LOGIN a b")
    assert client.tagged("FETCH 1 FLAGS")[-1].startswith("a BAD FETCH is not valid in the authenticated")


def test_syntax_errors_get_bad_with_the_tag_or_a_star():
    client = Client()
    assert client.cmd("a FROB") == b"a BAD Unknown command\r\n"
    assert client.cmd("") .startswith(b"* BAD")
    assert client.cmd("a LOGIN").startswith(b"a BAD")
    assert client.tagged("NOOP") == ["a OK NOOP completed"]


def test_logout():
    client = Client()
    assert client.cmd("a LOGOUT") == b"* BYE BareMail IMAP signing off\r\na OK LOGOUT completed\r\n"
    assert client.closed and client.session.closed


def test_id_namespace_enable():
    client = logged_in()
    assert client.tagged('ID ("name" "Thunderbird" "version" "153.8.0")')[0].startswith('* ID ("name" "BareMail"')
    assert client.tagged("NAMESPACE")[0] == '* NAMESPACE (("" ".")) NIL NIL'
    assert client.tagged("ENABLE CONDSTORE") == ["* ENABLED", "a OK ENABLE completed"]


# -- mailboxes -----------------------------------------------------------------

def test_select_reports_the_mailbox_state():
    client = logged_in()
    client.store.inbox.add(message(1), flags={"\\Seen"}, recent=False)
    client.store.inbox.add(message(2), flags={"$Forwarded"})
    lines = client.tagged("SELECT INBOX")
    assert lines == [
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded)",
        "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted",
        "* 2 EXISTS", "* 1 RECENT", "* OK [UNSEEN 2] First unseen",
        "* OK [UIDVALIDITY 1000] UIDs valid", "* OK [UIDNEXT 3] Predicted next UID",
        "a OK [READ-WRITE] SELECT completed"]
    assert client.watching == "INBOX"


def test_examine_is_read_only_and_an_empty_mailbox_selects():
    client = logged_in()
    lines = client.tagged("EXAMINE INBOX")
    assert "* 0 EXISTS" in lines and "* OK [PERMANENTFLAGS ()] Flags permitted" in lines
    assert lines[-1] == "a OK [READ-ONLY] EXAMINE completed"
    assert not any("UNSEEN" in line for line in lines)
    assert client.tagged("STORE 1 +FLAGS (\\Seen)")[-1].startswith("a NO [READ-ONLY]")


def test_select_of_a_missing_mailbox_is_no_and_leaves_no_mailbox_selected():
    client = selected()
    assert client.tagged("SELECT Nowhere")[-1].startswith("a NO [NONEXISTENT]")
    assert client.session.state is State.AUTHENTICATED and client.watching is None


def test_create_list_rename_delete_and_special_use():
    client = logged_in()
    for name in ("Trash", "Sent", "Archives.2024", "Gr&APwA3w-e"):
        assert client.tagged(f"CREATE {name}")[-1] == "a OK CREATE completed"
    assert "Grüße" in client.store.folders_by_name
    assert client.tagged("CREATE Trash")[-1].startswith("a NO [ALREADYEXISTS]")
    assert client.tagged("CREATE INBOX")[-1].startswith("a NO [ALREADYEXISTS]")
    lines = client.tagged('LIST "" "*"')
    assert '* LIST (\\HasNoChildren \\Trash) "." "Trash"' in lines
    assert '* LIST (\\HasNoChildren \\Sent) "." "Sent"' in lines
    assert '* LIST (\\HasNoChildren) "." "Gr&APwA3w-e"' in lines
    assert lines[0] == '* LIST (\\HasNoChildren) "." "INBOX"'
    assert client.tagged('LIST "" ""')[0] == '* LIST (\\Noselect) "." ""'
    assert [line for line in client.tagged('LIST "" "%"') if "2024" in line] == []
    assert client.tagged('LIST (SPECIAL-USE) "" "*"')[:-1] == ['* LIST (\\HasNoChildren \\Sent) "." "Sent"',
                                                              '* LIST (\\HasNoChildren \\Trash) "." "Trash"']
    assert client.tagged("RENAME Sent Outbox")[-1] == "a OK RENAME completed"
    client.store.inbox.add(PLAIN)
    assert client.tagged("RENAME INBOX Old")[-1] == "a OK RENAME completed"
    assert client.tagged("STATUS INBOX (MESSAGES)")[0] == '* STATUS "INBOX" (MESSAGES 0)'
    assert client.tagged("STATUS Old (MESSAGES)")[0] == '* STATUS "Old" (MESSAGES 1)'
    assert client.tagged("RENAME Old INBOX")[-1].startswith("a NO [ALREADYEXISTS]")
    assert client.tagged("DELETE Old")[-1] == "a OK DELETE completed"
    assert client.tagged("DELETE Outbox")[-1] == "a OK DELETE completed"
    assert client.tagged("DELETE INBOX")[-1].startswith("a NO")
    assert client.tagged("DELETE Outbox")[-1].startswith("a NO [NONEXISTENT]")


def test_subscribe_lsub_and_list_subscribed():
    client = logged_in()
    client.tagged("CREATE Trash")
    assert client.tagged("SUBSCRIBE Trash")[-1] == "a OK SUBSCRIBE completed"
    client.tagged("SUBSCRIBE INBOX")
    assert client.tagged('LSUB "" "*"')[:-1] == ['* LSUB () "." "INBOX"', '* LSUB () "." "Trash"']
    lines = client.tagged('LIST (SUBSCRIBED) "" "*"')
    assert '* LIST (\\HasNoChildren \\Trash \\Subscribed) "." "Trash"' in lines
    client.tagged("UNSUBSCRIBE Trash")
    assert client.tagged('LSUB "" "*"')[:-1] == ['* LSUB () "." "INBOX"']


def test_status():
    client = logged_in()
    client.store.inbox.add(message(1), flags={"\\Seen"})
    client.store.inbox.add(message(2))
    assert client.tagged("STATUS INBOX (MESSAGES UNSEEN UIDNEXT UIDVALIDITY RECENT)")[0] == \
        '* STATUS "INBOX" (MESSAGES 2 UNSEEN 1 UIDNEXT 3 UIDVALIDITY 1000 RECENT 2)'
    assert client.tagged("STATUS Nowhere (MESSAGES)")[-1].startswith("a NO [NONEXISTENT]")


# -- FETCH -----------------------------------------------------------------------

def test_fetch_flags_uid_size_and_the_uid_fetch_adds_uid():
    client = selected()
    assert client.tagged("FETCH 1:* (FLAGS)")[:-1] == [f"* {n} FETCH (FLAGS ())" for n in (1, 2, 3)]
    lines = client.tagged("UID FETCH 2:* (FLAGS RFC822.SIZE)")
    assert lines[0] == f"* 2 FETCH (UID 2 FLAGS () RFC822.SIZE {len(message(2))})"
    assert lines[-1] == "a OK UID FETCH completed"


def test_uid_fetch_from_past_the_last_uid_means_the_last_one():
    client = selected()
    assert client.tagged("UID FETCH 10:* (FLAGS)")[:-1] == ["* 3 FETCH (UID 3 FLAGS ())"]


def test_sequence_numbers_beyond_the_mailbox_are_bad_uids_beyond_are_nothing():
    client = selected()
    assert client.tagged("FETCH 4 FLAGS")[-1].startswith("a BAD")
    assert client.tagged("UID FETCH 40 FLAGS") == ["a OK UID FETCH completed"]


def test_fetch_of_reversed_ranges_and_sets_with_gaps():
    client = selected(5)
    assert [line.split()[1] for line in client.tagged("FETCH 4:2,5 (UID)")[:-1]] == ["2", "3", "4", "5"]
    assert [line.split()[4][:-1] for line in client.tagged("UID FETCH 1,3:4 (UID)")[:-1]] == ["1", "3", "4"]


def test_thunderbird_header_fetch():
    client = selected(2)
    lines = client.cmd("a UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc "
                       "Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To "
                       "Content-Type Reply-To Received)])")
    first = lines.split(b"\r\n* 2 ")[0]
    header = b"Subject: message 1\r\nFrom: sender1@example.org\r\nTo: root@localhost\r\n" \
             b"Date: Wed, 02 Dec 2026 06:01:00 +0000\r\n\r\n"
    assert first == (b"* 1 FETCH (UID 1 RFC822.SIZE %d FLAGS () BODY[HEADER.FIELDS (FROM TO CC BCC SUBJECT "
                     b"DATE MESSAGE-ID PRIORITY X-PRIORITY REFERENCES NEWSGROUPS IN-REPLY-TO CONTENT-TYPE "
                     b"REPLY-TO RECEIVED)] {%d}\r\n" % (len(message(1)), len(header)) + header + b")")
    assert lines.endswith(b"a OK UID FETCH completed\r\n")
    # PEEK: nothing became \Seen
    assert client.tagged("FETCH 1:2 (FLAGS)")[:-1] == ["* 1 FETCH (FLAGS ())", "* 2 FETCH (FLAGS ())"]


def test_body_fetch_sets_seen_and_says_so_peek_does_not():
    client = selected(2)
    out = client.cmd("a FETCH 1 BODY[]")
    assert out == b"* 1 FETCH (BODY[] {%d}\r\n" % len(message(1)) + message(1) + b" FLAGS (\\Seen))\r\n" \
        b"a OK FETCH completed\r\n"
    assert "\\Seen" in client.store.inbox.entries[1].flags
    client.cmd("a FETCH 2 BODY.PEEK[]")
    assert client.store.inbox.entries[2].flags == frozenset()


def test_rfc822_items_and_sections_and_partials():
    client = selected(1)
    data = message(1)
    header, body = data.split(b"\r\n\r\n", 1)
    header += b"\r\n\r\n"
    out = client.cmd("a FETCH 1 (RFC822.HEADER RFC822.TEXT BODY.PEEK[TEXT] BODY.PEEK[HEADER]<0.7> "
                     "BODY.PEEK[1] BODY.PEEK[2] BODY.PEEK[]<2.3>)")
    assert out.startswith(b"* 1 FETCH (RFC822.HEADER {%d}\r\n" % len(header) + header +
                          b" RFC822.TEXT {%d}\r\n" % len(body) + body)
    assert b" BODY[TEXT] {%d}\r\n" % len(body) + body in out
    assert b" BODY[HEADER]<0> {7}\r\nSubject" in out
    assert b" BODY[1] {%d}\r\n" % len(body) + body in out
    assert b" BODY[2] {0}\r\n" in out
    assert b" BODY[]<2> {3}\r\nbje" in out


def test_envelope_bodystructure_internaldate_and_the_macros():
    client = logged_in()
    client.store.inbox.add(PLAIN, date=1796191200.0)
    client.tagged("SELECT INBOX")
    out = client.cmd("a FETCH 1 (ENVELOPE BODYSTRUCTURE INTERNALDATE)").decode()
    assert 'ENVELOPE ("Wed, 02 Dec 2026 06:00:00 +0000" "hello" (("Cron Daemon" NIL "root" "host.example"))' in out
    assert 'BODYSTRUCTURE ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 11 1' in out
    assert re.search(r'INTERNALDATE "\d\d-Dec-2026 \d\d:\d\d:\d\d [+-]\d{4}"', out)
    for macro, items in (("FAST", "FLAGS INTERNALDATE RFC822.SIZE"), ("ALL", "ENVELOPE"), ("FULL", "BODY (")):
        out = client.cmd(f"a FETCH 1 {macro}").decode()
        for item in items.split():
            assert item in out, (macro, item)


def test_a_large_body_is_streamed_not_built_in_memory():
    client = logged_in()
    big = b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n"
    big = big[:-2] + b"\r\n" + (b"y" * 998 + b"\r\n") * 200
    client.store.inbox.add(big)
    client.tagged("SELECT INBOX")
    events = client.session.receive(b"a FETCH 1 BODY.PEEK[]\r\n")
    assert any(isinstance(event, Stream) for event in events)
    assert client.session.receive(b"b NOOP\r\n") == []   # held until the stream is done
    out = client.perform(events)
    assert out == b"* 1 FETCH (BODY[] {%d}\r\n" % len(big) + big + b")\r\na OK FETCH completed\r\nb OK NOOP completed\r\n"


# -- STORE, EXPUNGE, COPY, MOVE ---------------------------------------------------

def test_store_forms():
    client = selected(2)
    assert client.tagged("STORE 1 +FLAGS (\\Seen \\Flagged)")[:-1] == ["* 1 FETCH (FLAGS (\\Flagged \\Seen))"]
    assert client.tagged("STORE 1 -FLAGS \\Flagged")[:-1] == ["* 1 FETCH (FLAGS (\\Seen))"]
    assert client.tagged("UID STORE 1:2 FLAGS (\\Answered $Forwarded)")[:-1] == [
        "* 1 FETCH (UID 1 FLAGS ($Forwarded \\Answered))", "* 2 FETCH (UID 2 FLAGS ($Forwarded \\Answered))"]
    assert client.tagged("STORE 2 +FLAGS.SILENT ($Junk)") == ["a OK STORE completed"]
    assert client.store.inbox.entries[2].flags == {"\\Answered", "$Forwarded", "$Junk"}
    assert client.tagged("STORE 1 +FLAGS (\\Recent)")[-1].startswith("a BAD")


def test_expunge_and_uid_expunge():
    client = selected(4)
    client.tagged("STORE 1,3,4 +FLAGS (\\Deleted)")
    assert client.tagged("UID EXPUNGE 3") == ["* 3 EXPUNGE", "a OK EXPUNGE completed"]
    assert client.tagged("EXPUNGE") == ["* 3 EXPUNGE", "* 1 EXPUNGE", "a OK EXPUNGE completed"]
    assert client.tagged("UID FETCH 1:* (UID)")[:-1] == ["* 1 FETCH (UID 2)"]


def test_close_expunges_silently_unselect_does_not():
    client = selected(2)
    client.tagged("STORE 1 +FLAGS (\\Deleted)")
    assert client.tagged("UNSELECT") == ["a OK UNSELECT completed"]
    assert len(client.store.inbox.entries) == 2
    client.tagged("SELECT INBOX")
    assert client.tagged("CLOSE") == ["a OK CLOSE completed"]
    assert len(client.store.inbox.entries) == 1 and client.session.state is State.AUTHENTICATED


def test_copy_and_move_with_copyuid_and_trycreate():
    client = selected(3)
    assert client.tagged("COPY 1 Trash")[-1].startswith("a NO [TRYCREATE]")
    client.tagged("CREATE Trash")
    assert client.tagged("COPY 1:2 Trash") == ["a OK [COPYUID 2001 1:2 1:2] COPY completed"]
    assert client.tagged("UID MOVE 3 Trash") == ["* OK [COPYUID 2001 3 3] Moved", "* 3 EXPUNGE",
                                                 "a OK UID MOVE completed"]
    assert len(client.store.folders_by_name["Trash"].entries) == 3
    assert client.tagged("MOVE 1 Trash")[:2] == ["* OK [COPYUID 2001 1 4] Moved", "* 1 EXPUNGE"]


# -- APPEND ------------------------------------------------------------------------

def test_append_with_flags_date_and_appenduid():
    client = logged_in()
    data = message(9)
    assert client.send(b'a APPEND INBOX (\\Seen $Label1) "02-Dec-2026 06:00:00 +0000" {%d}\r\n' % len(data)) \
        == b"+ OK\r\n"
    assert client.send(data + b"\r\n") == b"a OK [APPENDUID 1000 1] APPEND completed\r\n"
    [entry] = client.store.inbox.entries.values()
    assert entry.data == data and entry.flags == {"\\Seen", "$Label1"} and entry.date == 1796191200.0


def test_append_with_a_non_synchronizing_literal_and_to_a_missing_mailbox():
    client = logged_in()
    data = message(1)
    assert client.send(b"a APPEND INBOX {%d+}\r\n" % len(data) + data + b"\r\n") == \
        b"a OK [APPENDUID 1000 1] APPEND completed\r\n"
    assert client.send(b"b APPEND Nowhere {5}\r\n") == b"b NO [TRYCREATE] No such mailbox\r\n"
    # LITERAL+: the data comes anyway and is dropped with its command.
    assert client.send(b"c APPEND Nowhere {5+}\r\nhello\r\nd NOOP\r\n") == \
        b"c NO [TRYCREATE] No such mailbox\r\nd OK NOOP completed\r\n"


def test_append_over_the_size_limit_is_toobig():
    client = logged_in(max_message_size=10)
    assert client.send(b"a APPEND INBOX {11}\r\n").startswith(b"a NO [TOOBIG]")
    assert client.tagged("NOOP") == ["a OK NOOP completed"]


def test_append_to_the_selected_mailbox_reports_exists():
    client = selected(1)
    data = message(2)
    out = client.send(b"a APPEND INBOX {%d+}\r\n" % len(data) + data + b"\r\n")
    assert out == b"* 2 EXISTS\r\n* 2 RECENT\r\na OK [APPENDUID 1000 2] APPEND completed\r\n"


# -- SEARCH ------------------------------------------------------------------------

def test_search_by_flags_header_text_and_uid():
    client = selected(4)
    client.tagged("STORE 2 +FLAGS (\\Seen)")
    assert client.tagged("SEARCH UNSEEN")[0] == "* SEARCH 1 3 4"
    assert client.tagged("SEARCH FROM sender3")[0] == "* SEARCH 3"
    assert client.tagged('SEARCH OR SUBJECT "message 1" SUBJECT "MESSAGE 4"')[0] == "* SEARCH 1 4"
    assert client.tagged("UID SEARCH UID 2:3")[0] == "* SEARCH 2 3"
    assert client.tagged("SEARCH BODY TEXT NOT 1")[0] == "* SEARCH 2 3 4"
    assert client.tagged("SEARCH CHARSET ISO-2022-JP ALL")[-1].startswith("a NO [BADCHARSET (US-ASCII UTF-8)]")


def test_uid_search_answers_uids_and_search_sequence_numbers():
    client = selected(3)
    client.tagged("STORE 1 +FLAGS (\\Deleted)")
    client.tagged("EXPUNGE")
    assert client.tagged("SEARCH ALL")[0] == "* SEARCH 1 2"
    assert client.tagged("UID SEARCH ALL")[0] == "* SEARCH 2 3"


# -- changes made elsewhere ----------------------------------------------------------

def test_a_new_message_is_announced_at_the_next_command():
    client = selected(1)
    client.store.inbox.add(message(2))
    assert client.tagged("NOOP") == ["* 2 EXISTS", "* 2 RECENT", "a OK NOOP completed"]


def test_flag_changes_by_others_are_reported_as_fetch():
    client = selected(2)
    client.store.inbox.set(2, {"\\Seen"})
    assert client.tagged("NOOP") == ["* 2 FETCH (FLAGS (\\Seen))", "a OK NOOP completed"]


def test_an_expunge_elsewhere_waits_through_fetch_store_and_search_but_not_noop():
    client = selected(3)
    client.store.inbox.remove(2)
    lines = client.tagged("FETCH 1:3 (FLAGS)")
    assert "* 2 EXPUNGE" not in lines and len(lines) == 4
    assert client.tagged("SEARCH ALL")[0] == "* SEARCH 1 3"   # numbers unchanged
    assert client.tagged("NOOP") == ["* 2 EXPUNGE", "a OK NOOP completed"]
    assert client.tagged("SEARCH ALL")[0] == "* SEARCH 1 2"


def test_an_expunge_elsewhere_may_be_told_during_a_uid_command():
    client = selected(3)
    client.store.inbox.remove(1)
    assert client.tagged("UID FETCH 1:* (FLAGS)")[0] == "* 1 EXPUNGE"


def test_a_body_fetch_of_a_message_gone_meanwhile_is_expungeissued():
    client = selected(2)
    client.store.inbox.remove(2)
    lines = client.tagged("FETCH 1:2 (BODY.PEEK[])")
    assert lines[-1].startswith("a NO [EXPUNGEISSUED]")


def test_idle_pushes_new_messages_and_expunges_and_done_ends_it():
    client = selected(2)
    assert client.cmd("a IDLE") == b"+ idling\r\n"
    client.store.inbox.add(message(3))
    assert client.perform(client.session.changed()) == b"* 3 EXISTS\r\n* 3 RECENT\r\n"
    client.store.inbox.remove(1)
    assert client.perform(client.session.changed()) == b"* 1 EXPUNGE\r\n"
    assert client.perform(client.session.changed()) == b""
    assert client.send(b"DONE\r\n") == b"a OK IDLE terminated\r\n"
    assert client.tagged("NOOP") == ["a OK NOOP completed"]


def test_idle_ended_by_something_else_than_done_is_bad():
    client = selected(1)
    client.cmd("a IDLE")
    assert client.send(b"b NOOP\r\n") == b"a BAD Expected DONE to end IDLE\r\n"


def test_changes_are_not_pushed_outside_idle():
    client = selected(1)
    client.store.inbox.add(message(2))
    assert client.perform(client.session.changed()) == b""


# -- limits, timeouts, stopping ------------------------------------------------------

def test_over_long_command_lines_get_bad_and_the_session_goes_on():
    client = logged_in()
    assert client.send(b"a NOOP " + b"x" * 70000 + b"\r\n") == b"a BAD Command line too long\r\n"
    assert client.tagged("NOOP") == ["a OK NOOP completed"]


def test_a_literal_over_the_cap_is_refused():
    client = logged_in()
    assert client.send(b"a LOGIN {2000000}\r\n").startswith(b"a BAD [TOOBIG]")
    assert client.tagged("NOOP") == ["a OK NOOP completed"]


def test_pipelined_commands_are_answered_in_order():
    client = selected(2)
    out = client.send(b"a NOOP\r\nb FETCH 1 (FLAGS)\r\nc UID FETCH 2 (UID)\r\nd LOGOUT\r\n")
    assert out == (b"a OK NOOP completed\r\n* 1 FETCH (FLAGS ())\r\nb OK FETCH completed\r\n"
                   b"* 2 FETCH (UID 2)\r\nc OK UID FETCH completed\r\n"
                   b"* BYE BareMail IMAP signing off\r\nd OK LOGOUT completed\r\n")


def test_timeout_and_shutdown_say_bye_and_close():
    client = Client()
    assert client.perform(client.session.timeout()) == b"* BYE Autologout; idle for too long\r\n"
    assert client.closed
    client = selected()
    assert client.perform(client.session.shutdown()).startswith(b"* BYE [UNAVAILABLE]")
    assert client.session.receive(b"a NOOP\r\n") == []


def test_at_rest_between_commands_and_in_idle_not_in_a_literal():
    client = logged_in()
    assert client.session.at_rest
    client.send(b"a LOGIN {3}\r\n")
    assert not client.session.at_rest
    client.send(b"abc {1}\r\nx\r\n")
    assert client.session.at_rest
    client.tagged("SELECT INBOX")
    client.cmd("b IDLE")
    assert client.session.at_rest


@pytest.mark.parametrize("cut", range(1, 60, 3))
def test_a_command_with_literals_split_at_any_byte_gives_the_same_answer(cut):
    data = message(1)
    stream = b"a LOGIN {3+}\r\njoe {2+}\r\npw\r\nb APPEND INBOX (\\Seen) {%d+}\r\n" % len(data) + data + \
        b"\r\nc NOOP\r\n"
    whole = Client().send(stream)
    client = Client()
    got = b""
    for start in range(0, len(stream), cut):
        got += client.send(stream[start:start + cut])
    assert got == whole
    assert whole.endswith(b"b OK [APPENDUID 1000 1] APPEND completed\r\nc OK NOOP completed\r\n")


def test_a_stream_of_literals_cut_in_two_at_every_byte_gives_the_same_answer():
    data = message(1)
    stream = b"a LOGIN {3}\r\njoe {2+}\r\npw\r\nb SELECT INBOX\r\nc APPEND INBOX {%d}\r\n" % len(data) + data + \
        b"\r\nd SEARCH SUBJECT {7}\r\nmessage\r\ne LOGOUT\r\n"
    whole = Client().send(stream)
    assert whole.count(b"+ OK\r\n") == 3 and b"* SEARCH 1\r\n" in whole
    for cut in range(1, len(stream)):
        client = Client()
        got = client.send(stream[:cut]) + client.send(stream[cut:])
        assert got == whole, cut


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_no_input_makes_the_engine_raise(data):
    client = selected(2)
    client.send(data)
    client.send(b"\r\nz NOOP\r\n")
