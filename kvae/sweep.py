"""The beta sweep: one short run per KL weight, written as one folder of tables and figures.

It calls the same pieces as a single run (``kvae.fitting``, ``kvae.evaluate``,
``kvae.report``) inside a folder from ``kvae.rundir``.
"""

import dataclasses
import pathlib

from kvae import parallel, rundir
from kvae.callbacks import CheckAfterEachBatch
from kvae.config import ConfigError, require_run_options
from kvae.evaluate import evaluate, judge_metrics
from kvae.fitting import fit, load_data
from kvae.report import SWEEP_COLUMNS, draw_sweep_figures, write_sweep_tables
from kvae.rundir import CONFIG_FILE, FIGURES_DIR

__all__ = ["sweep"]


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
    require_run_options(lang, verbose)
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
                rundir.raise_if_stopped()  # a stop swallowed outside fit's batches
                print(f"beta = {one.beta:g}", flush=True)
                row, history = _sweep_one(one, data, verbose)
                rows.append(row)
                histories.append(history)
                write_sweep_tables(staging, rows, histories)
            draw_sweep_figures(staging / FIGURES_DIR, rows, lang)
    return rows


def _sweep_one(config, data, verbose):
    try:
        stop_check = [CheckAfterEachBatch(rundir.raise_if_stopped)]  # a swallowed Ctrl-C too
        vae, history = fit(config, data, verbose=verbose, callbacks=stop_check)
    except FloatingPointError as error:  # kvae's StopOnNaN: keep the other betas
        return {"beta": config.beta, "status": "failed", "error": str(error)}, None
    metrics = {**evaluate(vae, data, config), **judge_metrics(vae, data, config)}
    return {**{name: metrics[name] for name in SWEEP_COLUMNS}, "status": "ok"}, history
