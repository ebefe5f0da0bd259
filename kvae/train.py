"""Fit a VAE, measure its ELBO, write a run folder: what the command line and notebooks call.

``train_and_evaluate(config, run_dir)`` does one whole run; ``sweep`` does one
short run per beta; ``redraw_figures(run_dir)`` draws a saved run's figures
again, under whichever backend Keras is running on. A run folder holds::

    model.keras     the trained VAE (backend-neutral: it loads under any backend)
    config.json     the TrainConfig used
    history.json    per-epoch metrics; history.csv, the same as a table
    metrics.json    test-set reconstruction, KL and ELBO, the importance-weighted
                    log p(x) bound, in nats per example; backend, versions, wall time
    figures/*.png   loss curves, reconstructions, latent scatter, decoded latent
                    grid (latent_dim == 2), interpolation strip, prior samples

A run is built in a hidden sibling folder and renamed into place when it is
complete, so an interrupted run leaves no half-written model behind.
"""

import contextlib
import csv
import dataclasses
import json
import math
import os
import pathlib
import secrets
import shutil
import time

import keras
import numpy as np
from keras import ops

from kvae import elbo
from kvae.data import SOURCES, load_mnist
from kvae.models import VAE
from kvae.networks import KINDS, build_decoder, build_encoder

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
FIGURES_DIR = "figures"
INTERPOLATION_DIGITS = (1, 7)  # two classes with different strokes: the strip shows a morph
IW_BATCH = 100  # test digits per importance-sampling pass: (k, 100, 28, 28, 1) logits at once


class ConfigError(ValueError):
    """A setting or a run folder that cannot work; the message names it and what was expected."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every knob of a run, with its default and the reason for it.

    The defaults train in about a minute on two CPU cores with the bundled data
    and give a model whose latent space can be drawn whole.
    """

    latent_dim: int = 2  # two dimensions are drawn whole: scatter and decoded grid
    kind: str = "mlp"  # dense layers train fastest on a CPU; "conv" is sharper and slower
    hidden: tuple[int, ...] = (512,)  # one wide hidden layer, as in Kingma & Welling (2014)
    beta: float = 1.0  # weight of the KL term; 1 makes the loss exactly the negative ELBO
    epochs: int = 10  # the ELBO still rises after 10 epochs, but slowly; about a minute
    batch_size: int = 128  # 63 steps per epoch on 8,000 digits: enough updates, cheap steps
    learning_rate: float = 1e-3  # Adam's usual step; much larger ones can make the loss NaN
    seed: int = 0  # weights, noise and shuffling: the same seed repeats a run on one backend
    source: str = "bundled"  # the 8,000 / 2,000 real digits that ship with kvae: no network
    train_size: int | None = None  # None: the whole training split; fewer for a quick check
    iw_samples: int = 50  # k in the importance-weighted bound on log p(x)
    iw_examples: int = 500  # test digits for that bound: k decoder passes each

    def __post_init__(self):
        _require_int(self, "latent_dim", 1)
        _require_int(self, "epochs", 1)
        _require_int(self, "batch_size", 1)
        _require_int(self, "seed", 0)
        _require_int(self, "iw_samples", 1)
        _require_int(self, "iw_examples", 1)
        if self.train_size is not None:
            _require_int(self, "train_size", 1)
        if self.kind not in KINDS:
            raise ConfigError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.source not in SOURCES:
            raise ConfigError(f"source must be one of {SOURCES}, got {self.source!r}")
        if not all(isinstance(w, int) and w >= 1 for w in self.hidden):
            raise ConfigError(f"hidden must be positive integer widths, got {self.hidden!r}")
        for name in ("beta", "learning_rate"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.learning_rate == 0:
            raise ConfigError("learning_rate must be > 0, got 0")

    @classmethod
    def from_dict(cls, values):
        """Rebuild a config from ``config.json``; unknown keys are refused, not ignored."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown TrainConfig keys {unknown}; expected some of {sorted(known)}"
            )
        values = dict(values)
        if "hidden" in values:
            values["hidden"] = tuple(values["hidden"])
        return cls(**values)


def _require_int(config, name, minimum):
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


# --- the run ----------------------------------------------------------------------------------


def train_and_evaluate(config, run_dir, force=False, lang="en", verbose=1):
    """Train a VAE with ``config``, evaluate it, and write the run folder ``run_dir``.

    Example:

    >>> metrics = train_and_evaluate(TrainConfig(epochs=2), "runs/try")
    >>> metrics["elbo"], metrics["iw_log_px"]

    Args:
        config: a ``TrainConfig``.
        run_dir: the folder to create. It must not exist, unless ``force``.
        force: replace an existing run folder (only one that kvae wrote).
        lang: ``"en"`` or ``"ko"``, for the figures' labels.
        verbose: Keras's progress display: 1 a bar, 2 a line per epoch, 0 none.

    Returns:
        The metrics dict written to ``metrics.json``.

    Raises:
        ConfigError: ``run_dir`` exists (without ``force``) or is not a run folder.
        FloatingPointError: the loss became NaN or infinite during training.
    """
    run_dir = pathlib.Path(run_dir)
    check_new_run_dir(run_dir, force)
    started = time.perf_counter()
    data = load_data(config)
    vae, history = fit(config, data, verbose=verbose)
    metrics = {**evaluate(vae, data, config, verbose=verbose), **run_info(started)}
    with staged_run_dir(run_dir, force) as staging:
        vae.save(staging / MODEL_FILE)
        _write_json(staging / CONFIG_FILE, dataclasses.asdict(config))
        _write_json(staging / HISTORY_FILE, history)
        _write_csv(staging / "history.csv", _history_rows(history))
        _write_json(staging / METRICS_FILE, metrics)
        draw_figures(vae, data, history, staging / FIGURES_DIR, config, lang)
    return metrics


def load_data(config):
    """``{"train": (x, y), "test": (x, y)}``; the training split cut to ``train_size``."""
    x_train, y_train = load_mnist("train", source=config.source)
    if config.train_size is not None:
        if config.train_size > len(x_train):
            raise ConfigError(
                f"train_size must be at most {len(x_train)} for source={config.source!r}, "
                f"got {config.train_size}"
            )
        # The bundled split is shuffled, so any prefix is a fair sample of all ten digits.
        x_train, y_train = x_train[: config.train_size], y_train[: config.train_size]
    return {"train": (x_train, y_train), "test": load_mnist("test", source=config.source)}


def build_vae(config):
    """A compiled ``VAE`` with the config's networks, beta, seed and learning rate."""
    networks = {"latent_dim": config.latent_dim, "kind": config.kind, "hidden": config.hidden}
    vae = VAE(
        build_encoder(**networks), build_decoder(**networks), beta=config.beta, seed=config.seed
    )
    vae.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    return vae


def fit(config, data, verbose=1):
    """Train a fresh VAE; returns it and its history (a dict of per-epoch lists).

    The ``val_*`` columns are measured on the test split after each epoch. They
    are only watched, never used to choose anything, so the test numbers stay fair.
    """
    keras.utils.set_random_seed(config.seed)  # weights and shuffling; the noise has its own seed
    vae = build_vae(config)
    x_train, _ = data["train"]
    x_test, _ = data["test"]
    history = vae.fit(
        x_train,
        epochs=config.epochs,
        batch_size=config.batch_size,
        validation_data=(x_test,),
        verbose=verbose,
    )
    return vae, {name: [float(v) for v in values] for name, values in history.history.items()}


def evaluate(vae, data, config, verbose=0):
    """The test-set ELBO and the importance-weighted bound, in nats per example.

    ``reconstruction`` and ``kl`` are the two terms with beta = 1, whatever beta
    the model was trained with, so runs with different betas compare on one
    scale: ``elbo = -(reconstruction + kl)``. ``iw_log_px`` is the k-sample
    importance-weighted bound on ``log p(x)`` (Burda et al. 2016) on the first
    ``iw_examples`` test digits; ``iw_elbo`` is the ELBO on those same digits,
    averaged over the same k samples. ``iw_elbo <= iw_log_px`` always (a log-mean-exp is
    at least the mean), and ``iw_log_px <= log p(x)`` on average over the samples.
    """
    x_test, _ = data["test"]
    results = vae.evaluate(x_test, batch_size=config.batch_size, verbose=verbose, return_dict=True)
    reconstruction, kl = results["reconstruction_loss"], results["kl_loss"]
    iw_log_px, iw_elbo = importance_weighted_log_px(
        vae, x_test[: config.iw_examples], config.iw_samples, config.seed
    )
    z_mean, z_log_var = encode(vae, x_test)
    return {
        "reconstruction": float(reconstruction),
        "kl": float(kl),
        "elbo": -float(reconstruction + kl),
        "loss": float(results["loss"]),
        "beta": config.beta,
        "iw_log_px": iw_log_px,
        "iw_elbo": iw_elbo,
        "iw_samples": config.iw_samples,
        "iw_examples": int(min(config.iw_examples, len(x_test))),
        "mean_sigma": float(np.mean(np.exp(0.5 * z_log_var))),
        "mean_abs_z_mean": float(np.mean(np.abs(z_mean))),
        "test_examples": len(x_test),
    }


def importance_weighted_log_px(vae, x, samples, seed):
    """Mean over ``x`` of the k-sample bound on ``log p(x)``, and of the ELBO, in nats.

    Draws ``z_s = z_mean + sigma * eps_s`` from ``q(z|x)`` with NumPy noise, so
    the estimate is reproducible on every backend, and scores each sample with
    ``kvae.elbo.importance_log_weights``.
    """
    rng = np.random.default_rng(seed)
    bounds, elbos = [], []
    for start in range(0, len(x), IW_BATCH):
        batch = x[start : start + IW_BATCH]
        z_mean, z_log_var = encode(vae, batch)  # (B, D) each
        eps = rng.standard_normal((samples, *z_mean.shape)).astype("float32")  # (k, B, D)
        z = z_mean + np.exp(0.5 * z_log_var) * eps
        logits = _numpy(vae.decoder(ops.reshape(z, (-1, z.shape[-1]))))  # (k * B, 28, 28, 1)
        logits = logits.reshape((samples, len(batch), *batch.shape[1:]))
        log_weights = elbo.importance_log_weights(batch, z, z_mean, z_log_var, logits)  # (k, B)
        bounds.append(_numpy(elbo.importance_weighted_bound(log_weights)))
        elbos.append(_numpy(ops.mean(log_weights, axis=0)))
    return float(np.mean(np.concatenate(bounds))), float(np.mean(np.concatenate(elbos)))


def encode(vae, x, batch_size=500):
    """``(z_mean, z_log_var)`` as NumPy arrays, (N, latent_dim) each."""
    z_means, z_log_vars = [], []
    for start in range(0, len(x), batch_size):
        z_mean, z_log_var = vae.encode(x[start : start + batch_size])
        z_means.append(_numpy(z_mean))
        z_log_vars.append(_numpy(z_log_var))
    return np.concatenate(z_means), np.concatenate(z_log_vars)


def decoder_fn(vae):
    """``z -> probabilities`` as NumPy (N, 28, 28, 1): the callable ``kvae.plots`` draws with."""
    return lambda z: _numpy(vae.decode(np.asarray(z, dtype="float32")))


def run_info(started):
    return {
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def _numpy(tensor):
    return ops.convert_to_numpy(tensor)


# --- figures ----------------------------------------------------------------------------------


def draw_figures(vae, data, history, folder, config, lang="en"):
    """Write the run's PNG figures into ``folder``; returns their paths."""
    from kvae import plots  # matplotlib only when figures are drawn

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    x_test, y_test = data["test"]
    decode = decoder_fn(vae)
    z_mean, z_log_var = encode(vae, x_test)
    start, end = (int(np.flatnonzero(y_test == d)[0]) for d in INTERPOLATION_DIGITS)
    figures = {
        "loss_curves": lambda: plots.loss_curves(history, lang=lang),
        "reconstructions": lambda: plots.reconstructions(
            x_test[:10], _numpy(vae(x_test[:10])), lang=lang
        ),
        "latent_scatter": lambda: plots.latent_scatter(z_mean, y_test, z_log_var, lang=lang),
        "interpolation": lambda: plots.interpolation_strip(
            decode, z_mean[start], z_mean[end], lang=lang
        ),
        "prior_samples": lambda: plots.prior_samples(
            decode, config.latent_dim, seed=config.seed, lang=lang
        ),
    }
    if config.latent_dim == 2:
        figures["latent_grid"] = lambda: plots.latent_grid(decode, lang=lang)
    return [save_figure(draw(), folder / f"{name}.png") for name, draw in figures.items()]


def save_figure(figure, path):
    """Save a matplotlib figure as PNG through a temporary name, then close it."""
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    partial = path.with_name(f".{path.stem}.partial.png")
    try:
        figure.savefig(partial, dpi=100, bbox_inches="tight")
        os.replace(partial, path)
    finally:
        plt.close(figure)
        partial.unlink(missing_ok=True)
    return path


def redraw_figures(run_dir, lang="en"):
    """Load a run's model (saved under any backend) and draw its figures again.

    Returns:
        The paths of the PNG files, in ``run_dir/figures``.

    Raises:
        ConfigError: ``run_dir`` is not a run folder.
    """
    run_dir = pathlib.Path(run_dir)
    check_run_dir(run_dir)
    config = TrainConfig.from_dict(json.loads((run_dir / CONFIG_FILE).read_text()))
    history = json.loads((run_dir / HISTORY_FILE).read_text())
    vae = keras.saving.load_model(run_dir / MODEL_FILE)
    return draw_figures(vae, load_data(config), history, run_dir / FIGURES_DIR, config, lang)


# --- the beta sweep ---------------------------------------------------------------------------


SWEEP_COLUMNS = ("beta", "reconstruction", "kl", "elbo", "mean_sigma")


def sweep(betas, config, out_dir, force=False, lang="en", verbose=2):
    """Train one VAE per beta and write the trade-off table and figures into ``out_dir``.

    Every other setting comes from ``config``. The table's terms are measured on
    the test split with beta = 1, so the columns compare across rows.

    Writes ``sweep.csv``, ``sweep.md``, ``sweep.json`` (rows and histories),
    ``config.json`` and ``figures/beta_tradeoff.png``, ``figures/sigma_vs_beta.png``.

    Returns:
        The table: one dict per beta with the keys ``SWEEP_COLUMNS``.
    """
    from kvae import plots

    out_dir = pathlib.Path(out_dir)
    betas = [float(b) for b in betas]
    if not betas:
        raise ConfigError("betas must name at least one value")
    configs = [dataclasses.replace(config, beta=beta) for beta in betas]  # validates each beta
    check_new_run_dir(out_dir, force)
    data = load_data(config)
    rows, histories = [], []
    for one in configs:
        print(f"beta = {one.beta:g}", flush=True)
        vae, history = fit(one, data, verbose=verbose)
        metrics = evaluate(vae, data, one)
        rows.append({name: metrics[name] for name in SWEEP_COLUMNS})
        histories.append(history)
    with staged_run_dir(out_dir, force) as staging:
        _write_json(staging / CONFIG_FILE, {**dataclasses.asdict(config), "betas": betas})
        _write_json(staging / "sweep.json", {"rows": rows, "histories": histories})
        _write_csv(staging / "sweep.csv", rows)
        (staging / "sweep.md").write_text(markdown_table(rows) + "\n", encoding="utf-8")
        column = {name: [row[name] for row in rows] for name in SWEEP_COLUMNS}
        figures = staging / FIGURES_DIR
        figures.mkdir()
        tradeoff = plots.beta_tradeoff(betas, column["reconstruction"], column["kl"], lang=lang)
        save_figure(tradeoff, figures / "beta_tradeoff.png")
        sigma = plots.sigma_vs_beta(betas, column["mean_sigma"], lang=lang)
        save_figure(sigma, figures / "sigma_vs_beta.png")
    return rows


def markdown_table(rows):
    """The sweep's rows as a Markdown table, numbers in nats to two decimals."""
    lines = ["| " + " | ".join(SWEEP_COLUMNS) + " |", "|" + "---:|" * len(SWEEP_COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(f"{row[name]:.2f}" for name in SWEEP_COLUMNS) + " |")
    return "\n".join(lines)


# --- run folders ------------------------------------------------------------------------------


def is_run_dir(path):
    """Whether ``path`` is a folder kvae wrote (it holds a ``config.json``)."""
    return (pathlib.Path(path) / CONFIG_FILE).is_file()


def check_new_run_dir(run_dir, force):
    """Refuse to overwrite: ``run_dir`` must not exist, or (with ``force``) be a run folder.

    ``force`` never replaces a folder kvae did not write, so a mistyped ``--out``
    cannot delete unrelated files.
    """
    run_dir = pathlib.Path(run_dir)
    if not run_dir.exists():
        return
    if not force:
        raise ConfigError(f"run folder {str(run_dir)!r} already exists; use --force to replace it")
    if not run_dir.is_dir() or not (is_run_dir(run_dir) or not any(run_dir.iterdir())):
        raise ConfigError(
            f"refusing to replace {str(run_dir)!r}: it is not a kvae run folder (no {CONFIG_FILE})"
        )


def check_run_dir(run_dir):
    """Raise ``ConfigError`` unless ``run_dir`` holds a saved run (model and config)."""
    run_dir = pathlib.Path(run_dir)
    missing = [name for name in (MODEL_FILE, CONFIG_FILE) if not (run_dir / name).is_file()]
    if not run_dir.is_dir():
        raise ConfigError(f"run folder {str(run_dir)!r} does not exist")
    if missing:
        raise ConfigError(f"{str(run_dir)!r} is not a run folder: it has no {', '.join(missing)}")


@contextlib.contextmanager
def staged_run_dir(run_dir, force):
    """Build a folder under a hidden sibling name; rename it into place only on success.

    On any error (a NaN, Ctrl-C) the partial folder is removed and ``run_dir``
    is left as it was. With ``force`` the old run is swapped out, then deleted.
    """
    run_dir = pathlib.Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    # A hidden, unique sibling: same file system, so the final rename is atomic.
    staging = run_dir.with_name(f".{run_dir.name}.partial-{os.getpid()}-{secrets.token_hex(3)}")
    staging.mkdir()  # unlike tempfile.mkdtemp, keeps the umask's permissions (not 0700)
    old = None
    try:
        yield staging
        check_new_run_dir(run_dir, force)  # another run may have taken the name meanwhile
        if run_dir.exists():
            old = staging.with_name(staging.name.replace(".partial-", ".old-"))
            os.rename(run_dir, old)
        os.rename(staging, run_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_json(path, value):
    pathlib.Path(path).write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def _history_rows(history):
    epochs = len(next(iter(history.values()), []))
    return [{"epoch": i + 1, **{k: v[i] for k, v in history.items()}} for i in range(epochs)]


def _write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
