"""Errors that a user can act on; the CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class HanclipError(Exception):
    """Base class for every error hanclip reports to a user."""


class BundleError(HanclipError):
    """A model bundle is missing, malformed, or does not match its encoders."""


class UnknownModel(BundleError):
    """A model name that is neither a built-in nor a bundle directory."""


class ImageLoadError(HanclipError):
    """An image file cannot be read or decoded."""


class StorageError(HanclipError):
    """A folder hanclip writes to is on a full disk, a read-only one, or a drive that is gone.

    `saved` says what the interrupted run kept (committed rows, finished batches): the same
    command run again once the cause is gone continues from there.
    """

    def __init__(self, cause: str, remedy: str, saved: str | None = None) -> None:
        self.cause = cause
        self.remedy = remedy
        self.saved = saved
        kept = f"; {saved}" if saved else ""
        super().__init__(f"{cause}{kept} ({remedy}, then run the same command again)")

    def saving(self, saved: str) -> StorageError:
        """The same error, saying what the run kept."""
        return StorageError(self.cause, self.remedy, saved)
