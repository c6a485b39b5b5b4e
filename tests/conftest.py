"""Shared test settings: small, compile-light, deterministic."""

import os

# one thread per computation: the suite runs on two workers that share two cores
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
os.environ.setdefault("MPLBACKEND", "Agg")

# The disk caches of compiled programs are off in the suite: it never writes into the user's
# cache directory, never depends on what an earlier run left there, and spends no time writing
# programs that no later process reads. The tests of the caches (tests/test_compilation.py) turn
# them on in a temporary directory of their own. Subprocesses inherit this setting.
os.environ["VARIATIONAL_COMPILE_CACHE"] = "off"
# no background compilation of answers a test may never ask for (the other worker needs the core);
# tests/test_compilation.py turns it on where it tests it
os.environ["VARIATIONAL_COMPILE_AHEAD"] = "0"

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def shared_data_dir():
    """The public datasets folder (``../shared/data``) when present, else None."""
    from variational.data.datasets import find_shared_data

    p = find_shared_data("radon.csv")
    return None if p is None else p.parent


# `--dist loadfile` (pyproject's addopts): the tests of one module run on one worker, so a
# module's shared fits (scope="module" fixtures) are computed once, and a program compiled for
# one test is found by the next. (xdist's `loadgroup` with groups per module did the same until
# pytest 9, whose node ids no longer carry xdist's group suffix: every module was spread.)


def pytest_configure(config):
    """The fast suite compiles with LLVM's optimisation off: its fits are short, so compiling is
    most of their time, and unoptimised code compiles about 15% faster in all (measured on
    tests/test_answer.py: 49 s of CPU against 42 s). The slow run keeps XLA's defaults, since its
    long fits spend their time running the code. Numbers change in the last digits only; no
    test compares them across the two settings. (Set before any computation: XLA reads its
    flags when the backend starts.)"""
    if "not slow" in (config.getoption("markexpr", "") or "") and "xla_backend_optimization_level" not in \
            os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
