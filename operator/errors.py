"""The operator's errors, and the one place they become kopf's temporary or permanent errors."""

from __future__ import annotations

import kopf

from ferry.errors import FerryError, InvalidSpec, PreflightError


class Stalled(FerryError):
    """The CopyJob cannot progress until a user fixes something; retried at the next interval."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def to_kopf(error: Exception, delay: float) -> Exception:
    """Map a domain error to what kopf should do with it."""
    if isinstance(error, InvalidSpec):
        return kopf.PermanentError(str(error))
    if isinstance(error, (Stalled, PreflightError)):
        return kopf.TemporaryError(str(error), delay=delay)
    return kopf.TemporaryError(f"{type(error).__name__}: {error}", delay=delay)
