"""Unit tests for the IMAP command grammar (baremail.imapsyntax).

Commands are given as the framer delivers them: a list of text segments
(announcements removed) and Literal / StreamedLiteral parts.
"""

import calendar
import datetime
import os
import time
import timeit

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from baremail.imapdata import Literal, Raw, StreamedLiteral, encode
from baremail.imapsyntax import (
    MAX_NESTING,
    All,
    And,
    Append,
    AppendPrefix,
    Authenticate,
    BadCharset,
    BodySection,
    Capability,
    Check,
    Close,
    Command,
    Copy,
    Create,
    Delete,
    Enable,
    Examine,
    Expunge,
    Fetch,
    Flag,
    Header,
    Id,
    Idle,
    IMAPSyntaxError,
    InternalDate,
    List,
    Login,
    Logout,
    Lsub,
    Move,
    Namespace,
    Noop,
    Not,
    NumberSet,
    Or,
    Recent,
    Rename,
    Search,
    Select,
    SentDate,
    SeqSet,
    SequenceSet,
    Size,
    StartTLS,
    Status,
    Store,
    Subscribe,
    Text,
    UidSet,
    UnknownCommand,
    Unselect,
    Unsubscribe,
    append_prefix,
    decode_mailbox,
    encode_mailbox,
    format_date_time,
    format_sequence,
    mailbox_matcher,
    parse_command,
    parse_date_time,
)

L = Literal


def parse(*parts):
    """Parse a command given as text segments and literals."""
    return parse_command(list(parts))


def line(text):
    return parse_command([text])


def bad(*parts):
    """The IMAPSyntaxError that parsing raises."""
    with pytest.raises(IMAPSyntaxError) as info:
        parse_command(list(parts))
    return info.value


def seq(text):
    return SequenceSet.parse(text)


# --- Tags, names, errors ----------------------------------------------------


def test_example_from_the_framer_contract():
    assert parse(b"A1 LOGIN ", L(b"hello"), b" ", L(b"abc"), b"") == Login("A1", b"hello", b"abc")


def test_command_names_are_case_insensitive():
    assert line(b"a1 nOoP") == Noop("a1")
    assert line(b"a2 uid fetch 1 flags") == Fetch("a2", seq("1"), ("FLAGS",), uid=True)


@pytest.mark.parametrize("tag", [b"A1", b"a.b-c_d", b"x]", b"~!#$&'", b"9", b"TAG:1;2"])
def test_tags_are_astring_chars_except_plus(tag):
    assert line(tag + b" NOOP").tag == tag.decode()


@pytest.mark.parametrize("text", [b"+ NOOP", b"A+1 NOOP", b"* NOOP", b"A%1 NOOP", b"(A NOOP", b'"A" NOOP',
                                  b"A\\1 NOOP", b"A{1 NOOP", b"\xc3\xa91 NOOP", b" A1 NOOP", b"", b"A\x01 NOOP"])
def test_unreadable_tag_gives_error_without_tag(text):
    error = bad(text)
    assert error.tag is None
    assert error.text


def test_a_literal_where_the_tag_belongs_is_an_error_without_tag():
    assert bad(b"", L(b"A1"), b" NOOP").tag is None
    assert bad(b"A1", L(b"x"), b"").tag is None


def test_tag_alone_is_an_error_with_tag():
    error = bad(b"A1")
    assert (error.tag, error.text) == ("A1", "missing command")
    assert bad(b"A1 ").tag == "A1"


def test_unknown_command_is_its_own_error():
    for text in (b"A1 FOO", b"A1 UID FOO 1", b"A1 XLIST \"\" *", b"A1 UID NOOP"):
        with pytest.raises(UnknownCommand) as info:
            line(text)
        assert info.value.tag == "A1"
        assert info.value.text == "unknown command"
    assert not isinstance(bad(b"A1 UID"), UnknownCommand)


def test_extra_text_or_spaces_are_errors():
    for text in (b"A1 NOOP ", b"A1 NOOP x", b"A1  NOOP", b"A1 LOGOUT\x00", b"A1 CAPABILITY (", b"A1 IDLE 1"):
        assert bad(text).tag == "A1"


def test_commands_have_their_name():
    assert line(b"A1 UID FETCH 1 UID").name == "FETCH"
    assert line(b"A1 EXAMINE x").name == "EXAMINE"
    assert isinstance(line(b"A1 NOOP"), Command)


def test_commands_are_immutable():
    command = line(b"A1 SELECT INBOX")
    with pytest.raises(AttributeError):
        command.mailbox = "x"


def test_part_of_a_wrong_type_is_a_caller_bug():
    with pytest.raises(TypeError):
        parse_command(["A1 NOOP"])


def test_adjacent_text_segments_join():
    assert parse(b"A1 NO", b"OP") == Noop("A1")


# --- Commands without arguments ---------------------------------------------


@pytest.mark.parametrize(
    "name, cls",
    [("CAPABILITY", Capability), ("NOOP", Noop), ("LOGOUT", Logout), ("STARTTLS", StartTLS), ("CHECK", Check),
     ("CLOSE", Close), ("IDLE", Idle), ("NAMESPACE", Namespace), ("UNSELECT", Unselect)],
)
def test_commands_without_arguments(name, cls):
    assert line(b"T1 " + name.encode()) == cls("T1")
    assert line(b"T1 " + name.lower().encode()).name == name
    assert bad(b"T1 " + name.encode() + b" x").tag == "T1"


def test_expunge():
    assert line(b"A202 EXPUNGE") == Expunge("A202")
    assert line(b"A202 EXPUNGE").uid is False


def test_uid_expunge():
    command = line(b"A003 UID EXPUNGE 3000:3002")
    assert command == Expunge("A003", seq("3000:3002"))
    assert command.uid is True
    assert bad(b"A003 UID EXPUNGE").tag == "A003"
    assert bad(b"A1 EXPUNGE 1").tag == "A1"


# --- AUTHENTICATE and LOGIN -------------------------------------------------


def test_authenticate_without_initial_response():
    assert line(b"A001 AUTHENTICATE GSSAPI") == Authenticate("A001", "GSSAPI", None)
    assert line(b"A001 authenticate plain").mechanism == "PLAIN"


def test_authenticate_with_sasl_ir():
    assert line(b"a AUTHENTICATE PLAIN AHRlc3QAc2VjcmV0") == Authenticate("a", "PLAIN", b"AHRlc3QAc2VjcmV0")
    assert line(b"a AUTHENTICATE LOGIN =") == Authenticate("a", "LOGIN", b"=")


@pytest.mark.parametrize("ir", [b"AHRlc3Q", b"A===", b"!!", b"AA==AA", b"==", b"\"AA==\""])
def test_authenticate_with_invalid_base64(ir):
    assert bad(b"A1 AUTHENTICATE PLAIN " + ir).tag == "A1"


def test_authenticate_needs_a_mechanism():
    assert bad(b"A1 AUTHENTICATE").tag == "A1"
    assert bad(b'A1 AUTHENTICATE "PLAIN"').tag == "A1"


def test_login_forms():
    # RFC 3501 6.2.3
    assert line(b"a001 LOGIN SMITH SESAME") == Login("a001", b"SMITH", b"SESAME")
    assert line(b'a LOGIN "fred smith" "pa\\"ss\\\\"') == Login("a", b"fred smith", b'pa"ss\\')
    assert parse(b"a LOGIN ", L(b"fred"), b" pass") == Login("a", b"fred", b"pass")
    assert parse(b"a LOGIN fred ", L(b"p a s s\r\n"), b"") == Login("a", b"fred", b"p a s s\r\n")
    assert line(b'a LOGIN "" ""') == Login("a", b"", b"")
    assert line(b"a LOGIN user] pass]") == Login("a", b"user]", b"pass]")
    assert line("a LOGIN \"jürgen\" pw".encode()) == Login("a", "jürgen".encode(), b"pw")


@pytest.mark.parametrize("text", [b"a LOGIN", b"a LOGIN fred", b"a LOGIN fred ", b"a LOGIN fred pass extra",
                                  b'a LOGIN "fred pass', b'a LOGIN "a\\b" x', b"a LOGIN f(red pass",
                                  b"a LOGIN fr*d pass", b'a LOGIN "a\rb" x'])
def test_login_errors(text):
    assert bad(text).tag == "a"


def test_a_streamed_literal_is_only_for_append_messages():
    assert bad(b"a LOGIN ", StreamedLiteral(5), b" x").tag == "a"


# --- Mailbox commands -------------------------------------------------------


def test_select_and_examine():
    assert line(b"A142 SELECT INBOX") == Select("A142", "INBOX")
    assert line(b"A932 EXAMINE blurdybloop") == Examine("A932", "blurdybloop")
    assert line(b'A1 SELECT "Sent Items"') == Select("A1", "Sent Items")
    assert parse(b"A1 SELECT ", L(b"Drafts"), b"") == Select("A1", "Drafts")


@pytest.mark.parametrize("spelling", [b"inbox", b"Inbox", b"iNbOx", b'"INBOX"'])
def test_inbox_is_case_insensitive(spelling):
    assert line(b"A1 SELECT " + spelling).mailbox == "INBOX"
    assert parse(b"A1 SELECT ", L(spelling.strip(b'"')), b"").mailbox == "INBOX"


def test_only_inbox_itself_is_normalized():
    assert line(b"A1 SELECT inbox.Sub").mailbox == "inbox.Sub"
    assert line(b"A1 SELECT Inboxes").mailbox == "Inboxes"
    # Dotless i upper-cases to I, but is not "INBOX" (RFC 3501 5.1 means ASCII).
    assert line(b"A1 SELECT &ATE-nbox").mailbox == "\u0131nbox"


def test_select_parameters_are_parsed_generically():
    assert line(b"A1 SELECT INBOX (CONDSTORE)").params == (("CONDSTORE", None),)
    assert line(b"A1 SELECT INBOX (qresync (67890007 20050715194045000 41,43:211,214:*) condstore)").params == (
        ("QRESYNC", ("67890007", "20050715194045000", "41,43:211,214:*")),
        ("CONDSTORE", None),
    )
    assert line(b'A1 EXAMINE x (X-A 1:5 X-B ("q s" (n)))').params == (
        ("X-A", "1:5"),
        ("X-B", ("q s", ("n",))),
    )
    assert parse(b"A1 SELECT x (X (", L(b"lit"), b"))").params == (("X", ("lit",)),)
    assert line(b"A1 SELECT x ()").params == ()


@pytest.mark.parametrize("text", [b"A1 SELECT INBOX (", b"A1 SELECT INBOX CONDSTORE", b"A1 SELECT INBOX (1X)",
                                  b"A1 SELECT INBOX (A (B)", b"A1 SELECT INBOX (A )", b"A1 SELECT",
                                  b"A1 SELECT INBOX (A B C) x"])
def test_select_errors(text):
    assert bad(text).tag == "A1"


def test_select_parameters_nesting_is_limited():
    assert bad(b"A1 SELECT x (X " + b"(" * 200 + b")" * 201).tag == "A1"


def test_create_delete_subscribe_unsubscribe():
    assert line(b"A003 CREATE owatagusiam/") == Create("A003", "owatagusiam/")
    assert line(b"A004 CREATE owatagusiam/blurdybloop") == Create("A004", "owatagusiam/blurdybloop")
    assert line(b"A683 DELETE blurdybloop") == Delete("A683", "blurdybloop")
    assert line(b"A002 SUBSCRIBE #news.comp.mail.mime") == Subscribe("A002", "#news.comp.mail.mime")
    assert line(b"A002 UNSUBSCRIBE #news.comp.mail.mime") == Unsubscribe("A002", "#news.comp.mail.mime")
    assert line(b'CREATE1 CREATE "Trash"') == Create("CREATE1", "Trash")
    assert parse(b"A1 DELETE ", L(b"Old Stuff"), b"") == Delete("A1", "Old Stuff")
    assert parse(b"A1 SUBSCRIBE ", L(b"a"), b"") == Subscribe("A1", "a")
    assert parse(b"A1 UNSUBSCRIBE ", L(b"a"), b"") == Unsubscribe("A1", "a")
    assert parse(b"A1 CREATE ", L(b"a"), b"") == Create("A1", "a")


def test_create_with_special_use_parameter():
    # RFC 6154 CREATE-SPECIAL-USE: the parameter value is a list of atoms
    # with backslashes, which the generic RFC 4466 grammar can not hold.
    assert bad(b"A1 CREATE x (USE (\\Drafts))").tag == "A1"


def test_rename():
    assert line(b"A683 RENAME blurdybloop sarasoop") == Rename("A683", "blurdybloop", "sarasoop")
    assert parse(b"A1 RENAME ", L(b"a b"), b" ", L(b"c d"), b"") == Rename("A1", "a b", "c d")
    assert line(b"A1 RENAME inbox old-inbox") == Rename("A1", "INBOX", "old-inbox")
    assert bad(b"A1 RENAME a").tag == "A1"


def test_mailbox_names_are_modified_utf7():
    # RFC 3501 5.1.3
    assert line(b"A1 CREATE ~peter/mail/&U,BTFw-/&ZeVnLIqe-").mailbox == "~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e"
    assert line(b'A1 CREATE "Tom &- Jerry"').mailbox == "Tom & Jerry"
    assert line(b'A1 SELECT "Entw&APw-rfe"').mailbox == "Entw\u00fcrfe"


@pytest.mark.parametrize("name", [b"&", b"a&b", b"&Jjo", b"&Jjo!-", b"&AGE-", b"&Jjo-&Jjo-", b"&Jj-",
                                  b"&2D0-", b"&U,BTF2-", b"&U/BTFw-", b'"\xc3\xa9t\xc3\xa9"', b"&AAA-", b"&AAo-"])
def test_invalid_mailbox_names_are_syntax_errors(name):
    assert bad(b"A1 SELECT " + name).tag == "A1"


def test_a_literal_mailbox_name_with_8bit_octets_is_an_error():
    assert bad(b"A1 CREATE ", L("caf\u00e9".encode()), b"").tag == "A1"


# --- LIST and LSUB ------------------------------------------------------------


def test_list_basic_forms():
    # RFC 3501 6.3.8 examples
    assert line(b'A101 LIST "" ""') == List("A101", "", ("",))
    assert line(b'A102 LIST #news.comp.mail.misc ""') == List("A102", "#news.comp.mail.misc", ("",))
    assert line(b'A103 LIST /usr/staff/jones ""') == List("A103", "/usr/staff/jones", ("",))
    assert line(b"A202 LIST ~/Mail/ %") == List("A202", "~/Mail/", ("%",))
    assert line(b'A1 LIST "" *') == List("A1", "", ("*",))
    assert line(b'A1 LIST "" "INBOX"') == List("A1", "", ("INBOX",))
    assert line(b'A1 LIST "" Lists.%.foo]*') == List("A1", "", ("Lists.%.foo]*",))
    command = line(b'A1 LIST "" *')
    assert command.extended is False
    assert command.selection == frozenset() and command.return_options == frozenset()


def test_list_patterns_are_not_inbox_normalized_but_are_decoded():
    assert line(b'A1 LIST "" inbox').patterns == ("inbox",)
    assert line(b'A1 LIST "" &ZeVnLIqe-.*').patterns == ("\u65e5\u672c\u8a9e.*",)
    assert bad(b'A1 LIST "" &ZeVnLIqe').tag == "A1"


def test_list_with_literals():
    assert parse(b"A1 LIST ", L(b""), b" ", L(b"*"), b"") == List("A1", "", ("*",))
    assert parse(b"A1 LIST (", b"SUBSCRIBED) ", L(b"x."), b" (", L(b"%"), b" y)").patterns == ("%", "y")


def test_list_extended_forms_clients_send():
    assert line(b'A1 LIST (SPECIAL-USE) "" "*"') == List(
        "A1", "", ("*",), frozenset({"SPECIAL-USE"}), frozenset({"SPECIAL-USE"}), True
    )
    assert line(b'A1 LIST (SUBSCRIBED) "" "*"') == List(
        "A1", "", ("*",), frozenset({"SUBSCRIBED"}), frozenset({"SUBSCRIBED"}), True
    )
    assert line(b'A1 LIST "" "*" RETURN (SPECIAL-USE CHILDREN SUBSCRIBED)') == List(
        "A1", "", ("*",), frozenset(), frozenset({"SPECIAL-USE", "CHILDREN", "SUBSCRIBED"}), True
    )
    assert line(b'A1 LIST "" ("INBOX" "Drafts" %)') == List("A1", "", ("INBOX", "Drafts", "%"), extended=True)
    assert line(b'A1 list (subscribed recursivematch) "" % return (children)') == List(
        "A1", "", ("%",), frozenset({"SUBSCRIBED", "RECURSIVEMATCH"}), frozenset({"SUBSCRIBED", "CHILDREN"}), True
    )
    assert line(b'A1 LIST () "" % RETURN ()') == List("A1", "", ("%",), extended=True)
    assert line(b'A1 LIST (REMOTE) "" %').selection == frozenset({"REMOTE"})


@pytest.mark.parametrize("text", [b'A1 LIST (FOO) "" *', b'A1 LIST "" * RETURN (STATUS (MESSAGES))',
                                  b'A1 LIST (RECURSIVEMATCH) "" *', b'A1 LIST (REMOTE RECURSIVEMATCH) "" *',
                                  b'A1 LIST "" * RETURN', b'A1 LIST "" * RETURN CHILDREN', b'A1 LIST "" * FOO (x)',
                                  b'A1 LIST "" ()', b'A1 LIST "" (a', b'A1 LIST ""', b"A1 LIST", b'A1 LIST (SUBSCRIBED""*',
                                  b'A1 LIST "" "a"b'])
def test_list_errors(text):
    assert bad(text).tag == "A1"


def test_lsub():
    assert line(b'A002 LSUB "#news." "comp.mail.*"') == Lsub("A002", "#news.", "comp.mail.*")
    assert line(b'A003 LSUB "#news." "comp.%"') == Lsub("A003", "#news.", "comp.%")
    assert parse(b"A1 LSUB ", L(b""), b" ", L(b"*"), b"") == Lsub("A1", "", "*")
    assert bad(b'A1 LSUB "" ("a")').tag == "A1"


# --- STATUS -----------------------------------------------------------------


def test_status():
    assert line(b"A042 STATUS blurdybloop (UIDNEXT MESSAGES)") == Status("A042", "blurdybloop", ("UIDNEXT", "MESSAGES"))
    assert line(b"A1 STATUS inbox (messages recent uidnext uidvalidity unseen messages)").items == (
        "MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN")
    assert parse(b"A1 STATUS ", L(b"a b"), b" (UNSEEN)") == Status("A1", "a b", ("UNSEEN",))


@pytest.mark.parametrize("text", [b"A1 STATUS x ()", b"A1 STATUS x (SIZE)", b"A1 STATUS x MESSAGES",
                                  b"A1 STATUS x (MESSAGES", b"A1 STATUS (MESSAGES)", b"A1 STATUS x (MESSAGES  UNSEEN)"])
def test_status_errors(text):
    assert bad(text).tag == "A1"


# --- APPEND -----------------------------------------------------------------

MESSAGE = (b"Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\nFrom: Fred Foobar <foobar@Blurdybloop.COM>\r\n"
           b"Subject: afternoon meeting\r\n\r\nHello Joe, do you think we can meet at 3:30 tomorrow?\r\n")


def test_append_rfc3501_example():
    command = parse(b'A003 APPEND saved-messages (\\Seen) ', L(MESSAGE), b"")
    assert command == Append("A003", "saved-messages", ("\\Seen",), None, MESSAGE)
    assert isinstance(command.message, Literal)


def test_append_forms():
    date = calendar.timegm((1994, 2, 8, 5, 52, 25))
    assert parse(b"A1 APPEND INBOX ", L(b"x"), b"") == Append("A1", "INBOX", (), None, b"x")
    assert parse(b'A1 APPEND INBOX "07-Feb-1994 21:52:25 -0800" ', L(b"x"), b"").date == date
    assert parse(b'A1 APPEND INBOX " 7-Feb-1994 21:52:25 -0800" ', L(b"x"), b"").date == date
    assert parse(b'A1 APPEND INBOX "7-feb-1994 21:52:25 -0800" ', L(b"x"), b"").date == date
    command = parse(b'A1 APPEND ', L(b"Sent"), b' (\\seen \\DRAFT $MDNSent) "07-Feb-1994 21:52:25 +0000" ', L(b"y"), b"")
    assert command == Append("A1", "Sent", ("\\Seen", "\\Draft", "$MDNSent"), calendar.timegm((1994, 2, 7, 21, 52, 25)), b"y")
    assert parse(b"A1 APPEND INBOX () ", L(b""), b"").flags == ()


def test_append_with_streamed_message():
    streamed = StreamedLiteral(123456789, token="spool/1")
    command = parse(b"A1 APPEND INBOX (\\Seen) ", streamed, b"")
    assert command.message is streamed


@pytest.mark.parametrize("head", [b"A1 APPEND INBOX", b"A1 APPEND INBOX (\\Recent) ", b"A1 APPEND INBOX (\\Foo) ",
                                  b'A1 APPEND INBOX "31-Feb-1994 21:52:25 -0800" ', b'A1 APPEND INBOX "7-Feb-1994" ',
                                  b'A1 APPEND INBOX "07-Feb-1994 25:52:25 -0800" ', b'A1 APPEND INBOX "07-Feb-1994 21:52:25 -0860" ',
                                  b'A1 APPEND INBOX "07-Fev-1994 21:52:25 -0800" ', b"A1 APPEND INBOX (\\Seen)",
                                  b"A1 APPEND ", b'A1 APPEND INBOX "07-Feb-1994 21:52:25 -0800" (\\Seen) ',
                                  b"A1 APPEND INBOX x "])
def test_append_errors(head):
    assert bad(head, L(b"msg"), b"").tag == "A1"


def test_append_needs_a_literal_message():
    assert bad(b'A1 APPEND INBOX "hello"').tag == "A1"
    assert bad(b"A1 APPEND INBOX ").tag == "A1"
    assert bad(b"A1 APPEND INBOX ", L(b"a"), b" ", L(b"b"), b"").tag == "A1"  # no MULTIAPPEND


def test_append_prefix_recognizes_the_message_literal():
    assert append_prefix([b"A1 APPEND INBOX "]) == AppendPrefix("A1", "INBOX", (), None)
    assert append_prefix([b"A1 APPEND Sent (\\Seen $x) "]) == AppendPrefix("A1", "Sent", ("\\Seen", "$x"), None)
    assert append_prefix([b'a append inbox "07-Feb-1994 21:52:25 -0800" ']) == AppendPrefix(
        "a", "INBOX", (), calendar.timegm((1994, 2, 8, 5, 52, 25)))
    assert append_prefix([b"A1 APPEND ", L(b"Sent Items"), b" "]) == AppendPrefix("A1", "Sent Items", (), None)
    assert append_prefix([b"A1 APPEND ", L(b"x"), b' () "07-Feb-1994 21:52:25 -0800" ']).mailbox == "x"


def test_append_prefix_says_none_for_other_literals():
    assert append_prefix([b"A1 APPEND "]) is None  # the mailbox name is the literal
    assert append_prefix([b"A1 LOGIN "]) is None
    assert append_prefix([b"A1 LOGIN fred "]) is None
    assert append_prefix([b"A1 SEARCH TEXT "]) is None
    assert append_prefix([b"+ APPEND INBOX "]) is None
    assert append_prefix([b""]) is None
    assert append_prefix([b"A1 UID APPEND INBOX "]) is None


@pytest.mark.parametrize("parts", [[b"A1 APPEND INBOX"], [b"A1 APPEND INBOX (\\Recent) "], [b"A1 APPEND INBOX ("],
                                   [b"A1 APPEND INBOX foo "], [b'A1 APPEND INBOX "bad date" '], [b"A1 APPEND &Jjo "],
                                   [b"A1 APPEND"]])
def test_append_prefix_rejects_appends_that_can_not_be_valid(parts):
    with pytest.raises(IMAPSyntaxError) as info:
        append_prefix(parts)
    assert info.value.tag == "A1"


def test_append_prefix_agrees_with_parse_command():
    for head in ([b"A1 APPEND INBOX "], [b"A1 APPEND x (\\Flagged) "], [b"A1 APPEND ", L(b"y"), b" "]):
        prefix = append_prefix(head)
        command = parse_command(head + [StreamedLiteral(3), b""])
        assert (prefix.tag, prefix.mailbox, prefix.flags, prefix.date) == (command.tag, command.mailbox, command.flags, command.date)


# --- Date-time ----------------------------------------------------------------


def test_format_date_time_with_offset():
    epoch = calendar.timegm((1996, 7, 17, 9, 44, 25))
    assert format_date_time(epoch, utc_offset=-7 * 3600) == "17-Jul-1996 02:44:25 -0700"
    assert format_date_time(epoch + 0.9, utc_offset=0) == "17-Jul-1996 09:44:25 +0000"
    assert format_date_time(0, utc_offset=5 * 3600 + 30 * 60) == "01-Jan-1970 05:30:00 +0530"
    assert format_date_time(epoch, utc_offset=-(3 * 3600 + 30 * 60)) == "17-Jul-1996 06:14:25 -0330"


@pytest.fixture
def local_tz():
    """Run with a fixed local time zone (POSIX TZ rule, no tzdata needed)."""
    saved = os.environ.get("TZ")

    def use(rule):
        os.environ["TZ"] = rule
        time.tzset()

    yield use
    if saved is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = saved
    time.tzset()


def test_format_date_time_uses_the_local_zone(local_tz):
    local_tz("XYZ+7")  # seven hours west of UTC
    epoch = calendar.timegm((1996, 7, 17, 9, 44, 25))
    assert format_date_time(epoch) == "17-Jul-1996 02:44:25 -0700"
    local_tz("CET-1CEST,M3.5.0,M10.5.0/3")
    assert format_date_time(epoch) == "17-Jul-1996 11:44:25 +0200"
    assert format_date_time(calendar.timegm((1996, 1, 17, 9, 44, 25))) == "17-Jan-1996 10:44:25 +0100"


def test_parse_date_time():
    assert parse_date_time("17-Jul-1996 02:44:25 -0700") == calendar.timegm((1996, 7, 17, 9, 44, 25))
    assert parse_date_time(b" 1-Jan-2000 00:00:00 +0100") == calendar.timegm((1999, 12, 31, 23, 0, 0))
    assert parse_date_time(b"01-JAN-1900 00:00:00 +0000") == calendar.timegm((1900, 1, 1, 0, 0, 0))
    assert parse_date_time(b"31-Dec-1998 23:59:60 +0000") == calendar.timegm((1999, 1, 1, 0, 0, 0))
    for text in ("17-Jul-1996 02:44:25", "17-Jul-96 02:44:25 -0700", "29-Feb-1999 00:00:00 +0000",
                 "00-Jan-2000 00:00:00 +0000", "1-Jan-0000 00:00:00 +0000", "17-Jul-1996 02:44:25 0700",
                 "17-Jul-1996  2:44:25 -0700", "117-Jul-1996 02:44:25 -0700", "17-Jul-1996 02:44:61 -0700"):
        with pytest.raises(ValueError):
            parse_date_time(text)


@given(st.integers(min_value=-2208902400, max_value=253402214399), st.integers(min_value=-1439, max_value=1439))
def test_date_time_round_trip(epoch, offset_minutes):
    text = format_date_time(epoch, utc_offset=offset_minutes * 60)
    assert parse_date_time(text) == epoch


# --- SEARCH -------------------------------------------------------------------


def key(text, *more):
    return parse(b"A1 SEARCH " + text, *more).key


def test_search_rfc3501_examples():
    assert line(b'A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"') == Search(
        "A282", None,
        And((Flag("\\Flagged", True), InternalDate("since", datetime.date(1994, 2, 1)), Not(Header("from", "Smith")))))
    assert line(b'A283 SEARCH TEXT "string not in mailbox"').key == Text("string not in mailbox", False)
    assert parse(b"A284 SEARCH CHARSET UTF-8 TEXT ", L(b"XXXXXX"), b"") == Search("A284", "UTF-8", Text("XXXXXX", False))


@pytest.mark.parametrize(
    "text, expected",
    [
        (b"ALL", All()),
        (b"ANSWERED", Flag("\\Answered", True)),
        (b"DELETED", Flag("\\Deleted", True)),
        (b"DRAFT", Flag("\\Draft", True)),
        (b"FLAGGED", Flag("\\Flagged", True)),
        (b"SEEN", Flag("\\Seen", True)),
        (b"UNANSWERED", Flag("\\Answered", False)),
        (b"UNDELETED", Flag("\\Deleted", False)),
        (b"UNDRAFT", Flag("\\Draft", False)),
        (b"UNFLAGGED", Flag("\\Flagged", False)),
        (b"UNSEEN", Flag("\\Seen", False)),
        (b"KEYWORD $Forwarded", Flag("$Forwarded", True)),
        (b"UNKEYWORD Junk", Flag("Junk", False)),
        (b"RECENT", Recent(True)),
        (b"OLD", Recent(False)),
        (b"NEW", And((Recent(True), Flag("\\Seen", False)))),
        (b"BCC bob", Header("bcc", "bob")),
        (b"CC bob", Header("cc", "bob")),
        (b"FROM bob", Header("from", "bob")),
        (b"TO bob", Header("to", "bob")),
        (b'SUBJECT "hello world"', Header("subject", "hello world")),
        (b"HEADER X-Spam yes", Header("x-spam", "yes")),
        (b'HEADER Message-ID ""', Header("message-id", "")),
        (b"BODY x", Text("x", True)),
        (b"TEXT x", Text("x", False)),
        (b"BEFORE 1-Feb-1994", InternalDate("before", datetime.date(1994, 2, 1))),
        (b"ON 01-feb-1994", InternalDate("on", datetime.date(1994, 2, 1))),
        (b'SINCE "29-Feb-2024"', InternalDate("since", datetime.date(2024, 2, 29))),
        (b"SENTBEFORE 1-Feb-1994", SentDate("before", datetime.date(1994, 2, 1))),
        (b"SENTON 1-Feb-1994", SentDate("on", datetime.date(1994, 2, 1))),
        (b"SENTSINCE 1-Feb-1994", SentDate("since", datetime.date(1994, 2, 1))),
        (b"LARGER 1024", Size("larger", 1024)),
        (b"SMALLER 0", Size("smaller", 0)),
        (b"UID 2:6", UidSet(seq("2:6"))),
        (b"UID 1,3:*", UidSet(seq("1,3:*"))),
        (b"2:4,7", SeqSet(seq("2:4,7"))),
        (b"*", SeqSet(seq("*"))),
        (b"NOT SEEN", Not(Flag("\\Seen", True))),
        (b"OR SEEN FLAGGED", Or(Flag("\\Seen", True), Flag("\\Flagged", True))),
        (b"(SEEN)", Flag("\\Seen", True)),
        (b"(SEEN FLAGGED) DELETED", And((And((Flag("\\Seen", True), Flag("\\Flagged", True))), Flag("\\Deleted", True)))),
        (b"OR (FROM a TO b) NOT 1:5", Or(And((Header("from", "a"), Header("to", "b"))), Not(SeqSet(seq("1:5"))))),
        (b"or or seen answered not uid 5", Or(Or(Flag("\\Seen", True), Flag("\\Answered", True)), Not(UidSet(seq("5"))))),
    ],
)
def test_search_keys(text, expected):
    assert key(text) == expected


def test_search_strings_may_be_literals_everywhere():
    for name, expected in ((b"BCC", Header("bcc", "a b")), (b"BODY", Text("a b", True)), (b"CC", Header("cc", "a b")),
                           (b"FROM", Header("from", "a b")), (b"SUBJECT", Header("subject", "a b")),
                           (b"TEXT", Text("a b", False)), (b"TO", Header("to", "a b"))):
        assert key(name + b" ", L(b"a b"), b"") == expected
    assert key(b"HEADER ", L(b"X-Thing"), b" ", L(b"v\r\nw"), b"") == Header("x-thing", "v\r\nw")
    assert key(b"OR SUBJECT ", L(b"x"), b" (BODY ", L(b"y"), b" SEEN)") == Or(
        Header("subject", "x"), And((Text("y", True), Flag("\\Seen", True))))


def test_real_client_searches():
    # smtp4dev's tracker: these broke there.
    assert line(b"A1 UID SEARCH UID 2:6") == Search("A1", None, UidSet(seq("2:6")), uid=True)
    assert line(b"A1 SEARCH HEADER MESSAGE-ID <x@example.com>").key == Header("message-id", "<x@example.com>")
    assert line(b'A1 SEARCH HEADER "Message-ID" "<x@example.com>"').key == Header("message-id", "<x@example.com>")
    assert line(b"A1 SEARCH UNSEEN").key == Flag("\\Seen", False)  # JavaMail
    assert line(b"A1 SEARCH NOT DELETED UNSEEN").key == And((Not(Flag("\\Deleted", True)), Flag("\\Seen", False)))
    # curl -X 'UID SEARCH ...'; mutt's pattern searches
    assert line(b"A1 UID SEARCH ALL").key == All()
    assert line(b'a0005 UID SEARCH OR OR FROM "x" TO "x" CC "x"').key == Or(
        Or(Header("from", "x"), Header("to", "x")), Header("cc", "x"))


def test_search_charsets():
    assert line(b"A1 SEARCH CHARSET us-ascii ALL").charset == "US-ASCII"
    assert line(b'A1 SEARCH CHARSET "utf-8" ALL').charset == "UTF-8"
    assert parse(b"A1 SEARCH CHARSET ", L(b"UTF-8"), b" ALL").charset == "UTF-8"
    assert line(b"A1 SEARCH ALL").charset is None
    # 8-bit strings are UTF-8 unless the charset says US-ASCII
    assert key("SUBJECT \"café\"".encode()) == Header("subject", "café")
    assert parse(b"A1 SEARCH CHARSET UTF-8 BODY ", L("日本".encode()), b"").key == Text("日本", True)
    assert parse(b"A1 SEARCH BODY ", L(b"\xff\xfe"), b"").key == Text("\ufffd\ufffd", True)
    assert parse(b"A1 SEARCH CHARSET US-ASCII BODY ", L("é".encode()), b"").key == Text("\ufffd\ufffd", True)


def test_unsupported_charset_is_its_own_error():
    for text in (b"A1 SEARCH CHARSET KOI8-R ALL", b"A1 UID SEARCH CHARSET ISO-8859-1 TEXT x"):
        with pytest.raises(BadCharset) as info:
            line(text)
        assert info.value.tag == "A1"
    assert isinstance(BadCharset("A", "x"), IMAPSyntaxError)


@pytest.mark.parametrize("text", [b"", b"FOO", b"SEEN ", b"SEEN  FLAGGED", b"OR SEEN", b"NOT", b"(SEEN", b"SEEN)",
                                  b"()", b"BEFORE 31-Feb-1994", b"BEFORE 1-Foo-1994", b"BEFORE 1994-02-01",
                                  b"BEFORE 1-Feb-94", b"LARGER x", b"LARGER 4294967296", b"LARGER -1", b"UID x", b"UID 0",
                                  b"0", b"1:0", b"KEYWORD \\Seen", b"KEYWORD", b"HEADER X", b'SUBJECT "a', b"CHARSET",
                                  b"CHARSET UTF-8", b"1,,2", b"1:2:3", b"SEEN(FLAGGED)"])
def test_search_errors(text):
    assert bad(b"A1 SEARCH " + text).tag == "A1"


def test_search_nesting_is_limited_not_a_recursion_error():
    assert key(b"NOT " * (MAX_NESTING - 2) + b"SEEN") is not None
    assert bad(b"A1 SEARCH " + b"NOT " * 5000 + b"SEEN").tag == "A1"
    assert bad(b"A1 SEARCH " + b"(" * 5000 + b"SEEN" + b")" * 5000).tag == "A1"
    assert bad(b"A1 SEARCH " + b"OR SEEN " * 5000 + b"SEEN").tag == "A1"


# --- FETCH ------------------------------------------------------------------


def section(echo, *, peek=False, part=(), kind="", fields=(), partial=None):
    return BodySection(peek, part, kind, fields, partial, Raw(echo))


def test_fetch_rfc3501_example():
    command = line(b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])")
    assert command == Fetch("A654", seq("2:4"), (
        "FLAGS", section(b"BODY[HEADER.FIELDS (DATE FROM)]", kind="HEADER.FIELDS", fields=("DATE", "FROM"))))


@pytest.mark.parametrize(
    "macro, items",
    [(b"ALL", ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE")),
     (b"fast", ("FLAGS", "INTERNALDATE", "RFC822.SIZE")),
     (b"Full", ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"))],
)
def test_fetch_macros_are_expanded(macro, items):
    assert line(b"A1 FETCH 1:* " + macro).items == items


def test_fetch_macros_only_alone():
    assert bad(b"A1 FETCH 1 (ALL)").tag == "A1"
    assert bad(b"A1 FETCH 1 (FLAGS FAST)").tag == "A1"


@pytest.mark.parametrize("item", ["ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE",
                                  "RFC822.TEXT", "BODY", "BODYSTRUCTURE", "UID"])
def test_fetch_simple_items(item):
    assert line(b"A1 FETCH 1 " + item.encode()).items == (item,)
    assert line(b"A1 FETCH 1 (" + item.lower().encode() + b")").items == (item,)


@pytest.mark.parametrize(
    "text, expected",
    [
        (b"BODY[]", section(b"BODY[]")),
        (b"BODY.PEEK[]", section(b"BODY[]", peek=True)),
        (b"body.peek[]<0.2048>", section(b"BODY[]<0>", peek=True, partial=(0, 2048))),
        (b"BODY[]<4294967295.1>", section(b"BODY[]<4294967295>", partial=(4294967295, 1))),
        (b"BODY[HEADER]", section(b"BODY[HEADER]", kind="HEADER")),
        (b"BODY[text]", section(b"BODY[TEXT]", kind="TEXT")),
        (b"BODY[1]", section(b"BODY[1]", part=(1,))),
        (b"BODY[1.2.3]", section(b"BODY[1.2.3]", part=(1, 2, 3))),
        (b"BODY[4.2.MIME]", section(b"BODY[4.2.MIME]", part=(4, 2), kind="MIME")),
        (b"BODY[3.HEADER]", section(b"BODY[3.HEADER]", part=(3,), kind="HEADER")),
        (b"BODY[3.TEXT]<5.10>", section(b"BODY[3.TEXT]<5>", part=(3,), kind="TEXT", partial=(5, 10))),
        (b"BODY[HEADER.FIELDS.NOT (Received x-spam)]",
         section(b"BODY[HEADER.FIELDS.NOT (RECEIVED X-SPAM)]", kind="HEADER.FIELDS.NOT", fields=("RECEIVED", "X-SPAM"))),
        (b"BODY.PEEK[2.HEADER.FIELDS (To)]<0.100>",
         section(b"BODY[2.HEADER.FIELDS (TO)]<0>", peek=True, part=(2,), kind="HEADER.FIELDS", fields=("TO",), partial=(0, 100))),
        (b'BODY[HEADER.FIELDS ("Subject" "odd name")]',
         section(b'BODY[HEADER.FIELDS (SUBJECT "ODD NAME")]', kind="HEADER.FIELDS", fields=("SUBJECT", "ODD NAME"))),
        (b"BODY[HEADER.FIELDS (a]b)]", section(b'BODY[HEADER.FIELDS ("A]B")]', kind="HEADER.FIELDS", fields=("A]B",))),
    ],
)
def test_fetch_body_sections(text, expected):
    assert line(b"A1 FETCH 1 " + text).items == (expected,)
    assert line(b"A1 FETCH 1 (FLAGS " + text + b")").items == ("FLAGS", expected)


def test_fetch_header_field_names_as_literals():
    item = parse(b"A1 FETCH 1 (BODY.PEEK[HEADER.FIELDS (", L(b"From"), b" ", L(b"X Y"), b")])").items[0]
    assert item.fields == ("FROM", "X Y")
    assert item.echo == b'BODY[HEADER.FIELDS (FROM "X Y")]'
    item = parse(b"A1 FETCH 1 BODY[HEADER.FIELDS (", L(b"A\r\nB"), b")]").items[0]
    assert item.echo == b"BODY[HEADER.FIELDS ({4}\r\nA\r\nB)]"  # the echo is valid IMAP: a literal


@pytest.mark.parametrize("text", [b"BODY.PEEK", b"BODY[", b"BODY[]<0>", b"BODY[]<0.0>", b"BODY[]<x.1>", b"BODY[]<1.2",
                                  b"BODY[MIME]", b"BODY[0]", b"BODY[1.0]", b"BODY[1.]", b"BODY[.1]", b"BODY[1..2]",
                                  b"BODY[HEADER.FIELDS]", b"BODY[HEADER.FIELDS ()]", b"BODY[HEADER.FIELDS (A]",
                                  b"BODY[HEADER.FIELDS.NOT(A)]", b"BODY[1.HEADER.2]", b"BODY[FOO]", b"BODY[TEXT.1]",
                                  b"BODY[HEADER] ", b"BODYSTRUCTURE[]", b"RFC822[]", b"FLAGS[]", b"BINARY[]", b"FOO",
                                  b"()", b"(FLAGS", b"(FLAGS  UID)", b"FLAGS UID", b"BODY[99999999999]",
                                  b"BODY[]<99999999999.1>", b"BODY[HEADER.FIELDS (A )]", b"BODY[]<0.1><0.1>"])
def test_fetch_errors(text):
    assert bad(b"A1 FETCH 1 " + text).tag == "A1"


@pytest.mark.parametrize("text", [b"A1 FETCH", b"A1 FETCH 1", b"A1 FETCH 1 ", b"A1 FETCH x FLAGS", b"A1 FETCH 0 FLAGS",
                                  b"A1 FETCH 1:0 FLAGS", b"A1 FETCH -1 FLAGS", b"A1 FETCH 1, FLAGS", b"A1 FETCH ,1 FLAGS",
                                  b"A1 FETCH 4294967296 FLAGS", b"A1 FETCH 1:* FLAGS x", b"A1 FETCH $ FLAGS"])
def test_fetch_command_errors(text):
    assert bad(text).tag == "A1"


def test_thunderbird_fetches():
    header_fetch = (b"UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority "
                    b"X-Priority References Newsgroups In-Reply-To Content-Type Reply-To Received)]")
    command = line(b"9 UID FETCH 1:3,5 (" + header_fetch + b")")
    assert command.uid is True
    assert command.sequence_set == seq("1:3,5")
    assert command.items[:3] == ("UID", "RFC822.SIZE", "FLAGS")
    body = command.items[3]
    assert body.peek and body.kind == "HEADER.FIELDS" and body.partial is None
    assert body.fields[0] == "FROM" and body.fields[-1] == "RECEIVED" and len(body.fields) == 15
    assert body.echo.startswith(b"BODY[HEADER.FIELDS (FROM TO CC BCC SUBJECT DATE MESSAGE-ID ")
    assert not command.sets_seen
    assert line(b"10 UID FETCH 1:* (FLAGS)") == Fetch("10", seq("1:*"), ("FLAGS",), uid=True)
    assert line(b"11 UID FETCH 7:9,11 (UID RFC822.SIZE BODY.PEEK[])").items == (
        "UID", "RFC822.SIZE", section(b"BODY[]", peek=True))
    assert line(b"12 UID FETCH 4294967295:* (FLAGS)").sequence_set.resolve(17).ranges == ((17, 17),)


def test_uid_fetch_does_not_add_the_uid_item():
    # RFC 3501 6.4.8: the response carries UID anyway; the engine adds it.
    assert line(b"A1 UID FETCH 1 FLAGS").items == ("FLAGS",)


def test_fetch_drops_duplicate_items():
    assert line(b"A1 FETCH 1 (UID FLAGS UID BODY.PEEK[] BODY.PEEK[])").items == ("UID", "FLAGS", section(b"BODY[]", peek=True))


def test_fetch_sets_seen():
    assert line(b"A1 FETCH 1 BODY[TEXT]").sets_seen
    assert line(b"A1 FETCH 1 RFC822").sets_seen
    assert line(b"A1 FETCH 1 RFC822.TEXT").sets_seen
    assert not line(b"A1 FETCH 1 (RFC822.HEADER RFC822.SIZE BODY BODY.PEEK[1])").sets_seen


# --- STORE ------------------------------------------------------------------


def test_store_rfc3501_example():
    assert line(b"A003 STORE 2:4 +FLAGS (\\Deleted)") == Store("A003", seq("2:4"), "add", False, ("\\Deleted",))


@pytest.mark.parametrize(
    "item, action, silent",
    [(b"FLAGS", "replace", False), (b"+FLAGS", "add", False), (b"-FLAGS", "remove", False),
     (b"FLAGS.SILENT", "replace", True), (b"+flags.silent", "add", True), (b"-Flags.Silent", "remove", True)],
)
def test_store_items(item, action, silent):
    command = line(b"A1 UID STORE 5 " + item + b" (\\Seen)")
    assert (command.action, command.silent, command.flags, command.uid) == (action, silent, ("\\Seen",), True)


def test_store_flag_forms():
    assert line(b"A1 STORE 1 FLAGS ()").flags == ()
    assert line(b"A1 STORE 1 +FLAGS \\Seen \\Flagged").flags == ("\\Seen", "\\Flagged")
    assert line(b"A1 STORE 1 +FLAGS \\Seen").flags == ("\\Seen",)
    assert line(b"A1 STORE 1 FLAGS (\\SEEN \\answered \\FlAgGeD \\deleted \\draft)").flags == (
        "\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")
    assert line(b"A1 STORE 1 +FLAGS ($Forwarded NonJunk $label1 \\Seen $Forwarded)").flags == (
        "$Forwarded", "NonJunk", "$label1", "\\Seen")


@pytest.mark.parametrize("text", [b"FLAGS (\\Recent)", b"FLAGS \\recent", b"FLAGS (\\Foo)", b"FLAGS (\\*)",
                                  b"FLAGS (\\)", b"FLAGS (a(b)", b"FLAGS (a%b)", b'FLAGS ("x")', b"FLAGS", b"FLAGS ",
                                  b"FLAGS (\\Seen", b"FLAGS \\Seen )", b"*FLAGS (\\Seen)", b"FLAGS.LOUD (\\Seen)",
                                  b"FLAGSX (\\Seen)", b"+FLAGS.SILENT", b"FLAGS (\\Seen  \\Draft)", b"FLAGS (a]b)"])
def test_store_errors(text):
    assert bad(b"A1 STORE 1 " + text).tag == "A1"


def test_store_recent_error_says_why():
    assert "Recent" in bad(b"A1 STORE 1 +FLAGS (\\Recent)").text


# --- COPY, MOVE ---------------------------------------------------------------


def test_copy_and_move():
    assert line(b"A003 COPY 2:4 MEETING") == Copy("A003", seq("2:4"), "MEETING")
    assert line(b"A1 UID COPY 7:9,11 Trash") == Copy("A1", seq("7:9,11"), "Trash", uid=True)
    assert line(b"a MOVE 1:* inbox") == Move("a", seq("1:*"), "INBOX")
    assert parse(b"a UID MOVE 42 ", L(b"Deleted Items"), b"") == Move("a", seq("42"), "Deleted Items", uid=True)
    for text in (b"a COPY 1", b"a COPY x y", b"a MOVE 1 ", b"a UID COPY 1 a b"):
        assert bad(text).tag == "a"


# --- ID, ENABLE -------------------------------------------------------------


def test_id():
    assert line(b'A1 ID ("name" "Thunderbird" "version" "153.8.0")') == Id(
        "A1", (("name", "Thunderbird"), ("version", "153.8.0")))
    assert line(b"A1 ID NIL") == Id("A1", None)
    assert line(b"A1 ID nil") == Id("A1", None)
    assert line(b"A1 ID ()") == Id("A1", ())
    assert line(b'A1 ID ("support-url" NIL)') == Id("A1", (("support-url", None),))
    assert parse(b"A1 ID (", L(b"name"), b" ", L(b"x y"), b")") == Id("A1", (("name", "x y"),))
    for text in (b"A1 ID", b"A1 ID (\"a\")", b'A1 ID ("a" "b"', b"A1 ID X", b'A1 ID ("a" "b" )', b"A1 ID (\"a\"\"b\")"):
        assert bad(text).tag == "A1"


def test_enable():
    assert line(b"t2 ENABLE CONDSTORE X-GOOD-IDEA") == Enable("t2", ("CONDSTORE", "X-GOOD-IDEA"))
    assert line(b"t2 enable utf8=accept").capabilities == ("UTF8=ACCEPT",)
    assert bad(b"t2 ENABLE").tag == "t2"
    assert bad(b"t2 ENABLE ").tag == "t2"
    assert bad(b"t2 ENABLE (X)").tag == "t2"


# --- Sequence sets ----------------------------------------------------------


def test_sequence_set_parse_and_str():
    assert seq("1").items == ((1, 1),)
    assert seq("*").items == ((None, None),)
    assert seq("2,4:7,9,12:*").items == ((2, 2), (4, 7), (9, 9), (12, None))
    assert seq("5:2").items == ((5, 2),)
    assert str(seq("2,4:7,9,12:*,*:3,*")) == "2,4:7,9,12:*,*:3,*"
    for text in ("0", "", "1,", ",1", "1:", ":1", "1:2:3", "a", "1,,2", "4294967296", "-1", "01x", "1 2", "00"):
        with pytest.raises(ValueError):
            seq(text)
    assert seq("4294967295").items == ((4294967295, 4294967295),)
    assert seq("007").items == ((7, 7),)


def test_sequence_set_resolution_rfc3501_example():
    # RFC 3501 section 9, seq-number: 2,4:7,9,12:* with 15 messages
    assert list(seq("2,4:7,9,12:*").resolve(15)) == [2, 4, 5, 6, 7, 9, 12, 13, 14, 15]


def test_sequence_set_resolution():
    assert seq("5:2").resolve(10).ranges == ((2, 5),)
    assert seq("*:3").resolve(10).ranges == ((3, 10),)
    assert seq("1:3,2:6,8,7,20").resolve(10).ranges == ((1, 8),)
    assert seq("9,1,5:4").resolve(10).ranges == ((1, 1), (4, 5), (9, 9))
    assert seq("*").resolve(10).ranges == ((10, 10),)
    assert seq("1:*").resolve(0).ranges == ()
    assert not seq("1:*").resolve(0)
    assert seq("11:20").resolve(10).ranges == ()
    assert seq("8:20").resolve(10).ranges == ((8, 10),)


def test_uid_range_past_the_highest_uid_means_the_highest():
    # RFC 3501 6.4.8: n:* with n > highest UID holds the highest UID
    numbers = seq("100:*").resolve(42)
    assert numbers.ranges == ((42, 42),)
    assert 42 in numbers and 41 not in numbers and 100 not in numbers
    assert seq("100").resolve(42).ranges == ()


def test_huge_ranges_are_never_expanded():
    start = time.perf_counter()
    numbers = seq("1:4294967295").resolve(10)
    many = seq("1:4294967295").resolve(4294967295)
    assert numbers.ranges == ((1, 10),)
    assert len(many) == 4294967295
    assert 4000000000 in many and 0 not in many
    assert list(many.indices_in([1, 5, 4000000000])) == [0, 1, 2]
    assert seq("1:4294967295").contains(123456789, 4294967295)
    assert time.perf_counter() - start < 0.05


def test_number_set_membership_and_indices():
    numbers = seq("2:4,10,20:30").resolve(100)
    assert [n for n in range(35) if n in numbers] == [2, 3, 4, 10, *range(20, 31)]
    assert "3" not in numbers
    assert len(numbers) == 15
    uids = [1, 3, 4, 9, 10, 25, 31, 1000]
    assert list(numbers.indices_in(uids)) == [1, 2, 4, 5]
    assert list(numbers.indices_in([])) == []
    assert numbers == NumberSet([(2, 4), (10, 10), (20, 30)])
    assert hash(numbers) == hash(NumberSet([(2, 4), (10, 10), (20, 30)]))


def test_largest_number():
    assert seq("1:5,3").largest_number == 5
    assert seq("*").largest_number == 0
    assert seq("7:*").largest_number == 7


@settings(max_examples=200)
@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(1, 60)), st.one_of(st.none(), st.integers(1, 60))),
                min_size=1, max_size=8),
       st.integers(0, 50))
def test_sequence_set_resolution_matches_brute_force(items, maximum):
    sequence_set = SequenceSet(tuple(items))
    expected = set()
    if maximum:
        for lo, hi in items:
            lo = maximum if lo is None else lo
            hi = maximum if hi is None else hi
            expected.update(n for n in range(min(lo, hi), max(lo, hi) + 1) if n <= maximum)
    resolved = sequence_set.resolve(maximum)
    assert list(resolved) == sorted(expected)
    assert len(resolved) == len(expected)
    assert all((n in resolved) == (n in expected) for n in range(0, 62))
    for (lo1, hi1), (lo2, hi2) in zip(resolved.ranges, resolved.ranges[1:]):
        assert hi1 + 1 < lo2  # merged: disjoint and not adjacent
    assert SequenceSet.parse(str(sequence_set)) == sequence_set


def test_format_sequence():
    assert format_sequence([]) == ""
    assert format_sequence([5]) == "5"
    assert format_sequence([1, 2, 3, 5, 7, 8]) == "1:3,5,7:8"
    assert format_sequence([3, 4, 5, 9, 2]) == "3:5,9,2"
    assert format_sequence([4, 3]) == "4,3"


@given(st.lists(st.integers(1, 100), max_size=30))
def test_format_sequence_keeps_order(numbers):
    text = format_sequence(numbers)
    if numbers:
        expanded = [n for lo, hi in SequenceSet.parse(text).items for n in range(lo, hi + 1)]
        assert expanded == numbers


# --- Modified UTF-7 -------------------------------------------------------------


def test_modified_utf7_rfc3501_example():
    name = "~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e"
    assert encode_mailbox(name) == b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    assert decode_mailbox(b"~peter/mail/&U,BTFw-/&ZeVnLIqe-") == name


@pytest.mark.parametrize(
    "text, data",
    [("", b""), ("INBOX", b"INBOX"), ("&", b"&-"), ("a&b&&", b"a&-b&-&-"), ("Entw\u00fcrfe", b"Entw&APw-rfe"),
     ("\u00e9t\u00e9", b"&AOk-t&AOk-"), ("\U0001f600", b"&2D3eAA-"), ("\u263a!", b"&Jjo-!"), ("~/a b", b"~/a b"),
     ("\x00", b"&AAA-"), ("\u00e9\u00e9\u00e9", b"&AOkA6QDp-")],
)
def test_modified_utf7_examples(text, data):
    assert encode_mailbox(text) == data
    assert decode_mailbox(data) == text


@pytest.mark.parametrize("data", [b"&", b"&-&", b"&Jjo", b"&Jjo!-", b"&AGE-", b"&Jjo-&Jjo-", b"&Jj-", b"&Jjr-",
                                  b"&2D0-", b"&3gA-", b"&U/BTFw-", b"&U=-", b"\xc3\xa9", b"a\tb",
                                  b"\x7f", b"&ACY-", b"&AOkA6QDpAA-"])
def test_modified_utf7_invalid(data):
    with pytest.raises(ValueError):
        decode_mailbox(data)


def test_encode_mailbox_refuses_lone_surrogates():
    with pytest.raises(ValueError):
        encode_mailbox("a\ud800b")


@given(st.text())
@example("&&-")
@example("\u00e9&\u00e9")
def test_modified_utf7_round_trip(name):
    data = encode_mailbox(name)
    assert data.isascii() and all(0x20 <= b <= 0x7E for b in data)
    assert decode_mailbox(data) == name


@given(st.binary(max_size=20))
def test_decode_mailbox_is_canonical_or_refuses(data):
    try:
        name = decode_mailbox(data)
    except ValueError:
        return
    assert encode_mailbox(name) == data


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30))
def test_any_mailbox_name_survives_the_wire(name):
    assume(name.upper() != "INBOX")
    wire = encode(encode_mailbox(name))  # quoted or literal, as a client would send it
    if wire.startswith(b"{"):
        parts = [b"A1 SELECT ", Literal(wire.split(b"\r\n", 1)[1]), b""]
    else:
        parts = [b"A1 SELECT " + wire]
    assert parse_command(parts).mailbox == name


# --- LIST pattern matching ----------------------------------------------------

NAMES = ["INBOX", "INBOX.Sub", "Lists", "Lists.python", "Lists.python.dev", "Lists.debian", "Sent", "Archive.2024",
         "Inboxes", "Trash"]


def matching(reference, pattern):
    match = mailbox_matcher(reference, pattern, ".")
    return [name for name in NAMES if match(name)]


def test_star_and_percent():
    assert matching("", "*") == NAMES
    assert matching("", "%") == ["INBOX", "Lists", "Sent", "Inboxes", "Trash"]
    assert matching("", "Lists.%") == ["Lists.python", "Lists.debian"]
    assert matching("", "Lists.*") == ["Lists.python", "Lists.python.dev", "Lists.debian"]
    assert matching("", "Lists*") == ["Lists", "Lists.python", "Lists.python.dev", "Lists.debian"]
    assert matching("", "%.%") == ["INBOX.Sub", "Lists.python", "Lists.debian", "Archive.2024"]
    assert matching("", "*.dev") == ["Lists.python.dev"]
    assert matching("", "%s") == ["Lists", "Inboxes"]
    assert matching("", "%%*%") == NAMES
    assert matching("", "Sent") == ["Sent"]
    assert matching("", "sent") == []  # only INBOX is case-insensitive
    assert matching("", "") == []


def test_inbox_matches_case_insensitively():
    assert matching("", "inbox") == ["INBOX"]
    assert matching("", "Inbox.sub") == []  # the part after INBOX. keeps its case
    assert matching("", "Inbox.Sub") == ["INBOX.Sub"]
    assert matching("", "inbox.%") == ["INBOX.Sub"]
    assert matching("", "in%") == ["INBOX"]
    assert matching("", "in*") == ["INBOX", "INBOX.Sub"]
    assert matching("", "Inbox*") == ["INBOX", "INBOX.Sub", "Inboxes"]
    assert matching("", "\u0131nbox") == []


def test_reference_and_pattern_combine():
    assert matching("Lists.", "%") == ["Lists.python", "Lists.debian"]
    assert matching("Lists.", ".%") == ["Lists.python", "Lists.debian"]
    assert matching("Lists", ".%") == ["Lists.python", "Lists.debian"]
    assert matching("Lists.", "*") == ["Lists.python", "Lists.python.dev", "Lists.debian"]
    assert matching("Lists.python", "") == ["Lists.python"]
    assert matching("Archive.", "2024") == ["Archive.2024"]


def test_pathological_patterns_are_fast():
    match = mailbox_matcher("", "*a" * 40 + "b", ".")
    start = time.perf_counter()
    assert not match("a" * 500)
    assert mailbox_matcher("", "%a" * 40 + "%", ".")("a" * 40)
    assert time.perf_counter() - start < 0.5


@settings(max_examples=300)
@given(st.text(alphabet="ab.*%", max_size=8), st.text(alphabet="ab.", max_size=8))
def test_matcher_agrees_with_a_regular_expression(pattern, name):
    import re

    regex = "".join(".*" if c == "*" else "[^.]*" if c == "%" else re.escape(c) for c in pattern)
    assert mailbox_matcher("", pattern, ".")(name) == bool(re.fullmatch(regex, name, re.S))


# --- Fuzzing ----------------------------------------------------------------

TOKENS = [b"A1", b" ", b"UID", b"FETCH", b"SEARCH", b"STORE", b"COPY", b"MOVE", b"LIST", b"LSUB", b"APPEND", b"LOGIN",
          b"AUTHENTICATE", b"SELECT", b"EXAMINE", b"STATUS", b"ID", b"ENABLE", b"EXPUNGE", b"RENAME", b"CREATE", b"(",
          b")", b"[", b"]", b"<", b">", b".", b"1", b"0", b"*", b":", b",", b'"', b"\\", b"BODY", b"BODY.PEEK",
          b"HEADER.FIELDS", b"HEADER.FIELDS.NOT", b"MIME", b"TEXT", b"HEADER", b"NOT", b"OR", b"ALL", b"FAST", b"+FLAGS",
          b"FLAGS.SILENT", b"\\Seen", b"\\Recent", b"CHARSET", b"UTF-8", b"&", b"-", b"&U,BTFw-", b"{", b"}", b"\x00",
          b"\xff", b"\r", b"NIL", b"RETURN", b"SPECIAL-USE", b"SUBSCRIBED", b"RECURSIVEMATCH", b"4294967296",
          b"1-Feb-1994", b'"07-Feb-1994 21:52:25 -0800"', b"UID", b"SINCE", b"LARGER", b"KEYWORD", b"=", b"AA=="]

text_part = st.one_of(
    st.lists(st.sampled_from(TOKENS), max_size=25).map(b"".join),
    st.binary(max_size=40),
)
literal_part = st.one_of(st.binary(max_size=10).map(Literal), st.integers(0, 10**9).map(StreamedLiteral))
parts_strategy = st.lists(st.one_of(text_part, literal_part), max_size=8)
command_start = st.sampled_from([b"A1 ", b"A1 UID ", b"a "]).flatmap(
    lambda start: st.tuples(st.just(start), st.sampled_from(TOKENS[1:25]), parts_strategy))


def outcome(parts):
    try:
        result = parse_command(parts)
    except IMAPSyntaxError as error:
        assert error.tag is None or isinstance(error.tag, str)
        assert isinstance(error.text, str) and error.text
        return error
    assert isinstance(result, Command)
    hash(result)
    return result


@settings(max_examples=1500)
@given(parts_strategy)
def test_fuzz_parts_give_a_command_or_a_syntax_error(parts):
    outcome(parts)
    try:
        append_prefix(parts)
    except IMAPSyntaxError:
        pass


@settings(max_examples=1500)
@given(command_start)
def test_fuzz_after_a_valid_command_name(start):
    head, name, parts = start
    parts = [head + name + b" "] + parts
    outcome(parts)
    try:
        append_prefix(parts)
    except IMAPSyntaxError:
        pass


VALID_COMMANDS = [
    b"A1 UID FETCH 1:3,5 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Subject)])",
    b"A1 FETCH 2:* (FLAGS BODY[1.2.MIME]<0.100> BODY[HEADER.FIELDS.NOT (X)] ENVELOPE)",
    b"A1 FETCH 1 FULL",
    b'A1 SEARCH CHARSET UTF-8 OR (FROM "a b" SINCE 1-Feb-1994) NOT HEADER X-A "" UID 1:*,5 2:4 LARGER 10',
    b"A1 UID SEARCH NOT OR SEEN KEYWORD $x SENTON 29-Feb-2024 TEXT x",
    b"A1 UID STORE 1:* +FLAGS.SILENT (\\Seen $Junk)",
    b"A1 STORE 5 FLAGS \\Deleted \\Draft",
    b'A1 LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" %.x*) RETURN (CHILDREN SPECIAL-USE)',
    b'A1 LSUB "#news." "comp.%"',
    b"A1 SELECT INBOX (QRESYNC (1 2 3:*) CONDSTORE)",
    b"A1 STATUS &U,BTFw- (MESSAGES UIDNEXT)",
    b'A1 APPEND Sent (\\Seen) " 7-Feb-1994 21:52:25 -0800" ',
    b'A1 ID ("name" "x" "v" NIL)',
    b"A1 AUTHENTICATE PLAIN AHRlc3QAdGVzdA==",
    b'A1 LOGIN "fred" "pa\\"ss"',
    b"A1 UID MOVE 1:5 Trash",
    b"A1 RENAME a b",
    b"A1 ENABLE UTF8=ACCEPT",
    b"A1 UID EXPUNGE 3:5",
]


@st.composite
def mutated_commands(draw):
    """A valid command, mutated a little, with a stretch turned into a literal."""
    text = bytearray(draw(st.sampled_from(VALID_COMMANDS)))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["delete", "insert", "replace", "truncate"]))
        if action == "delete":
            del text[at : at + draw(st.integers(1, 4))]
        elif action == "insert":
            text[at:at] = draw(st.sampled_from(TOKENS))
        elif action == "replace" and at < len(text):
            text[at] = draw(st.integers(0, 255))
        elif action == "truncate":
            del text[at:]
    text = bytes(text)
    if text.endswith(b" ") and draw(st.booleans()):
        return [text, draw(literal_part), b""]
    if draw(st.booleans()) and len(text) > 4:
        start = draw(st.integers(3, len(text) - 1))  # mostly after the tag
        stop = draw(st.integers(start, len(text)))
        return [text[:start], Literal(text[start:stop]), text[stop:]]
    return [text]


@settings(max_examples=3000)
@given(mutated_commands())
def test_fuzz_mutated_valid_commands(parts):
    outcome(parts)
    try:
        append_prefix(parts)
    except IMAPSyntaxError:
        pass


def test_valid_commands_of_the_fuzzer_are_valid():
    for text in VALID_COMMANDS:
        if b"APPEND" in text:
            assert isinstance(parse_command([text, Literal(b"x"), b""]), Append)
        else:
            assert isinstance(parse_command([text]), Command)


@settings(max_examples=500)
@given(st.sampled_from([b"A1 SEARCH ", b"A1 UID SEARCH CHARSET UTF-8 "]),
       st.lists(st.sampled_from([b"NOT ", b"OR ", b"(", b")", b" ", b"SEEN", b"1:*", b"FROM x", b"BEFORE 1-Jan-2000",
                                 b"UID 3", b"HEADER a b", b"TEXT "]), max_size=40))
def test_fuzz_search(head, tokens):
    outcome([head + b"".join(tokens)])


# --- Speed ------------------------------------------------------------------


def per_call(parts, number=2000):
    return timeit.timeit(lambda: parse_command(parts), number=number) / number


def test_parsing_is_fast():
    header_fetch = [b"A3 UID FETCH 1:100 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date "
                    b"Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To Received)])"]
    big_set = [b"A2 UID FETCH " + b",".join(b"%d:%d" % (i * 3, i * 3 + 1) for i in range(1, 101)) + b" (FLAGS)"]
    # Generous bounds (CI machines vary); typical figures are 20 and 45 us.
    assert per_call(header_fetch) < 300e-6
    assert per_call(big_set) < 600e-6
    assert per_call([b"A1 UID FETCH 1:4294967295 (FLAGS)"]) < 60e-6
