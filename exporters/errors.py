"""The one error type of ``exporters`` (HF Optimum's habit: typed errors per export package).

An :class:`ExportError` is the user's to fix: a model the format cannot express, an
artifact that fails its integer gate, a bad output path. The CLI prints it as one
line (``error: ...``) and exits 2, like the pipeline's own input errors.
"""

from __future__ import annotations


class ExportError(Exception):
    """An artifact that cannot be produced as an integer model for a target, with a message that says what to do."""
