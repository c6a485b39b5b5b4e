"""Subprocess worker for tests/test_compilation.py: XLA compilations of a first default fit.

``python _count_worker.py OUT``: in a new process with every cache off, a default fit of a small
radon-like regression, ``fit.diagnose()`` and 1000 draws, counted from JAX's compile log
("Finished XLA compilation of ..."). Writes ``{"fit": [...], "diagnose": [...], "draws": [...]}``
(the names of the programs compiled in each part) as JSON.
"""

import json
import logging
import os
import sys

os.environ["VARIATIONAL_COMPILE_CACHE"] = "off"
os.environ["VARIATIONAL_COMPILE_AHEAD"] = "0"

import jax  # noqa: E402

import variational as vi  # noqa: E402
from variational.data.datasets import make_radon, radon_model  # noqa: E402

compiled: list[str] = []


class _Log(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("Finished XLA compilation of "):
            compiled.append(text[len("Finished XLA compilation of "):].split(" in ")[0])


logging.getLogger("jax").addHandler(_Log())
for quiet in ("jax._src.dispatch", "jax._src.interpreters.pxla"):
    logging.getLogger(quiet).setLevel(logging.WARNING)   # (the log still reaches the handler)
jax.config.update("jax_log_compiles", True)

d = make_radon(n_counties=12, n_rows=120, seed=1)
out = {}
fit = vi.fit(radon_model, d.columns, model_kwargs={"n_counties": d.n_counties}, progress=False)
out["fit"], compiled[:] = list(compiled), []
fit.diagnose()
out["diagnose"], compiled[:] = list(compiled), []
fit.sample(1000)
out["draws"] = list(compiled)
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
