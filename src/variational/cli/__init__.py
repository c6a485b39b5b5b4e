"""The ``variational`` command line: ``variational demo``, ``variational examples``, ``--version``.

Owns: the console script (this module), the demo (:mod:`.demo`) and the example runner
(:mod:`.examples`). May import: the public package ``variational`` and every layer.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``variational`` console script and ``python -m variational``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--version"], ["-V"]):
        from .. import __version__

        print(f"variational {__version__}")
        return 0
    commands = {"demo": "fit the hierarchical radon regression with ADVI and show the result",
                "examples": "list the example scripts, or run one: examples NAME [--quick] [--out DIR]"}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        p = argparse.ArgumentParser(prog="variational", description="Fast, trustworthy variational inference on JAX.")
        p.add_argument("command", choices=sorted(commands), help="; ".join(f"{k}: {v}" for k, v in commands.items()))
        p.add_argument("-V", "--version", action="store_true", help="print the version and exit")
        if argv and argv[0] not in ("-h", "--help"):
            p.error(f"unknown command {argv[0]!r}; choose one of {sorted(commands)}")
        p.print_help()
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "demo":
        from .demo import main as demo_main

        return demo_main(rest)
    if cmd == "examples":
        from .examples import main as examples_main

        return examples_main(rest)
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
