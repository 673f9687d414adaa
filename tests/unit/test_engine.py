"""The engine kit (baremail/engine.py): what SMTP, POP3 and IMAP share."""

import base64

import pytest
from hypothesis import given, strategies as st

from baremail.engine import OVERLONG, Close, LineReader, Output, SaslExchange, Send
from baremail.pop3 import POP3Session
from baremail.smtp import SMTPSession


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def lines_of(reader: LineReader) -> list:
    out = []
    while (line := reader.next_line()) is not None:
        out.append(line)
    return out


# -- LineReader -------------------------------------------------------------

def test_lines_end_with_crlf_or_a_bare_lf_and_lose_their_end():
    reader = LineReader(100)
    reader.feed(b"one\r\ntwo\nthree\r")
    assert lines_of(reader) == [b"one", b"two"]
    reader.feed(b"\n")
    assert lines_of(reader) == [b"three"]
    assert len(reader) == 0


def test_a_line_of_exactly_the_limit_with_its_crlf_is_accepted_one_more_is_not():
    reader = LineReader(10)
    reader.feed(b"12345678\r\n" + b"123456789\r\n" + b"next\r\n")
    assert lines_of(reader) == [b"12345678", OVERLONG, b"next"]


def test_an_overlong_line_is_dropped_as_it_arrives_and_reported_once_at_its_end():
    reader = LineReader(16)
    for _ in range(100):
        reader.feed(b"x" * 1000)
        assert reader.next_line() is None
        assert len(reader) < 16   # never holds the line
    reader.feed(b"xx\r\nNOOP\r\n")
    assert lines_of(reader) == [OVERLONG, b"NOOP"]


def test_the_limit_may_change_between_lines():
    reader = LineReader(8)
    reader.feed(b"AUTH\r\n" + b"a" * 20 + b"\r\n")
    assert reader.next_line() == b"AUTH"
    reader.limit = 64
    assert reader.next_line() == b"a" * 20


@given(st.lists(st.binary(max_size=40), max_size=20), st.integers(min_value=1, max_value=40))
def test_feeding_in_any_pieces_gives_the_same_lines(chunks, limit):
    data = b"".join(chunks)
    whole = LineReader(limit)
    whole.feed(data)
    expected = lines_of(whole)
    pieces = LineReader(limit)
    got = []
    for chunk in chunks:
        pieces.feed(chunk)
        got += lines_of(pieces)
        assert len(pieces) <= max(limit, 0) or b"\n" in bytes(pieces.buffer)
    assert got == expected


# -- Output -----------------------------------------------------------------

def test_consecutive_sends_are_coalesced_and_events_keep_their_place():
    out = Output()
    out.send(b"a")
    out.send(b"b")
    out.event(Close())
    out.send(b"c")
    assert out.take() == [Send(b"ab"), Close(), Send(b"c")]
    assert out.take() == []


# -- SASL -------------------------------------------------------------------

def test_plain_with_an_initial_response_logs_in_the_authentication_identity():
    result = SaslExchange(b"plain").begin(b64(b"admin\0joe\0secret"))
    assert (result.user, result.challenge, result.failure) == (b"joe", None, None)


def test_plain_without_an_initial_response_asks_with_an_empty_challenge():
    exchange = SaslExchange(b"PLAIN")
    first = exchange.begin(None)
    assert first.challenge == b"" and first.encoded == b""
    assert exchange.respond(b64(b"\0joe\0pw") + b"  ").user == b"joe"


def test_login_asks_for_user_name_then_password():
    exchange = SaslExchange(b"LOGIN")
    assert exchange.begin(None).encoded == b64(b"Username:")
    assert exchange.respond(b64(b"joe")).encoded == b64(b"Password:")
    assert exchange.respond(b64(b"anything")).user == b"joe"


def test_login_with_an_initial_response_asks_only_for_the_password():
    exchange = SaslExchange(b"LOGIN")
    assert exchange.begin(b64(b"joe")).challenge == b"Password:"
    assert exchange.respond(b"=").user == b"joe"


@pytest.mark.parametrize("mechanism, steps, failure", [
    (b"PLAIN", [b"*"], "cancelled"),
    (b"LOGIN", [b64(b"joe"), b" * "], "cancelled"),
    (b"PLAIN", [b"not base64!"], "bad_base64"),
    (b"PLAIN", [b"am9l=x"], "bad_base64"),
    (b"PLAIN", [b"="], "malformed"),
    (b"PLAIN", [b64(b"no nul bytes")], "malformed"),
    (b"PLAIN", [b64(b"\0\0pw")], "no_user"),
    (b"LOGIN", [b"=", b64(b"pw")], "no_user"),
])
def test_an_exchange_can_end_without_a_login(mechanism, steps, failure):
    exchange = SaslExchange(mechanism)
    result = exchange.begin(None)
    for step in steps:
        assert result.challenge is not None
        result = exchange.respond(step)
    assert (result.failure, result.user) == (failure, None)


def test_an_unknown_mechanism_is_refused_at_once():
    with pytest.raises(ValueError):
        SaslExchange(b"CRAM-MD5")
    assert SaslExchange.MECHANISMS == (b"PLAIN", b"LOGIN")


# -- flow control asks the engine ---------------------------------------------

def test_smtp_feeds_commands_by_4_kib_and_message_content_whole():
    session = SMTPSession("h")
    assert session.intake(b"NOOP\r\n" * 2000) == 4096
    session.receive(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
    assert session.intake(b"x" * 100000) == 100000


def test_pop3_feeds_whole_lines_and_a_listing_ends_its_piece():
    session = POP3Session("h", open_mailbox=lambda: [])
    batch = b"RETR 1\r\nRETR 2\r\nLIST\r\nRETR 3\r\n"
    assert session.intake(batch) == len(b"RETR 1\r\nRETR 2\r\nLIST\r\n")
    assert session.intake(b"uidl 1\r\nNOOP\r\n") == len(b"uidl 1\r\n")
    # A command whose argument merely contains LIST is no listing.
    assert session.intake(b"USER LISTER\r\nNOOP\r\nNOOP") == len(b"USER LISTER\r\nNOOP\r\n")
    assert session.intake(b"NOOP") == 4
    assert session.intake(b"x" * 10000) == 4096


def test_refusals_for_the_session_cap_come_from_the_reply_tables():
    assert SMTPSession.refusal("host.example") == b"421 4.3.2 host.example Too many sessions, try again later\r\n"
    assert POP3Session.refusal("host.example") == b"-ERR [SYS/TEMP] Too many sessions, try again later\r\n"
