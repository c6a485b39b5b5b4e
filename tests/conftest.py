"""Shared test settings: small, compile-light, deterministic."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
os.environ.setdefault("MPLBACKEND", "Agg")

# The persistent compilation cache stays on, as for users, but in a directory of this test
# process (each xdist worker has its own), never in the user's cache directory.
_CACHE = tempfile.mkdtemp(prefix="variational-test-cache-")
os.environ["VARIATIONAL_COMPILE_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, True)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def shared_data_dir():
    """The public datasets folder (``../shared/data``) when present, else None."""
    from variational.data.datasets import find_shared_data

    p = find_shared_data("radon.csv")
    return None if p is None else p.parent
