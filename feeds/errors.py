"""Errors raised by feed readers and loaders; each names the file and what was wrong."""

from __future__ import annotations

from pathlib import Path


class FeedError(Exception):
    """Root of every feed error. ``path`` names the offending file; ``reason`` says why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class FeedNotFoundError(FeedError, FileNotFoundError):
    """The file does not exist or cannot be opened for reading."""


class FeedFormatError(FeedError, ValueError):
    """The file is not in a format the reader understands."""


class FeedCorruptError(FeedError, ValueError):
    """The file is truncated or damaged: it must be quarantined, not retried."""


class UnknownVariableError(FeedError, KeyError):
    """The requested variable, field or band is not in the file (the message lists them)."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return f"{self.path}: {self.reason}"


class SelectionError(FeedError, ValueError):
    """A time, member or filter selection does not match the file (or is ambiguous)."""


class MissingCRSError(FeedError, ValueError):
    """The file carries no CRS and none was supplied."""


class ManifestError(FeedError, ValueError):
    """A region-pack manifest is missing a field or names something that is not there."""


class FeedConfigError(FeedError, ValueError):
    """A feeds TOML file has a missing, unknown or invalid field (the message names it)."""

    def __init__(self, path: str | Path, reason: str, *, feed_id: str | None = None,
                 field: str | None = None) -> None:
        self.feed_id = feed_id
        self.field = field
        super().__init__(path, reason)


class FeedUnavailableError(FeedError, OSError):
    """A feed source cannot be reached or answered with an error: retry later."""


class PayloadTooLargeError(FeedError, ValueError):
    """A payload is larger than the configured cap; it is not archived."""


class ArchiveError(FeedError, OSError):
    """The payload archive cannot store, read or quarantine a payload."""
