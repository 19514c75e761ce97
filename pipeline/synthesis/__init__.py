"""Synthetic data from the model itself; importing registers every method."""

from pipeline.synthesis import inversion  # noqa: F401  (registration)
from pipeline.synthesis.base import create_method, list_methods, register_method
from pipeline.synthesis.dataset import SyntheticSet

__all__ = ["SyntheticSet", "create_method", "list_methods", "register_method"]
