"""The one error type of ``devices``: a message that says what went wrong and what to do, never a traceback."""

from __future__ import annotations


class DeviceError(Exception):
    """A device that cannot be reached or used, or bad input to the bench protocol."""
