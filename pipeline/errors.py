"""Errors the CLI turns into one line and a non-zero exit.

Anything raised as :class:`UserError` or :class:`exporters.errors.ExportError` is
the user's to fix (bad input, missing file, unsupported op); the CLI prints
``error: <message>`` and exits 2 without a traceback. Everything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, with a message that says what to do."""


class ConfigError(UserError):
    """A bad config value or override key."""


class ModelLoadError(UserError):
    """A model file, factory or weights file that cannot be used."""


# Exporters raise their own typed error (they never import the pipeline); the CLI treats it as the user's to fix.
from exporters.errors import ExportError  # noqa: E402

USER_ERRORS: tuple[type[Exception], ...] = (UserError, ExportError)
