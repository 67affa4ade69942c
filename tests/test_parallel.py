"""Data-parallel training over several devices and processes: each device simulates
its own shard of every batch from its own keys, and the run equals a one-device run
with the same number of key streams (`shards`)."""

import json
import os
import socket
import subprocess
import sys

import equinox as eqx
import jax
import numpy as np
import pytest
from exact_tasks import PoissonGamma

import sgjax


WORKER = os.path.join(os.path.dirname(__file__), "parallel_worker.py")
KW = dict(key=jax.random.key(0), steps=50, batch_size=64, eval_every=25, steps_per_call=25, progress=False)


def _result(proc_output: str) -> dict:
    line = next(line for line in proc_output.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


MODES = {"stream": {}, "budget": {"budget": 256}}


class _OneDevice(dict):
    """The reference: one device, 4 key streams per batch; each mode trained on first
    use."""

    def __missing__(self, name):
        est, hist = sgjax.fit(PoissonGamma(), shards=4, **KW, **MODES[name])
        leaves = jax.tree.leaves(eqx.filter(est.network, eqx.is_inexact_array))
        self[name] = {
            "loss": hist["loss"],
            "val_loss": hist["val_loss"],
            "params": [float(np.asarray(x).sum()) for x in leaves],
        }
        return self[name]


@pytest.fixture(scope="module")
def one_device():
    return _OneDevice()


def _check(got, want, modes=tuple(MODES)):
    for name in modes:
        # Same batches, same updates: only the order of the cross-device gradient sum
        # differs (float32 rounding).
        np.testing.assert_allclose(got[name]["loss"], want[name]["loss"], rtol=1e-5)
        np.testing.assert_allclose(got[name]["val_loss"], want[name]["val_loss"], rtol=1e-5)
        np.testing.assert_allclose(got[name]["params"], want[name]["params"], rtol=1e-4, atol=1e-5)
        # One process: parameters replicated on every device; several: each process
        # returns its own full copy, usable (and savable) like any array.
        assert got[name]["specs"] == (["P()"] if got["processes"] == 1 else ["local"])


@pytest.mark.parametrize("mode", ["stream", pytest.param("budget", marks=pytest.mark.slow)])
def test_four_devices_match_one_device(one_device, mode):
    # The fixed-budget mode shards the same step, fed from a sharded dataset instead
    # of fresh simulations: slow, to keep CI near 10 minutes.
    proc = subprocess.run([sys.executable, WORKER, "devices", "4", mode], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = _result(proc.stdout)
    assert got["devices"] == 4 and got["processes"] == 1
    _check(got, one_device, (mode,))


@pytest.mark.slow
def test_two_processes_match_one_device(one_device, tmp_path):
    with socket.socket() as s:  # a free port for the coordinator
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, "distributed", str(i), str(port), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    results = [_result(o) for o, _ in outs]
    for got in results:
        assert got["devices"] == 4 and got["processes"] == 2
        _check(got, one_device)
    # Process 0 alone wrote the checkpoints; both resumed from them to the same run.
    ck = [got["checkpoints"] for got in results]
    assert ck[0]["writes"] == [25, 50, 75] and ck[1]["writes"] == []
    assert [f for f in ck[0]["files"] if f.startswith("ckpt-")] != []
    assert ck[0]["resumed_loss"] == ck[1]["resumed_loss"] and len(ck[0]["resumed_loss"]) == 3
    np.testing.assert_allclose(ck[0]["resumed_params"], ck[1]["resumed_params"], rtol=1e-6)
    assert ck[0]["saved"] and ck[1]["saved"]


def test_shards_change_the_batches_not_the_quality(one_device):
    # shards=1 draws other batches (other keys), so the run differs — but it is an
    # equally good run, not a broken one.
    _, hist = sgjax.fit(PoissonGamma(), **KW)
    assert hist["loss"] != one_device["stream"]["loss"]
    assert abs(hist["val_loss"][-1] - one_device["stream"]["val_loss"][-1]) < 0.05


def test_bad_devices_and_shards_say_how_to_fix():
    task = PoissonGamma()
    with pytest.raises(ValueError, match="xla_force_host_platform_device_count"):
        sgjax.fit(task, devices=len(jax.devices()) + 1, **KW)
    with pytest.raises(ValueError, match="'all', a number or a list"):
        sgjax.fit(task, devices="gpu", **KW)
    with pytest.raises(ValueError, match="multiple of `shards`"):
        sgjax.fit(task, shards=3, **KW)
    with pytest.raises(ValueError, match="positive multiple"):
        sgjax.fit(task, shards=0, **KW)
