import pytest

from baremail import config
from baremail.config import ConfigError


def write(tmp_path, text):
    path = tmp_path / "baremail.conf"
    path.write_text(text)
    return str(path)


def test_shipped_file_parses_to_the_builtin_defaults():
    loaded = config.load("baremail.conf")
    defaults = config.Config()
    assert {k: v for k, v in vars(loaded).items() if k != "source"} == \
        {k: v for k, v in vars(defaults).items() if k != "source"}


def test_no_file_means_builtin_defaults():
    assert config.load(None).maildir == "/var/lib/baremail/Maildir"


def test_values_are_read_and_overrides_win(tmp_path):
    path = write(tmp_path, "[baremail]\nmaildir = /srv/mail\nidle_exit = 5\n[smtp]\nmax_recipients = 7\n"
                           "listen = 127.0.0.1:25 [::1]:25\n")
    loaded = config.load(path, {"maildir": "/other", "idle_exit": None})
    assert loaded.maildir == "/other" and loaded.idle_exit == 5 and loaded.max_recipients == 7
    assert loaded.smtp_listen == ("127.0.0.1:25", "[::1]:25")


@pytest.mark.parametrize("text, expected", [
    ("[smtp]\nmax_recipients = many\n", "[smtp] max_recipients: 'many' is not a number"),
    ("[smtp]\nmax_recipients = 0\n", "[smtp] max_recipients: must be a whole number above 0"),
    ("[baremail]\nidle_exit = -1\n", "[baremail] idle_exit: must be a number of seconds, 0 or more"),
    ("[baremail]\nmaildri = /x\n", "[baremail] maildri: unknown key"),
    ("[pop3]\nlisten = localhost\n", "[pop3] listen: 'localhost' is not host:port"),
    ("[pop3]\nlisten = 127.0.0.1:99999\n", "[pop3] listen: '127.0.0.1:99999': port must be 1-65535"),
    ("maildir = /x\n", "not a valid INI file"),
])
def test_bad_value_names_file_key_and_problem(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    message = str(caught.value)
    assert message.startswith(path + ": ") and expected in message
    assert "\n" not in message


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(str(tmp_path / "absent.conf"))


def test_search_order(tmp_path, monkeypatch):
    assert config.find_config_file("/x.conf", {"BAREMAIL_CONFIG": "/y.conf"}) == "/x.conf"
    assert config.find_config_file(None, {"BAREMAIL_CONFIG": "/y.conf"}) == "/y.conf"
    monkeypatch.setattr(config, "SYSTEM_CONFIG", str(tmp_path / "none.conf"))
    assert config.find_config_file(None, {}) is None


def test_parse_address_forms():
    assert config.parse_address("127.0.0.1:25") == ("127.0.0.1", 25)
    assert config.parse_address("[::1]:110") == ("::1", 110)
    assert config.parse_address("2525") == ("", 2525)
