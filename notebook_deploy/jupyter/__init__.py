"""Jupyter adapters over the core: the IPython extension with %deploy, and headless notebook runs."""
