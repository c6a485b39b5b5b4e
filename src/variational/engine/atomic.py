"""Writing checkpoint files: atomically, with stale temporaries cleaned, to a target checked early.

A file is written to ``.<name>.<pid>.tmp`` in the target's folder, flushed to disk and renamed
over the target (``os.replace``), so the target is always a whole file, old or new. A process
killed while writing leaves its temporary file behind; :func:`remove_stale_temporaries` deletes
those of processes that no longer run. :func:`check_target` finds a target that cannot be
written (a folder, a missing permission) before a fit runs rather than at its end.

Imports: numpy, :mod:`variational.errors`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..errors import CheckpointError

__all__ = ["write_atomic", "remove_stale_temporaries", "check_target"]


def write_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to a temporary file beside ``path``, flush it to disk, rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete the ``.<name>.<pid>.tmp`` files of ``path`` left by processes that no longer run.

    A process killed while writing (``kill -9``, power loss) leaves its temporary file; the
    target itself is never half-written. Files of live processes are left alone.
    """
    pattern = re.compile(re.escape(f".{path.name}.") + r"(\d+)\.tmp$")
    removed = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = pattern.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def check_target(path: str | os.PathLike) -> Path:
    """Check that a checkpoint can be written at ``path`` before a fit runs (a clear error if not).

    Examples
    --------
    >>> import os, tempfile
    >>> check_target(os.path.join(tempfile.mkdtemp(), "fit.npz")).name
    'fit.npz'
    """
    p = Path(path)
    if p.is_dir():
        raise CheckpointError(f"checkpoint='{p}' is a folder; give a file path such as '{p / 'fit.npz'}'")
    probe = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"\0")
    except OSError as e:
        raise CheckpointError(f"checkpoint='{p}' cannot be written ({type(e).__name__}: "
                              f"{e.strerror or e}); choose a folder you can write to") from None
    finally:
        if probe.exists():
            probe.unlink()
    remove_stale_temporaries(p)
    return p
