"""Data parallelism (``kvae.parallel``): a batch split across two devices trains as on one.

JAX reads its device count once, when it starts, so the two-device runs are
subprocesses (``tests/parallel_fit.py``) on a CPU split into two virtual
devices by ``XLA_FLAGS``. They do not depend on the suite's backend, so they
run once, in the JAX pass. The refusals run in every pass: under TensorFlow
and PyTorch, several devices are refused; under JAX, more than Keras sees.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

from kvae import parallel, train
from kvae.config import ConfigError, TrainConfig

BACKEND = keras.backend.backend()
JAX_PASS = pytest.mark.skipif(
    BACKEND != "jax", reason="its own JAX subprocesses, alike in every pass: run under JAX"
)
HELPER = pathlib.Path(__file__).with_name("parallel_fit.py")
TWO_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
# Both runs draw the same weights, batches and noise eps (one SeedGenerator for the
# whole batch, not one per device) and compute the same float32 arithmetic; only the
# order of the sums over the batch changes, split into one partial sum per device.
# Measured over 16 Adam steps: at most 1.6e-7 relative (kl_loss), 1-2 float32 ulps.
# 1e-5 leaves 60 times that; the mistakes in BUGS move the loss by 2e-3 (same noise) and
# 8e-3 (one share's gradient), and the KL by 5e-2 and 2e-1.
RTOL = 1e-5
# Codes of the saved model reloaded: measured equal under JAX, 1e-6 apart under TensorFlow
# and PyTorch (their matrix products sum in another order).
CODES_RTOL = 1e-5
METRICS = ("loss", "reconstruction_loss", "kl_loss")
METRICS += tuple(f"val_{name}" for name in METRICS)


def start(*args, backend="jax", **env):
    """Start ``tests/parallel_fit.py ARGS`` in a fresh process (one device unless ``env``)."""
    base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL")}
    return subprocess.Popen(
        [sys.executable, str(HELPER), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**base, "KERAS_BACKEND": backend, **env},
    )


def finish(*processes):
    """Wait for each process and check it succeeded; none is left running on a failure."""
    try:
        for process in processes:
            _, stderr = process.communicate(timeout=240)
            assert process.returncode == 0, stderr[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


def helper(*args, backend="jax", **env):
    """Run ``tests/parallel_fit.py ARGS`` to the end; fails with its stderr."""
    finish(start(*args, backend=backend, **env))


BUGS = ("same_noise", "one_share_gradient")  # mistakes parallel_fit.py can put in


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Train on one device, then on two (and with each of BUGS), both seeing two devices."""
    folders = {}
    for devices, bugs in ((1, ()), (2, BUGS)):
        folders[devices] = tmp_path_factory.mktemp(f"devices{devices}")
        helper("train", folders[devices], "--devices", devices, "--bugs", *bugs, **TWO_DEVICES)
    return folders


def read_fit(folder, bug=None):
    return json.loads((folder / (f"fit-{bug}.json" if bug else "fit.json")).read_text())


def largest_relative_difference(history, reference):
    return max(
        float(np.max(np.abs(np.subtract(history[m], reference[m])) / np.abs(reference[m])))
        for m in METRICS
    )


@JAX_PASS
@pytest.mark.slow
def test_two_devices_train_as_one(runs):
    one, two = read_fit(runs[1]), read_fit(runs[2])
    for name in METRICS:
        assert len(two["history"][name]) == 2, name  # both epochs ran
        np.testing.assert_allclose(
            two["history"][name], one["history"][name], rtol=RTOL, err_msg=name
        )
    assert (one["weights_on"], two["weights_on"]) == (1, 2)  # two really were used
    codes = [np.load(runs[devices] / "codes.npz") for devices in (1, 2)]
    for name in ("z_mean", "z_log_var"):  # measured: 5e-7 apart, codes of size 1 to 10
        np.testing.assert_allclose(codes[1][name], codes[0][name], rtol=CODES_RTOL, atol=CODES_RTOL)
    # fit set the distribution back: none was set before it.
    assert two["distribution_after"] == one["distribution_after"] == "None"


@JAX_PASS
@pytest.mark.slow
@pytest.mark.parametrize("bug", BUGS)
def test_the_tolerance_catches_a_data_parallel_mistake(runs, bug):
    """The agreement above can fail: each mistake puts a metric far outside RTOL."""
    wrong, one = read_fit(runs[2], bug)["history"], read_fit(runs[1])["history"]
    assert largest_relative_difference(wrong, one) > 100 * RTOL


@JAX_PASS
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_a_two_device_model_loads_on_one_device(runs, tmp_path, backend):
    """Its .keras file loads in a fresh one-device process and encodes as it did in training."""
    folder = runs[2]
    helper("encode", folder / "model.keras", tmp_path / "codes.npz", backend=backend)
    loaded, trained_codes = np.load(tmp_path / "codes.npz"), np.load(folder / "codes.npz")
    assert str(loaded["backend"]) == backend
    for name in ("z_mean", "z_log_var"):
        np.testing.assert_allclose(
            loaded[name], trained_codes[name], rtol=CODES_RTOL, atol=CODES_RTOL
        )


def free_port():
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


@JAX_PASS
@pytest.mark.slow
def test_two_processes_train_one_model_as_the_readme_says(tmp_path):
    """Two processes (jax.distributed on this machine, one device each), as for two hosts.

    Each brings half of the digits under the caller's ``DataParallel``; kvae's
    own ``devices=2`` is refused there, since it counts one process's devices.
    """
    port = free_port()
    processes = [start("process", tmp_path, "--rank", rank, "--port", port) for rank in (0, 1)]
    finish(*processes)
    ranks = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    # Their halves differ, so equal metrics mean one model trained on both halves at once.
    assert ranks[0]["history"] == ranks[1]["history"]
    assert len(ranks[0]["history"]["loss"]) == 2
    for rank in ranks:
        assert rank["weights_on"] == 2
        assert "this run has 2 processes (jax.distributed)" in rank["refusal"]


def command(*args, **env):
    """``python -m kvae ARGS`` under JAX in a process that sees two devices."""
    base = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-m", "kvae", *map(str, args)],
        capture_output=True,
        text=True,
        env={**base, "KERAS_BACKEND": "jax", **TWO_DEVICES, **env},
        timeout=240,
    )


# One epoch on 512 digits, a small judge and log p(x) estimate, no 2-D companion.
QUICK = ["--epochs", "1", "--train-size", "512", "--batch-size", "64", "--hidden", "64"]
QUICK += ["--iw-samples", "4", "--iw-examples", "64", "--judge-samples", "200"]
QUICK += ["--mixture-components", "4", "--map-epochs", "0", "--quiet"]


@JAX_PASS
@pytest.mark.slow
def test_kvae_train_on_two_devices_records_them(tmp_path):
    out = tmp_path / "run"
    result = command("train", "--devices", "2", *QUICK, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "backend jax on 2 devices" in result.stdout
    assert json.loads((out / "metrics.json").read_text())["devices"] == 2
    assert json.loads((out / "config.json").read_text())["devices"] == 2


@JAX_PASS
def test_kvae_train_refuses_more_devices_than_jax_sees(tmp_path):
    result = command("train", "--devices", "4", *QUICK, "--out", tmp_path / "run")
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip().splitlines()
    assert len(message) == 1 and "argument --devices" in message[0], message
    assert "devices=4, but Keras sees 2 devices (cpu:0, cpu:1)" in message[0]
    assert not (tmp_path / "run").exists() and "Epoch" not in result.stdout


# --- refusals in this process, on the suite's backend -----------------------------------------

SMALL = {"epochs": 1, "train_size": 128, "batch_size": 64, "hidden": (16,), "map_epochs": 0}
SMALL |= {"mixture_components": 4}


@pytest.mark.skipif(BACKEND == "jax", reason="Keras trains on several devices under JAX")
def test_this_backend_refuses_several_devices(tmp_path):
    config = TrainConfig(devices=2, **SMALL)
    with pytest.raises(ConfigError) as raised:
        train.train_and_evaluate(config, tmp_path / "run", verbose=0)
    assert raised.value.field == "devices"
    assert f"devices=2 needs the jax backend, got {BACKEND!r}" in str(raised.value)
    assert not (tmp_path / "run").exists()  # refused before the folder was made
    with pytest.raises(ConfigError, match="needs the jax backend"):
        train.fit(config, train.load_data(config), verbose=0)  # a notebook's path too
    assert keras.distribution.distribution() is None


@pytest.mark.skipif(BACKEND != "jax", reason="other backends refuse any devices > 1 first")
def test_more_devices_than_keras_sees_are_refused(tmp_path):
    seen = keras.distribution.list_devices()
    with pytest.raises(ConfigError) as raised:
        with parallel.data_parallel(len(seen) + 1):
            pytest.fail("entered a scope over more devices than exist")
    assert raised.value.field == "devices"
    assert f"Keras sees {len(seen)} device" in str(raised.value)
    assert "--xla_force_host_platform_device_count=N" in str(raised.value)  # how to get more
    assert keras.distribution.distribution() is None
