"""Ferry's error hierarchy, shared by the engine, `ferry run` and the operator.

Each error says what was wrong, where, and what to do. The operator maps these to kopf's temporary and
permanent errors in one place; `ferry run` maps them to exit codes.
"""

from __future__ import annotations


class FerryError(Exception):
    """Base of every error Ferry raises on purpose."""


class InvalidSpec(FerryError):
    """The CopyJob (or the file holding it) is not valid; fixing the input is the only cure."""


class PreflightError(FerryError):
    """A location named by the CopyJob cannot be used: unreachable endpoint, missing bucket, denied access."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        #: CamelCase category (e.g. ``BucketNotFound``) used in conditions and summaries.
        self.reason = reason


class AddressNotAllowed(FerryError):
    """A connection to an address the platform's endpoint policy refuses was about to be made; it was
    not. The message is Ferry's own: the address, what it is, and what to do."""
