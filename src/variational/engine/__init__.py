"""Engine layer: the compiled loop and everything that drives it.

Owns: the compiled loop (:mod:`.loop`: ``step`` inside a ``fori_loop`` over chunks, the
non-finite guard's fast path), control (:mod:`.control`: the learning rate held in the
optimiser state, the back-off guard, the step-size search), the host-side run
(:mod:`.run`: :class:`Run`, callbacks between chunks, stopping, notes), callbacks
(:mod:`.callbacks`), the checkpoint file format (:mod:`.checkpoint`: it reads and writes files
and never calls ``fit``), optimisers (:mod:`.optim`), devices (:mod:`.devices`) and the
progress bar (:mod:`.progress`).
May import: :mod:`variational.families`, :mod:`variational.objectives`, :mod:`variational.data`,
:mod:`variational.model`, :mod:`variational.errors`, jax, optax.
"""

from . import callbacks
from .loop import Engine, EngineState, RunReport
from .optim import OPTIMIZERS, adagrad_window, make_optimizer
from .run import Run

__all__ = ["callbacks", "Engine", "EngineState", "RunReport", "OPTIMIZERS", "make_optimizer", "adagrad_window",
           "Run"]
