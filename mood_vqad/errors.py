"""The errors a user can act on: the command line prints their one-line message and exits with 1.

Anything else is a bug: the command line prints a one-line hint, and its traceback with `-v`.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """An error the user can act on; its message is one line."""


class CaseError(UserError):
    """A case that cannot be processed; its message is one line naming the file and the cause."""

    def __init__(self, path: Path | str, cause: str):
        super().__init__(f"{Path(path).name}: {cause}")
        self.path = Path(path)
        self.cause = cause


class ConfigError(UserError, ValueError):
    """A config file or option that is invalid or contradicts another (a ValueError too)."""


class RunError(UserError):
    """A run folder that cannot serve the command: missing, already used, or of another kind."""


class WeightsError(UserError):
    """Weights that are missing, corrupt or do not match their config; the message is one line."""


class FetchError(UserError):
    """A download, archive or conversion step of `data fetch` failed; the message says which."""
