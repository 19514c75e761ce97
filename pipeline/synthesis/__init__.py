"""Synthetic data from the model itself; importing registers every method."""

from pipeline.synthesis import inversion  # noqa: F401  (registration)
from pipeline.synthesis import methods  # noqa: F401  (registration: zeroq, gdfq, hast, lrq, zaq, fdda)
from pipeline.synthesis.base import QATJob, RealData, create_method, list_methods, register_method
from pipeline.synthesis.dataset import SyntheticSet

__all__ = ["QATJob", "RealData", "SyntheticSet", "create_method", "list_methods", "register_method"]
