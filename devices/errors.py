"""The errors of ``devices``: a message that says what went wrong and what to do, never a traceback.

``pipeline`` exits 6 on a :class:`DeviceError` (a device that cannot be reached or used, an agent that
fails on it, bad input to the bench protocol) and 3 on a :class:`HostFileError` (a results file or folder
on this host that cannot be written: the user's to fix here, whatever the device does). A device that
answers but computes something else is no error: its result says ``mismatch`` and ``pipeline`` exits 7
after writing it (:mod:`pipeline.cli.exits`).
"""

from __future__ import annotations


class DeviceError(Exception):
    """A device that cannot be reached or used, or bad input to the bench protocol."""


class HostFileError(DeviceError):
    """A results file or folder on this host that cannot be written (read-only, full, a file where a folder goes)."""
