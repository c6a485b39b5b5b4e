"""A pytest plugin that writes each test's CPU time, so the suite's cost can be read on a busy machine.

Wall times of tests depend on what else runs; CPU seconds much less. For every test this writes
one line to ``$CPULOG`` (default ``cpulog.txt``): the process's own CPU seconds (user + system,
all threads: XLA compiles on its own threads), its children's (subprocesses the test waited for),
the wall seconds, and the test's id, tab-separated. Setup and teardown count with their test.

Usage, from the repository root (``-n 2`` works: each worker appends its own lines)::

    CPULOG=/tmp/cpu.txt PYTHONPATH=src:benchmarks python -m pytest -q -n 2 -p cpulog_plugin tests
    sort -rn /tmp/cpu.txt | head -20                                  # the costliest tests
    awk -F'\\t' '{split($4, a, "::"); m[a[1]] += $1 + $2} END {for (k in m) print m[k], k}' \\
        /tmp/cpu.txt | sort -rn                                       # CPU per module
"""

from __future__ import annotations

import os
import resource
import time

import pytest

_PATH = os.environ.get("CPULOG", "cpulog.txt")


def _cpu() -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    own, children = _cpu()
    start = time.perf_counter()
    yield
    own2, children2 = _cpu()
    with open(_PATH, "a", encoding="utf-8") as fh:
        fh.write(f"{own2 - own:.2f}\t{children2 - children:.2f}\t{time.perf_counter() - start:.2f}\t{item.nodeid}\n")
