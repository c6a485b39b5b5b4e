"""Shared test settings: small, compile-light, deterministic."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def shared_data_dir():
    """The public datasets folder (``../shared/data``) when present, else None."""
    from variational.data.datasets import find_shared_data

    p = find_shared_data("radon.csv")
    return None if p is None else p.parent
