"""Capturing: a live model, the notebook cells behind it and its package state, into a bundle.

Kept free of imports: the package probe runs as ``python -m notebook_deploy.capturing.probe`` and must
load nothing but the standard library before it takes its first snapshot of ``sys.modules``.
"""
