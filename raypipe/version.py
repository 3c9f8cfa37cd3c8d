"""raypipe's version, from the installed package's metadata."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("raypipe")
except PackageNotFoundError:  # a source tree that was not installed
    __version__ = "0+unknown"
