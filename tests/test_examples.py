"""Every example script runs end to end with ``--quick`` and its seed's claims hold.

Each example asserts its own quantitative claims (against an exact posterior, a closed-form
truth or NUTS) and exits non-zero when one fails; here every example is run through the
``variational examples NAME --quick --out DIR`` command in a fresh process, and the test checks
the exit status, the figures and the claims table of the ``summary.md`` it wrote.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from variational.cli import main as cli_main
from variational.cli.examples import ExamplesNotFound, examples_dir, list_examples, run_example

EXAMPLES = sorted(list_examples())


def test_examples_are_listed(capsys):
    files = sorted(p.stem for p in examples_dir().glob("*.py") if not p.stem.startswith("_"))
    assert EXAMPLES == files
    assert {"radon", "quickstart", "advi_explained", "gaussian_mixture", "numpyro_svi"} <= set(files)
    assert cli_main(["examples"]) == 0
    out = capsys.readouterr().out
    for name in files:
        assert re.search(rf"^\s+{name}\s+\S", out, re.M), f"{name} missing from the listing"


def test_unknown_example_is_a_clear_error(capsys):
    with pytest.raises(ExamplesNotFound, match="no example named 'nope'.*choose one of"):
        run_example("nope")
    assert cli_main(["examples", "nope"]) == 2
    assert "no example named 'nope'" in capsys.readouterr().err


def test_missing_examples_folder_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("VARIATIONAL_EXAMPLES", str(tmp_path / "absent"))
    with pytest.raises(ExamplesNotFound, match="does not exist.*VARIATIONAL_EXAMPLES"):
        examples_dir()


_CLAIM = re.compile(r"^\| (.+?) \| (.+?) \| (yes|\*\*no\*\*) \|$", re.M)


# The fast suite runs the cheapest example in process at a couple of hundred steps per fit
# (about 8 s of CPU); the others cost 20-50 s each even so (many models compiled, NUTS) and are
# run in full by test_example_quick below, with their claims enforced, in the slow run.
SMOKE = ["iris_svgd"]


@pytest.mark.parametrize("name", SMOKE)
def test_example_smoke_in_process(name, tmp_path, capsys):
    """An example runs end to end in this process at a couple of hundred steps per fit.

    ``--smoke`` cuts every fit and every NUTS run to ``examples/_common.SMOKE_STEPS`` steps:
    too few for the claims to hold (they are enforced by ``test_example_quick``, in the slow
    run), enough to catch a script that no longer runs against the library. The summary and the
    figures are written, and the claims are measured and recorded all the same.
    """
    out = tmp_path / name
    assert cli_main(["examples", name, "--smoke", "--out", str(out)]) == 0, capsys.readouterr().err[-3000:]
    summary = (out / "summary.md").read_text()
    assert "mode: --smoke" in summary
    assert len(_CLAIM.findall(summary)) >= 2, f"{name}: fewer than two claims in summary.md"
    assert list(out.glob("*.png"))


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_quick(name, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", XLA_FLAGS="--xla_cpu_multi_thread_eigen=false",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                           os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / name
    proc = subprocess.run([sys.executable, "-m", "variational", "examples", name, "--quick", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    summary = (out / "summary.md").read_text()
    assert len(summary) > 100
    assert "## Claims" in summary, f"{name}: summary.md has no claims table (examples/_common.Report)"
    claims = _CLAIM.findall(summary)
    assert len(claims) >= 2, f"{name}: fewer than two checked claims in summary.md"
    assert all(ok == "yes" for _, _, ok in claims)
    pngs = list(out.glob("*.png"))
    assert pngs and all(p.stat().st_size > 5_000 for p in pngs)


def test_flat_priors_fit():
    """vi.Flat / vi.HalfFlat (improper, no sampler) work: the quickstart's Iris and Normal models use them.

    With a flat prior on mu and y_i ~ N(mu, 1), the posterior is N(mean(y), 1/sqrt(n)).
    """
    import numpy as np

    import variational as vi

    y = np.array([1.0, 2.0, 4.0, 0.5])

    def model(y):
        mu = vi.Flat("mu")
        vi.HalfFlat("unused_scale")  # improper and unconstrained-positive: must trace too
        vi.Normal("y", mu, 1.0, observed=y)

    ld = vi.LogDensity(model, {"y": y})
    assert ld.names == ["mu", "unused_scale"] and ld.dim == 2
    fit = vi.fit(lambda y: vi.Normal("y", vi.Flat("mu"), 1.0, observed=y), {"y": y}, steps=4000, stl=True,
                 progress=False)
    assert abs(float(fit.mean["mu"]) - y.mean()) < 0.05
    assert abs(float(fit.std["mu"]) - 0.5) < 0.05


def test_flat_priors_fit_in_minibatches():
    """The 40,000 x 100 Normal model of the quickstart (flat prior on mu) with batch_size=.

    Flat prior, known sd 1: the posterior of mu is N(mean(y), 1/sqrt(n)).
    """
    import numpy as np

    import variational as vi

    y = np.random.default_rng(3).normal(2.0, 1.0, size=400)
    fit = vi.fit(lambda y: vi.Normal("y", vi.Flat("mu"), 1.0, observed=y), {"y": y}, batch_size=100,
                 steps=6000, progress=False)
    assert abs(float(fit.mean["mu"]) - y.mean()) < 0.05
