"""How a long library job (the index, its text pass) tells how far it has come, without
knowing who shows it: the front end hands in a `ProgressReporter` (the command line's draws a
rich bar); `NO_PROGRESS` shows nothing."""

from __future__ import annotations

from typing import Protocol


class ProgressReporter(Protocol):
    """Where a job reports its stages and how far each has come."""

    def stage(self, description: str, total: int | None = None) -> None:
        """Start a stage of `total` steps (None: unknown) from zero."""

    def advance(self, steps: int = 1) -> None: ...


class NoProgress:
    def stage(self, description: str, total: int | None = None) -> None:
        pass

    def advance(self, steps: int = 1) -> None:
        pass


NO_PROGRESS = NoProgress()
