"""Fitting: load the run's data, build a VAE, train it, its 2-D companion and its samplers.

Nothing here evaluates, draws or writes a file; ``kvae.train`` puts a whole
run together from these pieces, ``kvae.sweep`` one short run per beta.
"""

import dataclasses

import keras

from kvae import parallel
from kvae.conditional import NUM_CLASSES, ConditionalVAE
from kvae.data import load_mnist
from kvae.models import VAE
from kvae.networks import build_decoder, build_encoder
from kvae.samplers import AggregatePosteriorSampler, GaussianMixtureSampler, PerClassSampler

__all__ = ["build_vae", "fit", "fit_map", "fit_samplers", "load_data", "model_inputs"]


def load_data(config):
    """``{"train": (x, y), "test": (x, y)}``; the training split cut to ``train_size``."""
    x_train, y_train = load_mnist("train", source=config.source)
    if config.train_size is not None:
        # The bundled split is shuffled, so any prefix is a fair sample of all ten digits.
        x_train, y_train = x_train[: config.train_size], y_train[: config.train_size]
    return {"train": (x_train, y_train), "test": load_mnist("test", source=config.source)}


def build_vae(config):
    """A compiled ``VAE`` (``ConditionalVAE`` if ``config.conditional``) with the config's
    networks, beta, seed and learning rate."""
    networks = {"latent_dim": config.latent_dim, "kind": config.kind, "hidden": config.hidden}
    model, classes = VAE, {}
    if config.conditional:
        model, classes = ConditionalVAE, {"num_classes": NUM_CLASSES}
    encoder, decoder = build_encoder(**networks, **classes), build_decoder(**networks, **classes)
    vae = model(encoder, decoder, beta=config.beta, seed=config.seed, **classes)
    vae.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    return vae


def fit(config, data, verbose=1, callbacks=()):
    """Train a fresh VAE; returns it and its history (a dict of per-epoch lists).

    The ``val_*`` columns are measured on the test split after each epoch. They
    are only watched, never used to choose anything, so the test numbers stay fair.
    With ``config.devices > 1`` the model is built and trained with each batch
    split across that many devices (``kvae.parallel``); the distribution that was
    set before is set again when ``fit`` returns. ``callbacks`` go to Keras's
    ``fit`` (``kvae.train`` passes the check for a stop signal).
    """
    keras.utils.set_random_seed(config.seed)  # weights and shuffling; the noise has its own seed
    x_train, y_train = data["train"]
    labels = y_train if config.conditional else None  # a VAE trains on the images alone
    # Built inside the scope: variables made outside it would sit on one device only.
    with parallel.data_parallel(config.devices):
        vae = build_vae(config)
        history = vae.fit(
            x_train,
            labels,
            epochs=config.epochs,
            batch_size=config.batch_size,
            validation_data=model_inputs(config, data["test"]),
            verbose=verbose,
            callbacks=list(callbacks),
        )
    return vae, {name: [float(v) for v in values] for name, values in history.history.items()}


def model_inputs(config, split):
    """What the run's model reads of ``split = (x, y)``: all of it if conditional, else ``(x,)``."""
    x, y = split
    return (x, y) if config.conditional else (x,)


def fit_map(config, data, verbose=1, callbacks=()):
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
    return fit(map_config, data, verbose=verbose, callbacks=callbacks)[0]


def fit_samplers(vae, data, config):
    """``{"prior": None, "mixture": ..., "aggregate": ...}``, fitted to the training codes.

    ``None`` stands for N(0, I) (``VAE.sample``'s default). The mixture has
    ``config.mixture_components`` full-covariance components; the samplers are
    seeded with ``config.seed``. A conditional run's are
    ``{"prior": None, "aggregate": ..., "per_class": ...}``: the aggregate
    posterior of every digit's codes, and one per digit (``PerClassSampler``).
    """
    x_train, y_train = data["train"]
    if config.conditional:
        return {
            "prior": None,
            "aggregate": AggregatePosteriorSampler(vae, seed=config.seed).fit(x_train, y_train),
            "per_class": PerClassSampler(vae, seed=config.seed).fit(x_train, y_train),
        }
    mixture = GaussianMixtureSampler(vae, config.mixture_components, "full", seed=config.seed)
    aggregate = AggregatePosteriorSampler(vae, seed=config.seed)
    return {"prior": None, "mixture": mixture.fit(x_train), "aggregate": aggregate.fit(x_train)}
