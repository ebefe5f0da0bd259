"""Train the converged models of ``kvae.pretrained`` and write ``assets/chapter_models/``.

Each model (``kvae.pretrained.RECIPES``) trains on the 8,000 bundled training
digits (with their labels, if conditional) with Adam(1e-3), batch 64, and the
2,000 test digits as validation data, until its test objective has not fallen
by ``MIN_DELTA`` nats for ``PATIENCE`` epochs in a row (Keras's
``EarlyStopping``); the weights of the last epoch that lowered it by
``MIN_DELTA`` are kept. The test objective is the loss the model trains for,
in nats per image, at its final beta: the negative ELBO for a VAE with
``beta = 1``, ``reconstruction + beta * KL`` for other betas (also after a
warm-up), the floored KL for free bits, the reconstruction for the
autoencoder, and ``reconstruction + 784 * KL`` for the pixel-averaged bug.
The test split thus chooses when to stop: the chapters that load these
models say so.

Written: ``NAME.npz`` (the networks' arrays, ``kvae.pretrained.network_arrays``)
and ``NAME.json`` (recipe, rule, per-epoch history, the test metrics of
``kvae.pretrained.test_metrics`` measured on the saved arrays after reloading
them, the file's sha256, library versions). ``tests/test_pretrained.py``
checks the shipped files against that record on every backend.

Usage::

    KERAS_BACKEND=jax python tools/train_chapter_models.py            # every model
    KERAS_BACKEND=jax python tools/train_chapter_models.py vae_2d --out /tmp
"""

import argparse
import json
import pathlib
import platform
import sys
import time

import keras
import numpy as np

import kvae
from kvae import pretrained, variants

SEED = 20261
BATCH_SIZE = 64
MAX_EPOCHS = 300
PATIENCE = 10
MIN_DELTA = 0.1  # nats: about the test loss's own noise from one z per digit
TOOL = "tools/train_chapter_models.py"
ASSETS = pathlib.Path(__file__).resolve().parents[1] / "assets" / "chapter_models"
CRITERION = (
    f"trained until the test objective (the loss it trains for, at its final beta, in nats "
    f"per image on the 2,000 test digits, one z per digit) had not fallen by {MIN_DELTA} nats "
    f"for {PATIENCE} epochs in a row; the weights of the last epoch that lowered it by "
    f"{MIN_DELTA} nats are kept"
)
MONITOR = "val_objective"


class TestObjective(keras.callbacks.Callback):
    """Adds ``val_objective`` to each epoch's logs, before EarlyStopping reads them."""

    def __init__(self, recipe):
        super().__init__()
        self.recipe = recipe

    def on_epoch_end(self, epoch, logs=None):
        logs[MONITOR] = objective(logs, self.recipe)


def objective(logs, recipe):
    """The test loss the recipe trains for, nats per image, at its final beta."""
    kind = recipe.get("kind", "vae")
    if kind == "pixel_averaged":  # its loss is per pixel: reconstruction / 784 + KL
        return logs["val_loss"] * variants.PIXELS
    if recipe.get("warmup_epochs"):  # the logged loss used the epoch's lower beta
        return logs["val_reconstruction_loss"] + recipe["beta"] * logs["val_kl_loss"]
    return logs["val_loss"]


def train(name, seed=SEED):
    recipe = pretrained.RECIPES[name]
    kvae.set_seed(seed)
    train_data = kvae.load_mnist("train")
    test_data = kvae.load_mnist("test")
    if recipe.get("kind") != "conditional":  # images only; the labels are for the judge
        train_data, test_data = train_data[:1], test_data[:1]
    model = pretrained.build(name, seed=seed)
    stop = keras.callbacks.EarlyStopping(
        monitor=MONITOR,
        mode="min",
        min_delta=MIN_DELTA,
        patience=PATIENCE,
        restore_best_weights=True,
    )
    callbacks = [TestObjective(recipe), stop]
    if recipe.get("warmup_epochs"):
        steps = recipe["warmup_epochs"] * -(-len(train_data[0]) // BATCH_SIZE)
        callbacks.insert(0, kvae.callbacks.KLWarmup(steps=steps, beta_max=recipe["beta"]))
    start = time.perf_counter()
    history = model.fit(
        *train_data,
        epochs=MAX_EPOCHS,
        batch_size=BATCH_SIZE,
        validation_data=test_data,
        callbacks=callbacks,
        verbose=2,
    )
    seconds = time.perf_counter() - start
    # The kept weights are those of the last epoch that improved by MIN_DELTA (Keras's best_epoch),
    # which may sit a few hundredths of a nat above the lowest test objective seen after it.
    return model, history.history, seconds, stop.best_epoch + 1


def write(name, vae, history, seconds, best_epoch, out, seed=SEED):
    out.mkdir(parents=True, exist_ok=True)
    npz = out / f"{name}.npz"
    stored = pretrained.RECIPES[name].get("stored", "float32")
    np.savez_compressed(npz, **pretrained.network_arrays(vae, dtype=stored))
    reloaded = pretrained.load(name, path=npz)  # measure what was saved, as a user will load it
    x_test, y_test = kvae.load_mnist("test")
    val_objective = history[MONITOR]
    record = {
        "name": name,
        "recipe": pretrained.RECIPES[name],
        "data": "kvae.load_mnist('train') (8,000 digits); validation kvae.load_mnist('test')",
        "stored_as": stored,
        "optimizer": "Adam(1e-3)",
        "batch_size": BATCH_SIZE,
        "seed": seed,
        "criterion": CRITERION,
        "max_epochs": MAX_EPOCHS,
        "monitor": MONITOR,
        "epochs_run": len(val_objective),
        "best_epoch": best_epoch,
        "history": {key: [round(float(v), 4) for v in values] for key, values in history.items()},
        "test": pretrained.test_metrics(reloaded, x_test, y_test),
        "test_metrics": (
            f"kvae.pretrained.test_metrics: {pretrained.METRIC_SAMPLES} z per test digit from "
            f"numpy.random.default_rng({pretrained.METRIC_SEED}), closed-form KL"
        ),
        "training_seconds": round(seconds, 1),
        "sha256": pretrained.hashlib.sha256(npz.read_bytes()).hexdigest(),
        "command": f"KERAS_BACKEND={keras.backend.backend()} python {TOOL} {name}",
        "versions": {
            "python": platform.python_version(),
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
            "numpy": np.__version__,
        },
        "machine": f"{platform.machine()}, {platform.system()}",
    }
    (out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=sorted(pretrained.RECIPES))
    parser.add_argument("--out", type=pathlib.Path, default=ASSETS)
    args = parser.parse_args(argv)
    for name in args.names:
        if name not in pretrained.RECIPES:
            sys.exit(f"no chapter model named {name!r}; there are {sorted(pretrained.RECIPES)}")
        vae, history, seconds, best_epoch = train(name)
        record = write(name, vae, history, seconds, best_epoch, args.out)
        print(
            f"{name}: {record['epochs_run']} epochs (best {record['best_epoch']}) in "
            f"{seconds:.0f} s; test {record['test']}"
        )


if __name__ == "__main__":
    main()
