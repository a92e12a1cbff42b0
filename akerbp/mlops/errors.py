"""Errors the CLI maps to exit codes: 1 for a failed operation, 2 for usage and settings errors."""


class MlopsError(Exception):
    """An operation failed; the message says what went wrong and what to do."""

    exit_code = 1


class UsageError(MlopsError):
    """Bad input from the user: arguments, settings, environment variables."""

    exit_code = 2
