"""Capture: turn a live model (and, later, the notebook cells behind it) into a bundle."""

from .live import capture

__all__ = ["capture"]
