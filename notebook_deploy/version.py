"""The package's version: written once here, read by the build (pyproject.toml) and by every module that
reports it, which import it from here rather than from the package above them."""

__version__ = "0.1.0"
