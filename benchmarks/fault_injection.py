"""Fault injection: kill checkpointing fits with SIGKILL at random moments, then check every
checkpoint left on disk and every run resumed from one.

    PYTHONPATH=src python benchmarks/fault_injection.py [--kills 20] [--stream-kills 5] [--seed 0]
        [--fits radon,stream]

Two fits, each run in child processes that are killed (``kill -9``) at a random moment and
started again with ``resume=True``, so that one chain of runs is interrupted many times:

1. the hierarchical radon regression (the survey from ``../shared/data/radon.csv`` when it is
   there, generated data otherwise), minibatches of 50 rows, a checkpoint every 10 steps,
   3,000 steps: ``--kills`` kills;
2. a streamed linear regression read from Parquet shards (2,000 rows in row groups of 100,
   batches of 64, so batches straddle epochs), a checkpoint every 7 steps, 4,000 steps (128
   epochs, so that kills land mid-epoch):
   ``--stream-kills`` kills, each reported with the epoch and the row of the epoch at which
   the checkpoint on disk stands.

Kill moments follow the fit rather than the clock (the machine's load changes start-up times
tenfold): one kill in five lands at a uniform time between the child's start and the moment the
uninterrupted child first saved (start-up, loading, compilation, first save); the others at a
uniform time after the child's own first save, over the time its remaining steps take. A child
that finishes before its kill, or a checkpoint that already stands at the last step, ends a
chain: its file is compared with the uninterrupted run and the next chain starts from step 0,
until ``--kills`` kills have landed.
After every kill the parent process checks that the checkpoint on disk (if one was written
yet) loads with ``vi.load``, counts the temporary files the kill left, loads the checkpoint
again and runs it to the end in memory, and compares that resumed run with an uninterrupted
run of the same fit (loss history and every array of the engine state, bit for bit). The
chain of killed runs is finally let finish, and its file compared the same way.
The script exits non-zero when any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import jax  # noqa: E402
import numpy as np  # noqa: E402

import variational as vi  # noqa: E402
from variational.data.datasets import find_shared_data, load_radon, make_radon, radon_model  # noqa: E402

RADON = dict(steps=3000, batch_size=50, checkpoint_every=10, seed=1, progress=False)
STREAM = dict(steps=4000, batch_size=64, checkpoint_every=7, seed=2, progress=False)


def radon_data() -> tuple[dict, dict]:
    path = find_shared_data("radon.csv")
    d = load_radon(path) if path is not None else make_radon(seed=0)
    return d.columns, {"n_counties": d.n_counties}


def regression(x, y):
    a = vi.Normal("a", 0.0, 5.0)
    b = vi.Normal("b", 0.0, 5.0)
    s = vi.HalfNormal("s", 2.0)
    vi.Normal("y", a + b * x, s, observed=y)


def write_shards(folder: Path) -> Path:
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.normal(size=2000)
    y = 1.0 + 2.0 * x + rng.normal(0.0, 0.5, 2000)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(4):
        part = slice(500 * k, 500 * (k + 1))
        pd.DataFrame({"x": x[part], "y": y[part]}).to_parquet(folder / f"part{k}.parquet", row_group_size=100)
    return folder


def build(kind: str, folder: Path) -> tuple:
    """(model, data, model_kwargs, settings) of a fit of this kind."""
    if kind == "radon":
        cols, kw = radon_data()
        return radon_model, cols, kw, RADON
    return regression, vi.data.parquet(folder / "shards", shuffle_buffer=150), None, STREAM


def child(kind: str, folder: str, checkpoint: str) -> None:
    """Run one fit of ``kind`` to the end (resuming from ``checkpoint`` when it exists)."""
    model, data, kw, settings = build(kind, Path(folder))
    vi.fit(model, data, model_kwargs=kw, checkpoint=checkpoint, resume=True, **settings)


def run_child(kind: str, folder: Path, checkpoint: Path, kill_at: float | None = None,
              kill_after_save: float | None = None) -> tuple[float, bool, float]:
    """Start a child and SIGKILL it ``kill_at`` seconds after its start, or ``kill_after_save``
    seconds after it first writes ``checkpoint`` (so that kills track the fit, not the load of
    the machine). Returns (seconds, killed, seconds until its first save)."""
    cmd = [sys.executable, __file__, "--child", kind, str(folder), str(checkpoint)]
    before = checkpoint.stat().st_mtime_ns if checkpoint.exists() else None
    t0 = time.perf_counter()
    first = float("nan")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while proc.poll() is None:
        now = time.perf_counter() - t0
        if first != first and checkpoint.exists() and checkpoint.stat().st_mtime_ns != before:
            first = now
        due = kill_at if kill_at is not None else (first + kill_after_save if kill_after_save is not None else None)
        if due is not None and due == due and now >= due:
            proc.kill()
            proc.wait()
            return now, True, first
        time.sleep(0.005)
    if proc.returncode != 0:
        raise RuntimeError(f"child {kind} failed: {proc.stderr.read().decode()[-2000:]}")
    return time.perf_counter() - t0, False, first


def same(a: vi.Fit, b: vi.Fit) -> bool:
    la, lb = jax.tree_util.tree_leaves(a.state), jax.tree_util.tree_leaves(b.state)
    return (np.array_equal(a.hist, b.hist) and len(la) == len(lb)
            and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb)))


def inject(kind: str, kills: int, folder: Path, rng: np.random.Generator) -> dict:
    model, data, kw, settings = build(kind, folder)
    ref_path = folder / f"{kind}-reference.npz"
    wall, _, first = run_child(kind, folder, ref_path, None)   # the uninterrupted run
    reference = vi.load(ref_path, model, data, model_kwargs=kw)
    total = settings["steps"]
    ck = folder / f"{kind}-chain.npz"
    rows, ok, restarts = [], True, 0
    while len(rows) < kills:
        done = vi.load(ck, model, data, model_kwargs=kw).steps if ck.exists() else 0
        if done >= total:  # the chain reached its end between kills: check it, start again from step 0
            ok &= same(vi.load(ck, model, data, model_kwargs=kw), reference)
            ck.unlink()
            restarts += 1
            continue
        if rng.random() < 0.2:   # during start-up, loading, compilation or the first save
            when, after = "before its first save", float(rng.uniform(0.0, first))
            _, killed, _ = run_child(kind, folder, ck, kill_at=after)
        else:                    # while it runs, between saves or during one
            when, after = "after its first save", float(rng.uniform(0.0, (wall - first) * (total - done) / total))
            _, killed, _ = run_child(kind, folder, ck, kill_after_save=after)
        if not killed:  # the chain finished before the kill: start it again from step 0
            ok &= same(vi.load(ck, model, data, model_kwargs=kw), reference)
            ck.unlink()
            restarts += 1
            continue
        temps = len(list(folder.glob(f".{ck.name}.*.tmp")))
        row = {"kill": len(rows) + 1, "from_step": done, "when": when, "after_s": round(after, 2),
               "temporaries": temps}
        if ck.exists():
            try:
                saved = vi.load(ck, model, data, model_kwargs=kw)
            except Exception as e:  # a checkpoint on disk that does not load is a failure
                row.update(loadable=False, error=str(e)[:200])
                ok = False
                rows.append(row)
                continue
            row.update(loadable=True, step=saved.steps)
            ds = saved.state.data_state
            if kind == "stream":
                row.update(epoch=int(ds.epoch), row_of_epoch=int(ds.pos))
            resumed = saved.refine(total - saved.steps) if saved.steps < total else saved
            row["resumed_equal"] = same(resumed, reference)
            ok &= row["resumed_equal"]
        else:
            row.update(loadable=None, step=0, resumed_equal=None)
        rows.append(row)
        print(json.dumps(row), flush=True)
    run_child(kind, folder, ck, None)                          # let the chain finish
    final = vi.load(ck, model, data, model_kwargs=kw)
    left = len(list(folder.glob(f".{ck.name}.*.tmp")))
    chain_equal = final.steps == total and same(final, reference)
    return {"kind": kind, "child_wall_s": round(wall, 2), "first_save_s": round(first, 2),
            "rows": rows, "chain_equal": chain_equal,
            "chains_finished_between_kills": restarts,
            "temporaries_left": left, "ok": bool(ok and chain_equal and left == 0)}


def report(results: list[dict]) -> str:
    lines = []
    for r in results:
        rows = r["rows"]
        on_disk = [x for x in rows if x["loadable"] is not None]
        lines.append(f"{r['kind']}: {len(rows)} kills (uninterrupted child run {r['child_wall_s']} s, first "
                     f"checkpoint after {r['first_save_s']} s); "
                     f"checkpoint on disk after {len(on_disk)} of them, loadable "
                     f"{sum(bool(x['loadable']) for x in on_disk)}/{len(on_disk)}; resumed runs equal to the "
                     f"uninterrupted one {sum(bool(x.get('resumed_equal')) for x in on_disk)}/{len(on_disk)}; "
                     f"temporaries left by kills {sum(x['temporaries'] for x in rows)}, left at the end "
                     f"{r['temporaries_left']}; chain of killed runs equal at the end: {r['chain_equal']} "
                     f"(chains that finished before a kill and were started again: "
                     f"{r['chains_finished_between_kills']}, each equal to the uninterrupted run)")
        if r["kind"] == "stream":
            mids = [(x["step"], x["epoch"], x["row_of_epoch"]) for x in on_disk]
            lines.append(f"  stream checkpoints at (step, epoch, row of epoch): {mids}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--stream-kills", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fits", default="radon,stream", help="which fits to kill (comma-separated)")
    ap.add_argument("--child", nargs=3, metavar=("KIND", "FOLDER", "CHECKPOINT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_shards(folder / "shards")
        kills = {"radon": args.kills, "stream": args.stream_kills}
        results = [inject(kind, kills[kind], folder, rng) for kind in args.fits.split(",")]
    print(report(results))
    sys.exit(0 if all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    main()
