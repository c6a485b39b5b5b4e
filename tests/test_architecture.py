"""The package's structure stays what docs/architecture.md says: layers, no import cycle, small units.

The module graph is built from the source with ``ast`` (every ``import`` of a library module,
also those inside functions and those under ``if TYPE_CHECKING:``: a type hint that names a
module above is a dependency all the same). Each module belongs to a layer; an import may only
go to the same layer or one below it, and no set of modules may import each other in a cycle.
Imports of the library inside functions are refused except the few listed with their reason,
and no module reads another module's (or object's) private names, except those listed.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import jax
import numpy as np
import pytest

import variational as vi

ROOT = Path(__file__).resolve().parents[1] / "src" / "variational"

# bottom to top; an import may only go to the same rank or a lower one
LAYERS = ["errors", "model", "data", "families", "objectives", "engine", "callbacks", "posterior",
          "api", "calibration", "__init__", "cli", "__main__"]
RANK = {name: i for i, name in enumerate(LAYERS)}
# the facade modules re-export one layer's names under their public name
RANK["callbacks"] = RANK["engine"]
# compiled programs (persistent cache, program keys, counts) sit at the bottom, next to errors
RANK["compilation"] = RANK["errors"]
# the package's version (written into saved fits) imports nothing of the library
RANK["_version"] = RANK["errors"]
MAX_FILE_LINES = 420
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _layer(module: str) -> str:
    return module.split(".")[0]


# imports of the library inside a function, with the reason each is there
LATE_IMPORTS = {
    # the command line imports the library only for the command it runs, so that `--help` is quick
    ("cli/__init__.py", "main"): "the command's module, on demand",
    ("cli/demo.py", "run"): "the library, after the arguments are parsed",
    ("cli/demo.py", "_compare_with_nuts"): "the library, after the arguments are parsed",
}
# reads of another object's private attribute (receiver.attribute), with the reason
PRIVATE_READS = {
    ("posterior/direct.py", "fit._set_state"): "a direct method's answer becomes the state of the run it made",
    ("posterior/direct.py", "fit._hist"): "a direct method's trace becomes the history of the run it made",
    ("api.py", "new._data_signature"): "load records the fingerprint of the data it checked",
}
# names that start with "_" by another convention than privacy
PUBLIC_UNDERSCORE = {"_replace", "_fields", "_asdict", "_repr_html_", "_psis"}
# the receivers that are the module itself, a class or a library with underscore members of its own
OWN = {"self", "cls", "np", "jnp", "jax", "lax", "os", "sys", "numpyro", "dist", "az", "pd", "xr", "constraints"}


def _imports(path: Path, module: str) -> set[str]:
    """Library modules imported by ``path`` (absolute names relative to the package)."""
    tree = ast.parse(path.read_text())
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if module in ("__init__", "__main__", "api", "calibration", "errors", "callbacks", "objectives"):
        package = []
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] if node.module else [".".join(base + [a.name]) for a in node.names]
                found.update(n for n in names if n)
                if node.module:  # "from .x import y" may import submodule x.y
                    for a in node.names:
                        if (ROOT / Path(*(target.split(".") + [a.name]))).with_suffix(".py").exists():
                            found.add(f"{target}.{a.name}")
            elif node.module and node.module.split(".")[0] == "variational":
                found.add(".".join(node.module.split(".")[1:]) or "__init__")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "variational":
                    found.add(".".join(a.name.split(".")[1:]) or "__init__")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path, name) if m in modules and m != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = dfs(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = dfs(n)
            if found:
                return found
    return None


def test_the_graph_sees_the_imports_it_checks():
    """The checker is not vacuous: it finds known edges, and finds a planted cycle and a bad edge."""
    g = _graph()
    assert "posterior.fit" in g["api"] and "engine.run" in g["posterior.summaries"]
    assert "posterior.fit" in g["posterior.mcmc"]   # under TYPE_CHECKING: counted
    assert {"model", "model.handlers"} <= g["data.plan"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _late_imports() -> set[tuple[str, str]]:
    """(file, function) of every import of the library inside a function."""
    found = set()
    for path in ROOT.rglob("*.py"):
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                ours = (isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("variational"))
                        or isinstance(node, ast.Import) and any(a.name.startswith("variational") for a in node.names))
                if ours:
                    found.add((str(path.relative_to(ROOT)), fn.name))
    return found


def test_library_imports_inside_functions_are_the_listed_ones():
    """None in posterior/ (its modules import each other at the top, downwards); the CLI's are listed."""
    late = _late_imports()
    assert not {f for f in late if f[0].startswith("posterior/")}, sorted(late)
    assert late == set(LATE_IMPORTS), f"unlisted: {sorted(late - set(LATE_IMPORTS))}, gone: {sorted(set(LATE_IMPORTS) - late)}"


def _private_reads(path: Path) -> set[str]:
    """``receiver._name`` reads in ``path`` whose receiver is another object or module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id not in OWN
                and node.attr not in PUBLIC_UNDERSCORE):
            found.add(f"{node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("layer", ["posterior", "api.py"])
def test_no_module_reads_another_ones_private_names(layer):
    paths = [ROOT / layer] if layer.endswith(".py") else sorted((ROOT / layer).rglob("*.py"))
    reads = {(str(p.relative_to(ROOT)), r) for p in paths for r in _private_reads(p)}
    listed = {k for k in PRIVATE_READS if k[0] == layer or k[0].startswith(layer + "/")}
    assert reads == listed, f"unlisted: {sorted(reads - listed)}, gone: {sorted(listed - reads)}"


def test_the_checks_see_what_they_check(tmp_path):
    """A type-checking import counts as an edge; a late import and a private read are found."""
    planted = tmp_path / "planted.py"
    planted.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from variational.api import fit\n"
                       "def f(x):\n    from variational import errors\n    return x._secret\n")
    assert _imports(planted, "errors") == {"api", "__init__"}
    assert _private_reads(planted) == {"x._secret"}


def test_imports_go_down_the_layers():
    bad = []
    for mod, deps in _graph().items():
        for dep in deps:
            if RANK[_layer(dep)] > RANK[_layer(mod)]:
                bad.append(f"{mod} ({_layer(mod)}) imports {dep} ({_layer(dep)})")
    assert not bad, "imports that run up the layers:\n" + "\n".join(sorted(bad))


def test_every_module_belongs_to_a_layer_and_the_root_stays_small():
    graph = _graph()
    assert all(_layer(m) in RANK for m in graph), sorted(m for m in graph if _layer(m) not in RANK)
    root_modules = sorted(p.name for p in ROOT.glob("*.py"))
    assert len(root_modules) <= 8, root_modules
    for sub in ROOT.iterdir():
        if sub.is_dir() and sub.name != "__pycache__":
            doc = ast.get_docstring(ast.parse((sub / "__init__.py").read_text())) or ""
            assert "May import" in doc or "may import" in doc, f"{sub.name}/__init__.py must say what it may import"


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_units_stay_small(path):
    lines = path.read_text().count("\n")
    assert lines <= MAX_FILE_LINES, f"{path.name} has {lines} lines (at most {MAX_FILE_LINES})"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str) and len(body) > 1):
                body = body[1:]  # the docstring does not count
            length = node.end_lineno - body[0].lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{path.name}: {node.name} has {length} lines of code"


def test_the_approximation_is_a_value():
    """Draws are a pure function of the key (the fit's draw counter plays no part), the value
    cannot be changed, and fit.sample(seed=s) is its draws from PRNGKey(s)."""
    fit = vi.fit(lambda: vi.HalfNormal("s", 1.0), steps=200, learning_rate=0.05, progress=False)
    q = fit.approximation
    fit.sample(10)                                   # moves the fit's key counter
    z1, z2 = q.draw(jax.random.PRNGKey(5), 50), q.draw(jax.random.PRNGKey(5), 50)
    np.testing.assert_array_equal(np.asarray(z1), np.asarray(z2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.params = None
    expected = q.constrain(q.draw(jax.random.PRNGKey(3), 40), jax.random.fold_in(jax.random.PRNGKey(3), 1))
    np.testing.assert_array_equal(fit.sample(40, seed=3)["s"], expected["s"])
    assert (expected["s"] > 0).all() and fit.approximation is q   # same state: the same value
