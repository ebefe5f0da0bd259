"""One whole run: fit, evaluate and report inside a run folder, or redraw a saved run's figures.

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

A conditional run (``TrainConfig.conditional``, ``kvae train --conditional``)
holds the same files for a ``kvae.ConditionalVAE``; its ``config.json`` says
``"conditional": true``, its ``metrics.json`` adds the judge's reading of
digits asked for (``kvae.evaluate.judge_metrics``), and its figures are the
loss curves, reconstructions, latent scatter, ``samples.png`` (every digit in
several styles) and ``same_style.png`` (test digits' styles written as every
digit).

Why the run sits in a module of its own: ``train_and_evaluate`` calls fitting
(``kvae.fitting``), evaluation (``kvae.evaluate``) and the figures and tables
(``kvae.report``) inside a folder from ``kvae.rundir``. Placed in any one of
those it would make that module import its siblings and hold two concerns;
here it holds none of them, only their order, so it sits above them all and
below the command line. Imports run one way: ``kvae.cli -> kvae.train ->
kvae.sweep -> kvae.report -> kvae.evaluate -> kvae.fitting -> kvae.models,
kvae.elbo ...``.

Settings live in ``kvae.config``. The names the README and notebooks reach
through ``kvae.train`` (``TrainConfig``, ``fit``, ``evaluate``, ``sweep``,
``markdown_table`` ...) are re-exported here from the modules that hold them.
"""

import dataclasses
import time

import keras

from kvae import parallel, rundir
from kvae.callbacks import CheckAfterEachBatch
from kvae.config import ConfigError, TrainConfig, require_run_options
from kvae.evaluate import (
    encode,
    evaluate,
    importance_weighted_log_px,
    judge_metrics,
    map_metrics,
)
from kvae.fitting import build_vae, fit, fit_map, fit_samplers, load_data
from kvae.report import draw_figures, history_rows, markdown_table
from kvae.rundir import (
    CONFIG_FILE,
    FIGURES_DIR,
    HISTORY_FILE,
    MAP_MODEL_FILE,
    METRICS_FILE,
    MODEL_FILE,
)
from kvae.sweep import sweep

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
    "check_model",
    "load_model",
    "markdown_table",
    "redraw_figures",
    "sweep",
    "train_and_evaluate",
]


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
            ``config.devices`` cannot be used here (``kvae.parallel``); ``lang`` or
            ``verbose`` is not one of its values (checked before anything else).
        FloatingPointError: the loss became NaN or infinite during training.
    """
    require_run_options(lang, verbose)
    parallel.check(config.devices)
    with rundir.reserve(run_dir, force) as run_dir:
        started = time.perf_counter()
        data = load_data(config)
        stop_check = [CheckAfterEachBatch(rundir.raise_if_stopped)]  # a swallowed Ctrl-C too
        vae, history = fit(config, data, verbose=verbose, callbacks=stop_check)
        map_vae = fit_map(config, data, verbose=verbose, callbacks=stop_check)
        rundir.raise_if_stopped()  # a stop swallowed outside fit's batches: act on it now
        samplers = fit_samplers(vae, data, config)
        metrics = {
            **evaluate(vae, data, config, verbose=verbose),
            **judge_metrics(vae, data, config, samplers),
            **map_metrics(map_vae, data, config),
            **run_info(started, config),
        }
        rundir.raise_if_stopped()
        with rundir.staged(run_dir, force, rundir.new_run_id()) as staging:
            vae.save(staging / MODEL_FILE)
            if map_vae is not None:
                map_vae.save(staging / MAP_MODEL_FILE)
            rundir.write_json(staging / CONFIG_FILE, dataclasses.asdict(config))
            rundir.write_json(staging / HISTORY_FILE, history)
            rundir.write_csv(staging / "history.csv", history_rows(history))
            rundir.write_json(staging / METRICS_FILE, metrics)
            draw_figures(vae, data, history, staging / FIGURES_DIR, config, lang, samplers, map_vae)
    return metrics


def run_info(started, config):
    return {
        "backend": keras.backend.backend(),
        "devices": config.devices,
        "keras_version": keras.__version__,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def redraw_figures(run_dir, lang="en"):
    """Load a run's model (saved under any backend) and draw its figures again.

    The folder is checked first (``kvae.rundir.read_run``), each model against
    ``config.json`` (``check_model``; the companion's code has two dimensions),
    and the folder is locked while the figures are written. The marker gains the
    figures written, and only those: a file someone else put in the folder stays
    unlisted, so ``force`` still refuses to delete it.

    Returns:
        The paths of the PNG files, in ``run_dir/figures``.

    Raises:
        ConfigError: ``run_dir`` is not a valid run folder (the message names the
            file and the problem), ``lang`` is not one of ``kvae.config.LANGS``, or
            another kvae process holds the folder.
    """
    require_run_options(lang, 0)
    with rundir.lock_existing(run_dir) as run_dir:
        config, history = rundir.read_run(run_dir)
        vae = load_model(run_dir / MODEL_FILE)
        check_model(vae, run_dir / MODEL_FILE, config, config.latent_dim)
        map_path = run_dir / MAP_MODEL_FILE
        map_vae = load_model(map_path) if map_path.is_file() else None
        if map_vae is not None:
            check_model(map_vae, map_path, config, 2)
        folder = run_dir / FIGURES_DIR
        paths = draw_figures(vae, load_data(config), history, folder, config, lang, map_vae=map_vae)
        rundir.add_to_marker(run_dir, paths)
    return paths


def check_model(vae, path, config, latent_dim):
    """Refuse a model that ``config.json`` does not describe: conditional or not, latent size,
    kind, hidden widths.

    The kind and widths are read from the encoder's layers (``kvae.networks``
    builds them): Conv2D layers make it ``"conv"``, and the Dense layers before
    ``z_mean`` and ``z_log_var`` give ``hidden``.

    Raises:
        ConfigError: the first setting that differs, with both values.
    """
    layers = vae.encoder.layers
    convolutional = any(isinstance(layer, keras.layers.Conv2D) for layer in layers)
    found = {
        "conditional": getattr(vae, "num_classes", None) is not None,
        "latent_dim": vae.latent_dim,
        "kind": "conv" if convolutional else "mlp",
        "hidden": tuple(
            layer.units
            for layer in layers
            if isinstance(layer, keras.layers.Dense) and layer.name not in ("z_mean", "z_log_var")
        ),
    }
    expected = {
        "conditional": config.conditional,
        "latent_dim": latent_dim,
        "kind": config.kind,
        "hidden": tuple(config.hidden),
    }
    for key, value in expected.items():
        if found[key] != value:
            raise ConfigError(
                f"{str(path.parent / CONFIG_FILE)!r} contradicts the model: {key} {value!r} "
                f"expected, {found[key]!r} in {path.name}"
            )


def load_model(path):
    """``keras.saving.load_model``, a failure named as one line about the file."""
    try:
        return keras.saving.load_model(path)
    except Exception as error:  # Keras raises several types for a damaged archive
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{str(path)!r} cannot be loaded: {reason}") from None
