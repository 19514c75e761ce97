"""What the ``pipeline`` command exits with, and the one line it prints for an error the user can fix.

=====  ==================  ==========================================================================================
exit   name                meaning
=====  ==================  ==========================================================================================
0      ``OK``              success: every stage ran or was cached, every configured gate passed
1      ``INTERNAL``        a bug: an unexpected exception, printed with its traceback
2      ``USAGE``           the command line does not parse (argparse: an unknown flag, a bad flag value)
3      ``INPUT``           input or config: ``UserError`` / ``ConfigError`` / ``ModelLoadError``, bad data, a device
                           name or devices file that does not resolve, a filesystem error the user can fix (read-only,
                           full disk, a file where a folder goes)
4      ``EXPORT_GATE``     an artifact cannot be produced as an integer model for a target, or fails its integer gate
                           (``exporters.errors.ExportError``; also an op with no route found by the preflight)
5      ``QUALITY_GATE``    ``check.min_agreement`` / ``check.max_accuracy_drop`` not met; every artifact and the
                           report are still written, and the failed rules are printed after the summary
6      ``DEVICE``          a device is unreachable or unusable (``devices.errors.DeviceError``)
7      ``DEVICE_MISMATCH`` a device's outputs differ from the reference beyond tolerance (result status
                           ``mismatch``); every result and the report are still written. ``pipeline run --device``
                           and ``pipeline bench`` follow this one rule; a result ``unchecked`` (no reference data
                           travelled) is no failure
130    ``INTERRUPTED``     Ctrl-C; finished stages are kept and the same command resumes
=====  ==================  ==========================================================================================

When both quality and device gates fail, the run exits 5: the artifact already fails on the host.
``pipeline devices check`` exits 6 when a device it checks does not answer. The device agent
(``python -m devices.agent``) is a separate program with its own exit statuses (its docstring).

Every exception that reaches :func:`pipeline.cli.main` passes through :func:`handle`: an error the user can fix
becomes ``error: <message>`` on stderr and its exit status; anything else is a bug and keeps its traceback (1).
"""

from __future__ import annotations

import errno
import sys

from pipeline.errors import UserError

OK = 0
INTERNAL = 1
USAGE = 2
INPUT = 3
EXPORT_GATE = 4
QUALITY_GATE = 5
DEVICE = 6
DEVICE_MISMATCH = 7
INTERRUPTED = 130

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


def status_of(exc: BaseException) -> tuple[int, str] | None:
    """(exit status, one-line message) for an error the user can fix; None for a bug (it keeps its traceback)."""
    from devices.errors import DeviceError, HostFileError
    from exporters.errors import ExportError

    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED, "interrupted: finished stages are kept; run the same command again to resume"
    if isinstance(exc, UserError):
        return INPUT, f"error: {exc}"
    if isinstance(exc, ExportError):
        return EXPORT_GATE, f"error: {exc}"
    if isinstance(exc, HostFileError):  # a results folder on this host, not the device: the user's to fix here
        return INPUT, f"error: {exc}"
    if isinstance(exc, DeviceError):
        return DEVICE, f"error: {exc}"
    if isinstance(exc, OSError):
        message = os_error(exc)
        if message is not None:
            return INPUT, f"error: {message}"
    return None


def conclude(rules: list[dict]) -> int:
    """End a command on its gate rules (:mod:`pipeline.gates`): what it printed on stdout first (also where stdout and
    stderr share one log), then one line on stderr per failed rule; returns the exit status they imply."""
    from pipeline import gates

    sys.stdout.flush()
    for line in gates.failure_lines({"rules": rules}):
        print(line, file=sys.stderr)
    return gates.exit_status(rules)


def handle(exc: BaseException) -> int:
    """Print the one line for ``exc`` and return the exit status; re-raise what is a bug."""
    known = status_of(exc)
    if known is None:
        raise exc
    status, line = known
    print(line, file=sys.stderr)
    return status
