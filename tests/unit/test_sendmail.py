import io

import pytest

from baremail.sendmail import Options, UsageError, complete, parse_args, read_message


def test_recipients_and_common_ignored_options():
    options = parse_args(["-oi", "-oem", "-odi", "-odb", "-bm", "-v", "root", "admin@example.org"])
    assert options.recipients == ["root", "admin@example.org"]
    assert options.dot_ends_input is False and options.mode == "m"


def test_sender_and_full_name_attached_or_separate():
    assert parse_args(["-fcron@host", "x"]).sender == "cron@host"
    assert parse_args(["-f", "cron@host", "x"]).sender == "cron@host"
    assert parse_args(["-r", "r@host", "x"]).sender == "r@host"
    assert parse_args(["-f", "<>", "x"]).sender == ""
    assert parse_args(["-F", "Cron Daemon", "x"]).full_name == "Cron Daemon"
    assert parse_args(["-FCron", "x"]).full_name == "Cron"


def test_t_and_i_flags_and_double_dash():
    options = parse_args(["-t", "-i", "--", "-notanoption"])
    assert options.from_headers and not options.dot_ends_input
    assert options.recipients == ["-notanoption"]


def test_o_with_separate_word_and_values_ignored():
    assert parse_args(["-o", "DeliveryMode=b", "-O", "x=y", "-N", "never", "-R", "hdrs", "-B", "8BITMIME",
                       "-X", "/dev/null", "-L", "cron", "root"]).recipients == ["root"]


@pytest.mark.parametrize("argv", [["-Z"], ["-f"], ["-bz"], ["-o"]])
def test_unknown_or_incomplete_options_are_usage_errors(argv):
    with pytest.raises(UsageError):
        parse_args(argv)


def test_lone_dot_ends_input_unless_i():
    data = b"Subject: x\n\nbefore\n.\nafter\n"
    assert read_message(io.BytesIO(data), dot_ends_input=True) == b"Subject: x\n\nbefore\n"
    assert read_message(io.BytesIO(data), dot_ends_input=False) == data


def test_missing_from_date_and_message_id_are_added():
    message, recipients = complete(b"Subject: hi\n\nbody\n", Options(recipients=["root"], full_name="Cron Daemon"),
                                   "cron@host.example", "host.example")
    assert recipients == ["root"]
    head, body = message.split(b"\r\n\r\n", 1)
    assert b"From: Cron Daemon <cron@host.example>" in head
    assert b"\r\nDate: " in head and b"\r\nMessage-ID: <" in head and b"@host.example>" in head
    assert body == b"body\r\n"


def test_existing_headers_are_kept_untouched():
    original = b"From: a@b\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <x@y>\r\n\r\nbody\r\n"
    message, _ = complete(original, Options(recipients=["r"]), "s@h", "h")
    assert message == original


def test_t_takes_to_cc_bcc_and_drops_bcc():
    original = (b"From: a@b\nTo: One <one@x>, two@x\nCc: three@x\nBcc: secret@x,\n  hidden@x\nSubject: t\n\nbody\n")
    message, recipients = complete(original, Options(recipients=["extra@x"], from_headers=True), "a@b", "h")
    assert recipients == ["extra@x", "one@x", "two@x", "three@x", "secret@x", "hidden@x"]
    assert b"Bcc" not in message and b"hidden" not in message
    assert b"To: One <one@x>, two@x\r\n" in message


def test_message_without_headers_gets_a_header_block():
    message, _ = complete(b"just text\n", Options(recipients=["r"]), "s@h", "h")
    assert message.startswith(b"From: s@h\r\n")
    assert message.endswith(b">\r\n\r\njust text\r\n")


def test_eight_bit_content_passes_through():
    message, _ = complete("Subject: ü\n\nGrüße\n".encode(), Options(recipients=["r"]), "s@h", "h")
    assert "Grüße\r\n".encode() in message and "Subject: ü".encode() in message
