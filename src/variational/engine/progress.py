"""The progress bar of a fit: tqdm, with the running mean of the loss (PyMC's "Average Loss")."""

from __future__ import annotations

import numpy as np

__all__ = ["Progress"]


class Progress:
    """tqdm bar showing the running mean of the last 1000 finite losses."""

    def __init__(self, total: int, desc: str) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, mininterval=0.2, leave=True, dynamic_ncols=True)
        self._recent: list[np.ndarray] = []

    def update(self, n: int, losses: np.ndarray) -> None:
        self._recent.append(losses)
        recent = np.concatenate(self._recent)[-1000:]
        self._recent = [recent]
        finite = recent[np.isfinite(recent)]
        if finite.size:
            self.bar.set_postfix_str(f"Average Loss = {finite.mean():,.5g}", refresh=False)
        self.bar.update(n)

    def close(self, finished: bool = True) -> None:
        """Close the bar; a ``finished`` run that stopped early (it converged) ends at 100%."""
        if finished and self.bar.n < (self.bar.total or 0):
            self.bar.total = self.bar.n
            self.bar.refresh()
        self.bar.close()
