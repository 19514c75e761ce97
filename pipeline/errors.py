"""Errors the CLI turns into one line and a non-zero exit.

Anything raised as :class:`UserError` is the user's to fix (bad input, missing
file, unsupported op); the CLI prints ``error: <message>`` and exits 2 without
a traceback. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, with a message that says what to do."""


class ConfigError(UserError):
    """A bad config value or override key."""


class ModelLoadError(UserError):
    """A model file, factory or weights file that cannot be used."""


class ExportError(UserError):
    """An artifact that cannot be produced as an integer model for a target."""
