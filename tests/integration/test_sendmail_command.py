"""baremail-sendmail piping messages into a running baremail-smtp."""

import os
import subprocess
import time

import pytest

from servicekit import PYTHON, ROOT, free_port, stored_messages


def sendmail(config, args, stdin: bytes, home=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), BAREMAIL_CONFIG=str(config))
    if home:
        env["HOME"] = str(home)
    return subprocess.run([PYTHON, "-m", "baremail.sendmail", *args], input=stdin,
                          capture_output=True, env=env, timeout=60)


@pytest.fixture
def target(smtp_service, tmp_path):
    config = tmp_path / "sendmail.conf"
    config.write_text(f"[baremail]\nhostname = host.example\n[sendmail]\nserver = 127.0.0.1:{smtp_service.port}\n")
    return smtp_service, config


def test_recipients_as_arguments(target):
    service, config = target
    run = sendmail(config, ["-oi", "root", "admin@example.org"], b"Subject: args\n\nhello\n")
    assert run.returncode == 0, run.stderr
    [stored] = stored_messages(service.maildir)
    assert b"Delivered-To: root\n" in stored and b"Delivered-To: admin@example.org\n" in stored
    assert b"\nSubject: args\n" in stored and stored.endswith(b"\n\nhello\n")
    assert b"\nDate: " in stored and b"\nMessage-ID: <" in stored and b"\nFrom: " in stored


def test_t_reads_recipients_and_drops_bcc(target):
    service, config = target
    run = sendmail(config, ["-t"], b"To: a@x\nCc: b@x\nBcc: hidden@x\nSubject: t\n\nbody\n")
    assert run.returncode == 0, run.stderr
    [stored] = stored_messages(service.maildir)
    for rcpt in (b"a@x", b"b@x", b"hidden@x"):
        assert b"Delivered-To: " + rcpt + b"\n" in stored
    assert b"Bcc:" not in stored


def test_lone_dot_ends_input_without_i_and_not_with_it(target):
    service, config = target
    assert sendmail(config, ["root"], b"Subject: one\n\nbefore\n.\nafter\n").returncode == 0
    assert sendmail(config, ["-i", "root"], b"Subject: two\n\nbefore\n.\nafter\n").returncode == 0
    first, second = stored_messages(service.maildir)
    assert first.endswith(b"\n\nbefore\n")
    assert second.endswith(b"\n\nbefore\n.\nafter\n")


def test_f_sets_envelope_sender_and_f_name(target):
    service, config = target
    run = sendmail(config, ["-f", "backup@nas.example", "-F", "Backup Job", "root"], b"Subject: f\n\nx\n")
    assert run.returncode == 0, run.stderr
    [stored] = stored_messages(service.maildir)
    assert stored.startswith(b"Return-Path: <backup@nas.example>\n")
    assert b"\nFrom: Backup Job <backup@nas.example>\n" in stored


def test_eight_bit_content_arrives_intact(target):
    service, config = target
    message = "Subject: Grüße\n\nÄrger mit /dev/sda – 95 °C\n".encode()
    run = sendmail(config, ["root"], message)
    assert run.returncode == 0, run.stderr
    [stored] = stored_messages(service.maildir)
    assert "Ärger mit /dev/sda – 95 °C\n".encode() in stored


def test_service_down_exits_75_and_keeps_the_message(tmp_path):
    config = tmp_path / "down.conf"
    config.write_text(f"[sendmail]\nserver = 127.0.0.1:{free_port()}\nretry_time = 1\n")
    run = sendmail(config, ["root"], b"Subject: lost?\n\nnot lost\n", home=tmp_path)
    assert run.returncode == 75
    err = run.stderr.decode()
    assert err.count("\n") == 1 and "cannot reach BareMail SMTP" in err and "dead.letter" in err
    assert b"not lost" in (tmp_path / "dead.letter").read_bytes()


def test_no_recipients_is_a_usage_error(target):
    _, config = target
    run = sendmail(config, [], b"Subject: x\n\nx\n")
    assert run.returncode == 64 and b"no recipients" in run.stderr


def test_bad_option_is_a_usage_error(target):
    _, config = target
    run = sendmail(config, ["-Z", "root"], b"x")
    assert run.returncode == 64 and run.stderr.decode().count("\n") == 1


def test_service_not_there_yet_is_waited_for_and_the_message_lands_once(start_service, tmp_path):
    # What a restart or an upgrade looks like from sendmail's side: the
    # port refuses for a while, then the service answers.
    port = free_port()
    config = tmp_path / "later.conf"
    config.write_text(f"[sendmail]\nserver = 127.0.0.1:{port}\nretry_time = 30\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), BAREMAIL_CONFIG=str(config), HOME=str(tmp_path))
    process = subprocess.Popen([PYTHON, "-m", "baremail.sendmail", "root"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        process.stdin.write(b"Subject: patience\n\nit waited\n")
        process.stdin.close()
        time.sleep(1.5)   # the outage: sendmail meets a closed port meanwhile
        assert process.poll() is None, process.stderr.read()
        service = start_service("smtp", port=port)
        assert process.wait(30) == 0, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    [stored] = stored_messages(service.maildir)
    assert stored.endswith(b"\n\nit waited\n")
    assert not (tmp_path / "dead.letter").exists()
