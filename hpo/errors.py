"""Exceptions that carry the exit code of the contract, so the CLI can end every failure the same way."""

from __future__ import annotations


class HpoError(Exception):
    """The work failed (exit code 1): no trial completed, a service unreachable."""

    exit_code: int = 1


class UsageError(HpoError):
    """Bad input (exit code 2): usage, study file, data. The message names the file and field."""

    exit_code = 2


class ServiceError(HpoError):
    """A service (storage, tracking server) could not be reached or refused the request."""

    exit_code = 1
