"""An independent judge of digits: a small conv net, run in NumPy.

The judge was trained by ``tools/train_judge.py`` on the bundled training
split only (seeded; provenance in ``assets/judge.json`` and
``assets/README.md``); its weights ship as plain arrays in
``assets/judge.npz``. Its forward pass here is NumPy, so a score does not
depend on the Keras backend that drew the images: the same images get the
same numbers under TensorFlow, JAX and PyTorch, and judging loads no backend.

Architecture (Keras names): Conv2D(16, 3, relu) -> MaxPool(2) ->
Conv2D(32, 3, relu) -> MaxPool(2) -> Flatten -> Dense(64, relu) -> Dense(10).

Measures, for a batch of images ``x`` with judge probabilities ``p(y|x)``:

- ``confident``: share of images with ``max_y p(y|x) >= 0.9``;
- ``classifier_score``: ``exp E_x[KL(p(y|x) || p(y))]`` with ``p(y)`` the
  batch mean of ``p(y|x)``; 10 at best (sure of each image, classes even),
  1 at worst (every image gets the same distribution);
- ``class_shares``: share of images per predicted class (argmax), and
  ``rarest_class``, the smallest of the ten.

For images drawn for asked digits (a conditional model's), ``asked_score``:
the share read as the digit asked for, overall and per digit, and the share
read so with ``p(y|x) >= 0.9``.
"""

import dataclasses
import functools
import pathlib

import numpy as np

_HERE = pathlib.Path(__file__).resolve().parent
# In a checkout the weights sit in assets/; an installed wheel carries them inside the package.
ASSET_NAME = "judge.npz"
ASSET_CANDIDATES = (_HERE.parent / "assets" / ASSET_NAME, _HERE / "assets" / ASSET_NAME)
IMAGE_SHAPE = (28, 28, 1)  # kvae.networks.IMAGE_SHAPE, not imported: judging loads no Keras
NUM_CLASSES = 10
CONFIDENT = 0.9  # max p(y|x) at or above this counts as "confidently a digit"
BATCH = 500  # images per forward pass: bounds the im2col arrays to tens of MB
LAYERS = ("conv1", "conv2", "dense1", "dense2")


@dataclasses.dataclass(frozen=True)
class Score:
    """The judge's verdict on a batch of images (see the module docstring)."""

    n: int
    confident: float
    classifier_score: float
    class_shares: tuple
    rarest_class: float

    def as_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class AskedScore:
    """The judge's reading of images drawn for asked digits (see ``asked_score``)."""

    n: int
    as_asked: float  # share read as the digit asked for
    per_digit: tuple  # that share among the images asked to be each digit (NaN: none asked)
    worst_digit: float  # the smallest of per_digit
    confident_as_asked: float  # share read as the digit asked for with p(y|x) >= CONFIDENT

    def as_dict(self):
        return dataclasses.asdict(self)


@functools.lru_cache(maxsize=1)
def weights():
    """The shipped weights: {"conv1_kernel": (3, 3, 1, 16), ..., "dense2_bias": (10,)}."""
    path = next((p for p in ASSET_CANDIDATES if p.exists()), None)
    if path is None:
        raise FileNotFoundError(f"the judge's weights were not found; looked in {ASSET_CANDIDATES}")
    with np.load(path) as arrays:
        return {name: arrays[name].astype(np.float32) for name in arrays.files}


def predict_proba(x, params=None):
    """Judge probabilities ``p(y|x)`` for images ``x`` (N, 28, 28, 1) in [0, 1].

    Example:

    >>> x, y = kvae.load_mnist("test")
    >>> p = kvae.judge.predict_proba(x)
    >>> p.shape, np.mean(p.argmax(axis=1) == y)
    ((2000, 10), 0.9825)

    Args:
        x: images (N, 28, 28, 1) in [0, 1]: a NumPy array, or anything
            ``np.asarray`` reads (a CPU tensor of any backend).
        params: weights as returned by ``weights()``; None for the shipped ones.

    Returns:
        float64 array (N, 10), rows summing to 1.

    Raises:
        ValueError: wrong shape, an empty batch, NaN or infinite values, or
            values outside [0, 1].
    """
    x = check_images(x)
    params = weights() if params is None else params
    return np.concatenate([_forward(x[i : i + BATCH], params) for i in range(0, len(x), BATCH)])


def score(x):
    """Score a batch of images: confident share, classifier score, class shares.

    Example:

    >>> x, _ = kvae.load_mnist("test")
    >>> s = kvae.judge.score(x)
    >>> s.confident > 0.9, s.classifier_score > 9
    (True, True)

    Args:
        x: images (N, 28, 28, 1) in [0, 1] (generated samples, or real digits).

    Returns:
        a ``Score``.

    Raises:
        ValueError: as ``predict_proba``.
    """
    return score_proba(predict_proba(x))


def score_proba(p):
    """``score`` from judge probabilities (N, 10) already computed.

    Raises:
        ValueError: ``p`` is not (N, 10) with N >= 1, holds NaN, infinite or
            negative values, or has a row that does not sum to 1 (logits, or
            scores of another classifier, would give a meaningless score).
    """
    p = check_proba(p)
    marginal = p.mean(axis=0)
    # KL(p(y|x) || p(y)) per image; 0 * log 0 = 0
    safe = np.where(p > 0, p, 1.0)
    kl = np.sum(p * (np.log(safe) - np.log(np.where(marginal > 0, marginal, 1.0))), axis=1)
    shares = np.bincount(p.argmax(axis=1), minlength=NUM_CLASSES) / len(p)
    return Score(
        n=len(p),
        confident=float(np.mean(p.max(axis=1) >= CONFIDENT)),
        classifier_score=float(np.exp(kl.mean())),
        class_shares=tuple(float(s) for s in shares),
        rarest_class=float(shares.min()),
    )


def accuracy(x, labels):
    """Share of images ``x`` that the judge reads as their ``labels``.

    Raises:
        ValueError: bad images (as ``predict_proba``), or labels that are not
            N integers in 0..9.
    """
    labels = _checked_labels(x, labels)
    return float(np.mean(predict_proba(x).argmax(axis=1) == labels))


def asked_score(x, asked):
    """How often images drawn for the digits ``asked`` are read as those digits.

    Example:

    >>> asked = np.arange(2000) % 10
    >>> s = kvae.judge.asked_score(cvae.sample(2000, asked, seed=0), asked)
    >>> s.as_asked, s.worst_digit, s.confident_as_asked

    Args:
        x: images (N, 28, 28, 1) in [0, 1].
        asked: the digit each was drawn for, N integers in 0..9.

    Returns:
        an ``AskedScore``.

    Raises:
        ValueError: bad images (as ``predict_proba``), or labels that are not
            N integers in 0..9.
    """
    asked = _checked_labels(x, asked)
    p = predict_proba(x)
    right = p.argmax(axis=1) == asked
    per_digit = tuple(
        float(np.mean(right[asked == d])) if np.any(asked == d) else float("nan")
        for d in range(NUM_CLASSES)
    )
    return AskedScore(
        n=len(p),
        as_asked=float(np.mean(right)),
        per_digit=per_digit,
        worst_digit=float(np.nanmin(per_digit)),
        confident_as_asked=float(np.mean(right & (p.max(axis=1) >= CONFIDENT))),
    )


def _checked_labels(x, labels):
    """``labels`` as an integer array, one digit 0..9 per image of ``x``."""
    labels = np.asarray(labels)
    n = np.shape(x)[0] if np.ndim(x) else None
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"expected {n} integer labels, got shape {labels.shape} and dtype {labels.dtype}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"labels must be digits 0..9, got [{labels.min()}, {labels.max()}]")
    return labels


def reconstruction_accuracy(model, x, labels, batch_size=500):
    """Share of a model's reconstructions that are the right digit.

    Each image is reconstructed through the posterior mean,
    ``model.decode(z_mean)`` (what ``model.predict`` does), and the judge's
    reading of the reconstruction is compared with the true label. A
    conditional model (one with ``num_classes``) is given the true labels too,
    so its reconstructions are told which digit to be.

    Example:

    >>> x, y = kvae.load_mnist("test")
    >>> kvae.judge.reconstruction_accuracy(vae, x, y)  # a trained kvae.VAE
    0.94...

    Args:
        model: a ``kvae.VAE`` or ``kvae.AE`` (anything whose ``predict``
            returns images in [0, 1]).
        x: images (N, 28, 28, 1) in [0, 1].
        labels: their true digits (N,).
        batch_size: for ``model.predict``.

    Returns:
        a float in [0, 1].
    """
    x = check_images(x)
    inputs = x if getattr(model, "num_classes", None) is None else (x, np.asarray(labels))
    reconstructions = model.predict(inputs, batch_size=batch_size, verbose=0)
    return accuracy(np.clip(np.asarray(reconstructions), 0.0, 1.0), labels)


def build_keras_model():
    """The judge's architecture as a fresh Keras model (what ``tools/train_judge.py`` trains).

    Its layers ``conv1``, ``conv2``, ``dense1``, ``dense2`` hold the arrays
    of ``weights()``; the dropout layers act only in training. It outputs
    logits. Imports Keras (the backend ``KERAS_BACKEND`` names).
    """
    import keras

    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=IMAGE_SHAPE),
            layers.Conv2D(16, 3, activation="relu", name="conv1"),
            layers.MaxPooling2D(2),
            layers.Conv2D(32, 3, activation="relu", name="conv2"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dropout(0.3),
            layers.Dense(64, activation="relu", name="dense1"),
            layers.Dropout(0.3),
            layers.Dense(NUM_CLASSES, name="dense2"),
        ],
        name="judge",
    )


def keras_model():
    """The judge as a Keras model on the current backend, the shipped weights loaded.

    ``predict_proba`` needs no Keras; this is for those who want the judge
    inside a Keras graph (softmax its logits for ``p(y|x)``).
    """
    model = build_keras_model()
    params = weights()
    for name in LAYERS:
        model.get_layer(name).set_weights([params[f"{name}_kernel"], params[f"{name}_bias"]])
    return model


@functools.lru_cache(maxsize=1)
def reference():
    """The real digits' ``Score``: the bundled test split (2,000 digits), the row to beat."""
    from kvae.data import load_mnist

    return score(load_mnist("test")[0])


PROBA_TOLERANCE = 1e-4  # a float32 softmax's rows sum to 1 within a few ulps, well inside this


def check_proba(p):
    """Return ``p`` as float64 (N, 10), refusing what is not one distribution per image."""
    try:
        p = np.asarray(p, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"expected judge probabilities (N, {NUM_CLASSES}), got {p!r}") from None
    if p.ndim != 2 or p.shape[1] != NUM_CLASSES or p.shape[0] == 0:
        raise ValueError(
            f"expected judge probabilities of shape (N, {NUM_CLASSES}) with N >= 1, got {p.shape}"
        )
    if not np.all(np.isfinite(p)):
        bad = int(p.size - np.count_nonzero(np.isfinite(p)))
        raise ValueError(f"judge probabilities contain {bad} NaN or infinite values")
    sums = p.sum(axis=1)
    if p.min() < 0.0 or np.max(np.abs(sums - 1.0)) > PROBA_TOLERANCE:
        raise ValueError(
            "expected judge probabilities: values >= 0, each row summing to 1; got values "
            f"in [{p.min():g}, {p.max():g}] and row sums in [{sums.min():g}, {sums.max():g}] "
            "(pass predict_proba's output, not logits)"
        )
    return p


def check_images(x):
    """Return ``x`` as float32 (N, 28, 28, 1), refusing what the judge cannot read."""
    x = np.asarray(x)
    if x.ndim != 4 or tuple(x.shape[1:]) != IMAGE_SHAPE or x.shape[0] == 0:
        raise ValueError(
            f"the judge expects images of shape (N, 28, 28, 1) with N >= 1, got {x.shape}"
        )
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"the judge expects real-valued images, got dtype {x.dtype}")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"images contain {bad} NaN or infinite values")
    if x.min() < 0.0 or x.max() > 1.0:
        raise ValueError(
            f"the judge expects pixel values in [0, 1], got values in [{x.min():g}, {x.max():g}]; "
            "divide uint8 images by 255, or pass probabilities rather than logits"
        )
    return x


def _forward(x, params):
    h = _max_pool(_relu(_conv(x, params["conv1_kernel"], params["conv1_bias"])))
    h = _max_pool(_relu(_conv(h, params["conv2_kernel"], params["conv2_bias"])))
    h = h.reshape(len(h), -1)  # (H, W, C) order, as keras.layers.Flatten
    h = _relu(h @ params["dense1_kernel"] + params["dense1_bias"])
    logits = (h @ params["dense2_kernel"] + params["dense2_bias"]).astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def _conv(x, kernel, bias):
    """'valid' cross-correlation, as keras.layers.Conv2D: (N, H, W, C) -> (N, H-k+1, W-k+1, O)."""
    k = kernel.shape[0]
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))  # N,H',W',C,k,k
    return np.tensordot(windows, kernel.transpose(2, 0, 1, 3), axes=([3, 4, 5], [0, 1, 2])) + bias


def _max_pool(x):
    """2x2 max pooling, stride 2, 'valid' (an odd last row / column is dropped)."""
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _relu(x):
    return np.maximum(x, 0.0)
