"""Fixtures for the integration tests: the real programs, socket-activated."""

from servicekit import mail_services, smtp_service, start_service  # noqa: F401 (fixtures)
