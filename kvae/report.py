"""Figures and tables: a run's PNGs and history rows, the sweep's tables and figures.

Everything here draws or formats what fitting and evaluation produced;
matplotlib (through ``kvae.plots``) is imported only when a figure is drawn.
"""

import os
import pathlib

import numpy as np
from keras import ops

from kvae import rundir
from kvae.config import DIGITS
from kvae.evaluate import SAMPLERS, encode
from kvae.fitting import fit_samplers

__all__ = [
    "JUDGE_COLUMNS",
    "NATS_COLUMNS",
    "SWEEP_COLUMNS",
    "SWEEP_CSV_COLUMNS",
    "decoder_fn",
    "draw_figures",
    "draw_sweep_figures",
    "history_rows",
    "markdown_table",
    "save_figure",
    "write_sweep_tables",
]

INTERPOLATION_DIGITS = (1, 7)  # two classes with different strokes: the strip shows a morph
FIGURE_SAMPLES = 64  # images per sampler in the samples figure: an 8 x 8 grid each
STYLES = 8  # rows of a conditional run's figures: codes (styles), each written as every digit

NATS_COLUMNS = ("beta", "reconstruction", "kl", "elbo", "mean_sigma")  # two decimals
# The judge's reading of each beta's model (see kvae.evaluate.judge_metrics): shares and scores.
JUDGE_COLUMNS = (
    "reconstruction_accuracy",
    *(f"{name}_{what}" for name in SAMPLERS[:2] for what in ("confident", "score", "rarest")),
)
SWEEP_COLUMNS = (*NATS_COLUMNS, *JUDGE_COLUMNS)
SWEEP_CSV_COLUMNS = (*SWEEP_COLUMNS, "status")


# --- one run ----------------------------------------------------------------------------------


def draw_figures(vae, data, history, folder, config, lang="en", samplers=None, map_vae=None):
    """Write the run's PNG figures into ``folder``; returns their paths.

    Every latent size gets its figures: ``plots.latent_scatter`` draws 1-D codes
    as a strip per digit and more than two as the two most active dimensions.
    The decoded grid needs exactly two: it is the model's own when
    ``latent_dim == 2``, else the 2-D companion's (``map_vae``), drawn with its
    scatter as ``map_latent_scatter``. ``samples`` decodes codes from N(0, I)
    beside codes from the mixture fitted to the training codes.

    A conditional run (``config.conditional``) draws its own set instead
    (``conditional_figures``).
    """
    from kvae import plots  # matplotlib only when figures are drawn

    folder = pathlib.Path(folder)
    rundir.check_figures_folder(folder)  # never draw through a link someone put there
    folder.mkdir(parents=True, exist_ok=True)
    if config.conditional:
        figures = conditional_figures(plots, vae, data, history, config, lang, map_vae)
    else:
        figures = vae_figures(plots, vae, data, history, config, lang, samplers, map_vae)
    return [save_figure(draw(), folder / f"{name}.png") for name, draw in figures.items()]


def vae_figures(plots, vae, data, history, config, lang, samplers, map_vae):
    """A VAE run's figures, ``{name: function drawing it}`` (see ``draw_figures``)."""
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
        figures["map_latent_scatter"] = map_latent_scatter(plots, map_vae, x_test, y_test, lang)
        figures["latent_grid"] = lambda: plots.latent_grid(
            decoder_fn(map_vae), lang=lang, title=f"{map_title}: " + plots.labels(lang)["grid"]
        )
    return figures


def conditional_figures(plots, vae, data, history, config, lang, map_vae):
    """A conditional run's figures, ``{name: function drawing it}``.

    ``samples``: every digit (columns) in ``STYLES`` styles (rows), the codes
    drawn from N(0, I) with ``config.seed``, one code along a row.
    ``same_style``: the first ``STYLES`` test digits, each encoded with its
    own label and decoded with each of the ten. Beside them the loss curves,
    reconstructions (given the true labels) and the codes' scatter, coloured
    by digit: the label holds the digit, so the codes need not sort by it.
    """
    x_test, y_test = data["test"]
    z_mean, z_log_var = encode(vae, x_test, y_test)
    styles = np.random.default_rng(config.seed).standard_normal((STYLES, config.latent_dim))
    x_styles, y_styles = x_test[:STYLES], y_test[:STYLES]
    test_codes = encode(vae, x_styles, y_styles)[0]
    figures = {
        "loss_curves": lambda: plots.loss_curves(history, lang=lang),
        "reconstructions": lambda: plots.reconstructions(
            x_test[:10], vae.predict((x_test[:10], y_test[:10]), verbose=0), lang=lang
        ),
        "latent_scatter": lambda: plots.latent_scatter(z_mean, y_test, z_log_var, lang=lang),
        "samples": lambda: plots.digit_grid(every_digit(vae, styles), lang=lang),
        "same_style": lambda: plots.same_style(x_styles, every_digit(vae, test_codes), lang=lang),
    }
    if map_vae is not None:
        figures["map_latent_scatter"] = map_latent_scatter(
            plots, map_vae, x_test, y_test, lang, labels=y_test
        )
    return figures


def map_latent_scatter(plots, map_vae, x_test, y_test, lang, labels=None):
    """The 2-D companion's test codes, coloured by digit (``labels``: a conditional companion's)."""
    z_mean, z_log_var = encode(map_vae, x_test, labels)
    title = f"{plots.labels(lang)['map']}: " + plots.labels(lang)["latent"]
    return lambda: plots.latent_scatter(z_mean, y_test, z_log_var, lang=lang, title=title)


def every_digit(vae, z):
    """Each code of ``z`` (rows, D) decoded as every digit: NumPy (rows, 10, 28, 28, 1)."""
    z = np.asarray(z, dtype="float32")
    return np.stack([_numpy(vae.decode(z, digit)) for digit in range(DIGITS)], axis=1)


def decoder_fn(vae):
    """``z -> probabilities`` as NumPy (N, 28, 28, 1): the callable ``kvae.plots`` draws with."""
    return lambda z: _numpy(vae.decode(np.asarray(z, dtype="float32")))


def save_figure(figure, path):
    """Save a matplotlib figure as PNG through a unique temporary name, then close it.

    Two processes drawing the same figure each write their own temporary file;
    ``os.replace`` makes the last one win whole.
    """
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


def history_rows(history):
    """``history``'s per-epoch lists as rows ``{"epoch": 1, name: value, ...}`` (history.csv)."""
    epochs = len(next(iter(history.values()), []))
    return [{"epoch": i + 1, **{k: v[i] for k, v in history.items()}} for i in range(epochs)]


# --- the beta sweep ---------------------------------------------------------------------------


def write_sweep_tables(folder, rows, histories):
    """Write ``sweep.json`` (rows and histories), ``sweep.csv`` and ``sweep.md`` into ``folder``."""
    rundir.write_json(folder / "sweep.json", {"rows": rows, "histories": histories})
    csv_rows = [{k: v for k, v in row.items() if k in SWEEP_CSV_COLUMNS} for row in rows]
    rundir.write_csv(folder / "sweep.csv", csv_rows, SWEEP_CSV_COLUMNS)
    rundir.write_text(folder / "sweep.md", markdown_table(rows) + "\n")


def draw_sweep_figures(folder, rows, lang):
    """``beta_tradeoff.png`` and ``sigma_vs_beta.png`` from the betas that trained."""
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


def _numpy(tensor):
    return ops.convert_to_numpy(tensor)
