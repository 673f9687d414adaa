"""The SMTP engine, driven with bytes: no sockets, no files."""

import base64
import re
import time
from email.utils import parsedate_to_datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baremail.smtp import (
    AbortMessage, Close, EndMessage, Envelope, MessageData, Send,
    SMTPSession, StartMessage, scan_data,
)

HOST = "mx.test"
NOW = 1_732_480_000.0


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def new_session(**kwargs) -> SMTPSession:
    session = SMTPSession(HOST, peer="127.0.0.1", clock=lambda: NOW, **kwargs)
    session.start()
    return session


def greeted(**kwargs) -> SMTPSession:
    session = new_session(**kwargs)
    session.receive(b"EHLO client.test\r\n")
    return session


def in_transaction(**kwargs) -> SMTPSession:
    """EHLO, MAIL and one RCPT done: the next command may be DATA."""
    session = greeted(**kwargs)
    session.receive(b"MAIL FROM:<sender@client.test>\r\nRCPT TO:<root>\r\n")
    return session


def in_data(**kwargs) -> SMTPSession:
    session = in_transaction(**kwargs)
    session.receive(b"DATA\r\n")
    assert session.in_data
    return session


def sent(events) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Send))


def lines(events) -> list[str]:
    """The reply lines sent, without CRLF."""
    data = sent(events)
    assert data == b"" or data.endswith(b"\r\n")
    return [line.decode("utf-8", "surrogateescape")
            for line in data.split(b"\r\n")[:-1]]


def reply(session: SMTPSession, command: bytes) -> str:
    """The single reply line a command gets."""
    (line,) = lines(session.receive(command))
    return line


def content(events) -> bytes:
    """Message octets, trace headers excluded (they come with StartMessage)."""
    out, after_start = [], False
    for event in events:
        if isinstance(event, StartMessage):
            after_start = True
        elif isinstance(event, MessageData):
            if after_start:
                after_start = False   # the trace headers
            else:
                out.append(event.data)
    return b"".join(out)


def count(events, kind) -> int:
    return sum(isinstance(e, kind) for e in events)


def envelope_of(events) -> Envelope:
    (start,) = [e for e in events if isinstance(e, StartMessage)]
    return start.envelope


def trace_of(events) -> bytes:
    for i, event in enumerate(events):
        if isinstance(event, StartMessage):
            return events[i + 1].data
    raise AssertionError("no StartMessage")


# --- greeting, EHLO, HELO ------------------------------------------------

def test_start_sends_greeting_without_enhanced_code():
    session = SMTPSession(HOST)
    assert session.start() == [Send(b"220 mx.test ESMTP BareMail\r\n")]


def test_ehlo_advertises_extensions():
    session = new_session(max_message_size=1000)
    assert session.receive(b"EHLO client.test\r\n") == [Send(
        b"250-mx.test Hello client.test\r\n"
        b"250-PIPELINING\r\n"
        b"250-SIZE 1000\r\n"
        b"250-8BITMIME\r\n"
        b"250-SMTPUTF8\r\n"
        b"250-ENHANCEDSTATUSCODES\r\n"
        b"250 AUTH PLAIN LOGIN\r\n")]


def test_helo_replies_one_line_without_extensions():
    session = new_session()
    assert session.receive(b"HELO client.test\r\n") == [
        Send(b"250 mx.test Hello client.test\r\n")]


@pytest.mark.parametrize("command", [b"EHLO\r\n", b"HELO\r\n", b"EHLO   \r\n"])
def test_greeting_without_hostname_is_syntax_error(command):
    assert reply(new_session(), command).startswith("501 5.5.4 ")


@pytest.mark.parametrize("command", [b"EHLO again\r\n", b"HELO again\r\n"])
def test_greeting_again_resets_transaction(command):
    session = in_transaction()
    session.receive(command)
    assert reply(session, b"DATA\r\n").startswith("503 5.5.1 ")
    assert reply(session, b"MAIL FROM:<a@b>\r\n") == "250 2.1.0 Ok"


def test_commands_are_case_insensitive():
    session = new_session()
    events = session.receive(b"eHlo c\r\nmail from:<a@b>\r\nRcPt To:<c@d>\r\n"
                             b"data\r\n")
    assert [line[:3] for line in lines(events)][-3:] == ["250", "250", "354"]
    assert envelope_of(events).rcpt_to == ("c@d",)


# --- MAIL ------------------------------------------------------------------

def test_mail_after_ehlo_is_accepted():
    assert reply(greeted(), b"MAIL FROM:<a@b.test>\r\n") == "250 2.1.0 Ok"


def test_mail_without_greeting_is_accepted():
    session = new_session()
    events = session.receive(b"MAIL FROM:<cron@host>\r\nRCPT TO:<root>\r\n"
                             b"DATA\r\n")
    assert [line[:3] for line in lines(events)] == ["250", "250", "354"]
    assert envelope_of(events).helo == ""
    assert b"Received: from unknown (127.0.0.1)\r\n" in trace_of(events)


def test_null_sender_is_accepted():
    session = greeted()
    events = session.receive(b"MAIL FROM:<>\r\nRCPT TO:<root>\r\nDATA\r\n")
    assert envelope_of(events).mail_from == ""
    assert trace_of(events).startswith(b"Return-Path: <>\r\n")


def test_mail_parameters_are_accepted_and_recorded():
    session = greeted()
    events = session.receive(
        b"MAIL FROM:<a@b> SIZE=100 body=8bitmime SMTPUTF8 AUTH=<>\r\n"
        b"RCPT TO:<root>\r\nDATA\r\n")
    assert lines(events)[0] == "250 2.1.0 Ok"
    envelope = envelope_of(events)
    assert (envelope.body, envelope.smtputf8) == ("8BITMIME", True)


def test_body_7bit_is_recorded_and_absent_body_is_none():
    session = greeted()
    events = session.receive(b"MAIL FROM:<a@b> BODY=7BIT\r\nRCPT TO:<r>\r\n"
                             b"DATA\r\n")
    assert envelope_of(events).body == "7BIT"
    events = in_transaction().receive(b"DATA\r\n")
    assert (envelope_of(events).body, envelope_of(events).smtputf8) == (None, False)


def test_mail_size_over_limit_is_refused_at_once():
    session = greeted(max_message_size=1000)
    assert reply(session, b"MAIL FROM:<a@b> SIZE=1001\r\n") == (
        "552 5.3.4 Message size exceeds fixed maximum message size")
    assert reply(session, b"RCPT TO:<root>\r\n").startswith("503 5.5.1 ")


def test_mail_size_at_limit_is_accepted():
    session = greeted(max_message_size=1000)
    assert reply(session, b"MAIL FROM:<a@b> SIZE=1000\r\n") == "250 2.1.0 Ok"


def test_unknown_mail_parameter_is_555():
    assert reply(greeted(), b"MAIL FROM:<a@b> RET=HDRS\r\n") == (
        "555 5.5.4 Unsupported parameter RET")


@pytest.mark.parametrize("params", [b"SIZE", b"SIZE=", b"SIZE=12k",
                                    b"SIZE=\xd9\xa3", b"BODY=BINARYMIME",
                                    b"BODY", b"SMTPUTF8=yes"])
def test_bad_mail_parameter_value_is_501(params):
    assert reply(greeted(), b"MAIL FROM:<a@b> " + params + b"\r\n").startswith(
        "501 5.5.4 Bad value for parameter ")


def test_nested_mail_is_503():
    session = greeted()
    session.receive(b"MAIL FROM:<a@b>\r\n")
    assert reply(session, b"MAIL FROM:<c@d>\r\n") == (
        "503 5.5.1 Error: nested MAIL command")
    session.receive(b"RCPT TO:<root>\r\n")
    assert reply(session, b"MAIL FROM:<c@d>\r\n").startswith("503 5.5.1 ")


@pytest.mark.parametrize("command", [b"MAIL\r\n", b"MAIL TO:<a@b>\r\n",
                                     b"MAIL FROM\r\n"])
def test_mail_without_from_is_syntax_error(command):
    assert reply(greeted(), command) == "501 5.5.4 Syntax: MAIL FROM:<address>"


@pytest.mark.parametrize("path", [b"", b"<a@b", b"a@b>", b"<a b@c>",
                                  b"<a@b>x", b"<<a@b>>",
                                  b"<@route>", b'<"unclosed@b>'])
def test_malformed_sender_is_501_5_1_7(path):
    assert reply(greeted(), b"MAIL FROM:" + path + b"\r\n") == (
        "501 5.1.7 Bad sender address syntax")


@pytest.mark.parametrize("command, address", [
    (b"MAIL FROM: <a@b>", "a@b"),                  # space after the colon
    (b"MAIL FROM:a@b", "a@b"),                     # no angle brackets
    (b"MAIL FROM:<@relay.test,@r2.test:a@b>", "a@b"),   # source route
    (b'MAIL FROM:<"john doe <x>"@b>', '"john doe <x>"@b'),
])
def test_lenient_and_unusual_sender_forms_are_accepted(command, address):
    session = greeted()
    events = session.receive(command + b"\r\nRCPT TO:<root>\r\nDATA\r\n")
    assert lines(events)[0] == "250 2.1.0 Ok"
    assert envelope_of(events).mail_from == address


def test_utf8_and_8bit_addresses_survive_as_surrogateescaped_str():
    session = greeted()
    events = session.receive(
        "MAIL FROM:<jörg@exämple.test> SMTPUTF8\r\n".encode()
        + b"RCPT TO:<\xff\xfeuser@host>\r\nRCPT TO:<\xe4@x>\r\nDATA\r\n")
    assert [line[:9] for line in lines(events)] == [
        "250 2.1.0", "250 2.1.5", "250 2.1.5", "354 End d"]
    envelope = envelope_of(events)
    assert envelope.mail_from == "jörg@exämple.test"
    assert [r.encode("utf-8", "surrogateescape") for r in envelope.rcpt_to] == [
        b"\xff\xfeuser@host", b"\xe4@x"]
    trace = trace_of(events)
    assert "Return-Path: <jörg@exämple.test>\r\n".encode() in trace
    assert b"Delivered-To: \xff\xfeuser@host\r\n" in trace


# --- RCPT ----------------------------------------------------------------------

def test_rcpt_is_accepted():
    session = greeted()
    session.receive(b"MAIL FROM:<a@b>\r\n")
    assert reply(session, b"RCPT TO:<user@any.where>\r\n") == "250 2.1.5 Ok"


def test_rcpt_without_mail_is_503():
    assert reply(greeted(), b"RCPT TO:<root>\r\n") == (
        "503 5.5.1 Error: need MAIL command")


def test_rcpt_postmaster_is_accepted():
    session = greeted()
    events = session.receive(b"MAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\nDATA\r\n")
    assert lines(events)[1] == "250 2.1.5 Ok"
    assert envelope_of(events).rcpt_to == ("Postmaster",)


@pytest.mark.parametrize("command, expected", [
    (b"RCPT TO:<>", "501 5.1.3 Bad recipient address syntax"),
    (b"RCPT TO:<a@b", "501 5.1.3 Bad recipient address syntax"),
    (b"RCPT TO:", "501 5.1.3 Bad recipient address syntax"),
    (b"RCPT FROM:<a@b>", "501 5.5.4 Syntax: RCPT TO:<address>"),
    (b"RCPT", "501 5.5.4 Syntax: RCPT TO:<address>"),
    (b"RCPT TO:<a@b> NOTIFY=NEVER", "555 5.5.4 Unsupported parameter NOTIFY"),
])
def test_bad_rcpt_is_refused_and_transaction_goes_on(command, expected):
    session = greeted()
    session.receive(b"MAIL FROM:<a@b>\r\n")
    assert reply(session, command + b"\r\n") == expected
    assert reply(session, b"RCPT TO:<root>\r\n") == "250 2.1.5 Ok"


def test_too_many_recipients_is_452_4_5_3():
    session = greeted(max_recipients=2)
    events = session.receive(b"MAIL FROM:<a@b>\r\nRCPT TO:<r1>\r\nRCPT TO:<r2>\r\n"
                             b"RCPT TO:<r3>\r\nDATA\r\n")
    assert lines(events)[3] == "452 4.5.3 Too many recipients"
    assert envelope_of(events).rcpt_to == ("r1", "r2")


# --- DATA ------------------------------------------------------------------

def test_data_without_mail_is_503():
    assert reply(greeted(), b"DATA\r\n") == "503 5.5.1 Error: need MAIL command"


def test_data_without_recipients_is_554():
    session = greeted()
    session.receive(b"MAIL FROM:<a@b>\r\nRCPT TO:<>\r\n")
    assert reply(session, b"DATA\r\n") == "554 5.5.1 No valid recipients"
    assert not session.in_data


def test_data_with_argument_is_501():
    session = in_transaction()
    assert reply(session, b"DATA now\r\n") == "501 5.5.4 Syntax: DATA"
    assert not session.in_data


def test_data_replies_354_then_starts_message_with_trace_headers():
    session = in_transaction()
    events = session.receive(b"DATA\r\n")
    assert events == [
        Send(b"354 End data with <CR><LF>.<CR><LF>\r\n"),
        StartMessage(Envelope(mail_from="sender@client.test", rcpt_to=("root",),
                              helo="client.test", peer="127.0.0.1",
                              auth_user=None, body=None, smtputf8=False)),
        MessageData(trace_of(events)),
    ]
    assert session.in_data


def test_trace_headers_name_sender_recipient_and_route():
    trace = trace_of(in_transaction().receive(b"DATA\r\n"))
    assert re.fullmatch(
        rb"Return-Path: <sender@client\.test>\r\n"
        rb"Delivered-To: root\r\n"
        rb"Received: from client\.test \(127\.0\.0\.1\)\r\n"
        rb"\tby mx\.test \(BareMail\) with ESMTP\r\n"
        rb"\tfor <root>; (?P<date>[^\r\n]+)\r\n", trace)
    date = trace.rsplit(b"; ", 1)[1].strip().decode()
    assert parsedate_to_datetime(date).timestamp() == NOW


def test_received_omits_for_with_several_recipients():
    session = greeted()
    events = session.receive(b"MAIL FROM:<a@b>\r\nRCPT TO:<r1>\r\nRCPT TO:<r2>\r\n"
                             b"DATA\r\n")
    trace = trace_of(events)
    assert b"Delivered-To: r1\r\nDelivered-To: r2\r\n" in trace
    assert b"\tfor " not in trace
    assert b"with ESMTP; " in trace


@pytest.mark.parametrize("setup, keyword", [
    (b"HELO c\r\n", b"SMTP"),
    (b"EHLO c\r\n", b"ESMTP"),
    (b"EHLO c\r\nAUTH PLAIN " + b64(b"\0joe\0pw") + b"\r\n", b"ESMTPA"),
    (b"", b"SMTP"),
])
def test_received_protocol_keyword_follows_rfc_3848(setup, keyword):
    session = new_session()
    events = session.receive(setup + b"MAIL FROM:<a@b>\r\nRCPT TO:<r>\r\nDATA\r\n")
    assert b") with " + keyword + b"\r\n" in trace_of(events)


def test_message_content_keeps_crlf_and_ends_with_the_crlf_before_the_dot():
    session = in_data()
    events = session.receive(b"Subject: hi\r\n\r\nline 1\r\nline 2\r\n.\r\n")
    assert content(events) == b"Subject: hi\r\n\r\nline 1\r\nline 2\r\n"
    assert isinstance(events[-1], EndMessage)


def test_empty_message_right_after_data():
    session = in_transaction()
    events = session.receive(b"DATA\r\n.\r\n")
    assert count(events, MessageData) == 1   # the trace headers only
    assert content(events) == b""
    assert isinstance(events[-1], EndMessage)


def test_empty_message_with_dot_in_a_later_read():
    session = in_data()
    assert session.receive(b".") == []
    assert session.receive(b"\r") == []
    assert session.receive(b"\n") == [EndMessage()]


def test_dot_stuffed_lines_lose_one_dot():
    session = in_data()
    events = session.receive(b"..first\r\n..\r\n...\r\nmid..dle\r\n..last\r\n.\r\n")
    assert content(events) == b".first\r\n.\r\n..\r\nmid..dle\r\n.last\r\n"


def test_line_with_a_single_leading_dot_loses_it():
    # RFC 5321 4.5.2: "If the first character is a period and there are
    # other characters on the line, the first character is deleted."
    session = in_data()
    events = session.receive(b".hidden\r\nx\r\n. space\r\n.\r\n")
    assert content(events) == b"hidden\r\nx\r\n space\r\n"


WIRE = (b"DATA\r\nSubject: split\r\n\r\n..stuffed\r\nbody\r\n.\r\n"
        b"QUIT\r\n")
WIRE_CONTENT = b"Subject: split\r\n\r\n.stuffed\r\nbody\r\n"


def run_chunks(session: SMTPSession, chunks) -> list:
    events = []
    for chunk in chunks:
        events += session.receive(chunk)
    return events


@pytest.mark.parametrize("split", range(1, len(WIRE)))
def test_end_of_data_is_found_at_every_split_position(split):
    session = in_transaction()
    events = run_chunks(session, [WIRE[:split], WIRE[split:]])
    assert content(events) == WIRE_CONTENT
    assert count(events, EndMessage) == 1 and isinstance(events[-1], EndMessage)
    assert lines(session.message_stored("k")) == [
        "250 2.0.0 Ok: queued as k", "221 2.0.0 mx.test Bye"]


def test_end_of_data_is_found_when_fed_one_byte_at_a_time():
    session = in_transaction()
    events = run_chunks(session, [WIRE[i:i + 1] for i in range(len(WIRE))])
    assert content(events) == WIRE_CONTENT
    assert count(events, EndMessage) == 1


@pytest.mark.parametrize("first, second", [
    (b"text\r\n", b".\r\n"),
    (b"text\r", b"\n.\r\n"),
    (b"text\r\n.", b"\r\n"),
    (b"text\r\n.\r", b"\n"),
])
def test_crlf_before_the_dot_may_arrive_in_an_earlier_read(first, second):
    session = in_data()
    events = session.receive(first)
    assert count(events, EndMessage) == 0
    events += session.receive(second)
    assert content(events) == b"text\r\n"
    assert count(events, EndMessage) == 1


@pytest.mark.parametrize("fake", [b"\n.\n", b"\n.\r\n", b"\r\n.\n",
                                  b"\r.\r\n", b"\r\n.\r\r\n"])
def test_bare_lf_dot_does_not_end_data(fake):
    session = in_data()
    events = session.receive(b"a" + fake + b"MAIL FROM:<evil@x>\r\n")
    assert count(events, EndMessage) == 0 and session.in_data
    events += session.receive(b".\r\n")
    assert count(events, EndMessage) == 1
    body = content(events)
    assert body.startswith(b"a") and body.endswith(b"MAIL FROM:<evil@x>\r\n")
    assert count(events, Send) == 0


def test_bare_lf_dot_keeps_its_dot_when_not_at_a_crlf_line_start():
    session = in_data()
    events = session.receive(b"a\n.\nb\n.\r\nc\r\n.\r\n")
    assert content(events) == b"a\n.\nb\n.\r\nc\r\n"


def test_bare_cr_nul_and_8bit_bytes_pass_through():
    session = in_data()
    raw = b"a\rb\x00c\xff\xfe\x80\r\n\r\r\n\x00\r\n"
    events = session.receive(raw + b".\r\n")
    assert content(events) == raw


def test_one_message_data_event_per_read():
    session = in_data()
    chunk = b"".join(b"line %d\r\n..dotted %d\r\n" % (i, i) for i in range(500))
    events = session.receive(chunk)
    assert count(events, MessageData) == 1
    # The final CRLF is held back: it may turn out to precede the end dot.
    assert events[0].data == chunk.replace(b"\r\n..", b"\r\n.")[:-2]


@pytest.mark.parametrize("line", [b"x" * 78 + b"\r\n", b"..x\r\n"],
                         ids=["plain", "every-line-dot-stuffed"])
def test_twenty_megabyte_message_streams_in_few_large_events(line):
    session = in_data()
    block = line * (65536 // len(line))
    reads = 20 * 1024 * 1024 // len(block)
    started = time.perf_counter()
    events = []
    for _ in range(reads):
        events += session.receive(block)
    events += session.receive(b".\r\n")
    elapsed = time.perf_counter() - started
    data = [e.data for e in events if isinstance(e, MessageData)]
    assert len(data) <= reads + 1
    unstuffed = line[1:] if line.startswith(b"..") else line
    assert sum(map(len, data)) == reads * (len(block) // len(line)) * len(unstuffed)
    assert isinstance(events[-1], EndMessage)
    assert elapsed < 2.0


# --- size limit ------------------------------------------------------------

def test_oversize_message_is_aborted_at_once_and_refused_with_552():
    session = in_data(max_message_size=100)
    events = session.receive(b"x" * 60 + b"\r\n")
    assert count(events, MessageData) == 1
    events = session.receive(b"y" * 60 + b"\r\n")
    assert events == [AbortMessage()]
    assert session.receive(b"z" * 1000 + b"\r\n") == []
    assert session.in_data
    events = session.receive(b".\r\nNOOP\r\n")
    assert events == [Send(b"552 5.3.4 Message size exceeds fixed maximum "
                           b"message size\r\n250 2.0.0 Ok\r\n")]
    assert not session.in_data
    assert reply(session, b"RCPT TO:<root>\r\n").startswith("503 5.5.1 ")
    assert reply(session, b"MAIL FROM:<a@b>\r\n") == "250 2.1.0 Ok"


def test_oversize_message_in_a_single_read_emits_no_data():
    session = in_data(max_message_size=10)
    events = session.receive(b"0123456789abc\r\n.\r\n")
    assert events == [AbortMessage(), Send(
        b"552 5.3.4 Message size exceeds fixed maximum message size\r\n")]


def test_message_exactly_at_size_limit_is_accepted():
    session = in_data(max_message_size=10)
    events = session.receive(b"12345678\r\n.\r\n")
    assert content(events) == b"12345678\r\n"
    assert events[-1] == EndMessage()


# --- waiting for the delivery result ----------------------------------------

def test_end_message_holds_pipelined_input_until_stored():
    session = in_data()
    events = session.receive(b"hi\r\n.\r\nQUIT\r\n")
    assert events == [MessageData(b"hi\r\n"), EndMessage()]
    assert session.in_data
    assert session.receive(b"NOOP\r\n") == []
    assert session.message_stored("1732480000.M1P2Q3.mx") == [
        Send(b"250 2.0.0 Ok: queued as 1732480000.M1P2Q3.mx\r\n"
             b"221 2.0.0 mx.test Bye\r\n"),
        Close()]
    assert session.closed


@pytest.mark.parametrize("reason, expected", [
    ("disk_full", "452 4.3.1 Insufficient system storage"),
    ("io_error", "451 4.3.0 Error: local delivery failed, try again later"),
])
def test_message_failed_replies_resets_and_continues(reason, expected):
    session = in_data()
    session.receive(b"hi\r\n.\r\nRCPT TO:<root>\r\n")
    assert lines(session.message_failed(reason)) == [
        expected, "503 5.5.1 Error: need MAIL command"]
    assert not session.in_data


def test_message_stored_resets_transaction():
    session = in_data()
    session.receive(b".\r\n")
    session.message_stored("k")
    assert reply(session, b"DATA\r\n") == "503 5.5.1 Error: need MAIL command"


def test_result_without_pending_message_returns_nothing():
    session = in_transaction()
    assert session.message_stored("k") == []
    assert session.message_failed("disk_full") == []
    assert reply(session, b"DATA\r\n").startswith("354 ")


def test_second_message_in_same_session():
    session = in_data()
    session.receive(b"one\r\n.\r\n")
    session.message_stored("k1")
    events = session.receive(b"MAIL FROM:<a@b>\r\nRCPT TO:<x>\r\nDATA\r\n"
                             b"two\r\n.\r\n")
    assert envelope_of(events).rcpt_to == ("x",)
    assert content(events) == b"two\r\n"


# --- other commands --------------------------------------------------------

def test_rset_resets_transaction():
    session = in_transaction()
    assert reply(session, b"RSET\r\n") == "250 2.0.0 Ok"
    assert reply(session, b"DATA\r\n").startswith("503 5.5.1 ")


def test_rset_with_argument_is_501():
    assert reply(in_transaction(), b"RSET all\r\n") == "501 5.5.4 Syntax: RSET"


@pytest.mark.parametrize("command", [b"NOOP\r\n", b"NOOP whatever\r\n"])
def test_noop(command):
    assert reply(greeted(), command) == "250 2.0.0 Ok"


def test_quit_says_bye_and_closes():
    session = greeted()
    assert session.receive(b"QUIT\r\nNOOP\r\n") == [
        Send(b"221 2.0.0 mx.test Bye\r\n"), Close()]
    assert session.closed
    assert session.receive(b"NOOP\r\n") == []
    assert session.timeout() == [] and session.shutdown() == []


def test_vrfy_is_252_and_needs_an_argument():
    assert reply(greeted(), b"VRFY root\r\n").startswith("252 2.5.0 ")
    assert reply(greeted(), b"VRFY\r\n") == "501 5.5.4 Syntax: VRFY address"


def test_expn_is_502():
    assert reply(greeted(), b"EXPN staff\r\n") == "502 5.5.1 EXPN not available"


def test_help_is_214():
    assert reply(greeted(), b"HELP\r\n").startswith("214 2.0.0 Commands: ")


def test_starttls_is_502_and_session_goes_on():
    session = greeted()
    assert reply(session, b"STARTTLS\r\n").startswith("502 5.5.1 ")
    assert reply(session, b"MAIL FROM:<a@b>\r\n") == "250 2.1.0 Ok"


@pytest.mark.parametrize("command", [b"BDAT 10\r\n", b"XYZZY\r\n", b"\r\n",
                                     b"   \r\n", "quıt\r\n".encode(),
                                     b"QU\xffIT\r\n", b"\xff\xfe\r\n"])
def test_unknown_command_is_500_and_session_goes_on(command):
    session = greeted()
    assert reply(session, command) == "500 5.5.1 Error: command not recognized"
    assert reply(session, b"NOOP\r\n") == "250 2.0.0 Ok"


@pytest.mark.parametrize("command", [b"NO\x00OP\r\n", b"\x00\r\n",
                                     b"EHLO a\rb\r\n", b"MAIL FROM:<a\x1b@b>\r\n"])
def test_control_characters_in_command_are_500_5_5_2(command):
    session = greeted()
    assert reply(session, command) == "500 5.5.2 Error: bad character in command"
    assert reply(session, b"NOOP\r\n") == "250 2.0.0 Ok"


def test_bare_lf_ends_a_command_line():
    session = new_session()
    events = session.receive(b"EHLO c\nMAIL FROM:<a@b>\nRCPT TO:<r>\nDATA\n.\r\n")
    assert count(events, EndMessage) == 1


def test_tab_and_extra_spaces_in_commands_are_tolerated():
    session = new_session()
    events = session.receive(b"  EHLO   c  \r\nMAIL FROM:<a@b>\t \r\n")
    assert lines(events)[-1] == "250 2.1.0 Ok"


# --- AUTH --------------------------------------------------------------------

def test_auth_plain_with_initial_response():
    session = greeted()
    assert reply(session, b"AUTH PLAIN " + b64(b"\0joe\0secret") + b"\r\n") == (
        "235 2.7.0 Authentication successful")
    events = session.receive(b"MAIL FROM:<a@b>\r\nRCPT TO:<r>\r\nDATA\r\n")
    assert envelope_of(events).auth_user == "joe"


def test_auth_plain_with_continuation_uses_authcid_not_authzid():
    session = greeted()
    assert session.receive(b"auth plain\r\n") == [Send(b"334 \r\n")]
    assert reply(session, b64(b"admin\0joe\0pw") + b"\r\n") == (
        "235 2.7.0 Authentication successful")
    events = session.receive(b"MAIL FROM:<a@b>\r\nRCPT TO:<r>\r\nDATA\r\n")
    assert envelope_of(events).auth_user == "joe"


def test_auth_login_prompts_for_username_then_password():
    session = greeted()
    assert session.receive(b"AUTH LOGIN\r\n") == [Send(b"334 VXNlcm5hbWU6\r\n")]
    assert base64.b64decode("VXNlcm5hbWU6") == b"Username:"
    assert session.receive(b64(b"joe") + b"\r\n") == [Send(b"334 UGFzc3dvcmQ6\r\n")]
    assert base64.b64decode("UGFzc3dvcmQ6") == b"Password:"
    assert reply(session, b64(b"anything") + b"\r\n") == (
        "235 2.7.0 Authentication successful")
    events = session.receive(b"MAIL FROM:<a@b>\r\nRCPT TO:<r>\r\nDATA\r\n")
    assert envelope_of(events).auth_user == "joe"


def test_auth_login_with_initial_response_asks_for_password():
    session = greeted()
    assert session.receive(b"AUTH LOGIN " + b64(b"joe") + b"\r\n") == [
        Send(b"334 UGFzc3dvcmQ6\r\n")]
    assert reply(session, b"\r\n") == "235 2.7.0 Authentication successful"


def test_auth_username_with_8bit_bytes_survives():
    session = greeted()
    session.receive(b"AUTH PLAIN " + b64(b"\0j\xf6e\xff\0pw") + b"\r\n")
    events = session.receive(b"MAIL FROM:<a@b>\r\nRCPT TO:<r>\r\nDATA\r\n")
    user = envelope_of(events).auth_user
    assert user.encode("utf-8", "surrogateescape") == b"j\xf6e\xff"


@pytest.mark.parametrize("steps", [
    [b"AUTH PLAIN\r\n"],
    [b"AUTH LOGIN\r\n"],
    [b"AUTH LOGIN\r\n", b64(b"joe") + b"\r\n"],
])
def test_auth_cancelled_with_star_is_501_5_7_0(steps):
    session = greeted()
    for step in steps:
        assert lines(session.receive(step))[0].startswith("334 ")
    assert reply(session, b"*\r\n") == "501 5.7.0 Authentication cancelled"
    assert reply(session, b"NOOP\r\n") == "250 2.0.0 Ok"
    events = session.receive(b"MAIL FROM:<a@b>\r\nRCPT TO:<r>\r\nDATA\r\n")
    assert envelope_of(events).auth_user is None


@pytest.mark.parametrize("steps", [
    [b"AUTH PLAIN !!!!\r\n"],
    [b"AUTH PLAIN\r\n", b"not base64\r\n"],
    [b"AUTH LOGIN\r\n", b"am9l=x\r\n"],
    [b"AUTH PLAIN\r\n", b"\xff\xfe\r\n"],
    [b"AUTH PLAIN\r\n", b"a\x00b\r\n"],
    [b"AUTH PLAIN " + b64(b"no nul bytes") + b"\r\n"],
    [b"AUTH PLAIN =\r\n"],
])
def test_undecodable_auth_response_is_501_5_5_2(steps):
    session = greeted()
    for step in steps:
        events = session.receive(step)
    assert lines(events) == ["501 5.5.2 Cannot decode response"]
    assert reply(session, b"NOOP\r\n") == "250 2.0.0 Ok"


def test_auth_with_empty_username_is_535():
    session = greeted()
    assert reply(session, b"AUTH PLAIN " + b64(b"\0\0pw") + b"\r\n") == (
        "535 5.7.8 Authentication credentials invalid")
    retry = b"AUTH PLAIN " + b64(b"\0joe\0pw") + b"\r\n"
    assert reply(session, retry).startswith("235 ")


def test_auth_when_already_authenticated_is_503():
    session = greeted()
    session.receive(b"AUTH PLAIN " + b64(b"\0joe\0pw") + b"\r\n")
    assert reply(session, b"AUTH LOGIN\r\n") == "503 5.5.1 Error: already authenticated"


def test_auth_during_transaction_is_503():
    session = greeted()
    session.receive(b"MAIL FROM:<a@b>\r\n")
    assert reply(session, b"AUTH PLAIN " + b64(b"\0joe\0pw") + b"\r\n") == (
        "503 5.5.1 Error: AUTH not allowed during a mail transaction")


def test_auth_unknown_mechanism_is_504_and_missing_one_is_501():
    session = greeted()
    assert reply(session, b"AUTH CRAM-MD5\r\n") == (
        "504 5.5.4 Unrecognized authentication type")
    assert reply(session, b"AUTH\r\n").startswith("501 5.5.4 Syntax: AUTH")


def test_auth_and_mail_pipelined_in_one_read():
    session = greeted()
    events = session.receive(b"AUTH PLAIN " + b64(b"\0joe\0pw") + b"\r\n"
                             b"MAIL FROM:<a@b>\r\nRCPT TO:<r>\r\nDATA\r\n")
    assert [line[:3] for line in lines(events)] == ["235", "250", "250", "354"]
    assert envelope_of(events).auth_user == "joe"


def test_overlong_auth_response_is_refused_and_ends_the_exchange():
    session = greeted()
    session.receive(b"AUTH PLAIN\r\n")
    assert reply(session, b"A" * 20000 + b"\r\n") == "500 5.5.2 Line too long"
    assert reply(session, b"NOOP\r\n") == "250 2.0.0 Ok"


def test_long_but_allowed_auth_response_is_accepted():
    session = greeted()
    session.receive(b"AUTH PLAIN\r\n")
    response = b64(b"\0" + b"u" * 3000 + b"\0" + b"p" * 5000)
    assert len(response) > 512
    assert reply(session, response + b"\r\n").startswith("235 ")


# --- line length -----------------------------------------------------------

def test_command_line_of_512_octets_is_accepted():
    line = b"NOOP " + b"x" * (512 - 7) + b"\r\n"
    assert len(line) == 512
    assert reply(greeted(), line) == "250 2.0.0 Ok"


def test_command_line_of_513_octets_is_too_long_and_session_goes_on():
    line = b"NOOP " + b"x" * (513 - 7) + b"\r\n"
    session = greeted()
    assert lines(session.receive(line + b"NOOP\r\n")) == [
        "500 5.5.2 Line too long", "250 2.0.0 Ok"]


def test_long_line_without_newline_keeps_the_buffer_bounded():
    session = greeted()
    for _ in range(16):
        assert session.receive(b"M" * 65536) == []
        assert len(session._buf) <= 512
    assert session.receive(b"M" * 1_000_000) == []
    assert len(session._buf) <= 512
    assert lines(session.receive(b"tail\r\nNOOP\r\n")) == [
        "500 5.5.2 Line too long", "250 2.0.0 Ok"]


def test_long_line_arriving_in_small_pieces_gets_one_reply():
    session = greeted()
    events = run_chunks(session, [b"x" * 100] * 20 + [b"\r\nNOOP\r\n"])
    assert lines(events) == ["500 5.5.2 Line too long", "250 2.0.0 Ok"]


# --- pipelining ----------------------------------------------------------------

def test_pipelined_commands_are_answered_in_order_in_one_send():
    session = new_session()
    events = session.receive(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<r1>\r\n"
                             b"RCPT TO:<>\r\nRCPT TO:<r2>\r\nDATA\r\n")
    assert [type(e) for e in events] == [Send, StartMessage, MessageData]
    assert [line[:9] for line in lines(events)][-5:] == [
        "250 2.1.0", "250 2.1.5", "501 5.1.3", "250 2.1.5", "354 End d"]


def test_whole_session_in_one_read():
    session = new_session()
    events = session.receive(b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<r>\r\n"
                             b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert [type(e) for e in events] == [
        Send, StartMessage, MessageData, MessageData, EndMessage]
    assert content(events) == b"Subject: x\r\n\r\nbody\r\n"
    assert session.message_stored("k") == [
        Send(b"250 2.0.0 Ok: queued as k\r\n221 2.0.0 mx.test Bye\r\n"), Close()]


def test_pipelined_errors_are_answered_in_order():
    session = new_session()
    events = session.receive(b"RCPT TO:<r>\r\nFOO\r\nMAIL FROM:<a\r\nDATA\r\n"
                             b"NOOP\r\n")
    assert [line[:9] for line in lines(events)] == [
        "503 5.5.1", "500 5.5.1", "501 5.1.7", "503 5.5.1", "250 2.0.0"]


def test_partial_command_waits_for_its_end():
    session = greeted()
    assert session.receive(b"NO") == []
    assert session.receive(b"OP\r") == []
    assert lines(session.receive(b"\n")) == ["250 2.0.0 Ok"]


# --- timeout and shutdown ------------------------------------------------------

def test_timeout_replies_421_and_closes():
    session = greeted()
    assert session.timeout() == [
        Send(b"421 4.4.2 mx.test Error: timeout exceeded\r\n"), Close()]
    assert session.closed and session.receive(b"NOOP\r\n") == []


def test_shutdown_replies_421_and_closes():
    session = greeted()
    assert session.shutdown() == [
        Send(b"421 4.3.2 mx.test Service shutting down\r\n"), Close()]
    assert session.closed


def test_timeout_during_data_aborts_the_message():
    session = in_data()
    session.receive(b"partial\r\n")
    assert session.timeout() == [
        AbortMessage(), Send(b"421 4.4.2 mx.test Error: timeout exceeded\r\n"),
        Close()]
    assert not session.in_data


def test_timeout_after_oversize_abort_does_not_abort_twice():
    session = in_data(max_message_size=5)
    assert session.receive(b"0123456789\r\n") == [AbortMessage()]
    assert session.timeout() == [
        Send(b"421 4.4.2 mx.test Error: timeout exceeded\r\n"), Close()]


def test_result_after_close_returns_nothing():
    session = in_data()
    session.receive(b".\r\n")
    session.timeout()
    assert session.message_stored("k") == []


# --- properties ------------------------------------------------------------

REPLY_LINE = re.compile(rb"\d{3}[ -][^\r\n]*")

COMMANDS = [b"EHLO c.test\r\n", b"HELO c\r\n", b"MAIL FROM:<a@b>\r\n",
            b"MAIL FROM:<> SIZE=10 BODY=8BITMIME\r\n", b"RCPT TO:<root>\r\n",
            b"DATA\r\n", b".\r\n", b"\r\n.\r\n", b"RSET\r\n", b"NOOP\r\n",
            b"VRFY x\r\n", b"AUTH PLAIN\r\n", b"AUTH LOGIN\r\n", b"*\r\n",
            b64(b"\0u\0p") + b"\r\n", b"AUTH PLAIN " + b64(b"\0u\0p") + b"\r\n",
            b"HELP\r\n", b"STARTTLS\r\n", b"..x\r\n", b"QUIT\r\n",
            b"\r\nMAIL FROM:<a@b>\r\nRCPT TO:<r>\r\nDATA\r\n"]


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(COMMANDS),
                          st.sampled_from(COMMANDS),   # twice: half the chunks
                          st.binary(max_size=700),
                          st.sampled_from([b"\r", b"\n", b".", b"\x00"])),
                max_size=40),
       st.lists(st.sampled_from(["store", "disk_full", "other"]), min_size=1))
def test_random_sessions_never_raise_and_send_well_formed_replies(chunks, results):
    session = SMTPSession(HOST, max_message_size=300, max_recipients=3)
    events = session.start()
    for i, chunk in enumerate(chunks):
        events += session.receive(chunk)
        if events and isinstance(events[-1], EndMessage):
            result = results[i % len(results)]
            events += (session.message_stored("k") if result == "store"
                       else session.message_failed(result))
    events += session.timeout()
    for event in events:
        if isinstance(event, Send):
            assert event.data.endswith(b"\r\n")
            for line in event.data.split(b"\r\n")[:-1]:
                assert REPLY_LINE.fullmatch(line), line
    assert session.closed
    assert len(session._buf) == 0


def stuff(message: bytes) -> bytes:
    """What a client sends for `message` (RFC 5321 4.5.2)."""
    return (b"\r\n" + message).replace(b"\r\n.", b"\r\n..")[2:] + b".\r\n"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"\r\n", b".", b"\r", b"\n", b"a", b"\x00",
                                 b"\xff"]), max_size=60),
       st.lists(st.integers(min_value=1, max_value=8), min_size=1))
def test_any_stuffed_message_comes_back_exactly(parts, sizes):
    message = b"".join(parts)
    if message and not message.endswith(b"\r\n"):
        message += b"\r\n"
    wire = stuff(message) + b"NOOP\r\n"
    session = in_data()
    events, pos, i = [], 0, 0
    while pos < len(wire):
        size = sizes[i % len(sizes)]
        events += session.receive(wire[pos:pos + size])
        pos, i = pos + size, i + 1
    assert count(events, EndMessage) == 1
    assert b"".join(e.data for e in events if isinstance(e, MessageData)) == message
    assert lines(session.message_stored("k")) == [
        "250 2.0.0 Ok: queued as k", "250 2.0.0 Ok"]


def test_scan_data_holds_back_a_possible_terminator():
    assert scan_data(b"\r\nabc\r\n.") == (b"\r\nabc", 5, False)
    assert scan_data(b"\r\nabc\r\n.\r") == (b"\r\nabc", 5, False)
    assert scan_data(b"\r\nabc\r\n") == (b"\r\nabc", 5, False)
    assert scan_data(b"\r\nabc\r") == (b"\r\nabc", 5, False)
    assert scan_data(b"abc\r\n.\r\nrest") == (b"abc\r\n", 8, True)
    assert scan_data(b"\r\n..a\r\n.b\r\n.\r\n") == (b"\r\n.a\r\nb\r\n", 14, True)
