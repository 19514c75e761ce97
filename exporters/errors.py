"""The one error type of ``exporters`` (HF Optimum's habit: typed errors per export package).

An :class:`ExportError` means an artifact cannot be produced as an integer model for a target: a model
the format cannot express, an op with no route, a converter that fails, an artifact that fails its
integer gate (:func:`exporters.artifact.require_integer`). Every one is the user's to fix, and every one
is the same outcome for a CI job: the ``pipeline`` command prints it as one line (``error: ...``) and
exits 4 (the export gate, :mod:`pipeline.cli.exits`), apart from the input and config errors that exit 3.
"""

from __future__ import annotations


class ExportError(Exception):
    """An artifact that cannot be produced as an integer model for a target, with a message that says what to do."""
