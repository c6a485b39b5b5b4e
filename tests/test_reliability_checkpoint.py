"""Checkpoints as untrusted input, checkpoint targets that fail, and streamed fits that resume,
are interrupted or refined: each must see exactly the rows and numbers of an uninterrupted run."""

import os


import errno  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
import zipfile  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import variational as vi  # noqa: E402
from variational.engine import checkpoint as ckpt  # noqa: E402

Y = np.random.default_rng(1).normal(2.0, 1.0, 20)


def normal_model(y):
    mu = vi.Normal("mu", 0.0, 10.0)
    vi.Normal("y", mu, 1.0, observed=y)


def leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


# ---------------------------------------------------------------------------------------------
# a checkpoint file is untrusted input
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    path = folder / "fit.npz"
    vi.fit(normal_model, {"y": Y}, steps=50, progress=False, checkpoint=path)
    return path


def rewrite(src, dst, edit=None, extra=None, compress=False):
    """Copy a checkpoint, changing its JSON metadata with ``edit(meta)`` and adding members."""
    with zipfile.ZipFile(src) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    meta = json.loads(np.load(io.BytesIO(members["meta.npy"])).tobytes())
    if edit is not None:
        edit(meta)
    buf = io.BytesIO()
    np.save(buf, np.frombuffer(json.dumps(meta).encode(), np.uint8))
    members["meta.npy"] = buf.getvalue()
    members.update(extra or {})
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, raw in members.items():
            z.writestr(name, raw)
    return dst


def _set(path, value):
    def edit(meta):
        *parents, last = path.split(".")
        node = meta
        for p in parents:
            node = node[p]
        node[last] = value(meta) if callable(value) else value
    return edit


def _deep(n):
    v = 1
    for _ in range(n):
        v = [v]
    return v


CRAFTED = [  # (what the file holds, the field the error must name)
    ("settings.checkpoint", "TARGET", "settings.checkpoint"),
    ("settings.resume", "OTHER", "settings.resume"),
    ("settings.callbacks", ["os.system"], "settings.callbacks"),
    ("family.options.checkpoint", "TARGET", "family.options.checkpoint"),
    ("settings.num_particles", "1", "settings.num_particles"),
    ("settings.num_particles", 10**12, "settings.num_particles"),
    ("settings.learning_rate", float("nan"), "settings.learning_rate"),
    ("settings.seed", {"nested": {"object": 1}}, "settings.seed"),
    ("settings.optimizer", "../../optimizer", "settings.optimizer"),
    ("family.name", "advi; rm -rf", "family.name"),
    ("model_kwargs", {"k": _deep(20)}, "model_kwargs.k"),
    ("notes", [1], "notes[0]"),
    ("latent", "mu", "latent"),
    ("steps", -5, "steps"),
    ("exec", "print(1)", "exec"),
]


@pytest.mark.parametrize("field,value,named", CRAFTED, ids=[f"{c[0]}={str(c[1])[:12]}" for c in CRAFTED])
def test_crafted_metadata_is_refused_naming_the_field_and_nothing_is_written(saved, tmp_path, field, value, named):
    target, other = tmp_path / "bashrc", tmp_path / "other.npz"
    other.write_bytes(saved.read_bytes())
    value = {"TARGET": str(target), "OTHER": str(other)}.get(value, value) if isinstance(value, str) else value
    bad = rewrite(saved, tmp_path / "bad.npz", _set(field, value))
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(vi.CheckpointError, match=re.escape(f"field '{named}")):
        vi.load(bad, normal_model, {"y": Y})
    with pytest.raises(vi.CheckpointError, match=re.escape(f"field '{named}")):
        vi.fit(normal_model, {"y": Y}, steps=60, resume=bad, progress=False)
    assert sorted(os.listdir(tmp_path)) == before and not target.exists()


def test_crafted_members_are_refused_and_a_true_file_loads_without_writing(saved, tmp_path):
    evil = io.BytesIO()
    np.save(evil, np.zeros(3))
    with pytest.raises(vi.CheckpointError, match="member 'evil' is not one this library writes"):
        vi.load(rewrite(saved, tmp_path / "a.npz", extra={"evil.npy": evil.getvalue()}), normal_model, {"y": Y})
    with pytest.raises(vi.CheckpointError, match="compressed"):
        vi.load(rewrite(saved, tmp_path / "b.npz", compress=True), normal_model, {"y": Y})
    with pytest.raises(vi.CheckpointError, match="'state_0' is"):
        vi.load(rewrite(saved, tmp_path / "c.npz", _set("state_leaves", lambda m: [[[7], "float32"]]
                                                         + m["state_leaves"][1:])), normal_model, {"y": Y})
    before = {p: os.stat(saved.parent / p).st_mtime_ns for p in os.listdir(saved.parent)}
    fit = vi.load(saved, normal_model, {"y": Y})
    assert fit.steps == 50 and fit.hist.shape == (50,)
    assert {p: os.stat(saved.parent / p).st_mtime_ns for p in os.listdir(saved.parent)} == before


def test_a_file_whose_method_kept_other_parameters_says_which_versions_and_what_to_do(saved, tmp_path):
    """A file written when the method kept another number of arrays (low-rank's parameters did
    change): the error names both library versions and says to refit, not only 'same settings'."""
    def older(meta):
        meta.pop("library")
        meta["state_parts"]["params"] += 1
    assert json.loads(np.load(io.BytesIO(zipfile.ZipFile(saved).read("meta.npy"))).tobytes())["library"] \
        == vi.__version__
    with pytest.raises(vi.CheckpointError, match=r"variational parameters \(method '\w+'\) has \d+ arrays in the "
                       r"file but \d+ .*does not say which version of variational wrote it \(this is "
                       + re.escape(vi.__version__) + r"\).*refit and save again"):
        vi.load(rewrite(saved, tmp_path / "old.npz", older), normal_model, {"y": Y})


# ---------------------------------------------------------------------------------------------
# checkpoint targets: checked before the run; a failed save keeps the fit; stale temporaries go
# ---------------------------------------------------------------------------------------------
def test_unwritable_checkpoint_target_is_refused_before_any_step(tmp_path):
    ran = []
    cb = vi.callbacks.Tracker(every=1, step=lambda fit: ran.append(fit.steps))
    (tmp_path / "a_file").write_text("x")
    for target, why in [(tmp_path, "is a folder"), (tmp_path / "a_file" / "fit.npz", "cannot be written")]:
        with pytest.raises(vi.CheckpointError, match=why):
            vi.fit(normal_model, {"y": Y}, steps=20, checkpoint=target, callbacks=[cb], progress=False)
    assert ran == []


def test_failed_save_keeps_the_fit_with_a_warning_naming_path_and_error(tmp_path, monkeypatch):
    def full_disk(path, arrays):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt, "write_atomic", full_disk)
    path = tmp_path / "fit.npz"
    with pytest.warns(RuntimeWarning) as caught:
        fit = vi.fit(normal_model, {"y": Y}, steps=30, checkpoint=path, checkpoint_every=10, progress=False)
    assert fit.steps == 30 and not path.exists()
    text = " ".join(str(w.message) for w in caught)
    assert str(path) in text and os.strerror(errno.ENOSPC) in text


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale, live = tmp_path / f".fit.npz.{dead}.tmp", tmp_path / f".fit.npz.{os.getppid()}.tmp"
    stale.write_bytes(b"half a zip")
    live.write_bytes(b"being written")
    vi.fit(normal_model, {"y": Y}, steps=5, checkpoint=tmp_path / "fit.npz", progress=False)
    assert not stale.exists() and live.exists()
    assert vi.load(tmp_path / "fit.npz", normal_model, {"y": Y}).steps == 5


# ---------------------------------------------------------------------------------------------
# streamed fits: resume, interrupt and refine see the rows of the uninterrupted run
# ---------------------------------------------------------------------------------------------
def regression(x, y):
    a = vi.Normal("a", 0.0, 5.0)
    b = vi.Normal("b", 0.0, 5.0)
    vi.Normal("y", a + b * x, 1.0, observed=y)


def write_shards(folder, shift=0.0):
    rng = np.random.default_rng(0)
    x = rng.normal(size=95)
    y = 1.0 + 2.0 * x + rng.normal(size=95) + shift
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(3):
        part = slice(32 * k, 32 * (k + 1))
        pd.DataFrame({"x": x[part], "y": y[part]}).to_parquet(folder / f"p{k}.parquet", row_group_size=10)
    return folder


STREAM = dict(batch_size=10, progress=False, seed=3)   # 95 rows: batches straddle epochs


def test_streamed_resume_interrupt_and_refine_equal_the_uninterrupted_run(tmp_path):
    folder = write_shards(tmp_path / "rows")
    source = lambda: vi.data.parquet(folder, shuffle_buffer=7)  # noqa: E731
    full = vi.fit(regression, source(), steps=60, **STREAM)

    ck = tmp_path / "ck.npz"

    def crash(fit, losses, i):
        if i == 35:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        vi.fit(regression, source(), steps=60, checkpoint=ck, checkpoint_every=10, callbacks=[crash], **STREAM)
    resumed = vi.fit(regression, source(), steps=60, checkpoint=ck, checkpoint_every=10, resume=True, **STREAM)
    assert resumed.timings["steps"] == 30                      # continued from step 30, row 300
    assert np.array_equal(resumed.hist, full.hist) and leaves_equal(resumed.state, full.state)

    fit = vi.fit(regression, source(), steps=0, **STREAM)   # Ctrl-C inside a compiled chunk
    run_chunk, calls = fit.engine.run_chunk, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return run_chunk(*args, **kwargs)

    fit.engine.run_chunk = interrupted
    fit.refine(60, callbacks=[vi.callbacks.Tracker(every=7, n=lambda f: f.steps)])
    assert fit.interrupted and fit.steps == 7                  # the batches fed to the lost chunk ...
    fit.engine.run_chunk = run_chunk
    fit.refine(53)                                             # ... are fed again
    assert np.array_equal(fit.hist, full.hist) and leaves_equal(fit.state, full.state)

    with pytest.raises(vi.CheckpointError, match="streaming source given differs"):
        vi.load(ck, regression, vi.data.parquet(write_shards(tmp_path / "other", shift=1.0), shuffle_buffer=7))
    with pytest.raises(vi.CheckpointError, match="in-memory columns"):
        vi.load(ck, regression, pd.read_parquet(folder))


def test_streamed_reader_reads_no_further_than_the_steps_ask(tmp_path):
    read = []

    def chunks():
        for start in range(0, 100_000, 100):
            read.append(100)
            yield {"x": np.arange(start, start + 100, dtype=np.float32), "y": np.zeros(100, np.float32)}

    src = vi.data.iterable(chunks, num_rows=100_000, shuffle_buffer=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = vi.fit(regression, src, steps=5, **STREAM)
    assert fit.steps == 5
    # the head (one chunk, to trace the model) and the 5 batches of 10 rows: one chunk
    assert sum(read) <= 200 + 100, sum(read)
