"""``variational examples``: list the example scripts, or run one of them.

The examples live in the ``examples/`` folder of a source checkout (they are programs, not part
of the installed package). Each is a script ``examples/<name>.py`` with ``main(argv=None)`` that
accepts ``--quick`` (few steps, for a smoke test) and ``--out DIR`` (where its PNG figures and
``summary.md`` go), and exits non-zero when the quantitative claim it reproduces does not hold.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from pathlib import Path
from typing import Sequence

from ..errors import VariationalError

__all__ = ["examples_dir", "list_examples", "run_example", "main"]


class ExamplesNotFound(VariationalError):
    """The ``examples/`` folder (or one example in it) is not where the library expects it."""


def examples_dir() -> Path:
    """The ``examples/`` folder of the source checkout this library is imported from.

    ``$VARIATIONAL_EXAMPLES`` overrides it.

    Raises
    ------
    ExamplesNotFound
        When the library is installed from a wheel (no checkout next to it) and the variable
        is not set.

    Examples
    --------
    >>> examples_dir().name
    'examples'
    """
    env = os.environ.get("VARIATIONAL_EXAMPLES")
    here = Path(__file__).resolve()
    cand = Path(env) if env else here.parents[3] / "examples"
    if not cand.is_dir():
        where = "$VARIATIONAL_EXAMPLES" if env else f"next to the package ({here.parents[2]})"
        raise ExamplesNotFound(
            f"the examples folder {cand} does not exist ({where}); the examples ship with the "
            f"source checkout: clone the repository and install it with `pip install -e .`, "
            f"or set VARIATIONAL_EXAMPLES to the folder that holds the example scripts")
    return cand


def _describe(path: Path) -> str:
    try:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    except (SyntaxError, UnicodeDecodeError):
        doc = ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def list_examples() -> dict[str, str]:
    """Name -> first line of its docstring, for every example script, sorted by name.

    Examples
    --------
    >>> "advi_explained" in list_examples()
    True
    """
    folder = examples_dir()
    return {p.stem: _describe(p) for p in sorted(folder.glob("*.py")) if not p.stem.startswith("_")}


def run_example(name: str, argv: Sequence[str] = ()) -> int:
    """Import ``examples/<name>.py`` and call its ``main(argv)``; returns its exit status.

    Examples
    --------
    >>> run_example("no_such_example")
    Traceback (most recent call last):
    ...
    variational.cli.examples.ExamplesNotFound: no example named 'no_such_example' ...
    """
    known = list_examples()
    if name.endswith(".py"):
        name = name[:-3]
    if name not in known:
        raise ExamplesNotFound(
            f"no example named {name!r} in {examples_dir()}; choose one of {sorted(known)} "
            f"(`variational examples` lists them)")
    folder = examples_dir()
    path = folder / f"{name}.py"
    if str(folder) not in sys.path:  # examples may share helpers in examples/_*.py
        sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(f"variational_example_{name}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    if not hasattr(module, "main"):
        raise ExamplesNotFound(f"{path} has no main(argv) function")
    try:
        rc = module.main(list(argv))
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code not in (None, 0) and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    return int(rc or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """``variational examples [NAME [--quick] [--out DIR]]``."""
    argv = list(argv or [])
    if argv and argv[0] in ("-h", "--help"):
        print("usage: variational examples            list the examples\n"
              "       variational examples NAME [--quick] [--out DIR]   run one\n\n" + (__doc__ or ""))
        return 0
    try:
        if not argv:
            items = list_examples()
            width = max((len(k) for k in items), default=0)
            print(f"examples in {examples_dir()}:")
            for k, v in items.items():
                print(f"  {k:<{width}}  {v}")
            print("\nrun one with: variational examples NAME [--quick] [--out DIR]")
            return 0
        return run_example(argv[0], argv[1:])
    except ExamplesNotFound as e:
        print(f"variational examples: {e}", file=sys.stderr)
        return 2
