"""Converged models that chapters load rather than train for minutes.

Each is a ``kvae.VAE`` trained by ``tools/train_chapter_models.py`` until its
test loss (the negative ELBO on the 2,000 bundled test digits) stopped
improving. Its weights ship as plain arrays in
``assets/chapter_models/NAME.npz``, and ``NAME.json`` beside them records how
it was made: the recipe, the stopping rule, every epoch's losses, the test
metrics measured on the shipped arrays, and the library versions. Loading
builds fresh networks and sets the arrays into them, so it works on every
backend and needs no network.

Example:

>>> vae = kvae.pretrained.load("vae_2d")
>>> kvae.pretrained.record("vae_2d")["best_epoch"]
"""

import functools
import hashlib
import json
import pathlib

import numpy as np

_HERE = pathlib.Path(__file__).resolve().parent
# In a checkout the files sit in assets/; an installed wheel carries them inside the package.
ASSET_DIRS = (_HERE.parent / "assets" / "chapter_models", _HERE / "assets" / "chapter_models")

# name -> how the model is built (kvae.build_encoder / build_decoder / VAE arguments)
RECIPES = {
    "vae_2d": {"latent_dim": 2, "hidden": [512], "beta": 1.0},
}
# How the test metrics are measured, the same way by the tool and by the test that checks them.
METRIC_SAMPLES = 8  # z drawn per test digit for the reconstruction term
METRIC_SEED = 0  # NumPy's generator for those draws, so every backend decodes the same z


def _path(name, suffix):
    if name not in RECIPES:
        raise ValueError(f"no chapter model named {name!r}; there are {sorted(RECIPES)}")
    for folder in ASSET_DIRS:
        if (folder / f"{name}{suffix}").exists():
            return folder / f"{name}{suffix}"
    raise FileNotFoundError(
        f"{name}{suffix} was not found in {[str(d) for d in ASSET_DIRS]}; "
        f"tools/train_chapter_models.py {name} rebuilds it"
    )


@functools.cache
def record(name):
    """The provenance ``NAME.json`` holds: recipe, stopping rule, history, test metrics."""
    return json.loads(_path(name, ".json").read_text(encoding="utf-8"))


def weights_file_digest(name):
    """sha256 of the shipped ``NAME.npz``, which ``record(name)["sha256"]`` must match."""
    return hashlib.sha256(_path(name, ".npz").read_bytes()).hexdigest()


def build(name, seed=None):
    """A fresh, untrained ``kvae.VAE`` of the named recipe (compiled with Adam(1e-3))."""
    import keras

    from kvae.models import VAE
    from kvae.networks import build_decoder, build_encoder

    recipe = RECIPES[name]
    hidden = tuple(recipe["hidden"])
    vae = VAE(
        build_encoder(recipe["latent_dim"], hidden=hidden),
        build_decoder(recipe["latent_dim"], hidden=hidden),
        beta=recipe["beta"],
        seed=seed,
    )
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    return vae


def network_arrays(vae):
    """The networks' weights as named arrays: ``encoder_000``, ..., ``decoder_000``, ...

    Named by position, not by Keras's layer names, which are numbered by how
    many layers a session has built before.
    """
    arrays = {}
    for part in ("encoder", "decoder"):
        for i, variable in enumerate(getattr(vae, part).weights):
            arrays[f"{part}_{i:03d}"] = np.asarray(variable.numpy(), dtype=np.float32)
    return arrays


def load(name, seed=None, path=None):
    """The converged model ``name``: built fresh, the shipped weights set into it.

    Args:
        name: a key of ``RECIPES`` (``"vae_2d"``).
        seed: seed of the model's ``Sampling`` layer (None: unseeded).
        path: an ``.npz`` to read instead of the shipped one (the training tool
            measures the file it has just written).

    Raises:
        ValueError: an unknown name, or arrays whose names or shapes do not
            fit the recipe's networks.
        FileNotFoundError: the asset is missing.
    """
    path = path or _path(name, ".npz")  # an unknown name or a missing file fails here
    vae = build(name, seed=seed)
    with np.load(path) as shipped:
        arrays = {key: shipped[key] for key in shipped.files}
    expected = network_arrays(vae)
    if sorted(arrays) != sorted(expected):
        raise ValueError(f"{name}.npz holds {sorted(arrays)}, the recipe needs {sorted(expected)}")
    for part in ("encoder", "decoder"):
        for i, variable in enumerate(getattr(vae, part).weights):
            key = f"{part}_{i:03d}"
            if arrays[key].shape != tuple(variable.shape):
                raise ValueError(
                    f"{name}.npz: {key} has shape {arrays[key].shape}, "
                    f"the network needs {tuple(variable.shape)}"
                )
            variable.assign(arrays[key])
    return vae


def test_metrics(vae, x, labels):
    """The model's metrics on images ``x``, measured the same way on every backend.

    The reconstruction term averages ``METRIC_SAMPLES`` codes per image,
    drawn by NumPy from ``METRIC_SEED`` (not by the backend), and the KL is
    the closed form, so two backends differ only by float rounding.

    Returns:
        dict of floats, nats per image: ``reconstruction``, ``kl``,
        ``negative_elbo`` (their sum), and ``judge_reads_reconstructions``
        (share of reconstructions through the posterior mean that
        ``kvae.judge`` reads as the right digit).
    """
    from keras import ops

    from kvae import elbo, judge

    z_mean, z_log_var = (ops.convert_to_numpy(t) for t in vae.encoder(x))
    rng = np.random.default_rng(METRIC_SEED)
    eps = rng.standard_normal((METRIC_SAMPLES, *z_mean.shape)).astype(np.float32)
    reconstruction = np.zeros(len(x))
    for e in eps:
        z = z_mean + np.exp(0.5 * z_log_var) * e
        logits = vae.decoder.predict(z, batch_size=500, verbose=0)
        reconstruction += ops.convert_to_numpy(elbo.reconstruction(x, logits))
    reconstruction /= METRIC_SAMPLES
    kl = ops.convert_to_numpy(elbo.prior_kl(z_mean, z_log_var))
    return {
        "reconstruction": float(reconstruction.mean()),
        "kl": float(kl.mean()),
        "negative_elbo": float((reconstruction + kl).mean()),
        "judge_reads_reconstructions": float(judge.reconstruction_accuracy(vae, x, labels)),
    }
