"""The installed package's version (``variational.__version__``), also written into saved fits."""

from importlib.metadata import PackageNotFoundError, version


def _version() -> str:
    try:
        return version("variational")
    except PackageNotFoundError:  # a source tree on sys.path that was never installed
        return "0+unknown"


__version__ = _version()
