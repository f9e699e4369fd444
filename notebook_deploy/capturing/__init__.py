"""Capturing: a live model, the notebook cells behind it and its package state, into a bundle."""

from .live import capture

__all__ = ["capture"]
