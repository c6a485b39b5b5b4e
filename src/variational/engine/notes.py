"""What a run tells its user: notes (warnings or log records on the ``variational`` logger),
and a save at the end of a run that keeps the fit when the file system refuses.

May import: :mod:`variational.objectives`, :mod:`.checkpoint`, tqdm.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

from ..errors import user_stacklevel
from ..objectives import RENYI_MINIBATCH
from .checkpoint import save

__all__ = ["logger", "note", "save_or_warn", "setup_notes"]

logger = logging.getLogger("variational")


def note(fit: Any, message: str, warn: bool = True) -> None:
    """Record ``message`` in ``fit.notes`` and report it: a warning (``warn=True``) or a log record.

    Log records go to the ``variational`` logger at INFO. With the progress bar on and no
    INFO logging configured, they are also written next to the bar (``tqdm.write``); with
    ``progress=False`` nothing is written to the terminal by the library itself.
    """
    if not hasattr(fit, "notes"):
        fit.notes = []
    fit.notes.append(message)
    if warn:
        warnings.warn(message, RuntimeWarning, stacklevel=user_stacklevel())
        return
    logger.info(message)
    if fit.settings.get("progress", True) and not logger.isEnabledFor(logging.INFO):
        from tqdm.auto import tqdm

        tqdm.write(message, file=sys.stderr)




def save_or_warn(fit: Any, path: Any) -> bool:
    """Save ``fit`` to ``path``; when the file system refuses, keep the fit and warn (False)."""
    try:
        save(fit, path)
        return True
    except OSError as e:
        note(fit, f"the fit could not be saved to '{path}' ({type(e).__name__}: "
                  f"{e.strerror or e}); it is returned without the file: free space or fix the "
                  f"permissions and call fit.save(path)")
        return False


def setup_notes(fit: Any, *, renyi_minibatch: bool, init: Any, score_function: bool) -> None:
    """The notes a new fit starts with: a biased Renyi bound, a warm start, a score-function gradient."""
    if renyi_minibatch:
        note(fit, RENYI_MINIBATCH)
    if init is not None and init.family.name != fit.family.name:
        fit.init_grad_evals = init.grad_evals
        note(fit, f"started from the {init.method!r} fit's Gaussian moments "
                  f"({init.grad_evals} gradient evaluations)", warn=False)
    if score_function:
        fit.settings["score_function"] = True
        note(fit, "score_function=True: the gradient of the guide's discrete (non-"
                  "reparameterised) sites is a score-function estimate, unbiased but with a "
                  "high variance; use num_particles >= 8 and a small learning rate, and "
                  "check the fit (fit.diagnose(), several seeds)")
