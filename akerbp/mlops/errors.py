"""Errors the CLI maps to exit codes: 1 for a failed operation, 2 for usage and settings errors."""


class MlopsError(Exception):
    """An operation failed; the message says what went wrong and what to do."""

    exit_code = 1


class UsageError(MlopsError):
    """Bad input from the user: arguments, settings, environment variables."""

    exit_code = 2


class FileProblems(UsageError):
    """A file the user wrote (settings, automations) is invalid; `errors` holds one line per problem, the message
    lists them all."""

    what = "file"

    def __init__(self, errors: list[str], file: str | None = None):
        self.errors = list(errors)
        self.file = file
        head = f"{file} is invalid" if file else f"invalid {self.what}"
        count = f"{len(self.errors)} error{'s' if len(self.errors) != 1 else ''}"
        super().__init__(f"{head} ({count}):\n" + "\n".join(f"  {e}" for e in self.errors))
