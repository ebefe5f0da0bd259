"""Fit a VAE, measure its ELBO, write a run folder: what the command line and notebooks call.

``train_and_evaluate(config, run_dir)`` does one whole run; ``sweep`` does one
short run per beta; ``redraw_figures(run_dir)`` draws a saved run's figures
again, under whichever backend Keras is running on. A run folder holds::

    model.keras     the trained VAE (backend-neutral: it loads under any backend)
    config.json     the TrainConfig used
    history.json    per-epoch metrics; history.csv, the same as a table
    model_2d.keras  the 2-D companion VAE drawn in the 2-D figures (when
                    latent_dim != 2 and map_epochs > 0)
    metrics.json    test-set reconstruction, KL and ELBO, the importance-weighted
                    log p(x) bound, in nats per example; the judge's figures
                    (reconstructions that are the right digit; samples from
                    N(0, I), a Gaussian mixture and the aggregate posterior:
                    confident share, classifier score, rarest class; the real
                    test digits' reference row); backend, devices, versions,
                    wall time
    figures/*.png   loss curves, reconstructions, latent scatter, decoded latent
                    grid (of the model if 2-D, else of the 2-D companion),
                    interpolation strip, samples from N(0, I) beside samples
                    from the mixture
    kvae-run.json   the run's id and the list of files above (see kvae.rundir)

Settings live in ``kvae.config`` and folders in ``kvae.rundir``; this module
fits and evaluates. ``TrainConfig`` and ``ConfigError`` are importable from
here too.
"""

import dataclasses
import pathlib
import time

import keras
import numpy as np
from keras import ops

from kvae import elbo, judge, parallel, rundir
from kvae.config import IW_MEMORY_BUDGET, PIXELS, ConfigError, TrainConfig
from kvae.data import load_mnist
from kvae.models import VAE
from kvae.networks import build_decoder, build_encoder
from kvae.rundir import CONFIG_FILE, FIGURES_DIR, HISTORY_FILE, METRICS_FILE, MODEL_FILE
from kvae.samplers import AggregatePosteriorSampler, GaussianMixtureSampler

__all__ = [
    "CONFIG_FILE",
    "ConfigError",
    "FIGURES_DIR",
    "HISTORY_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "TrainConfig",
    "build_vae",
    "draw_figures",
    "encode",
    "evaluate",
    "fit",
    "fit_map",
    "fit_samplers",
    "importance_weighted_log_px",
    "judge_metrics",
    "load_data",
    "markdown_table",
    "redraw_figures",
    "sweep",
    "train_and_evaluate",
]

INTERPOLATION_DIGITS = (1, 7)  # two classes with different strokes: the strip shows a morph
IW_BATCH = 100  # test digits per importance-sampling pass, if the memory budget allows
MAP_MODEL_FILE = "model_2d.keras"  # the 2-D companion: see TrainConfig.map_epochs
SAMPLERS = ("prior", "mixture", "aggregate")  # N(0, I), Gaussian mixture, q(z) = mean q(z|x_i)
FIGURE_SAMPLES = 64  # images per sampler in the samples figure: an 8 x 8 grid each


# --- the run ----------------------------------------------------------------------------------


def train_and_evaluate(config, run_dir, force=False, lang="en", verbose=1):
    """Train a VAE with ``config``, evaluate it, and write the run folder ``run_dir``.

    The folder is checked and locked before training (``kvae.rundir.reserve``)
    and written whole or not at all.

    Example:

    >>> metrics = train_and_evaluate(TrainConfig(epochs=2), "runs/try")
    >>> metrics["elbo"], metrics["iw_log_px"]

    Args:
        config: a ``TrainConfig``.
        run_dir: the folder to create. It must not exist, unless ``force``.
        force: replace an existing run folder, only one that kvae wrote and that
            holds nothing but kvae's files.
        lang: ``"en"`` or ``"ko"``, for the figures' labels.
        verbose: Keras's progress display: 1 a bar, 2 a line per epoch, 0 none.

    Returns:
        The metrics dict written to ``metrics.json``.

    Raises:
        ConfigError: ``run_dir`` cannot be written or replaced, or another run holds it;
            ``config.devices`` cannot be used here (``kvae.parallel``).
        FloatingPointError: the loss became NaN or infinite during training.
    """
    parallel.check(config.devices)
    with rundir.reserve(run_dir, force) as run_dir:
        started = time.perf_counter()
        data = load_data(config)
        vae, history = fit(config, data, verbose=verbose)
        map_vae = fit_map(config, data, verbose=verbose)
        samplers = fit_samplers(vae, data, config)
        metrics = {
            **evaluate(vae, data, config, verbose=verbose),
            **judge_metrics(vae, data, config, samplers),
            **map_metrics(map_vae, data, config),
            **run_info(started, config),
        }
        with rundir.staged(run_dir, force, rundir.new_run_id()) as staging:
            vae.save(staging / MODEL_FILE)
            if map_vae is not None:
                map_vae.save(staging / MAP_MODEL_FILE)
            rundir.write_json(staging / CONFIG_FILE, dataclasses.asdict(config))
            rundir.write_json(staging / HISTORY_FILE, history)
            rundir.write_csv(staging / "history.csv", _history_rows(history))
            rundir.write_json(staging / METRICS_FILE, metrics)
            draw_figures(vae, data, history, staging / FIGURES_DIR, config, lang, samplers, map_vae)
    return metrics


def load_data(config):
    """``{"train": (x, y), "test": (x, y)}``; the training split cut to ``train_size``."""
    x_train, y_train = load_mnist("train", source=config.source)
    if config.train_size is not None:
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
    With ``config.devices > 1`` the model is built and trained with each batch
    split across that many devices (``kvae.parallel``); the distribution that was
    set before is set again when ``fit`` returns.
    """
    keras.utils.set_random_seed(config.seed)  # weights and shuffling; the noise has its own seed
    x_train, _ = data["train"]
    x_test, _ = data["test"]
    # Built inside the scope: variables made outside it would sit on one device only.
    with parallel.data_parallel(config.devices):
        vae = build_vae(config)
        history = vae.fit(
            x_train,
            epochs=config.epochs,
            batch_size=config.batch_size,
            validation_data=(x_test,),
            verbose=verbose,
        )
    return vae, {name: [float(v) for v in values] for name, values in history.history.items()}


def fit_map(config, data, verbose=1):
    """The 2-D companion VAE, trained for ``config.map_epochs``; None when none is wanted.

    A model whose code has two dimensions can be drawn whole (a scatter with
    each posterior's ellipse, a decoded grid); the run's own model cannot when
    its code is wider. The companion has the run's networks, seed and data,
    with ``latent_dim=2``.
    """
    if config.latent_dim == 2 or config.map_epochs == 0:
        return None
    if verbose:
        print(f"2-D companion model for the figures ({config.map_epochs} epochs)", flush=True)
    map_config = dataclasses.replace(config, latent_dim=2, epochs=config.map_epochs)
    return fit(map_config, data, verbose=verbose)[0]


def fit_samplers(vae, data, config):
    """``{"prior": None, "mixture": ..., "aggregate": ...}``, fitted to the training codes.

    ``None`` stands for N(0, I) (``VAE.sample``'s default). The mixture has
    ``config.mixture_components`` full-covariance components; both samplers are
    seeded with ``config.seed``.
    """
    x_train, _ = data["train"]
    mixture = GaussianMixtureSampler(vae, config.mixture_components, "full", seed=config.seed)
    aggregate = AggregatePosteriorSampler(vae, seed=config.seed)
    return {"prior": None, "mixture": mixture.fit(x_train), "aggregate": aggregate.fit(x_train)}


def judge_metrics(vae, data, config, samplers=None):
    """What the judge (``kvae.judge``) reads in the model's reconstructions and samples.

    ``reconstruction_accuracy``: share of the test reconstructions that are the
    right digit. For each sampler in ``SAMPLERS``, ``config.judge_samples``
    images drawn with ``config.seed``: ``<sampler>_confident`` (share with
    max p(y|x) >= 0.9), ``<sampler>_score`` (classifier score, 10 at best),
    ``<sampler>_rarest`` (share of the rarest digit, 0.1 at best) and
    ``<sampler>_class_shares``. ``reference_*``: the same for the real test
    digits (``kvae.judge.reference()``), the row to compare against.
    """
    samplers = fit_samplers(vae, data, config) if samplers is None else samplers
    x_test, y_test = data["test"]
    metrics = {"reconstruction_accuracy": judge.reconstruction_accuracy(vae, x_test, y_test)}
    scores = {
        name: judge.score(
            vae.sample(config.judge_samples, sampler=samplers[name], seed=config.seed)
        )
        for name in SAMPLERS
    }
    scores["reference"] = judge.reference()
    for name, score in scores.items():
        metrics[f"{name}_confident"] = score.confident
        metrics[f"{name}_score"] = score.classifier_score
        metrics[f"{name}_rarest"] = score.rarest_class
        metrics[f"{name}_class_shares"] = list(score.class_shares)
    metrics["judge_samples"] = config.judge_samples
    metrics["reference_examples"] = scores["reference"].n
    metrics["mixture_components"] = config.mixture_components
    return metrics


def map_metrics(map_vae, data, config):
    """The 2-D companion's test ELBO and right-digit share, so its figures can be weighed."""
    if map_vae is None:
        return {}
    x_test, y_test = data["test"]
    results = map_vae.evaluate(x_test, batch_size=config.batch_size, verbose=0, return_dict=True)
    return {
        "map_latent_dim": 2,
        "map_epochs": config.map_epochs,
        "map_elbo": -float(results["reconstruction_loss"] + results["kl_loss"]),
        "map_reconstruction_accuracy": judge.reconstruction_accuracy(map_vae, x_test, y_test),
    }


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
        vae,
        x_test[: config.iw_examples],
        config.iw_samples,
        config.seed,
        config.hidden,
        config.kind,
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


def importance_weighted_log_px(vae, x, samples, seed, hidden=(512,), kind="mlp"):
    """Mean over ``x`` of the k-sample bound on ``log p(x)``, and of the ELBO, in nats.

    Draws ``z_s = z_mean + sigma * eps_s`` from ``q(z|x)`` with NumPy noise, so
    the estimate is reproducible on every backend, and scores each sample with
    ``kvae.elbo.importance_log_weights``. The decoder runs on at most
    ``iw_pass_size(...)`` images at once (``kvae.config.IW_MEMORY_BUDGET``):
    fewer digits per pass when k is large, and k itself cut into chunks when one
    digit's k samples would not fit.
    """
    rng = np.random.default_rng(seed)
    digits, k_chunk = iw_pass_size(samples, hidden, kind)
    bounds, elbos = [], []
    for start in range(0, len(x), digits):
        batch = x[start : start + digits]
        z_mean, z_log_var = encode(vae, batch)  # (B, D) each
        eps = rng.standard_normal((samples, *z_mean.shape)).astype("float32")  # (k, B, D)
        z = z_mean + np.exp(0.5 * z_log_var) * eps
        log_weights = np.concatenate(
            [
                _log_weights(vae, batch, z[i : i + k_chunk], z_mean, z_log_var)
                for i in range(0, samples, k_chunk)
            ]
        )  # (k, B)
        bounds.append(_numpy(elbo.importance_weighted_bound(log_weights)))
        elbos.append(np.mean(log_weights, axis=0))
    return float(np.mean(np.concatenate(bounds))), float(np.mean(np.concatenate(elbos)))


def iw_pass_size(samples, hidden=(512,), kind="mlp"):
    """``(digits, k_chunk)`` per decoder pass, so one pass stays within the memory budget.

    An MLP decoder holds its hidden activations and the logits for each image; a
    conv decoder's largest feature maps are about 64 channels at 28 x 28.
    """
    floats = 2 * (PIXELS + sum(hidden)) if kind == "mlp" else 64 * PIXELS
    images = max(1, IW_MEMORY_BUDGET // (4 * floats))
    if samples <= images:
        return max(1, min(IW_BATCH, images // samples)), samples
    return 1, images


def _log_weights(vae, batch, z, z_mean, z_log_var):
    """``log p(x, z_s) - log q(z_s|x)`` for the samples ``z`` (k, B, D); NumPy (k, B)."""
    logits = _numpy(vae.decoder(ops.reshape(z, (-1, z.shape[-1]))))  # (k * B, 28, 28, 1)
    logits = logits.reshape((len(z), len(batch), *batch.shape[1:]))
    return _numpy(elbo.importance_log_weights(batch, z, z_mean, z_log_var, logits))


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


def run_info(started, config):
    return {
        "backend": keras.backend.backend(),
        "devices": config.devices,
        "keras_version": keras.__version__,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def _numpy(tensor):
    return ops.convert_to_numpy(tensor)


# --- figures ----------------------------------------------------------------------------------


def draw_figures(vae, data, history, folder, config, lang="en", samplers=None, map_vae=None):
    """Write the run's PNG figures into ``folder``; returns their paths.

    Every latent size gets its figures: ``plots.latent_scatter`` draws 1-D codes
    as a strip per digit and more than two as the two most active dimensions.
    The decoded grid needs exactly two: it is the model's own when
    ``latent_dim == 2``, else the 2-D companion's (``map_vae``), drawn with its
    scatter as ``map_latent_scatter``. ``samples`` decodes codes from N(0, I)
    beside codes from the mixture fitted to the training codes.
    """
    from kvae import plots  # matplotlib only when figures are drawn

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    x_test, y_test = data["test"]
    decode = decoder_fn(vae)
    z_mean, z_log_var = encode(vae, x_test)
    start, end = (int(np.flatnonzero(y_test == d)[0]) for d in INTERPOLATION_DIGITS)
    if samplers is None:
        samplers = fit_samplers(vae, data, config)
    codes = {
        "prior": np.random.default_rng(config.seed).standard_normal(
            (FIGURE_SAMPLES, config.latent_dim)
        ),
        "mixture": samplers["mixture"].sample_latents(FIGURE_SAMPLES, seed=config.seed),
    }
    figures = {
        "loss_curves": lambda: plots.loss_curves(history, lang=lang),
        "reconstructions": lambda: plots.reconstructions(
            x_test[:10], _numpy(vae(x_test[:10])), lang=lang
        ),
        "latent_scatter": lambda: plots.latent_scatter(z_mean, y_test, z_log_var, lang=lang),
        "interpolation": lambda: plots.interpolation_strip(
            decode, z_mean[start], z_mean[end], lang=lang
        ),
        "samples": lambda: plots.sampler_samples(decode, codes, lang=lang),
    }
    if config.latent_dim == 2:
        figures["latent_grid"] = lambda: plots.latent_grid(decode, lang=lang)
    elif map_vae is not None:
        map_title = plots.labels(lang)["map"]
        map_z_mean, map_z_log_var = encode(map_vae, x_test)
        figures["map_latent_scatter"] = lambda: plots.latent_scatter(
            map_z_mean,
            y_test,
            map_z_log_var,
            lang=lang,
            title=f"{map_title}: " + plots.labels(lang)["latent"],
        )
        figures["latent_grid"] = lambda: plots.latent_grid(
            decoder_fn(map_vae), lang=lang, title=f"{map_title}: " + plots.labels(lang)["grid"]
        )
    return [save_figure(draw(), folder / f"{name}.png") for name, draw in figures.items()]


def save_figure(figure, path):
    """Save a matplotlib figure as PNG through a unique temporary name, then close it.

    Two processes drawing the same figure each write their own temporary file;
    ``os.replace`` makes the last one win whole.
    """
    import os

    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    partial = rundir.unique_partial(path)
    try:
        figure.savefig(partial, dpi=100, bbox_inches="tight")
        os.replace(partial, path)
    finally:
        plt.close(figure)
        partial.unlink(missing_ok=True)
    return path


def redraw_figures(run_dir, lang="en"):
    """Load a run's model (saved under any backend) and draw its figures again.

    The folder is checked first (``kvae.rundir.read_run``) and locked while the
    figures are written; the marker's file list is brought up to date.

    Returns:
        The paths of the PNG files, in ``run_dir/figures``.

    Raises:
        ConfigError: ``run_dir`` is not a valid run folder (the message names the
            file and the problem), or another kvae process holds it.
    """
    with rundir.lock_existing(run_dir) as run_dir:
        config, history = rundir.read_run(run_dir)
        vae = load_model(run_dir / MODEL_FILE)
        latent_dim = vae.decoder.input_shape[-1]
        if latent_dim != config.latent_dim:
            raise ConfigError(
                f"{str(run_dir / CONFIG_FILE)!r} contradicts the model: latent_dim "
                f"{config.latent_dim} in the config, {latent_dim} in {MODEL_FILE}"
            )
        map_path = run_dir / MAP_MODEL_FILE
        map_vae = load_model(map_path) if map_path.is_file() else None
        folder = run_dir / FIGURES_DIR
        paths = draw_figures(vae, load_data(config), history, folder, config, lang, map_vae=map_vae)
        marker = rundir.read_marker(run_dir)
        if marker is not None:
            rundir.write_marker(run_dir, marker["run_id"])
    return paths


def load_model(path):
    """``keras.saving.load_model``, a failure named as one line about the file."""
    try:
        return keras.saving.load_model(path)
    except Exception as error:  # Keras raises several types for a damaged archive
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{str(path)!r} cannot be loaded: {reason}") from None


# --- the beta sweep ---------------------------------------------------------------------------


NATS_COLUMNS = ("beta", "reconstruction", "kl", "elbo", "mean_sigma")  # two decimals
# The judge's reading of each beta's model (see judge_metrics): shares and scores.
JUDGE_COLUMNS = (
    "reconstruction_accuracy",
    *(f"{name}_{what}" for name in SAMPLERS[:2] for what in ("confident", "score", "rarest")),
)
SWEEP_COLUMNS = (*NATS_COLUMNS, *JUDGE_COLUMNS)
SWEEP_CSV_COLUMNS = (*SWEEP_COLUMNS, "status")


def sweep(betas, config, out_dir, force=False, lang="en", verbose=2):
    """Train one VAE per beta and write the trade-off table and figures into ``out_dir``.

    Every other setting comes from ``config``. The table's terms are measured on
    the test split with beta = 1, so the columns compare across rows.

    Writes ``sweep.csv``, ``sweep.md``, ``sweep.json`` (rows and histories),
    ``config.json`` and ``figures/beta_tradeoff.png``, ``figures/sigma_vs_beta.png``.
    The tables are rewritten after each beta in the hidden staging folder (watch
    ``.NAME.partial-*/sweep.md`` while it runs); the folder is renamed into place
    when every beta has been tried. A beta whose loss turns NaN is a row with
    ``status: "failed"`` and its message, and the sweep goes on; an interruption
    (Ctrl-C, SIGTERM) leaves no folder, as for a single run.

    Returns:
        The table: one dict per beta with the keys ``SWEEP_COLUMNS`` and
        ``status`` ("ok"), or ``beta``, ``status`` ("failed") and ``error``.
    """
    out_dir = pathlib.Path(out_dir)
    betas = [float(b) for b in betas]
    if not betas:
        raise ConfigError("betas must name at least one value")
    configs = [dataclasses.replace(config, beta=beta) for beta in betas]  # validates each beta
    parallel.check(config.devices)
    with rundir.reserve(out_dir, force) as out_dir:
        data = load_data(config)
        with rundir.staged(out_dir, force, rundir.new_run_id()) as staging:
            rundir.write_json(staging / CONFIG_FILE, {**dataclasses.asdict(config), "betas": betas})
            rows, histories = [], []
            for one in configs:
                print(f"beta = {one.beta:g}", flush=True)
                row, history = _sweep_one(one, data, verbose)
                rows.append(row)
                histories.append(history)
                _write_sweep_tables(staging, rows, histories)
            _draw_sweep_figures(staging / FIGURES_DIR, rows, lang)
    return rows


def _sweep_one(config, data, verbose):
    try:
        vae, history = fit(config, data, verbose=verbose)
    except FloatingPointError as error:  # kvae's StopOnNaN: keep the other betas
        return {"beta": config.beta, "status": "failed", "error": str(error)}, None
    metrics = {**evaluate(vae, data, config), **judge_metrics(vae, data, config)}
    return {**{name: metrics[name] for name in SWEEP_COLUMNS}, "status": "ok"}, history


def _write_sweep_tables(folder, rows, histories):
    rundir.write_json(folder / "sweep.json", {"rows": rows, "histories": histories})
    csv_rows = [{k: v for k, v in row.items() if k in SWEEP_CSV_COLUMNS} for row in rows]
    rundir.write_csv(folder / "sweep.csv", csv_rows, SWEEP_CSV_COLUMNS)
    rundir.write_text(folder / "sweep.md", markdown_table(rows) + "\n")


def _draw_sweep_figures(folder, rows, lang):
    from kvae import plots

    done = [row for row in rows if row.get("status", "ok") == "ok"]
    if not done:  # every beta failed: the table says so, and there is nothing to draw
        return
    folder.mkdir(exist_ok=True)
    column = {name: [row[name] for row in done] for name in SWEEP_COLUMNS}
    tradeoff = plots.beta_tradeoff(
        column["beta"], column["reconstruction"], column["kl"], lang=lang
    )
    save_figure(tradeoff, folder / "beta_tradeoff.png")
    sigma = plots.sigma_vs_beta(column["beta"], column["mean_sigma"], lang=lang)
    save_figure(sigma, folder / "sigma_vs_beta.png")


def markdown_table(rows):
    """The sweep's rows as a Markdown table: nats to two decimals, the judge's shares to three."""
    lines = ["| " + " | ".join(SWEEP_COLUMNS) + " |", "|" + "---:|" * len(SWEEP_COLUMNS)]
    for row in rows:
        if row.get("status", "ok") == "ok":
            cells = [f"{row[name]:.{2 if name in NATS_COLUMNS else 3}f}" for name in SWEEP_COLUMNS]
        else:
            cells = [f"{row['beta']:.2f}", *["failed"] * (len(SWEEP_COLUMNS) - 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _history_rows(history):
    epochs = len(next(iter(history.values()), []))
    return [{"epoch": i + 1, **{k: v[i] for k, v in history.items()}} for i in range(epochs)]
