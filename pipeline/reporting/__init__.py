"""The report people read: ``report.json`` (schema in :mod:`pipeline.reporting.schema`) and one self-contained ``report.html``."""

from pipeline.reporting.html import render, write_html

__all__ = ["render", "write_html"]
