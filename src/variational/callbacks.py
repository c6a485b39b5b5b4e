"""``vi.callbacks``: the public name of :mod:`variational.engine.callbacks`."""

from .engine.callbacks import *  # noqa: F401,F403
from .engine.callbacks import __all__, __doc__  # noqa: F401
