"""Errors muscat reports to users. Each maps to an exit status of the CLI."""


class MuscatError(Exception):
    """A problem the user can act on: the CLI prints the message, no traceback."""

    exit_code = 2


class ConfigError(MuscatError):
    """A configuration file or option that is wrong (names the file and key)."""


class DatabaseError(MuscatError):
    """The catalogue cannot be opened or used as asked."""


class CatalogLocked(DatabaseError):
    """Another process held the catalogue for longer than we were willing to wait."""

    def __init__(self, message: str, holder_message: str = "") -> None:
        super().__init__(message)
        self.holder_message = holder_message or message  # "the catalogue X is held by Y"


class ReadOnlyViolation(MuscatError):
    """A statement given to `muscat sql` would change something."""


class QueryError(MuscatError):
    """SQL given to `muscat sql` that DuckDB cannot run."""


class UsageError(MuscatError):
    """An option or argument that is wrong for what it asks (names the option and why)."""
