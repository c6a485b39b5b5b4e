"""Data-parallel fits: several devices (forced host devices) and several processes.

JAX fixes the number of host devices when it is imported, so these run in subprocesses with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

WORKER = str(Path(__file__).with_name("_devices_worker.py"))
# several processes, each paying the JAX import and its compilations: the slow run has them
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def parquet_folder(tmp_path_factory):
    import pandas as pd

    folder = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    for i in range(4):  # 4 shards of 500 rows, row groups of 100
        x = rng.normal(size=(500, 2))
        p = 1 / (1 + np.exp(-(x @ np.array([1.0, -2.0]) + 0.5)))
        y = (rng.random(500) < p).astype(np.float32)
        pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "y": y}).to_parquet(
            folder / f"part-{i}.parquet", row_group_size=100)
    return folder


def _env():
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("XLA_FLAGS", None)
    return env


@pytest.fixture(scope="module")
def four_device_results(tmp_path_factory, parquet_folder):
    out = tmp_path_factory.mktemp("dev") / "res.json"
    r = subprocess.run([sys.executable, WORKER, "single", str(out), str(parquet_folder)],
                       env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("case", ["radon_minibatch", "radon_full", "parquet_stream"])
def test_four_devices_equal_one_device(four_device_results, case):
    r = four_device_results[case]
    assert r["steps"][0] == r["steps"][1] > 0
    # the same program partitioned by the compiler: equal up to floating-point reduction order
    assert r["max_abs_loc"] < 1e-3 and r["max_abs_rho"] < 1e-3
    assert r["max_rel_hist"] < 1e-4
    assert r["replicated"]  # parameters replicated on every device
    if case != "parquet_stream":
        assert r["data_devices"] == [4]  # rows placed across the 4 devices


def test_uneven_splits_are_clear_errors(four_device_results):
    e = four_device_results["errors"]
    assert e["uneven_batch"][0] == "DataError"
    assert "batch_size=102" in e["uneven_batch"][1] and "100 or 104" in e["uneven_batch"][1]
    assert e["uneven_rows"][0] == "DataError"
    assert "N=919" in e["uneven_rows"][1] and "batch_size=" in e["uneven_rows"][1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_reading_their_own_shards_agree(tmp_path, parquet_folder):
    port = str(_free_port())
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, WORKER, "process", str(i), "2", port,
                               str(parquet_folder), str(tmp_path / f"p{i}.npz")],
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    logs = [p.communicate(timeout=120)[0] for p in procs]
    wall = time.perf_counter() - t0
    assert all(p.returncode == 0 for p in procs), "\n".join(l[-2000:] for l in logs)
    a, b = (np.load(tmp_path / f"p{i}.npz") for i in range(2))
    # each process read its own 2 of the 4 shards; together they saw all 2000 rows
    assert int(a["local_rows"]) == int(b["local_rows"]) == 1000
    assert int(a["devices"]) == 2
    np.testing.assert_allclose(float(a["epochs"]), 200 * 64 / 2000)
    np.testing.assert_array_equal(a["loc"], b["loc"])
    np.testing.assert_array_equal(a["rho"], b["rho"])
    np.testing.assert_array_equal(a["hist"], b["hist"])
    # the fit learns the generating coefficients' signs (b=0.5, w=(1, -2))
    assert a["loc"][1] > 0.3 and a["loc"][2] < -0.8
    assert wall < 60, f"two-process fit took {wall:.0f}s"
