"""veil's exception family (client side). Each also subclasses the matching built-in."""

from __future__ import annotations


class VeilError(Exception):
    """Base of every error veil raises on purpose; the CLI prints its message and exits non-zero."""

    exit_code = 1


class InputError(VeilError, ValueError):
    """The input cannot be used: missing, empty, not a video, truncated, unreadable."""

    exit_code = 3


class RecordError(VeilError, ValueError):
    """A detection record is malformed, of another version, or made for another input."""

    exit_code = 4


class OutputError(VeilError, OSError):
    """The output cannot be written as asked (a stream the container cannot carry, disk full)."""

    exit_code = 5


class DetectorError(VeilError, RuntimeError):
    """The detector failed or is unavailable."""

    exit_code = 6


class DetectorLost(DetectorError):
    """The detector is gone for good (a veil server unreachable past the client's retry
    budget). A file job stops and writes nothing, rather than mask every remaining frame whole
    by policy; a transient detector failure still masks just its frames by policy."""


class ConfigError(VeilError, ValueError):
    """A style, preset or config file value is invalid."""

    exit_code = 2


class OutputExists(ConfigError, FileExistsError):
    """A file the job would write exists, and replacing it was not asked for (``--overwrite``,
    ``overwrite=True``)."""
