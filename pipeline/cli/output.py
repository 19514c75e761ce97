"""Where ``pipeline``'s messages go: verbosity, the log file and third-party noise, set once per command.

Three levels (:func:`configure`, from ``-q`` / nothing / ``-v``):

* ``-q``: errors, warnings and the final summary (stdout) only; no progress, no info lines;
* default: also progress (the run's ``stage i/5`` lines, each loop's bar or lines) and info lines;
* ``-v``: also what third-party libraries print: TensorFlow/absl C++ logs, LiteRT's ``INFO:`` lines, the torchao,
  torch and onnxscript loggers, Python warnings. None of it is the user's to act on, so it is hidden otherwise.

``--log-file PATH`` (appended to) gets everything at every level: what the terminal shows, what ``-q`` or the
default hide (the third-party lines included), stdout, and progress as newline-terminated lines, never a
carriage-return bar: a file to read after the fact, or to attach to a bug report.

Third-party noise comes two ways. Python loggers and warnings are routed to the log file (or nowhere). C++
libraries write to file descriptor 2 themselves (absl's ``I0000 ...`` lines, LiteRT's ``INFO: Created TensorFlow
Lite XNNPACK delegate for CPU.``, which no setting turns off), so fd 2 becomes a pipe into a small filter process
that drops those lines and passes the rest on. A separate process, not a thread: when this one dies (an abort, a
fatal signal) the filter still passes on its last words. Python's own ``sys.stderr`` writes to the real stderr
directly, so the command's messages never wait on the filter.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

QUIET, NORMAL, VERBOSE = 0, 1, 2

# Python loggers whose messages are library noise to a pipeline user. Seen in `pipeline run --target all`: torchao's
# "Failed to load .../_C_mxfp8...so" and torch.utils._pytree's "KernelPreference is an Enum subclass" warning, both on
# litert-torch's import; the others are the converters' and TensorFlow's loggers.
NOISY_LOGGERS = ("torchao", "torch.utils._pytree", "torch.onnx", "onnxscript", "onnx_ir", "litert_torch", "absl", "tensorflow",
                 "py.warnings")

# Lines native libraries write to fd 2 that are noise (regular expressions on one line).
NOISY_NATIVE_LINES = (
    r"^[IW]\d{4} \d\d:\d\d:[\d.]+ +\d+ \S+:\d+\] ",  # absl/glog INFO and WARNING (the TFLite converter's "Estimated count ...")
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"^INFO: ",  # TFLite's minimal logger ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
    r"^WARNING: \[(npu|gpu)_registry\.cc:\d+\] ",  # LiteRT's environment looking for GPU/NPU accelerators (op profiling)
)

# The filter process (stdlib only: it starts in milliseconds). argv: log file ('' for none), then the patterns.
_FILTER = r"""
import re, sys
log = open(sys.argv[1], "ab", buffering=0) if sys.argv[1] else None
drop = [re.compile(p.encode()) for p in sys.argv[2:]]
out = sys.stdout.buffer
for line in sys.stdin.buffer:
    if log is not None:
        log.write(re.sub(rb"\r(?!\n)", b"\n", line))
    if not any(p.search(line) for p in drop):
        out.write(line)
        out.flush()
"""


@dataclass
class _State:
    level: int = NORMAL
    log: TextIO | None = None
    filter: subprocess.Popen | None = None
    real_stderr: int | None = None  # a descriptor of the stderr fd 2 was before the filter took it
    drops_noise: bool = False  # the filter drops the libraries' lines (not -v): so does the process's teardown


_state = _State()


class _Tee:
    """A text stream that also copies what is written to the log file: stdout, and Python's stderr (tracebacks, the
    one-line errors, anything printed without this module)."""

    def __init__(self, stream: TextIO, log: TextIO) -> None:
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        n = self.stream.write(text)
        _log_write(text)
        return n

    def flush(self) -> None:
        self.stream.flush()
        if _state.log is not None:
            _state.log.flush()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def configure(args: argparse.Namespace) -> None:
    """Set up the process's output for ``args`` (``quiet``, ``verbose``, ``log_file``) before any command runs.

    Called again in the same process (a caller running several commands), it starts over from ``args``.
    """
    quiet, verbose = bool(getattr(args, "quiet", False)), bool(getattr(args, "verbose", False))
    if quiet and verbose:
        print("pipeline: error: -q and -v contradict each other; give one", file=sys.stderr)
        raise SystemExit(2)
    _reset()
    _state.level = QUIET if quiet else VERBOSE if verbose else NORMAL
    path = getattr(args, "log_file", None)
    if path is not None:
        _state.log = _open_log(Path(path))
    if not verbose:
        os.environ.setdefault("PYTHONWARNINGS", "ignore")  # the Python processes this one starts (bench workers)
    _route_library_loggers(to_terminal=verbose)
    # Only a real command line swaps its streams: a caller that captured them (a test, an embedding program) keeps them.
    if sys.stderr is sys.__stderr__ and sys.stdout is sys.__stdout__ and (_state.log is not None or not verbose):
        _filter_native_stderr(() if verbose else NOISY_NATIVE_LINES)
    if _state.log is not None and sys.stdout is sys.__stdout__:
        sys.stdout = _Tee(sys.stdout, _state.log)  # type: ignore[assignment]
        if not isinstance(sys.stderr, _Tee):
            sys.stderr = _Tee(sys.stderr, _state.log)  # type: ignore[assignment]


def level() -> int:
    return _state.level


def info(message: str) -> None:
    """Progress and info lines: on stderr unless ``-q``; always in the log file."""
    _emit(message, _state.level >= NORMAL)


def warning(message: str) -> None:
    """Something the user should read even with ``-q``."""
    _emit(message, True)


def log_only(message: str) -> None:
    """A line for the log file alone (progress while the terminal shows a bar)."""
    _emit(message, False)


def has_log() -> bool:
    return _state.log is not None


def terminal() -> TextIO:
    """The stream the user watches (stderr without the log-file copy): where progress bars are drawn."""
    s = sys.stderr
    return s.stream if isinstance(s, _Tee) else s


def is_terminal() -> bool:
    try:
        return terminal().isatty()
    except (AttributeError, ValueError):  # closed or replaced by something that is not a file
        return False


def _emit(message: str, show: bool) -> None:
    line = message.rstrip("\n") + "\n"
    if show:
        out = terminal()
        out.write(line)
        out.flush()
    _log_write(line)


def _log_write(text: str) -> None:
    if _state.log is not None and text:
        _state.log.write(re.sub(r"\r(?!\n)", "\n", text))


def _open_log(path: Path) -> TextIO:
    from pipeline.cli import exits

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        log = open(path, "a", encoding="utf-8", buffering=1)  # line-buffered: a killed run keeps what it logged
    except OSError as exc:
        print(f"error: --log-file {path}: {exits.os_error(exc) or exc.strerror or exc}", file=sys.stderr)
        raise SystemExit(exits.INPUT) from None
    log.write(f"# {time.strftime('%Y-%m-%dT%H:%M:%S')} pipeline {' '.join(sys.argv[1:])}\n")
    return log


class _LogFileHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            _log_write(f"{record.name} {record.levelname}: {record.getMessage()}\n")
        except Exception:  # noqa: BLE001  (a log line must never break the run)
            self.handleError(record)


def _route_library_loggers(to_terminal: bool) -> None:
    """The noisy libraries' Python loggers and warnings: to the log file (or nowhere) unless ``-v``."""
    logging.captureWarnings(not to_terminal)
    for name in NOISY_LOGGERS:
        lg = logging.getLogger(name)
        lg.handlers = [h for h in lg.handlers if not isinstance(h, _LogFileHandler)]
        lg.propagate = to_terminal
        if not to_terminal:
            lg.addHandler(_LogFileHandler())  # with no log file it writes nowhere; without a handler, lastResort would print


def _filter_native_stderr(drop: tuple[str, ...]) -> None:
    """Point fd 2 at a filter process that drops ``drop`` lines, copies every line to the log file and passes the rest on;
    Python's ``sys.stderr`` keeps the real stderr. Left as it is when there is no fd 2 to swap."""
    try:
        sys.stderr.flush()
        real = os.dup(2)
        r, w = os.pipe()
    except (OSError, ValueError, AttributeError):
        return
    log = _state.log.name if _state.log is not None else ""
    try:
        # start_new_session: Ctrl-C goes to the command, not the filter, which ends when the last writer closes the pipe
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _FILTER, log, *drop], stdin=r, stdout=real,
                                start_new_session=True)
    except OSError:
        os.close(real)
        os.close(r)
        os.close(w)
        return
    os.close(r)
    encoding, errors = sys.stderr.encoding or "utf-8", "backslashreplace"
    os.dup2(w, 2)  # C++ libraries and child processes now write into the filter
    os.close(w)
    sys.stderr = open(os.dup(real), "w", encoding=encoding, errors=errors, buffering=1)  # Python's messages: direct
    _state.filter, _state.real_stderr, _state.drops_noise = proc, real, bool(drop)
    atexit.register(_drain)


def _drain() -> None:
    """At exit: hand fd 2 back and let the filter pass on what is left, so nothing arrives after the shell prompt.

    Without ``-v``, fd 2 goes to /dev/null instead of the terminal: what native code writes after this point is the
    libraries' teardown (LiteRT's "INFO: [accelerator_registry.cc] DestroyAccelerator" lines from C++ destructors),
    which the filter would have dropped. Python's own messages go to ``sys.stderr``, a separate descriptor."""
    proc, real = _state.filter, _state.real_stderr
    if proc is None or real is None:
        return
    _state.filter = _state.real_stderr = None
    try:
        if _state.drops_noise:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            os.close(null)
        else:
            os.dup2(real, 2)
        os.close(real)
        proc.wait(timeout=2)  # a child process still holding the pipe keeps it open: do not wait for that one
    except (OSError, subprocess.TimeoutExpired):
        pass


def reset() -> None:
    """Back to the defaults of a process that never called :func:`configure` (level, log file, the libraries' loggers)
    for a caller that runs a command in its own process and goes on (tests). The native-stderr filter of a real
    command line stays: it is that process's for good."""
    _reset()
    _state.level = NORMAL
    logging.captureWarnings(False)
    for name in NOISY_LOGGERS:
        lg = logging.getLogger(name)
        lg.handlers = [h for h in lg.handlers if not isinstance(h, _LogFileHandler)]
        lg.propagate = True


def _reset() -> None:
    """Undo a previous :func:`configure` in this process: the tees and the log file."""
    for name in ("stdout", "stderr"):
        s = getattr(sys, name)
        if isinstance(s, _Tee):
            setattr(sys, name, s.stream)
    if _state.log is not None:
        _state.log.close()
        _state.log = None
