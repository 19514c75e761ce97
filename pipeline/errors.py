"""Errors the CLI turns into one line and a non-zero exit (the table: :mod:`pipeline.cli.exits`).

A :class:`UserError` (and its kinds below) is the user's to fix: bad input, a missing file, a config
value out of range; the CLI prints ``error: <message>`` and exits 3 without a traceback. An
:class:`exporters.errors.ExportError` (an artifact that cannot be made integer) exits 4, a
:class:`devices.errors.DeviceError` exits 6. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, with a message that says what to do (exit 3)."""


class ConfigError(UserError):
    """A bad config value or override key, or settings that contradict each other (exit 3)."""


class ModelLoadError(UserError):
    """A model file, factory or weights file that cannot be used (exit 3)."""


# Exporters raise their own typed error (they never import the pipeline); the pipeline's code and tests import every
# error kind from here.
from exporters.errors import ExportError  # noqa: E402

__all__ = ["ConfigError", "ExportError", "ModelLoadError", "UserError"]
