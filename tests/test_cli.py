"""The ``kvae`` command, run for real: ``python -m kvae`` in subprocesses, on bundled MNIST.

The suite runs once per backend (``KERAS_BACKEND``). Each pass trains with its
own backend, and redraws the figures of a run saved under another one, so the
three passes together cover every backend and three cross-backend loads.
"""

import dataclasses
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys

import keras
import pytest

from kvae import backends, cli, data, networks, plots, train

BACKEND = keras.backend.backend()
OTHER_BACKEND = {"tensorflow": "jax", "jax": "torch", "torch": "tensorflow"}[BACKEND]
# One real epoch on the first 512 bundled digits (8 steps), a small log p(x) estimate:
# seconds per run, and every part of a run folder still gets written.
QUICK = ["--epochs", "1", "--train-size", "512", "--batch-size", "64"]
QUICK += ["--iw-samples", "8", "--iw-examples", "64", "--quiet"]
RUN_FILES = ("model.keras", "config.json", "history.json", "history.csv", "metrics.json")
FIGURES = ("loss_curves", "reconstructions", "latent_scatter", "latent_grid")
FIGURES += ("interpolation", "prior_samples")
# -log p(x) of a decoder that says 0.5 for every pixel: 784 * log 2. Anything trained does better.
COIN_FLIP_NATS = 784 * math.log(2.0)


def kvae(*args, backend=BACKEND, timeout=240):
    """Run ``python -m kvae ARGS`` with ``KERAS_BACKEND=backend``; returns the finished process."""
    # TensorFlow sets TF_CPP_MIN_LOG_LEVEL in this process when it loads; a user's shell lacks it.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_BACKEND"] = backend
    command = [sys.executable, "-m", "kvae", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


def assert_usage_error(result, *words):
    """Exit status 2 and exactly one line on stderr, naming the problem; no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kvae") and "error:" in lines[0], lines[0]
    for word in words:
        assert word in lines[0], lines[0]


def digest(folder):
    """Every file under ``folder``: relative path -> (modification time, sha256 of the bytes)."""
    return {
        str(path.relative_to(folder)): (
            path.stat().st_mtime_ns,
            hashlib.sha256(path.read_bytes()).hexdigest(),
        )
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def leftovers(parent):
    """Hidden partial or swapped-out folders that a finished command should have removed."""
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name)


def read_metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def assert_complete_run(run_dir, backend):
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    for name in FIGURES:
        png = (run_dir / "figures" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000, name
    metrics = read_metrics(run_dir)
    assert metrics["backend"] == backend
    assert all(math.isfinite(metrics[k]) for k in ("reconstruction", "kl", "elbo", "iw_log_px"))
    # A trained decoder beats coin flips; an ELBO is a log-probability of 784 pixels, so < 0.
    assert -COIN_FLIP_NATS < metrics["elbo"] < 0
    assert metrics["kl"] > 0
    # log-mean-exp >= mean (Jensen), example by example: the k-sample bound sits above the ELBO.
    assert metrics["iw_log_px"] >= metrics["iw_elbo"]
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history["loss"]) == 1 and math.isfinite(history["val_loss"][0])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A short run trained with this pass's backend, through the environment variable."""
    out = tmp_path_factory.mktemp("own") / "run"
    result = kvae("train", *QUICK, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "8/8" in result.stdout  # Keras's progress: 512 digits in batches of 64
    assert "test ELBO" in result.stdout
    return out


@pytest.fixture(scope="module")
def replaced_run(run_dir, tmp_path_factory):
    """A copy of ``run_dir`` replaced (``--force``) by a run on another backend (``--backend``).

    Returns the folder and the digest of the copy it replaced.
    """
    out = tmp_path_factory.mktemp("other") / "run"
    shutil.copytree(run_dir, out)
    before = digest(out)
    args = ["--seed", "1", "--backend", OTHER_BACKEND, "--out", out, "--force"]
    result = kvae("train", *QUICK, *args)
    assert result.returncode == 0, result.stderr
    return out, before


@pytest.mark.slow
def test_train_writes_a_complete_run(run_dir):
    """Each backend's pass of the suite trains under that backend."""
    assert_complete_run(run_dir, BACKEND)
    assert leftovers(run_dir.parent) == []


@pytest.mark.slow
def test_force_replaces_a_run(replaced_run):
    out, before = replaced_run
    after = digest(out)
    assert after.keys() == before.keys()
    assert after["model.keras"][1] != before["model.keras"][1]
    assert json.loads((out / "config.json").read_text())["seed"] == 1
    assert leftovers(out.parent) == []


@pytest.mark.slow
def test_backend_option_overrides_the_environment(replaced_run):
    out, _ = replaced_run
    assert_complete_run(out, OTHER_BACKEND)


@pytest.mark.slow
def test_figures_loads_a_run_saved_under_another_backend(replaced_run):
    out, _ = replaced_run
    shutil.rmtree(out / "figures")
    result = kvae("figures", out, "--lang", "ko")
    assert result.returncode == 0, result.stderr
    for name in FIGURES:
        assert (out / "figures" / f"{name}.png").stat().st_size > 2000, name
    assert read_metrics(out)["backend"] != BACKEND  # the load did cross backends


@pytest.mark.slow
def test_sweep_writes_table_and_figures(tmp_path):
    out = tmp_path / "sweep"
    result = kvae("sweep", "--betas", "0.5", "8", *QUICK, "--out", out)
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert [row["beta"] for row in rows] == [0.5, 8.0]
    assert all(math.isfinite(row["elbo"]) for row in rows)
    # The tug of war: a stronger pull towards N(0, I) leaves less information in z.
    assert rows[1]["kl"] < rows[0]["kl"]
    assert (out / "sweep.csv").read_text().splitlines()[0].startswith("beta,reconstruction,kl")
    assert "| beta |" in result.stdout and "| beta |" in (out / "sweep.md").read_text()
    for name in ("beta_tradeoff", "sigma_vs_beta"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 2000, name


@pytest.mark.slow
def test_existing_run_is_not_overwritten(run_dir):
    before = digest(run_dir)
    result = kvae("train", *QUICK, "--out", run_dir)
    assert_usage_error(result, "already exists", "--force")
    assert digest(run_dir) == before
    assert leftovers(run_dir.parent) == []


def test_force_refuses_a_folder_kvae_did_not_write(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "keep.txt").write_text("not a run")
    result = kvae("train", *QUICK, "--out", folder, "--force")
    assert_usage_error(result, "not a kvae run folder")
    assert (folder / "keep.txt").read_text() == "not a run"


@pytest.mark.slow
def test_nan_loss_stops_with_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    result = kvae("train", *QUICK, "--learning-rate", "1e12", "--out", out)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("kvae train: error: training stopped: the loss is not finite")
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["train", "--backend", "theano"], ["--backend", "theano"]),
        (["train", "--epochs", "-1"], ["--epochs", "-1"]),
        (["train", "--epochs", "2.5"], ["--epochs", "2.5"]),
        (["train", "--beta", "-0.5"], ["--beta", "-0.5"]),
        (["train", "--beta", "nan"], ["--beta", "nan"]),
        (["train", "--latent-dim", "0"], ["--latent-dim", "0"]),
        (["train", "--kind", "rnn"], ["--kind", "rnn"]),
        (["train", "--source", "web"], ["--source", "web"]),
        (["train", "--no-such-option"], ["--no-such-option"]),
        (["sweep", "--betas", "1", "-2"], ["--betas", "-2"]),
        (["figures", "missing-run"], ["missing-run", "does not exist"]),
        ([], ["COMMAND"]),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_usage_error(kvae(*args), *words)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_figures_refuses_a_folder_without_a_model(tmp_path):
    assert_usage_error(kvae("figures", tmp_path), "model.keras")


def test_choices_match_the_package():
    # cli.py spells them out so that it can refuse a bad value before Keras loads.
    assert cli.BACKENDS == backends.BACKENDS
    assert cli.KINDS == networks.KINDS
    assert cli.SOURCES == data.SOURCES
    assert cli.LANGS == plots.LANGS


def test_help_shows_the_config_defaults():
    defaults = dataclasses.asdict(train.TrainConfig())
    assert {name: defaults[name] for name in cli.SHOWN_DEFAULTS} == cli.SHOWN_DEFAULTS
