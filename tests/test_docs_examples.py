"""The ```python blocks of the README and of ``docs/*.md`` run, and assert what they claim.

The blocks of one page run in order in one namespace, as a reader pasting them one after the
other would run them (a later block may use the ``fit`` of an earlier one). Every block holds at
least one ``assert``: a block that only runs would let the text drift from what the library
prints. A block that cannot run on one machine (a cluster's coordinator address) is preceded by
the line ``<!-- not run: REASON -->`` in the page; those are counted here, so that the
exception stays rare.
"""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)\n```", re.S)
_NOT_RUN = re.compile(r"<!-- not run: (?P<why>.+?) -->")
# pages whose blocks fit several models or run NUTS (over about 10 s of CPU each; measured with
# --durations): the slow run has them, the fast suite the cheap ones
SLOW_PAGES = {"README.md", "coming_from_numpyro.md", "coming_from_pymc.md", "control.md", "data.md",
              "discrete.md", "families.md", "fast_approximations.md", "model_parameters.md", "neural.md",
              "objectives.md", "posterior.md", "quickstart.md"}


def blocks(page: Path) -> list[tuple[int, str, str | None]]:
    """(line number, code, reason it is not run or None) of every ```python block of a page."""
    text = page.read_text(encoding="utf-8")
    out = []
    for m in _BLOCK.finditer(text):
        line = text.count("\n", 0, m.start("code"))
        why = _NOT_RUN.search(m.group("before"))
        out.append((line, m.group("code"), why.group("why") if why else None))
    return out


RUN_PAGES = [p for p in PAGES if blocks(p)]


def _param(page: Path):
    marks = [pytest.mark.slow] if page.name in SLOW_PAGES else []
    return pytest.param(page, id=page.name, marks=marks)


def test_the_pages_have_blocks_and_few_are_left_out():
    assert {"README.md", "quickstart.md", "posterior.md"} <= {p.name for p in RUN_PAGES}
    left_out = [(p.name, line, why) for p in RUN_PAGES for line, _, why in blocks(p) if why]
    assert len(left_out) <= 2, left_out


@pytest.mark.parametrize("page", [_param(p) for p in RUN_PAGES])
def test_page_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that write files (checkpoints, saved fits) write them here
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for line, code, why in blocks(page):
        if why:
            continue
        if code.lstrip().startswith(">>>"):
            _run_session(code, namespace, f"{page.name}:{line}")
            continue
        assert re.search(r"^\s*assert ", code, re.M), f"{page.name}:{line}: the block asserts nothing"
        try:
            exec(compile(code, f"{page.name}:{line}", "exec"), namespace)
        except Exception as e:  # name the block in the failure
            raise AssertionError(f"{page.name}, block at line {line} failed: {type(e).__name__}: {e}") from e


def _run_session(code: str, namespace: dict, where: str) -> None:
    """A ``>>>`` block: run it with doctest and compare what it prints."""
    test = doctest.DocTestParser().get_doctest(code, namespace, where, where, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    runner.run(test, out=report.append, clear_globs=False)
    assert runner.failures == 0, "".join(report)
