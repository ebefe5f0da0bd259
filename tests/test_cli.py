"""The ``kvae`` command, run for real: ``python -m kvae`` in subprocesses, on bundled MNIST.

The suite runs once per backend (``KERAS_BACKEND``). Each pass trains with its
own backend, is interrupted by real signals, and redraws the figures of a run
saved under another backend, so the three passes together cover every backend
and three cross-backend loads. Refusals that happen before Keras loads are the
same on every backend: they are marked ``ONCE`` and run in the TensorFlow pass only.
"""

import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import pytest
from folders import immutable, writable_again

from kvae import rundir
from kvae.config import TrainConfig

BACKEND = keras.backend.backend()
OTHER_BACKEND = {"tensorflow": "jax", "jax": "torch", "torch": "tensorflow"}[BACKEND]
# Tests of the command alone run in one pass: TensorFlow's, where a small `kvae train` takes the
# least time (measured: 11 s against JAX's 17 s, which compiles every step function first).
ONCE = pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="refused before Keras loads, alike on every backend: run under TensorFlow",
)
# One real epoch on the first 512 bundled digits (8 steps), a small log p(x) estimate:
# seconds per run, and every part of a run folder still gets written.
QUICK = ["--epochs", "1", "--train-size", "512", "--batch-size", "64", "--hidden", "128"]
QUICK += ["--iw-samples", "8", "--iw-examples", "64", "--quiet"]
# The judge on few samples and a small mixture; no 2-D companion (its own runs add COMPANION).
QUICK += ["--judge-samples", "200", "--mixture-components", "5", "--map-epochs", "0"]
COMPANION_EPOCHS = ["--map-epochs", "1"]  # a one-epoch 2-D companion for the 2-D figures
RUN_FILES = ("model.keras", "model_2d.keras", "config.json", "history.json", "history.csv")
RUN_FILES += ("metrics.json",)
COMPANION = {"model_2d.keras", "figures/map_latent_scatter.png"}  # absent from 2-D runs
FIGURES = ("loss_curves", "reconstructions", "latent_scatter", "latent_grid")
FIGURES += ("interpolation", "samples", "map_latent_scatter")
TWO_D_FIGURES = tuple(name for name in FIGURES if name != "map_latent_scatter")
SAMPLERS = ("prior", "mixture", "aggregate")
# kvae.judge.reference(): the bundled test digits, as the judge's documentation states them.
REFERENCE = {"confident": 0.942, "score": 9.29, "rarest": 0.085}
# -log p(x) of a decoder that says 0.5 for every pixel: 784 * log 2. Anything trained does better.
COIN_FLIP_NATS = 784 * math.log(2.0)


def environment(backend=BACKEND, **extra):
    # TensorFlow sets TF_CPP_MIN_LOG_LEVEL in this process when it loads; a user's shell lacks it.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return {**env, "KERAS_BACKEND": backend, "PYTHONUNBUFFERED": "1", **extra}


def kvae(*args, backend=BACKEND, timeout=900, **env):
    """Run ``python -m kvae ARGS`` with ``KERAS_BACKEND=backend``; returns the finished process."""
    command = [sys.executable, "-m", "kvae", *map(str, args)]
    return subprocess.run(
        command, capture_output=True, text=True, env=environment(backend, **env), timeout=timeout
    )


def start(*args):
    """Start ``python -m kvae ARGS`` without waiting; stdout is a line-buffered pipe."""
    command = [sys.executable, "-m", "kvae", *map(str, args)]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
        preexec_fn=_default_sigint,
    )


def _default_sigint():
    # As from a terminal: a shell starts background jobs (and so this suite) with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(condition, process, timeout=240):
    """Poll ``condition()`` every 5 ms until true; fails if ``process`` ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def staging_folders(parent):
    return [p for p in parent.iterdir() if ".partial-" in p.name]


def assert_usage_error(result, *words):
    """Exit status 2 and exactly one line on stderr, naming the problem; no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kvae") and "error:" in lines[0], lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    assert "Epoch" not in result.stdout  # refused before any training


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
    """Hidden staging, swapped-out or lock files that a finished command should have removed."""
    hidden = (".partial-", ".old-", ".lock")
    return sorted(p.name for p in parent.rglob("*") if any(h in p.name for h in hidden))


def read_metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def assert_complete_run(run_dir, backend, figures=FIGURES):
    config = json.loads((run_dir / "config.json").read_text())
    companion = config["latent_dim"] != 2 and config["map_epochs"] > 0
    for name in RUN_FILES:
        assert (run_dir / name).is_file() == (companion or name not in COMPANION), name
    for name in figures:
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
    assert_judge_metrics(metrics)
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history["loss"]) == 1 and math.isfinite(history["val_loss"][0])
    # The marker lists exactly the files the run wrote, so --force can tell them from others.
    files = [f for f in rundir.written_files(run_dir) if f != rundir.MARKER_FILE]
    assert rundir.read_marker(run_dir)["files"] == files


def assert_judge_metrics(metrics):
    """The judge's figures are there, each in its range; the reference row is the real digits'."""
    assert 0.0 <= metrics["reconstruction_accuracy"] <= 1.0
    assert metrics["judge_samples"] == 200 and metrics["mixture_components"] == 5
    for name in (*SAMPLERS, "reference"):
        assert 0.0 <= metrics[f"{name}_confident"] <= 1.0, name
        assert 1.0 - 1e-9 <= metrics[f"{name}_score"] <= 10.0 + 1e-9, name  # exp of a KL <= log 10
        shares = metrics[f"{name}_class_shares"]
        assert len(shares) == 10 and math.isclose(sum(shares), 1.0), name
        assert metrics[f"{name}_rarest"] == min(shares) <= 0.1, name
    for what, value in REFERENCE.items():
        assert metrics[f"reference_{what}"] == pytest.approx(value, abs=0.0051), what
    assert metrics["reference_examples"] == 2000
    if "map_elbo" in metrics:  # the 2-D companion of a wider code
        assert -COIN_FLIP_NATS < metrics["map_elbo"] < 0 and metrics["map_latent_dim"] == 2
        assert 0.0 <= metrics["map_reconstruction_accuracy"] <= 1.0


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A short run trained with this pass's backend, through the environment variable."""
    out = tmp_path_factory.mktemp("own") / "run"
    result = kvae("train", *QUICK, *COMPANION_EPOCHS, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "8/8" in result.stdout  # Keras's progress: 512 digits in batches of 64
    assert "test ELBO" in result.stdout
    return out, result.stdout


@pytest.fixture
def run_copy(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir[0], copy)
    return copy


@pytest.fixture(scope="module")
def replaced_run(run_dir, tmp_path_factory):
    """A copy of ``run_dir`` replaced (``--force``) by a run on another backend (``--backend``).

    The replacement has a 2-D code: it draws its own decoded grid, with no companion.

    Returns the folder and the digest of the copy it replaced.
    """
    out = tmp_path_factory.mktemp("other") / "run"
    shutil.copytree(run_dir[0], out)
    before = digest(out)
    args = ["--seed", "1", "--backend", OTHER_BACKEND, "--latent-dim", "2", "--out", out]
    args += ["--force"]
    result = kvae("train", *QUICK, *args)
    assert result.returncode == 0, result.stderr
    return out, before


# --- training, per backend --------------------------------------------------------------------


@pytest.mark.slow
def test_train_writes_a_complete_run(run_dir):
    """Each backend's pass of the suite trains under that backend."""
    out, _ = run_dir
    assert_complete_run(out, BACKEND)
    assert leftovers(out.parent) == []


@pytest.mark.slow
def test_judge_figures_repeat_from_the_saved_model_and_the_seed(run_dir):
    """metrics.json's judge figures are those of the saved model, drawn with the config's seed."""
    import numpy as np

    from kvae import GaussianMixtureSampler, judge, load_mnist

    out, stdout = run_dir
    metrics = read_metrics(out)
    vae = keras.saving.load_model(out / "model.keras")
    x_test, y_test = load_mnist("test")
    right = np.mean(
        judge.predict_proba(np.asarray(vae.predict(x_test, verbose=0))).argmax(1) == y_test
    )
    assert metrics["reconstruction_accuracy"] == pytest.approx(right, abs=2 / len(y_test))
    prior = judge.score(vae.sample(200, seed=0))
    mixture = GaussianMixtureSampler(vae, 5, seed=0).fit(load_mnist("train")[0][:512])
    drawn = judge.score(vae.sample(200, sampler=mixture, seed=0))
    for name, score in (("prior", prior), ("mixture", drawn)):
        assert metrics[f"{name}_confident"] == pytest.approx(score.confident, abs=2 / 200), name
        assert metrics[f"{name}_rarest"] == pytest.approx(score.rarest_class, abs=2 / 200), name


@pytest.mark.slow
def test_train_summary_prints_the_judge_figures(run_dir):
    out, stdout = run_dir
    metrics = read_metrics(out)
    right = f"{metrics['reconstruction_accuracy']:.1%} of test reconstructions are the right digit"
    assert right in stdout
    lines = {line.split("  confident")[0].strip(): line for line in stdout.splitlines()}
    for key, label in (
        ("prior", "samples from N(0, I)"),
        ("mixture", "samples from a 5-component Gaussian mixture"),
        ("aggregate", "samples from the aggregate posterior"),
        ("reference", "real test digits (reference)"),
    ):
        line = lines[label]
        assert f"confident {metrics[key + '_confident']:.1%}" in line, line
        assert f"score {metrics[key + '_score']:.2f}" in line, line
        assert f"rarest digit {metrics[key + '_rarest']:.1%}" in line, line


@pytest.mark.slow
def test_force_replaces_a_run(replaced_run):
    out, before = replaced_run
    after = digest(out)
    assert after.keys() == before.keys() - COMPANION  # nothing of the 16-D run is left
    assert after["model.keras"][1] != before["model.keras"][1]
    assert json.loads((out / "config.json").read_text())["seed"] == 1
    assert leftovers(out.parent) == []


@pytest.mark.slow
def test_backend_option_overrides_the_environment(replaced_run):
    out, _ = replaced_run
    assert_complete_run(out, OTHER_BACKEND, TWO_D_FIGURES)
    assert "map_elbo" not in read_metrics(out)


@pytest.mark.slow
def test_figures_loads_a_run_saved_under_another_backend(replaced_run):
    out, _ = replaced_run
    shutil.rmtree(out / "figures")
    result = kvae("figures", out, "--lang", "ko")
    assert result.returncode == 0, result.stderr
    assert {p.stem for p in (out / "figures").iterdir()} == set(TWO_D_FIGURES)
    for name in TWO_D_FIGURES:
        assert (out / "figures" / f"{name}.png").stat().st_size > 2000, name
    assert read_metrics(out)["backend"] != BACKEND  # the load did cross backends
    assert leftovers(out.parent) == []


@pytest.mark.slow
def test_sweep_keeps_the_finished_betas_when_one_fails(tmp_path):
    out = tmp_path / "sweep"
    # beta = 1e38 makes beta * KL overflow float32 at the first step: that beta's loss is inf.
    result = kvae("sweep", "--betas", "0.5", "8", "1e38", *QUICK, "--out", out)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("kvae sweep: error: 1 of 3 betas failed") and "1e+38" in last
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert [(row["beta"], row["status"]) for row in rows] == [
        (0.5, "ok"),
        (8.0, "ok"),
        (1e38, "failed"),
    ]
    assert "finite" in rows[2]["error"]
    assert all(math.isfinite(row["elbo"]) for row in rows[:2])
    # The tug of war: a stronger pull towards N(0, I) leaves less information in z.
    assert rows[1]["kl"] < rows[0]["kl"]
    csv_lines = (out / "sweep.csv").read_text().splitlines()
    judged = ["reconstruction_accuracy"]
    judged += [f"{s}_{w}" for s in ("prior", "mixture") for w in ("confident", "score", "rarest")]
    header = ["beta", "reconstruction", "kl", "elbo", "mean_sigma", *judged, "status"]
    assert csv_lines[0] == ",".join(header)
    assert csv_lines[3].endswith("," * (len(header) - 2) + "failed")
    for row in rows[:2]:
        assert all(0.0 <= row[name] <= 10.0 for name in judged), row
        assert row["mixture_rarest"] <= 0.1 and row["reconstruction_accuracy"] <= 1.0
    markdown = (out / "sweep.md").read_text()
    assert "| " + " | ".join(header[:-1]) + " |" in markdown
    assert "| beta |" in result.stdout and "| failed |" in markdown
    for name in ("beta_tradeoff", "sigma_vs_beta"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 2000, name
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_nan_loss_stops_with_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    # beta * KL overflows float32 at the first step, on every backend: the loss is inf.
    result = kvae("train", *QUICK, "--beta", "1e38", "--out", out)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("kvae train: error: training stopped") and "finite" in lines[-1]
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.slow
def test_ctrl_c_during_training_exits_130_and_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    process = start("train", *QUICK, "--epochs", "500", "--out", out)
    assert process.stdout.readline().startswith("Epoch 1/500"), process.communicate()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == (
        "kvae train: error: interrupted; no half-written folder was left"
    )
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_a_second_run_is_refused_and_sigterm_while_writing_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    first = start("train", *QUICK, "--out", out)
    try:
        wait_for((tmp_path / ".run.lock").exists, first)  # taken before Keras loads
        for force in ([], ["--force"]):
            assert_usage_error(kvae("train", *QUICK, *force, "--out", out), "in use")
        wait_for(lambda: staging_folders(tmp_path), first)  # trained; now writing the folder
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == (
        "kvae train: error: terminated; no half-written folder was left"
    )
    assert os.listdir(tmp_path) == []


@ONCE
@pytest.mark.slow
def test_a_killed_runs_staging_is_removed_by_the_next_run(tmp_path):
    """Under JAX only: the clean-up runs before Keras loads, alike on every backend."""
    out = tmp_path / "run"
    killed = start("train", *QUICK, "--out", out)
    wait_for(lambda: staging_folders(tmp_path), killed)
    killed.kill()  # SIGKILL: no handler runs, the staging folder stays behind
    killed.communicate()
    (stale,) = staging_folders(tmp_path)
    assert not out.exists()
    # The re-run also shows that a 1-D latent space finishes, with a strip for its scatter.
    result = kvae("train", *QUICK, "--latent-dim", "1", "--out", out)
    assert result.returncode == 0, result.stderr
    assert not stale.exists()
    one_d = set(FIGURES) - {"latent_grid", "map_latent_scatter"}  # no 2-D model: no grid
    assert_complete_run(out, BACKEND, one_d)
    assert {p.stem for p in (out / "figures").iterdir()} == one_d
    assert leftovers(tmp_path) == []


@ONCE
@pytest.mark.slow
def test_two_figures_commands_on_one_run_both_end_cleanly(run_copy):
    shutil.rmtree(run_copy / "figures")
    processes = [start("figures", run_copy) for _ in range(2)]
    results = [(p.wait(timeout=240), p.stderr.read()) for p in processes]
    for status, stderr in results:
        assert status == 0 or (status == 2 and "in use" in stderr), stderr
    assert 0 in [status for status, _ in results]
    for name in FIGURES:
        assert (run_copy / "figures" / f"{name}.png").stat().st_size > 2000, name
    assert leftovers(run_copy.parent) == []


@ONCE
@pytest.mark.slow
def test_figures_refuses_a_config_that_contradicts_the_model(run_copy):
    config = json.loads((run_copy / "config.json").read_text())
    (run_copy / "config.json").write_text(json.dumps({**config, "latent_dim": 3}))
    assert_usage_error(kvae("figures", run_copy), "config.json", "contradicts", "latent_dim")


# --- refusals before Keras loads, once ----------------------------------------------------------


@ONCE
def test_existing_run_is_not_overwritten(run_dir):
    out, _ = run_dir
    before = digest(out)
    result = kvae("train", *QUICK, "--out", out)
    assert_usage_error(result, "already exists", "--force")
    assert digest(out) == before
    assert leftovers(out.parent) == []


@ONCE
def test_force_never_deletes_a_folder_kvae_did_not_write(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "config.json").write_text('{"name": "app"}')
    (project / "main.py").write_text("x")
    before = digest(project)
    result = kvae("train", *QUICK, "--out", project, "--force")
    assert_usage_error(result, "no valid kvae-run.json", "kvae did not write it")
    assert digest(project) == before


@ONCE
def test_force_refuses_a_run_holding_files_the_user_added(run_copy):
    (run_copy / "NOTES.md").write_text("what I saw")
    (run_copy / "analysis").mkdir()
    (run_copy / "analysis" / "plot.py").write_text("import kvae")
    before = digest(run_copy)
    result = kvae("train", *QUICK, "--out", run_copy, "--force")
    assert_usage_error(result, "files kvae did not write: NOTES.md, analysis/")
    assert digest(run_copy) == before


@ONCE
def test_force_refuses_a_run_written_before_markers(run_copy):
    (run_copy / "kvae-run.json").unlink()
    before = digest(run_copy)
    result = kvae("train", *QUICK, "--out", run_copy, "--force")
    assert_usage_error(result, "no valid kvae-run.json", "before 0.2")
    assert digest(run_copy) == before


@ONCE
@pytest.mark.parametrize(
    ("args", "words", "env"),
    [
        (["train", "--backend", "theano"], ["--backend", "theano"], {}),
        (["train", "--epochs", "-1"], ["--epochs", "-1"], {}),
        (["train", "--epochs", "2.5"], ["--epochs", "2.5"], {}),
        (["train", "--beta", "-0.5"], ["--beta", "-0.5"], {}),
        (["train", "--beta", "nan"], ["--beta", "nan"], {}),
        (["train", "--latent-dim", "0"], ["--latent-dim", "0"], {}),
        (["train", "--latent-dim", "100000"], ["--latent-dim", "784"], {}),
        (["train", "--seed", "4294967296"], ["--seed", "4294967295"], {}),
        (["train", "--batch-size", "10000000"], ["--batch-size", "60000"], {}),
        (["train", "--hidden", "64", "100000000"], ["--hidden", "16384"], {}),
        (["train", "--iw-samples", "1000000"], ["--iw-samples", "10000"], {}),
        (["train", "--learning-rate", "1e-320"], ["--learning-rate", "1e-08"], {}),
        (["train", "--train-size", "9000"], ["--train-size", "8000"], {}),
        (["train", "--kind", "rnn"], ["--kind", "rnn"], {}),
        (["train", "--source", "web"], ["--source", "web"], {}),
        (["train", "--devices", "0"], ["--devices", "0"], {}),
        (["train", "--devices", "all"], ["--devices", "all"], {}),  # a count: shares must divide
        (["train", "--devices", "3"], ["--devices", "a batch of size 128"], {}),
        (["train", "--devices", "2", "--backend", "torch"], ["--devices", "jax backend"], {}),
        (
            ["sweep", "--devices", "2"],
            ["--devices", "'tensorflow'"],
            {"KERAS_BACKEND": "tensorflow"},
        ),
        (["train", "--no-such-option"], ["--no-such-option"], {}),
        (["train", "--lat", "3"], ["--lat"], {}),  # no abbreviations
        (["sweep", "--beta", "2"], ["--beta"], {}),  # not read as --betas
        (["sweep", "--betas", "1", "-2"], ["--betas", "-2"], {}),
        (["train"], ["KERAS_BACKEND", "numpy"], {"KERAS_BACKEND": "numpy"}),
        (["figures", "missing-run"], ["missing-run", "does not exist"], {}),
        ([], ["COMMAND"], {}),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, words, env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_usage_error(kvae(*args, **env), *words)
    assert list(tmp_path.iterdir()) == []  # nothing written


def _make_file(path):
    path.write_text("x")
    return path


@ONCE
@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda t: _make_file(t / "afile") / "sub", ["afile", "is not a folder"]),
        (lambda t: immutable(t / "locked") / "run", ["locked", "is not writable"]),
        (lambda t: t / "link", ["link", "symbolic link"]),
        (lambda t: t / ("a" * 245), ["too long", "245"]),
    ],
)
def test_output_location_is_checked_before_training(tmp_path, make, words):
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    try:
        out = make(tmp_path)
        before = sorted(os.listdir(tmp_path))
        assert_usage_error(kvae("train", *QUICK, "--out", out), *words)
        assert sorted(os.listdir(tmp_path)) == before
    finally:
        if (tmp_path / "locked").exists():
            writable_again(tmp_path / "locked")


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@ONCE
@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda run: (run / "model.keras").unlink(), ["has no model.keras"]),
        (lambda run: _truncate(run / "model.keras"), ["model.keras", "not a Keras model archive"]),
        (lambda run: (run / "config.json").write_text("{"), ["config.json", "not readable JSON"]),
        (
            lambda run: (run / "config.json").write_text('{"latent_dim": 0}'),
            ["config.json", "latent_dim must be"],
        ),
        (
            lambda run: (run / "config.json").write_text('{"colour": "red"}'),
            ["config.json", "unknown TrainConfig keys"],
        ),
        (
            lambda run: (run / "history.json").write_text('{"loss": [1.0, 2.0], "kl": [1.0]}'),
            ["history.json", "malformed"],
        ),
        (lambda run: (run / "history.json").write_text("[]"), ["history.json", "malformed"]),
    ],
)
def test_figures_refuses_a_damaged_run_naming_the_file(run_copy, damage, words):
    damage(run_copy)
    assert_usage_error(kvae("figures", run_copy), *words)


@ONCE
def test_help_shows_the_config_defaults():
    result = kvae("train", "--help")
    text = " ".join(result.stdout.split())
    defaults = TrainConfig()
    widths = " ".join(map(str, defaults.hidden))
    assert f"hidden layer widths (default {widths})" in text
    assert "size of z; 2 can be drawn whole (default 16; 2 with --conditional)" in text
    assert "passes over the training digits (default 30; 60 with --conditional)" in text
    assert "--conditional train a conditional VAE" in text
    assert (
        f"Gaussian mixture fitted to the training codes (default {defaults.mixture_components})"
        in text
    )
    assert f"Adam's step size (default {defaults.learning_rate})" in text
    assert "a folder with other files is refused, never deleted" in text


# --- issue 24: links, printing, settings, each one line before training or no loss at all --------

# The command's own handling of folders and output, the same on every backend: JAX pass only.
COMMAND_ONLY = pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="the command's folders and printing, alike on every backend: TensorFlow",
)


@ONCE
@pytest.mark.slow
def test_figures_never_adopts_a_users_file_into_the_marker(run_copy):
    """Item 1: NOTES.md (and a half-written figure) stay unlisted, so --force still refuses."""
    (run_copy / "NOTES.md").write_text("what I saw")
    partial = run_copy / "figures" / ".loss_curves.partial-4000000-abcdef.png"  # a SIGKILL's
    partial.write_bytes(b"half a png")
    result = kvae("figures", run_copy)
    assert result.returncode == 0, result.stderr
    assert "wrote 7 figures" in result.stdout
    listed = rundir.read_marker(run_copy)["files"]
    assert "NOTES.md" not in listed and partial.name not in " ".join(listed)
    assert {f"figures/{name}.png" for name in FIGURES} <= set(listed)
    result = kvae("train", *QUICK, "--out", run_copy, "--force")
    assert_usage_error(result, "files kvae did not write", "NOTES.md", partial.name)
    assert (run_copy / "NOTES.md").read_text() == "what I saw"


@ONCE
@pytest.mark.parametrize("command", ["figures", "train"])
def test_a_symlinked_lock_never_overwrites_its_target(tmp_path, command):
    """Item 2: ``ln -s v.txt .R.lock`` is refused, and v.txt keeps its bytes."""
    victim = tmp_path / "v.txt"
    victim.write_text("DATA\n")
    run = tmp_path / "R"
    if command == "figures":  # an existing run to redraw; train makes a new one
        run.mkdir()
    (tmp_path / ".R.lock").symlink_to(victim)
    args = ["figures", run] if command == "figures" else ["train", *QUICK, "--out", tmp_path / "R"]
    assert_usage_error(kvae(*args), ".R.lock", "symbolic link that kvae did not create")
    assert victim.read_text() == "DATA\n"


@ONCE
def test_a_symlinked_figures_folder_is_refused_before_keras(run_copy, tmp_path):
    """Item 3: PNGs are never written through a ``figures`` link to another folder."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "loss_curves.png").write_bytes(b"someone's")
    shutil.rmtree(run_copy / "figures")
    (run_copy / "figures").symlink_to(elsewhere)
    assert_usage_error(kvae("figures", run_copy), "figures", "symbolic link")
    assert (elsewhere / "loss_curves.png").read_bytes() == b"someone's"


@COMMAND_ONLY
@pytest.mark.slow
def test_a_look_alike_staging_folder_is_left_with_a_note(tmp_path):
    """Item 4: a user's ``.R.partial-*`` folder survives ``kvae train --out R``, with a note."""
    users = tmp_path / ".R.partial-4000000-abcdef" / "figures"
    users.mkdir(parents=True)
    (users / "thesis.tex").write_text("x")
    result = kvae("train", *QUICK, "--out", tmp_path / "R")
    assert result.returncode == 0, result.stderr
    assert (users / "thesis.tex").read_text() == "x"
    notes = [line for line in result.stderr.splitlines() if line.startswith("kvae: note:")]
    assert len(notes) == 1 and ".R.partial-4000000-abcdef" in notes[0], result.stderr


@ONCE
def test_a_crafted_archive_is_refused_in_seconds(tmp_path):
    """Item 6: 2,000 listed copies of one 64 MiB member: refused from the central directory."""
    from test_rundir import crafted_archive

    run = tmp_path / "R"
    run.mkdir()
    crafted_archive(run / "model.keras", 2000, 64 * 2**20)
    (run / "config.json").write_text("{}")
    (run / "history.json").write_text('{"loss": [1.0]}')
    assert_usage_error(kvae("figures", run, timeout=60), "model.keras", "2000 members")


@ONCE
def test_a_lock_that_cannot_be_written_is_one_line_and_left_nowhere(tmp_path):
    """Item 10: a full disk while writing the lock (here RLIMIT_FSIZE=0, the same OSError)."""
    import resource

    def no_file_may_grow():
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill

    command = [sys.executable, "-m", "kvae", "train", *QUICK, "--out", str(tmp_path / "run")]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=environment(),
        preexec_fn=no_file_may_grow,
        timeout=60,
    )
    assert_usage_error(result, ".run.lock", "File too large")
    assert os.listdir(tmp_path) == []


@ONCE
@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"floatx": "float16"}, ["floatx='float16'", "float32"]),
        ({"image_data_format": "channels_first"}, ["channels_first", "channels_last"]),
    ],
)
def test_keras_json_settings_kvae_cannot_train_with_are_one_line(tmp_path, settings, words):
    """Item 10: keras.json with float16 or channels_first is refused before Keras loads."""
    home = tmp_path / "keras-home"
    home.mkdir()
    (home / "keras.json").write_text(json.dumps(settings))
    result = kvae("train", *QUICK, "--out", tmp_path / "run", KERAS_HOME=str(home))
    assert_usage_error(result, "keras.json", *words)
    assert not (tmp_path / "run").exists()


@ONCE
def test_the_root_is_refused_as_a_run_folder():
    """Item 10: ``kvae figures /`` names the problem instead of "empty name"."""
    assert_usage_error(kvae("figures", "/"), "'/' cannot be a run folder")


@ONCE
def test_an_out_path_too_long_for_the_staging_name_is_refused_first(tmp_path):
    """Item 10: a 4,080-byte --out is refused in 0.1 s, not after training."""
    limit = os.pathconf(tmp_path, "PC_PATH_MAX") - 1
    parts, length = [], len(str(tmp_path))
    while length < limit - 16 - 200:
        parts.append("d" * 200)
        length += 201
    out = tmp_path.joinpath(*parts, "r" * (limit - 16 - length - 1))
    assert_usage_error(kvae("train", *QUICK, "--out", out), "path is too long")
    assert os.listdir(tmp_path) == []


@ONCE
@pytest.mark.slow
def test_offline_keras_source_is_one_line(tmp_path):
    """Item 10: no network and no cached MNIST: one line naming --source, status 2."""
    offline = {"KERAS_HOME": str(tmp_path / "keras-home"), "HOME": str(tmp_path)}
    offline.update({p: "http://127.0.0.1:9" for p in ("http_proxy", "https_proxy", "HTTPS_PROXY")})
    result = kvae("train", *QUICK, "--source", "keras", "--out", tmp_path / "run", **offline)
    assert_usage_error(result, "--source", "could not", "source='bundled'")
    assert not (tmp_path / "run").exists()


@COMMAND_ONLY
@pytest.mark.slow
def test_a_broken_pipe_keeps_the_finished_run(tmp_path):
    """Item 10: ``kvae train ... | head -1`` keeps its run and ends with a note, no traceback."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "kvae", "train", *QUICK, "--out", str(out)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment()
    )
    process.stdout.readline()  # what head -1 reads; then it exits, closing the pipe
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=240) == 0, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("kvae train: note: could not print")
    assert_complete_run(out, BACKEND, set(FIGURES) - {"latent_grid", "map_latent_scatter"})
    assert leftovers(tmp_path) == []


@COMMAND_ONLY
@pytest.mark.slow
def test_an_ascii_stdout_prints_a_non_ascii_folder_escaped(tmp_path):
    """Item 10: PYTHONIOENCODING=ascii and a Korean --out: the summary prints, status 0."""
    out = tmp_path / "실행"
    result = kvae("train", *QUICK, "--out", out, PYTHONIOENCODING="ascii")
    assert result.returncode == 0, result.stderr
    assert "run folder: " in result.stdout and "\\uc2e4\\ud589" in result.stdout
    assert (out / "kvae-run.json").is_file()


@COMMAND_ONLY
@pytest.mark.slow
def test_a_closed_stdout_keeps_the_finished_run(tmp_path):
    """Item 10: ``kvae train >&-``: no stdout at all; the run is written, status 0."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "kvae", "train", *QUICK, "--out", str(out)]
    result = subprocess.run(
        command,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
        preexec_fn=lambda: os.close(1),
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert (out / "kvae-run.json").is_file()


@ONCE
@pytest.mark.slow
def test_an_invalid_mplbackend_does_not_fail_figures(run_copy):
    """Item 10: the command draws into files; MPLBACKEND=nonsense cannot break it."""
    result = kvae("figures", run_copy, MPLBACKEND="nonsense")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


@ONCE
@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "words"),
    [({"hidden": [64]}, ["hidden", "(64,)", "(128,)"]), ({"kind": "conv"}, ["kind", "'conv'"])],
)
def test_figures_refuses_a_config_that_contradicts_the_networks(run_copy, change, words):
    """Item 9: a config.json whose kind or hidden widths are not the model's is one line."""
    config = json.loads((run_copy / "config.json").read_text())
    (run_copy / "config.json").write_text(json.dumps({**config, **change}))
    assert_usage_error(kvae("figures", run_copy), "config.json", "contradicts", *words)


@ONCE
@pytest.mark.slow
def test_figures_refuses_a_2d_companion_that_is_not_2d(run_copy):
    """Item 10: model_2d.keras is validated: a 16-D model in its place is one line."""
    shutil.copyfile(run_copy / "model.keras", run_copy / "model_2d.keras")
    assert_usage_error(kvae("figures", run_copy), "model_2d.keras", "latent_dim")


# --- issue 21: kvae train --conditional -------------------------------------------------------

CONDITIONAL_FIGURES = ("loss_curves", "reconstructions", "latent_scatter", "samples", "same_style")
CONDITIONAL_SAMPLERS = ("prior", "aggregate", "per_class")


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    """A short conditional run on this pass's backend: a 2-D code by default."""
    out = tmp_path_factory.mktemp("conditional") / "run"
    result = kvae("train", "--conditional", *QUICK, "--out", out)
    assert result.returncode == 0, result.stderr
    return out, result.stdout


@pytest.mark.slow
def test_a_conditional_run_writes_its_folder_and_the_judge_s_reading(conditional_run):
    out, stdout = conditional_run
    config = json.loads((out / "config.json").read_text())
    assert config["conditional"] is True and config["latent_dim"] == 2
    for name in ("model.keras", "config.json", "history.json", "history.csv", "metrics.json"):
        assert (out / name).is_file(), name
    assert not (out / "model_2d.keras").exists()  # a 2-D code is drawn whole
    assert {p.stem for p in (out / "figures").iterdir()} == set(CONDITIONAL_FIGURES)
    # A killed run's staging folder is removed only if it holds the files its marker planned.
    assert set(CONDITIONAL_FIGURES) <= set(rundir.FIGURE_NAMES)
    for name in CONDITIONAL_FIGURES:
        png = (out / "figures" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000, name
    metrics = read_metrics(out)
    assert metrics["backend"] == BACKEND and metrics["conditional_sampler"] == "per_class"
    assert -COIN_FLIP_NATS < metrics["elbo"] < 0 and metrics["iw_log_px"] >= metrics["iw_elbo"]
    assert 0.0 <= metrics["reconstruction_accuracy"] <= 1.0 and metrics["judge_samples"] == 200
    for name in CONDITIONAL_SAMPLERS:
        per_digit = metrics[f"{name}_as_asked_per_digit"]
        assert len(per_digit) == 10 and all(0.0 <= share <= 1.0 for share in per_digit), name
        # 20 asks per digit: the overall share is the mean of the ten.
        assert metrics[f"{name}_as_asked"] == pytest.approx(sum(per_digit) / 10), name
        assert metrics[f"{name}_as_asked_worst"] == min(per_digit), name
        assert 0.0 <= metrics[f"{name}_confident_as_asked"] <= metrics[f"{name}_as_asked"], name
        assert 1.0 - 1e-9 <= metrics[f"{name}_score"] <= 10.0 + 1e-9, name
    assert "mixture_confident" not in metrics and "mixture_components" not in metrics
    assert rundir.read_marker(out)["files"] == [
        f for f in rundir.written_files(out) if f != rundir.MARKER_FILE
    ]
    line = next(line for line in stdout.splitlines() if "samples from N(0, I)" in line)
    assert f"as asked {metrics['prior_as_asked']:.1%}" in line, line
    assert "(given their labels)" in stdout and "log p(x|y) >= " in stdout
    assert "the run's sampler (kvae.config.CONDITIONAL_SAMPLER): samples from the asked" in stdout


@pytest.mark.slow
def test_a_conditional_run_s_reading_repeats_from_the_saved_model(conditional_run):
    import numpy as np

    from kvae import judge

    out, _ = conditional_run
    metrics = read_metrics(out)
    cvae = keras.saving.load_model(out / "model.keras")
    assert type(cvae).__name__ == "ConditionalVAE"
    asked = np.arange(200) % 10
    score = judge.asked_score(cvae.sample(200, asked, seed=0), asked)
    assert metrics["prior_as_asked"] == pytest.approx(score.as_asked, abs=2 / 200)
    assert metrics["prior_as_asked_worst"] == pytest.approx(score.worst_digit, abs=2 / 20)


@pytest.mark.slow
def test_figures_redraws_a_conditional_run_under_another_backend(conditional_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(conditional_run[0], copy)
    shutil.rmtree(copy / "figures")
    result = kvae("figures", copy, "--backend", OTHER_BACKEND, "--lang", "ko")
    assert result.returncode == 0, result.stderr
    assert {p.stem for p in (copy / "figures").iterdir()} == set(CONDITIONAL_FIGURES)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "conditional": False}))
    assert_usage_error(kvae("figures", copy), "contradicts", "conditional")
