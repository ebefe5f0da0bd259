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

# name -> how the model is built and trained. "kind": "vae" (kvae.VAE, the default), "ae"
# (kvae.AE), "conditional" (kvae.ConditionalVAE), "pixel_averaged" or "seeing" (kvae.variants);
# "warmup_epochs": beta rises from 0 to "beta" over that many epochs (kvae.callbacks.KLWarmup);
# "free_bits": the VAE's option; "stored": the dtype of the shipped arrays (float16 halves the
# files; the record's metrics are measured on the stored arrays, as a user loads them).
_SMALL = {"hidden": [256], "stored": "float16"}
_SEEING = {"kind": "seeing", "latent_dim": 8, "beta": 1.0, **_SMALL}
RECIPES = {
    # chapters 04, 05, 07, 09
    "vae_2d": {"latent_dim": 2, "hidden": [512], "beta": 1.0},
    "ae_2d": {"kind": "ae", "latent_dim": 2, "hidden": [512], "stored": "float16"},
    # chapter 06: the beta sweep (beta_1 is also chapter 07's 8-D VAE)
    **{
        f"vae_8d_beta_{beta:g}": {"latent_dim": 8, "beta": beta, **_SMALL}
        for beta in (0.0, 0.1, 1.0, 4.0, 16.0)
    },
    # chapter 06: collapse by a bug, and with a decoder that sees a coarse copy of x
    "vae_8d_pixel_averaged": {"kind": "pixel_averaged", "latent_dim": 8, "beta": 1.0, **_SMALL},
    "seeing_8d": {**_SEEING},
    "seeing_8d_warmup": {**_SEEING, "warmup_epochs": 2},
    "seeing_8d_free_bits": {**_SEEING, "free_bits": 1.0},
    # chapter 08: conditional codes of 2 and 16 dimensions, and a plain 16-D VAE
    "cvae_2d": {"kind": "conditional", "latent_dim": 2, "beta": 1.0, **_SMALL},
    "cvae_16d": {"kind": "conditional", "latent_dim": 16, "beta": 1.0, **_SMALL},
    "vae_16d": {"latent_dim": 16, "beta": 1.0, **_SMALL},
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
    """A fresh, untrained model of the named recipe, compiled with Adam(1e-3).

    A ``kvae.VAE`` for most recipes; ``kvae.AE``, ``kvae.ConditionalVAE``,
    ``kvae.variants.PixelAveragedVAE`` or ``kvae.variants.SeeingDecoderVAE``
    for the others (the recipe's ``kind``).
    """
    import keras

    from kvae import variants
    from kvae.conditional import NUM_CLASSES, ConditionalVAE
    from kvae.models import AE, VAE
    from kvae.networks import build_decoder, build_encoder

    recipe = RECIPES[name]
    kind = recipe.get("kind", "vae")
    networks = {"latent_dim": recipe["latent_dim"], "hidden": tuple(recipe["hidden"])}
    if kind == "conditional":
        networks["num_classes"] = NUM_CLASSES
    encoder = build_encoder(**networks)
    if kind == "seeing":
        decoder = variants.SeeingDecoder(**networks)
    else:
        decoder = build_decoder(**networks)
    if kind == "ae":
        model = AE(encoder, decoder)
    else:
        model_class = {
            "vae": VAE,
            "conditional": ConditionalVAE,
            "pixel_averaged": variants.PixelAveragedVAE,
            "seeing": variants.SeeingDecoderVAE,
        }[kind]
        options = {"beta": recipe["beta"], "free_bits": recipe.get("free_bits", 0.0)}
        model = model_class(encoder, decoder, seed=seed, **options)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def network_arrays(vae, dtype="float32"):
    """The networks' weights as named arrays: ``encoder_000``, ..., ``decoder_000``, ...

    Named by position, not by Keras's layer names, which are numbered by how
    many layers a session has built before.
    """
    arrays = {}
    for part in ("encoder", "decoder"):
        for i, variable in enumerate(getattr(vae, part).weights):
            arrays[f"{part}_{i:03d}"] = np.asarray(variable.numpy()).astype(dtype)
    return arrays


def load(name, seed=None, path=None):
    """The converged model ``name``: built fresh, the shipped weights set into it.

    Args:
        name: a key of ``RECIPES`` (``"vae_2d"``, ``"ae_2d"``, ``"cvae_2d"``, ...).
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
            variable.assign(arrays[key].astype(np.float32))  # float16 files widen exactly
    return vae


def _kind(model):
    """How ``test_metrics`` feeds the model: ``conditional``, ``seeing``, ``ae`` or ``vae``."""
    from kvae import variants
    from kvae.conditional import ConditionalVAE
    from kvae.models import AE

    for kind, model_class in (
        ("conditional", ConditionalVAE),
        ("seeing", variants.SeeingDecoderVAE),
        ("ae", AE),
    ):
        if isinstance(model, model_class):
            return kind
    return "vae"


def _encoded(model, x, y):
    """q's ``(z_mean, z_log_var)`` as NumPy: the label goes in with the image if conditional."""
    from keras import ops

    outputs = model.encoder(x if y is None else [x, y])
    return tuple(ops.convert_to_numpy(t) for t in outputs)


def _reconstruction(model, kind, x, y, z):
    """``-log p(x | z)`` per image (nats; a conditional or seeing decoder gets its y or view)."""
    from keras import ops

    from kvae import elbo, variants

    if kind == "conditional":
        logits = model.decoder([z, y])
    elif kind == "seeing":
        logits = model.decoder(z, view=variants.coarse_view(x))
    else:
        logits = model.decoder(z)
    return ops.convert_to_numpy(elbo.reconstruction(x, logits))


def test_metrics(vae, x, labels, batch_size=500):
    """The model's metrics on images ``x``, measured the same way on every backend.

    The reconstruction term averages ``METRIC_SAMPLES`` codes per image,
    drawn by NumPy from ``METRIC_SEED`` (not by the backend), and the KL is
    the closed form, so two backends differ only by float rounding. An
    autoencoder decodes its one code, ``z_mean``, and has no KL.

    Returns:
        dict of floats, nats per image: ``reconstruction``, ``kl``,
        ``negative_elbo`` (their sum; for a seeing decoder a bound on
        ``-log p(x | view)``), and ``judge_reads_reconstructions`` (share of
        reconstructions through the posterior mean that ``kvae.judge`` reads
        as the right digit). An autoencoder's dict holds the first and last.
    """
    from keras import ops

    from kvae import elbo, judge

    kind = _kind(vae)
    x = np.asarray(x, dtype=np.float32)
    shape = (METRIC_SAMPLES, len(x), vae.latent_dim)
    eps = np.random.default_rng(METRIC_SEED).standard_normal(shape).astype(np.float32)
    reconstruction, kl = [], []
    for start in range(0, len(x), batch_size):
        batch = slice(start, start + batch_size)
        xb = x[batch]
        y = vae.condition(np.asarray(labels)[batch], len(xb)) if kind == "conditional" else None
        z_mean, z_log_var = _encoded(vae, xb, y)
        if kind == "ae":
            reconstruction.append(_reconstruction(vae, kind, xb, y, z_mean))
            continue
        sigma = np.exp(0.5 * z_log_var)
        draws = [_reconstruction(vae, kind, xb, y, z_mean + sigma * e[batch]) for e in eps]
        reconstruction.append(np.mean(draws, axis=0))
        kl.append(ops.convert_to_numpy(elbo.prior_kl(z_mean, z_log_var)))
    reconstruction = np.concatenate(reconstruction)
    metrics = {"reconstruction": float(reconstruction.mean())}
    if kl:
        kl = np.concatenate(kl)
        metrics["kl"] = float(kl.mean())
        metrics["negative_elbo"] = float((reconstruction + kl).mean())
    metrics["judge_reads_reconstructions"] = float(judge.reconstruction_accuracy(vae, x, labels))
    return metrics
