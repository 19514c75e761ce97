"""What the ``pipeline`` command exits with, and the one line it prints for an error the user can fix.

Every exception that reaches :func:`pipeline.cli.main` passes through :func:`handle`: an error the user can fix
becomes ``error: <message>`` on stderr and an exit status; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import sys

from pipeline.errors import USER_ERRORS

# What the filesystem can refuse a run, and what to do about it: a one-line error, never a traceback.
_OS_ADVICE = {
    errno.EACCES: "give an --out you can write to", errno.EPERM: "give an --out you can write to",
    errno.EROFS: "the filesystem is read-only: give an --out on a writable one",
    errno.ENOSPC: "the disk is full: free space or give an --out on another disk (finished stages are kept)",
    errno.EDQUOT: "the disk quota is exceeded: free space or give an --out on another disk (finished stages are kept)",
    errno.ENOTDIR: "a path component is a file, not a folder", errno.EISDIR: "a folder is where a file was expected",
    errno.ELOOP: "a symlink was found where the run writes a file: remove it",
    errno.ENAMETOOLONG: "the path is too long",
}


def os_error(exc: OSError) -> str | None:
    """The one-line message for a filesystem error the user can fix, or None for anything else (a bug: traceback)."""
    advice = _OS_ADVICE.get(exc.errno or -1)
    if advice is None:
        return None
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}; {advice}"


def handle(exc: BaseException) -> int:
    """Print the one line for ``exc`` and return the exit status; re-raise what is a bug."""
    if isinstance(exc, KeyboardInterrupt):
        print("interrupted: finished stages are kept; run the same command again to resume", file=sys.stderr)
        return 130
    if isinstance(exc, USER_ERRORS):
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, OSError):
        message = os_error(exc)
        if message is not None:
            print(f"error: {message}", file=sys.stderr)
            return 2
    from devices.errors import DeviceError

    if isinstance(exc, DeviceError):
        print(f"error: {exc}", file=sys.stderr)
        return 2
    raise exc
