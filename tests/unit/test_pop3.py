"""Unit tests for the POP3 session engine and the multi-line encoder.

The engine is driven with byte strings; `perform()` plays the runtime's part
for Retrieve events using MultilineEncoder, as pop3d.py does.
"""

import base64
import io
import poplib
import re
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baremail.pop3 import (
    MAX_COMMAND_LINE,
    MAX_PENDING_INPUT,
    Close,
    MultilineEncoder,
    POP3Session,
    Retrieve,
    Send,
    State,
    Update,
    unique_id,
)


@dataclass(frozen=True)
class Msg:
    key: str
    size: int
    wire: bytes


def msg(key, wire):
    return Msg(key=key, size=len(wire), wire=wire)


ONE = msg("1732480000.M1P42Q1R0a.host,S=40,W=42", b"Subject: one\r\n\r\nfirst body\r\n")
TWO = msg("1732480001.M2P42Q2R0b.host,S=60,W=63", b"Subject: two\r\n\r\n.dot line\r\nplain\r\n")
THREE = msg("1732480002.M3P42Q3R0c.host,S=20,W=21", b"Subject: three\r\n\r\nx\r\n")
TOTAL = ONE.size + TWO.size + THREE.size
STAT_ALL = b"+OK 3 %d\r\n" % TOTAL
LOGGED_IN = b"+OK maildrop has 3 messages (%d octets)\r\n" % TOTAL
NO_SUCH_MESSAGE = b"-ERR no such message, maildrop has 3 messages\r\n"
BAD_NUMBER = b"-ERR message number must be a positive integer\r\n"
TOO_LONG = b"-ERR command line too long (limit 255 octets)\r\n"
MALFORMED_PLAIN = b"-ERR malformed PLAIN response\r\n"


class Mailbox:
    """open_mailbox stand-in that counts how often the snapshot is taken."""

    def __init__(self, messages):
        self.messages = list(messages)
        self.opened = 0

    def __call__(self):
        self.opened += 1
        return list(self.messages)


def new_session(messages=(ONE, TWO, THREE)):
    mailbox = Mailbox(messages)
    session = POP3Session("mail.example", mailbox, clock=lambda: 1732480000.5, pid=4242)
    session.start()
    return session, mailbox


def sent(events):
    """All bytes the events send; fails if any other event is present."""
    assert all(isinstance(e, Send) for e in events), events
    return b"".join(e.data for e in events)


def talk(session, data):
    return sent(session.receive(data))


def logged_in(messages=(ONE, TWO, THREE)):
    session, mailbox = new_session(messages)
    assert talk(session, b"USER me\r\nPASS x\r\n").count(b"+OK") == 2
    return session, mailbox


def perform(session, events, gone=()):
    """Play the runtime: returns (bytes sent, non-Send events in order)."""
    output = bytearray()
    others = []
    queue = list(events)
    while queue:
        event = queue.pop(0)
        if isinstance(event, Send):
            output += event.data
            continue
        others.append(event)
        if isinstance(event, Retrieve):
            assert not queue, "a Retrieve must be the last event of a batch"
            assert session.busy
            if event.message.key in gone:
                output += event.missing_reply
                queue = session.retrieved(False)
            else:
                output += event.ok_reply
                encoder = MultilineEncoder(event.lines)
                output += encoder.feed(event.message.wire) + encoder.finish()
                queue = session.retrieved(True)
    return bytes(output), others


# --- Greeting ------------------------------------------------------------------


def test_greeting_carries_apop_timestamp_from_pid_clock_and_hostname():
    session = POP3Session("mail.example", Mailbox([]), clock=lambda: 1732480000.9, pid=4242)
    assert session.start() == [
        Send(b"+OK BareMail POP3 server ready <4242.1732480000@mail.example>\r\n")
    ]
    assert session.state is State.AUTHORIZATION


def test_no_snapshot_is_taken_before_transaction():
    session, mailbox = new_session()
    talk(session, b"CAPA\r\nUSER me\r\nAUTH\r\n")
    assert mailbox.opened == 0


# --- AUTHORIZATION: USER/PASS/APOP ---------------------------------------------------


def test_user_then_pass_logs_in_and_takes_the_snapshot():
    session, mailbox = new_session()
    assert talk(session, b"USER me\r\n") == b"+OK send PASS\r\n"
    assert talk(session, b"PASS secret\r\n") == LOGGED_IN
    assert session.state is State.TRANSACTION
    assert session.user == "me"
    assert session.message_count == 3
    assert mailbox.opened == 1


def test_pass_without_user_is_an_error():
    session, mailbox = new_session()
    assert talk(session, b"PASS secret\r\n") == b"-ERR send USER first\r\n"
    assert session.state is State.AUTHORIZATION
    assert mailbox.opened == 0


def test_user_without_name_is_a_syntax_error():
    session, _ = new_session()
    assert talk(session, b"USER\r\n") == b"-ERR syntax: USER name\r\n"
    assert talk(session, b"USER \r\n") == b"-ERR syntax: USER name\r\n"


def test_pass_accepts_any_password_including_spaces_and_empty():
    session, _ = new_session()
    assert talk(session, b"USER me\r\nPASS  two words \r\n").endswith(LOGGED_IN)
    session, _ = new_session()
    assert talk(session, b"USER me\r\nPASS\r\n").endswith(LOGGED_IN)


def test_apop_with_any_digest_logs_in():
    session, mailbox = new_session()
    reply = talk(session, b"APOP me c4c9334bac560ecc979e58001b3e22fb\r\n")
    assert reply == LOGGED_IN
    assert session.state is State.TRANSACTION
    assert session.user == "me"
    assert mailbox.opened == 1


def test_apop_without_digest_is_a_syntax_error():
    session, _ = new_session()
    assert talk(session, b"APOP me\r\n") == b"-ERR syntax: APOP name digest\r\n"
    assert session.state is State.AUTHORIZATION


# --- AUTHORIZATION: AUTH (RFC 5034) ---------------------------------------------------


def b64(data):
    return base64.b64encode(data)


def test_auth_plain_with_initial_response_logs_in():
    session, _ = new_session()
    reply = talk(session, b"AUTH PLAIN " + b64(b"\0me\0secret") + b"\r\n")
    assert reply == LOGGED_IN
    assert session.state is State.TRANSACTION
    assert session.user == "me"


def test_auth_plain_without_initial_response_sends_empty_challenge():
    session, _ = new_session()
    assert talk(session, b"AUTH PLAIN\r\n") == b"+ \r\n"
    assert talk(session, b64(b"admin\0me\0secret") + b"\r\n").startswith(b"+OK maildrop")
    assert session.user == "me"


def test_auth_plain_with_empty_initial_response_is_malformed():
    session, _ = new_session()
    assert talk(session, b"AUTH PLAIN =\r\n") == MALFORMED_PLAIN
    assert session.state is State.AUTHORIZATION


def test_auth_plain_without_authentication_identity_is_malformed():
    session, _ = new_session()
    assert talk(session, b"AUTH PLAIN " + b64(b"\0\0pw") + b"\r\n") == MALFORMED_PLAIN
    assert talk(session, b"AUTH PLAIN " + b64(b"no nuls") + b"\r\n") == MALFORMED_PLAIN


def test_auth_login_prompts_for_username_then_password():
    session, _ = new_session()
    assert talk(session, b"AUTH LOGIN\r\n") == b"+ " + b64(b"Username:") + b"\r\n"
    assert talk(session, b64(b"me") + b"\r\n") == b"+ " + b64(b"Password:") + b"\r\n"
    assert talk(session, b64(b"secret") + b"\r\n").startswith(b"+OK maildrop has 3 messages")
    assert session.state is State.TRANSACTION
    assert session.user == "me"


def test_auth_login_with_initial_response_prompts_only_for_password():
    session, _ = new_session()
    assert talk(session, b"AUTH LOGIN " + b64(b"me") + b"\r\n") == b"+ UGFzc3dvcmQ6\r\n"
    assert talk(session, b"c2VjcmV0\r\n").startswith(b"+OK maildrop")
    assert session.user == "me"


def test_auth_mechanism_name_is_case_insensitive():
    session, _ = new_session()
    assert talk(session, b"auth plain " + b64(b"\0me\0pw") + b"\r\n").startswith(b"+OK maildrop")


def test_star_cancels_the_auth_exchange_and_the_session_goes_on():
    session, mailbox = new_session()
    talk(session, b"AUTH LOGIN\r\n")
    assert talk(session, b"*\r\n") == b"-ERR authentication cancelled\r\n"
    assert session.state is State.AUTHORIZATION
    assert talk(session, b"USER me\r\n") == b"+OK send PASS\r\n"
    assert mailbox.opened == 0


def test_star_cancels_auth_plain_at_its_first_response():
    session, _ = new_session()
    assert talk(session, b"AUTH PLAIN\r\n*\r\n") == b"+ \r\n-ERR authentication cancelled\r\n"


def test_bad_base64_in_auth_response_is_an_error():
    session, _ = new_session()
    talk(session, b"AUTH LOGIN\r\n")
    assert talk(session, b"not base64!\r\n") == b"-ERR SASL response is not valid base64\r\n"
    assert session.state is State.AUTHORIZATION
    assert talk(session, b"NOOP\r\n") == b"+OK\r\n"  # back to commands (and logged in implicitly)


def test_bad_base64_in_initial_response_is_an_error():
    session, _ = new_session()
    assert talk(session, b"AUTH PLAIN @@@@\r\n") == b"-ERR SASL response is not valid base64\r\n"


def test_auth_without_mechanism_lists_mechanisms():
    session, _ = new_session()
    assert talk(session, b"AUTH\r\n") == b"+OK SASL mechanisms follow\r\nPLAIN\r\nLOGIN\r\n.\r\n"
    assert session.state is State.AUTHORIZATION


def test_auth_with_unknown_mechanism_is_an_error():
    session, _ = new_session()
    reply = talk(session, b"AUTH CRAM-MD5\r\n")
    assert reply == b"-ERR unsupported SASL mechanism; use PLAIN or LOGIN\r\n"
    assert talk(session, b"NOOP\r\n") == b"+OK\r\n"


def test_sasl_response_may_be_longer_than_a_command_line():
    session, _ = new_session()
    talk(session, b"AUTH PLAIN\r\n")
    response = b64(b"\0me\0" + b"p" * 600)
    assert len(response) > MAX_COMMAND_LINE
    assert talk(session, response + b"\r\n").startswith(b"+OK maildrop")


# --- The open maildrop -------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [b"STAT", b"LIST", b"RETR 1", b"DELE 1", b"RSET", b"NOOP", b"TOP 1 0", b"UIDL"]
)
def test_mailbox_command_before_login_logs_in_implicitly(command):
    session, mailbox = new_session()
    events = session.receive(command + b"\r\n")
    assert session.state is State.TRANSACTION
    assert mailbox.opened == 1
    first = events[0].data if isinstance(events[0], Send) else events[0].ok_reply
    assert first.startswith(b"+OK")


@pytest.mark.parametrize("command", [b"USER me", b"PASS x", b"APOP me d", b"AUTH PLAIN AG1lAHB3"])
def test_login_commands_after_login_are_refused_and_session_goes_on(command):
    session, mailbox = logged_in()
    assert talk(session, command + b"\r\n") == b"-ERR already logged in\r\n"
    assert talk(session, b"STAT\r\n") == STAT_ALL
    assert mailbox.opened == 1


def test_snapshot_is_taken_once_per_session():
    session, mailbox = new_session()
    talk(session, b"STAT\r\nLIST\r\nUIDL\r\nRSET\r\n")
    mailbox.messages.append(msg("late", b"x\r\n"))
    assert talk(session, b"STAT\r\n") == STAT_ALL
    assert mailbox.opened == 1


def test_quit_before_login_says_goodbye_without_update():
    session, mailbox = new_session()
    goodbye = Send(b"+OK BareMail POP3 server signing off\r\n")
    assert session.receive(b"QUIT\r\n") == [goodbye, Close()]
    assert session.closed
    assert mailbox.opened == 0


# --- TRANSACTION -------------------------------------------------------------------


def test_stat_counts_messages_and_octets():
    session, _ = logged_in()
    assert talk(session, b"STAT\r\n") == STAT_ALL


def test_stat_of_empty_maildrop_is_zero():
    session, _ = logged_in(())
    assert talk(session, b"STAT\r\n") == b"+OK 0 0\r\n"


def test_stat_excludes_deleted_messages():
    session, _ = logged_in()
    talk(session, b"DELE 2\r\n")
    assert talk(session, b"STAT\r\n") == b"+OK 2 %d\r\n" % (ONE.size + THREE.size)


def test_list_without_argument_lists_every_message():
    session, _ = logged_in()
    assert talk(session, b"LIST\r\n") == (
        b"+OK 3 messages (%d octets)\r\n1 %d\r\n2 %d\r\n3 %d\r\n.\r\n"
        % (TOTAL, ONE.size, TWO.size, THREE.size)
    )


def test_list_of_empty_maildrop_is_an_empty_listing():
    session, _ = logged_in(())
    assert talk(session, b"LIST\r\n") == b"+OK 0 messages (0 octets)\r\n.\r\n"


def test_list_with_number_gives_one_line():
    session, _ = logged_in()
    assert talk(session, b"LIST 2\r\n") == b"+OK 2 %d\r\n" % TWO.size


def test_list_excludes_deleted_messages_but_keeps_numbers():
    session, _ = logged_in()
    talk(session, b"DELE 1\r\n")
    assert talk(session, b"LIST\r\n") == (
        b"+OK 2 messages (%d octets)\r\n2 %d\r\n3 %d\r\n.\r\n"
        % (TWO.size + THREE.size, TWO.size, THREE.size)
    )


def test_list_of_deleted_message_is_an_error():
    session, _ = logged_in()
    talk(session, b"DELE 3\r\n")
    assert talk(session, b"LIST 3\r\n") == b"-ERR message 3 already deleted\r\n"


def test_list_with_two_arguments_is_a_syntax_error():
    session, _ = logged_in()
    assert talk(session, b"LIST 1 2\r\n") == b"-ERR syntax: LIST [msg]\r\n"


def test_message_numbers_start_at_one():
    session, _ = logged_in()
    assert talk(session, b"LIST 0\r\n") == NO_SUCH_MESSAGE
    assert talk(session, b"LIST 1\r\n") == b"+OK 1 %d\r\n" % ONE.size


@pytest.mark.parametrize("command", [b"LIST", b"RETR", b"DELE", b"UIDL", b"TOP"])
def test_out_of_range_message_number_is_an_error(command):
    session, _ = logged_in()
    suffix = b" 0" if command == b"TOP" else b""
    assert talk(session, command + b" 4" + suffix + b"\r\n") == NO_SUCH_MESSAGE
    assert not session.busy


@pytest.mark.parametrize("number", [b"x", b"-1", b"+1", b"1.0", b"0x1", b"\xd9\xa1", b"1" * 21])
def test_nonnumeric_message_number_is_an_error(number):
    session, _ = logged_in()
    assert talk(session, b"RETR " + number + b"\r\n") == BAD_NUMBER
    assert not session.busy


def test_huge_message_number_is_out_of_range():
    session, _ = logged_in()
    assert talk(session, b"DELE 99999999999999999999\r\n").startswith(b"-ERR no such message")


def test_retr_emits_retrieve_with_size_reply_and_stops():
    session, _ = logged_in()
    events = session.receive(b"RETR 2\r\n")
    assert events == [
        Retrieve(
            message=TWO,
            lines=None,
            ok_reply=b"+OK %d octets\r\n" % TWO.size,
            number=2,
        )
    ]
    assert events[0].missing_reply == b"-ERR message 2 was removed by another session\r\n"
    assert session.busy


def test_retr_of_deleted_message_is_an_error():
    session, _ = logged_in()
    talk(session, b"DELE 1\r\n")
    assert talk(session, b"RETR 1\r\n") == b"-ERR message 1 already deleted\r\n"


def test_retr_sends_the_message_byte_stuffed():
    session, _ = logged_in()
    output, _ = perform(session, session.receive(b"RETR 2\r\n"))
    assert output == b"+OK %d octets\r\nSubject: two\r\n\r\n..dot line\r\nplain\r\n.\r\n" % TWO.size


def test_retrieved_message_counts_only_full_retrievals():
    session, _ = logged_in()
    events = session.receive(b"RETR 1\r\nTOP 2 0\r\nRETR 3\r\nRETR 2\r\n")
    perform(session, events, gone={THREE.key})
    assert session.retrieved_count == 2
    assert session.retrieved_octets == ONE.size + TWO.size


def test_vanished_message_gets_missing_reply_and_session_goes_on():
    session, _ = logged_in()
    output, _ = perform(session, session.receive(b"RETR 1\r\nNOOP\r\n"), gone={ONE.key})
    assert output == b"-ERR message 1 was removed by another session\r\n+OK\r\n"
    assert session.retrieved_count == 0


def test_retrieved_without_outstanding_retrieve_is_a_programming_error():
    session, _ = logged_in()
    with pytest.raises(RuntimeError):
        session.retrieved(True)


def test_dele_marks_message_deleted():
    session, _ = logged_in()
    assert talk(session, b"DELE 2\r\n") == b"+OK message 2 deleted\r\n"


def test_dele_of_deleted_message_is_an_error():
    session, _ = logged_in()
    talk(session, b"DELE 2\r\n")
    assert talk(session, b"DELE 2\r\n") == b"-ERR message 2 already deleted\r\n"


def test_dele_without_number_is_a_syntax_error():
    session, _ = logged_in()
    assert talk(session, b"DELE\r\n") == b"-ERR syntax: DELE msg\r\n"


def test_rset_unmarks_deleted_messages():
    session, _ = logged_in()
    talk(session, b"DELE 1\r\nDELE 3\r\n")
    assert talk(session, b"RSET\r\n") == LOGGED_IN
    assert talk(session, b"STAT\r\n") == STAT_ALL
    assert perform(session, session.receive(b"QUIT\r\n"))[1][0] == Update(())


def test_noop_replies_ok():
    session, _ = logged_in()
    assert talk(session, b"NOOP\r\n") == b"+OK\r\n"


def test_noop_with_argument_is_a_syntax_error():
    session, _ = logged_in()
    assert talk(session, b"NOOP now\r\n") == b"-ERR syntax: NOOP\r\n"


def test_top_emits_retrieve_with_line_count():
    session, _ = logged_in()
    [event] = session.receive(b"TOP 2 1\r\n")
    assert event == Retrieve(
        message=TWO,
        lines=1,
        ok_reply=b"+OK top of message follows\r\n",
        number=2,
    )
    assert event.missing_reply == b"-ERR message 2 was removed by another session\r\n"


def test_top_sends_headers_blank_line_and_requested_body_lines():
    session, _ = logged_in()
    output, _ = perform(session, session.receive(b"TOP 2 1\r\n"))
    assert output == b"+OK top of message follows\r\nSubject: two\r\n\r\n..dot line\r\n.\r\n"


def test_top_with_nonnumeric_line_count_is_an_error():
    session, _ = logged_in()
    assert talk(session, b"TOP 1 -1\r\n") == b"-ERR line count must be a non-negative integer\r\n"
    assert not session.busy


def test_top_without_line_count_is_a_syntax_error():
    session, _ = logged_in()
    assert talk(session, b"TOP 1\r\n") == b"-ERR syntax: TOP msg n\r\n"


def test_uidl_lists_keys_as_unique_ids():
    session, _ = logged_in()
    assert talk(session, b"UIDL\r\n") == (
        b"+OK unique-id listing follows\r\n1 %s\r\n2 %s\r\n3 %s\r\n.\r\n"
        % (ONE.key.encode(), TWO.key.encode(), THREE.key.encode())
    )


def test_uidl_with_number_gives_one_line():
    session, _ = logged_in()
    assert talk(session, b"UIDL 3\r\n") == b"+OK 3 %s\r\n" % THREE.key.encode()


def test_uidl_excludes_deleted_messages():
    session, _ = logged_in()
    talk(session, b"DELE 2\r\n")
    assert talk(session, b"UIDL\r\n") == (
        b"+OK unique-id listing follows\r\n1 %s\r\n3 %s\r\n.\r\n"
        % (ONE.key.encode(), THREE.key.encode())
    )
    assert talk(session, b"UIDL 2\r\n") == b"-ERR message 2 already deleted\r\n"


def test_unique_id_is_the_key_when_it_fits_rfc_1939():
    key = "1732480000.M123456P4242Q1R8f3a2c1d.hostname,S=2048,W=2101"
    assert unique_id(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "1732480000.M123456P4242Q1R8f3a2c1d.a-rather-long-host-name.example.org,S=2048,W=2101",
        "with space",
        "caf\u00e9",
        "bad\udcffbyte",
        "",
    ],
)
def test_unique_id_of_unfit_key_is_a_stable_digest(key):
    uid = unique_id(key)
    assert re.fullmatch(r"[0-9a-f]{40}", uid)
    assert unique_id(key) == uid
    assert unique_id(key + "x") != uid


def test_quit_in_transaction_emits_update_then_goodbye_and_close():
    session, _ = logged_in()
    talk(session, b"DELE 3\r\nDELE 1\r\n")
    assert session.receive(b"QUIT\r\n") == [
        Update((ONE, THREE)),
        Send(b"+OK BareMail POP3 server signing off (2 messages deleted)\r\n"),
        Close(),
    ]
    assert session.state is State.UPDATE
    assert session.closed
    assert session.deleted_count == 2


def test_quit_without_deletions_emits_empty_update():
    session, _ = logged_in()
    assert session.receive(b"QUIT\r\n") == [
        Update(()),
        Send(b"+OK BareMail POP3 server signing off (0 messages deleted)\r\n"),
        Close(),
    ]
    assert session.deleted_count == 0


# --- CAPA ----------------------------------------------------------------------------

CAPABILITIES = (
    b"+OK capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nSASL PLAIN LOGIN\r\nRESP-CODES\r\n"
    b"PIPELINING\r\nEXPIRE NEVER\r\nLOGIN-DELAY 0\r\nIMPLEMENTATION BareMail\r\n.\r\n"
)


def test_capa_before_login_lists_capabilities_without_logging_in():
    session, mailbox = new_session()
    assert talk(session, b"CAPA\r\n") == CAPABILITIES
    assert session.state is State.AUTHORIZATION
    assert mailbox.opened == 0


def test_capa_after_login_lists_the_same_capabilities():
    session, _ = logged_in()
    assert talk(session, b"CAPA\r\n") == CAPABILITIES


# --- Command lines -------------------------------------------------------------------


def test_commands_are_case_insensitive():
    session, _ = new_session()
    assert talk(session, b"user me\r\nPaSs x\r\nstat\r\n").endswith(STAT_ALL)


def test_bare_lf_ends_a_command():
    session, _ = new_session()
    assert talk(session, b"NOOP\nSTAT\n") == b"+OK\r\n" + STAT_ALL


def test_command_split_across_receives_is_answered_once_complete():
    session, _ = new_session()
    assert talk(session, b"ST") == b""
    assert talk(session, b"AT\r") == b""
    assert talk(session, b"\n") == STAT_ALL


def test_unknown_command_is_an_error_and_session_goes_on():
    session, _ = logged_in()
    assert talk(session, b"LAST\r\nSTAT\r\n") == b"-ERR unknown command\r\n" + STAT_ALL


def test_empty_line_is_an_unknown_command():
    session, _ = new_session()
    assert talk(session, b"\r\n") == b"-ERR unknown command\r\n"


def test_tab_separated_command_is_not_recognised():
    session, _ = logged_in()
    assert talk(session, b"LIST\t1\r\n") == b"-ERR unknown command\r\n"


def test_command_line_of_255_octets_is_accepted():
    session, _ = new_session()
    line = b"USER " + b"u" * (MAX_COMMAND_LINE - 7) + b"\r\n"
    assert len(line) == MAX_COMMAND_LINE
    assert talk(session, line) == b"+OK send PASS\r\n"


def test_command_line_over_255_octets_is_an_error_and_session_goes_on():
    session, _ = new_session()
    line = b"USER " + b"u" * (MAX_COMMAND_LINE - 6) + b"\r\n"
    assert len(line) == MAX_COMMAND_LINE + 1
    assert talk(session, line + b"NOOP\r\n") == TOO_LONG + b"+OK\r\n"


def test_megabyte_line_without_newline_keeps_the_buffer_bounded():
    session, _ = new_session()
    for _ in range(16):
        assert talk(session, b"A" * 65536) == b""
        assert session.pending_input < MAX_COMMAND_LINE
    assert talk(session, b"A\r\nNOOP\r\n") == TOO_LONG + b"+OK\r\n"
    assert session.pending_input == 0


def test_over_long_line_split_across_receives_gets_one_error():
    session, _ = new_session()
    assert talk(session, b"X" * 200) == b""
    assert talk(session, b"X" * 200) == b""
    assert talk(session, b"X" * 10 + b"\r\n") == TOO_LONG


def test_nul_and_8bit_bytes_in_commands_are_errors_not_exceptions():
    session, _ = logged_in()
    reply = talk(session, b"\x00\r\nST\xc1T\r\nRETR \xff\r\nLIST 1\x00\r\n\xff\xfe\r\n")
    assert reply == (
        b"-ERR unknown command\r\n-ERR unknown command\r\n"
        + BAD_NUMBER + BAD_NUMBER + b"-ERR unknown command\r\n"
    )


def test_8bit_user_name_is_kept_for_logs():
    session, _ = new_session()
    assert talk(session, b"USER j\xc3\xb6rg\xff\r\n") == b"+OK send PASS\r\n"
    assert session.user == "j\u00f6rg\ufffd"


# --- Pipelining ----------------------------------------------------------------------


def test_pipelined_commands_are_answered_in_order_in_one_send():
    session, _ = new_session()
    events = session.receive(b"USER me\r\nPASS x\r\nSTAT\r\nLIST 1\r\nNOOP\r\n")
    assert events == [
        Send(
            b"+OK send PASS\r\n" + LOGGED_IN + STAT_ALL + b"+OK 1 %d\r\n+OK\r\n" % ONE.size
        )
    ]


def test_input_after_retrieve_waits_for_retrieved():
    session, _ = logged_in()
    events = session.receive(b"NOOP\r\nRETR 1\r\nSTAT\r\n")
    assert events[0] == Send(b"+OK\r\n")
    assert isinstance(events[1], Retrieve) and len(events) == 2
    assert session.receive(b"NOOP\r\n") == []
    assert session.retrieved(True) == [Send(STAT_ALL + b"+OK\r\n")]
    assert not session.busy


def test_pipelined_retrievals_stream_in_order():
    session, _ = logged_in()
    events = session.receive(b"RETR 1\r\nTOP 3 0\r\nRETR 2\r\nDELE 1\r\nQUIT\r\n")
    output, others = perform(session, events)
    assert output == (
        b"+OK %d octets\r\nSubject: one\r\n\r\nfirst body\r\n.\r\n" % ONE.size
        + b"+OK top of message follows\r\nSubject: three\r\n\r\n.\r\n"
        + b"+OK %d octets\r\nSubject: two\r\n\r\n..dot line\r\nplain\r\n.\r\n" % TWO.size
        + b"+OK message 1 deleted\r\n"
        + b"+OK BareMail POP3 server signing off (1 messages deleted)\r\n"
    )
    assert [type(e) for e in others] == [Retrieve, Retrieve, Retrieve, Update, Close]


def test_too_much_input_while_busy_closes_the_session():
    session, _ = logged_in()
    session.receive(b"RETR 1\r\n")
    for _ in range(MAX_PENDING_INPUT // 65536 + 2):
        assert session.receive(b"NOOP\r\n" * 10922) == []
    assert session.pending_input <= MAX_PENDING_INPUT
    overflow = Send(b"-ERR too much pipelined input; closing connection\r\n")
    assert session.retrieved(True) == [overflow, Close()]
    assert session.closed


# --- Timeout, shutdown, close -----------------------------------------------------------


def test_timeout_sends_autologout_and_closes_without_update():
    session, _ = logged_in()
    talk(session, b"DELE 1\r\n")
    assert session.timeout() == [Send(b"-ERR autologout; idle for too long\r\n"), Close()]
    assert session.closed
    assert session.deleted_count == 0


def test_shutdown_sends_sys_temp_and_closes_without_update():
    session, _ = logged_in()
    talk(session, b"DELE 1\r\n")
    assert session.shutdown() == [Send(b"-ERR [SYS/TEMP] server shutting down\r\n"), Close()]
    assert session.closed


def test_timeout_during_retrieve_only_closes():
    session, _ = logged_in()
    session.receive(b"RETR 1\r\n")
    assert session.timeout() == [Close()]
    assert not session.busy
    assert session.retrieved(True) == []


def test_closed_session_returns_no_events():
    session, _ = new_session()
    session.receive(b"QUIT\r\n")
    assert session.receive(b"STAT\r\n") == []
    assert session.timeout() == []
    assert session.shutdown() == []
    assert session.retrieved(True) == []


def test_commands_pipelined_after_quit_are_ignored():
    session, mailbox = new_session()
    events = session.receive(b"QUIT\r\nSTAT\r\nRETR 1\r\n")
    assert events == [Send(b"+OK BareMail POP3 server signing off\r\n"), Close()]
    assert mailbox.opened == 0


# --- Against the standard library's client -------------------------------------------------


class Loopback:
    """A socket stand-in: what poplib sends goes to the session, whose
    performed replies come back through makefile()."""

    def __init__(self, session):
        self.session = session
        self.incoming = io.BytesIO()
        self._append(session.start())

    def _append(self, events):
        output, _ = perform(self.session, events)
        position = self.incoming.tell()
        self.incoming.seek(0, io.SEEK_END)
        self.incoming.write(output)
        self.incoming.seek(position)

    def sendall(self, data):
        self._append(self.session.receive(data))

    def makefile(self, mode):
        return self.incoming

    def shutdown(self, how):
        pass

    def close(self):
        pass


class LoopbackPOP3(poplib.POP3):
    def __init__(self, session):
        self._session = session
        super().__init__("loopback")

    def _create_socket(self, timeout):
        return Loopback(self._session)


def test_stdlib_poplib_client_reads_what_the_session_sends():
    dotted = msg("k4", b"Subject: dots\r\n\r\n.\r\n..\r\n.x\r\nend")
    session, _ = new_session((ONE, TWO, dotted))
    client = LoopbackPOP3(session)
    assert client.capa()["SASL"] == ["PLAIN", "LOGIN"]
    client.user("me")
    client.pass_("pw")
    assert client.stat() == (3, ONE.size + TWO.size + dotted.size)
    assert client.retr(3)[1] == [b"Subject: dots", b"", b".", b"..", b".x", b"end"]
    assert client.top(2, 0)[1] == [b"Subject: two", b""]
    assert client.uidl()[1] == [b"1 " + ONE.key.encode(), b"2 " + TWO.key.encode(), b"3 k4"]
    client.dele(1)
    assert client.quit() == b"+OK BareMail POP3 server signing off (1 messages deleted)"


# --- MultilineEncoder ---------------------------------------------------------------------


def encode(message, lines=None, chunks=None):
    encoder = MultilineEncoder(lines)
    if chunks is None:
        chunks = [message]
    return b"".join(encoder.feed(c) for c in chunks) + encoder.finish()


def split_at(message, *positions):
    bounds = [0, *positions, len(message)]
    return [message[a:b] for a, b in zip(bounds, bounds[1:])]


def unstuff(reply):
    """A strict client's reading of a multi-line body: the lines before the
    terminating ".", with one leading "." removed from each."""
    assert reply.endswith(b"\r\n.\r\n") or reply == b".\r\n"
    lines = reply.split(b"\r\n")
    assert lines[-2:] == [b".", b""]
    body = lines[:-2]
    assert b"." not in body, "premature terminator"
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in body)


def reference_top(message, n):
    """TOP by the book: lines end at CRLF (the wire form has no bare LF)."""
    parts = message.split(b"\r\n")
    lines = [part + b"\r\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    for index, line in enumerate(lines):
        if line == b"\r\n":
            return b"".join(lines[: index + 1 + n])
    return message


def test_encoder_passes_a_plain_message_through_and_terminates_it():
    assert encode(b"Subject: x\r\n\r\nhello\r\n") == b"Subject: x\r\n\r\nhello\r\n.\r\n"


def test_encoder_stuffs_a_dot_at_the_start_of_the_message():
    assert encode(b".starts\r\nwith a dot\r\n") == b"..starts\r\nwith a dot\r\n.\r\n"


def test_encoder_stuffs_every_line_that_starts_with_a_dot():
    message = b"a\r\n.\r\n..\r\n.b\r\nc.d\r\n"
    assert encode(message) == b"a\r\n..\r\n...\r\n..b\r\nc.d\r\n.\r\n"


DOTTED = b".a\r\n.\r\nb\r\n\r\n..\r\nc.\r\n.d\r\n\r\n."


def test_encoder_output_is_the_same_for_every_split_position():
    whole = encode(DOTTED)
    for position in range(len(DOTTED) + 1):
        assert encode(DOTTED, chunks=split_at(DOTTED, position)) == whole, position


def test_encoder_output_is_the_same_for_every_pair_of_split_positions():
    whole = encode(DOTTED)
    for first in range(len(DOTTED) + 1):
        for second in range(first, len(DOTTED) + 1):
            assert encode(DOTTED, chunks=split_at(DOTTED, first, second)) == whole


def test_encoder_fed_byte_by_byte_matches_whole_message():
    chunks = [DOTTED[i : i + 1] for i in range(len(DOTTED))]
    assert encode(DOTTED, chunks=chunks) == encode(DOTTED)
    assert unstuff(encode(DOTTED)) == DOTTED + b"\r\n"


def test_encoder_adds_crlf_when_the_message_does_not_end_with_one():
    assert encode(b"Subject: x\r\n\r\nno newline") == b"Subject: x\r\n\r\nno newline\r\n.\r\n"
    assert encode(b"ends in cr\r") == b"ends in cr\r\r\n.\r\n"


def test_encoder_stuffs_a_final_dot_line_without_crlf():
    assert encode(b"a\r\n.") == b"a\r\n..\r\n.\r\n"


def test_encoder_of_empty_message_is_only_the_terminator():
    assert encode(b"") == b".\r\n"
    assert encode(b"", chunks=[b"", b""]) == b".\r\n"


def test_encoder_keeps_8bit_and_nul_content():
    message = b"Subject: \xe2\x82\xac\r\n\r\n\x00\xff\r\n.\xc3\xa9\r\n"
    assert encode(message) == b"Subject: \xe2\x82\xac\r\n\r\n\x00\xff\r\n..\xc3\xa9\r\n.\r\n"


def test_encoder_stuffs_a_dot_after_a_stray_bare_lf():
    assert encode(b"a\n.\r\n") == b"a\n..\r\n.\r\n"


def test_encoder_handles_many_large_chunks():
    chunk = (b"line\r\n.dot\r\n" * 21846)[: 256 * 1024]
    output = encode(b"", chunks=[chunk] * 16)
    assert output == encode(chunk * 16)
    assert output.count(b"\r\n..dot") == (chunk * 16).count(b"\r\n.dot")


def test_top_zero_sends_headers_and_the_blank_line():
    message = b"From: a\r\nSubject: b\r\n\r\nbody 1\r\nbody 2\r\n"
    encoder = MultilineEncoder(0)
    assert encoder.feed(message) == b"From: a\r\nSubject: b\r\n\r\n"
    assert encoder.done
    assert encoder.finish() == b".\r\n"


def test_top_n_sends_n_body_lines_and_is_then_done():
    message = b"S: x\r\n\r\n1\r\n.2\r\n3\r\n4\r\n"
    encoder = MultilineEncoder(2)
    assert encoder.feed(message[:9]) == b"S: x\r\n\r\n1"
    assert not encoder.done
    assert encoder.feed(message[9:]) == b"\r\n..2\r\n"
    assert encoder.done
    assert encoder.feed(b"more\r\n") == b""
    assert encoder.finish() == b".\r\n"


def test_top_with_more_lines_than_exist_sends_the_whole_message():
    message = b"S: x\r\n\r\n1\r\n2\r\n"
    assert encode(message, lines=10) == message + b".\r\n"
    assert encode(b"S: x\r\n\r\n1\r\nlast", lines=10) == b"S: x\r\n\r\n1\r\nlast\r\n.\r\n"


def test_top_of_message_without_blank_line_sends_all_headers():
    assert encode(b"S: x\r\nT: y\r\n", lines=0) == b"S: x\r\nT: y\r\n.\r\n"


def test_top_of_message_starting_with_a_blank_line_has_empty_headers():
    assert encode(b"\r\nbody 1\r\nbody 2\r\n", lines=1) == b"\r\nbody 1\r\n.\r\n"
    assert encode(b"\r\n.body\r\n", lines=0) == b"\r\n.\r\n"


def test_top_finds_the_blank_line_at_every_split_position():
    message = b".S: x\r\nT: y\r\n\r\n.1\r\n2\r\n3\r\n"
    for lines in (0, 1, 2, 5):
        expected = encode(message, lines=lines)
        assert unstuff(expected) == reference_top(message, lines)
        for first in range(len(message) + 1):
            for second in range(first, len(message) + 1):
                assert encode(message, lines, split_at(message, first, second)) == expected


def test_top_rejects_a_negative_line_count():
    with pytest.raises(ValueError):
        MultilineEncoder(-1)


def test_retr_encoder_is_never_done():
    encoder = MultilineEncoder()
    encoder.feed(b"S: x\r\n\r\nbody\r\n")
    assert not encoder.done


# Pieces of a CRLF wire form (no bare LF), weighted towards dots and line ends.
WIRE_PIECES = [b".", b"\r\n", b"a", b"\r", b"\xff", b"\r\n\r\n", b"\r\n."]
wire_bytes = st.lists(st.sampled_from(WIRE_PIECES), max_size=40).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(message=wire_bytes, cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_encoder_output_unstuffs_to_the_message_for_any_chunking(message, cuts):
    chunks = split_at(message, *sorted(min(c, len(message)) for c in cuts))
    output = encode(message, chunks=chunks)
    assert output == encode(message)
    expected = message if not message or message.endswith(b"\r\n") else message + b"\r\n"
    # A strict client splits at CRLF only; a bare CR inside a line is content.
    assert unstuff(output) == expected


@settings(max_examples=300, deadline=None)
@given(
    message=wire_bytes,
    lines=st.integers(min_value=0, max_value=6),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6),
)
def test_top_output_unstuffs_to_headers_and_first_body_lines(message, lines, cuts):
    chunks = split_at(message, *sorted(min(c, len(message)) for c in cuts))
    output = encode(message, lines, chunks)
    top = reference_top(message, lines)
    expected = top if not top or top.endswith(b"\r\n") else top + b"\r\n"
    assert unstuff(output) == expected


# --- Property: random sessions -----------------------------------------------------------

COMMANDS = [
    b"USER me", b"PASS pw", b"PASS", b"APOP me 0123", b"AUTH", b"AUTH PLAIN", b"AUTH LOGIN",
    b"AUTH PLAIN AG1lAHB3", b"AUTH LOGIN bWU=", b"AUTH XOAUTH2", b"bWU=", b"*", b"!!",
    b"STAT", b"LIST", b"LIST 1", b"LIST 9", b"RETR 1", b"RETR 2", b"RETR x", b"DELE 1", b"DELE 3",
    b"RSET", b"NOOP", b"TOP 1 0", b"TOP 2 5", b"TOP 1 x", b"UIDL", b"UIDL 2", b"CAPA", b"QUIT",
    b"stat", b"list 0", b"", b"\x00", b"\xff\xfe", b"X" * 300, b"LAST",
]

STATUS_OR_CONTENT = re.compile(
    rb"(\+OK|-ERR)( [\x20-\x7e]*)?"  # status line
    rb"|\+ [A-Za-z0-9+/=]*"  # SASL challenge
    rb"|[0-9]+ [0-9]+|[0-9]+ [\x21-\x7e]{1,70}"  # LIST, UIDL
    rb"|[A-Z][A-Z0-9-]*( [A-Za-z0-9]+)*"  # CAPA, AUTH mechanisms
    rb"|\."  # multi-line terminator
)


@settings(max_examples=200, deadline=None)
@given(
    script=st.lists(
        st.one_of(st.sampled_from(COMMANDS), st.binary(max_size=12)), max_size=25
    ),
    endings=st.sampled_from([b"\r\n", b"\n"]),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
    gone=st.sets(st.sampled_from([ONE.key, TWO.key, THREE.key])),
)
def test_random_chunked_sessions_never_raise_and_reply_well_formed(script, endings, cuts, gone):
    data = b"".join(command + endings for command in script)
    session, mailbox = new_session()
    output = bytearray()
    for chunk in split_at(data, *sorted(min(c, len(data)) for c in cuts)):
        events = session.receive(chunk)
        for event in events:
            if isinstance(event, Retrieve):
                assert event.ok_reply.startswith(b"+OK ")
                assert event.missing_reply.startswith(b"-ERR ")
            if isinstance(event, Send):
                output += event.data
        while session.busy:  # the runtime completes each Retrieve
            for event in session.retrieved(not gone):
                if isinstance(event, Send):
                    output += event.data
                assert not isinstance(event, Retrieve) or session.busy
        assert session.pending_input <= 4096
    assert mailbox.opened <= 1
    assert output.endswith(b"\r\n") or not output
    for line in bytes(output).split(b"\r\n")[:-1]:
        assert len(line) + 2 <= 512  # RFC 2449 section 4: responses up to 512 octets
        assert STATUS_OR_CONTENT.fullmatch(line), line


# stuff_message: the whole-message shortcut the runtime takes for small messages

from hypothesis import given, strategies as st  # noqa: E402

from baremail.pop3 import stuff_message  # noqa: E402


@given(st.lists(st.sampled_from([b".", b"\r\n", b"\n", b"\r", b"x", b".."]), max_size=12).map(b"".join))
def test_stuff_message_is_the_encoder_in_one_go(wire):
    encoder = MultilineEncoder()
    assert stuff_message(wire) == encoder.feed(wire) + encoder.finish()
