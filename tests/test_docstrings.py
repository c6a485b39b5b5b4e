"""Every ``>>>`` example in the package's docstrings runs and prints what it shows.

One test per module, so that a failure names the module; the examples run with
``ELLIPSIS`` and ``NORMALIZE_WHITESPACE`` (a ``...`` in the expected output stands for any
text). A module whose examples fit models is kept small by its examples, not skipped here.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil

import pytest

import variational

# ``python -m variational`` exits on import: it is the command line, not a library module
_NOT_IMPORTABLE = {"variational.__main__"}


def _modules() -> list[str]:
    names = ["variational"]
    for info in pkgutil.walk_packages(variational.__path__, prefix="variational."):
        if info.name not in _NOT_IMPORTABLE:
            names.append(info.name)
    return sorted(names)


def _modules_with_examples() -> list[str]:
    """Modules with at least one ``>>>`` line in their source (the others have nothing to run)."""
    out = []
    for name in _modules():
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            with open(spec.origin, encoding="utf-8") as fh:
                if ">>>" in fh.read():
                    out.append(name)
    return out


MODULES = _modules_with_examples()
# modules whose examples fit several models (about 4 s or more of CPU each, 110 s together):
# the slow run has them, the fast suite the others (about 40 s together)
SLOW_MODULES = {
    "variational.api", "variational.calibration", "variational.data.batching",
    "variational.engine.callbacks", "variational.engine.run", "variational.families.dadvi",
    "variational.families.guides", "variational.families.svgd", "variational.posterior.fit",
    "variational.posterior.marginals", "variational.posterior.mcmc",
}


def test_the_package_has_examples_to_run():
    """Guards the discovery itself: a broken walk would make every test below vanish."""
    assert len(MODULES) >= 40
    assert "variational.api" in MODULES and "variational.posterior.fit" in MODULES
    assert SLOW_MODULES <= set(MODULES)


@pytest.mark.parametrize("name", [pytest.param(m, marks=[pytest.mark.slow] if m in SLOW_MODULES else [])
                                  for m in MODULES])
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    runner = doctest.DocTestRunner(optionflags=flags)
    tests = [t for t in finder.find(module, name) if t.examples]
    assert tests, f"{name} has '>>>' in its source but no example doctest can find"
    report: list[str] = []
    for t in tests:
        runner.run(t, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed:\n" + "".join(report)
