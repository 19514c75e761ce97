"""Where the command's messages go: verbosity, the log file, third-party import noise."""

from __future__ import annotations

import argparse
import os


def configure(args: argparse.Namespace) -> None:
    """Set up the process's output for ``args`` before any command runs."""
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
