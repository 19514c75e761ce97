"""``pipeline``: checkpoint in, verified integer artifacts and a report out, without the training data.

    pipeline run                                   # bundled Fashion-MNIST ResNet-20, ONNX target
    pipeline run --model mynet.py:build --weights mynet.pt --input-shape 3,32,32 --bits w4a4 --out runs/mynet
    pipeline run --config zsq.yaml --set qat.steps=2000
    pipeline qat --out runs/x                      # run the stages up to qat (cached ones are skipped)
    pipeline run --from qat                        # redo from a stage
    pipeline report runs/x                         # print a run's summary, write runs/x/report.html
    pipeline report runs/a runs/b --html cmp.html  # compare runs in one page
    pipeline models                                # the model zoo
    pipeline bench --artifact runs/x/model.w8a8.onnx --device pi5    # the bench protocol on a device
    pipeline run --device local                    # ... and bench every artifact of the run there
    pipeline devices list|check                    # the devices file (devices.yaml) and whether each is reachable
"""


from __future__ import annotations

import errno
import os
import sys

from pipeline.errors import USER_ERRORS


def build_parser():
    from pipeline.cli.parser import build_parser as build

    return build()


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


def _os_error(exc: OSError) -> str | None:
    """The one-line message for a filesystem error the user can fix, or None for anything else (a bug: traceback)."""
    advice = _OS_ADVICE.get(exc.errno or -1)
    if advice is None:
        return None
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}; {advice}"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        message = _os_error(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    except Exception as exc:
        from devices.errors import DeviceError

        if not isinstance(exc, DeviceError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished stages are kept; run the same command again to resume", file=sys.stderr)
        return 130
