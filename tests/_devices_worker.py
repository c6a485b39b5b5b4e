"""Subprocess workers for tests/test_devices.py (JAX's device count is fixed at import).

``python _devices_worker.py single OUT``: fits on 1 and on 4 forced host devices, writes JSON.
``python _devices_worker.py process PID NPROC PORT FOLDER OUT``: one process of a multi-process
fit over a Parquet folder (each process reads its own shards), writes its parameters.
"""

import json
import os
import sys

MODE = sys.argv[1]
if MODE == "single":
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax  # noqa: E402
import numpy as np  # noqa: E402


def logistic(x1, x2, y):
    import variational as vi

    w = vi.Normal("w", 0, 5, shape=2)
    b = vi.Normal("b", 0, 5)
    vi.Bernoulli("y", logit_p=x1 * w[0] + x2 * w[1] + b, observed=y)


def single(out: str) -> None:
    import variational as vi
    from variational.data.datasets import make_radon, radon_model

    assert jax.device_count() == 4, jax.devices()
    res = {}

    def compare(name, *args, **kw):
        one = vi.fit(*args, progress=False, **kw)
        four = vi.fit(*args, progress=False, devices="all", **kw)
        res[name] = {
            "max_abs_loc": float(np.abs(np.asarray(one.params["loc"]) - np.asarray(four.params["loc"])).max()),
            "max_abs_rho": float(np.abs(np.asarray(one.params["rho"]) - np.asarray(four.params["rho"])).max()),
            "max_rel_hist": float(np.max(np.abs(one.hist - four.hist) / np.abs(one.hist))),
            "steps": [one.steps, four.steps],
            "replicated": bool(four.params["loc"].sharding.is_fully_replicated),
            "data_devices": sorted({len(v.sharding.device_set) for v in four.data.values()}) if four.data else [],
        }

    d = make_radon()
    # mean-field at a constant step of 0.01: the engine's steps compared across devices
    kw = dict(model_kwargs={"n_counties": d.n_counties}, steps=300, seed=2, method="advi", learning_rate=0.01)
    compare("radon_minibatch", radon_model, d.columns, batch_size=100, **kw)
    d920 = make_radon(n_rows=920)
    compare("radon_full", radon_model, d920.columns, **kw)
    folder = sys.argv[3]
    compare("parquet_stream", logistic, vi.data.parquet(folder), batch_size=64, steps=200, seed=1,
            method="advi", learning_rate=0.01)
    errors = {}
    for name, kwargs in {"uneven_batch": dict(batch_size=102), "uneven_rows": dict(batch_size=None)}.items():
        try:
            vi.fit(radon_model, d.columns, devices="all", progress=False, **kw, **kwargs)
            errors[name] = None
        except Exception as e:  # the test checks type and message
            errors[name] = [type(e).__name__, str(e)]
    res["errors"] = errors
    with open(out, "w") as f:
        json.dump(res, f)


def process(pid: int, nproc: int, port: str, folder: str, out: str) -> None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)
    import variational as vi

    src = vi.data.parquet(folder, shard=(jax.process_index(), jax.process_count()))
    fit = vi.fit(logistic, src, batch_size=64, steps=200, devices="all", progress=False, seed=1,
                 method="advi", learning_rate=0.01)
    np.savez(out, loc=np.asarray(fit.params["loc"]), rho=np.asarray(fit.params["rho"]), hist=fit.hist,
             local_rows=src.num_rows, epochs=fit.epochs, devices=jax.device_count())


if __name__ == "__main__":
    if MODE == "single":
        single(sys.argv[2])
    else:
        process(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6])
