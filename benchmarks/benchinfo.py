"""What the benchmark pages record about a run: the source's commit, the machine's load, the
packages' versions, and whether an exception means "the library has no such method" (reported
"not available").

Pure Python (no JAX), so the PyMC environment's workers can import it too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def source_commit(package_file: str) -> str:
    """The last commit that changed the imported package, and the branch and HEAD of its git tree."""
    src = Path(package_file).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True, check=True).stdout.strip()

    try:
        dirty = git("status", "--porcelain", ".")
        last = git("log", "-1", "--format=%h", "--", ".")   # the last commit that changed the package
        return f"{last} (the package's last change; branch {git('rev-parse', '--abbrev-ref', 'HEAD')} at " \
               f"{git('rev-parse', '--short', 'HEAD')}{', uncommitted changes' if dirty else ''})"
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "?"


def load_average() -> str:
    """The 1, 5 and 15-minute load averages, or "?"."""
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def unknown_method(e: Exception) -> bool:
    """Whether ``vi.fit(..., method=m)`` failed because the library does not know ``m``."""
    text = str(e).lower()
    return isinstance(e, (ValueError, KeyError, NotImplementedError)) and (
        "is not known" in text or "not implemented" in text or "unknown method" in text)


def shown_command(command: str) -> str:
    """A benchmark's command line without the options that only name output files or add a note."""
    head, *opts = command.split(" --")
    keep = [o for o in opts if o.split(" ", 1)[0] not in ("json", "md", "note", "from-json", "contradictions-note")]
    return " --".join([head, *keep])


def package_versions(pymc_python: str | None) -> dict[str, str]:
    """Versions of Python, variational and the libraries it runs on (asked of this interpreter), and
    of PyMC, pymc-extras and PyTensor asked of ``pymc_python`` (an environment with PyMC), if given."""
    code = ("import importlib.metadata as m, platform, json; out={'python': platform.python_version()}\n"
            "for n in {names}:\n  try: out[n]=m.version(n)\n  except Exception: pass\nprint(json.dumps(out))")
    vi_names = ["variational", "jax", "jaxlib", "numpyro", "optax", "arviz", "numpy"]
    out = json.loads(subprocess.run([sys.executable, "-c", code.replace("{names}", repr(vi_names))],
                                    capture_output=True, text=True).stdout)
    import variational   # the imported source tree's version, which may differ from the installed metadata
    out["variational"] = getattr(variational, "__version__", out.get("variational", "?"))
    if pymc_python:
        pm = subprocess.run([pymc_python, "-c", code.replace("{names}", repr(["pymc", "pymc-extras", "pytensor"]))],
                            capture_output=True, text=True).stdout
        if pm.strip():
            p = json.loads(pm)
            out.update({k: v for k, v in p.items() if k != "python"}, python_pymc_env=p["python"])
    return out
