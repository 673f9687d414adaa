"""BareMail: SMTP in, one Maildir, POP3 out, for a machine's own notification mail."""

__version__ = "0.1.0"
